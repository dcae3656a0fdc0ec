"""torchvision ResNets cut into stages, so attention can read several of them."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision import models

log = logging.getLogger(__name__)

STAGE_CHANNELS = {
    "resnet18": {1: 64, 2: 128, 3: 256, 4: 512},
    "resnet34": {1: 64, 2: 128, 3: 256, 4: 512},
    "resnet50": {1: 256, 2: 512, 3: 1024, 4: 2048},
}
STAGE_STRIDES = {1: 4, 2: 8, 3: 16, 4: 32}


class WeightsUnavailableError(RuntimeError):
    """Backbone weights could not be obtained; the message says what to do instead."""


class ResNetStages(nn.Module):
    """A ResNet whose forward returns the feature maps of stages 1..last_stage."""

    def __init__(self, name: str, weights: str = "random", last_stage: int = 4) -> None:
        super().__init__()
        if name not in STAGE_CHANNELS:
            raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(STAGE_CHANNELS)}")
        net = getattr(models, name)(weights=None)
        _load_weights(net, name, weights)
        self.name = name
        self.last_stage = last_stage
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        # Stages past the last one used are dropped so they cost nothing.
        self.layers = nn.ModuleList([getattr(net, f"layer{i}") for i in range(1, last_stage + 1)])
        self.channels = {i: STAGE_CHANNELS[name][i] for i in range(1, last_stage + 1)}

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of stages 1..last_stage, in order."""
        x = self.stem(images)
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


def _load_weights(net: nn.Module, name: str, weights: str) -> None:
    if weights == "random":
        return
    if weights == "imagenet":
        state = _imagenet_state_dict(name)
    else:
        state = load_state_dict_file(Path(weights))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing:
        raise WeightsUnavailableError(
            f"the weights in {weights} do not fit a {name}: {len(missing)} tensors are missing "
            f"(first: {missing[0]}). Choose the backbone the file was saved from."
        )
    if unexpected:
        log.warning("ignored %d unexpected tensors in %s (first: %s)", len(unexpected), weights, unexpected[0])


def _imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    weights_enum = models.get_model_weights(name).IMAGENET1K_V1
    try:
        return weights_enum.get_state_dict(progress=False)
    except Exception as exc:  # URLError, socket errors, HTTP errors: all mean "not obtainable now"
        raise WeightsUnavailableError(
            f"could not download torchvision's ImageNet weights for {name} ({type(exc).__name__}: {exc}). "
            "This machine seems to be offline. Use model.weights = 'random', or download the weights "
            f"on a connected machine (torchvision {name} IMAGENET1K_V1) and pass the file's path as model.weights."
        ) from exc


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a backbone state dict without executing pickled code."""
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"{path} could not be read as a weights file ({type(exc).__name__}: {exc}). "
            "fgdesk loads only plain tensors; re-save the file with torch.save(model.state_dict(), path)."
        ) from exc
    for key in ("state_dict", "model", "backbone"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise WeightsUnavailableError(f"{path} does not hold a state dict of tensors")
    cleaned = {}
    for key, value in raw.items():
        for prefix in ("module.", "backbone.", "encoder."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned
