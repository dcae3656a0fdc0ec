"""One dataclass tree describes a run; it loads from TOML/JSON and saves as JSON."""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BACKBONES = ("resnet18", "resnet34", "resnet50")
ATTENTION_KINDS = ("multiscale", "none")
OPTIMIZERS = ("sgd", "adamw")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LOSSES = ("infonce", "dcl")


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the field and the fix."""


@dataclass
class DataConfig:
    path: str = ""
    layout: str = "auto"  # auto | cub | aircraft | folders | unlabeled
    level: str = "variant"  # FGVC-Aircraft label level: variant | family | manufacturer
    image_size: int = 96  # global crop side in pixels
    local_crops: int = 2  # extra small crops per image (multi-crop); 0 disables
    local_size: int = 48
    min_scale: float = 0.25  # RandomResizedCrop lower bound for global views
    color_jitter: float = 0.4
    color_jitter_prob: float = 0.5
    grayscale_prob: float = 0.0
    blur_prob: float = 0.2
    eval_size: int = 96  # side of the centre crop for embeddings and prediction
    # Resolution schedule: global views of early_size px for the first early_fraction of the
    # run (by the budget clock, or by steps without a budget), image_size after; 0 is off.
    # Small views buy more steps early on, full-size ones match what evaluation sees.
    early_size: int = 0
    early_fraction: float = 0.5
    num_workers: int = -1  # -1: pick from the machine


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    weights: str = "random"  # random | imagenet | path to a .pt/.pth state dict
    attention: str = "multiscale"
    stages: list[int] = field(default_factory=lambda: [2, 3, 4])
    pool_power: float = 1.0  # generalised-mean power of attention pooling (1: weighted average)
    embed_dim: int = 256  # fused embedding size (what kNN and the linear head see)
    proj_dim: int = 128  # contrastive projection output
    proj_hidden: int = 512


@dataclass
class ContrastiveConfig:
    loss: str = "infonce"  # infonce | dcl (decoupled: positive left out of the denominator)
    queue_size: int = 4096  # capped below the dataset size at run time
    temperature: float = 0.2
    momentum: float = 0.99  # EMA start; a cosine schedule raises it towards 1.0
    symmetric: bool = True  # both views act as queries
    shuffle_bn_chunks: int = 4  # key batch norm over shuffled sub-batches (single device)
    # Weight of the loss that asks each stage's attention to agree, between the two global
    # views, on the region both show (losses.attention_consistency); 0 leaves it out. It
    # needs attention gates and both views as queries, and is skipped (and logged) without.
    attention_consistency: float = 0.0


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.06  # for batch 256; scaled linearly with the batch
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0


@dataclass
class ScheduleConfig:
    epochs: int = 50
    batch_size: int = 64
    time_budget_min: float = 0.0  # >0: stop after this many minutes, cosine schedule over the budget
    eval_every: int = 1  # epochs between kNN monitor evaluations; 0 disables
    checkpoint_every_steps: int = 200  # also at every epoch end
    log_every_steps: int = 1


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 where the device runs it fast, else fp32
    channels_last: bool = True
    seed: int = 0
    name: str = ""

    # -- validation ---------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Raise ConfigError naming the first bad field; return self for chaining."""
        check = _Checker()
        d, m, c, o, s = self.data, self.model, self.contrastive, self.optim, self.schedule
        check.choice("data.layout", d.layout, ("auto", "cub", "aircraft", "folders", "unlabeled"))
        check.choice("data.level", d.level, ("variant", "family", "manufacturer"))
        check.range("data.image_size", d.image_size, 32, 1024)
        check.range("data.local_crops", d.local_crops, 0, 16)
        if d.local_crops:
            check.range("data.local_size", d.local_size, 16, d.image_size)
        check.range("data.min_scale", d.min_scale, 0.01, 1.0)
        check.range("data.color_jitter", d.color_jitter, 0.0, 1.0)
        check.range("data.color_jitter_prob", d.color_jitter_prob, 0.0, 1.0)
        check.range("data.grayscale_prob", d.grayscale_prob, 0.0, 1.0)
        check.range("data.blur_prob", d.blur_prob, 0.0, 1.0)
        check.range("data.eval_size", d.eval_size, 32, 1024)
        if d.early_size:
            check.range("data.early_size", d.early_size, 32, d.image_size)
        check.range("data.early_fraction", d.early_fraction, 0.0, 0.99)
        check.range("data.num_workers", d.num_workers, -1, 64)
        check.choice("model.backbone", m.backbone, BACKBONES)
        check.choice("model.attention", m.attention, ATTENTION_KINDS)
        if m.weights not in ("random", "imagenet") and not Path(m.weights).expanduser().is_file():
            raise ConfigError(
                f"model.weights: {m.weights!r} is neither 'random', 'imagenet' nor an existing file; "
                "give the path of a saved state dict."
            )
        if not m.stages or sorted(set(m.stages)) != sorted(m.stages) or not all(1 <= x <= 4 for x in m.stages):
            raise ConfigError(f"model.stages: {m.stages!r} must be distinct ResNet stages between 1 and 4, e.g. [2, 3, 4].")
        check.range("model.pool_power", m.pool_power, 1.0, 64.0)
        check.range("model.embed_dim", m.embed_dim, 16, 4096)
        check.range("model.proj_dim", m.proj_dim, 8, 4096)
        check.range("model.proj_hidden", m.proj_hidden, 16, 8192)
        check.choice("contrastive.loss", c.loss, LOSSES)
        check.range("contrastive.queue_size", c.queue_size, 0, 1_000_000)
        check.range("contrastive.temperature", c.temperature, 0.01, 2.0)
        check.range("contrastive.momentum", c.momentum, 0.0, 1.0)
        check.range("contrastive.shuffle_bn_chunks", c.shuffle_bn_chunks, 1, 64)
        check.range("contrastive.attention_consistency", c.attention_consistency, 0.0, 100.0)
        check.choice("optim.name", o.name, OPTIMIZERS)
        check.range("optim.lr", o.lr, 1e-7, 10.0)
        check.range("optim.momentum", o.momentum, 0.0, 0.9999)
        check.range("optim.weight_decay", o.weight_decay, 0.0, 1.0)
        check.range("optim.warmup_epochs", o.warmup_epochs, 0.0, 1000.0)
        check.range("schedule.epochs", s.epochs, 1, 100_000)
        check.range("schedule.batch_size", s.batch_size, 2, 65_536)
        check.range("schedule.time_budget_min", s.time_budget_min, 0.0, 1e6)
        check.range("schedule.eval_every", s.eval_every, 0, 100_000)
        check.range("schedule.checkpoint_every_steps", s.checkpoint_every_steps, 1, 10**9)
        check.range("schedule.log_every_steps", s.log_every_steps, 1, 10**9)
        check.choice("device", self.device, DEVICES)
        check.choice("precision", self.precision, PRECISIONS)
        return self

    # -- (de)serialisation --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> "RunConfig":
        return _build(cls, raw, source)

    def save(self, path: str | Path) -> None:
        from fgdesk.fileio import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            raw = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from exc
        return cls.from_dict(raw, str(path))

    def with_overrides(self, overrides: dict[str, Any]) -> "RunConfig":
        """Return a copy with dotted keys replaced, e.g. {"schedule.epochs": 3}."""
        raw = self.to_dict()
        for dotted, value in overrides.items():
            node = raw
            *parents, leaf = dotted.split(".")
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"unknown config section {dotted!r}")
                node = node[part]
            if leaf not in node:
                raise ConfigError(f"unknown config field {dotted!r}")
            node[leaf] = value
        return RunConfig.from_dict(raw, "overrides")


class _Checker:
    def choice(self, name: str, value: Any, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}.")

    def range(self, name: str, value: Any, low: float, high: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ConfigError(f"{name}: {value!r} must be a number between {low} and {high}.")


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table of settings, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    values = {}
    for name, value in raw.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            values[name] = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{name}: expected true or false, got {value!r}")
            values[name] = value
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
        elif isinstance(default, list):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where}.{name}: expected a list, got {value!r}")
            values[name] = list(value)
        elif type(value) is not type(default):
            raise ConfigError(f"{where}.{name}: expected {type(default).__name__}, got {value!r}")
        else:
            values[name] = value
    return cls(**values)
