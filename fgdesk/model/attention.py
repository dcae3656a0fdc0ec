"""Multi-scale spatial attention: one map and one attention-pooled descriptor per stage."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpatialAttentionPool(nn.Module):
    """A 1x1-conv gate scores every location; a softmax over space turns the scores
    into a map that sums to 1, and the map pools the stage's features.

    The last conv starts at zero, so a fresh module pools exactly like global average
    pooling; attention has to earn any departure from that.
    """

    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(32, channels // 4)
        self.gate = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )
        nn.init.zeros_(self.gate[-1].weight)
        nn.init.zeros_(self.gate[-1].bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = features.shape
        scores = self.gate(features).float().flatten(1)  # softmax in fp32 for stability
        attention = scores.softmax(dim=1)
        descriptor = torch.einsum("bcn,bn->bc", features.float().flatten(2), attention)
        return descriptor, attention.view(batch, height, width)


class GlobalAveragePool(nn.Module):
    """The `attention = none` ablation: uniform weights over space."""

    def __init__(self, channels: int = 0) -> None:
        super().__init__()

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = features.shape
        descriptor = features.float().mean(dim=(2, 3))
        uniform = features.new_full((batch, height, width), 1.0 / (height * width), dtype=torch.float32)
        return descriptor, uniform


class MultiScaleAttention(nn.Module):
    """Pools each chosen stage with its own attention and fuses the descriptors.

    Fusion concatenates the L2-normalised descriptors, each scaled by the square root
    of a learned softmax weight, so the embedding has unit norm and a cosine
    similarity between embeddings is a weighted mean of per-scale similarities.
    """

    def __init__(self, channels: dict[int, int], stages: list[int], kind: str = "multiscale") -> None:
        super().__init__()
        self.stages = list(stages)
        pool = SpatialAttentionPool if kind == "multiscale" else GlobalAveragePool
        self.pools = nn.ModuleList([pool(channels[s]) for s in self.stages])
        self.scale_logits = nn.Parameter(torch.zeros(len(self.stages)))
        self.out_dim = sum(channels[s] for s in self.stages)

    def scale_weights(self) -> torch.Tensor:
        return self.scale_logits.float().softmax(dim=0)

    def forward(self, stage_features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Return (embedding, descriptors, attention maps) for features of stages 1..N."""
        weights = self.scale_weights().sqrt()
        descriptors, maps, parts = [], [], []
        for index, (stage, pool) in enumerate(zip(self.stages, self.pools)):
            descriptor, attention = pool(stage_features[stage - 1])
            descriptors.append(descriptor)
            maps.append(attention)
            parts.append(F.normalize(descriptor, dim=1) * weights[index])
        return torch.cat(parts, dim=1), descriptors, maps
