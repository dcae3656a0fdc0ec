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
