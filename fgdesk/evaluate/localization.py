"""Scores for heatmaps against ground-truth boxes: pointing game, energy in the box, IoU.

Conventions (shared by every function here):
- a heatmap is a 2-D array (numpy or torch), H x W, non-negative where it matters
  (negative values are clipped to zero, NaN counts as zero);
- a box is (x0, y0, x1, y1) in pixel coordinates of the frame the heatmap covers, x1 and
  y1 exclusive (as in CUB's x + width and the demo set's boxes.csv);
- pixel (row i, column j) covers [j, j+1) x [i, i+1); it is inside a box when its
  centre (j + 0.5, i + 0.5) is, so an integer box holds exactly (x1-x0)*(y1-y0) pixels.

Boxes come in the coordinates of the decoded image; `fgdesk.evaluate.heatmaps.box_in_network_frame`
maps them into the network input a map was computed on (the eval centre crop), clipped to it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]

# Relative spread below which a map counts as constant (uniform attention is exactly flat).
CONSTANT_TOLERANCE = 1e-5
MASS_FRACTION = 0.5  # top-p mass for the IoU of the thresholded map
HALF_MAX = 0.5  # fraction of the peak for the other IoU threshold
CENTRE_SIGMA = 0.25  # centre baseline: sigma as a fraction of each side


def as_map(heatmap: Any) -> np.ndarray:
    """A float64 H x W copy with NaN -> 0 and negatives clipped (torch or numpy input)."""
    if hasattr(heatmap, "detach"):
        heatmap = heatmap.detach().float().cpu().numpy()
    array = np.asarray(heatmap, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D (H x W), got shape {array.shape}")
    return np.clip(np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)


def is_constant(heatmap: Any, tolerance: float = CONSTANT_TOLERANCE) -> bool:
    """True for an all-zero or flat map, which carries no information about where to look."""
    if hasattr(heatmap, "detach"):
        heatmap = heatmap.detach().float().cpu().numpy()
    array = np.nan_to_num(np.asarray(heatmap, dtype=np.float64))
    if array.size == 0:
        return True
    high, low = float(array.max()), float(array.min())
    return high - low <= tolerance * max(abs(high), abs(low), 1e-30)


def box_mask(shape: tuple[int, int], box: Box) -> np.ndarray:
    """Boolean H x W mask of the pixels whose centre lies in the box.

    A box smaller than a pixel still marks the pixel holding its centre, so a tiny
    part scaled down to a coarse map is never silently empty.
    """
    height, width = shape
    x0, y0, x1, y1 = box
    centres_x = np.arange(width) + 0.5
    centres_y = np.arange(height) + 0.5
    columns = (centres_x >= x0) & (centres_x < x1)
    rows = (centres_y >= y0) & (centres_y < y1)
    mask = rows[:, None] & columns[None, :]
    if not mask.any():
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        if 0 <= cx < width and 0 <= cy < height:
            mask[int(cy), int(cx)] = True
    return mask


def box_area_fraction(shape: tuple[int, int], box: Box) -> float:
    """Share of the frame inside the box: the pointing-game and energy score of a random map."""
    return float(box_mask(shape, box).mean())


def peak_location(heatmap: Any) -> tuple[int, int]:
    """(row, column) of the maximum; ties go to the first in row-major order."""
    array = as_map(heatmap)
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(array)), array.shape))  # type: ignore[return-value]


def pointing_game(heatmap: Any, box: Box, tolerance: float = 0.0) -> bool:
    """Hit when the map's peak pixel is in the box (or within `tolerance` pixels of it).

    A constant map has no peak and always misses.
    """
    array = as_map(heatmap)
    if is_constant(array):
        return False
    row, column = peak_location(array)
    if tolerance <= 0:
        return bool(box_mask(array.shape, box)[row, column])
    x, y = column + 0.5, row + 0.5
    x0, y0, x1, y1 = box
    dx = max(x0 - x, 0.0, x - x1)
    dy = max(y0 - y, 0.0, y - y1)
    return math.hypot(dx, dy) <= tolerance


def energy_in_box(heatmap: Any, box: Box) -> float:
    """Sum of the map inside the box / sum over the whole map (NaN for an all-zero map)."""
    array = as_map(heatmap)
    total = float(array.sum())
    if total <= 0:
        return float("nan")
    return float(array[box_mask(array.shape, box)].sum() / total)


def mass_mask(heatmap: Any, mass: float = MASS_FRACTION) -> np.ndarray:
    """The fewest highest pixels that together hold `mass` of the map's total."""
    array = as_map(heatmap)
    flat = array.ravel()
    total = float(flat.sum())
    mask = np.zeros(flat.shape, dtype=bool)
    if total <= 0:
        return mask.reshape(array.shape)
    order = np.argsort(-flat, kind="stable")
    cumulative = np.cumsum(flat[order])
    count = int(np.searchsorted(cumulative, mass * total - 1e-12 * total)) + 1
    mask[order[: min(count, flat.size)]] = True
    return mask.reshape(array.shape)


def half_max_mask(heatmap: Any, fraction: float = HALF_MAX) -> np.ndarray:
    """Pixels at or above `fraction` of the map's peak."""
    array = as_map(heatmap)
    peak = float(array.max()) if array.size else 0.0
    if peak <= 0:
        return np.zeros(array.shape, dtype=bool)
    return array >= fraction * peak


def mask_iou(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    union = int(np.logical_or(mask_a, mask_b).sum())
    return float(np.logical_and(mask_a, mask_b).sum() / union) if union else 0.0


def centre_gaussian(shape: tuple[int, int], sigma: float = CENTRE_SIGMA) -> np.ndarray:
    """Baseline map: an isotropic-in-relative-units Gaussian at the frame's centre, peak 1.

    Photos are framed around their subject, so "look at the middle" is the score any
    learned map has to beat.
    """
    height, width = shape
    ys = (np.arange(height) + 0.5) / height - 0.5
    xs = (np.arange(width) + 0.5) / width - 0.5
    return np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))


@dataclass(frozen=True)
class MapScores:
    pointing: bool
    energy: float  # NaN for an all-zero map
    iou_mass: float
    iou_half_max: float
    constant: bool


def score_map(heatmap: Any, box: Box) -> MapScores:
    """Every localization score of one map against one box."""
    array = as_map(heatmap)
    truth = box_mask(array.shape, box)
    return MapScores(
        pointing=pointing_game(array, box),
        energy=energy_in_box(array, box),
        iou_mass=mask_iou(mass_mask(array), truth),
        iou_half_max=mask_iou(half_max_mask(array), truth),
        constant=is_constant(array),
    )


@dataclass
class LocalizationSummary:
    """Means over the images scored; fractions in [0, 1], NaN when nothing was scored."""

    images: int
    pointing: float
    energy: float
    iou_mass: float
    iou_half_max: float
    constant: int  # images whose map was constant (those miss the pointing game)

    def as_dict(self) -> dict[str, float | int | None]:
        return {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in self.__dict__.items()}


@dataclass
class LocalizationTally:
    """Accumulates MapScores over a dataset, one map kind at a time."""

    hits: int = 0
    images: int = 0
    constant: int = 0
    energies: list[float] = field(default_factory=list)
    iou_mass: list[float] = field(default_factory=list)
    iou_half_max: list[float] = field(default_factory=list)

    def add(self, scores: MapScores) -> None:
        self.images += 1
        self.hits += int(scores.pointing)
        self.constant += int(scores.constant)
        if not math.isnan(scores.energy):
            self.energies.append(scores.energy)
        self.iou_mass.append(scores.iou_mass)
        self.iou_half_max.append(scores.iou_half_max)

    def add_map(self, heatmap: Any, box: Box) -> MapScores:
        scores = score_map(heatmap, box)
        self.add(scores)
        return scores

    def summary(self) -> LocalizationSummary:
        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else float("nan")

        return LocalizationSummary(
            images=self.images,
            pointing=self.hits / self.images if self.images else float("nan"),
            energy=mean(self.energies),
            iou_mass=mean(self.iou_mass),
            iou_half_max=mean(self.iou_half_max),
            constant=self.constant,
        )


def score_dataset(items: Iterable[tuple[Any, Box]]) -> LocalizationSummary:
    """Mean scores of (heatmap, box) pairs."""
    tally = LocalizationTally()
    for heatmap, box in items:
        tally.add_map(heatmap, box)
    return tally.summary()


def chance_summary(items: Iterable[tuple[tuple[int, int], Box]]) -> LocalizationSummary:
    """What a map with no information scores on average: the box's share of the frame.

    That is the expected pointing-game hit rate of a uniformly random peak and the
    energy of a uniform map. IoU is left out (NaN): it depends on the threshold.
    """
    fractions = [box_area_fraction(shape, box) for shape, box in items]
    value = float(np.mean(fractions)) if fractions else float("nan")
    return LocalizationSummary(len(fractions), value, value, float("nan"), float("nan"), 0)
