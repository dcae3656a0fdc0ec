"""evaluate_run and fit_classifier on an untrained run of the demo set (no training engine)."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from fgdesk.data.synthetic import make_demo_dataset
from fgdesk.evaluate.report import ClassifierReport, EvalReport, EvaluationError, evaluate_run, fit_classifier
from fgdesk.train import runs
from fgdesk.train.checkpoint import load_checkpoint
from helpers_runs import NUM_CLASSES, make_demo_data, make_run, one_thread

_threads = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evaluate")
    run_dir = make_run(root / "runs", make_demo_data(root / "data"), lively_attention=True)
    stages = []
    report = evaluate_run(run_dir, on_progress=lambda stage, fraction: stages.append((stage, fraction)), device="cpu")
    torch.set_num_threads(previous)
    return run_dir, report, stages


def test_evaluate_run_writes_its_report_files(evaluated):
    run_dir, report, _ = evaluated
    assert isinstance(report, EvalReport)
    saved = json.loads((run_dir / runs.EVAL_FILE).read_text())
    assert saved["num_classes"] == NUM_CLASSES and saved["num_test"] == report.num_test == 12
    assert set(saved["knn"]) >= {"top1", "top5"} and set(saved["linear"]) >= {"top1", "top5", "weight_decay"}
    with open(run_dir / "confusion.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == report.class_names and len(rows) == NUM_CLASSES + 1
    assert sum(int(v) for row in rows[1:] for v in row[1:]) == report.num_test


def test_report_fields_hold_scores_in_range(evaluated):
    _, report, _ = evaluated
    for value in (report.knn_top1, report.knn_top5, report.linear_top1, report.linear_top5):
        assert 0.0 <= value <= 1.0
    assert report.linear_top5 >= report.linear_top1 and report.knn_top5 >= report.knn_top1
    assert report.confusion.shape == (NUM_CLASSES, NUM_CLASSES) and report.confusion.dtype == np.int64
    assert set(report.per_class) == set(report.class_names)
    assert report.weight_decay in report.val_accuracy


def test_localization_covers_every_map_kind_and_the_baselines(evaluated):
    _, report, _ = evaluated
    assert list(report.localization) == ["fused", "stage2", "stage3", "stage4", "evidence", "centre", "chance"]
    for summary in report.localization.values():
        assert summary.images == 12
        assert 0.0 <= summary.pointing <= 1.0 and 0.0 <= summary.energy <= 1.0
    chance = report.localization["chance"]
    assert 0.0 < chance.pointing < 0.2  # the demo marking is a small part of the image
    text = report.as_text()
    for words in ("kNN", "linear probe", "fused attention", "attention stage 3", "class evidence", "centre Gaussian", "chance"):
        assert words in text
    json.dumps(report.as_dict())  # no NaN or numpy values left


def test_progress_goes_forward_and_finishes(evaluated):
    _, _, stages = evaluated
    fractions = [fraction for _, fraction in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_classifier_checkpoint_holds_the_linear_head(evaluated):
    run_dir, report, _ = evaluated
    document = load_checkpoint(run_dir / runs.CLASSIFIER_FILE, kind="classifier")
    assert document["weight"].shape == (NUM_CLASSES, document["embed_dim"])
    assert document["bias"].shape == (NUM_CLASSES,)
    assert document["class_names"] == report.class_names and document["num_classes"] == NUM_CLASSES
    assert document["source_checkpoint"] == "checkpoints/last.pt"


def test_fit_classifier_reports_test_scores_for_the_app(evaluated):
    run_dir, report, _ = evaluated
    calls = []
    result = fit_classifier(run_dir, on_progress=lambda stage, fraction: calls.append(fraction), device="cpu")
    assert isinstance(result, ClassifierReport)
    assert result.top1 == pytest.approx(report.linear_top1) and result.class_names == report.class_names
    assert result.confusion.shape == (NUM_CLASSES, NUM_CLASSES) and int(result.confusion.sum()) == 12
    assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in result.per_class.values())
    assert calls and calls[-1] == 1.0


def test_a_classifier_fit_is_saved_and_read_back_without_a_model(evaluated):
    from fgdesk.evaluate.report import load_classifier_report

    run_dir, _, _ = evaluated
    fitted = fit_classifier(run_dir, device="cpu", labels_per_class=(1, 2), draws=2)
    saved = load_classifier_report(run_dir)
    assert saved is not None and saved.top1 == pytest.approx(fitted.top1) and saved.top5 == pytest.approx(fitted.top5)
    assert saved.class_names == fitted.class_names and np.array_equal(saved.confusion, fitted.confusion)
    assert saved.num_test == fitted.num_test == 12 and saved.checkpoint == "checkpoints/last.pt" and saved.epoch == 0
    assert [score.as_dict() for score in saved.few_labels] == [score.as_dict() for score in fitted.few_labels]
    assert saved.fitted_at > 0
    assert runs.run_info(run_dir).classifier_top1 == pytest.approx(fitted.top1)  # the runs list reads it, no torch

    # A confusion.csv that no longer fits the report's classes: no report, rather than a wrong matrix.
    confusion = (run_dir / "confusion.csv").read_text()
    try:
        (run_dir / "confusion.csv").write_text("true \\ predicted,x\nx,1\n")
        assert load_classifier_report(run_dir) is None
    finally:
        (run_dir / "confusion.csv").write_text(confusion)
    assert load_classifier_report(run_dir.parent / "no-such-run") is None


def test_every_misclassified_test_image_is_saved_with_the_cell_it_counts_in(evaluated):
    """A confusion cell opens its images: test_mistakes.csv lists each misclassified test image
    with its true and predicted class, and matches confusion.csv cell for cell."""
    from fgdesk.config import RunConfig
    from fgdesk.data.layouts import detect
    from fgdesk.evaluate.report import load_classifier_report

    run_dir, report, _ = evaluated
    fitted = fit_classifier(run_dir, device="cpu")
    assert fitted.top1 < 1.0  # an untrained network errs on the demo set: there are cells to open
    saved = load_classifier_report(run_dir)
    assert saved is not None and saved.mistakes == fitted.mistakes
    off_diagonal = int(fitted.confusion.sum() - np.trace(fitted.confusion))
    assert len(saved.mistakes) == off_diagonal > 0
    index = detect(RunConfig.load(run_dir / runs.CONFIG_FILE).data.path, check_images=False)
    truth = {str(sample.path): (index.classes[sample.label], sample.split) for sample in index.samples}
    for mistake in saved.mistakes:
        assert truth[mistake.path] == (mistake.true_class, "test") and mistake.predicted != mistake.true_class
        assert 0.0 <= mistake.true_probability <= mistake.predicted_probability <= 1.0

    top = saved.most_confused(3)
    assert top and top[0].count == max(
        int(fitted.confusion[i, j]) for i in range(NUM_CLASSES) for j in range(NUM_CLASSES) if i != j)
    assert [c.count for c in top] == sorted((c.count for c in top), reverse=True)
    cell = saved.mistakes_between(top[0].true_class, top[0].predicted)
    assert len(cell) == top[0].count
    assert [m.predicted_probability for m in cell] == sorted((m.predicted_probability for m in cell), reverse=True)
    assert f"taken for {top[0].predicted}: {top[0].count} of {top[0].of}" in report.as_text()

    # A table that no longer matches the matrix is left out; the scores still show.
    table = run_dir / runs.MISTAKES_FILE
    rows = table.read_text()
    try:
        table.write_text("\n".join(rows.splitlines()[:-1]) + "\n")
        stale = load_classifier_report(run_dir)
        assert stale is not None and stale.mistakes is None and stale.mistakes_between(top[0].true_class, top[0].predicted) == []
    finally:
        table.write_text(rows)
    assert load_classifier_report(run_dir).mistakes == saved.mistakes


def test_a_report_of_an_earlier_classifier_is_not_shown(evaluated, tmp_path):
    """A fit that fails after writing classifier.pt must not leave the earlier fit's report in
    view: the report names the classifier.pt it describes by a hash of its bytes."""
    import shutil

    from fgdesk.evaluate.report import load_classifier_report
    from fgdesk.train.checkpoint import checkpoint_config, save_checkpoint

    run_dir, _, _ = evaluated
    fit_classifier(run_dir, device="cpu")
    assert load_classifier_report(run_dir) is not None and runs.run_info(run_dir).classifier_top1 is not None
    # Copying the run folder (plain copies: new modification times) keeps the report valid.
    copy = tmp_path / "copied-run"
    shutil.copytree(run_dir, copy, copy_function=shutil.copy)
    assert load_classifier_report(copy) is not None

    # Another fit's classifier.pt, as one that failed after writing it would leave.
    document = load_checkpoint(copy / runs.CLASSIFIER_FILE, kind="classifier")
    document["bias"] = document["bias"] + 1.0
    save_checkpoint(copy / runs.CLASSIFIER_FILE, document, checkpoint_config(document), kind="classifier")
    assert load_classifier_report(copy) is None
    assert runs.run_info(copy).classifier_top1 is None


def test_an_unlabeled_dataset_cannot_be_evaluated(tmp_path):
    data = tmp_path / "photos"
    make_demo_dataset(tmp_path / "demo", num_classes=2, per_class=2, size=48)
    data.mkdir()
    for index, image in enumerate(sorted((tmp_path / "demo").rglob("*.png"))):
        (data / f"{index}.png").write_bytes(image.read_bytes())
    run_dir = make_run(tmp_path / "runs", data)
    with pytest.raises(EvaluationError, match="no class labels"):
        evaluate_run(run_dir, device="cpu")


def test_a_missing_dataset_is_reported_with_the_fix(tmp_path):
    data = make_demo_data(tmp_path / "data")
    run_dir = make_run(tmp_path / "runs", data)
    for path in sorted(data.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    data.rmdir()
    with pytest.raises(EvaluationError, match="data.path"):
        fit_classifier(run_dir, device="cpu")
