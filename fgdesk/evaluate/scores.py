"""Scores as saved in a run folder: the classifier's report (classifier.json, confusion.csv and
test_mistakes.csv) and few-label scores. Without torch, so the app reads them on any thread without loading it."""
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
MISTAKES_FILE = runs.MISTAKES_FILE
MISTAKE_COLUMNS = ("path", "true_class", "predicted_class", "predicted_probability", "true_probability")


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


@dataclass(frozen=True)
class Mistake:
    """A test image the classifier put in another class: the cell of the confusion matrix it
    counts in, and the image itself, to look at."""

    path: str
    true_class: str
    predicted: str
    predicted_probability: float
    true_probability: float


@dataclass(frozen=True)
class Confusion:
    """One off-diagonal cell of the confusion matrix."""

    true_class: str
    predicted: str
    count: int  # test images of true_class taken for `predicted`
    of: int  # test images of true_class

    @property
    def share(self) -> float:
        return self.count / self.of if self.of else float("nan")


def most_confused(confusion: np.ndarray, names: Sequence[str], count: int = 5) -> list[Confusion]:
    """The largest off-diagonal cells, most images first (ties: the larger share of the true
    class, then the order of the classes), without empty ones."""
    confusion = np.asarray(confusion)
    totals = confusion.sum(axis=1)
    off_diagonal = confusion.copy()
    np.fill_diagonal(off_diagonal, 0)
    rows, columns = np.nonzero(off_diagonal)  # vectorised: 200 classes are 40,000 cells, read on the GUI thread
    numbers = off_diagonal[rows, columns]
    order = np.lexsort((columns, rows, -numbers / totals[rows], -numbers))[: max(0, count)]  # last key first
    return [Confusion(names[rows[k]], names[columns[k]], int(numbers[k]), int(totals[rows[k]])) for k in order]


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
    mistakes: list[Mistake] | None = None  # misclassified test images; None: a fit that did not record them

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes null); the confusion matrix lives in confusion.csv, the
        misclassified images in test_mistakes.csv."""
        return _json_ready({
            "top1": self.top1, "top5": self.top5, "weight_decay": self.weight_decay,
            "num_train": self.num_train, "num_test": self.num_test, "class_names": list(self.class_names),
            "per_class": self.per_class, "checkpoint": self.checkpoint, "epoch": self.epoch,
            "fitted_at": self.fitted_at, "confusion_csv": CONFUSION_FILE,
            "mistakes_csv": MISTAKES_FILE if self.mistakes is not None else None,
            "few_labels": [score.as_dict() for score in self.few_labels],
        })

    def most_confused(self, count: int = 5) -> list[Confusion]:
        return most_confused(self.confusion, self.class_names, count)

    def mistakes_between(self, true_class: str, predicted: str) -> list[Mistake]:
        """The test images of one confusion cell, the surest mistakes first ([] when the fit
        did not record them: see `mistakes`)."""
        found = [m for m in self.mistakes or () if m.true_class == true_class and m.predicted == predicted]
        return sorted(found, key=lambda m: (-m.predicted_probability, m.path))


def save_classifier_report(run_dir: Path, report: ClassifierReport) -> None:
    """classifier.json, confusion.csv and test_mistakes.csv beside classifier.pt, so the app and
    `fgdesk runs` show a run's classifier scores without loading a model. The report names the
    classifier.pt it describes (`runs.classifier_fingerprint`): a classifier.pt written
    since, by a fit that failed before its report, makes the report stale, never wrong."""
    run_dir = Path(run_dir)
    runs.require_run_folder(run_dir)
    write_confusion_csv(run_dir / CONFUSION_FILE, np.asarray(report.confusion), report.class_names)
    if report.mistakes is not None:
        write_mistakes_csv(run_dir / MISTAKES_FILE, report.mistakes)
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
            mistakes=_read_mistakes(run_dir, data, names, confusion),
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


def write_mistakes_csv(path: Path, mistakes: Sequence[Mistake]) -> None:
    """One row per misclassified test image, for the app and for R, pandas or a spreadsheet."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MISTAKE_COLUMNS)
    for m in mistakes:
        writer.writerow([m.path, m.true_class, m.predicted, f"{m.predicted_probability:.4f}", f"{m.true_probability:.4f}"])
    atomic_write_text(path, buffer.getvalue())


def read_mistakes_csv(path: Path) -> list[Mistake]:
    """The rows `write_mistakes_csv` wrote; ValueError when the file is not one."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or tuple(rows[0]) != MISTAKE_COLUMNS:
        raise ValueError(f"{path.name} is not a table of misclassified test images")
    return [Mistake(row[0], row[1], row[2], float(row[3]), float(row[4])) for row in rows[1:] if row]


def _read_mistakes(run_dir: Path, data: dict, names: Sequence[str], confusion: np.ndarray) -> list[Mistake] | None:
    """The report's misclassified images, or None (an older fit, or a table that does not
    match its confusion matrix: a cell would then open images of another fit)."""
    if not data.get("mistakes_csv"):
        return None
    try:
        mistakes = read_mistakes_csv(run_dir / MISTAKES_FILE)
    except (OSError, ValueError, IndexError) as exc:
        log.warning("ignoring the misclassified test images of %s: %s", run_dir, exc)
        return None
    position = {name: i for i, name in enumerate(names)}
    counted = np.zeros_like(confusion)
    for m in mistakes:
        if m.true_class not in position or m.predicted not in position or m.true_class == m.predicted:
            counted = None
            break
        counted[position[m.true_class], position[m.predicted]] += 1
    off_diagonal = confusion - np.diag(np.diag(confusion))
    if counted is None or not np.array_equal(counted, off_diagonal):
        log.warning("ignoring %s of %s: it does not match confusion.csv", MISTAKES_FILE, run_dir)
        return None
    return mistakes


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
