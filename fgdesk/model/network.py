"""The encoder fgdesk trains and inspects: ResNet stages + multi-scale attention."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fgdesk.config import ModelConfig
from fgdesk.model.attention import MultiScaleAttention
from fgdesk.model.backbone import ResNetStages


@dataclass
class NetOutput:
    embedding: torch.Tensor  # (B, D), unit norm
    attention_maps: list[torch.Tensor] | None  # per chosen stage, (B, h_s, w_s), each sums to 1; None without maps
    descriptors: list[torch.Tensor]  # per chosen stage, (B, C_s), before normalisation
    stage_features: list[torch.Tensor]  # per chosen stage, (B, C_s, h_s, w_s)
    gate_maps: list[torch.Tensor] | None = None  # per chosen stage, the gate's softmax (B, h_s, w_s)
    pool_powers: list[float] | None = None  # per chosen stage, the GeM power of its pooling


class FineGrainedNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.stages = sorted(cfg.stages)
        self.backbone = ResNetStages(cfg.backbone, cfg.weights, last_stage=max(self.stages))
        self.attention = MultiScaleAttention(self.backbone.channels, self.stages, cfg.attention, cfg.pool_power)
        self.embed_dim = self.attention.out_dim
        self.stage_dims = [self.backbone.channels[s] for s in self.stages]

    def forward(self, images: torch.Tensor, with_maps: bool = True) -> NetOutput:
        features = self.backbone(images)
        embedding, descriptors, maps = self.attention(features, with_maps)
        return NetOutput(
            embedding, maps, descriptors, [features[s - 1] for s in self.stages],
            gate_maps=self.attention.last_gates, pool_powers=self.attention.powers(),
        )

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward(images, with_maps=False).embedding


def fuse_maps(maps: list[torch.Tensor], size: tuple[int, int], weights: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Upsample per-stage maps to `size` and average them with the scale weights.

    Each map is divided by its own maximum first so a coarse stage (few, large
    cells) and a fine one (many small cells) contribute on the same scale.
    Returns (upsampled maps, fused map), all (B, H, W) and non-negative.
    """
    upsampled = [
        F.interpolate(m.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False).squeeze(1)
        for m in maps
    ]
    fused = torch.zeros_like(upsampled[0])
    for weight, m in zip(weights.float(), upsampled):
        peak = m.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        fused = fused + weight * (m / peak)
    return upsampled, fused


def class_evidence_maps(
    output: NetOutput, scale_weights: torch.Tensor, class_vectors: torch.Tensor, clip_negative: bool = True
) -> list[torch.Tensor]:
    """Where the evidence for each image's class comes from, per stage, from the forward pass alone.

    With the gate's softmax a and the descriptor d fixed, every descriptor entry is
    d_c = sum_i share_ic * d_c, where share_ic = a_i f_ic^p / sum_j a_j f_jc^p (p: the
    pooling power; p = 1 gives a_i f_ic / d_c). So a linear score w·embedding splits
    exactly into per-location terms: sum_c w_c * share_ic * d_c * sqrt(weight_s) / |d_s|.
    `class_vectors` is (B, D): one weight vector (a classifier row or a class
    prototype) per image. Negative evidence is clipped to zero unless asked not to.
    """
    maps = []
    offset = 0
    root_weights = scale_weights.float().sqrt()
    gates = output.gate_maps
    powers = output.pool_powers or [1.0] * len(output.descriptors)
    for index, (attention, descriptor, features) in enumerate(
        zip(output.attention_maps, output.descriptors, output.stage_features)
    ):
        channels = features.shape[1]
        vector = class_vectors[:, offset:offset + channels].float()
        offset += channels
        shares = location_shares(features, gates[index] if gates else None, powers[index])
        local_scores = torch.einsum("bchw,bc->bhw", shares, vector * descriptor.float())
        scale = root_weights[index] / descriptor.float().norm(dim=1).clamp_min(1e-12)
        evidence = local_scores * scale.view(-1, 1, 1)
        maps.append(evidence.clamp_min(0) if clip_negative else evidence)
    return maps


def location_shares(features: torch.Tensor, gate: torch.Tensor | None, power: float) -> torch.Tensor:
    """(B, C, h, w): the share of each location in each channel of a GeM-pooled descriptor.

    `gate` is the softmax the pooling weighted locations with (uniform when None).
    Every channel's shares sum to 1 (a channel that is zero everywhere gets none).
    """
    batch, channels, height, width = features.shape
    flat = features.float().flatten(2).clamp_min(0)
    weights = gate.float().flatten(1) if gate is not None else flat.new_full((batch, height * width), 1.0 / (height * width))
    peak = flat.amax(dim=2, keepdim=True).clamp_min(1e-6)
    powered = (flat / peak).pow(power) * weights.unsqueeze(1)
    return (powered / powered.sum(dim=2, keepdim=True).clamp_min(1e-30)).view(batch, channels, height, width)
