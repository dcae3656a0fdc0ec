"""Views for contrastive training and the deterministic transform for evaluation."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors
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


def _gaussian_kernel1d(kernel_size: int, sigma: float) -> torch.Tensor:
    """torchvision's 1-D Gaussian: taps at pixel offsets -(k-1)/2..(k-1)/2, weight exp(-d^2 / 2 sigma^2)."""
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    offsets = torch.linspace(-lim, lim, steps=kernel_size)
    return torch.softmax(offsets.div(sigma).pow(2).neg(), dim=0)


def gaussian_blur_separable(image: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """What `v2.functional.gaussian_blur(image, [k, k], [sigma, sigma])` gives, within one grey level.

    torchvision convolves with the full k x k kernel; a Gaussian is separable, so a pass
    along rows and one along columns give the same sums at 2k instead of k^2 taps per
    pixel. Done as shifted multiply-adds, which beat a depthwise conv on CPU: a 224 px
    view with its 23-tap kernel blurs in about 1 ms instead of 15-40 ms.
    """
    if image.numel() == 0:
        return image
    height, width = image.shape[-2:]
    weights = _gaussian_kernel1d(kernel_size, sigma).tolist()
    pad = kernel_size // 2
    flat = image.reshape(-1, height, width)
    padded = F.pad(flat.to(torch.float32).unsqueeze(0), [pad, pad, pad, pad], mode="reflect").squeeze(0)
    rows = padded[:, :, 0:width] * weights[0]
    for tap in range(1, kernel_size):
        rows.add_(padded[:, :, tap:tap + width], alpha=weights[tap])
    out = rows[:, 0:height] * weights[0]
    for tap in range(1, kernel_size):
        out.add_(rows[:, tap:tap + height], alpha=weights[tap])
    if not image.is_floating_point():
        out = out.round_().clamp_(0, 255).to(image.dtype)
    return out.reshape(image.shape)


class GaussianBlur:
    """Drop-in for `v2.GaussianBlur(kernel_size, sigma=(lo, hi))` on image tensors, separable.

    It draws sigma exactly as torchvision does (one uniform draw from torch's generator), so
    a seeded run sees the same random stream and the same views.
    """

    def __init__(self, kernel_size: int, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be odd and positive, not {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        sigma = torch.empty(1).uniform_(self.sigma[0], self.sigma[1]).item()
        out = gaussian_blur_separable(image.as_subclass(torch.Tensor), self.kernel_size, sigma)
        return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.Image) else out

    def __repr__(self) -> str:
        return f"GaussianBlur(kernel_size={self.kernel_size}, sigma={self.sigma}, separable)"


def crop_min_short_side(size: int, min_scale: float) -> int:
    """The image's shorter side at which even the smallest crop has `size` pixels a side.

    The smallest crop covers `min_scale` of the area at the extreme aspect ratio; its short
    side is then short_side * sqrt(min_scale * 3/4). Decoding smaller would upsample it.
    """
    return math.ceil(size / math.sqrt(min_scale * CROP_MIN_RATIO))


def eval_min_short_side(size: int) -> int:
    """The shorter side a JPEG may be decoded down to for `eval_transform(size)`."""
    return math.ceil(EVAL_DECODE_MARGIN * int(size * EVAL_RESIZE_RATIO))


class AugmentedViews(list):
    """The views of one image (a list of tensors, global views first), with `crops`:
    (num_global, 5) rows of top, left, height, width as fractions of the image, and
    1.0 where the view was mirrored. Training lines the global views up with it."""

    crops: torch.Tensor


class _View:
    """Random crop and flip on the PIL image, then photometric ops on uint8, then normalise.

    The crop is drawn and applied in two calls of the same RandomResizedCrop (and the flip
    from the same draw as RandomHorizontalFlip) so the box can be kept: a seeded run sees
    the same random stream and the same views as a plain Compose of those transforms.
    """

    def __init__(self, size: int, scale: tuple[float, float], cfg: DataConfig) -> None:
        self.crop = v2.RandomResizedCrop(size, scale=scale, antialias=True)
        self.flip_prob = 0.5
        steps: list[v2.Transform] = [v2.ToImage()]
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
            steps.append(v2.RandomApply([GaussianBlur(_blur_kernel(size), sigma=(0.1, 2.0))], p=cfg.blur_prob))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGE_MEAN, IMAGE_STD)]
        self.photometric = v2.Compose(steps)

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, tuple[float, float, float, float, float]]:
        width, height = image.size
        box = self.crop.make_params([image])
        view = self.crop.transform(image, box)
        mirrored = bool(torch.rand(1) < self.flip_prob)
        if mirrored:
            view = v2.functional.horizontal_flip(view)
        where = (box["top"] / height, box["left"] / width, box["height"] / height, box["width"] / width, float(mirrored))
        return self.photometric(view), where

    def __repr__(self) -> str:
        return f"{self.crop}, flip p={self.flip_prob}, {self.photometric}"


class ContrastiveViews:
    """PIL image -> AugmentedViews [global view 1, global view 2, local view 1, ..., local view n]."""

    num_global = 2

    def __init__(self, cfg: DataConfig) -> None:
        self.num_local = int(cfg.local_crops)
        min_scale = float(cfg.min_scale)
        self.global_view = _View(cfg.image_size, (min_scale, 1.0), cfg)
        # Local crops cover what the global crops leave out: the small-scale end.
        local_scale = (min(LOCAL_MIN_SCALE, min_scale), min_scale)
        self.local_view = _View(cfg.local_size, local_scale, cfg) if self.num_local else None
        # What the loader may decode JPEGs down to without losing a pixel any view keeps.
        self.min_short_side = max(
            crop_min_short_side(cfg.image_size, min_scale),
            crop_min_short_side(cfg.local_size, local_scale[0]) if self.num_local else 0,
        )

    def __call__(self, image: Image.Image) -> AugmentedViews:
        views, crops = AugmentedViews(), []
        for _ in range(self.num_global):
            view, where = self.global_view(image)
            views.append(view)
            crops.append(where)
        if self.local_view is not None:
            views += [self.local_view(image)[0] for _ in range(self.num_local)]
        views.crops = torch.tensor(crops, dtype=torch.float32)
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
