"""Attention consistency: the views remember where they were cut, and the loss tells a gate
that reads content from one that reads position in the frame."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from fgdesk.config import DataConfig, RunConfig
from fgdesk.data.augment import IMAGE_MEAN, IMAGE_STD, ContrastiveViews
from fgdesk.data.loading import collate_skip_bad
from fgdesk.model.losses import attention_consistency, shared_region_grid
from fgdesk.model.moco import MoCo

SIDE = 8  # cells of the toy gate maps


def coordinate_image(height: int = 120, width: int = 160) -> Image.Image:
    """Red grows with x and green with y, so a view's pixels tell where it came from."""
    xs = (np.arange(width) + 0.5) / width
    ys = (np.arange(height) + 0.5) / height
    pixels = np.zeros((height, width, 3), dtype=np.float32)
    pixels[..., 0] = xs[None, :]
    pixels[..., 1] = ys[:, None]
    return Image.fromarray((pixels * 255).round().astype(np.uint8), "RGB")


def plain_views(size: int = 32) -> ContrastiveViews:
    return ContrastiveViews(DataConfig(image_size=size, local_crops=1, local_size=16, min_scale=0.2,
                                       color_jitter=0.0, grayscale_prob=0.0, blur_prob=0.0))


def test_each_global_view_records_the_box_and_mirroring_it_was_cut_with():
    torch.manual_seed(0)
    transform = plain_views()
    mirrored_seen = set()
    for _ in range(20):
        views = transform(coordinate_image())
        assert len(views) == 3 and views.crops.shape == (2, 5)
        for view, (top, left, height, width, mirrored) in zip(views[:2], views.crops.tolist()):
            rgb = view * torch.tensor(IMAGE_STD)[:, None, None] + torch.tensor(IMAGE_MEAN)[:, None, None]
            along = (torch.arange(32) + 0.5) / 32
            expected_x = left + width * (1 - along if mirrored else along)
            expected_y = top + height * along
            assert (rgb[0].mean(dim=0) - expected_x).abs().max() < 0.03
            assert (rgb[1].mean(dim=1) - expected_y).abs().max() < 0.03
            mirrored_seen.add(bool(mirrored))
    assert mirrored_seen == {True, False}


def test_the_batch_carries_the_crops_of_its_good_items():
    torch.manual_seed(0)
    transform = plain_views()
    items = [(transform(coordinate_image()), 0, i) for i in range(3)]
    batch = collate_skip_bad(items)
    assert batch.crops.shape == (3, 2, 5)
    assert torch.equal(batch.crops[1], items[1][0].crops)
    assert batch.to("cpu").crops is not None


def view_scores(field, crops: torch.Tensor) -> torch.Tensor:
    """(B, SIDE, SIDE) gate logits of views cut at `crops`, for a gate that scores the image
    content `field(y, x)` (image fractions): what a gate free of position would give."""
    along = (torch.arange(SIDE) + 0.5) / SIDE
    maps = []
    for top, left, height, width, mirrored in crops.tolist():
        xs = left + width * (1 - along if mirrored else along)
        ys = top + height * along
        maps.append(field(ys[:, None], xs[None, :]))
    return torch.stack(maps)


def random_crops(count: int, generator: torch.Generator) -> torch.Tensor:
    size = 0.5 + 0.5 * torch.rand(count, 2, generator=generator)
    corner = (1 - size) * torch.rand(count, 2, generator=generator)
    mirrored = (torch.rand(count, 1, generator=generator) < 0.5).float()
    return torch.cat([corner, size, mirrored], dim=1)


def content(ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    return 3 * torch.exp(-((ys - 0.3) ** 2 + (xs - 0.7) ** 2) / 0.02)  # a bird's head at (0.3, 0.7)


def test_a_gate_that_scores_content_agrees_across_crops_and_one_that_scores_position_does_not():
    generator = torch.Generator().manual_seed(0)
    first, second = random_crops(64, generator), random_crops(64, generator)
    faithful = attention_consistency(view_scores(content, first), view_scores(content, second), first, second)
    # The same learned preference for the frame's lower right, in every view:
    corner = (torch.arange(SIDE).view(-1, 1) + torch.arange(SIDE).view(1, -1)).float().expand(64, SIDE, SIDE) / SIDE
    positional = attention_consistency(corner, corner, first, second)
    mixed = attention_consistency(view_scores(content, first) + corner, view_scores(content, second) + corner, first, second)
    assert faithful < 0.02 * positional
    assert mixed > 10 * faithful
    # Two copies of one crop agree whatever the gate does.
    assert attention_consistency(corner, corner, first, first) < 1e-10


def test_crops_that_barely_overlap_are_left_out():
    crops_a = torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 1.0, 1.0, 0.0]])
    crops_b = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.0], [0.0, 0.5, 1.0, 0.5, 1.0]])
    grid_a, grid_b, overlaps = shared_region_grid(crops_a, crops_b, cells=4)
    assert overlaps.tolist() == [False, True]
    # The shared right half: left to right in the whole view a, right to left in mirrored view b.
    assert torch.allclose(grid_a[1, 0, :, 0], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert torch.allclose(grid_b[1, 0, :, 0], torch.tensor([0.75, 0.25, -0.25, -0.75]))
    assert torch.allclose(grid_a[1, :, 0, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert torch.equal(grid_a[1, :, 0, 1], grid_b[1, :, 0, 1])


def test_a_moco_step_adds_the_weighted_term_and_it_reaches_the_gates():
    torch.manual_seed(0)
    config = RunConfig()
    config.model.stages = [3, 4]
    config.contrastive.attention_consistency = 0.5
    model = MoCo(config.validate(), queue_size=16)
    with torch.no_grad():  # fresh gates are exactly flat, so nothing would disagree yet
        for pool in model.query.net.attention.pools:
            pool.gate[-1].weight.normal_(0.0, 1.0)
    views = [torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64)]
    crops = random_crops(8, torch.Generator().manual_seed(1)).view(4, 2, 5)
    output = model(views, [], torch.arange(4), crops)
    assert output.attention_consistency is not None and output.attention_consistency > 0
    without = model(views, [], torch.arange(4))  # no crops: the term is left out
    assert without.attention_consistency is None
    output.attention_consistency.backward()
    gate = model.query.net.attention.pools[0].gate[-1].weight
    assert gate.grad is not None and gate.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.query.head.parameters())  # the term trains the gates' path only


def test_without_gates_or_a_second_query_the_term_is_skipped_and_logged(caplog):
    caplog.set_level("INFO", logger="fgdesk")
    crops = random_crops(4, torch.Generator().manual_seed(1)).view(2, 2, 5)
    views = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)]
    for change in ({"model.attention": "none"}, {"contrastive.symmetric": False}):
        caplog.clear()
        config = RunConfig().with_overrides({"model.stages": [4], "contrastive.attention_consistency": 1.0, **change})
        output = MoCo(config.validate(), queue_size=8)(views, [], torch.arange(2), crops)
        assert output.attention_consistency is None and torch.isfinite(output.loss)
        assert "attention consistency is skipped" in caplog.text
