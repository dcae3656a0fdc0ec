#!/usr/bin/env python3
"""Decoding camera-sized JPEGs for training and evaluation: full decode against fgdesk's
reduced (DCT-scaled) decode, with lightly's MoCo v2 transform on a full decode as the peer.

Lab photos come off cameras at 2 to 24 megapixels while the network sees 96 to 224
pixels of them. Decoding every file in full makes the data loader, not the network, the
bottleneck. fgdesk asks libjpeg for the smallest 1/2, 1/4 or 1/8 scale that still holds
every pixel the views keep (`load_rgb(min_short_side=...)`). This script measures, per
image on one core (what each loader worker does):
  - training views (two global crops) at 96 px (the CPU default) and 224 px (the GPU size);
  - the evaluation transform at 96 and 224 px (embedding extraction, the kNN monitor, CSV);
each from a full decode and from fgdesk's reduced decode, plus lightly's `MoCoV2Transform`
(two views) on the full decode that `LightlyDataset` does. For evaluation it also reports
how far the reduced decode's network input is from the full decode's. The training views
are also timed with torchvision's full-kernel Gaussian blur in place of fgdesk's separable
one (the same views, seed for seed), which shows what that swap gained.

The photos are cub50 training images scaled up to camera size with mild sensor-like noise
(so the entropy decoder has real work), written as JPEG quality 90 to a temporary folder.

    python3 dev.py bench bench/decode.py
    python3 dev.py bench bench/decode.py --images 48 --photos 6000x4000,4032x3024
    python3 dev.py bench bench/decode.py --quick
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Report, format_table, progress, relative, resolve_data, set_threads  # noqa: E402

from fgdesk.config import DataConfig  # noqa: E402
from fgdesk.data import augment  # noqa: E402
from fgdesk.data.augment import ContrastiveViews, eval_min_short_side, eval_transform  # noqa: E402
from fgdesk.data.images import load_rgb  # noqa: E402
from fgdesk.data.layouts import detect  # noqa: E402
from fgdesk.data.synthetic import make_demo_dataset  # noqa: E402


def make_photos(data: Path, folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> tuple[list[Path], str]:
    """`count` JPEGs of `size` (width, height) from cub50 (or the demo set when absent)."""
    if data.exists():
        index = detect(data, check_images=False)
        sources = [s.path for s in index.train_samples()[:: max(1, len(index.train_samples()) // count)][:count]]
        origin = f"{relative(data)} training images"
    else:
        demo = make_demo_dataset(folder / "demo", num_classes=4, per_class=max(1, count // 4 + 1), size=256, seed=0)
        sources = sorted(demo.rglob("*.png"))[:count]
        origin = f"generated demo images ({relative(data)} missing)"
    rng = np.random.default_rng(seed)
    out = folder / f"{size[0]}x{size[1]}"
    out.mkdir(parents=True)
    paths = []
    for k, source in enumerate(sources):
        # Stretched to the camera's 4:3 where needed: decoding cost depends on pixels, not on the bird.
        big = Image.open(source).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        pixels = np.asarray(big, dtype=np.int16) + rng.normal(0, 3, (big.height, big.width, 1)).astype(np.int16)
        path = out / f"{k:03d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths, origin


def views_with_torchvision_blur(cfg: DataConfig) -> ContrastiveViews:
    """fgdesk's views with torchvision's full k x k Gaussian blur, as before the separable one."""
    from torchvision.transforms import v2

    separable = augment.GaussianBlur
    augment.GaussianBlur = v2.GaussianBlur
    try:
        return ContrastiveViews(cfg)
    finally:
        augment.GaussianBlur = separable


def full_decode_pil(path: Path) -> Image.Image:
    """What torchvision's and lightly's default loader does: open, convert, every pixel."""
    with open(path, "rb") as handle:
        image = Image.open(handle)
        return image.convert("RGB")


def time_per_image(cases: list[tuple[str, Callable[[Path], Any]]], paths: list[Path], rounds: int) -> dict[str, list[float]]:
    """Seconds per image for each case, one list entry per round; cases take turns within a round."""
    for _, fn in cases:  # warm-up: page cache, lazy imports, first-call allocations
        fn(paths[0])
    seconds: dict[str, list[float]] = {name: [] for name, _ in cases}
    for round_index in range(rounds):
        for name, fn in cases:
            # Every case draws the same crops, flips and blurs: random ops cost by whether they fire.
            torch.manual_seed(round_index)
            started = time.perf_counter()
            for path in paths:
                fn(path)
            seconds[name].append((time.perf_counter() - started) / len(paths))
    return seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="cub50 folder (default ../shared/data/cub50/CUB_200_2011)")
    parser.add_argument("--images", type=int, default=24, help="photos per camera size")
    parser.add_argument("--photos", default="4032x3024,1600x1200", help="photo sizes WIDTHxHEIGHT (12 MP and 2 MP)")
    parser.add_argument("--sizes", default="96,224", help="view / evaluation sizes in px")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 small photos, one round")
    parser.add_argument("--tag", default="", help="suffix for the results file name")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.photos, args.rounds, args.sizes = 4, "800x600", 1, "96"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = set_threads(1)  # per core: each loader worker is one process doing this
    data = resolve_data(args.data)
    photo_sizes = [tuple(int(v) for v in item.split("x")) for item in args.photos.split(",")]
    sizes = [int(v) for v in args.sizes.split(",")]
    try:
        from lightly.transforms import MoCoV2Transform
    except ImportError:
        MoCoV2Transform = None
    work = Path(tempfile.mkdtemp(prefix="fgdesk-decode-"))
    rows: list[dict[str, Any]] = []
    origin = ""
    try:
        for photo_size in photo_sizes:
            progress(f"writing {args.images} photos of {photo_size[0]} x {photo_size[1]} px")
            paths, origin = make_photos(data, work, args.images, photo_size)
            width, height = Image.open(paths[0]).size
            for size in sizes:
                views = ContrastiveViews(DataConfig(image_size=size, local_crops=0))
                views_tv_blur = views_with_torchvision_blur(DataConfig(image_size=size, local_crops=0))
                evaluate = eval_transform(size)
                train_side, eval_side = views.min_short_side, eval_min_short_side(size)
                cases: list[tuple[str, Callable[[Path], Any]]] = [
                    ("train:full", lambda p, v=views: v(load_rgb(p))),
                    ("train:reduced", lambda p, v=views, s=train_side: v(load_rgb(p, min_short_side=s))),
                    ("train:reduced_tv_blur", lambda p, v=views_tv_blur, s=train_side: v(load_rgb(p, min_short_side=s))),
                    ("eval:full", lambda p, t=evaluate: t(load_rgb(p))),
                    ("eval:reduced", lambda p, t=evaluate, s=eval_side: t(load_rgb(p, min_short_side=s))),
                ]
                if MoCoV2Transform is not None:
                    lightly_views = MoCoV2Transform(input_size=size, min_scale=0.25)
                    cases.append(("train:lightly", lambda p, t=lightly_views: t(full_decode_pil(p))))
                progress(f"timing {width} x {height} photos at {size} px")
                seconds = time_per_image(cases, paths, args.rounds)
                difference = statistics.fmean(
                    float((evaluate(load_rgb(p)) - evaluate(load_rgb(p, min_short_side=eval_side))).abs().mean()) for p in paths
                )
                decoded = {"train": load_rgb(paths[0], min_short_side=train_side).size,
                           "eval": load_rgb(paths[0], min_short_side=eval_side).size}
                median = {name: statistics.median(values) for name, values in seconds.items()}
                for task, label, side in (("train", f"training views, 2 x {size} px", train_side),
                                          ("eval", f"evaluation transform, {size} px", eval_side)):
                    full, reduced = median[f"{task}:full"], median[f"{task}:reduced"]
                    row = {
                        "photo": f"{width} x {height}", "megapixels": round(width * height / 1e6, 1), "task": label,
                        "decoded_to": f"{decoded[task][0]} x {decoded[task][1]}", "min_short_side": side,
                        "full_ms": 1000 * full, "reduced_ms": 1000 * reduced,
                        "full_images_per_s": 1 / full, "reduced_images_per_s": 1 / reduced, "speedup": full / reduced,
                        "rounds_ms": {name: [1000 * v for v in values] for name, values in seconds.items() if name.startswith(task)},
                    }
                    if task == "eval":
                        row["mean_abs_difference"] = difference
                    else:
                        row["tv_blur_ms"] = 1000 * median["train:reduced_tv_blur"]
                        row["separable_blur_speedup"] = median["train:reduced_tv_blur"] / reduced
                    if task == "train" and "train:lightly" in median:
                        row["lightly_ms"] = 1000 * median["train:lightly"]
                        row["lightly_images_per_s"] = 1 / median["train:lightly"]
                        row["reduced_vs_lightly"] = median["train:lightly"] / reduced
                    rows.append(row)
        settings = {"photos": origin + ", scaled up, noise sigma 3, JPEG quality 90", "images": args.images,
                    "photo_sizes": [list(p) for p in photo_sizes], "sizes": sizes, "rounds": args.rounds, "torch_threads": threads,
                    "lightly": MoCoV2Transform is not None, "quick": args.quick}
        report = Report("decode" + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else ""), settings)

        def shown(row: dict[str, Any]) -> dict[str, Any]:
            out = dict(row)
            for key in ("full_ms", "reduced_ms", "tv_blur_ms", "lightly_ms"):
                if out.get(key) is not None:
                    out[key] = f"{out[key]:.1f}"
            for key in ("full_images_per_s", "reduced_images_per_s", "lightly_images_per_s"):
                if out.get(key) is not None:
                    out[key] = f"{out[key]:.1f}"
            for key in ("speedup", "separable_blur_speedup", "reduced_vs_lightly"):
                if out.get(key) is not None:
                    out[key] = f"{out[key]:.2f}x"
            if out.get("mean_abs_difference") is not None:
                out["mean_abs_difference"] = f"{out['mean_abs_difference']:.4f}"
            return out

        table = format_table(
            [shown(r) for r in rows],
            [("photo", "photo"), ("task", "task"), ("decoded_to", "decoded to"), ("full_ms", "full ms"),
             ("reduced_ms", "reduced ms"), ("speedup", "speed-up"), ("reduced_images_per_s", "images/s/core"),
             ("tv_blur_ms", "tv blur ms"), ("separable_blur_speedup", "blur gain"),
             ("lightly_ms", "lightly ms"), ("reduced_vs_lightly", "vs lightly"), ("mean_abs_difference", "|diff|")],
            title="Per image on one core: full decode against fgdesk's reduced decode",
        )
        report.write({"rows": rows}, [table], [
            "ms per image on one core, medians of interleaved rounds; images/s/core is what one loader worker delivers",
            "|diff|: mean absolute difference of the evaluation tensors (normalised units; 1.0 is about 57 grey levels)",
            "tv blur: the reduced decode with torchvision's full-kernel GaussianBlur instead of fgdesk's separable one (same views)",
            "lightly: MoCoV2Transform (two views, its own colour jitter and blur settings) on a full PIL decode, as LightlyDataset loads",
        ])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
