"""Heatmap geometry and the single forward pass that yields embedding, logits and every map.

Geometry. The network sees exactly what the classifier was fitted and scored on:
`eval_transform`, the shorter side resized to int(eval_size * 1.14), then a centre crop
of eval_size (the usual 256 -> 224 protocol). `network_input` is that transform, and
`crop_box` says where its square lies in the image, so the maps of a pass are placed
back on that part of the image and nothing outside it is claimed. Until 2026-12-07 the
maps came from a pass over the whole image without the crop; on cub50 a classifier fitted
on the crops agreed with that pass on 41% of the test images and scored 30.3% top-1
through it against 45.0% on the crops (docs/benchmarks.md), so prediction, the maps and
the scores now share one frame. Prediction (`fgdesk.infer.predictor`), the localization
scores of `fgdesk.evaluate.report` and the faithfulness check all go through
`network_input`, so they agree.

Map kinds, all from one forward pass:
- attention per stage: the softmax map each stage pools with (sums to 1 over its grid);
- fused attention: `fuse_maps` (each stage divided by its peak, weighted by the learned
  scale weights);
- class evidence: `class_evidence_maps` for a class vector (a classifier row), fused by
  adding the per-pixel contributions of all stages (each stage's cell value is spread
  over the pixels the cell covers), so the fused map sums to the positive part of the
  class score.
- contrast evidence: the same for the difference of the explained class's vector and the
  runner-up's, so it shows where the image supports the one *rather than* the other: the
  question fine-grained classes raise, where both share most of what the image shows.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from PIL import Image

from fgdesk.data.augment import EVAL_RESIZE_RATIO, eval_transform
from fgdesk.evaluate.localization import Box
from fgdesk.model.network import FineGrainedNet, NetOutput, class_evidence_maps, fuse_maps

T = TypeVar("T")


def network_size(width: int, height: int, eval_size: int) -> tuple[int, int]:
    """(width, height) of the image after the eval transform's resize, before its crop:
    torchvision's Resize(int) on the shorter side, the longer one truncated as it does."""
    short_side = int(eval_size * EVAL_RESIZE_RATIO)
    short, long = min(width, height), max(width, height)
    new_long = int(short_side * long / max(1, short))
    return (short_side, new_long) if width <= height else (new_long, short_side)


def _crop_offset(width: int, height: int, eval_size: int) -> tuple[int, int, float, float]:
    """(left, top) of the centre crop on the resized image, and the (sx, sy) of the resize."""
    resized_width, resized_height = network_size(width, height, eval_size)
    # torchvision's CenterCrop: int(round((size - crop) / 2)) on each axis.
    left = int(round((resized_width - eval_size) / 2.0))
    top = int(round((resized_height - eval_size) / 2.0))
    return left, top, resized_width / max(1, width), resized_height / max(1, height)


def crop_box(width: int, height: int, eval_size: int) -> Box:
    """The part of a width x height image the network sees, in the image's pixels."""
    left, top, sx, sy = _crop_offset(width, height, eval_size)
    return (left / sx, top / sy, (left + eval_size) / sx, (top + eval_size) / sy)


def box_in_network_frame(box: Box, image_size: tuple[int, int], eval_size: int) -> Box | None:
    """A box in the image's pixels -> the same box on the network input (eval_size square),
    clipped to it; None when none of it is in view."""
    left, top, sx, sy = _crop_offset(image_size[0], image_size[1], eval_size)
    x0, y0, x1, y1 = box
    clipped = (min(max(x0 * sx - left, 0.0), eval_size), min(max(y0 * sy - top, 0.0), eval_size),
               min(max(x1 * sx - left, 0.0), eval_size), min(max(y1 * sy - top, 0.0), eval_size))
    return clipped if clipped[2] > clipped[0] and clipped[3] > clipped[1] else None


@functools.lru_cache(maxsize=8)
def _eval_transform(eval_size: int):
    return eval_transform(eval_size)


def network_input(image: Image.Image, eval_size: int) -> torch.Tensor:
    """(3, eval_size, eval_size) normalised tensor: `eval_transform`, the very pixels the
    classifier was fitted and scored on. `crop_box` says which part of the image it holds."""
    return _eval_transform(eval_size)(image.convert("RGB") if image.mode != "RGB" else image)


@dataclass
class MapPass:
    """Everything one forward pass gives, on the network-input frame or coarser."""

    embedding: torch.Tensor  # (B, D) float32
    logits: torch.Tensor | None  # (B, C) when a classifier was given
    attention: list[torch.Tensor]  # per stage (B, h_s, w_s), raw softmax maps
    evidence: list[torch.Tensor] | None  # per stage (B, h_s, w_s), score contributions >= 0
    evidence_class: torch.Tensor | None  # (B,) class index the evidence explains, or -1
    stages: list[int]
    scale_weights: torch.Tensor  # (S,)
    input_size: tuple[int, int]  # (H, W) of the network input
    contrast: list[torch.Tensor] | None = None  # per stage: contributions to (explained - runner-up) >= 0
    contrast_class: torch.Tensor | None = None  # (B,) the class index it is set against (the runner-up by default)
    contrast_favoured: torch.Tensor | None = None  # (B,) the class index it favours (the explained class by default)


ClassVectorChooser = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def forward_with_maps(
    net: FineGrainedNet,
    images: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    choose: ClassVectorChooser | None = None,
    runner_up: ClassVectorChooser | None = None,
    favoured: ClassVectorChooser | None = None,
) -> MapPass:
    """Run `net` once on a (B, 3, H, W) batch and derive the maps from that pass.

    With a classifier (`weight` (C, D), `bias` (C,)), the evidence map explains the
    predicted class. `choose(embedding, logits) -> (class vectors (B, D), class index (B,))`
    overrides that (e.g. a class prototype when there is no classifier). The contrast map
    sets the explained class (or what `favoured` returns) against the runner-up: the second
    class by logit with a classifier of two or more classes, or what `runner_up` returns
    (both with `choose`'s signature).
    """
    output: NetOutput = net(images)
    embedding = output.embedding.float()
    logits = None
    if weight is not None:
        weight = weight.to(embedding.device).float()
        bias = torch.zeros(weight.shape[0], device=embedding.device) if bias is None else bias.to(embedding.device).float()
        logits = embedding @ weight.t() + bias
    vectors = classes = None
    if choose is not None:
        vectors, classes = choose(embedding, logits)
    elif logits is not None and weight is not None and weight.shape[0] > 0:
        classes = logits.argmax(dim=1)
        vectors = weight[classes]
    scale_weights = net.attention.scale_weights().detach().float()
    evidence = None
    if vectors is not None:
        evidence = [m.float() for m in class_evidence_maps(output, scale_weights, vectors.to(embedding.device))]
    contrast = second = None
    first_vectors, first = (favoured(embedding, logits) if favoured is not None else (vectors, classes))
    if vectors is not None and runner_up is not None:
        second_vectors, second = runner_up(embedding, logits)
    elif vectors is not None and choose is None and logits is not None and logits.shape[1] >= 2:
        second = logits.topk(2, dim=1).indices[:, 1]
        second_vectors = weight[second]
    if second is not None:
        difference = first_vectors.to(embedding.device) - second_vectors.to(embedding.device)
        contrast = [m.float() for m in class_evidence_maps(output, scale_weights, difference)]
    return MapPass(
        embedding=embedding,
        logits=logits,
        attention=[m.float() for m in output.attention_maps],
        evidence=evidence,
        evidence_class=classes,
        contrast=contrast,
        contrast_class=second,
        contrast_favoured=first if contrast is not None else None,
        stages=list(net.stages),
        scale_weights=scale_weights,
        input_size=(int(images.shape[-2]), int(images.shape[-1])),
    )


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W), bilinear, half-pixel centres (cells cover the frame evenly)."""
    return F.interpolate(maps.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False).squeeze(1)


def relative_attention(attention: torch.Tensor) -> torch.Tensor:
    """Softmax map -> multiples of uniform attention (1.0 everywhere for a flat map).

    Stages have different grid sizes, so raw softmax values are not comparable across
    scales; these are, which is what shared normalisation needs.
    """
    cells = attention.shape[-1] * attention.shape[-2]
    return attention * cells


def fused_attention(attention: list[torch.Tensor], size: tuple[int, int], scale_weights: torch.Tensor) -> torch.Tensor:
    """(B, H, W) fused attention map (see `fuse_maps`)."""
    return fuse_maps(attention, size, scale_weights)[1]


def fuse_upsampled(upsampled: list[torch.Tensor], scale_weights: torch.Tensor) -> torch.Tensor:
    """`fuse_maps` for maps already upsampled to one size (saves upsampling big images twice)."""
    fused = torch.zeros_like(upsampled[0])
    for weight, heatmap in zip(scale_weights.float().tolist(), upsampled):
        peak = heatmap.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        fused.add_(heatmap / peak, alpha=weight)
    return fused


def fused_evidence(evidence: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) per-pixel evidence: each stage's cell contributions spread over its pixels, summed."""
    height, width = size
    total = torch.zeros(evidence[0].shape[0], height, width, device=evidence[0].device)
    for stage_map in evidence:
        cells = stage_map.shape[-1] * stage_map.shape[-2]
        total = total + upsample(stage_map, size) * (cells / (height * width))
    return total.clamp_min(0)


def evenly_spread(items: Sequence[T], limit: int | None) -> list[T]:
    """At most `limit` of `items`, spread evenly over the list (all of them without a limit)."""
    if limit is None or len(items) <= limit:
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def bucketed(items: Iterable[T], key: Callable[[T], Hashable], batch_size: int) -> Iterator[list[T]]:
    """Group items with equal keys (e.g. input size) into batches of at most `batch_size`.

    Items are buffered only until their bucket fills, so memory stays bounded; the
    order within a bucket is kept, callers reorder by their own index.
    """
    buckets: dict[Hashable, list[T]] = {}
    for item in items:
        bucket = buckets.setdefault(key(item), [])
        bucket.append(item)
        if len(bucket) >= batch_size:
            yield buckets.pop(key(item))
    yield from (bucket for bucket in buckets.values() if bucket)
