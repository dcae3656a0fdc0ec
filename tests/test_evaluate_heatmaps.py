"""Heatmap geometry: the network sees the whole image at the eval transform's scale."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fgdesk.config import ModelConfig
from fgdesk.data.augment import eval_transform
from fgdesk.evaluate.heatmaps import (
    box_scale,
    bucketed,
    forward_with_maps,
    fuse_upsampled,
    fused_evidence,
    network_input,
    network_size,
    relative_attention,
)
from fgdesk.model.network import FineGrainedNet, fuse_maps
from helpers_runs import one_thread

_threads = pytest.fixture(autouse=True)(one_thread)


def test_network_input_is_the_eval_transform_without_its_centre_crop():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8))
    full = network_input(image, 96)
    crop = eval_transform(96)(image)
    assert tuple(full.shape) == (3, 109, 145)  # short side int(96 * 1.14), aspect kept
    top, left = round((109 - 96) / 2), round((145 - 96) / 2)
    assert torch.allclose(full[:, top:top + 96, left:left + 96], crop, atol=1e-5)


def test_boxes_map_into_the_network_frame_proportionally():
    assert network_size(200, 150, 96) == (145, 109)
    assert network_size(150, 200, 96) == (109, 145)
    sx, sy = box_scale((200, 150), 96)
    assert sx == pytest.approx(145 / 200) and sy == pytest.approx(109 / 150)


def test_extreme_panoramas_are_capped_but_stay_whole():
    width, height = network_size(4000, 100, 64)
    assert width == 4 * 72 and height < 72


def seeded_pass(classes: int, with_bias: bool):
    """A seeded two-stage net, a random linear head over `classes`, two 64x80 images, and
    forward_with_maps on them: (net, weight, bias, images, result)."""
    torch.manual_seed(0)
    net = FineGrainedNet(ModelConfig(stages=[3, 4])).eval()
    weight = torch.randn(classes, net.embed_dim)
    bias = torch.randn(classes) if with_bias else torch.zeros(classes)
    images = torch.randn(2, 3, 64, 80)
    return net, weight, bias, images, forward_with_maps(net, images, weight, bias)


def test_one_pass_gives_logits_attention_and_evidence_that_adds_up():
    *_, result = seeded_pass(3, with_bias=False)
    assert result.logits.shape == (2, 3) and result.input_size == (64, 80)
    assert torch.equal(result.evidence_class, result.logits.argmax(dim=1))
    assert [tuple(m.shape) for m in result.attention] == [(2, 4, 5), (2, 2, 3)]
    assert torch.allclose(relative_attention(result.attention[0]).mean(dim=(1, 2)), torch.ones(2))
    fused = fused_evidence(result.evidence, (64, 80))
    per_stage_total = sum(m.sum(dim=(1, 2)) for m in result.evidence)
    assert torch.allclose(fused.sum(dim=(1, 2)), per_stage_total, rtol=2e-2)  # bilinear upsampling keeps sums up to edge effects


def test_the_contrast_map_shows_where_the_image_supports_the_top_class_rather_than_the_runner_up():
    from fgdesk.model.network import class_evidence_maps

    net, weight, bias, images, result = seeded_pass(4, with_bias=True)
    top2 = result.logits.topk(2, dim=1).indices
    assert torch.equal(result.evidence_class, top2[:, 0]) and torch.equal(result.contrast_class, top2[:, 1])
    with torch.no_grad():
        output = net(images)
    scale_weights = net.attention.scale_weights().detach()
    top, second = (class_evidence_maps(output, scale_weights, weight[top2[:, k]], clip_negative=False) for k in (0, 1))
    for stage, contrast in enumerate(result.contrast):
        assert torch.allclose(contrast, (top[stage] - second[stage]).clamp_min(0), atol=1e-5)
    # Unclipped, the cells add up to the difference of the two classes' scores, biases aside.
    cells = sum((a - b).sum(dim=(1, 2)) for a, b in zip(top, second))
    scores = result.logits - bias
    assert torch.allclose(cells, scores.gather(1, top2[:, :1]).squeeze(1) - scores.gather(1, top2[:, 1:]).squeeze(1), atol=1e-4)

    # With one class there is no runner-up, and a chooser without one gives no contrast.
    assert forward_with_maps(net, images, weight[:1], bias[:1]).contrast is None
    chosen = forward_with_maps(net, images, choose=lambda e, l: (weight[[0, 1]], torch.tensor([0, 1])))
    assert chosen.evidence is not None and chosen.contrast is None


def test_bucketed_groups_equal_keys_and_flushes_partial_buckets():
    items = [(0, "a"), (1, "b"), (2, "a"), (3, "a"), (4, "b")]
    batches = list(bucketed(items, key=lambda item: item[1], batch_size=2))
    assert sorted(tuple(i for i, _ in batch) for batch in batches) == [(0, 2), (1, 4), (3,)]


def test_fusing_upsampled_maps_equals_the_models_own_fusion():
    maps = [torch.rand(2, 8, 8), torch.rand(2, 4, 4), torch.rand(2, 2, 2)]
    weights = torch.tensor([0.2, 0.3, 0.5])
    upsampled, expected = fuse_maps(maps, (40, 48), weights)
    assert torch.allclose(fuse_upsampled(upsampled, weights), expected, atol=1e-6)
