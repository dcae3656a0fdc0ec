#!/usr/bin/env python3
"""The labelling loop on real data: what each round costs in time, and what it buys.

cub50 becomes a class-folder dataset in a temporary folder, made of symbolic links (no image
is copied): its test split is test/CLASS, `--start` training images per class are
train/CLASS, and the rest of the training split is unlabeled/ with its labels hidden. Each
round does what a user does in the Inspect view or with the command line:

1. `suggest_for_run` picks `--budget` unlabeled images (as `fgdesk suggest`);
2. an "expert" gives each its true class: `DatasetLabeler.assign` moves the file into
   train/CLASS (as the Label button or `fgdesk label`);
3. `fit_classifier` fits the linear classifier again and scores it on test/ (as the
   Train view's "Train classifier").

The embedding cache keeps one vector per file, so a round embeds only the images just
moved. The last round is then repeated with the train and unlabeled caches deleted,
which is what every round cost when the cache was keyed by the whole file list.

    python3 dev.py bench bench/label_loop.py                 # 1-minute pretraining run, 3 rounds of 50
    python3 dev.py bench bench/label_loop.py --run RUN       # a run trained on cub50 (copied, not changed)
    python3 dev.py bench bench/label_loop.py --quick         # 0.3-minute run, 2 rounds of 25
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Report, format_table, pct, progress, quiet_logging, relative, resolve_data, set_threads  # noqa: E402

from fgdesk.config import RunConfig  # noqa: E402
from fgdesk.data.labeling import DatasetLabeler  # noqa: E402
from fgdesk.data.layouts import detect  # noqa: E402
from fgdesk.evaluate.report import fit_classifier  # noqa: E402
from fgdesk.evaluate.suggest import suggest_for_run  # noqa: E402
from fgdesk.train.defaults import default_config  # noqa: E402
from fgdesk.train.engine import Trainer  # noqa: E402


def build_folder_view(cub: Path, out: Path, start_per_class: int) -> dict[str, str]:
    """Links cub50 into train/CLASS (the first `start_per_class` per class), unlabeled/ and
    test/CLASS; returns the true class of each unlabeled link's file name."""
    index = detect(cub, check_images=False)
    truth: dict[str, str] = {}
    seen: dict[int, int] = {}
    for sample in index.samples:
        name = index.classes[sample.label]
        if sample.split == "test":
            target = out / "test" / name / sample.path.name
        elif seen.get(sample.label, 0) < start_per_class:
            seen[sample.label] = seen.get(sample.label, 0) + 1
            target = out / "train" / name / sample.path.name
        else:
            target = out / "unlabeled" / sample.path.name
            truth[sample.path.name] = name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(sample.path.resolve())
    return truth


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def drop_caches(run: Path, splits: tuple[str, ...]) -> None:
    for split in splits:
        for path in (run / "cache").glob(f"embeddings-{split}-*.pt"):
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="CUB-layout dataset (default ../shared/data/cub50/CUB_200_2011)")
    parser.add_argument("--run", type=Path, default=None, help="a run trained on that dataset (copied; the copy is re-pointed)")
    parser.add_argument("--minutes", type=float, default=1.0, help="pretraining budget when no --run is given")
    parser.add_argument("--start", type=int, default=1, help="labelled training images per class to start with")
    parser.add_argument("--budget", type=int, default=50, help="images labelled per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="0.3-minute run, 2 rounds of 25")
    parser.add_argument("--out", default="label_loop", help="results name (bench/results/NAME.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.rounds, args.budget = 0.3, 2, 25
        if args.out == "label_loop":
            args.out = "label_loop_quick"  # never overwrites the real figures
    threads = set_threads(args.threads)
    cub = resolve_data(args.data)
    if not cub.exists():
        print(f"dataset folder {relative(cub)} does not exist; pass --data", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="fgdesk-label-loop-"))
    try:
        data = work / "data"
        truth = build_folder_view(cub, data, args.start)
        run = work / "run"
        if args.run:
            shutil.copytree(args.run, run, ignore=shutil.ignore_patterns("cache", ".lock"))
            config = json.loads((run / "config.json").read_text())
            config["data"]["path"] = str(data)
            (run / "config.json").write_text(json.dumps(config))
            pretraining = f"run {args.run.name}"
        else:
            index = detect(data, check_images=False)
            config = default_config(str(data), len(index.train_samples()), "cpu").with_overrides(
                {"schedule.time_budget_min": args.minutes, "schedule.eval_every": 0})
            progress(f"pretraining for {args.minutes} min on {len(index.train_samples())} images")
            with quiet_logging():
                result = Trainer(config, run_dir=run).run()
            pretraining = f"{args.minutes} min, {result.status}"
        eval_size = RunConfig.load(run / "config.json").data.eval_size
        report = Report("label_loop", {
            "data": relative(cub), "pretraining": pretraining, "start_per_class": args.start, "budget": args.budget,
            "rounds": args.rounds, "pool": len(truth), "eval_size": eval_size,
        })

        rounds: list[dict[str, Any]] = []
        with quiet_logging():
            progress("round 0: the starting labels")
            fitted, fit_s = timed(lambda: fit_classifier(run, device="cpu"))
            rounds.append({"round": 0, "labelled": fitted.num_train, "linear_top1": fitted.top1, "fit_s": fit_s,
                           "suggest_s": None, "label_ms_per_image": None})
            for number in range(1, args.rounds + 1):
                progress(f"round {number}: suggest {args.budget}, label them, fit again")
                picks, suggest_s = timed(lambda: suggest_for_run(run, count=args.budget, device="cpu"))
                labeler = DatasetLabeler(data)
                _, label_s = timed(lambda: [labeler.assign(p.path, truth[Path(p.path).name]) for p in picks])
                fitted, fit_s = timed(lambda: fit_classifier(run, device="cpu"))
                guessed = sum(p.guess == truth[Path(p.path).name] for p in picks) / max(1, len(picks))
                rounds.append({"round": number, "labelled": fitted.num_train, "linear_top1": fitted.top1, "fit_s": fit_s,
                               "suggest_s": suggest_s, "label_ms_per_image": 1000 * label_s / max(1, len(picks)),
                               "guess_right": guessed})
            progress("the last round again without the per-file cache (train and unlabeled embedded in full)")
            drop_caches(run, ("train", "unlabeled"))
            _, cold_suggest_s = timed(lambda: suggest_for_run(run, count=args.budget, device="cpu"))
            drop_caches(run, ("train",))
            _, cold_fit_s = timed(lambda: fit_classifier(run, device="cpu"))
        last = rounds[-1]
        cold = {"suggest_s": cold_suggest_s, "fit_s": cold_fit_s,
                "round_s": cold_suggest_s + cold_fit_s, "warm_round_s": last["suggest_s"] + last["fit_s"]}
        cold["speedup"] = cold["round_s"] / max(1e-9, cold["warm_round_s"])

        rows = [{
            "round": r["round"], "labelled": r["labelled"], "top1": pct(r["linear_top1"]),
            "suggest": "-" if r["suggest_s"] is None else f"{r['suggest_s']:.1f}",
            "label": "-" if r["label_ms_per_image"] is None else f"{r['label_ms_per_image']:.1f}",
            "fit": f"{r['fit_s']:.1f}", "guess": "-" if "guess_right" not in r else pct(r["guess_right"]),
        } for r in rounds]
        table = format_table(rows, [
            ("round", "round"), ("labelled", "labelled train images"), ("top1", "linear top-1 (test)"),
            ("suggest", "suggest (s)"), ("label", "label (ms/image)"), ("fit", "fit classifier (s)"),
            ("guess", "kNN guess right"),
        ], title=f"labelling rounds of {args.budget} on cub50 ({len(truth)} unlabeled to start, {args.start} labelled per class)")
        cold_table = format_table([{
            "what": "last round", "warm": f"{cold['warm_round_s']:.1f}", "cold": f"{cold['round_s']:.1f}",
            "speedup": f"{cold['speedup']:.1f}x",
        }], [("what", ""), ("warm", "per-file cache (s)"), ("cold", "train + pool embedded in full (s)"), ("speedup", "ratio")],
            title="suggest + fit of one round")
        report.write({"rounds": rounds, "last_round_without_cache": cold}, [table, cold_table],
                     [f"{threads} threads", "the unlabeled/ images are symbolic links: a label moves the link"],
                     filename=f"{args.out}.json")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
