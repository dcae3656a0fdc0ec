"""Multi-scale spatial attention: one map and one attention-pooled descriptor per stage."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpatialAttentionPool(nn.Module):
    """A 1x1-conv gate scores every location; a softmax over space turns the scores
    into weights that sum to 1, and the weights pool the stage's features with a
    generalised mean of power p (GeM): descriptor_c = (sum_i a_i f_ic^p)^(1/p).

    p = 1 is the attention-weighted average; a larger p lets each channel's strongest
    responses dominate, which keeps a small part (a wing marking, a few pixels of a
    large image) from being averaged away by the background around it.

    The map returned is where the descriptor actually comes from: the share
    a_i f_ic^p / sum_j a_j f_jc^p of every location, averaged over channels. It sums
    to 1 like the gate's softmax, and equals it when the features are spatially flat.

    The gate's last conv starts at zero, so the learned part starts uniform and
    has to earn any departure from that. Without `with_map` the map is None and its
    per-location shares are never computed.
    """

    def __init__(self, channels: int, hidden: int | None = None, power: float = 1.0) -> None:
        super().__init__()
        if power < 1.0:
            raise ValueError(f"pooling power must be at least 1, got {power}")
        self.power = float(power)
        hidden = hidden or max(32, channels // 4)
        self.gate = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )
        nn.init.zeros_(self.gate[-1].weight)
        nn.init.zeros_(self.gate[-1].bias)

    def forward(self, features: torch.Tensor, with_map: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, _, height, width = features.shape
        scores = self.gate(features).float().flatten(1)  # softmax in fp32 for stability
        attention = scores.softmax(dim=1)
        self.last_gate = attention.detach().view(batch, height, width)  # for evidence maps
        self.last_scores = scores.view(batch, height, width)  # with gradient, for attention_consistency
        if self.power == 1.0 and not with_map:
            # Training and embedding extraction read only the descriptor. Under autocast the
            # product runs in bf16 whatever its inputs, so an fp32 copy of the features would
            # only be cast back: skipping it gives the same values and gradients, ~1.5% faster a step.
            return torch.einsum("bcn,bn->bc", features.flatten(2), attention), None
        flat = features.float().flatten(2)
        if self.power == 1.0:
            descriptor = torch.einsum("bcn,bn->bc", flat, attention)
            share = flat * attention.unsqueeze(1) / descriptor.unsqueeze(2).clamp_min(1e-12)
        else:
            # Scaled by each channel's maximum first so that x^p stays finite at any p.
            peak = flat.amax(dim=2, keepdim=True).clamp_min(1e-6)
            powered = (flat.clamp_min(0) / peak).pow(self.power) * attention.unsqueeze(1)
            mass = powered.sum(dim=2)
            descriptor = mass.clamp_min(1e-30).pow(1.0 / self.power) * peak.squeeze(2)
            if not with_map:
                return descriptor, None
            share = powered / mass.unsqueeze(2).clamp_min(1e-30)
        # Channels that are zero everywhere give no evidence of place: weigh the others.
        alive = (flat.amax(dim=2) > 0).float()
        where = (share * alive.unsqueeze(2)).sum(dim=1) / alive.sum(dim=1, keepdim=True).clamp_min(1.0)
        where = torch.where(alive.sum(dim=1, keepdim=True) > 0, where, attention)
        return descriptor, where.view(batch, height, width)


class GlobalAveragePool(nn.Module):
    """The `attention = none` ablation: uniform weights over space."""

    def __init__(self, channels: int = 0) -> None:
        super().__init__()

    def forward(self, features: torch.Tensor, with_map: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, _, height, width = features.shape
        descriptor = features.float().mean(dim=(2, 3))
        if not with_map:
            return descriptor, None
        uniform = features.new_full((batch, height, width), 1.0 / (height * width), dtype=torch.float32)
        return descriptor, uniform


class MultiScaleAttention(nn.Module):
    """Pools each chosen stage with its own attention and fuses the descriptors.

    Fusion concatenates the L2-normalised descriptors, each scaled by the square root
    of a learned softmax weight, so the embedding has unit norm and a cosine
    similarity between embeddings is a weighted mean of per-scale similarities.
    """

    def __init__(self, channels: dict[int, int], stages: list[int], kind: str = "multiscale", power: float = 1.0) -> None:
        super().__init__()
        self.stages = list(stages)
        if kind == "multiscale":
            self.pools = nn.ModuleList([SpatialAttentionPool(channels[s], power=power) for s in self.stages])
        else:
            self.pools = nn.ModuleList([GlobalAveragePool(channels[s]) for s in self.stages])
        self.scale_logits = nn.Parameter(torch.zeros(len(self.stages)))
        self.out_dim = sum(channels[s] for s in self.stages)
        self.last_gates: list[torch.Tensor] | None = None  # the gates' softmax maps of the last forward
        self.last_scores: list[torch.Tensor] | None = None  # their logits, with gradient

    def powers(self) -> list[float]:
        return [float(getattr(pool, "power", 1.0)) for pool in self.pools]

    def scale_weights(self) -> torch.Tensor:
        return self.scale_logits.float().softmax(dim=0)

    def forward(self, stage_features: list[torch.Tensor], with_maps: bool = True
                ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor] | None]:
        """Return (embedding, descriptors, attention maps) for features of stages 1..N.

        Without maps (training, embedding extraction) the maps are None and the
        per-location shares behind them are never computed.
        """
        weights = self.scale_weights().sqrt()
        descriptors, maps, parts, gates, scores = [], [], [], [], []
        for index, (stage, pool) in enumerate(zip(self.stages, self.pools)):
            descriptor, attention = pool(stage_features[stage - 1], with_maps)
            gates.append(getattr(pool, "last_gate", None))
            scores.append(getattr(pool, "last_scores", None))
            descriptors.append(descriptor)
            maps.append(attention)
            parts.append(F.normalize(descriptor, dim=1) * weights[index])
        self.last_gates = gates if all(g is not None for g in gates) else None
        self.last_scores = scores if all(g is not None for g in scores) else None
        return torch.cat(parts, dim=1), descriptors, maps if with_maps else None
