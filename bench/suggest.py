#!/usr/bin/env python3
"""What to label next: fgdesk's suggestions against labelling images picked at random.

cub50's training split plays the unlabeled pool (its labels hidden), and its test split
scores the result. For each budget of B images, the labels of B images are "bought"
either as `fgdesk suggest` picks them (fgdesk.evaluate.suggest, TypiClust) or at random
(several draws); a kNN and a linear classifier are fitted on those B and scored on the
test split. Also reported: how many of the classes the B images cover. Two feature sets:
a trained run's embeddings (`--run RUN`) and a random-init network, since with few
labels what to label matters most when the features are good.

    python3 dev.py bench bench/suggest.py --run RUN              # a run trained on cub50
    python3 dev.py bench bench/suggest.py --quick                # random-init features only, small budgets
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Report, format_table, pct, pct_spread, progress, relative, resolve_data, score_features, seed_everything, set_threads,
    summarize,
)

from fgdesk.data.layouts import detect  # noqa: E402
from fgdesk.evaluate.embeddings import compute_embeddings, load_encoder  # noqa: E402
from fgdesk.evaluate.suggest import suggest_to_label  # noqa: E402
from fgdesk.model.network import FineGrainedNet  # noqa: E402
from fgdesk.train.defaults import default_config  # noqa: E402


def scores(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
           num_classes: int, seed: int) -> dict[str, float]:
    result = score_features(train_x, train_y, test_x, test_y, num_classes, seed)
    return {"knn_top1": result["knn_top1"], "linear_top1": result["linear_top1"],
            "classes_covered": len(set(train_y.tolist()))}


def compare(features: str, train, test, num_classes: int, budgets: list[int], draws: int, start_per_class: int) -> dict[str, Any]:
    """For each budget: the labels bought as suggested and at random, on top of `start_per_class`
    labelled images of every class (the same start for both; 0: a cold start)."""
    from fgdesk.evaluate.few_labels import draw_labelled

    out: dict[str, Any] = {}
    start = (draw_labelled(train.labels, start_per_class, torch.Generator().manual_seed(7))
             if start_per_class else torch.zeros(0, dtype=torch.long))
    in_pool = torch.ones(len(train.labels), dtype=torch.bool)
    in_pool[start] = False
    pool = torch.nonzero(in_pool).flatten()
    for budget in budgets:
        progress(f"{features}: {start_per_class} labelled per class to start, {budget} more")
        picks = suggest_to_label(train.vectors[pool], train.vectors[start], budget, seed=0)
        chosen = torch.cat([start, pool[torch.tensor([p.index for p in picks])]])
        suggested = scores(train.vectors[chosen], train.labels[chosen], test.vectors, test.labels, num_classes, 0)
        random_rows = []
        for draw in range(draws):
            generator = torch.Generator().manual_seed(1_000 + draw)
            extra = pool[torch.randperm(len(pool), generator=generator)[:budget]]
            chosen = torch.cat([start, extra])
            random_rows.append(scores(train.vectors[chosen], train.labels[chosen], test.vectors, test.labels, num_classes, draw))
        randoms = {key: summarize([row[key] for row in random_rows]) for key in random_rows[0]}
        out[str(budget)] = {"start_images": len(start), "suggested": suggested, "random": randoms, "random_per_draw": random_rows}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="CUB-layout dataset (default ../shared/data/cub50/CUB_200_2011)")
    parser.add_argument("--run", type=Path, default=None, help="a run trained on that dataset (its last checkpoint)")
    parser.add_argument("--budgets", default="50,100,200", help="labels bought, comma-separated")
    parser.add_argument("--draws", type=int, default=10, help="random draws per budget")
    parser.add_argument("--starts", default="0,1", help="labelled images per class before buying more (0: cold start)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="random-init features, budgets 25,50, 3 draws")
    parser.add_argument("--out", default="suggest", help="results name (bench/results/NAME.json)")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    data = resolve_data(args.data)
    if not data.exists():
        print(f"dataset folder {relative(data)} does not exist; pass --data", file=sys.stderr)
        return 2
    budgets = [25, 50] if args.quick else [int(b) for b in args.budgets.split(",")]
    draws = 3 if args.quick else args.draws
    index = detect(data, check_images=False)
    train_samples = [s for s in index.train_samples() if s.label >= 0]
    test_samples = [s for s in index.test_samples() if s.label >= 0]
    base = default_config(str(data), len(train_samples), "cpu")
    size = base.data.eval_size
    feature_sets: dict[str, torch.nn.Module] = {}
    seed_everything(0)
    feature_sets["random init"] = FineGrainedNet(base.model).eval()
    if args.run and not args.quick:
        net, config, _ = load_encoder(args.run)
        size = config.data.eval_size
        feature_sets["trained run"] = net
    report = Report("suggest", {
        # The run's name only: runs live outside the repository.
        "data": relative(data), "run": args.run.name if args.run else None, "budgets": budgets, "draws": draws,
        "train_pool": len(train_samples), "test_images": len(test_samples), "classes": len(index.classes),
        "eval_size": size, "method": "fgdesk.evaluate.suggest.suggest_to_label (TypiClust)", "starts": args.starts,
    })
    results: dict[str, Any] = {}
    rows = []
    for name, net in feature_sets.items():
        progress(f"embedding {len(train_samples)} + {len(test_samples)} images with the {name} network at {size} px")
        train = compute_embeddings(net, train_samples, size, crop_bottom=index.crop_bottom)
        test = compute_embeddings(net, test_samples, size, crop_bottom=index.crop_bottom)
        results[name] = {}
        for start in [int(x) for x in args.starts.split(",")]:
            results[name][f"start {start} per class"] = compare(name, train, test, len(index.classes), budgets, draws, start)
        for by_budget in results[name].values():
            for budget, entry in by_budget.items():
                suggested, randoms = entry["suggested"], entry["random"]
                rows.append({
                    "features": name, "start": entry["start_images"], "budget": budget,
                    "s_knn": pct(suggested["knn_top1"]), "r_knn": pct_spread(randoms["knn_top1"]),
                    "s_lin": pct(suggested["linear_top1"]), "r_lin": pct_spread(randoms["linear_top1"]),
                    "s_cov": suggested["classes_covered"], "r_cov": f"{randoms['classes_covered']['mean']:.1f}",
                    "ratio": f"{suggested['linear_top1'] / max(1e-9, randoms['linear_top1']['mean']):.2f}x",
                })
    table = format_table(rows, [
        ("features", "features"), ("start", "labelled at start"), ("budget", "labels bought"), ("s_knn", "kNN suggested"), ("r_knn", "kNN random"),
        ("s_lin", "linear suggested"), ("r_lin", "linear random"), ("ratio", "linear ratio"),
        ("s_cov", "classes suggested"), ("r_cov", "classes random"),
    ], title=f"labelling B images of cub50's train split, scored on its test split (top-1 %, random: mean ± std of {draws} draws)")
    report.write(results, [table], [f"{threads} threads"], filename=f"{args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
