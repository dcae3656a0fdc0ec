#!/usr/bin/env python3
"""Images per second of one MoCo pretraining step: fgdesk against lightly and the paper's loop.

Variants, all on the same torchvision ResNet trunk, batch, resolution and threads,
in one process (so a busy machine slows them alike):
  (a) fgdesk, multi-scale attention   (fgdesk.model.moco.MoCo driven like the engine)
  (b) fgdesk, attention = none
  (c) lightly's MoCo v2 pieces         (MoCoProjectionHead, NTXentLoss memory bank, update_momentum)
  (d) a plain loop from the MoCo paper's pseudocode (bench/peers.py)

Two kinds of step are measured, so the work per image is equal within each:
  asymmetric: one query view forward+backward, one key view forward (MoCo v2 textbook);
  symmetric:  both views act as queries and as keys (fgdesk's default loss).
fgdesk's full default recipe (symmetric + local crops) is timed as well, for reference.
Variants run in interleaved rounds and the median round is reported.

Also measured: the data pipeline alone (decoding and augmenting real JPEGs in DataLoader
workers) and end-to-end steps fed by it, so the bottleneck is visible.

GPU mode (`--device cuda`, defaults to ResNet-50 at 224 px, bf16 + channels_last) adds a
correctness check: the loss and gradients of the same fgdesk step for fixed weights and
inputs on the CPU in fp32 against the GPU in fp32 and in bf16.

    python3 dev.py bench bench/train_throughput.py                   # CPU, ResNet-18, 96 px, batch 64
    python3 dev.py bench bench/train_throughput.py --quick           # smoke run
    python3 dev.py bench bench/train_throughput.py --device cuda     # GPU, ResNet-50, 224 px
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Report,
    Timer,
    cuda_sync_for,
    format_table,
    progress,
    relative,
    resolve_data,
    set_threads,
    usable_cpus,
)
from peers import LightlyMoCoV2, PaperMoCo  # noqa: E402

from fgdesk.config import RunConfig  # noqa: E402
from fgdesk.model.moco import MoCo  # noqa: E402
from fgdesk.train.device import autocast, cpu_has_fast_bf16  # noqa: E402

LR = 0.06 * 64 / 256
MOMENTUM = 0.99
PEER_NAMES = {
    "fgdesk_attention": "(a) fgdesk, multi-scale attention",
    "fgdesk_no_attention": "(b) fgdesk, attention none",
    "lightly": "(c) lightly MoCo v2",
    "paper": "(d) MoCo paper pseudocode",
    "fgdesk_default_recipe": "(a) full default recipe (+local crops)",
    "fgdesk_one_bn_chunk": "(a) with key batch norm unshuffled (1 chunk)",
    "fgdesk_consistency": "(a) with the attention-consistency term",
}


# -- steppers -----------------------------------------------------------------------


@dataclasses.dataclass
class Precision:
    name: str  # "fp32" or "bf16"
    dtype: torch.dtype | None
    channels_last: bool


def fgdesk_config(backbone: str, size: int, attention: str, symmetric: bool, local_crops: int, local_size: int,
                  queue: int, bn_chunks: int = 4, consistency: float = 0.0) -> RunConfig:
    cfg = RunConfig()
    cfg.model.backbone = backbone
    cfg.model.attention = attention
    cfg.data.image_size = size
    cfg.data.eval_size = size
    cfg.data.local_crops = local_crops
    cfg.data.local_size = min(local_size, size)
    cfg.contrastive.symmetric = symmetric
    cfg.contrastive.queue_size = queue
    cfg.contrastive.shuffle_bn_chunks = bn_chunks
    cfg.contrastive.attention_consistency = consistency
    return cfg.validate()


def random_crops(count: int, device: torch.device) -> torch.Tensor:
    """(count, 2, 5) crop boxes of two global views per image, as ContrastiveViews records them."""
    generator = torch.Generator().manual_seed(5)
    side = 0.5 + 0.5 * torch.rand(count, 2, 2, generator=generator)
    corner = (1 - side) * torch.rand(count, 2, 2, generator=generator)
    mirrored = (torch.rand(count, 2, 1, generator=generator) < 0.5).float()
    return torch.cat([corner, side, mirrored], dim=2).to(device)


class FgdeskStepper:
    """One engine step: autocast forward, backward, SGD, momentum update, enqueue (as in Trainer._train)."""

    def __init__(self, cfg: RunConfig, device: torch.device, precision: Precision, queue: int) -> None:
        self.device, self.precision = device, precision
        self.model = MoCo(cfg, queue_size=queue).to(device)
        if precision.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        trainable = [p for p in self.model.query.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(trainable, lr=LR, momentum=0.9, weight_decay=5e-4)
        self.num_global = 2
        self.with_crops = cfg.contrastive.attention_consistency > 0  # where the views were cut, for that term
        self.crops: torch.Tensor | None = None

    def step(self, views: list[torch.Tensor], ids: torch.Tensor) -> float:
        if self.precision.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        if self.with_crops and (self.crops is None or len(self.crops) != len(ids)):
            self.crops = random_crops(len(ids), self.device)
        with autocast(self.device, self.precision.dtype):
            output = self.model(views[: self.num_global], views[self.num_global:], ids, self.crops)
        loss = output.loss
        if not torch.isfinite(loss):
            raise RuntimeError(f"fgdesk loss became {loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.model.momentum_update(MOMENTUM)
        self.model.enqueue(output.keys.detach(), output.ids)
        return loss.item()


class PeerStepper:
    """lightly's or the paper's MoCo under the same autocast, channels_last, SGD and loss.item() sync."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: Precision) -> None:
        self.device, self.precision = device, precision
        self.model = model.to(device)
        if precision.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.trainable(), lr=LR, momentum=0.9, weight_decay=5e-4)

    def step(self, views: list[torch.Tensor], ids: torch.Tensor) -> float:
        if self.precision.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        with autocast(self.device, self.precision.dtype):
            loss = self.model.loss(views[:2])
        if not torch.isfinite(loss):
            raise RuntimeError(f"peer loss became {loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.model.after_step(MOMENTUM)
        return loss.item()


def build_stepper(variant: str, symmetric: bool, args: argparse.Namespace, device: torch.device, precision: Precision):
    torch.manual_seed(0)
    if variant.startswith("fgdesk"):
        attention = "none" if variant == "fgdesk_no_attention" else "multiscale"
        local = args.local_crops if variant == "fgdesk_default_recipe" else 0
        chunks = 1 if variant == "fgdesk_one_bn_chunk" else 4
        consistency = 1.0 if variant == "fgdesk_consistency" else 0.0
        cfg = fgdesk_config(args.backbone, args.size, attention, symmetric, local, args.local_size, args.queue, chunks, consistency)
        return FgdeskStepper(cfg, device, precision, args.queue)
    peer = LightlyMoCoV2 if variant == "lightly" else PaperMoCo
    return PeerStepper(peer(args.backbone, args.queue, 0.2, symmetric=symmetric), device, precision)


def make_views(count: int, batch: int, size: int, local: int, local_size: int, device: torch.device) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    views = [torch.randn(batch, 3, size, size, generator=generator) for _ in range(count)]
    views += [torch.randn(batch, 3, local_size, local_size, generator=generator) for _ in range(local)]
    return [v.to(device) for v in views]


# -- step throughput ----------------------------------------------------------------


def time_steps(stepper, views, ids, steps: int, sync) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for `steps` steps."""
    cpu_started = time.process_time()
    with Timer(sync) as timer:
        for _ in range(steps):
            stepper.step(views, ids)
    return timer.elapsed, time.process_time() - cpu_started


def measure_steps(args: argparse.Namespace, device: torch.device, precision: Precision, kind: str,
                  variants: list[str]) -> list[dict]:
    """Interleaved rounds over the variants of one step kind; images/s per round, median reported."""
    symmetric = kind != "asymmetric"
    sync = cuda_sync_for(device)
    steppers = {}
    for variant in variants:
        progress(f"{precision.name} {kind}: building {variant}")
        steppers[variant] = build_stepper(variant, symmetric, args, device, precision)
    ids = torch.arange(args.batch, device=device)
    plain_views = make_views(2, args.batch, args.size, 0, args.local_size, device)
    recipe_views = make_views(2, args.batch, args.size, args.local_crops, min(args.local_size, args.size), device)
    for variant, stepper in steppers.items():
        views = recipe_views if variant == "fgdesk_default_recipe" else plain_views
        time_steps(stepper, views, ids, args.warmup, sync)
    rates: dict[str, list[float]] = {v: [] for v in variants}
    cpu_rates: dict[str, list[float]] = {v: [] for v in variants}
    for round_index in range(args.rounds):
        for variant, stepper in steppers.items():
            views = recipe_views if variant == "fgdesk_default_recipe" else plain_views
            seconds, cpu_seconds = time_steps(stepper, views, ids, args.steps, sync)
            rates[variant].append(args.batch * args.steps / seconds)
            cpu_rates[variant].append(args.batch * args.steps / max(cpu_seconds, 1e-9))
        if (round_index + 1) % max(1, args.rounds // 3) == 0 or round_index + 1 == args.rounds:
            progress(f"{precision.name} {kind}: round {round_index + 1}/{args.rounds}: "
                     + ", ".join(f"{v} {statistics.median(rates[v]):.1f}" for v in variants))
    rows = []
    for variant in variants:
        values = rates[variant]
        median = statistics.median(values)
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [median, median, median]
        rows.append({
            "precision": precision.name,
            "step": "symmetric + local crops" if variant == "fgdesk_default_recipe" else kind,
            "variant": variant,
            "images_per_s": median,
            "best_images_per_s": max(values),
            # images per CPU-second of this process: barely moved by other processes' load when
            # threads = 1 (with more threads it also counts OpenMP spin-waiting)
            "images_per_cpu_s": statistics.median(cpu_rates[variant]),
            "rounds": values,
            # interquartile range relative to the median: how much the machine's load moved the figure
            "spread": (quartiles[2] - quartiles[0]) / median if median else 0.0,
        })
    del steppers
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    out = []
    for precision in sorted({r["precision"] for r in rows}):
        for kind in ("asymmetric", "symmetric"):
            chosen = [r for r in rows if r["precision"] == precision and r["step"] == kind]
            by = {r["variant"]: r["images_per_s"] for r in chosen}
            best = {r["variant"]: r["best_images_per_s"] for r in chosen}
            if "lightly" not in by:
                continue
            cpu = {r["variant"]: r["images_per_cpu_s"] for r in chosen}
            entry = {"precision": precision, "step": kind}
            for name in ("fgdesk_attention", "fgdesk_no_attention", "paper"):
                if name in by:
                    entry[f"{name}/lightly"] = by[name] / by["lightly"]
                    entry[f"{name}/lightly (best rounds)"] = best[name] / best["lightly"]
                    entry[f"{name}/lightly (CPU time)"] = cpu[name] / cpu["lightly"]
            out.append(entry)
    return out


def precision_speedups(rows: list[dict]) -> list[dict]:
    """bf16 + channels_last against fp32 for each variant and step kind."""
    out = []
    for row in rows:
        if row["precision"] != "bf16":
            continue
        base = next((r for r in rows if r["precision"] == "fp32" and r["variant"] == row["variant"] and r["step"] == row["step"]), None)
        if base:
            out.append({"variant": row["variant"], "step": row["step"], "bf16_over_fp32": row["images_per_s"] / base["images_per_s"]})
    return out


# -- data pipeline ------------------------------------------------------------------


def open_samples(args: argparse.Namespace):
    """Real training images (cub50 train split) or, where they are missing, a generated demo set."""
    from fgdesk.data.layouts import detect

    path = resolve_data(args.data)
    if path.exists():
        index = detect(path, check_images=False)
        return index.train_samples(), index.crop_bottom, f"{relative(path)} (train split, JPEG)"
    from fgdesk.data.synthetic import make_demo_dataset

    folder = Path(tempfile.mkdtemp(prefix="fgdesk-bench-"))
    side = max(args.size * 2, 128)
    progress(f"{relative(path)} not found: generating a demo set at {side} px for the loader measurements")
    root = make_demo_dataset(folder / "demo", num_classes=8, per_class=40, size=side, seed=0)
    index = detect(root, check_images=False)
    return index.train_samples(), index.crop_bottom, f"generated demo set ({side} px PNG; {relative(path)} missing)"


def view_config(args: argparse.Namespace, local_crops: int):
    from fgdesk.config import DataConfig

    data = DataConfig()
    data.image_size = args.size
    data.local_crops = local_crops
    data.local_size = min(args.local_size, args.size)
    return data


def enough_draws(count: int, draws: int, seed: int) -> torch.utils.data.RandomSampler:
    """Random images with replacement: every timed batch is full even when the set holds
    fewer images than the measurement draws (a generated set, a GPU's large batches)."""
    return torch.utils.data.RandomSampler(range(count), replacement=True, num_samples=draws,
                                          generator=torch.Generator().manual_seed(seed))


def measure_loader(samples, crop_bottom: int, data_cfg, workers: int, batch: int, batches: int, seed: int = 0) -> dict:
    from fgdesk.data.augment import ContrastiveViews
    from fgdesk.data.loading import SampleDataset, make_loader, resolve_num_workers

    views = ContrastiveViews(data_cfg)
    dataset = SampleDataset(samples, views, crop_bottom, min_short_side=views.min_short_side)
    loader = make_loader(dataset, batch_size=batch, shuffle=False, num_workers=workers, drop_last=True, seed=seed,
                         sampler=enough_draws(len(dataset), batch * (batches + 1), seed))
    iterator = iter(loader)
    started = time.perf_counter()
    next(iterator)
    first_s = time.perf_counter() - started
    count = 0
    with Timer() as timer:
        for _ in range(batches):
            try:
                count += len(next(iterator))
            except StopIteration:
                break
    del iterator, loader
    return {
        "workers": resolve_num_workers(workers),
        "views": f"2 x {data_cfg.image_size} px" + (f" + {data_cfg.local_crops} x {data_cfg.local_size} px" if data_cfg.local_crops else ""),
        "images_per_s": count / timer.elapsed if timer.elapsed > 0 else None,
        "first_batch_s": first_s,
        "batches": batches,
    }


def measure_end_to_end(samples, crop_bottom: int, data_cfg, stepper, device: torch.device, workers: int,
                       batch: int, steps: int, warmup: int) -> dict:
    from fgdesk.data.augment import ContrastiveViews
    from fgdesk.data.loading import SampleDataset, make_loader, resolve_num_workers

    sync = cuda_sync_for(device)
    views = ContrastiveViews(data_cfg)
    dataset = SampleDataset(samples, views, crop_bottom, min_short_side=views.min_short_side)
    loader = make_loader(dataset, batch_size=batch, shuffle=False, num_workers=workers, drop_last=True, seed=1,
                         sampler=enough_draws(len(dataset), batch * (warmup + steps), 1))
    iterator = iter(loader)

    def one() -> int:
        batch_data = next(iterator)
        views = [v.to(device, non_blocking=True) for v in batch_data.views]
        stepper.step(views, batch_data.indices.to(device))
        return len(batch_data)

    for _ in range(warmup):
        one()
    images = 0
    with Timer(sync) as timer:
        for _ in range(steps):
            try:
                images += one()
            except StopIteration:
                break
    del iterator, loader
    return {"workers": resolve_num_workers(workers), "images_per_s": images / timer.elapsed if images else None, "steps": steps}


# -- correctness check (GPU against CPU) --------------------------------------------------


@dataclasses.dataclass
class StepProbe:
    loss: float
    positive_acc: float
    embedding: torch.Tensor  # (B, D) float64 query embeddings of view 0 (the forward pass)
    grads: dict[str, torch.Tensor]  # query parameter name -> flattened float64 gradient


def fgdesk_step_probe(cfg: RunConfig, state: dict, views: list[torch.Tensor], ids: torch.Tensor,
                      device: torch.device, precision: Precision) -> StepProbe:
    """Loss, positive accuracy, embeddings and query gradients of one fgdesk step."""
    model = MoCo(cfg, queue_size=cfg.contrastive.queue_size)
    model.load_state_dict(state)
    model = model.to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    views = [v.to(device) for v in views]
    if precision.channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    with autocast(device, precision.dtype):
        output = model(views[:2], views[2:], ids.to(device))
        with torch.no_grad():
            embedding = model.net(views[0]).embedding
    output.loss.backward()
    grads = {name: p.grad.detach().double().flatten().cpu() for name, p in model.query.named_parameters() if p.grad is not None}
    return StepProbe(float(output.loss.item()), float(output.positive_accuracy.item()), embedding.detach().double().cpu(), grads)


def cosine64(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))


def compare_steps(ref: StepProbe, other: StepProbe) -> dict[str, float]:
    names = list(ref.grads)
    whole_ref = torch.cat([ref.grads[n] for n in names])
    whole = torch.cat([other.grads[n] for n in names])
    last = [n for n in names if n.startswith("head.")]
    return {
        "loss_abs_diff": abs(other.loss - ref.loss),
        "embedding_cosine": float(torch.nn.functional.cosine_similarity(other.embedding, ref.embedding, dim=1).min()),
        "grad_cosine": cosine64(whole, whole_ref),
        "head_grad_cosine": cosine64(torch.cat([other.grads[n] for n in last]), torch.cat([ref.grads[n] for n in last])),
        "grad_rel_norm_diff": float((whole.norm() - whole_ref.norm()).abs() / whole_ref.norm().clamp_min(1e-300)),
    }


# Tolerances. fp32 on another device must agree closely (TF32 is switched off for the check).
# bf16 keeps about 3 significant digits and its backward error grows with depth. Measured
# on the CPU (bf16 autocast vs fp32, random init, random inputs, batch 4-32): loss within
# 0.1-0.6%, embeddings cosine >= 0.996, projection-head gradient cosine 0.96-0.998, whole
# gradient cosine 0.87-0.92. The bf16 limits leave room for that noise and still catch
# real faults (a wrong memory format, device or dtype gives cosines far below them, or NaN).
# The whole-gradient cosine of bf16 is reported but not gated: its error grows with depth
# (ResNet-50 at 224 px is far deeper than the network it was measured on), and the strict
# fp32 row already checks the backward pass on the device.
TOLERANCES = {
    "fp32": {"loss_rel": 1e-3, "embedding_cosine": 0.9999, "grad_cosine": 0.999, "head_grad_cosine": 0.9999},
    "bf16": {"loss_rel": 0.02, "embedding_cosine": 0.99, "head_grad_cosine": 0.90},
}


def correctness_check(args: argparse.Namespace, device: torch.device, candidates: list[Precision]) -> list[dict]:
    """The same step (fixed weights, inputs, ids; batch norm unshuffled) on the CPU in fp32 vs `device`."""
    torch.manual_seed(7)
    batch = args.check_batch
    cfg = fgdesk_config(args.backbone, args.size, "multiscale", True, 0, args.local_size, queue=256, bn_chunks=1)
    model = MoCo(cfg, queue_size=256)
    with torch.no_grad():  # give the attention gates some shape (a fresh gate is exactly uniform)
        for pool in model.query.net.attention.pools:
            pool.gate[-1].weight.normal_(0.0, 0.5)
        model.key.load_state_dict(model.query.state_dict())
    state = copy.deepcopy(model.state_dict())
    views = make_views(2, batch, args.size, 0, args.local_size, torch.device("cpu"))
    ids = torch.arange(batch)
    progress("correctness check: reference step on the CPU in fp32")
    reference = fgdesk_step_probe(cfg, state, views, ids, torch.device("cpu"), Precision("fp32", None, False))
    rows = [{"device": "cpu", "precision": "fp32", "loss": reference.loss, "positive_acc": reference.positive_acc, "ok": True,
             "loss_abs_diff": 0.0, "embedding_cosine": 1.0, "grad_cosine": 1.0, "head_grad_cosine": 1.0, "grad_rel_norm_diff": 0.0}]
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        if device.type == "cuda":  # fp32 must mean fp32 on the GPU too
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        rows += [check_row(cfg, state, views, ids, device, precision, reference) for precision in candidates]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return rows


def check_row(cfg: RunConfig, state: dict, views: list[torch.Tensor], ids: torch.Tensor, device: torch.device,
              precision: Precision, reference: StepProbe) -> dict:
    """One precision on one device against the CPU fp32 reference, with its verdict."""
    progress(f"correctness check: {device.type} {precision.name}")
    probe = fgdesk_step_probe(cfg, state, views, ids, device, precision)
    scores = compare_steps(reference, probe)
    limits = TOLERANCES["fp32" if precision.dtype is None else "bf16"]
    ok = (scores["loss_abs_diff"] <= limits["loss_rel"] * max(1.0, abs(reference.loss))
          and all(scores[key] >= limit for key, limit in limits.items() if key != "loss_rel"))
    return {"device": device.type, "precision": precision.name + ("+channels_last" if precision.channels_last else ""),
            "loss": probe.loss, "positive_acc": probe.positive_acc, **scores, "tolerances": limits, "ok": ok}


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--backbone", default=None, help="default: resnet18 on CPU, resnet50 on CUDA")
    parser.add_argument("--size", type=int, default=None, help="view side in px (default: 96 on CPU, 224 on CUDA)")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default: 64 on CPU, 128 on CUDA)")
    parser.add_argument("--queue", type=int, default=4096, help="negatives in the queue / memory bank")
    parser.add_argument("--local-crops", type=int, default=2, help="local crops of the default recipe row")
    parser.add_argument("--local-size", type=int, default=None, help="default: half the view side")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: every usable core)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant per round (default: 1 on CPU, 5 on CUDA)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds; the median round is reported")
    parser.add_argument("--precisions", default=None, help="fp32,bf16 (bf16 = bf16 autocast + channels_last)")
    parser.add_argument("--steps-kinds", default="asymmetric,symmetric")
    parser.add_argument("--variants", default="fgdesk_attention,fgdesk_no_attention,lightly,paper,fgdesk_default_recipe",
                        help=f"any of {', '.join(PEER_NAMES)}")
    parser.add_argument("--data", default=None, help="dataset for the loader measurements (default ../shared/data/cub50/CUB_200_2011)")
    parser.add_argument("--workers", default=None, help="loader worker counts to measure, e.g. 0,1,3 (default: 0 and fgdesk's automatic choice)")
    parser.add_argument("--loader-batches", type=int, default=None, help="timed loader batches (default: 8, at least 3 per worker)")
    parser.add_argument("--e2e-steps", type=int, default=6)
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--check", dest="check", action="store_true", default=None, help="run the correctness check (default on CUDA)")
    parser.add_argument("--no-check", dest="check", action="store_false")
    parser.add_argument("--check-batch", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (batch 16, 64 px, one round)")
    parser.add_argument("--tag", default=None, help="suffix for the results file (train_throughput_TAG.json; default: cuda on CUDA)")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.backbone = args.backbone or ("resnet50" if cuda else "resnet18")
    args.size = args.size or (224 if cuda else 96)
    args.batch = args.batch or (128 if cuda else 64)
    args.steps = args.steps or (5 if cuda else 1)  # a GPU step is short: time several per round
    args.tag = args.tag if args.tag is not None else ("cuda" if cuda else "")  # never over the CPU figures
    if args.quick:
        args.size = min(args.size, 64)
        args.batch = min(args.batch, 16)
        args.warmup, args.steps, args.rounds = 1, 1, 1
        args.loader_batches, args.e2e_steps = 2, 2
        args.check_batch = min(args.check_batch, 4)
        args.queue = min(args.queue, 256)
    args.local_size = args.local_size or args.size // 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from fgdesk.data.loading import resolve_num_workers

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device cuda was asked for, but torch sees no CUDA GPU (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda}); check that `nvidia-smi` works and that its driver supports that CUDA version",
              file=sys.stderr)
        return 2
    threads = set_threads(args.threads)
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported() or device.type == "cpu" and cpu_has_fast_bf16()
    if args.precisions:
        names = [p.strip() for p in args.precisions.split(",") if p.strip()]
    else:
        names = ["bf16"] if device.type == "cuda" else (["fp32", "bf16"] if bf16_ok else ["fp32"])
    precisions = [Precision("fp32", None, False) if n == "fp32" else Precision("bf16", torch.bfloat16, True) for n in names]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in PEER_NAMES]
    if unknown:
        print(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(PEER_NAMES)}", file=sys.stderr)
        return 2
    kinds = [k.strip() for k in args.steps_kinds.split(",") if k.strip()]
    auto_workers = resolve_num_workers(-1) if device.type == "cpu" else min(8, max(1, usable_cpus() - 2))
    worker_counts = sorted({int(w) for w in args.workers.split(",")}) if args.workers else sorted({0, auto_workers})
    if args.loader_batches is None:  # enough batches to see the workers' steady state, not their first round
        args.loader_batches = max(8, 3 * max(worker_counts))

    settings = {
        "device": args.device, "backbone": args.backbone, "image_size": args.size, "batch": args.batch,
        "queue": args.queue, "local_crops_default_recipe": args.local_crops, "local_size": args.local_size,
        "warmup_steps": args.warmup, "timed_steps_per_round": args.steps, "rounds": args.rounds,
        "precisions": {p.name: ("bf16 autocast + channels_last" if p.dtype else "fp32, contiguous") for p in precisions},
        "step_kinds": kinds, "variants": {v: PEER_NAMES[v] for v in variants}, "optimizer": "SGD momentum 0.9, wd 5e-4",
        "inputs": "fixed random tensors already on the device (step cost only)", "quick": args.quick,
        "cpu_fast_bf16": cpu_has_fast_bf16(),
        **({"cudnn_benchmark": torch.backends.cudnn.benchmark, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32, "gpu": torch.cuda.get_device_name(device)}
           if device.type == "cuda" else {}),
    }
    name = "train_throughput" + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    report = Report(name, settings)
    progress(f"{args.backbone} at {args.size} px, batch {args.batch}, {threads} threads, device {device}")

    step_rows: list[dict] = []
    for precision in precisions:
        for kind in kinds:
            chosen = [v for v in variants if v != "fgdesk_default_recipe" or kind == "symmetric"]
            step_rows.extend(measure_steps(args, device, precision, kind, chosen))

    results: dict = {"steps": step_rows, "ratios_vs_lightly": ratios(step_rows), "bf16_speedup": precision_speedups(step_rows)}
    best = precisions[-1]

    if not args.skip_loader:
        samples, crop_bottom, source = open_samples(args)
        results["loader_source"] = source
        loader_rows = []
        for local in sorted({0, args.local_crops}):
            for workers in worker_counts:
                progress(f"loader alone: {workers} worker(s), {local} local crops")
                row = measure_loader(samples, crop_bottom, view_config(args, local), workers, args.batch, args.loader_batches)
                loader_rows.append(row)
        results["loader"] = loader_rows
        e2e_rows = []
        for label, variant, symmetric, local in (
            ("fgdesk (a), symmetric step", "fgdesk_attention", True, 0),
            ("fgdesk default recipe", "fgdesk_default_recipe", True, args.local_crops),
        ):
            if variant not in variants:
                continue
            progress(f"end to end: {label}, {best.name}, {auto_workers} worker(s)")
            stepper = build_stepper(variant, symmetric, args, device, best)
            row = measure_end_to_end(samples, crop_bottom, view_config(args, local), stepper, device, auto_workers,
                                     args.batch, args.e2e_steps, max(1, args.warmup))
            step_alone = next((r["images_per_s"] for r in step_rows if r["variant"] == variant and r["precision"] == best.name
                               and r["step"] in ("symmetric", "symmetric + local crops")), None)
            loader_alone = next((r["images_per_s"] for r in loader_rows if r["workers"] == auto_workers
                                 and r["views"] == view_config_label(args, local)), None)
            row.update({"what": label, "precision": best.name, "step_alone_images_per_s": step_alone,
                        "loader_alone_images_per_s": loader_alone})
            if step_alone and loader_alone:
                row["bottleneck"] = "data loading" if loader_alone < step_alone else "compute"
            e2e_rows.append(row)
            del stepper
        results["end_to_end"] = e2e_rows

    run_check = args.check if args.check is not None else device.type == "cuda"
    if run_check:
        candidates = [Precision("fp32", None, False)] if device.type == "cuda" else []
        if bf16_ok:
            candidates.append(Precision("bf16", torch.bfloat16, True))
        results["correctness"] = correctness_check(args, device, candidates)
        if device.type == "cuda" and cpu_has_fast_bf16():
            # The CPU's own bf16 error, for scale (same reference, same inputs).
            results["correctness"] += correctness_check(args, torch.device("cpu"), [Precision("bf16", torch.bfloat16, True)])[1:]

    tables = [format_table(
        [{**r, "variant": PEER_NAMES[r["variant"]], "images_per_s": f"{r['images_per_s']:.1f}",
          "best_images_per_s": f"{r['best_images_per_s']:.1f}", "spread": f"{100 * r['spread']:.0f}%",
          "images_per_cpu_s": f"{r['images_per_cpu_s']:.1f}"} for r in step_rows],
        [("precision", "precision"), ("step", "step"), ("variant", "variant"), ("images_per_s", "images/s (median)"),
         ("best_images_per_s", "best round"), ("spread", "IQR/median"), ("images_per_cpu_s", "images/CPU-s")],
        title=f"One pretraining step: {args.backbone}, {args.size} px, batch {args.batch}, queue {args.queue}, "
              f"{threads} threads, {device.type}",
    )]
    if results["ratios_vs_lightly"]:
        tables.append(format_table(
            [{k: (f"{v:.2f}x" if isinstance(v, float) else v) for k, v in r.items()} for r in results["ratios_vs_lightly"]],
            [("precision", "precision"), ("step", "step"), ("fgdesk_attention/lightly", "(a)/(c)"),
             ("fgdesk_no_attention/lightly", "(b)/(c)"), ("paper/lightly", "(d)/(c)"),
             ("fgdesk_attention/lightly (CPU time)", "(a)/(c) by CPU time"),
             ("fgdesk_no_attention/lightly (CPU time)", "(b)/(c) by CPU time")],
            title="Ratios against lightly (same precision, same step; medians)",
        ))
    if results["bf16_speedup"]:
        tables.append(format_table(
            [{**r, "variant": PEER_NAMES[r["variant"]], "bf16_over_fp32": f"{r['bf16_over_fp32']:.2f}x"} for r in results["bf16_speedup"]],
            [("variant", "variant"), ("step", "step"), ("bf16_over_fp32", "bf16+channels_last / fp32")],
            title="Precision speed-up",
        ))
    if "loader" in results:
        tables.append(format_table(
            [{**r, "images_per_s": f"{r['images_per_s']:.1f}", "first_batch_s": f"{r['first_batch_s']:.2f}"} for r in results["loader"]],
            [("workers", "workers"), ("views", "views per image"), ("images_per_s", "images/s"), ("first_batch_s", "first batch s")],
            title=f"Data pipeline alone: {results['loader_source']}",
        ))
        tables.append(format_table(
            [{**r, **{k: (f"{r[k]:.1f}" if r.get(k) else None) for k in ("images_per_s", "step_alone_images_per_s", "loader_alone_images_per_s")}}
             for r in results["end_to_end"]],
            [("what", "end to end"), ("precision", "precision"), ("workers", "workers"), ("images_per_s", "images/s"),
             ("step_alone_images_per_s", "step alone"), ("loader_alone_images_per_s", "loader alone"), ("bottleneck", "bottleneck")],
            title="Steps fed by the loader",
        ))
    if "correctness" in results:
        tables.append(format_table(
            [{**r, **{k: (f"{r[k]:.5f}" if isinstance(r.get(k), float) else r.get(k))
                      for k in ("loss", "loss_abs_diff", "embedding_cosine", "grad_cosine", "head_grad_cosine", "grad_rel_norm_diff")}}
             for r in results["correctness"]],
            [("device", "device"), ("precision", "precision"), ("loss", "loss"), ("loss_abs_diff", "|d loss|"),
             ("embedding_cosine", "min embedding cosine"), ("grad_cosine", "grad cosine"), ("head_grad_cosine", "head grad cosine"),
             ("grad_rel_norm_diff", "grad norm rel diff"), ("ok", "ok")],
            title="Correctness: the same fgdesk step against the CPU in fp32",
        ))
    notes = [
        "images/s counts source images: a symmetric step runs each image through both encoders twice, so it does twice the work of an asymmetric one.",
        "Variants run in interleaved rounds in one process; a busy machine slows all of them, so ratios are fairer than absolute figures (see the load average).",
    ]
    report.write(results, tables, notes)
    if "correctness" in results and not all(r["ok"] for r in results["correctness"] if r["device"] == device.type):
        print("correctness check FAILED", file=sys.stderr)
        return 1
    return 0


def view_config_label(args: argparse.Namespace, local: int) -> str:
    local_size = min(args.local_size, args.size)
    return f"2 x {args.size} px" + (f" + {local} x {local_size} px" if local else "")


if __name__ == "__main__":
    sys.exit(main())
