"""Views for contrastive training and the deterministic transform for evaluation."""
from __future__ import annotations

import math

import torch
from PIL import Image
from torchvision.transforms import v2

from fgdesk.config import DataConfig

IMAGE_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics: pretrained backbones expect them
IMAGE_STD = (0.229, 0.224, 0.225)
EVAL_RESIZE_RATIO = 1.14  # resize then centre-crop, as in the usual 256 -> 224 protocol
LOCAL_MIN_SCALE = 0.05
CROP_MIN_RATIO = 3 / 4  # RandomResizedCrop's default aspect range is (3/4, 4/3)
# Evaluation resizes from at least twice its target, so a JPEG's coarser DCT downscale
# never replaces the antialiased resize (and images within 2x of it decode in full).
EVAL_DECODE_MARGIN = 2.0


def _blur_kernel(size: int) -> int:
    """An odd kernel about a tenth of the crop side (SimCLR's choice), at least 3."""
    k = max(3, int(size * 0.1))
    return k if k % 2 == 1 else k + 1


def crop_min_short_side(size: int, min_scale: float) -> int:
    """The image's shorter side at which even the smallest crop has `size` pixels a side.

    The smallest crop covers `min_scale` of the area at the extreme aspect ratio; its short
    side is then short_side * sqrt(min_scale * 3/4). Decoding smaller would upsample it.
    """
    return math.ceil(size / math.sqrt(min_scale * CROP_MIN_RATIO))


def eval_min_short_side(size: int) -> int:
    """The shorter side a JPEG may be decoded down to for `eval_transform(size)`."""
    return math.ceil(EVAL_DECODE_MARGIN * int(size * EVAL_RESIZE_RATIO))


def _view(size: int, scale: tuple[float, float], cfg: DataConfig) -> v2.Compose:
    """Geometric crop on the PIL image, then photometric ops on uint8, then normalise."""
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToImage(),
    ]
    if cfg.color_jitter > 0 and cfg.color_jitter_prob > 0:
        jitter = v2.ColorJitter(
            brightness=cfg.color_jitter,
            contrast=cfg.color_jitter,
            saturation=cfg.color_jitter,
            hue=min(0.5, cfg.color_jitter / 4),
        )
        steps.append(v2.RandomApply([jitter], p=cfg.color_jitter_prob))
    if cfg.grayscale_prob > 0:
        steps.append(v2.RandomGrayscale(p=cfg.grayscale_prob))
    if cfg.blur_prob > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(_blur_kernel(size), sigma=(0.1, 2.0))], p=cfg.blur_prob))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGE_MEAN, IMAGE_STD)]
    return v2.Compose(steps)


class ContrastiveViews:
    """PIL image -> [global view 1, global view 2, local view 1, ..., local view n]."""

    num_global = 2

    def __init__(self, cfg: DataConfig) -> None:
        self.num_local = int(cfg.local_crops)
        min_scale = float(cfg.min_scale)
        self.global_view = _view(cfg.image_size, (min_scale, 1.0), cfg)
        # Local crops cover what the global crops leave out: the small-scale end.
        local_scale = (min(LOCAL_MIN_SCALE, min_scale), min_scale)
        self.local_view = _view(cfg.local_size, local_scale, cfg) if self.num_local else None
        # What the loader may decode JPEGs down to without losing a pixel any view keeps.
        self.min_short_side = max(
            crop_min_short_side(cfg.image_size, min_scale),
            crop_min_short_side(cfg.local_size, local_scale[0]) if self.num_local else 0,
        )

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        views = [self.global_view(image) for _ in range(self.num_global)]
        if self.local_view is not None:
            views += [self.local_view(image) for _ in range(self.num_local)]
        return views

    def __repr__(self) -> str:
        return f"ContrastiveViews(global={self.num_global}, local={self.num_local})\n{self.global_view}"


def eval_pixels(size: int) -> v2.Compose:
    """The geometric half of `eval_transform`: shorter side to size*1.14, centre crop, uint8 tensor.

    uint8 pixels take a quarter of the memory of the normalised float tensor, so a list of
    evaluation images can be decoded once and kept (the kNN monitor runs every epoch).
    """
    return v2.Compose([v2.Resize(int(size * EVAL_RESIZE_RATIO), antialias=True), v2.CenterCrop(size), v2.ToImage()])


def eval_normalise() -> v2.Compose:
    """The other half: uint8 pixels to the float, ImageNet-normalised network input."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGE_MEAN, IMAGE_STD)])


def eval_transform(size: int) -> v2.Compose:
    """Deterministic: shorter side to size*1.14, centre crop, tensor, ImageNet normalisation."""
    return v2.Compose([*eval_pixels(size).transforms, *eval_normalise().transforms])
