#!/usr/bin/env python3
"""Accuracy on real fine-grained data within a fixed CPU budget: fgdesk against its alternatives.

Variants (each seed pretrains from random init on the *train* split only; the test
split is never seen before the final evaluation):
  random      random-init network, no training (fgdesk's embedding and the plain ResNet pool)
  fgdesk_off  fgdesk's one-click defaults (fgdesk.train.defaults.default_config) with attention = none
  fgdesk_on   fgdesk's one-click defaults, unchanged except the time budget and the seed
  lightly     MoCo v2 built from lightly's pieces and lightly's MoCoV2Transform, same budget,
              resolution, batch, lr schedule and precision as fgdesk
  supervised  ResNet-18 + linear head trained with labels (cross-entropy), same budget

Reported on the official test split: kNN top-1 (k=20, cosine, T=0.07) and linear-probe
top-1 (fgdesk.evaluate.linear: weight decay chosen on a split of the training
embeddings), per seed with mean and spread. Curves of loss and validation kNN top-1
(a split carved from the training images) against minutes go into the JSON and a plot.

`--tune` runs ablations instead: the training images are split into tune-train and
tune-validation, fgdesk pretrains on tune-train only, and every row (one change to the
defaults) is scored on tune-validation. The test split is not even opened.

    python3 dev.py bench bench/accuracy.py --minutes 25 --seeds 0,1,2          # the issue-6 protocol
    python3 dev.py bench bench/accuracy.py --minutes 0.5 --seeds 0              # smoke run
    python3 dev.py bench bench/accuracy.py --tune --minutes 10 --seeds 0,1,2 --rows default,attention_none
    python3 dev.py bench bench/accuracy.py --epochs 30 --seeds 0 --variants fgdesk_on,fgdesk_off   # equal training

`--epochs N` trains every run for N epochs instead of a time budget: a machine whose speed
drifts between runs then cannot hand one variant more training than another.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import copy
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DOCS_DIR,
    KNN_K,
    KNN_T,
    RESULTS_DIR,
    Report,
    format_table,
    pct,
    pct_spread,
    progress,
    quiet_logging,
    relative,
    resolve_data,
    score_features,
    seed_everything,
    set_threads,
    summarize,
    usable_cpus,
)
from peers import LightlyMoCoV2, PooledTrunk, resnet_trunk, TRUNK_DIM  # noqa: E402

from fgdesk.config import ConfigError, RunConfig  # noqa: E402
from fgdesk.data.augment import IMAGE_MEAN, IMAGE_STD, eval_min_short_side, eval_transform  # noqa: E402
from fgdesk.data.images import ImageDecodeError, load_rgb  # noqa: E402
from fgdesk.data.layouts import Sample, detect  # noqa: E402
from fgdesk.data.loading import SampleDataset, make_loader  # noqa: E402
from fgdesk.evaluate.embeddings import compute_embeddings, load_encoder  # noqa: E402
from fgdesk.evaluate.knn import knn_top1, leave_one_out_knn_top1  # noqa: E402
from fgdesk.evaluate.few_labels import few_label_scores, parse_labels_per_class  # noqa: E402
from fgdesk.model.moco import EncoderWithHead, cosine_momentum  # noqa: E402
from fgdesk.model.network import FineGrainedNet  # noqa: E402
from fgdesk.train import runs  # noqa: E402
from fgdesk.train.checkpoint import load_checkpoint  # noqa: E402
from fgdesk.train.defaults import default_config  # noqa: E402
from fgdesk.train.device import autocast, resolve_precision, select_device  # noqa: E402
from fgdesk.train.engine import Trainer, holdout_split  # noqa: E402
from fgdesk.train.events import EpochEvent, FailedEvent, StepEvent  # noqa: E402
from fgdesk.train.schedule import scaled_lr, warmup_cosine  # noqa: E402

VARIANTS = {
    "random": "random init (no training)",
    "fgdesk_off": "fgdesk defaults, attention off",
    "fgdesk_on": "fgdesk defaults (attention on)",
    "lightly": "lightly MoCo v2",
    "supervised": "supervised from scratch",
}
# Earlier defaults, kept in merged reports for comparison (renamed with --merge FILE:old=new).
FORMER_VARIANTS = {
    "fgdesk_on_2local": "fgdesk defaults until 2026-12-01 (2 local crops)",
    "fgdesk_off_2local": "fgdesk defaults until 2026-12-01, attention off",
    "fgdesk_on_t02": "fgdesk defaults with temperature 0.2 (until 0935cfd)",
    "fgdesk_off_t02": "fgdesk defaults with temperature 0.2, attention off",
}
LABELS = {**VARIANTS, **FORMER_VARIANTS}
PLOT_ORDER = ("random", "fgdesk_off_2local", "fgdesk_on_2local", "fgdesk_off_t02", "fgdesk_on_t02", "fgdesk_off", "fgdesk_on",
              "lightly", "supervised")
COLOURS = {"random": "#7f7f7f", "fgdesk_off": "#1f77b4", "fgdesk_off_2local": "#aec7e8", "fgdesk_on_2local": "#ff9896", "fgdesk_on": "#d62728",
           "fgdesk_off_t02": "#9edae5", "fgdesk_on_t02": "#ffbb78",
           "lightly": "#2ca02c", "supervised": "#9467bd"}
TUNE_VAL_FRACTION = 0.2
LOSS_WINDOW_S = 20.0  # step losses are averaged over windows of this many seconds for the curves

# One change to the defaults per row. Values are config overrides (dotted keys), or a
# callable that edits the config for changes that need arithmetic.
ABLATIONS: dict[str, tuple[str, dict[str, Any] | Callable[[RunConfig], None]]] = {
    "default": ("the one-click defaults", {}),
    "attention_none": ("attention off (global average pooling)", {"model.attention": "none"}),
    "stages_4": ("attention on stage 4 only", {"model.stages": [4]}),
    "gem_3": ("generalised-mean attention pooling, power 3", {"model.pool_power": 3.0}),
    "image_64": ("64 px views (more steps per minute)", {"data.image_size": 64, "data.eval_size": 64, "data.local_size": 32}),
    "image_64_eval_96": ("64 px training views, 96 px evaluation (more steps per minute, same test input)",
                         {"data.image_size": 64, "data.local_size": 32}),
    "res_schedule_64": ("resolution schedule: 64 px views for the first half of the budget, then 96 px", {"data.early_size": 64}),
    "image_128": ("128 px views", {"data.image_size": 128, "data.eval_size": 128, "data.local_size": 64}),
    "local_crops_0": ("no local crops", {"data.local_crops": 0}),
    "local_crops_4": ("4 local crops", {"data.local_crops": 4}),
    "temperature_0.05": ("temperature 0.05", {"contrastive.temperature": 0.05}),
    "temperature_0.1": ("temperature 0.1", {"contrastive.temperature": 0.1}),
    "temperature_0.4": ("temperature 0.4", {"contrastive.temperature": 0.4}),
    "queue_256": ("queue 256", {"contrastive.queue_size": 256}),
    # No row above the data set's size: the engine caps the queue there (a larger one holds
    # only older keys of the same images), so such a row would repeat the default.
    "queue_512": ("queue 512 (about a third of the data set)", {"contrastive.queue_size": 512}),
    "lr_half": ("half the learning rate", lambda c: setattr(c.optim, "lr", c.optim.lr / 2)),
    "lr_double": ("double the learning rate", lambda c: setattr(c.optim, "lr", c.optim.lr * 2)),
    "batch_32": ("batch 32", {"schedule.batch_size": 32}),
    "batch_128": ("batch 128", {"schedule.batch_size": 128}),
    "no_color_jitter": ("no colour jitter (colour kept)", {"data.color_jitter": 0.0}),
    "textbook_color": ("textbook colour: jitter p 0.8, grayscale p 0.2", {"data.color_jitter_prob": 0.8, "data.grayscale_prob": 0.2}),
    "min_scale_0.08": ("global crops down to 8% of the image", {"data.min_scale": 0.08}),
    # About 700 steps make a 25-minute run; MoCo's 0.99 rising to 1 along a cosine leaves
    # the key encoder nearly frozen for the last third of such a run.
    "momentum_0.95": ("key-encoder momentum 0.95 at the start (default 0.99), still rising to 1", {"contrastive.momentum": 0.95}),
    "bn_unshuffled": ("key batch norm over the whole batch (no shuffled chunks)", {"contrastive.shuffle_bn_chunks": 1}),
    "asymmetric": ("asymmetric loss (one query view)", {"contrastive.symmetric": False}),
    "dcl": ("decoupled contrastive loss", {"contrastive.loss": "dcl"}),
    "fp32": ("fp32 instead of bf16 autocast", {"precision": "fp32"}),
    "adamw": ("AdamW", {"optim.name": "adamw", "optim.lr": 0.004, "optim.weight_decay": 0.05}),
}
# Evaluation-only rows: the default run read through other features.
FEATURE_ROWS = {
    "features_projection": "default run, projection-head output instead of the embedding",
    "features_stage4_gap": "default run, plain average pool of stage 4",
}


# -- evaluation images ------------------------------------------------------------------


@dataclass
class EvalSet:
    """Decoded, centre-cropped evaluation tensors (fp16 to halve memory), decoded once per size."""

    images: torch.Tensor  # (N, 3, S, S) float16, normalised
    labels: torch.Tensor
    paths: list[str]
    unreadable: list[str] = field(default_factory=list)


def decode_eval_set(samples: Sequence[Sample], size: int, crop_bottom: int) -> EvalSet:
    transform = eval_transform(size)
    decode_to = eval_min_short_side(size)  # as fgdesk's evaluation decodes (cub50's files are too small for it to act)

    def one(sample: Sample):
        try:
            return transform(load_rgb(sample.path, crop_bottom=crop_bottom, min_short_side=decode_to)).half()
        except ImageDecodeError:
            return None

    with concurrent.futures.ThreadPoolExecutor(max(1, usable_cpus())) as pool:
        tensors = list(pool.map(one, samples))
    keep = [i for i, t in enumerate(tensors) if t is not None]
    return EvalSet(
        images=torch.stack([tensors[i] for i in keep]) if keep else torch.zeros(0, 3, size, size, dtype=torch.float16),
        labels=torch.tensor([samples[i].label for i in keep], dtype=torch.long),
        paths=[str(samples[i].path) for i in keep],
        unreadable=[str(s.path) for s, t in zip(samples, tensors) if t is None],
    )


@torch.no_grad()
def embed(features: Callable[[torch.Tensor], torch.Tensor], module: nn.Module, images: torch.Tensor,
          batch: int = 256) -> torch.Tensor:
    """Features of every image in fp32 on the CPU (channels_last), module in eval mode."""
    was_training = module.training
    module.eval()
    out = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch].float().contiguous(memory_format=torch.channels_last)
        out.append(features(chunk).float())
    module.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 1)


# -- curves -------------------------------------------------------------------------------


class CurveRecorder:
    """Loss (averaged over short windows) and validation kNN against minutes of training."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.loss_points: list[tuple[float, float]] = []
        self.epochs: list[dict[str, Any]] = []
        self._window: list[float] = []
        self._window_start = 0.0
        self.steps = 0
        self.images_per_s: list[float] = []

    def step(self, loss: float, elapsed_s: float, images_per_s: float | None = None) -> None:
        self.steps += 1
        self._window.append(loss)
        if images_per_s:
            self.images_per_s.append(images_per_s)
        if elapsed_s - self._window_start >= LOSS_WINDOW_S:
            self.loss_points.append((elapsed_s / 60.0, sum(self._window) / len(self._window)))
            self._window, self._window_start = [], elapsed_s

    def epoch(self, epoch: int, elapsed_s: float, mean_loss: float, knn: float | None) -> None:
        self.epochs.append({"epoch": epoch + 1, "minutes": elapsed_s / 60.0, "mean_loss": mean_loss, "val_knn_top1": knn})

    def as_dict(self) -> dict[str, Any]:
        return {
            "loss": [[round(m, 3), round(l, 4)] for m, l in self.loss_points],
            "epochs": self.epochs,
            "steps": self.steps,
        }


# -- fgdesk -------------------------------------------------------------------------------


def fgdesk_run(cfg: RunConfig, run_dir: Path) -> tuple[dict[str, Any], Path | None]:
    """Train with the engine; return (curves and status, run folder)."""
    recorder = CurveRecorder()
    last_elapsed = [0.0]

    def on_event(event) -> None:
        if isinstance(event, StepEvent):
            recorder.step(event.loss, time.monotonic() - recorder.started, event.images_per_s)
        elif isinstance(event, EpochEvent):
            last_elapsed[0] = event.elapsed_s
            recorder.epoch(event.epoch, event.elapsed_s, event.mean_loss, event.knn_top1)
            knn = "n/a" if event.knn_top1 is None else f"{100 * event.knn_top1:.1f}%"
            progress(f"  epoch {event.epoch + 1}: loss {event.mean_loss:.3f}, val kNN {knn}, {event.elapsed_s / 60:.1f} min")

    with quiet_logging():
        result = Trainer(cfg, run_dir, on_event=on_event).run()
    info = {"curves": recorder.as_dict(), "epochs_done": getattr(result, "epochs_done", None),
            "train_minutes": last_elapsed[0] / 60.0}
    if recorder.images_per_s:
        info["mean_images_per_s"] = sum(recorder.images_per_s) / len(recorder.images_per_s)
    if isinstance(result, FailedEvent):
        info["error"] = result.reason
        return info, None
    info["status"] = result.status
    return info, run_dir


def fgdesk_features(run_dir: Path, kind: str = "embedding") -> tuple[Callable, nn.Module]:
    """A feature function of a run's final checkpoint: its embedding, its projection, or stage-4 pooling."""
    net, config, path = load_encoder(run_dir, device="cpu")
    net = net.to(memory_format=torch.channels_last)
    if kind == "embedding":
        return (lambda x: net(x).embedding), net
    if kind == "stage4_gap":
        return (lambda x: net.backbone(x)[-1].float().mean(dim=(2, 3))), net
    if kind == "projection":
        plain = copy.deepcopy(config)
        plain.model.weights = "random"
        encoder = EncoderWithHead(plain)
        document = load_checkpoint(path, kind="pretrain")
        state = {k[len("query."):]: v for k, v in document["model"].items() if k.startswith("query.")}
        encoder.load_state_dict(state)
        encoder = encoder.to(memory_format=torch.channels_last).eval()
        return encoder, encoder
    raise ValueError(kind)


# -- peers: lightly's MoCo v2 and the supervised baseline ------------------------------------------


class Supervised(nn.Module):
    def __init__(self, backbone: str, num_classes: int) -> None:
        super().__init__()
        self.backbone = resnet_trunk(backbone)
        self.head = nn.Linear(TRUNK_DIM[backbone], num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images).flatten(start_dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def supervised_transform(size: int):
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.25, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGE_MEAN, IMAGE_STD),
    ])


@dataclass
class PeerContext:
    cfg: RunConfig  # fgdesk's defaults for this data: budget, batch, size, lr, precision, workers
    train: list[Sample]
    bank: list[Sample]
    validation: list[Sample]
    num_classes: int
    crop_bottom: int
    device: torch.device
    dtype: torch.dtype | None
    lightly_queue: int
    lightly_temperature: float


def peer_run(kind: str, seed: int, ctx: PeerContext) -> tuple[dict[str, Any], nn.Module]:
    """Train lightly's MoCo v2 or the supervised baseline under the engine's budget rules.

    Same as the engine: the budget clock includes the epoch-end kNN monitor; the lr
    follows warm-up + cosine over max(step progress, time progress); the model at the end
    of the budget is the one evaluated; the loader is rebuilt each epoch with the same workers.
    """
    cfg = ctx.cfg
    seed_everything(seed)
    size, batch = cfg.data.image_size, min(cfg.schedule.batch_size, len(ctx.train))
    if kind == "lightly":
        from lightly.transforms import MoCoV2Transform

        model: nn.Module = LightlyMoCoV2(cfg.model.backbone, ctx.lightly_queue, ctx.lightly_temperature,
                                         hidden_dim=cfg.model.proj_hidden, out_dim=cfg.model.proj_dim)
        samples = ctx.train
        transform = MoCoV2Transform(input_size=size)
    else:
        model = Supervised(cfg.model.backbone, ctx.num_classes)
        samples = ctx.bank  # the validation images stay unseen so the curve is honest
        transform = supervised_transform(size)
    model = model.to(ctx.device)
    channels_last = cfg.channels_last and ctx.device.type in ("cpu", "cuda")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = model.trainable() if kind == "lightly" else list(model.parameters())
    base_lr = scaled_lr(cfg.optim.lr if kind == "lightly" else 0.1, batch)
    optimizer = torch.optim.SGD(params, lr=base_lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    dataset = SampleDataset(samples, transform, ctx.crop_bottom)
    steps_per_epoch = len(samples) // batch
    total_steps = steps_per_epoch * cfg.schedule.epochs
    warmup_fraction = min(0.5, cfg.optim.warmup_epochs / cfg.schedule.epochs)
    budget_s = cfg.schedule.time_budget_min * 60.0
    recorder = CurveRecorder()
    started = time.monotonic()
    elapsed = lambda: time.monotonic() - started  # noqa: E731
    best_knn, step, whole_epochs = None, 0, 0
    pooled = PooledTrunk(model)
    for epoch in range(cfg.schedule.epochs):
        loader = make_loader(dataset, batch_size=batch, shuffle=True, num_workers=cfg.data.num_workers,
                             drop_last=True, seed=seed * 7919 + epoch * 101)
        losses, out_of_budget, epoch_steps = [], False, 0
        window_start, window_images = time.monotonic(), 0
        for data in loader:
            if len(data) < 2:
                continue
            progress_now = max(step / max(1, total_steps), elapsed() / budget_s if budget_s else 0.0)
            lr = warmup_cosine(base_lr, progress_now, warmup_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if kind == "lightly":
                views = [v.to(ctx.device) for v in data.views]
                if channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                with autocast(ctx.device, ctx.dtype):
                    loss = model.loss(views)
            else:
                images = data.views.to(ctx.device)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast(ctx.device, ctx.dtype):
                    loss = F.cross_entropy(model(images).float(), data.labels.to(ctx.device))
            if not torch.isfinite(loss):
                raise RuntimeError(f"{kind}: the loss became {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if kind == "lightly":
                model.after_step(cosine_momentum(cfg.contrastive.momentum, progress_now))
            step += 1
            epoch_steps += 1
            window_images += len(data)
            value = loss.item()
            losses.append(value)
            recorder.step(value, elapsed(), window_images / max(1e-9, time.monotonic() - window_start))
            if budget_s and elapsed() >= budget_s:
                out_of_budget = True
                break
        del loader
        # As the engine counts: an epoch the budget cut short is no epoch.
        whole_epochs += epoch_steps >= steps_per_epoch
        common = dict(image_size=cfg.data.eval_size, crop_bottom=ctx.crop_bottom, device=ctx.device, dtype=ctx.dtype, num_workers=0)
        bank = compute_embeddings(pooled, ctx.bank, **common)
        val = compute_embeddings(pooled, ctx.validation, **common)
        knn = knn_top1(bank.vectors, bank.labels, val.vectors, val.labels, ctx.num_classes) if len(val.labels) else None
        recorder.epoch(epoch, elapsed(), sum(losses) / max(1, len(losses)), knn)
        progress(f"  epoch {epoch + 1}: loss {sum(losses) / max(1, len(losses)):.3f}, val kNN "
                 f"{'n/a' if knn is None else f'{100 * knn:.1f}%'}, {elapsed() / 60:.1f} min")
        if knn is not None and (best_knn is None or knn > best_knn):
            best_knn = knn  # recorded only: like fgdesk, the final model is the one evaluated
        if out_of_budget:
            break
    info = {"curves": recorder.as_dict(), "epochs_done": whole_epochs, "train_minutes": elapsed() / 60.0,
            "best_val_knn_top1": best_knn}
    if recorder.images_per_s:
        info["mean_images_per_s"] = sum(recorder.images_per_s) / len(recorder.images_per_s)
    return info, model.cpu().float().to(memory_format=torch.channels_last)


# -- the main protocol ---------------------------------------------------------------------


@dataclass
class Setup:
    data: Path
    index: Any
    train: list[Sample]
    query: list[Sample]  # test split, or tune-validation in --tune mode
    num_classes: int
    base_cfg: RunConfig
    device: torch.device
    dtype: torch.dtype | None
    data_label: str = ""
    tune: bool = False  # query is the tune-validation split: also score leave-one-out kNN over train + query
    few_labels: tuple[int, ...] = ()  # also score from this many labelled images per class (5 draws each)
    eval_sets: dict[int, tuple[EvalSet, EvalSet]] = field(default_factory=dict)

    def eval_pair(self, size: int) -> tuple[EvalSet, EvalSet]:
        if size not in self.eval_sets:
            progress(f"decoding {len(self.train)} + {len(self.query)} evaluation images at {size} px")
            self.eval_sets[size] = (decode_eval_set(self.train, size, self.index.crop_bottom),
                                    decode_eval_set(self.query, size, self.index.crop_bottom))
        return self.eval_sets[size]


def evaluate_features(setup: Setup, features: Callable, module: nn.Module, size: int, seed: int,
                      linear: bool = True, few_labels: bool = True) -> dict[str, float]:
    train_set, query_set = setup.eval_pair(size)
    train_vectors = embed(features, module, train_set.images)
    query_vectors = embed(features, module, query_set.images)
    result = score_features(train_vectors, train_set.labels, query_vectors, query_set.labels, setup.num_classes, seed, linear)
    if few_labels and setup.few_labels:
        # The same draws for every variant and seed: only the features differ between rows.
        result["few_labels"] = [score.as_dict() for score in few_label_scores(
            train_vectors, train_set.labels, query_vectors, query_set.labels, setup.num_classes, setup.few_labels,
            knn_k=KNN_K, knn_temperature=KNN_T)]
    if setup.tune:
        # Every one of the 1,452 training images instead of the 292 held out: about half the
        # standard error, so rows closer than about two points can be told apart.
        result["loo_knn_top1"] = leave_one_out_knn_top1(torch.cat([train_vectors, query_vectors]),
                                                         torch.cat([train_set.labels, query_set.labels]), setup.num_classes,
                                                         KNN_K, KNN_T)
    return result


def run_variant(variant: str, seed: int, setup: Setup, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cfg = copy.deepcopy(setup.base_cfg)
    cfg.seed = seed
    size = cfg.data.eval_size
    record: dict[str, Any] = {"seed": seed}
    if variant == "random":
        seed_everything(seed)
        net = FineGrainedNet(cfg.model).to(memory_format=torch.channels_last)
        record["test"] = evaluate_features(setup, lambda x: net(x).embedding, net, size, seed)
        record["test_stage4_gap"] = evaluate_features(setup, lambda x: net.backbone(x)[-1].float().mean(dim=(2, 3)), net, size, seed,
                                                      few_labels=False)
        bank, validation = holdout_split(setup.train, setup.index.root)
        bank_set = subset_eval(setup, bank, size)
        val_set = subset_eval(setup, validation, size)
        record["val_knn_top1"] = knn_top1(embed(lambda x: net(x).embedding, net, bank_set[0]), bank_set[1],
                                          embed(lambda x: net(x).embedding, net, val_set[0]), val_set[1], setup.num_classes)
        record["config"] = {"model": cfg.model.__dict__, "eval_size": size}
        return record
    if variant in ("fgdesk_on", "fgdesk_off"):
        if variant == "fgdesk_off":
            cfg.model.attention = "none"
        cfg.name = f"{variant}-seed{seed}"
        run_dir = work / cfg.name
        info, run = fgdesk_run(cfg.validate(), run_dir)
        record.update(info)
        record["config"] = cfg.to_dict()
        record["config"]["data"]["path"] = setup.data_label
        if run is not None:
            features, module = fgdesk_features(run)
            record["test"] = evaluate_features(setup, features, module, size, seed)
        return record
    bank, validation = holdout_split(setup.train, setup.index.root)
    ctx = PeerContext(cfg, setup.train, bank, validation, setup.num_classes, setup.index.crop_bottom, setup.device,
                      setup.dtype, args.lightly_queue, args.lightly_temperature)
    info, model = peer_run(variant, seed, ctx)
    record.update(info)
    record["config"] = peer_config(variant, cfg, args)
    record["test"] = evaluate_features(setup, model.features, model, size, seed)
    if variant == "supervised":
        train_set, query_set = setup.eval_pair(size)
        logits = embed(model, model, query_set.images)
        record["test"]["head_top1"] = (logits.argmax(dim=1) == query_set.labels).float().mean().item()
    return record


def subset_eval(setup: Setup, samples: list[Sample], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    train_set, _ = setup.eval_pair(size)
    position = {p: i for i, p in enumerate(train_set.paths)}
    keep = [position[str(s.path)] for s in samples if str(s.path) in position]
    return train_set.images[keep], train_set.labels[keep]


def peer_config(variant: str, cfg: RunConfig, args: argparse.Namespace) -> dict[str, Any]:
    common = {
        "backbone": cfg.model.backbone, "image_size": cfg.data.image_size, "eval_size": cfg.data.eval_size,
        "batch_size": cfg.schedule.batch_size, "time_budget_min": cfg.schedule.time_budget_min,
        "precision": cfg.precision, "channels_last": cfg.channels_last, "num_workers": cfg.data.num_workers,
        "optimizer": f"SGD momentum {cfg.optim.momentum}, wd {cfg.optim.weight_decay}, warm-up + cosine over the budget",
    }
    if variant == "lightly":
        return {**common, "views": "lightly MoCoV2Transform(input_size) defaults", "lr_per_256": cfg.optim.lr,
                "queue": args.lightly_queue, "temperature": args.lightly_temperature, "symmetric": False,
                "projection": f"MoCoProjectionHead(512, {cfg.model.proj_hidden}, {cfg.model.proj_dim})",
                "momentum": f"cosine {cfg.contrastive.momentum} -> 1", "features": "ResNet average pool (512-d)"}
    return {**common, "views": "RandomResizedCrop(scale 0.25-1) + flip", "lr_per_256": 0.1, "loss": "cross-entropy",
            "trained_on": "train split minus the 10% validation hold-out", "features": "ResNet average pool (512-d)"}


def aggregate(records: list[dict[str, Any]], key: str = "test") -> dict[str, Any]:
    metrics = {}
    for metric in ("knn_top1", "linear_top1", "head_top1", "loo_knn_top1"):
        values = [r.get(key, {}).get(metric) for r in records]
        if any(v is not None for v in values):
            metrics[metric] = {"per_seed": values, **summarize(values)}
    # Few labels: each seed's mean over its draws, then mean ± std over seeds.
    few: dict[str, dict[str, Any]] = {}
    for record in records:
        for row in record.get(key, {}).get("few_labels", []):
            entry = few.setdefault(str(row["labels_per_class"]), {"num_train": row["num_train"], "knn_top1": [], "linear_top1": []})
            entry["knn_top1"].append(row["knn_top1"]["mean"])
            entry["linear_top1"].append(row["linear_top1"]["mean"])
    if few:
        metrics["few_labels"] = {n: {"num_train": e["num_train"],
                                     **{m: {"per_seed": e[m], **summarize(e[m])} for m in ("knn_top1", "linear_top1")}}
                                 for n, e in few.items()}
    return metrics


def issue_targets(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue-6 requirements, checked on the figures just measured."""
    def mean(variant: str, metric: str) -> float | None:
        return summary.get(variant, {}).get(metric, {}).get("mean")

    def std(variant: str, metric: str) -> float:
        return summary.get(variant, {}).get(metric, {}).get("std") or 0.0

    def seeds(first: str, second: str, metric: str) -> str:
        """How many seeds each side of a comparison rests on, e.g. '3 vs 3'."""
        return " vs ".join(str(summary.get(v, {}).get(metric, {}).get("n", 0)) for v in (first, second))

    out: dict[str, Any] = {}
    for metric in ("knn_top1", "linear_top1"):
        on, rnd, light = mean("fgdesk_on", metric), mean("random", metric), mean("lightly", metric)
        if on is not None and rnd is not None:
            out[f"{metric}: fgdesk_on >= random + 10 points"] = {"margin_points": 100 * (on - rnd), "met": on >= rnd + 0.10,
                                                                  "seeds": seeds("fgdesk_on", "random", metric)}
        # Attention on against off, within one recipe: the current defaults, or the former ones.
        for on_name, off_name, label in (("fgdesk_on", "fgdesk_off", ""), ("fgdesk_on_t02", "fgdesk_off_t02", " (temperature 0.2 defaults)"),
                                         ("fgdesk_on_2local", "fgdesk_off_2local", " (former defaults)")):
            pair_on, pair_off = mean(on_name, metric), mean(off_name, metric)
            if pair_on is not None and pair_off is not None:
                spread = max(std(on_name, metric), std(off_name, metric))
                # One seed a side has no spread to beat: the row reports the difference and decides nothing.
                one_seed = min(summary[v][metric].get("n", 0) for v in (on_name, off_name)) < 2
                out[f"{metric}: attention on beats off by more than the seed spread{label}"] = {
                    "difference_points": 100 * (pair_on - pair_off), "spread_points": 100 * spread,
                    "met": None if one_seed else pair_on - pair_off > spread, "seeds": seeds(on_name, off_name, metric)}
        if on is not None and light is not None:
            out[f"{metric}: fgdesk_on >= lightly"] = {"difference_points": 100 * (on - light), "met": on >= light,
                                                      "seeds": seeds("fgdesk_on", "lightly", metric)}
    return out


def budget_label(minutes: float | None, epochs: int | None = None) -> str:
    """'25 min' for a time budget, '40 epochs' for a fixed number of epochs."""
    return f"{epochs} epoch{'' if epochs == 1 else 's'}" if epochs else f"{minutes:g} min"


def is_smoke(minutes: float | None, epochs: int | None = None) -> bool:
    return epochs < 3 if epochs else (minutes or 0.0) < 5


def plot_curves(results: dict[str, Any], knn_path: Path, loss_path: Path, budget: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for variant in PLOT_ORDER:
        records = results.get(variant, {}).get("seeds", [])
        if not records:
            continue
        colour = COLOURS[variant]
        if variant == "random":
            values = [r["val_knn_top1"] for r in records if r.get("val_knn_top1") is not None]
            if values:
                ax.axhline(100 * sum(values) / len(values), color=colour, linestyle="--", label=f"{LABELS[variant]} (mean)")
            continue
        for index, record in enumerate(records):
            points = [(e["minutes"], e["val_knn_top1"]) for e in record.get("curves", {}).get("epochs", []) if e.get("val_knn_top1") is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, [100 * y for y in ys], color=colour, alpha=0.85, marker="o", markersize=2.5, linewidth=1.2,
                        label=LABELS[variant] if index == 0 else None)
    ax.set_xlabel("minutes of training (CPU, budget includes the kNN monitor)")
    ax.set_ylabel("kNN top-1 on held-out training images (%)")
    ax.set_title(f"cub50: validation kNN top-1 against time ({budget} per run, one line per seed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    knn_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(knn_path)
    plt.close(fig)
    written.append(relative(knn_path))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for variant in PLOT_ORDER:
        if variant == "random":
            continue
        target = axes[1] if variant == "supervised" else axes[0]
        for index, record in enumerate(results.get(variant, {}).get("seeds", [])):
            points = record.get("curves", {}).get("loss", [])
            if points:
                xs, ys = zip(*points)
                target.plot(xs, ys, color=COLOURS[variant], alpha=0.85, linewidth=1.2, label=LABELS[variant] if index == 0 else None)
    axes[0].set_title("contrastive loss (recipes differ: not comparable across lines)", fontsize=9)
    axes[1].set_title("supervised cross-entropy", fontsize=9)
    for ax in axes:
        ax.set_xlabel("minutes")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(loss_path)
    plt.close(fig)
    written.append(relative(loss_path))
    return written


# -- tune mode ------------------------------------------------------------------------------


def tune_split(train: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """Stratified, deterministic: ~20% of each class's training images become tune-validation."""
    per_class: dict[int, list[Sample]] = {}
    for sample in train:
        per_class.setdefault(sample.label, []).append(sample)
    fit, val = [], []
    for members in per_class.values():
        ranked = sorted(members, key=lambda s: hashlib.sha1(("tune:" + s.path.name).encode()).hexdigest())
        count = max(1, round(len(members) * TUNE_VAL_FRACTION)) if len(members) >= 5 else 0
        val.extend(ranked[:count])
        fit.extend(ranked[count:])
    return fit, val


def write_tune_dataset(folder: Path, classes: list[str], fit: list[Sample], val: list[Sample],
                       source_images: Path | None = None) -> Path:
    """A CUB-layout folder whose train split is tune-train and whose test split is tune-validation.

    Nothing is copied and the real test images are not listed. Where every image lies under
    `source_images`, the folder's images/ links there and images.txt keeps the original
    relative paths, so the engine's held-out split (hashed on paths relative to the root)
    is the same on every machine; otherwise images.txt holds absolute paths.
    """
    root = folder / "CUB_200_2011"
    root.mkdir(parents=True, exist_ok=True)
    rows = [(s, 1) for s in fit] + [(s, 0) for s in val]
    source = source_images.resolve() if source_images is not None else None
    images = root / "images"
    if images.is_symlink():  # a kept sitting's folder, written again
        images.unlink()
    elif images.is_dir() and not any(images.iterdir()):
        images.rmdir()
    if source is not None and all(s.path.resolve().is_relative_to(source) for s, _ in rows):
        images.symlink_to(source, target_is_directory=True)
        names = [s.path.resolve().relative_to(source).as_posix() for s, _ in rows]
    else:
        images.mkdir(exist_ok=True)
        names = [str(s.path.resolve()) for s, _ in rows]
    (root / "classes.txt").write_text("".join(f"{i + 1} {name}\n" for i, name in enumerate(classes)))
    (root / "images.txt").write_text("".join(f"{i + 1} {name}\n" for i, name in enumerate(names)))
    (root / "image_class_labels.txt").write_text("".join(f"{i + 1} {s.label + 1}\n" for i, (s, _) in enumerate(rows)))
    (root / "train_test_split.txt").write_text("".join(f"{i + 1} {flag}\n" for i, (_, flag) in enumerate(rows)))
    return root


def ablation_config(base: RunConfig, change: dict[str, Any] | Callable[[RunConfig], None]) -> RunConfig:
    if callable(change):
        cfg = copy.deepcopy(base)
        change(cfg)
        return cfg.validate()
    return base.with_overrides(change).validate() if change else copy.deepcopy(base)


def config_changes(base: RunConfig, changed: RunConfig) -> dict[str, Any]:
    """{dotted key: [default, this row]} for every field the row changes."""
    out: dict[str, Any] = {}

    def walk(a: dict, b: dict, prefix: str) -> None:
        for key in a:
            if isinstance(a[key], dict):
                walk(a[key], b[key], f"{prefix}{key}.")
            elif a[key] != b[key]:
                out[f"{prefix}{key}"] = [a[key], b[key]]

    walk(base.to_dict(), changed.to_dict(), "")
    return out


def reusable_run(run_dir: Path, cfg: RunConfig) -> dict[str, Any] | None:
    """The status of a finished kept run of exactly this configuration, or None. Lets a
    sitting be evaluated again (say with a new metric) without training it again; the
    curves are not kept, so the record says it was reused."""
    state = runs.read_state(run_dir)
    if state.get("status") != "finished" or not runs.last_checkpoint(run_dir).is_file():
        return None
    try:
        kept = RunConfig.load(run_dir / runs.CONFIG_FILE)
    except ConfigError:
        return None
    # The engine stores the dataset root it resolved; the folder is this sitting's own either way.
    kept.data.path = cfg.data.path
    if kept.to_dict() != cfg.to_dict():
        return None
    return {"epochs_done": state.get("epochs_done"), "train_minutes": state.get("elapsed_s", 0.0) / 60.0, "reused_kept_run": True}


def run_tune(args: argparse.Namespace, setup: Setup, work: Path, report: Report) -> int:
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else [*ABLATIONS, *FEATURE_ROWS]
    unknown = [r for r in rows if r not in ABLATIONS and r not in FEATURE_ROWS and r != "random"]
    if unknown:
        print(f"unknown row(s) {', '.join(unknown)}; choose from random, {', '.join([*ABLATIONS, *FEATURE_ROWS])}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, Any] = {}
    feature_rows = [r for r in rows if r in FEATURE_ROWS]
    train_rows = [r for r in rows if r in ABLATIONS]
    if feature_rows and "default" not in train_rows:
        train_rows.insert(0, "default")
    if "random" in rows:
        records = []
        for seed in seeds:
            seed_everything(seed)
            net = FineGrainedNet(setup.base_cfg.model).to(memory_format=torch.channels_last)
            records.append({"seed": seed, "val": evaluate_features(setup, lambda x: net(x).embedding, net, setup.base_cfg.data.eval_size, seed)})
        results["random"] = {"description": "random init, no training", "seeds": records, **aggregate(records, "val")}
    for row in train_rows:
        description, change = ABLATIONS[row]
        records = []
        feature_records: dict[str, list[dict[str, Any]]] = {name: [] for name in feature_rows}
        for seed in seeds:
            cfg = ablation_config(setup.base_cfg, change)
            cfg.seed = seed
            cfg.name = f"tune-{row}-seed{seed}"
            reused = reusable_run(work / cfg.name, cfg) if args.reuse_runs else None
            if reused is not None:
                progress(f"tune row {row} ({description}), seed {seed}: evaluating the kept run {relative(work / cfg.name)}")
                info, run = reused, work / cfg.name
            else:
                progress(f"tune row {row} ({description}), seed {seed}, {budget_label(args.minutes, args.epochs)}")
                info, run = fgdesk_run(cfg, work / cfg.name)
            record = {"seed": seed, **info}
            if run is not None:
                features, module = fgdesk_features(run)
                record["val"] = evaluate_features(setup, features, module, cfg.data.eval_size, seed)
                if row == "default":
                    for name in feature_rows:
                        kind = name.removeprefix("features_")
                        f, m = fgdesk_features(run, kind)
                        feature_records[name].append({"seed": seed, "val": evaluate_features(setup, f, m, cfg.data.eval_size, seed)})
                if not args.keep_runs:
                    shutil.rmtree(run, ignore_errors=True)
            records.append(record)
        results[row] = {"description": description, "changes": config_changes(setup.base_cfg, ablation_config(setup.base_cfg, change)),
                        "seeds": records, **aggregate(records, "val")}
        for name, recs in feature_records.items():
            if recs:
                results[name] = {"description": FEATURE_ROWS[name], "seeds": recs, **aggregate(recs, "val")}
    table_rows = []
    base = results.get("default", {})
    for name, entry in results.items():
        knn, lin, loo = entry.get("knn_top1", {}), entry.get("linear_top1", {}), entry.get("loo_knn_top1", {})

        def versus_default(metric: str, stats: dict[str, Any]) -> str | None:
            reference = base.get(metric, {}).get("mean")
            return None if name == "default" or reference is None or stats.get("mean") is None else f"{100 * (stats['mean'] - reference):+.1f}"

        table_rows.append({"row": name, "change": entry["description"], "knn": pct_spread(knn), "linear": pct_spread(lin),
                           "delta": versus_default("knn_top1", knn), "loo": pct_spread(loo), "loo_delta": versus_default("loo_knn_top1", loo),
                           "epochs": ", ".join(str(r.get("epochs_done", "")) for r in entry.get("seeds", []) if r.get("epochs_done") is not None)})
    table = format_table(table_rows, [("row", "row"), ("change", "one change"), ("knn", "val kNN %"), ("delta", "vs default"),
                                      ("linear", "val linear %"), ("loo", "leave-one-out kNN %"), ("loo_delta", "vs default"),
                                      ("epochs", "epochs per seed")],
                         title=f"Ablations on tune-validation ({len(setup.query)} images carved from train), {budget_label(args.minutes, args.epochs)}, seeds {args.seeds}")
    report.write({"rows": results, "tune_train_images": len(setup.train), "tune_val_images": len(setup.query)},
                 [table], ["Scores are on a validation split carved from the training images; the test split was not used."],
                 filename=f"{args.out}.json" if args.out else ("ablation_smoke.json" if is_smoke(args.minutes, args.epochs) else "ablation.json"))
    return 0


def write_report(results: dict[str, Any], report: Report, minutes: float | None, seeds: str, threads: int,
                 out: str | None, no_plot: bool = False, extra_notes: Sequence[str] = (), epochs: int | None = None) -> None:
    """Targets, tables, plots and the JSON for the variants measured (or merged)."""
    smoke = is_smoke(minutes, epochs)
    summary = {v: {m: results[v].get(m, {}) for m in ("knn_top1", "linear_top1")} for v in results}
    targets = issue_targets(summary)
    table_rows = []
    for variant, entry in results.items():
        done = [r.get("epochs_done") for r in entry["seeds"] if r.get("epochs_done") is not None]
        speed = [r.get("mean_images_per_s") for r in entry["seeds"] if r.get("mean_images_per_s")]
        table_rows.append({
            "variant": LABELS[variant], "knn": pct_spread(entry.get("knn_top1", {})),
            "linear": pct_spread(entry.get("linear_top1", {})),
            "per_seed": " / ".join(pct(v) for v in entry.get("knn_top1", {}).get("per_seed", [])),
            "epochs": "/".join(str(e) for e in done) or "-",
            "speed": f"{sum(speed) / len(speed):.0f}" if speed else "-",
        })
        if variant == "random" and entry.get("stage4_gap"):
            table_rows.append({"variant": "random init, plain stage-4 pool", "knn": pct_spread(entry["stage4_gap"].get("knn_top1", {})),
                               "linear": pct_spread(entry["stage4_gap"].get("linear_top1", {})),
                               "per_seed": " / ".join(pct(v) for v in entry["stage4_gap"].get("knn_top1", {}).get("per_seed", [])),
                               "epochs": "-", "speed": "-"})
    tables = [format_table(table_rows, [("variant", "variant"), ("knn", "kNN top-1 %"), ("per_seed", "kNN per seed"),
                                        ("linear", "linear top-1 %"), ("epochs", "epochs"), ("speed", "train img/s")],
                           title=f"cub50 test split, {budget_label(minutes, epochs)}{'' if epochs else ' CPU budget'} per run, "
                                 f"seeds {seeds}, {threads} threads")]
    few_rows = [{"variant": LABELS[variant], "n": n, "images": entry["num_train"], "knn": pct_spread(entry["knn_top1"]),
                  "linear": pct_spread(entry["linear_top1"])}
                 for variant, results_entry in results.items()
                 for n, entry in results_entry.get("few_labels", {}).items()]
    if few_rows:
        tables.append(format_table(few_rows, [("variant", "variant"), ("n", "labels per class"), ("images", "labelled images"),
                                              ("knn", "kNN top-1 %"), ("linear", "linear top-1 %")],
                                   title="few labels: the same random draws of n training images per class (5 draws; "
                                         "mean over draws, ± over seeds), scored on the whole test split"))
    if targets:
        tables.append(format_table([{"target": k, "met": v["met"], "seeds": v["seeds"],
                                     "points": f"{next(iter(x for x in v.values() if isinstance(x, float))):+.1f}"}
                                    for k, v in targets.items()],
                                   [("target", "issue 6 target"), ("points", "points"), ("seeds", "seeds"), ("met", "met")]))
    plots = []
    if not no_plot:
        folder = RESULTS_DIR if smoke else DOCS_DIR
        prefix = out or ("accuracy_smoke" if smoke else "benchmarks")
        plots = plot_curves(results, folder / f"{prefix}_knn_curve.png", folder / f"{prefix}_loss_curve.png", budget_label(minutes, epochs))
    notes = [*extra_notes, "Each fgdesk run is the engine's own: its budget clock includes the epoch-end kNN monitor and checkpoints."]
    if smoke:
        notes.append("Smoke run (under 5 minutes or 3 epochs): the figures only show the script works.")
    report.write({"variants": results, "targets": targets, "plots": plots}, tables, notes,
                 filename=f"{out}.json" if out else ("accuracy_smoke.json" if smoke else "accuracy.json"))


def result_file(name: str) -> Path:
    """bench/results/NAME.json for a name given with or without the suffix."""
    return RESULTS_DIR / (name if name.endswith(".json") else f"{name}.json")


def pooling_problem(entry: dict[str, Any], other: dict[str, Any]) -> str | None:
    """Why two result entries of one variant cannot be pooled as seeds of one run, or None."""
    seeds = {r["seed"] for r in entry["seeds"]} & {r["seed"] for r in other["seeds"]}
    if seeds:
        return f"seed(s) {sorted(seeds)} measured twice"

    def recipe(record: dict[str, Any]) -> Any:
        config = copy.deepcopy(record.get("config"))
        if isinstance(config, dict):
            config.pop("seed", None)
            config.pop("name", None)
        return config

    recipes = {json.dumps(recipe(r), sort_keys=True) for r in entry["seeds"] + other["seeds"]}
    if len(recipes) > 1:
        return "the runs used different configurations"
    return None


def load_result_files(spec: str) -> tuple[list[Path], list[dict[str, Any]]] | None:
    """Result files named by a comma list of NAME or NAME:variant=former_name[:...], the second
    form renaming variants measured with former defaults; None (after a message) on a bad item."""
    sources, documents = [], []
    for item in spec.split(","):
        name, *renames = item.split(":")
        rename = dict(r.partition("=")[::2] for r in renames)
        if any(old not in VARIANTS or new not in FORMER_VARIANTS for old, new in rename.items()):
            print(f"{item}: rename one of {', '.join(VARIANTS)} to one of {', '.join(FORMER_VARIANTS)}", file=sys.stderr)
            return None
        path = result_file(name)
        if not path.is_file():
            print(f"{relative(path)} does not exist", file=sys.stderr)
            return None
        document = json.loads(path.read_text(encoding="utf-8"))
        document["results"]["variants"] = {
            rename.get(k, k): ({**v, "description": FORMER_VARIANTS[rename[k]]} if k in rename else v)
            for k, v in document["results"]["variants"].items()
        }
        sources.append(path)
        documents.append(document)
    return sources, documents


def merge_reports(args: argparse.Namespace) -> int:
    """One report from several result files of the same budget, e.g. variants or seeds run one
    after another; nothing is trained. A variant found in several files pools their seeds, which
    must differ, and whose run configurations must agree apart from the seed and the run name."""
    loaded = load_result_files(args.merge)
    if loaded is None:
        return 2
    sources, documents = loaded
    budgets = {(d["settings"]["minutes"], d["settings"].get("epochs")) for d in documents}
    threads = {d["threads"] for d in documents}
    cpus = {d.get("machine", {}).get("cpu") for d in documents}
    if len(budgets) != 1 or len(threads) != 1:
        print(f"cannot merge runs of different budgets {sorted(map(str, budgets))} or thread counts {sorted(threads)}", file=sys.stderr)
        return 2
    if len(cpus) != 1:
        # A time budget buys different training on different processors.
        print(f"cannot merge runs made on different CPUs ({', '.join(sorted(map(str, cpus)))})", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    for path, document in zip(sources, documents):
        for variant, entry in document["results"]["variants"].items():
            if variant not in results:
                results[variant] = {**entry, "source": relative(path)}
                continue
            problem = pooling_problem(results[variant], entry)
            if problem:
                print(f"cannot pool {variant} from {relative(path)}: {problem}", file=sys.stderr)
                return 2
            records = sorted(results[variant]["seeds"] + entry["seeds"], key=lambda r: r["seed"])
            stage4 = {"stage4_gap": aggregate(records, "test_stage4_gap")} if "stage4_gap" in entry else {}
            results[variant] = {"description": entry["description"], "seeds": records, **aggregate(records),
                                **stage4, "source": f"{results[variant]['source']}, {relative(path)}"}
    provenance = [{"file": relative(p), "commit": d["commit"], "date": d["date"], "seeds": d["settings"]["seeds"],
                   "variants": list(d["results"]["variants"])} for p, d in zip(sources, documents)]
    settings = {**documents[0]["settings"], "seeds": "per variant, see merged_from", "merged_from": provenance}
    report = Report("accuracy", settings)
    report.header["machine"] = documents[0].get("machine")  # where the runs were made, not where they were merged
    notes = [f"Merged from {', '.join(relative(p) for p in sources)}; each variant keeps the commit and date of its own run."]
    minutes, epochs = budgets.pop()
    write_report(results, report, minutes, "per variant", threads.pop(), args.out, args.no_plot, notes, epochs)
    return 0


def plot_budgets(args: argparse.Namespace) -> int:
    """Test top-1 against the budget, from result files of different budgets; trains nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = load_result_files(args.budget_plot)
    if loaded is None:
        return 2
    points: dict[str, list[tuple[float, float, float, int]]] = {}
    for path, document in zip(*loaded):
        if document["settings"].get("minutes") is None:
            print(f"{relative(path)} trained a fixed number of epochs, not a time budget; left out", file=sys.stderr)
            continue
        minutes = float(document["settings"]["minutes"])
        for variant, entry in document["results"]["variants"].items():
            for metric in ("knn_top1", "linear_top1"):
                stats = entry.get(metric, {})
                if stats.get("mean") is not None:
                    points.setdefault(f"{variant}:{metric}", []).append((minutes, 100 * stats["mean"], 100 * (stats.get("std") or 0.0), stats["n"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120, sharex=True)
    for ax, metric, title in ((axes[0], "knn_top1", "kNN top-1 (k=20)"), (axes[1], "linear_top1", "linear-probe top-1")):
        for variant in PLOT_ORDER:
            series = sorted(points.get(f"{variant}:{metric}", []))
            if not series:
                continue
            if variant == "random":  # no training: the same figure at every budget
                mean, std = series[0][1], series[0][2]
                ax.axhspan(mean - std, mean + std, color=COLOURS[variant], alpha=0.15)
                ax.axhline(mean, color=COLOURS[variant], linestyle="--", label=f"{LABELS[variant]}")
                ax.axhline(mean + 10, color="black", linestyle=":", linewidth=1, label="issue 6 target: random + 10 points")
                continue
            xs, ys, es, ns = zip(*series)
            label = LABELS[variant] + ("" if min(ns) > 1 else " (some budgets: 1 seed)")
            ax.errorbar(xs, ys, yerr=es, color=COLOURS[variant], marker="o", capsize=3, linewidth=1.2, label=label)
        ax.set_title(f"cub50 test split: {title}", fontsize=10)
        ax.set_xlabel("pretraining budget (CPU minutes, 2 threads)")
        ax.set_ylabel("top-1 % (mean ± std over seeds)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    target = DOCS_DIR / f"{args.out or 'accuracy_budgets'}.png"
    fig.savefig(target)
    plt.close(fig)
    print(f"wrote {relative(target)}")
    return 0


# -- entry point ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="CUB-layout dataset (default ../shared/data/cub50/CUB_200_2011)")
    parser.add_argument("--minutes", type=float, default=20.0, help="pretraining budget per run (minutes)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train every run for this many epochs instead of --minutes, for comparisons at equal "
                             "training that a machine's changing speed cannot skew")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {', '.join(VARIANTS)}")
    parser.add_argument("--device", default="cpu", help="device for training (the benchmark is about CPUs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: every usable core)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: fgdesk's automatic choice)")
    parser.add_argument("--lightly-queue", type=int, default=4096, help="lightly's memory bank (MoCo v2 textbook: 4096)")
    parser.add_argument("--lightly-temperature", type=float, default=0.2)
    parser.add_argument("--tune", action="store_true", help="ablations on a validation split carved from train (writes ablation.json)")
    parser.add_argument("--rows", default=None, help=f"ablation rows for --tune (default all): random, {', '.join([*ABLATIONS, *FEATURE_ROWS])}")
    parser.add_argument("--keep-runs", type=Path, default=None, help="keep run folders in DIR/NAME (NAME: --out, or accuracy / ablation) instead of a temporary folder")
    parser.add_argument("--reuse-runs", action="store_true",
                        help="with --tune and --keep-runs: evaluate a finished kept run of the same configuration instead of training it again")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--few-labels", default="1,5,10",
                        help="also score every variant from N labelled training images per class, 5 random draws each "
                             "(comma-separated; 'none' to skip; not in --tune)")
    parser.add_argument("--budget-plot", default=None,
                        help="plot test top-1 against the budget from result files of different budgets "
                             "(names in bench/results, comma-separated; NAME:variant=former renames as in --merge) "
                             "into docs/OUT.png; trains nothing")
    parser.add_argument("--merge", default=None,
                        help="combine result files of one budget (names in bench/results, comma-separated) into one "
                             "report with targets and plots; NAME:variant=former renames a variant measured with former "
                             "defaults, e.g. accuracy_25min:fgdesk_on=fgdesk_on_2local; trains nothing")
    parser.add_argument("--out", default=None,
                        help="results name, e.g. accuracy_3min (writes bench/results/NAME.json and NAME_*.png beside it, "
                             "or in docs/ for budgets of 5 minutes and more; the main figures stay untouched)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        return merge_reports(args)
    if args.epochs and not args.out:
        # Never over the time-budget reports (accuracy.json, ablation.json) and their plots.
        args.out = f"{'ablation' if args.tune else 'accuracy'}_{args.epochs}ep"
    if args.budget_plot:
        return plot_budgets(args)
    threads = set_threads(args.threads)
    data = resolve_data(args.data)
    if not data.exists():
        print(f"dataset folder {relative(data)} does not exist; pass --data", file=sys.stderr)
        return 2
    index = detect(data, check_images=False)
    if not index.labelled():
        print(f"{relative(data)} has no labels; the accuracy benchmark needs a labelled dataset", file=sys.stderr)
        return 2
    train = [s for s in index.train_samples() if s.label >= 0]
    test = [s for s in index.test_samples() if s.label >= 0]
    # Kept runs sit under the results name, so sittings with different --out never share folders.
    results_name = args.out or ("ablation" if args.tune else "accuracy")
    work = Path(args.keep_runs) / results_name if args.keep_runs else Path(tempfile.mkdtemp(prefix="fgdesk-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)

    if args.tune:
        fit, val = tune_split(train)
        tune_root = write_tune_dataset(work / "tune-data", list(index.classes), fit, val, index.root / "images")
        train_path, train, query = tune_root, fit, val
        index = detect(tune_root, check_images=False)
        train = [s for s in index.train_samples() if s.label >= 0]
        query = [s for s in index.test_samples() if s.label >= 0]
    else:
        train_path, query = data, test

    base = default_config(str(train_path), len(train), args.device)
    if args.epochs:
        base.schedule.epochs, base.schedule.time_budget_min = args.epochs, 0.0
    else:
        base.schedule.time_budget_min = args.minutes
    if args.workers is not None:
        base.data.num_workers = args.workers
    device = select_device(args.device)
    dtype = resolve_precision(base.precision, device)
    data_label = relative(data) + (" (tune-train split)" if args.tune else "")
    setup = Setup(train_path, index, train, query, len(index.classes), base, device, dtype, data_label, tune=args.tune,
                  few_labels=() if args.tune else parse_labels_per_class(args.few_labels))

    settings = {
        "data": relative(data), "mode": "tune" if args.tune else "test",
        "minutes": None if args.epochs else args.minutes, "epochs": args.epochs, "seeds": args.seeds,
        "device": str(device), "precision": "bf16 autocast + channels_last" if dtype == torch.bfloat16 else "fp32",
        "train_images": len(train), ("tune_val_images" if args.tune else "test_images"): len(query),
        "classes": len(index.classes), "knn": {"k": KNN_K, "temperature": KNN_T, "similarity": "cosine"},
        "linear_probe": "fgdesk.evaluate.linear.fit_linear (L-BFGS, weight decay chosen on a split of the training embeddings)",
        "evaluation": f"fp32, centre crop {base.data.eval_size} px, every model read at the end of its budget (fgdesk: its final checkpoint)",
        "default_config": {k: v for k, v in base.to_dict().items() if k != "data"} | {"data": {**base.data.__dict__, "path": data_label}},
    }
    name = "ablation" if args.tune else "accuracy"
    report = Report(name, settings)
    try:
        if args.tune:
            return run_tune(args, setup, work, report)
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            print(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
            return 2
        seeds = [int(s) for s in args.seeds.split(",")]
        results: dict[str, Any] = {}
        for variant in variants:
            records = []
            for seed in seeds:
                progress(f"{variant} ({VARIANTS[variant]}), seed {seed}, {budget_label(args.minutes, args.epochs)}, {threads} threads")
                record = run_variant(variant, seed, setup, args, work)
                if variant in ("fgdesk_on", "fgdesk_off") and not args.keep_runs:
                    shutil.rmtree(work / f"{variant}-seed{seed}", ignore_errors=True)
                test_scores = record.get("test", {})
                progress(f"{variant} seed {seed}: test kNN {pct(test_scores.get('knn_top1'))}%, linear {pct(test_scores.get('linear_top1'))}%")
                records.append(record)
            results[variant] = {"description": VARIANTS[variant], "seeds": records, **aggregate(records)}
            if variant == "random":
                results[variant]["stage4_gap"] = aggregate(records, "test_stage4_gap")
        write_report(results, report, args.minutes, args.seeds, threads, args.out, args.no_plot, epochs=args.epochs)
        return 0
    finally:
        if not args.keep_runs:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
