#!/usr/bin/env python3
"""Inference cost on the CPU: one image at 224 px, and batch prediction to CSV.

Latency of one 224 x 224 image (median of repeated calls after warm-up):
  - the plain forward pass of the encoder, embedding only, as batch prediction and embedding
    extraction run it (fp32, and bf16 autocast where the CPU runs it fast);
  - `forward_with_maps`: the same pass plus every attention map and the class-evidence map;
  - `Predictor.predict`: what the app's Inspect view calls: forward, probabilities,
    neighbours, every map upsampled to the image and normalised;
  - a Grad-CAM-style map: forward, then one backward pass from the class score to the
    stage features (torch.autograd.grad, no parameter gradients), then the weighted maps.
Throughput of `Predictor.predict_to_csv` over real JPEGs (cub50 test images) in images/s.

Without `--run`, a run is made here from random weights (latency does not depend on
what the weights learned) on a small generated demo set, with its classifier fitted.

    python3 dev.py bench bench/inference.py
    python3 dev.py bench bench/inference.py --run RUN --csv-images 500
    python3 dev.py bench bench/inference.py --quick
"""
from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Report,
    format_table,
    progress,
    quiet_logging,
    relative,
    resolve_data,
    seed_everything,
    set_threads,
)

from fgdesk.config import RunConfig  # noqa: E402
from fgdesk.data.augment import EVAL_RESIZE_RATIO  # noqa: E402
from fgdesk.data.layouts import detect  # noqa: E402
from fgdesk.data.synthetic import make_demo_dataset  # noqa: E402
from fgdesk.evaluate.heatmaps import forward_with_maps, network_input  # noqa: E402
from fgdesk.model.moco import MoCo  # noqa: E402
from fgdesk.model.network import fuse_maps  # noqa: E402
from fgdesk.train import runs  # noqa: E402
from fgdesk.train.checkpoint import save_checkpoint  # noqa: E402
from fgdesk.train.device import autocast, cpu_has_fast_bf16  # noqa: E402

SIDE = 224


def eval_size_for(side: int) -> int:
    """The eval_size whose resize step gives a short side of exactly `side` pixels."""
    size = int(side / EVAL_RESIZE_RATIO)
    while int(size * EVAL_RESIZE_RATIO) < side:
        size += 1
    return size


def make_run(folder: Path, backbone: str, seed: int) -> Path:
    """A run with random weights (lively attention gates) on a small demo set; checkpoint saved as best."""
    demo = make_demo_dataset(folder / "demo", num_classes=8, per_class=20, size=256, seed=0)
    seed_everything(seed)
    config = RunConfig()
    config.data.path = str(demo)
    config.data.eval_size = eval_size_for(SIDE)
    config.data.image_size = 96
    config.data.num_workers = 0
    config.model.backbone = backbone
    config.validate()
    run_dir = runs.new_run_dir(name="inference-bench", root=folder / "runs")
    config.save(run_dir / runs.CONFIG_FILE)
    moco = MoCo(config, queue_size=64)
    with torch.no_grad():
        for pool in moco.query.net.attention.pools:
            pool.gate[-1].weight.normal_(0.0, 1.0)
    payload = {"model": moco.state_dict(), "epoch": 1, "global_step": 0}
    save_checkpoint(runs.last_checkpoint(run_dir), payload, config)
    save_checkpoint(run_dir / runs.CHECKPOINT_DIR / runs.BEST_CHECKPOINT, payload, config)
    runs.write_state(run_dir, status="finished")
    return run_dir


def interleaved_latency(cases: list[tuple[str, Callable[[], Any], str]], warmup: int, repeats: int) -> list[dict[str, Any]]:
    """Warm every case up, then time them in turns (one call each per round), so load spikes hit all alike."""
    for name, fn, _ in cases:
        progress(f"latency: warming up {name}")
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(repeats):
        for name, fn, _ in cases:
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return [{"what": name, "median_ms": 1000 * statistics.median(times[name]), "best_ms": 1000 * min(times[name]),
             "repeats": repeats, "note": note} for name, _, note in cases]


def grad_cam(net, images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Grad-CAM on every attention stage, fused like the attention maps: one backward pass to the stage features."""
    with torch.enable_grad():
        output = net(images)
        logits = output.embedding.float() @ weight.t() + bias
        score = logits.gather(1, logits.argmax(dim=1, keepdim=True)).sum()
        grads = torch.autograd.grad(score, output.stage_features)
    maps = []
    for features, grad in zip(output.stage_features, grads):
        channel_weights = grad.float().mean(dim=(2, 3), keepdim=True)
        maps.append(F.relu((channel_weights * features.detach().float()).sum(dim=1)))
    return fuse_maps(maps, tuple(images.shape[-2:]), net.attention.scale_weights().detach())[1]


def square_image(data: Path) -> tuple[Image.Image, str]:
    """A real 224 x 224 photo (centre of a cub50 test image), or a demo image when cub50 is absent."""
    if data.exists():
        index = detect(data, check_images=False)
        sample = index.test_samples()[0]
        image = Image.open(sample.path).convert("RGB")
        source = "cub50 test image, centre square resized"
    else:
        image = Image.new("RGB", (320, 320), (120, 140, 90))
        source = "flat colour image (cub50 not found)"
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((SIDE, SIDE), Image.Resampling.BILINEAR), source


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="run folder (default: a random-weights run made here)")
    parser.add_argument("--backbone", default="resnet18", help="backbone of the run made here")
    parser.add_argument("--data", default=None, help="cub50 folder for real images (default ../shared/data/cub50/CUB_200_2011)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--csv-images", type=int, default=300, help="images classified to CSV for the throughput figure")
    parser.add_argument("--csv-default-size", type=int, default=96, help="second CSV pass at this eval size (the CPU default)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tag", default="", help="suffix for the results file name")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.repeats, args.csv_images = 1, 3, 32
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from fgdesk.infer.predictor import Predictor

    threads = set_threads(args.threads)
    data = resolve_data(args.data)
    work = Path(tempfile.mkdtemp(prefix="fgdesk-inference-"))
    try:
        run = args.run or make_run(work, args.backbone, 0)
        progress("loading the predictor (fits the classifier on first use)")
        with quiet_logging():
            predictor = Predictor.load(run, device="cpu")
        net = predictor.net.eval()
        image, image_source = square_image(data)
        batch = network_input(image, predictor.eval_size).unsqueeze(0)
        settings = {
            "run": relative(args.run) if args.run else f"random weights, {args.backbone}, made here",
            "backbone": predictor.config.model.backbone, "attention": predictor.config.model.attention,
            "stages": predictor.config.model.stages, "network_input": list(batch.shape[-2:]), "image": image_source,
            "classifier": predictor.mode, "warmup": args.warmup, "repeats": args.repeats, "csv_images": args.csv_images,
            "quick": args.quick,
        }
        report = Report("inference" + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else ""), settings)
        weight = predictor.weight if predictor.weight is not None else torch.zeros(len(predictor.class_names), net.embed_dim)
        bias = predictor.bias if predictor.bias is not None else torch.zeros(weight.shape[0])
        # Predictor keeps its network in channels_last; the plain layout is the row to compare with.
        batch_cl = batch.contiguous(memory_format=torch.channels_last)
        net_plain = copy.deepcopy(net).to(memory_format=torch.contiguous_format)

        @torch.no_grad()
        def bf16_forward():
            with autocast(torch.device("cpu"), torch.bfloat16):
                return net.embed(batch_cl)

        cases: list[tuple[str, Callable[[], Any], str]] = [
            ("plain forward, fp32, contiguous layout", torch.no_grad()(lambda: net_plain.embed(batch)), "Predictor before channels_last"),
            ("plain forward, fp32, channels_last", torch.no_grad()(lambda: net.embed(batch_cl)), "what Predictor runs"),
        ]
        if cpu_has_fast_bf16():
            cases.append(("plain forward, bf16 autocast + channels_last", bf16_forward, "not what Predictor runs"))
        cases += [
            ("forward + every map (forward_with_maps)", lambda: forward_with_maps(net, batch_cl, weight, bias), "channels_last"),
            ("Predictor.predict (maps at image size, neighbours)", lambda: predictor.predict([image]), "what the Inspect view calls"),
            ("Grad-CAM: forward + backward to the stage features", lambda: grad_cam(net, batch_cl, weight, bias), "channels_last"),
        ]
        rows = interleaved_latency(cases, args.warmup, args.repeats)

        csv_rows = []
        if data.exists():
            index = detect(data, check_images=False)
            paths = [s.path for s in index.test_samples()][: args.csv_images]
            source = f"{relative(data)} test images (JPEG)"
        else:
            demo = Path(predictor.config.data.path)
            paths = sorted(demo.rglob("*.png"))[: args.csv_images]
            source = "generated demo images (PNG)"
        run_eval_size = predictor.eval_size
        for eval_size in dict.fromkeys([run_eval_size, args.csv_default_size]):
            # The CSV path resizes every image like the run's eval transform; a default CPU run uses 96 px.
            predictor.eval_size = eval_size
            short_side = int(eval_size * EVAL_RESIZE_RATIO)
            progress(f"predict_to_csv over {len(paths)} images, short side {short_side} px")
            started = time.perf_counter()
            written = predictor.predict_to_csv(paths, work / "predictions.csv")
            seconds = time.perf_counter() - started
            csv_rows.append({"images": written, "seconds": seconds, "images_per_s": written / seconds, "source": source,
                             "short_side_px": short_side, "eval_size": eval_size, "batch_size": "Predictor default"})
        predictor.eval_size = run_eval_size

        results = {"latency": rows, "predict_to_csv": csv_rows}
        tables = [
            format_table([{**r, "median_ms": f"{r['median_ms']:.1f}", "best_ms": f"{r['best_ms']:.1f}"} for r in rows],
                         [("what", "one image, CPU"), ("median_ms", "median ms"), ("best_ms", "best ms"), ("note", "")],
                         title=f"Latency at {batch.shape[-2]}x{batch.shape[-1]} px, {settings['backbone']}, {threads} threads"),
            format_table([{**r, "seconds": f"{r['seconds']:.1f}", "images_per_s": f"{r['images_per_s']:.1f}"} for r in csv_rows],
                         [("source", "batch prediction to CSV"), ("short_side_px", "short side px"), ("images", "images"), ("seconds", "s"),
                          ("images_per_s", "images/s")]),
        ]
        report.write(results, tables, ["Predictor runs fp32 in channels_last on the CPU; the bf16 row shows what autocast would buy there."])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
