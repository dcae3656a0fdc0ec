"""Runs side by side: how each one scored, its curves per epoch, and the settings that differ.

A lab tries attention on and off, two resolutions, two seeds; what it needs to see is which
run did better and what was different about it. Everything here reads the run folders
(config.json, state.json, metrics.jsonl, classifier.json, eval.json) without torch, so
the app can call it on any thread and `fgdesk compare` stays fast.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgdesk.fileio import read_jsonl
from fgdesk.train import runs

_NOT_COMPARED = {"name"}  # the run's name heads its column already


@dataclass
class RunCurves:
    """Per-epoch points of one run: epochs trained (a part of one, at the end of a time budget, is
    a fraction), minutes of training, mean loss, kNN top-1."""

    epochs: list[float] = field(default_factory=list)
    minutes: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)  # NaN for an epoch without a finite step
    knn: list[float] = field(default_factory=list)  # NaN where the monitor did not run


@dataclass
class RunSummary:
    path: Path
    name: str
    status: str
    epochs_done: int
    epochs: int
    minutes: float | None  # training time, pauses excluded
    best_knn_top1: float | None  # the monitor's best, on held-out training images
    classifier_top1: float | None  # linear classifier on the test split (classifier.json)
    classifier_top5: float | None
    eval_knn_top1: float | None  # kNN on the test split, from the last `fgdesk eval` (eval.json)
    settings: dict[str, Any]  # the flattened config, "section.field" -> value
    curves: RunCurves


@dataclass
class Comparison:
    runs: list[RunSummary]
    differing: list[str]  # setting keys whose values are not all equal, in config order

    def setting(self, run: RunSummary, key: str) -> str:
        return format_setting(run.settings.get(key, "—"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "differing_settings": self.differing,
            "runs": [
                {
                    "name": run.name, "path": str(run.path), "status": run.status,
                    "epochs_done": run.epochs_done, "epochs": run.epochs, "minutes": run.minutes,
                    "best_knn_top1": run.best_knn_top1, "classifier_top1": run.classifier_top1,
                    "classifier_top5": run.classifier_top5, "eval_knn_top1": run.eval_knn_top1,
                    "settings": {key: run.settings.get(key) for key in self.differing},
                }
                for run in self.runs
            ],
        }

    def score_rows(self) -> list[tuple[str, list[str], list[float | None] | None]]:
        """(label, text per run, number per run where the row is a score to rank) for each row
        above the settings; the app and `fgdesk compare` show the same rows."""
        runs = self.runs
        scores = [
            ("Best kNN (held-out training images)", [run.best_knn_top1 for run in runs]),
            ("Classifier top-1 (test)", [run.classifier_top1 for run in runs]),
            ("Classifier top-5 (test)", [run.classifier_top5 for run in runs]),
            ("kNN top-1 (test, last evaluation)", [run.eval_knn_top1 for run in runs]),
        ]
        return [
            ("Status", [run.status for run in runs], None),
            ("Epochs", [f"{run.epochs_done}/{run.epochs}" if run.epochs else str(run.epochs_done) for run in runs], None),
            ("Training time", [minutes_text(run.minutes) for run in runs], None),
            *((label, [percent_text(value) for value in values], values) for label, values in scores),
        ]

    def as_text(self) -> str:
        """A table for the terminal: one column per run, scores first, then what differs."""
        names = [run.name for run in self.runs]
        rows = [(label, texts) for label, texts, _ in self.score_rows()]
        if self.differing:
            rows.append(("Settings that differ:", ["" for _ in self.runs]))
            rows += [(f"  {key}", [self.setting(run, key) for run in self.runs]) for key in self.differing]
        else:
            rows.append(("Settings", ["the same" for _ in self.runs]))
        label_width = max(len(label) for label, _ in rows)
        widths = [max(len(name), *(len(values[i]) for _, values in rows)) for i, name in enumerate(names)]
        lines = ["  ".join([" " * label_width, *(name.rjust(w) for name, w in zip(names, widths))])]
        lines += ["  ".join([label.ljust(label_width), *(v.rjust(w) for v, w in zip(values, widths))]) for label, values in rows]
        return "\n".join(line.rstrip() for line in lines)


def best_of(values: list[float | None]) -> int | None:
    """The position of the highest value, when at least two runs have one and no other ties it."""
    present = [value for value in values if value is not None and math.isfinite(value)]
    if len(present) < 2 or present.count(max(present)) > 1:
        return None
    return values.index(max(present))


def compare_runs(run_dirs: list[str | Path]) -> Comparison:
    """Summaries of the runs, in the order given, and the settings that differ between them."""
    summaries = [summarize_run(Path(run_dir)) for run_dir in run_dirs]
    keys: list[str] = []
    for summary in summaries:
        keys += [key for key in summary.settings if key not in keys]
    differing = [key for key in keys if key not in _NOT_COMPARED
                 and len({json.dumps(s.settings.get(key), sort_keys=True) for s in summaries}) > 1]
    return Comparison(summaries, differing)


def summarize_run(run_dir: Path) -> RunSummary:
    """What `compare_runs` shows of one run; a folder that is not a run raises ValueError."""
    info = runs.run_info(run_dir)
    if info is None:
        raise ValueError(f"{run_dir} is not a fgdesk run folder (it has no config.json or state.json)")
    state = runs.read_state(run_dir)
    classifier = _read_json(run_dir / runs.CLASSIFIER_REPORT_FILE)
    if classifier.get("classifier_fingerprint") != runs.classifier_fingerprint(run_dir):
        classifier = {}  # it describes an earlier classifier.pt (a later fit failed before its report)
    evaluation = _read_json(run_dir / runs.EVAL_FILE)
    curves = read_curves(run_dir)
    elapsed = runs.finite_number(state.get("elapsed_s"))
    minutes = elapsed / 60.0 if elapsed is not None else (curves.minutes[-1] if curves.minutes else None)
    return RunSummary(
        path=run_dir, name=info.name, status=info.status, epochs_done=info.epochs_done, epochs=info.epochs,
        minutes=minutes, best_knn_top1=info.best_knn_top1,
        classifier_top1=runs.finite_number(classifier.get("top1")),
        classifier_top5=runs.finite_number(classifier.get("top5")),
        eval_knn_top1=runs.finite_number(knn.get("top1")) if isinstance(knn := evaluation.get("knn"), dict) else None,
        settings=_flatten(_read_json(run_dir / runs.CONFIG_FILE)), curves=curves,
    )


def read_curves(run_dir: Path) -> RunCurves:
    """The run's epoch records; a resumed run's epochs written twice keep their last record."""
    by_epoch: dict[int, dict] = {}
    for record in read_jsonl(Path(run_dir) / runs.METRICS_FILE):
        if record.get("type") == "epoch" and isinstance(record.get("epoch"), int):
            by_epoch[record["epoch"]] = record
    curves = RunCurves()
    for epoch in sorted(by_epoch):
        record = by_epoch[epoch]
        curves.epochs.append(epoch + (runs.finite_number(record.get("fraction")) or 1.0))
        curves.minutes.append((runs.finite_number(record.get("elapsed_s")) or 0.0) / 60.0)
        loss, knn = runs.finite_number(record.get("mean_loss")), runs.finite_number(record.get("knn_top1"))
        curves.loss.append(math.nan if loss is None else loss)
        curves.knn.append(math.nan if knn is None else knn)
    return curves


def format_setting(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, str) and len(value) > 40:
        return "…" + value[-39:]  # the end of a path names the dataset
    return str(value)


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def percent_text(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def minutes_text(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} min" if value < 60 else f"{value / 60:.1f} h"
