#!/usr/bin/env python3
"""The learning test's recipe over several seeds: what its thresholds rest on.

tests/test_learning.py pretrains once, for one seed, on the demo set and asserts that the
embedding classifies above chance. This script runs that exact recipe (it imports the
test's `learning_config`, so the two cannot drift apart) for several seeds and scores the
network at random init and after training on three measures:
- test kNN: the 80 test images against the 240 training images (k=20, cosine);
- leave-one-out kNN: every one of the 320 labelled images against the other 319;
- linear probe: `fit_linear` on the training split, top-1 on the test split.

Seeds run one after another on one thread each, as the test does.

    python3 dev.py bench bench/demo_learning.py --seeds 0,1,2,3,4,5
    python3 dev.py bench bench/demo_learning.py --seeds 0 --epochs 2      # smoke run
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import Report, format_table, pct, progress, quiet_logging, summarize  # noqa: E402
from test_learning import IMAGE_SIZE, NUM_CLASSES, PER_CLASS, learning_config  # noqa: E402

from fgdesk.data.layouts import detect  # noqa: E402
from fgdesk.data.synthetic import make_demo_dataset  # noqa: E402
from fgdesk.evaluate.embeddings import compute_embeddings, load_encoder  # noqa: E402
from fgdesk.evaluate.knn import knn_top1, leave_one_out_knn_top1  # noqa: E402
from fgdesk.evaluate.linear import fit_linear  # noqa: E402
from fgdesk.evaluate.report import training_samples  # noqa: E402
from fgdesk.model.moco import MoCo  # noqa: E402
from fgdesk.train.engine import Trainer  # noqa: E402
from fgdesk.train.events import FinishedEvent  # noqa: E402

MEASURES = ("test_knn_top1", "loo_knn_top1", "linear_top1")


def score(net: torch.nn.Module, index: Any, eval_size: int, seed: int) -> dict[str, float]:
    net.eval()
    bank = compute_embeddings(net, training_samples(index), eval_size)
    queries = compute_embeddings(net, index.test_samples(), eval_size)
    probe = fit_linear(bank.vectors, bank.labels, NUM_CLASSES, seed=seed)
    return {
        "test_knn_top1": knn_top1(bank.vectors, bank.labels, queries.vectors, queries.labels, NUM_CLASSES),
        "loo_knn_top1": leave_one_out_knn_top1(torch.cat([bank.vectors, queries.vectors]),
                                               torch.cat([bank.labels, queries.labels]), NUM_CLASSES),
        "linear_top1": (probe.logits(queries.vectors).argmax(dim=1) == queries.labels).float().mean().item(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (smoke runs)")
    parser.add_argument("--out", default=None, help="results name (default demo_learning, or demo_learning_smoke)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(tempfile.mkdtemp(prefix="fgdesk-demo-learning-"))
    try:
        return run(args, seeds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, seeds: list[int], work: Path) -> int:
    data = make_demo_dataset(work / "data", num_classes=NUM_CLASSES, per_class=PER_CLASS, size=IMAGE_SIZE, seed=0)
    index = detect(str(data), layout="auto", check_images=False)
    records = []
    for seed in seeds:
        config = learning_config(str(data), seed=seed)
        if args.epochs:
            config.schedule.epochs = args.epochs
        torch.manual_seed(seed)  # the engine seeds this way before it builds the model
        random_scores = score(MoCo(config, queue_size=0).query.net, index, config.data.eval_size, seed)
        started = time.monotonic()
        with quiet_logging():
            result = Trainer(config, work / f"run-seed{seed}").run()
        if not isinstance(result, FinishedEvent) or result.status != "finished":
            print(f"seed {seed}: the run did not finish: {result}", file=sys.stderr)
            return 1
        train_s = time.monotonic() - started
        net, _, _ = load_encoder(work / f"run-seed{seed}", "last")
        trained_scores = score(net, index, config.data.eval_size, seed)
        records.append({"seed": seed, "random": random_scores, "trained": trained_scores, "train_s": train_s})
        progress(f"seed {seed}: trained " + ", ".join(f"{m} {pct(trained_scores[m])}%" for m in MEASURES)
                 + f" ({train_s:.0f} s); random init " + ", ".join(f"{pct(random_scores[m])}%" for m in MEASURES))

    summary = {side: {m: summarize(r[side][m] for r in records) for m in MEASURES} for side in ("random", "trained")}
    rows = [{"network": side, **{m: f"{pct(summary[side][m]['mean'])} ({' / '.join(pct(r[side][m]) for r in records)})" for m in MEASURES},
             "min_x_chance": " / ".join(f"{min(r[side][m] for r in records) * NUM_CLASSES:.2f}" for m in MEASURES)}
            for side in ("random", "trained")]
    table = format_table(rows, [("network", "network"), ("test_knn_top1", "test kNN % (per seed)"),
                                ("loo_knn_top1", "leave-one-out kNN %"), ("linear_top1", "linear probe %"),
                                ("min_x_chance", "lowest seed, x chance (kNN / LOO / linear)")],
                         title=f"Demo set, the learning test's recipe, seeds {args.seeds} (chance {100 / NUM_CLASSES:.1f}%)")
    settings = {"seeds": seeds, "classes": NUM_CLASSES, "per_class": PER_CLASS, "image_size": IMAGE_SIZE,
                "epochs": args.epochs or learning_config(str(data)).schedule.epochs, "threads": 1}
    name = args.out or ("demo_learning_smoke" if args.epochs else "demo_learning")
    Report("demo_learning", settings).write({"seeds": records, "summary": summary}, [table], [], filename=f"{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
