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
    attention_maps: list[torch.Tensor]  # per chosen stage, (B, h_s, w_s), each sums to 1
    descriptors: list[torch.Tensor]  # per chosen stage, (B, C_s), before normalisation
    stage_features: list[torch.Tensor]  # per chosen stage, (B, C_s, h_s, w_s)


class FineGrainedNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.stages = sorted(cfg.stages)
        self.backbone = ResNetStages(cfg.backbone, cfg.weights, last_stage=max(self.stages))
        self.attention = MultiScaleAttention(self.backbone.channels, self.stages, cfg.attention)
        self.embed_dim = self.attention.out_dim
        self.stage_dims = [self.backbone.channels[s] for s in self.stages]

    def forward(self, images: torch.Tensor) -> NetOutput:
        features = self.backbone(images)
        embedding, descriptors, maps = self.attention(features)
        return NetOutput(embedding, maps, descriptors, [features[s - 1] for s in self.stages])

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward(images).embedding


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

    The embedding is linear in the per-location features once the attention map
    and the descriptor norm are fixed, so a linear score w·embedding splits exactly
    into per-location terms: attention * (w_s · feature) * sqrt(weight_s) / |descriptor_s|.
    `class_vectors` is (B, D): one weight vector (a classifier row or a class
    prototype) per image. Negative evidence is clipped to zero unless asked not to.
    """
    maps = []
    offset = 0
    root_weights = scale_weights.float().sqrt()
    for index, (attention, descriptor, features) in enumerate(
        zip(output.attention_maps, output.descriptors, output.stage_features)
    ):
        channels = features.shape[1]
        vector = class_vectors[:, offset:offset + channels].float()
        offset += channels
        local_scores = torch.einsum("bchw,bc->bhw", features.float(), vector)
        scale = root_weights[index] / descriptor.norm(dim=1).clamp_min(1e-12)
        evidence = attention * local_scores * scale.view(-1, 1, 1)
        maps.append(evidence.clamp_min(0) if clip_negative else evidence)
    return maps
