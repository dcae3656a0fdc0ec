"""Heatmap geometry: the network sees the eval transform's centre crop, and maps go back to it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fgdesk.config import ModelConfig
from fgdesk.data.augment import eval_pixels, eval_transform
from fgdesk.evaluate.heatmaps import (
    box_in_network_frame,
    bucketed,
    crop_box,
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


def test_network_input_is_the_eval_transform_and_crop_box_says_where_it_lies():
    """The network sees the very pixels the classifier is fitted and scored on, and the
    crop box picks those pixels out of the image."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8))
    assert torch.equal(network_input(image, 96), eval_transform(96)(image))
    assert network_size(200, 150, 96) == (145, 109) and network_size(150, 200, 96) == (109, 145)
    x0, y0, x1, y1 = crop_box(200, 150, 96)
    assert x1 - x0 == pytest.approx(96 * 200 / 145) and y1 - y0 == pytest.approx(96 * 150 / 109)
    assert (x0 + x1) / 2 == pytest.approx(100, abs=1.0) and (y0 + y1) / 2 == pytest.approx(75, abs=1.0)
    # Cutting the box out of a smooth image and resizing it gives the network input, up to resampling.
    smooth = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((200, 150), Image.Resampling.BICUBIC)
    cut = smooth.crop(tuple(round(v) for v in (x0, y0, x1, y1))).resize((96, 96), Image.Resampling.BILINEAR)
    seen = eval_pixels(96)(smooth).float()  # network_input before its normalisation
    reference = torch.from_numpy(np.asarray(cut, dtype=np.float32)).permute(2, 0, 1)
    assert (seen - reference).abs().mean() < 3.0  # grey levels of 255


def test_boxes_map_into_the_network_frame_clipped_to_what_it_sees():
    left, top = round((145 - 96) / 2), round((109 - 96) / 2)
    sx, sy = 145 / 200, 109 / 150
    inside = box_in_network_frame((80, 60, 120, 90), (200, 150), 96)
    assert inside == pytest.approx((80 * sx - left, 60 * sy - top, 120 * sx - left, 90 * sy - top))
    assert box_in_network_frame((0, 0, 200, 150), (200, 150), 96) == (0, 0, 96, 96)  # clipped to the crop
    assert box_in_network_frame((0, 0, 20, 150), (200, 150), 96) is None  # wholly in the cut-off margin


def test_a_panorama_is_seen_through_its_centre_square():
    assert network_size(4000, 100, 64) == (int(72 * 40), 72)
    x0, y0, x1, y1 = crop_box(4000, 100, 64)
    assert x1 - x0 == pytest.approx(64 * 100 / 72) and y1 - y0 == pytest.approx(64 * 100 / 72)


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
