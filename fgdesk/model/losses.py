"""Contrastive losses as pure functions (no state, no modules)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    negative_mask: torch.Tensor | None = None,
    decoupled: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of unit-norm `queries` (B, D) against `positives` (B, D) and `negatives` (K, D).

    `negative_mask` (B, K) marks negatives to ignore (an image's own old keys in the
    queue). `decoupled` drops the positive from the denominator (DCL, Yeh et al. 2022).
    Returns (mean loss, fraction of rows whose positive outscores every negative).
    """
    positive_logits = (queries * positives).sum(dim=1, keepdim=True).float() / temperature
    negative_logits = (queries @ negatives.t()).float() / temperature
    if negative_mask is not None:
        negative_logits = negative_logits.masked_fill(negative_mask, float("-inf"))
    if decoupled:
        loss = -positive_logits.squeeze(1) + torch.logsumexp(negative_logits, dim=1)
    else:
        logits = torch.cat([positive_logits, negative_logits], dim=1)
        loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device), reduction="none")
    if negative_logits.shape[1]:
        accuracy = (positive_logits.squeeze(1) > negative_logits.max(dim=1).values).float().mean()
    else:
        accuracy = torch.ones((), device=queries.device)
    return loss.mean(), accuracy


def shared_region_grid(crops_a: torch.Tensor, crops_b: torch.Tensor, cells: int,
                       min_overlap: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where two crops of each image overlap, as sampling grids into each crop.

    `crops_*` are (B, 5) rows of top, left, height, width (fractions of the image) and
    a mirrored flag (AugmentedViews.crops). Returns (grid_a, grid_b, overlaps): the
    grids are (B, cells, cells, 2) in grid_sample's [-1, 1] coordinates, cell centres of
    the shared region in image order, so grid_a[i] and grid_b[i] look at the same
    pixels of image i; `overlaps` is True where the shared region covers at least
    `min_overlap` of the smaller crop.
    """
    top = torch.maximum(crops_a[:, 0], crops_b[:, 0])
    left = torch.maximum(crops_a[:, 1], crops_b[:, 1])
    bottom = torch.minimum(crops_a[:, 0] + crops_a[:, 2], crops_b[:, 0] + crops_b[:, 2])
    right = torch.minimum(crops_a[:, 1] + crops_a[:, 3], crops_b[:, 1] + crops_b[:, 3])
    area = (bottom - top).clamp_min(0) * (right - left).clamp_min(0)
    smaller = torch.minimum(crops_a[:, 2] * crops_a[:, 3], crops_b[:, 2] * crops_b[:, 3])
    overlaps = area >= min_overlap * smaller
    steps = (torch.arange(cells, device=crops_a.device, dtype=torch.float32) + 0.5) / cells
    rows = top.unsqueeze(1) + (bottom - top).unsqueeze(1) * steps  # (B, cells), image fractions
    cols = left.unsqueeze(1) + (right - left).unsqueeze(1) * steps

    def grid_in(crop: torch.Tensor) -> torch.Tensor:
        y = (rows - crop[:, 0:1]) / crop[:, 2:3]
        x = (cols - crop[:, 1:2]) / crop[:, 3:4]
        x = torch.where(crop[:, 4:5] > 0.5, 1.0 - x, x)  # a mirrored view holds column x at 1 - x
        size = (len(crop), cells, cells)
        return torch.stack([(2 * x - 1).unsqueeze(1).expand(size), (2 * y - 1).unsqueeze(2).expand(size)], dim=3)

    return grid_in(crops_a), grid_in(crops_b), overlaps


def attention_consistency(scores_a: torch.Tensor, scores_b: torch.Tensor, crops_a: torch.Tensor,
                          crops_b: torch.Tensor, cells: int = 6) -> torch.Tensor:
    """How much two views' attention disagrees about the part of the image both show.

    `scores_*` are (B, h, w) gate logits of the same stage for two crops of each image.
    Both are resampled onto one grid over the shared region, centred (a softmax ignores
    a constant), and compared by mean squared difference, averaged over the images whose
    crops overlap. A gate that scores content gives the same logits to the same pixels
    wherever the crop put them; a gate that prefers corners or one side of the frame
    does not, so this term is what takes position out of the maps.
    """
    grid_a, grid_b, overlaps = shared_region_grid(crops_a.float(), crops_b.float(), cells)
    sample = lambda scores, grid: F.grid_sample(  # noqa: E731
        scores.float().unsqueeze(1), grid, mode="bilinear", padding_mode="border", align_corners=False).flatten(1)
    a, b = sample(scores_a, grid_a), sample(scores_b, grid_b)
    difference = ((a - a.mean(dim=1, keepdim=True)) - (b - b.mean(dim=1, keepdim=True))).pow(2).mean(dim=1)
    weights = overlaps.float()
    return (difference * weights).sum() / weights.sum().clamp_min(1.0)
