"""Contrastive views and the evaluation transform."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fgdesk.config import DataConfig
from fgdesk.data import augment
from fgdesk.data.augment import IMAGE_MEAN, IMAGE_STD, ContrastiveViews, crop_min_short_side, eval_transform


@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8), "RGB")


def denormalise(view: torch.Tensor) -> torch.Tensor:
    return view * torch.tensor(IMAGE_STD)[:, None, None] + torch.tensor(IMAGE_MEAN)[:, None, None]


def test_imagenet_statistics():
    assert IMAGE_MEAN == pytest.approx((0.485, 0.456, 0.406)) and IMAGE_STD == pytest.approx((0.229, 0.224, 0.225))


def test_two_global_views_then_local_views(photo):
    torch.manual_seed(0)
    views = ContrastiveViews(DataConfig(image_size=64, local_crops=3, local_size=32))(photo)
    assert [tuple(v.shape) for v in views] == [(3, 64, 64)] * 2 + [(3, 32, 32)] * 3
    assert all(v.dtype == torch.float32 for v in views)
    pixels = torch.cat([denormalise(v).flatten() for v in views])
    assert pixels.min() >= -1e-4 and pixels.max() <= 1 + 1e-4
    assert not torch.equal(views[0], views[1])  # two different random views


def test_no_local_crops(photo):
    views = ContrastiveViews(DataConfig(image_size=48, local_crops=0))(photo)
    assert len(views) == 2


def test_grayscale_probability_one_gives_grey_views(photo):
    cfg = DataConfig(image_size=40, local_crops=1, local_size=24, grayscale_prob=1.0, color_jitter=0.0)
    for view in ContrastiveViews(cfg)(photo):
        rgb = denormalise(view)
        assert torch.allclose(rgb[0], rgb[1], atol=1e-5) and torch.allclose(rgb[1], rgb[2], atol=1e-5)


def test_all_photometric_ops_off_keeps_colours(photo):
    cfg = DataConfig(image_size=32, local_crops=0, color_jitter=0.0, grayscale_prob=0.0, blur_prob=0.0, min_scale=1.0)
    red = Image.new("RGB", (50, 50), (255, 0, 0))
    view = denormalise(ContrastiveViews(cfg)(red)[0])
    assert torch.allclose(view[0], torch.ones(32, 32), atol=1e-5) and view[1].abs().max() < 1e-5


def test_eval_transform_is_deterministic_resize_and_centre_crop(photo):
    transform = eval_transform(64)
    first, second = transform(photo), transform(photo)
    assert first.shape == (3, 64, 64) and torch.equal(first, second)
    flat = eval_transform(32)(Image.new("RGB", (70, 40), (0, 128, 255)))
    expected = (torch.tensor([0, 128, 255]) / 255 - torch.tensor(IMAGE_MEAN)) / torch.tensor(IMAGE_STD)
    assert torch.allclose(flat.mean(dim=(1, 2)), expected, atol=1e-4)


def test_decoding_down_to_min_short_side_never_upsamples_a_crop():
    """At the shorter side the views ask for, even the smallest random crop keeps the view's
    pixels; a clearly smaller image would make some crops upsample."""
    from torchvision.transforms import RandomResizedCrop

    cfg = DataConfig(image_size=64, local_crops=2, local_size=32, min_scale=0.25)
    views = ContrastiveViews(cfg)
    torch.manual_seed(0)

    def smallest_crop_side(short: int, scale: tuple[float, float]) -> int:
        image = torch.empty(3, short, int(short * 1.5))
        return min(min(RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3])[2:]) for _ in range(3000))

    short = views.min_short_side
    assert smallest_crop_side(short, (0.25, 1.0)) >= 64 - 1  # integer rounding of the crop box
    assert smallest_crop_side(short, (0.05, 0.25)) >= 32 - 1
    assert smallest_crop_side(int(short * 0.7), (0.05, 0.25)) < 32  # the bound is not slack
    assert views.min_short_side == max(crop_min_short_side(64, 0.25), crop_min_short_side(32, 0.05))
    assert ContrastiveViews(DataConfig(image_size=64, local_crops=0, min_scale=0.25)).min_short_side == crop_min_short_side(64, 0.25)


@pytest.mark.parametrize("kernel_size, sigma, shape", [(9, 1.3, (3, 96, 96)), (23, 2.0, (3, 224, 200)), (3, 0.1, (1, 17, 40))])
def test_separable_blur_equals_torchvisions_full_kernel(kernel_size, sigma, shape):
    from torchvision.transforms.v2 import functional as TF

    image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = augment.gaussian_blur_separable(image, kernel_size, sigma)
    theirs = TF.gaussian_blur(image, [kernel_size, kernel_size], [sigma, sigma])
    assert ours.dtype == torch.uint8 and ours.shape == image.shape
    difference = (ours.int() - theirs.int()).abs()
    # Float sums in another order: now and then a value rounds the other way, never further.
    assert difference.max() <= 1 and (difference > 0).float().mean() < 1e-3
    if sigma > 1:  # and it does blur: neighbouring pixels of random noise move together
        assert (ours[..., 1:].int() - ours[..., :-1].int()).abs().float().mean() < 0.5 * (
            image[..., 1:].int() - image[..., :-1].int()).abs().float().mean()


@pytest.mark.parametrize("size", [96, 224])
def test_views_with_the_separable_blur_match_torchvisions_blur_seed_for_seed(photo, monkeypatch, size):
    """The swap changes speed, not the recipe: the same seed gives the same views."""
    from torchvision.transforms import v2

    cfg = DataConfig(image_size=size, local_crops=1, local_size=size // 2, blur_prob=1.0)
    torch.manual_seed(3)
    ours = ContrastiveViews(cfg)(photo)
    monkeypatch.setattr(augment, "GaussianBlur", v2.GaussianBlur)
    torch.manual_seed(3)
    theirs = ContrastiveViews(cfg)(photo)
    grey_level = 1 / 255 / min(IMAGE_STD) + 1e-5
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and (a - b).abs().max() <= grey_level
