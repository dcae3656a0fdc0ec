"""Runs side by side: scores, per-epoch curves and the settings that differ (no torch needed)."""
from __future__ import annotations

import json

import pytest

from fgdesk.cli import main
from fgdesk.config import RunConfig
from fgdesk.fileio import append_jsonl
from fgdesk.train import runs
from fgdesk.train.compare import best_of, compare_runs, read_curves


def _fake_run(root, name, *, attention="multiscale", seed=0, knn=(0.2, 0.3), classifier=None, resumed_twice=False):
    """A run folder as the engine leaves it: config, state and epoch records."""
    config = RunConfig()
    config.name = name
    config.data.path = "/data/birds"
    config.model.attention = attention
    config.seed = seed
    run_dir = runs.new_run_dir(name=name, root=root)
    config.save(run_dir / runs.CONFIG_FILE)
    for epoch, score in enumerate(knn):
        append_jsonl(run_dir / runs.METRICS_FILE, {"type": "step", "global_step": epoch * 10 + 5, "loss": 9.0})
        append_jsonl(run_dir / runs.METRICS_FILE, {"type": "epoch", "epoch": epoch, "epochs": len(knn),
                                                   "mean_loss": 5.0 - epoch, "knn_top1": score, "elapsed_s": 60.0 * (epoch + 1)})
    if resumed_twice:  # a resume wrote the last epoch again, with a later score
        append_jsonl(run_dir / runs.METRICS_FILE, {"type": "epoch", "epoch": len(knn) - 1, "epochs": len(knn),
                                                   "mean_loss": None, "knn_top1": 0.9, "elapsed_s": 999.0})
    runs.write_state(run_dir, status="finished", epochs=len(knn), epochs_done=len(knn), best_knn_top1=max(knn),
                     elapsed_s=60.0 * len(knn))
    if classifier is not None:
        (run_dir / runs.CLASSIFIER_FILE).write_bytes(b"a classifier")
        (run_dir / runs.CLASSIFIER_REPORT_FILE).write_text(json.dumps({
            "top1": classifier, "top5": 0.9, "class_names": [], "classifier_fingerprint": runs.classifier_fingerprint(run_dir)}))
    return run_dir


def test_comparison_lists_scores_curves_and_only_the_settings_that_differ(tmp_path):
    on = _fake_run(tmp_path, "on", knn=(0.2, 0.35), classifier=0.41)
    off = _fake_run(tmp_path, "off", attention="none", seed=1, knn=(0.25, 0.3), resumed_twice=True)
    comparison = compare_runs([on, off])
    assert comparison.differing == ["model.attention", "seed"]  # not the run's name, not what is equal
    first, second = comparison.runs
    assert (first.name, first.classifier_top1, first.best_knn_top1) == (on.name, 0.41, 0.35)
    assert second.classifier_top1 is None and first.minutes == pytest.approx(2.0)
    assert first.curves.epochs == [1, 2] and first.curves.loss == [5.0, 4.0] and first.curves.minutes == [1.0, 2.0]
    assert second.curves.knn == [0.25, 0.9] and second.curves.minutes == [1.0, 999.0 / 60]  # the last record of an epoch wins

    text = comparison.as_text()
    assert "model.attention" in text and "multiscale" in text and "none" in text
    assert "41.0%" in text and "data.path" not in text
    saved = comparison.as_dict()
    assert saved["differing_settings"] == ["model.attention", "seed"]
    assert saved["runs"][1]["settings"] == {"model.attention": "none", "seed": 1}
    json.dumps(saved)


def test_identical_settings_say_so_and_a_folder_that_is_no_run_is_refused(tmp_path):
    a, b = _fake_run(tmp_path, "a"), _fake_run(tmp_path, "b")
    comparison = compare_runs([a, b])
    assert comparison.differing == [] and "the same" in comparison.as_text()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a fgdesk run folder"):
        compare_runs([a, tmp_path / "empty"])


def test_best_of_needs_two_scores_and_no_tie():
    assert best_of([0.2, None, 0.5]) == 2
    assert best_of([0.5, 0.5]) is None and best_of([0.3, None]) is None


def test_a_damaged_metrics_file_gives_the_readable_epochs(tmp_path):
    run = _fake_run(tmp_path, "r", knn=(0.1, 0.2, 0.3))
    with open(run / runs.METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write('{"type": "epoch", "epo')  # torn by a crash
    assert read_curves(run).epochs == [1, 2, 3]


def test_fgdesk_compare_takes_folders_or_run_names(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FGDESK_HOME", str(tmp_path / "home"))
    from fgdesk import paths

    root = paths.runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    one = _fake_run(root, "one", classifier=0.5)
    two = _fake_run(tmp_path, "two", attention="none")
    assert main(["compare", one.name, str(two), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [run["name"] for run in shown["runs"]] == [one.name, two.name]
    assert main(["compare", one.name, str(two)]) == 0
    assert "Classifier top-1" in capsys.readouterr().out
    assert main(["compare", one.name, "no-such-run"]) != 0
    assert "neither a run folder" in capsys.readouterr().err


def test_saved_scores_and_comparisons_are_read_without_torch():
    """The app reads them on worker threads; importing torch there, beside another import of
    it, can fail, and it costs seconds the first time."""
    import subprocess
    import sys

    code = ("import sys, fgdesk.evaluate.scores, fgdesk.train.compare, fgdesk.train.runs; "
            "print(sorted(m for m in ('torch', 'torchvision', 'PySide6') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_damaged_scores_in_a_run_folder_show_as_unknown(tmp_path, capsys):
    """A state.json edited by hand or cut short: no traceback, no 'nan%', never marked best."""
    good = _fake_run(tmp_path, "good", knn=(0.2, 0.4))
    damaged = _fake_run(tmp_path, "damaged", knn=(0.2, 0.5))
    state = json.loads((damaged / runs.STATE_FILE).read_text())
    state.update(best_knn_top1="0.9", elapsed_s=float("nan"))
    (damaged / runs.STATE_FILE).write_text(json.dumps(state))
    comparison = compare_runs([good, damaged])
    assert comparison.runs[1].best_knn_top1 is None and comparison.runs[1].minutes == pytest.approx(2.0)  # from the curves
    rows = {label: (texts, numbers) for label, texts, numbers in comparison.score_rows()}
    texts, numbers = rows["Best kNN (held-out training images)"]
    assert texts == ["40.0%", "—"] and best_of(numbers) is None
    assert best_of([float("nan"), 0.4, 0.3]) == 1
    json.loads(json.dumps(comparison.as_dict(), allow_nan=False))
    assert main(["compare", str(good), str(damaged)]) == 0 and "nan" not in capsys.readouterr().out
