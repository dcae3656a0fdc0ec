#!/usr/bin/env python3
"""Heatmap quality: localization on the demo set, deletion/insertion on cub50.

1. Demo set (fgdesk.data.synthetic, which knows each image's discriminative box):
   pointing game and energy inside the box for every stage's attention map, the fused
   map and the class-evidence map of a trained run, against a centre-Gaussian
   baseline, chance (the box's share of the frame), and a sanity check with random
   weights (random backbone and random attention gates), which should score near chance.
2. cub50 (no boxes): deletion and insertion AUC. Pixels are removed from (or inserted
   into) the image in the order of each map the app shows (fused attention, each stage's
   attention, the class evidence of the kNN's top class), and the kNN classifier's
   probability of the class the map explains (its top class on the untouched network
   input) and of the true class is tracked; the area under that curve is compared with a random
   order and a centre-first order. Deletion: lower is better. Insertion: higher.

Every map is computed on what the app shows and scores: the eval transform's centre
crop (`fgdesk.evaluate.heatmaps.network_input`); demo boxes are clipped to it. Results
before 2026-12-07 came from passes over the whole image without the crop.

    python3 dev.py bench bench/heatmaps.py                               # trains short runs itself
    python3 dev.py bench bench/heatmaps.py --run RUN --cub-run CUBRUN      # score existing runs
    python3 dev.py bench bench/heatmaps.py --quick                         # smoke run
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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

from fgdesk.data.images import ImageDecodeError, load_rgb  # noqa: E402
from fgdesk.data.layouts import detect  # noqa: E402
from fgdesk.data.synthetic import make_demo_dataset  # noqa: E402
from fgdesk.evaluate.embeddings import compute_embeddings, load_encoder  # noqa: E402
from fgdesk.evaluate.heatmaps import forward_with_maps, fused_attention, fused_evidence, network_input, upsample  # noqa: E402
from fgdesk.evaluate.knn import class_prototypes, knn_scores  # noqa: E402
from fgdesk.evaluate.linear import fit_linear  # noqa: E402
from fgdesk.evaluate.localization import centre_gaussian  # noqa: E402
from fgdesk.evaluate.report import open_dataset, score_localization  # noqa: E402
from fgdesk.model.network import FineGrainedNet  # noqa: E402
from fgdesk.train.defaults import default_config  # noqa: E402
from fgdesk.train.engine import Trainer  # noqa: E402
from fgdesk.train.events import EpochEvent, FailedEvent  # noqa: E402

KNN_K, KNN_T = 20, 0.07


def train_short_run(data: Path, minutes: float, folder: Path, seed: int = 0, changes: dict[str, Any] | None = None) -> Path:
    count = len(detect(data, check_images=False).train_samples())
    cfg = default_config(str(data), count, "cpu")
    if changes:
        cfg = cfg.with_overrides(changes)
    cfg.schedule.time_budget_min = minutes
    cfg.seed = seed
    cfg.name = f"heatmaps-{data.name}"

    def on_event(event) -> None:
        if isinstance(event, EpochEvent):
            knn = "n/a" if event.knn_top1 is None else f"{100 * event.knn_top1:.1f}%"
            progress(f"  epoch {event.epoch + 1}: loss {event.mean_loss:.3f}, val kNN {knn}, {event.elapsed_s / 60:.1f} min")

    progress(f"training a {minutes:g}-minute run on {relative(data)} with the default configuration"
             + (f", changed: {changes}" if changes else ""))
    with quiet_logging():
        result = Trainer(cfg.validate(), folder / cfg.name, on_event=on_event).run()
    if isinstance(result, FailedEvent):
        raise RuntimeError(f"training failed: {result.reason}")
    return folder / cfg.name


def summaries_as_rows(summaries: dict[str, Any], model: str) -> list[dict[str, Any]]:
    rows = []
    for kind, summary in summaries.items():
        values = summary.as_dict()
        rows.append({"model": model, "map": kind, **values})
    return rows


def random_weights_net(config, seed: int) -> FineGrainedNet:
    """Random backbone and random attention gates (a fresh gate is exactly uniform, which proves nothing)."""
    seed_everything(seed)
    net = FineGrainedNet(config.model)
    with torch.no_grad():
        for pool in net.attention.pools:
            if hasattr(pool, "gate"):
                pool.gate[-1].weight.normal_(0.0, 1.0)
    return net.eval()


def demo_localization(run_dir: Path, limit: int | None, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    net, config, _ = load_encoder(run_dir, device="cpu")
    index = open_dataset(run_dir, config)
    train = [s for s in index.train_samples() if s.label >= 0]
    test = [s for s in index.test_samples() if s.label >= 0]
    eval_size = config.data.eval_size
    rows: list[dict[str, Any]] = []
    for name, model in (("trained run", net), ("random weights", random_weights_net(config, seed))):
        progress(f"demo set: {name}: linear probe and localization on {len(test)} test images")
        embeddings = compute_embeddings(model, train, eval_size, crop_bottom=index.crop_bottom)
        probe = fit_linear(embeddings.vectors, embeddings.labels, len(index.classes), seed=seed)
        summaries, note = score_localization(model, test, index.crop_bottom, eval_size, probe, "cpu", limit)
        if name != "trained run":
            summaries = {k: v for k, v in summaries.items() if k not in ("centre", "chance")}
        rows.extend(summaries_as_rows(summaries, name))
    info = {"run_attention": config.model.attention, "stages": config.model.stages, "eval_size": eval_size,
            "position_bias": position_bias(net, test, eval_size, index.crop_bottom),
            "scale_weights": [round(float(w), 4) for w in net.attention.scale_weights().detach()], "test_images": len(test)}
    return rows, info


# -- deletion / insertion -------------------------------------------------------------------


def blurred(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a (3, H, W) tensor: the 'nothing inserted yet' canvas of the insertion test."""
    radius = max(1, int(3 * sigma))
    xs = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-xs**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = image.unsqueeze(0)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    return x.squeeze(0)


def curve_images(image: torch.Tensor, order: torch.Tensor, canvas: torch.Tensor, steps: int, insert: bool) -> torch.Tensor:
    """(steps + 1, 3, H, W): after k/steps of the pixels (in `order`) were deleted or inserted."""
    _, height, width = image.shape
    total = height * width
    frames = []
    for k in range(steps + 1):
        count = round(total * k / steps)
        mask = torch.zeros(total, dtype=torch.bool)
        mask[order[:count]] = True
        mask = mask.view(1, height, width)
        frames.append(torch.where(mask, image, canvas) if insert else torch.where(mask, canvas, image))
    return torch.stack(frames)


def auc(values: np.ndarray) -> float:
    """Area under a curve sampled at evenly spaced fractions 0..1 (trapezoid rule)."""
    return float(np.trapezoid(values, dx=1.0 / (len(values) - 1)))


def paired_interval(difference: np.ndarray, seed: int, draws: int = 2000) -> dict[str, float]:
    """Mean of per-image AUC differences with a 95% bootstrap interval over images."""
    generator = np.random.default_rng(seed)
    means = difference[generator.integers(0, len(difference), size=(draws, len(difference)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": round(float(difference.mean()), 5), "low": round(float(low), 5), "high": round(float(high), 5)}


def knn_probabilities(bank, frames_embedding: torch.Tensor, num_classes: int) -> torch.Tensor:
    votes = knn_scores(bank.vectors, bank.labels, frames_embedding, num_classes, KNN_K, KNN_T)
    return votes / votes.sum(dim=1, keepdim=True).clamp_min(1e-12)


def centre_share(heatmap: torch.Tensor) -> float:
    """Share of a map's mass in the middle half of the frame (the box of half its area): 0.5 for a flat map."""
    height, width = heatmap.shape
    ys = (torch.arange(height) + 0.5) / height - 0.5
    xs = (torch.arange(width) + 0.5) / width - 0.5
    inside = (ys.abs() < 0.5 ** 0.5 / 2).view(-1, 1) & (xs.abs() < 0.5 ** 0.5 / 2).view(1, -1)
    mass = heatmap.clamp_min(0)
    return float(mass[inside].sum() / mass.sum().clamp_min(1e-12))


def pixel_orders(net: FineGrainedNet, image: torch.Tensor, prototypes: torch.Tensor, explained: int, runner_up: int,
                 generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Every pixel order scored: the app's maps (fused attention, each stage's attention, the
    class evidence of the class the kNN predicts, and its contrast with the runner-up), and
    the two references; with each map's centre share."""
    _, height, width = image.shape
    chosen, second = torch.tensor([explained]), torch.tensor([runner_up])
    result = forward_with_maps(net, image.unsqueeze(0), choose=lambda _e, _l: (prototypes[chosen], chosen),
                               runner_up=lambda _e, _l: (prototypes[second], second))
    maps = {"fused attention": fused_attention(result.attention, (height, width), result.scale_weights)[0]}
    for stage, attention in zip(result.stages, result.attention):
        maps[f"stage {stage} attention"] = upsample(attention, (height, width))[0]
    maps["class evidence"] = fused_evidence(result.evidence, (height, width))[0]
    maps["versus runner-up"] = fused_evidence(result.contrast, (height, width))[0]
    maps["centre first"] = torch.from_numpy(centre_gaussian((height, width))).float()
    orders = {kind: torch.argsort(heatmap.flatten(), descending=True, stable=True) for kind, heatmap in maps.items()}
    orders["random"] = torch.randperm(height * width, generator=generator)
    return orders, {kind: centre_share(heatmap) for kind, heatmap in maps.items()}


POSITION_GRID = 6


@torch.no_grad()
def position_bias(net: FineGrainedNet, samples: list, eval_size: int, crop_bottom: int) -> dict[str, dict[str, float]]:
    """How much of each map is *where in the frame* rather than what is there.

    Every map (each stage's gate, each stage's attention map, the fused map) is averaged on
    a 6 x 6 grid and normalised to sum 1. `position_share` is the part of the maps'
    departure from flat that all images share: |mean map - flat|^2 / mean |map - flat|^2.
    Maps that follow content placed anywhere give about 1/images; a gate that prefers a
    corner whatever the image gives 1. `corners` and `middle` are the mean map's weight
    there relative to flat (1.0).
    """
    grids: dict[str, list[torch.Tensor]] = {}
    for sample in samples:
        try:
            picture = load_rgb(sample.path, crop_bottom=crop_bottom)
        except ImageDecodeError:
            continue
        image = network_input(picture, eval_size)
        output = net(image.unsqueeze(0))
        maps = {"fused attention": fused_attention(output.attention_maps, tuple(image.shape[1:]), net.attention.scale_weights())[0]}
        for stage, attention, gate in zip(net.stages, output.attention_maps, output.gate_maps or [None] * len(net.stages)):
            maps[f"stage {stage} attention"] = attention[0]
            if gate is not None:
                maps[f"stage {stage} gate"] = gate[0]
        for kind, heatmap in maps.items():
            pooled = F.adaptive_avg_pool2d(heatmap.float().clamp_min(0)[None, None], POSITION_GRID)[0, 0]
            grids.setdefault(kind, []).append(pooled / pooled.sum().clamp_min(1e-12))
    flat = 1.0 / POSITION_GRID ** 2
    inner = slice(1, POSITION_GRID - 1)
    result = {}
    for kind, items in grids.items():
        stacked = torch.stack(items)
        mean = stacked.mean(dim=0)
        spread = (stacked - flat).pow(2).sum(dim=(1, 2)).mean()
        result[kind] = {
            "position_share": float((mean - flat).pow(2).sum() / spread.clamp_min(1e-20)),
            "corners": float(mean[[0, 0, -1, -1], [0, -1, 0, -1]].mean() / flat),
            "middle": float(mean[inner, inner].mean() / flat),
            "images": len(items),
        }
    return result


@torch.no_grad()
def deletion_insertion(run_dir: Path | None, data: Path, images: int, steps: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Deletion and insertion AUC of every pixel order, tracking from the same frames: the
    probability of the class each map explains (the kNN's prediction on the untouched input; the
    usual definition, Petsiuk et al. 2018), of the true class, and the explained class's
    margin over the runner-up (what the contrast map explains)."""
    if run_dir is not None:
        net, config, _ = load_encoder(run_dir, device="cpu")
    else:
        raise ValueError("a cub50 run is needed")
    index = detect(data, check_images=False)
    train = [s for s in index.train_samples() if s.label >= 0]
    test = [s for s in index.test_samples() if s.label >= 0]
    step = max(1, len(test) // images)
    chosen = test[::step][:images]
    eval_size = config.data.eval_size
    progress(f"cub50: embedding {len(train)} training images for the kNN classifier")
    bank = compute_embeddings(net, train, eval_size, crop_bottom=index.crop_bottom)
    num_classes = len(index.classes)
    prototypes = class_prototypes(bank.vectors, bank.labels, num_classes)  # as the app's kNN mode explains
    generator = torch.Generator().manual_seed(seed)
    curves: dict[tuple[str, str, str], list[np.ndarray]] = {}
    full_probability, full_explained, correct = [], [], []
    centre_shares: dict[str, list[float]] = {}
    progress(f"cub50: deletion and insertion on {len(chosen)} test images, {steps} steps each")
    for number, sample in enumerate(chosen):
        try:
            picture = load_rgb(sample.path, crop_bottom=index.crop_bottom)
        except ImageDecodeError:
            continue
        image = network_input(picture, eval_size)
        whole = knn_probabilities(bank, net(image.unsqueeze(0)).embedding.float(), num_classes)[0]
        explained, runner_up = (int(k) for k in whole.topk(2).indices)
        full_probability.append(float(whole[sample.label]))
        full_explained.append(float(whole[explained]))
        correct.append(explained == sample.label)
        zero = torch.zeros_like(image)  # the dataset mean colour after normalisation
        soft = blurred(image, sigma=max(2.0, min(image.shape[1:]) / 20))
        orders, centre = pixel_orders(net, image, prototypes, explained, runner_up, generator)
        for kind, share in centre.items():
            centre_shares.setdefault(kind, []).append(share)
        for kind, order in orders.items():
            for mode, canvas in (("deletion", zero), ("insertion", soft)):
                frames = curve_images(image, order, canvas, steps, insert=mode == "insertion")
                probability = knn_probabilities(bank, net(frames).embedding.float(), num_classes)
                for tracked, label in (("explained", explained), ("true", sample.label)):
                    curves.setdefault((kind, mode, tracked), []).append(probability[:, label].numpy())
                # How far the explained class stays ahead of the runner-up: what the contrast map explains.
                margin = probability[:, explained] - probability[:, runner_up]
                curves.setdefault((kind, mode, "margin"), []).append(margin.numpy())
        if (number + 1) % 10 == 0:
            progress(f"  {number + 1}/{len(chosen)} images")
    per_image = {key: np.array([auc(v) for v in values]) for key, values in curves.items()}
    rows = []
    for kind in dict.fromkeys(key[0] for key in curves):
        row: dict[str, Any] = {"order": kind}
        if kind in centre_shares:
            row["centre_share"] = float(np.mean(centre_shares[kind]))
        for mode in ("deletion", "insertion"):
            for tracked in ("explained", "true", "margin"):
                stacked = np.stack(curves[(kind, mode, tracked)])
                row[f"{mode}_auc_{tracked}"] = float(per_image[(kind, mode, tracked)].mean())
                row[f"{mode}_curve_{tracked}"] = [round(float(x), 4) for x in stacked.mean(axis=0)]
                for reference in ("centre first", "random"):
                    if kind != reference:
                        difference = per_image[(kind, mode, tracked)] - per_image[(reference, mode, tracked)]
                        row[f"{mode}_{tracked}_minus_{reference.split()[0]}"] = paired_interval(difference, seed)
        rows.append(row)
    progress(f"cub50: position bias of the maps on {len(chosen)} test images")
    info = {"images": len(full_probability), "steps": steps, "eval_size": eval_size,
            "position_bias": position_bias(net, chosen, eval_size, index.crop_bottom),
            "knn_top1_on_these_images": float(np.mean(correct)) if correct else None,
            "mean_true_class_probability_full_image": float(np.mean(full_probability)) if full_probability else None,
            "mean_explained_class_probability_full_image": float(np.mean(full_explained)) if full_explained else None,
            "explained_class": "the kNN's top class on the untouched network input (the eval centre crop); "
                               "the class-evidence map explains it "
                               "(class prototype: mean embedding minus the mean over classes)",
            "deletion_canvas": "zeros after normalisation (the dataset mean colour)",
            "insertion_canvas": "Gaussian-blurred image (sigma = short side / 20)",
            "classifier": f"kNN over the train split (k={KNN_K}, T={KNN_T}), probability = normalised votes"}
    return rows, info


def interval_text(interval: dict[str, float] | None) -> str:
    return "" if interval is None else f"{interval['mean']:+.4f} [{interval['low']:+.4f}, {interval['high']:+.4f}]"


def position_table(bias: dict[str, dict[str, float]], title: str) -> str:
    rows = [{"map": kind, **{k: f"{v:.3f}" for k, v in values.items() if k != "images"}} for kind, values in bias.items()]
    return format_table(rows, [("map", "map"), ("position_share", "position share (content anywhere ~1/images, fixed 1)"),
                               ("corners", "corners / flat"), ("middle", "middle 4x4 / flat")], title=title)


def parse_setting(item: str) -> tuple[str, Any]:
    """KEY=VALUE as `fgdesk train --set` reads it."""
    from fgdesk.cli import _parse_value

    key, sep, value = item.partition("=")
    if not sep:
        raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
    return key.strip(), _parse_value(value.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a run trained on the demo set (default: train one here)")
    parser.add_argument("--cub-run", type=Path, help="a run trained on cub50 (default: train one here)")
    parser.add_argument("--data", default=None, help="cub50 folder (default ../shared/data/cub50/CUB_200_2011)")
    parser.add_argument("--demo-minutes", type=float, default=4.0, help="budget of the demo-set run trained here")
    parser.add_argument("--cub-minutes", type=float, default=6.0, help="budget of the cub50 run trained here")
    parser.add_argument("--demo-classes", type=int, default=8)
    parser.add_argument("--demo-per-class", type=int, default=60)
    parser.add_argument("--images", type=int, default=100, help="cub50 test images for deletion/insertion")
    parser.add_argument("--steps", type=int, default=16, help="points on each deletion/insertion curve")
    parser.add_argument("--limit", type=int, default=None, help="demo test images scored for localization (default all)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-cub", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny demo set, 0.3-minute runs, 6 cub images")
    parser.add_argument("--tag", default="", help="suffix for the results file name")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change the default config of runs trained here, e.g. contrastive.attention_consistency=1")
    args = parser.parse_args(argv)
    args.changes = dict(parse_setting(item) for item in args.set)
    if args.quick:
        args.demo_minutes, args.cub_minutes = min(args.demo_minutes, 0.3), min(args.cub_minutes, 0.3)
        args.demo_classes, args.demo_per_class = 4, 16
        args.images, args.steps = min(args.images, 6), min(args.steps, 8)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    data = resolve_data(args.data)
    work = Path(tempfile.mkdtemp(prefix="fgdesk-heatmaps-"))
    settings = {
        "demo_run": relative(args.run) if args.run else f"trained here: default config, {args.demo_minutes:g} min",
        "cub_run": relative(args.cub_run) if args.cub_run else f"trained here: default config, {args.cub_minutes:g} min",
        "demo_set": f"{args.demo_classes} classes x {args.demo_per_class} images, 112 px, seed 0",
        "config_changes": args.changes, "cub_data": relative(data), "cub_images": args.images, "steps": args.steps, "quick": args.quick, "seed": args.seed,
    }
    report = Report("heatmaps" + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else ""), settings)
    results: dict[str, Any] = {}
    tables = []
    try:
        if not args.skip_demo:
            run = args.run
            if run is None:
                demo = make_demo_dataset(work / "demo", num_classes=args.demo_classes, per_class=args.demo_per_class, seed=0)
                run = train_short_run(demo, args.demo_minutes, work, args.seed, args.changes)
            rows, info = demo_localization(run, args.limit, args.seed)
            results["demo_localization"] = {"rows": rows, **info}
            tables.append(format_table(
                [{**r, **{k: (None if r.get(k) is None else f"{100 * r[k]:.1f}") for k in ("pointing", "energy", "iou_mass", "iou_half_max")}} for r in rows],
                [("model", "model"), ("map", "map"), ("pointing", "pointing game %"), ("energy", "energy in box %"),
                 ("iou_mass", "IoU (50% mass) %"), ("constant", "constant maps"), ("images", "images")],
                title=f"Demo set localization ({info['test_images']} test images, learned scale weights {info['scale_weights']})",
            ))
            tables.append(position_table(info["position_bias"], "Demo set: how much of each map is position in the frame"))
        if not args.skip_cub:
            if not data.exists():
                results["deletion_insertion"] = {"skipped": f"{relative(data)} not found"}
            else:
                cub_run = args.cub_run or train_short_run(data, args.cub_minutes, work, args.seed, args.changes)
                rows, info = deletion_insertion(cub_run, data, args.images, args.steps, args.seed)
                results["deletion_insertion"] = {"rows": rows, **info}
                tables.append(format_table(
                    [{"order": r["order"], "centre": f"{r['centre_share']:.3f}" if "centre_share" in r else "",
                      "versus": interval_text(r.get("deletion_explained_minus_centre")),
                      **{f"{m}_{t}": f"{r[f'{m}_auc_{t}']:.4f}" for m in ("deletion", "insertion")
                                              for t in ("explained", "true", "margin")}} for r in rows],
                    [("order", "pixel order"), ("deletion_explained", "deletion, explained class (lower better)"),
                     ("insertion_explained", "insertion, explained class (higher better)"),
                     ("deletion_true", "deletion, true class"), ("insertion_true", "insertion, true class"),
                     ("deletion_margin", "deletion, margin over the runner-up"),
                     ("centre", "mass in the middle half (flat 0.5)"),
                     ("versus", "deletion, explained, minus centre first (95% CI)")],
                    title=f"cub50 deletion / insertion AUC of the kNN probability ({info['images']} test images, "
                          f"kNN top-1 on them {100 * (info['knn_top1_on_these_images'] or 0):.1f}%)",
                ))
                tables.append(position_table(info["position_bias"], "cub50: how much of each map is position in the frame"))
        notes = ["Random weights: random backbone and random attention gates; a map that localizes no better than this shows architecture bias, not learning."]
        report.write(results, tables, notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
