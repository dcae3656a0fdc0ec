"""Learning-rate and progress schedules as pure functions."""
from __future__ import annotations

import math


def warmup_cosine(base_lr: float, progress: float, warmup_fraction: float, final_fraction: float = 0.0) -> float:
    """Linear warm-up over the first `warmup_fraction` of training, then a half cosine.

    `progress` runs from 0 to 1 (steps done / total steps, or time used / budget).
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup_fraction > 0 and progress < warmup_fraction:
        return base_lr * progress / warmup_fraction
    span = max(1e-12, 1.0 - warmup_fraction)
    cosine = 0.5 * (1.0 + math.cos(math.pi * (progress - warmup_fraction) / span))
    return base_lr * (final_fraction + (1.0 - final_fraction) * cosine)


def scaled_lr(lr: float, batch_size: int, world_size: int = 1) -> float:
    """The linear scaling rule: configured lr is for a global batch of 256."""
    return lr * batch_size * world_size / 256.0
