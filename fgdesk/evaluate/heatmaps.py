"""Heatmap geometry and the single forward pass that yields embedding, logits and every map.

Geometry. Embeddings for kNN and the linear probe use `eval_transform`: shorter side
resized to int(eval_size * 1.14), then a centre crop of eval_size. For heatmaps fgdesk
uses the same resize *without* the crop: objects appear at the same scale as in the
embeddings the classifier was fitted on, and the maps cover the whole image, so a box
near the border (common in CUB) can still be hit and nothing has to be padded with
made-up zeros. A map on that frame maps back to the image by a plain proportional
resize. Prediction (`fgdesk.infer.predictor`) and the localization scores of
`fgdesk.evaluate.report` both go through `network_input`, so they agree.

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

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fgdesk.data.augment import EVAL_RESIZE_RATIO, IMAGE_MEAN, IMAGE_STD
from fgdesk.model.network import FineGrainedNet, NetOutput, class_evidence_maps, fuse_maps

# Very long panoramas would make huge inputs; beyond this aspect ratio the long side is
# capped (the short side then ends up below the usual size, but the whole image stays in view).
MAX_ASPECT = 4.0

T = TypeVar("T")


def network_size(width: int, height: int, eval_size: int) -> tuple[int, int]:
    """(width, height) the network sees: the eval transform's resize, aspect kept, no crop."""
    short_side = int(eval_size * EVAL_RESIZE_RATIO)
    short, long = min(width, height), max(width, height)
    # torchvision's Resize(int) truncates the long side; doing the same keeps the
    # pixels identical to eval_transform's before its crop.
    new_short, new_long = short_side, int(short_side * long / max(1, short))
    if new_long > MAX_ASPECT * short_side:
        new_long = int(MAX_ASPECT * short_side)
        new_short = max(1, int(new_long * short / max(1, long)))
    return (new_short, new_long) if width <= height else (new_long, new_short)


def network_input(image: Image.Image, eval_size: int) -> torch.Tensor:
    """(3, H, W) normalised tensor of the whole image at `network_size`."""
    width, height = network_size(image.width, image.height, eval_size)
    resized = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    return (tensor - mean) / std


def box_scale(image_size: tuple[int, int], eval_size: int) -> tuple[float, float]:
    """(sx, sy) that map image pixels to network-input pixels."""
    width, height = image_size
    net_width, net_height = network_size(width, height, eval_size)
    return net_width / width, net_height / height


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
