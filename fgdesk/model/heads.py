"""Small heads on top of the fused embedding."""
from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Sequential):
    """MoCo v2 / SimCLR projection MLP; kNN and the linear probe skip it (they read the embedding)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
