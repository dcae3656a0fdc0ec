"""Scores as saved in a run folder: the classifier's report (classifier.json + confusion.csv)
and few-label scores. Without torch, so the app reads them on any thread without loading it."""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fgdesk.fileio import atomic_write_text
from fgdesk.train import runs

log = logging.getLogger(__name__)

CONFUSION_FILE = runs.CONFUSION_FILE


@dataclass
class FewLabelScore:
    labels_per_class: int
    draws: int
    num_train: int  # labelled images in each draw (a class with fewer gives all it has)
    knn_top1: list[float]  # one per draw
    linear_top1: list[float]

    @staticmethod
    def _mean_std(values: list[float]) -> tuple[float, float]:
        if not values:
            return float("nan"), float("nan")
        return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0

    def as_dict(self) -> dict:
        knn_mean, knn_std = self._mean_std(self.knn_top1)
        linear_mean, linear_std = self._mean_std(self.linear_top1)
        return {
            "labels_per_class": self.labels_per_class,
            "draws": self.draws,
            "num_train": self.num_train,
            "knn_top1": {"mean": knn_mean, "std": knn_std, "per_draw": self.knn_top1},
            "linear_top1": {"mean": linear_mean, "std": linear_std, "per_draw": self.linear_top1},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "FewLabelScore":
        """The score `as_dict` wrote (a missing draw, written as null, comes back as NaN)."""
        draws = lambda key: [float("nan") if v is None else float(v) for v in data[key]["per_draw"]]  # noqa: E731
        return cls(int(data["labels_per_class"]), int(data["draws"]), int(data["num_train"]), draws("knn_top1"),
                   draws("linear_top1"))


@dataclass
class ClassifierReport:
    """Linear classifier scores on the test split (NaN when the dataset has no test images)."""

    top1: float
    top5: float
    per_class: dict[str, float]  # class name -> test accuracy (NaN for a class without test images)
    confusion: np.ndarray  # (C, C) int64, rows: true class, columns: predicted
    class_names: list[str]
    weight_decay: float = float("nan")
    num_train: int = 0
    num_test: int = 0
    path: str = ""  # classifier.pt
    few_labels: list[FewLabelScore] = field(default_factory=list)  # scores from n labels per class, when asked
    checkpoint: str = ""  # the encoder checkpoint it was fitted on, relative to the run folder
    epoch: int | None = None  # that checkpoint's epoch count
    fitted_at: float = 0.0  # seconds since the epoch

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes null); the confusion matrix lives in confusion.csv."""
        return _json_ready({
            "top1": self.top1, "top5": self.top5, "weight_decay": self.weight_decay,
            "num_train": self.num_train, "num_test": self.num_test, "class_names": list(self.class_names),
            "per_class": self.per_class, "checkpoint": self.checkpoint, "epoch": self.epoch,
            "fitted_at": self.fitted_at, "confusion_csv": CONFUSION_FILE,
            "few_labels": [score.as_dict() for score in self.few_labels],
        })


def save_classifier_report(run_dir: Path, report: ClassifierReport) -> None:
    """classifier.json and confusion.csv beside classifier.pt, so the app and `fgdesk runs`
    show a run's classifier scores without loading a model. The report names the
    classifier.pt it describes (`runs.classifier_fingerprint`): a classifier.pt written
    since, by a fit that failed before its report, makes the report stale, never wrong."""
    run_dir = Path(run_dir)
    runs.require_run_folder(run_dir)
    write_confusion_csv(run_dir / CONFUSION_FILE, np.asarray(report.confusion), report.class_names)
    document = {**report.as_dict(), "classifier_fingerprint": runs.classifier_fingerprint(run_dir)}
    atomic_write_text(run_dir / runs.CLASSIFIER_REPORT_FILE, json.dumps(document, indent=2) + "\n")


def load_classifier_report(run_dir: Path) -> ClassifierReport | None:
    """The report of the run's classifier.pt, or None when there is none, it is unreadable, or
    it describes an earlier classifier.pt."""
    run_dir = Path(run_dir)
    try:
        data = json.loads((run_dir / runs.CLASSIFIER_REPORT_FILE).read_text(encoding="utf-8"))
        if data.get("classifier_fingerprint") != runs.classifier_fingerprint(run_dir):
            log.info("the classifier report of %s describes an earlier classifier.pt; not shown", run_dir)
            return None
        names = [str(name) for name in data["class_names"]]
        confusion = read_confusion_csv(run_dir / CONFUSION_FILE, names)
        number = lambda value: float("nan") if value is None else float(value)  # noqa: E731
        return ClassifierReport(
            top1=number(data["top1"]), top5=number(data["top5"]),
            per_class={str(k): number(v) for k, v in (data.get("per_class") or {}).items()},
            confusion=confusion, class_names=names, weight_decay=number(data.get("weight_decay")),
            num_train=int(data.get("num_train", 0)), num_test=int(data.get("num_test", 0)),
            path=str(run_dir / runs.CLASSIFIER_FILE),
            few_labels=[FewLabelScore.from_dict(item) for item in data.get("few_labels") or []],
            checkpoint=str(data.get("checkpoint") or ""), epoch=data.get("epoch"),
            fitted_at=float(data.get("fitted_at") or 0.0),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring the classifier report of %s: %s", run_dir, exc)
        return None


def write_confusion_csv(path: Path, confusion: np.ndarray, names: Sequence[str]) -> None:
    """Rows are true classes, columns predicted ones; the first row and column hold the names."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *names])
    for name, row in zip(names, confusion.tolist()):
        writer.writerow([name, *row])
    atomic_write_text(path, buffer.getvalue())


def read_confusion_csv(path: Path, names: Sequence[str]) -> np.ndarray:
    """The matrix `write_confusion_csv` wrote; raises ValueError when it does not fit `names`."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0][1:] != list(names) or len(rows) != len(names) + 1:
        raise ValueError(f"{path.name} does not match the classes of the report")
    return np.array([[int(cell) for cell in row[1:]] for row in rows[1:]], dtype=np.int64).reshape(len(names), len(names))


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    return value
