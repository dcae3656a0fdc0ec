"""Evaluate a run: kNN and linear probe on the test split, and heatmap localization scores.

`evaluate_run` writes eval.json, classifier.pt, classifier.json and confusion.csv into the
run folder; `fit_classifier` (the app's "Train classifier" button) writes the last three.
Both share the cached embeddings of the run's final checkpoint. Progress goes to
`on_progress(stage, fraction)` with fraction in [0, 1]; nothing here prints.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgdesk.config import RunConfig
from fgdesk.data.images import ImageDecodeError, load_rgb
from fgdesk.data.layouts import DatasetError, DatasetIndex, Sample, detect
from fgdesk.evaluate.embeddings import Embeddings, cached_embeddings, compute_embeddings, load_encoder
from fgdesk.evaluate.faithfulness import FaithfulnessScore, score_faithfulness
from fgdesk.evaluate.few_labels import DEFAULT_DRAWS, few_label_scores
from fgdesk.evaluate.heatmaps import (
    box_in_network_frame,
    bucketed,
    evenly_spread,
    forward_with_maps,
    fused_attention,
    fused_evidence,
    network_input,
    relative_attention,
    upsample,
)
from fgdesk.evaluate.knn import knn_scores, topk_accuracy
from fgdesk.evaluate.linear import LinearProbe, fit_linear
from fgdesk.evaluate.localization import (
    LocalizationSummary,
    LocalizationTally,
    centre_gaussian,
    chance_summary,
)
from fgdesk.evaluate.scores import (  # noqa: F401  (re-exported: callers import them from here)
    CONFUSION_FILE,
    ClassifierReport,
    FewLabelScore,
    Mistake,
    _json_ready,
    load_classifier_report,
    most_confused,
    read_confusion_csv,
    save_classifier_report,
    write_confusion_csv,
)
from fgdesk.fileio import atomic_write_text
from fgdesk.model.network import FineGrainedNet
from fgdesk.train import runs
from fgdesk.train.checkpoint import load_checkpoint, save_checkpoint
from fgdesk.train.device import resolve_precision, select_device

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]

KNN_K = 20
KNN_TEMPERATURE = 0.07
CLASSIFIER_KIND = "classifier"
LOCALIZATION_BATCH = 32
DECODE_CHUNK = 64
MAP_TITLES = {
    "fused": "fused attention",
    "evidence": "class evidence",
    "centre": "centre Gaussian (baseline)",
    "chance": "chance (box area)",
}


class EvaluationError(RuntimeError):
    """The run cannot be evaluated as asked; the message says why and what to do."""


@dataclass
class EvalReport:
    run_dir: str
    checkpoint: str  # relative to the run folder
    epoch: int | None
    dataset: str
    layout: str
    class_names: list[str]
    num_train: int
    num_test: int
    num_unreadable: int
    knn_top1: float
    knn_top5: float
    linear_top1: float
    linear_top5: float
    weight_decay: float
    val_accuracy: dict[float, float]  # linear probe: validation accuracy per candidate decay
    per_class: dict[str, float]
    confusion: np.ndarray
    localization: dict[str, LocalizationSummary] = field(default_factory=dict)
    localization_note: str = ""
    knn_k: int = KNN_K
    knn_temperature: float = KNN_TEMPERATURE
    elapsed_s: float = 0.0
    few_labels: list[FewLabelScore] = field(default_factory=list)  # scores from n labels per class
    faithfulness: FaithfulnessScore | None = None  # do the maps follow the classifier (deletion, no boxes needed)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes null); the confusion matrix lives in confusion.csv."""
        return _json_ready(
            {
                "run_dir": self.run_dir,
                "checkpoint": self.checkpoint,
                "epoch": self.epoch,
                "dataset": self.dataset,
                "layout": self.layout,
                "num_classes": len(self.class_names),
                "num_train": self.num_train,
                "num_test": self.num_test,
                "num_unreadable": self.num_unreadable,
                "knn": {"k": self.knn_k, "temperature": self.knn_temperature, "top1": self.knn_top1, "top5": self.knn_top5},
                "linear": {
                    "top1": self.linear_top1,
                    "top5": self.linear_top5,
                    "weight_decay": self.weight_decay,
                    "val_accuracy": {f"{k:g}": v for k, v in self.val_accuracy.items()},
                },
                "per_class": self.per_class,
                "confusion_csv": CONFUSION_FILE,
                "mistakes_csv": runs.MISTAKES_FILE,
                "most_confused": [
                    {"true_class": c.true_class, "predicted": c.predicted, "count": c.count, "of": c.of}
                    for c in most_confused(self.confusion, self.class_names, 10)
                ],
                "localization": {key: summary.as_dict() for key, summary in self.localization.items()},
                "localization_note": self.localization_note,
                "few_labels": [score.as_dict() for score in self.few_labels],
                "faithfulness": self.faithfulness.as_dict() if self.faithfulness is not None else None,
                "elapsed_s": round(self.elapsed_s, 2),
            }
        )

    def as_text(self) -> str:
        """A readable report for the terminal."""
        epoch = "" if self.epoch is None else f" (epoch {self.epoch})"
        lines = [
            f"Run: {self.run_dir}",
            f"Checkpoint: {self.checkpoint}{epoch}",
            f"Dataset: {self.dataset} ({self.layout}, {len(self.class_names)} classes; "
            f"{self.num_train} train, {self.num_test} test images; {self.num_unreadable} unreadable)",
            "",
            f"{'Classification (test split)':<34}{'top-1':>8}{'top-5':>8}",
            f"{f'  kNN (k={self.knn_k}, T={self.knn_temperature:g})':<34}{_pct(self.knn_top1):>8}{_pct(self.knn_top5):>8}",
            f"{f'  linear probe (decay {self.weight_decay:g})':<34}{_pct(self.linear_top1):>8}{_pct(self.linear_top5):>8}",
        ]
        scored = sorted(((acc, name) for name, acc in self.per_class.items() if not math.isnan(acc)))
        if scored:
            lines.append("")
            if len(scored) <= 12:
                lines.append("Per-class accuracy (linear probe):")
                shown = sorted(scored, key=lambda item: item[1])
            else:
                lines.append("Per-class accuracy (linear probe), five worst and five best:")
                shown = scored[:5] + scored[-5:]
            width = max(len(name) for _, name in shown)
            lines += [f"  {name:<{width}}  {_pct(acc):>7}" for acc, name in shown]
        confused = most_confused(self.confusion, self.class_names, 5)
        if confused:
            lines += ["", f"Most confused (linear probe; every misclassified test image is in {runs.MISTAKES_FILE}):"]
            width = max(len(cell.true_class) for cell in confused)
            lines += [f"  {cell.true_class:<{width}}  taken for {cell.predicted}: {cell.count} of {cell.of}"
                      for cell in confused]
        if self.few_labels:
            draws = self.few_labels[0].draws
            lines += ["", f"Few labels (test split; mean ± spread over {draws} random draws of the labelled images)",
                      f"{'  labels per class':<22}{'images':>8}{'kNN top-1':>16}{'linear top-1':>16}"]
            for score in self.few_labels:
                row = score.as_dict()
                lines.append(
                    f"{'  ' + str(score.labels_per_class):<22}{score.num_train:>8}"
                    f"{_pct_spread(row['knn_top1']):>16}{_pct_spread(row['linear_top1']):>16}"
                )
            lines.append(f"{'  all':<22}{self.num_train:>8}{_pct(self.knn_top1):>16}{_pct(self.linear_top1):>16}")
        lines.append("")
        if self.localization:
            images = max(summary.images for summary in self.localization.values())
            lines.append(f"Localization ({images} test images with boxes)")
            lines.append(f"{'  map':<32}{'pointing':>10}{'energy':>9}{'IoU mass':>10}{'IoU half':>10}")
            for key, summary in self.localization.items():
                title = MAP_TITLES.get(key, key.replace("stage", "attention stage "))
                note = f"  ({summary.constant} constant)" if summary.constant else ""
                lines.append(
                    f"{'  ' + title:<32}{_pct(summary.pointing):>10}{_pct(summary.energy):>9}"
                    f"{_pct(summary.iou_mass):>10}{_pct(summary.iou_half_max):>10}{note}"
                )
            lines.append("  pointing: peak inside the box; energy: share of the map inside the box;")
            lines.append("  IoU mass / half: box vs the top-50%-mass pixels / the pixels above half the peak.")
        else:
            lines.append(f"Localization: {self.localization_note or 'no test images with boxes'}")
        if self.faithfulness is not None:
            score = self.faithfulness
            lines += ["", f"Do the maps follow the classifier? ({score.images} test images; pixels deleted in each "
                          "map's order, area under the predicted class's probability: lower is better)"]
            width = max(len(kind) for kind in score.deletion)
            lines += [f"  {kind:<{width}}  {area:.3f}" for kind, area in score.deletion.items()]
            lines.append(f"  class evidence below random on {_pct(score.evidence_beats_random)} of the images")
        return "\n".join(lines)


# -- shared preparation -----------------------------------------------------------


@dataclass
class _Prepared:
    run_dir: Path
    net: FineGrainedNet
    config: RunConfig
    checkpoint_path: Path
    epoch: int | None
    device: torch.device
    index: DatasetIndex
    train_samples: list[Sample]
    test_samples: list[Sample]
    train: Embeddings
    test: Embeddings


def _pct_spread(summary: dict[str, float]) -> str:
    if math.isnan(summary["mean"]):
        return "—"
    return f"{100 * summary['mean']:.1f} ± {100 * summary['std']:.1f}"


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _scaled_progress(on_progress: Progress | None, stage: str, start: float, end: float) -> Callable[[int, int], None]:
    """A (done, total) callback mapped onto [start, end] of the overall progress."""

    def callback(done: int, total: int) -> None:
        if on_progress:
            on_progress(stage, start + (end - start) * (done / total if total else 1.0))

    return callback


def open_dataset(run_dir: Path, checkpoint_config: RunConfig) -> DatasetIndex:
    """The run's dataset; config.json wins over the checkpoint so a moved dataset can be re-pointed."""
    data = checkpoint_config.data
    config_file = Path(run_dir) / runs.CONFIG_FILE
    if config_file.is_file():
        try:
            data = RunConfig.load(config_file).data
        except Exception as exc:  # a broken config.json must not hide the checkpoint's own copy
            log.warning("ignoring %s (%s); using the dataset path stored in the checkpoint", config_file, exc)
    if not data.path:
        raise EvaluationError(f"the run {run_dir} does not record a dataset folder (data.path is empty)")
    try:
        return detect(data.path, layout=data.layout, level=data.level, check_images=False)
    except DatasetError as exc:
        raise EvaluationError(
            f"cannot open the dataset of run {run_dir}: {exc}. If the dataset moved, set data.path "
            f"in {config_file} to its new folder."
        ) from exc


def open_run(run_dir: Path, device: str, on_progress: Progress | None = None
             ) -> tuple[FineGrainedNet, RunConfig, Path, DatasetIndex, torch.device]:
    """(encoder, config, checkpoint path, dataset index, device) of a run, for the tasks that embed its images."""
    torch_device = select_device(device)
    if on_progress:
        on_progress("loading the model", 0.0)
    net, config, checkpoint_path = load_encoder(Path(run_dir), device=torch_device)
    return net, config, checkpoint_path, open_dataset(Path(run_dir), config), torch_device


def _prepare(run_dir: Path, device: str, on_progress: Progress | None, train_end: float, test_end: float) -> _Prepared:
    run_dir = Path(run_dir)
    net, config, checkpoint_path, index, torch_device = open_run(run_dir, device, on_progress)
    epoch = _checkpoint_epoch(checkpoint_path)
    if not index.labelled():
        raise EvaluationError(
            f"the dataset at {index.root} has no class labels ({index.layout} layout); kNN and linear "
            "evaluation need labelled training and test images"
        )
    train_samples = training_samples(index)
    test_samples = [s for s in index.test_samples() if s.label >= 0]
    dtype = resolve_precision(config.precision, torch_device) if torch_device.type == "cuda" else None
    workers = config.data.num_workers

    def embed(stage: str, start: float, end: float) -> Callable[[list[Sample]], Embeddings]:
        return lambda samples: compute_embeddings(
            net, samples, config.data.eval_size, crop_bottom=index.crop_bottom, device=torch_device,
            dtype=dtype, num_workers=workers, on_progress=_scaled_progress(on_progress, stage, start, end),
        )

    train = cached_embeddings(run_dir, checkpoint_path, "train", embed("embedding training images", 0.02, train_end), train_samples)
    if len(train.labels) == 0:
        raise EvaluationError(f"none of the {len(train_samples)} training images of {index.root} could be read")
    test = cached_embeddings(run_dir, checkpoint_path, "test", embed("embedding test images", train_end, test_end), test_samples)
    if not test_samples:
        log.warning("the dataset at %s has no test split; test scores are left empty", index.root)
    return _Prepared(run_dir, net, config, checkpoint_path, epoch, torch_device, index, train_samples, test_samples, train, test)


def training_samples(index: DatasetIndex) -> list[Sample]:
    """The images embeddings are cached for: labelled train + val, or every image when unlabeled.

    The predictor's neighbour bank and the evaluation use this same list, so they share one cache.
    """
    if not index.labelled():
        return index.train_samples()
    return [s for s in index.train_samples() if s.label >= 0]


def _checkpoint_epoch(path: Path) -> int | None:
    try:
        epoch = load_checkpoint(path, kind="pretrain").get("epoch")
    except Exception:  # the encoder just loaded from it; the epoch is decoration
        return None
    return int(epoch) if isinstance(epoch, (int, float)) else None


def checkpoint_fingerprint(path: Path) -> str:
    """Changes whenever the checkpoint file is rewritten, so a stale classifier is noticed."""
    stat = Path(path).stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _fit_and_save(prepared: _Prepared, on_progress: Progress | None, start: float, end: float) -> tuple[LinearProbe, ClassifierReport, torch.Tensor]:
    """Linear probe on the train embeddings, scored on test, saved as classifier.pt."""
    names = list(prepared.index.classes)
    # Full-batch L-BFGS is a few big matrix products per step: a GPU makes it near-instant.
    probe_device = prepared.device if prepared.device.type == "cuda" else torch.device("cpu")
    probe = fit_linear(
        prepared.train.vectors, prepared.train.labels, len(names), device=probe_device,
        on_progress=_scaled_progress(on_progress, "fitting the linear classifier", start, end),
    )
    test_logits = probe.logits(prepared.test.vectors) if len(prepared.test.labels) else torch.zeros(0, len(names))
    accuracy = topk_accuracy(test_logits, prepared.test.labels, (1, 5))
    predicted = test_logits.argmax(dim=1) if len(test_logits) else torch.zeros(0, dtype=torch.long)
    confusion, per_class = confusion_and_per_class(predicted, prepared.test.labels, names)
    mistakes = misclassified_test_images(prepared, test_logits, predicted, names)
    path = prepared.run_dir / runs.CLASSIFIER_FILE
    payload = {
        "weight": probe.weight.contiguous(),
        "bias": probe.bias.contiguous(),
        "class_names": names,
        "num_classes": len(names),
        "embed_dim": int(probe.weight.shape[1]),
        "source_checkpoint": classifier_source(prepared),
        "source_fingerprint": checkpoint_fingerprint(prepared.checkpoint_path),
        "weight_decay": float(probe.weight_decay),
        "top1": float(accuracy[1]),
        "top5": float(accuracy[5]),
    }
    runs.require_run_folder(prepared.run_dir)
    save_checkpoint(path, payload, prepared.config, kind=CLASSIFIER_KIND)
    report = ClassifierReport(
        top1=accuracy[1], top5=accuracy[5], per_class=per_class, confusion=confusion, class_names=names,
        weight_decay=probe.weight_decay, num_train=len(prepared.train.labels), num_test=len(prepared.test.labels),
        path=str(path), checkpoint=classifier_source(prepared), epoch=prepared.epoch, fitted_at=time.time(),
        mistakes=mistakes,
    )
    save_classifier_report(prepared.run_dir, report)  # at once: what follows may fail; saved again with more
    return probe, report, test_logits


def misclassified_test_images(prepared: _Prepared, test_logits: torch.Tensor, predicted: torch.Tensor,
                              names: Sequence[str]) -> list[Mistake]:
    """Every test image the classifier put in another class, with both classes' probabilities:
    what a confusion-matrix cell counts, as images to look at."""
    if not len(test_logits):
        return []
    probabilities = test_logits.float().softmax(dim=1)
    truth = prepared.test.labels.long()
    mistakes = []
    for row in torch.nonzero(predicted != truth).flatten().tolist():
        sample = prepared.test_samples[int(prepared.test.sample_indices[row])]
        true, taken = int(truth[row]), int(predicted[row])
        # Rounded as the table stores them, so a report read back equals the one just fitted.
        mistakes.append(Mistake(os.path.abspath(sample.path), names[true], names[taken],
                                round(float(probabilities[row, taken]), 4), round(float(probabilities[row, true]), 4)))
    return mistakes


def confusion_and_per_class(predicted: torch.Tensor, truth: torch.Tensor, names: Sequence[str]) -> tuple[np.ndarray, dict[str, float]]:
    """(C x C int64 confusion, rows true / columns predicted; per-class accuracy, NaN without examples)."""
    count = len(names)
    confusion = np.zeros((count, count), dtype=np.int64)
    np.add.at(confusion, (truth.long().numpy(), predicted.long().numpy()), 1)
    totals = confusion.sum(axis=1)
    per_class = {
        name: float(confusion[i, i] / totals[i]) if totals[i] else float("nan") for i, name in enumerate(names)
    }
    return confusion, per_class


# -- public entry points ---------------------------------------------------------


def fit_classifier(run_dir: Path, on_progress: Progress | None = None, device: str = "auto",
                   labels_per_class: Sequence[int] = (), draws: int = DEFAULT_DRAWS) -> ClassifierReport:
    """Fit the linear classifier of a run on its labelled training images and save classifier.pt.

    With `labels_per_class`, also score classifiers fitted on that many labelled images per
    class (`draws` random draws each), so a user sees what fewer labels would give.
    """
    prepared = _prepare(Path(run_dir), device, on_progress, train_end=0.6, test_end=0.75)
    _, report, _ = _fit_and_save(prepared, on_progress, 0.75, 0.9 if labels_per_class else 1.0)
    if labels_per_class:
        report.few_labels = _few_label_scores(prepared, labels_per_class, draws, on_progress, 0.9, 1.0)
    save_classifier_report(prepared.run_dir, report)
    if on_progress:
        on_progress("done", 1.0)
    log.info("classifier of %s: top-1 %.3f, top-5 %.3f on %d test images", run_dir, report.top1, report.top5, report.num_test)
    return report


def evaluate_run(
    run_dir: Path,
    on_progress: Progress | None = None,
    device: str = "auto",
    localization_limit: int | None = None,
    labels_per_class: Sequence[int] = (),
    draws: int = DEFAULT_DRAWS,
    faithfulness_images: int = 0,
) -> EvalReport:
    """Full evaluation of a run's final checkpoint; writes eval.json, confusion.csv and classifier.pt.

    `localization_limit` caps the test images scored for heatmaps (evenly spread), for
    a quick look at a large dataset. `labels_per_class` adds scores from that many
    labelled images per class (`draws` random draws each), e.g. (1, 5, 10).
    `faithfulness_images` test images get the deletion check of the heatmaps
    (`fgdesk.evaluate.faithfulness`), which needs no boxes.
    """
    started = time.monotonic()
    run_dir = Path(run_dir)
    prepared = _prepare(run_dir, device, on_progress, train_end=0.4, test_end=0.55)
    names = list(prepared.index.classes)
    if on_progress:
        on_progress("kNN", 0.55)
    if len(prepared.test.labels):
        scores = knn_scores(prepared.train.vectors, prepared.train.labels, prepared.test.vectors, len(names), KNN_K, KNN_TEMPERATURE)
        knn = topk_accuracy(scores, prepared.test.labels, (1, 5))
    else:
        knn = {1: float("nan"), 5: float("nan")}
    probe, classifier, _ = _fit_and_save(prepared, on_progress, 0.57, 0.65)
    few = _few_label_scores(prepared, labels_per_class, draws, on_progress, 0.65, 0.7) if labels_per_class else []
    maps_end = 0.9 if faithfulness_images else 0.99
    localization, note = score_localization(
        prepared.net, prepared.test_samples, prepared.index.crop_bottom, prepared.config.data.eval_size,
        probe, prepared.device, localization_limit, _scaled_progress(on_progress, "scoring heatmaps", 0.7, maps_end),
    )
    faithfulness = None
    if faithfulness_images and probe is not None:
        faithfulness = score_faithfulness(
            prepared.net, prepared.test_samples, prepared.index.crop_bottom, prepared.config.data.eval_size,
            probe.weight, probe.bias, prepared.device, faithfulness_images,
            on_progress=_scaled_progress(on_progress, "checking the maps against the classifier", maps_end, 0.99),
        )
    report = EvalReport(
        run_dir=str(run_dir),
        checkpoint=classifier_source(prepared),
        epoch=prepared.epoch,
        dataset=str(prepared.index.root),
        layout=prepared.index.layout,
        class_names=names,
        num_train=len(prepared.train.labels),
        num_test=len(prepared.test.labels),
        num_unreadable=len(prepared.train.bad) + len(prepared.test.bad),
        knn_top1=knn[1],
        knn_top5=knn[5],
        linear_top1=classifier.top1,
        linear_top5=classifier.top5,
        weight_decay=probe.weight_decay,
        val_accuracy=dict(probe.val_accuracy),
        per_class=classifier.per_class,
        confusion=classifier.confusion,
        localization=localization,
        localization_note=note,
        elapsed_s=time.monotonic() - started,
        few_labels=few,
        faithfulness=faithfulness,
    )
    classifier.few_labels = few
    save_classifier_report(run_dir, classifier)
    atomic_write_text(run_dir / runs.EVAL_FILE, json.dumps(report.as_dict(), indent=2) + "\n")
    if on_progress:
        on_progress("done", 1.0)
    return report


def _few_label_scores(prepared: _Prepared, labels_per_class: Sequence[int], draws: int, on_progress: Progress | None,
                      start: float, end: float) -> list[FewLabelScore]:
    return few_label_scores(
        prepared.train.vectors, prepared.train.labels, prepared.test.vectors, prepared.test.labels,
        len(prepared.index.classes), labels_per_class, draws, knn_k=KNN_K, knn_temperature=KNN_TEMPERATURE,
        on_progress=_scaled_progress(on_progress, "scoring with fewer labels", start, end),
    )


def classifier_source(prepared: _Prepared) -> str:
    try:
        return prepared.checkpoint_path.relative_to(prepared.run_dir).as_posix()
    except ValueError:
        return str(prepared.checkpoint_path)


# -- localization --------------------------------------------------------------------


def _decode_for_maps(sample: Sample, crop_bottom: int, eval_size: int) -> tuple[torch.Tensor, tuple[int, int]] | None:
    try:
        image = load_rgb(sample.path, crop_bottom=crop_bottom)
    except ImageDecodeError as exc:
        log.warning("localization: skipping %s (%s)", sample.path, exc.reason)
        return None
    return network_input(image, eval_size), image.size


def score_localization(
    net: FineGrainedNet,
    samples: Sequence[Sample],
    crop_bottom: int,
    eval_size: int,
    probe: LinearProbe | None,
    device: torch.device | str = "cpu",
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, LocalizationSummary], str]:
    """Pointing game, energy and IoU of every map kind on the samples that have boxes.

    Maps are scored on the network-input frame (`fgdesk.evaluate.heatmaps`), with each
    box mapped into it and clipped to it; an image whose box lies wholly outside the part
    the network sees is left out. Returns ({map kind: summary}, note).
    """
    device = torch.device(device)
    boxed = evenly_spread([s for s in samples if s.box is not None], limit)
    if not boxed:
        return {}, "no test images with boxes (demo set: boxes.csv; CUB: bounding_boxes.txt)"
    stage_keys = [f"stage{s}" for s in net.stages]
    keys = ["fused", *stage_keys, *(["evidence"] if probe is not None else []), "centre"]
    tallies = {key: LocalizationTally() for key in keys}
    frames: list[tuple[tuple[int, int], tuple[float, float, float, float]]] = []
    weight = probe.weight if probe is not None else None
    bias = probe.bias if probe is not None else None
    was_training = net.training
    net.eval()
    done = out_of_view = 0
    threads = max(1, min(4, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for chunk_start in range(0, len(boxed), DECODE_CHUNK):
            chunk = boxed[chunk_start:chunk_start + DECODE_CHUNK]
            decoded = list(pool.map(lambda s: _decode_for_maps(s, crop_bottom, eval_size), chunk))
            items = [(sample, item) for sample, item in zip(chunk, decoded) if item is not None]
            for batch in bucketed(items, key=lambda pair: tuple(pair[1][0].shape), batch_size=LOCALIZATION_BATCH):
                images = torch.stack([item[0] for _, item in batch]).to(device)
                result = forward_with_maps(net, images, weight, bias)
                size = result.input_size
                maps = {"fused": fused_attention(result.attention, size, result.scale_weights)}
                for key, attention in zip(stage_keys, result.attention):
                    maps[key] = upsample(relative_attention(attention), size)
                if result.evidence is not None:
                    maps["evidence"] = fused_evidence(result.evidence, size)
                centre = centre_gaussian(size)
                maps_cpu = {key: value.cpu().numpy() for key, value in maps.items()}
                for row, (sample, (_, image_size)) in enumerate(batch):
                    box = box_in_network_frame(sample.box, image_size, eval_size)  # type: ignore[arg-type]
                    if box is None:
                        out_of_view += 1
                        continue
                    for key, stack in maps_cpu.items():
                        tallies[key].add_map(stack[row], box)
                    tallies["centre"].add_map(centre, box)
                    frames.append((size, box))
            done += len(chunk)
            if on_progress:
                on_progress(done, len(boxed))
    net.train(was_training)
    summaries = {key: tally.summary() for key, tally in tallies.items()}
    summaries["chance"] = chance_summary(frames)
    unread = len(boxed) - len(frames) - out_of_view
    notes = ([f"{unread} image(s) with boxes could not be read"] if unread else []) + (
        [f"{out_of_view} image(s) whose box lies outside the centre crop the network sees"] if out_of_view else [])
    return summaries, "; ".join(notes)


__all__ = [
    "ClassifierReport",
    "EvalReport",
    "EvaluationError",
    "evaluate_run",
    "fit_classifier",
    "open_dataset",
    "training_samples",
    "score_localization",
]
