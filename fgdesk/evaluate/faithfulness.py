"""Do the heatmaps follow the classifier? A deletion score that needs no boxes.

Pixels of a test image's network input (the eval centre crop the classifier is scored on)
are deleted (set to the dataset's mean colour) in the order a map ranks them, and the
classifier's probability of the class the map explains (its prediction on the untouched
input) is tracked. The area under that curve is low when the map put first
what the classifier uses (deletion, Petsiuk et al. 2018). A centre-first and a random order
are the references: a map no better than those shows nothing the classifier relies on.

bench/heatmaps.py measures the same on cub50 at length; `fgdesk eval` runs this short
version on any labelled dataset, so a lab can tell whether the maps mean something on
its own images.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fgdesk.data.images import ImageDecodeError, load_rgb
from fgdesk.data.layouts import Sample
from fgdesk.evaluate.heatmaps import evenly_spread, forward_with_maps, fused_attention, fused_evidence, network_input
from fgdesk.evaluate.localization import centre_gaussian
from fgdesk.model.network import FineGrainedNet

DEFAULT_IMAGES = 50
STEPS = 8  # points on each curve past the untouched input: 12.5% of the pixels a step
ORDERS = ("class evidence", "fused attention", "centre first", "random")


@dataclass
class FaithfulnessScore:
    images: int  # test images scored
    steps: int
    deletion: dict[str, float]  # order -> mean deletion AUC of the explained class's probability
    evidence_beats_random: float  # share of images where the class-evidence order's AUC is below random's

    def as_dict(self) -> dict:
        return {"images": self.images, "steps": self.steps, "deletion_auc": dict(self.deletion),
                "evidence_beats_random": self.evidence_beats_random}


def deletion_frames(image: torch.Tensor, order: torch.Tensor, steps: int) -> torch.Tensor:
    """(steps + 1, 3, H, W): the image with the first k/steps of the pixels in `order` set to
    zero (the dataset's mean colour after normalisation), k = 0..steps."""
    _, height, width = image.shape
    total = height * width
    ranks = torch.empty(total, dtype=torch.long)
    ranks[order] = torch.arange(total)
    counts = torch.tensor([round(total * k / steps) for k in range(steps + 1)])
    kept = (ranks.view(1, -1) >= counts.view(-1, 1)).view(steps + 1, 1, height, width)
    return image.unsqueeze(0) * kept


def curve_area(values: np.ndarray) -> float:
    """Area under a curve sampled at evenly spaced fractions 0..1 (trapezoid rule)."""
    return float(np.trapezoid(values, dx=1.0 / (len(values) - 1)))


@torch.no_grad()
def score_faithfulness(
    net: FineGrainedNet,
    samples: Sequence[Sample],
    crop_bottom: int,
    eval_size: int,
    weight: torch.Tensor,
    bias: torch.Tensor,
    device: torch.device | str = "cpu",
    images: int = DEFAULT_IMAGES,
    steps: int = STEPS,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> FaithfulnessScore | None:
    """Deletion AUC of the class-evidence, fused-attention, centre-first and random orders on
    up to `images` labelled samples (evenly spread), for the linear classifier (`weight`,
    `bias`); None when no sample can be read."""
    device = torch.device(device)
    weight, bias = weight.to(device).float(), bias.to(device).float()
    chosen = evenly_spread([s for s in samples if s.label >= 0], images)
    generator = torch.Generator().manual_seed(seed)
    was_training = net.training
    net.eval()
    areas: dict[str, list[float]] = {order: [] for order in ORDERS}
    try:
        for number, sample in enumerate(chosen):
            try:
                image = network_input(load_rgb(sample.path, crop_bottom=crop_bottom), eval_size)
            except ImageDecodeError:
                continue
            _, height, width = image.shape
            result = forward_with_maps(net, image.unsqueeze(0).to(device), weight, bias)
            explained = int(result.evidence_class[0])
            maps = {
                "class evidence": fused_evidence(result.evidence, (height, width))[0].cpu(),
                "fused attention": fused_attention(result.attention, (height, width), result.scale_weights)[0].cpu(),
                "centre first": torch.from_numpy(centre_gaussian((height, width))).float(),
            }
            orders = {kind: torch.argsort(heatmap.flatten(), descending=True, stable=True) for kind, heatmap in maps.items()}
            orders["random"] = torch.randperm(height * width, generator=generator)
            frames = torch.cat([deletion_frames(image, orders[kind], steps) for kind in ORDERS]).to(device)
            logits = net(frames).embedding.float() @ weight.t() + bias
            probability = logits.softmax(dim=1)[:, explained].view(len(ORDERS), steps + 1).cpu().numpy()
            for kind, curve in zip(ORDERS, probability):
                areas[kind].append(curve_area(curve))
            if on_progress:
                on_progress(number + 1, len(chosen))
    finally:
        net.train(was_training)
    scored = len(areas["random"])
    if not scored:
        return None
    beats = np.mean(np.array(areas["class evidence"]) < np.array(areas["random"]))
    return FaithfulnessScore(images=scored, steps=steps, deletion={k: float(np.mean(v)) for k, v in areas.items()},
                             evidence_beats_random=float(beats))
