"""The training panel: one-click runs, live curves, pause/stop, validation, failures, closing."""
from __future__ import annotations

import gc
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6.QtCore import QElapsedTimer, Qt, QThreadPool, QTimer

from guihelpers import ready_to_train

pytestmark = pytest.mark.slow


def finished(view) -> bool:
    # The thread stops running a moment before its finished signal updates the buttons.
    return view.last_result is not None and not view.is_training() and view.train_button.isEnabled()


def test_a_short_run_from_the_button_plots_loss_and_finishes(window, qtbot, demo_set):
    view = window.training_view
    ready_to_train(qtbot, window, demo_set, **{"schedule.epochs": 2})
    started = []
    view.run_started.connect(started.append)
    qtbot.mouseClick(view.train_button, Qt.MouseButton.LeftButton)
    assert view.is_training()
    assert not view.train_button.isEnabled() and view.stop_button.isEnabled()
    qtbot.waitUntil(lambda: finished(view), timeout=120_000)
    result = view.last_result
    assert type(result).__name__ == "FinishedEvent" and result.status == "finished"
    assert started and Path(started[0]) == Path(result.run_dir)
    assert window.recent_runs.items()[0] == result.run_dir  # Run > Recent runs
    xs, ys = view.loss_curve.getData()
    assert xs is not None and len(xs) >= 2  # 2 epochs x 2 steps of 8 images
    assert len(view.loss_ema_curve.getData()[0]) == len(xs)
    assert len(view.lr_curve.getData()[0]) == len(xs)
    assert len(view.knn_curve.getData()[0]) == 2  # one kNN point per epoch
    assert view.metrics["epoch"].text() == "2 / 2"
    assert view.total_progress.value() == view.total_progress.maximum()
    assert view.redraw_count >= 1
    # The run shows up in the past runs table, finished, and can be opened in Inspect.
    qtbot.waitUntil(lambda: any(str(r.path) == result.run_dir and r.status == "finished" for r in view.runs()),
                    timeout=10_000)
    assert view.select_run(result.run_dir)
    assert view.runs_table.item(view.runs_table.currentRow(), 1).text() == "finished"
    assert view.inspect_button.isEnabled() and view.classifier_button.isEnabled()
    view.inspect_button.click()
    assert window.current_page() == "inspect"
    qtbot.waitUntil(lambda: window.inspect_view.current_run() == result.run_dir, timeout=10_000)


def test_the_event_loop_stays_responsive_during_training(window, qtbot, demo_set):
    """A 20 ms QTimer keeps firing while a run goes on, and no pass of the event loop does long work.

    Two measures, because a shared CI machine can stall any process for a moment:
    - the GUI thread's own CPU time between two ticks (work we put on it: redraws, slots) stays
      under 150 ms, whatever else the machine does (the heaviest pass, a run's first frame,
      measured 30-70 ms here);
    - by the wall clock, at most three ticks are late by more than 150 ms and none by two
      seconds. A slot that blocks (waiting on the worker, reading a checkpoint) does so at every
      step, epoch or checkpoint, i.e. more often than that in this run (a 300 ms sleep at each
      checkpoint made 4 late ticks).
    """
    view = window.training_view
    ready_to_train(qtbot, window, demo_set, **{"schedule.epochs": 3})
    interval_ms = 20
    delays: list[int] = []
    cpu_ms: list[float] = []
    clock = QElapsedTimer()
    cpu_clock = [0.0]

    def tick():
        delays.append(clock.restart() - interval_ms)
        now = time.thread_time()
        cpu_ms.append(1000.0 * (now - cpu_clock[0]))
        cpu_clock[0] = now

    ticker = QTimer()
    ticker.setTimerType(Qt.TimerType.PreciseTimer)
    ticker.setInterval(interval_ms)
    ticker.timeout.connect(tick)
    view.start_training()
    # The worker imports torch and builds the model before the first step; measure from there on,
    # through steps, kNN monitor passes, checkpoints and the end of the run.
    qtbot.waitUntil(lambda: view._latest_step is not None, timeout=120_000)
    clock.start()
    cpu_clock[0] = time.thread_time()
    ticker.start()
    qtbot.waitUntil(lambda: finished(view), timeout=120_000)
    ticker.stop()
    assert view.last_result.status == "finished"
    assert len(delays) >= 10, "the run was too short to measure"
    assert max(cpu_ms) < 150, f"the GUI thread worked {max(cpu_ms):.0f} ms without returning to the event loop"
    late = sorted(d for d in delays if d > 150)
    assert len(late) <= 3 and max(delays) < 2000, f"ticks late by {late} ms"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12 on")
def test_live_curves_keep_the_reference_count_of_none(window, qtbot):
    """Redrawing the curves must not drop references to None.

    PySide6 6.12.0 loses a few on many calls (100-400 per redraw of these plots); on Python 3.11, where
    None is an ordinary object, the app then aborts with "deallocating None" within a minute
    of a run. This test fails with that release.
    """
    view = window.training_view
    window.show_page("train")
    view.plot_stack.setCurrentIndex(1)
    qtbot.wait(50)

    def events(cycle):
        for step in range(3 * cycle + 1, 3 * cycle + 4):
            yield SimpleNamespace(global_step=step, loss=5.0 - 0.01 * step, lr=0.03, images_per_s=20.0 + step % 3,
                                  epoch=step // 20, epochs=10, eta_s=60.0, steps_per_epoch=20,
                                  step_in_epoch=step % 20, total_steps=200)

    def one_cycle(cycle):
        steps = list(events(cycle))
        view._pending_steps.extend(steps)
        view._latest_step = steps[-1]
        if cycle % 5 == 4:
            view._pending_epochs.append(SimpleNamespace(epoch=cycle // 5, knn_top1=0.1 * (cycle % 7), fraction=1.0))
        view.redraw()
        qtbot.wait(5)  # paint

    for cycle in range(5):  # first paints create caches
        one_cycle(cycle)
    # Start-up work in the background (loading torch) makes new references to None; let it finish.
    qtbot.waitUntil(lambda: bool(window.environment), timeout=60_000)
    QThreadPool.globalInstance().waitForDone(60_000)
    gc.collect()
    before = sys.getrefcount(None)
    for cycle in range(5, 35):
        one_cycle(cycle)
    QThreadPool.globalInstance().waitForDone(60_000)
    gc.collect()
    assert sys.getrefcount(None) > before - 200, f"None lost {before - sys.getrefcount(None)} references"


def test_pause_resume_and_stop(window, qtbot, demo_set):
    view = window.training_view
    ready_to_train(qtbot, window, demo_set, **{"schedule.epochs": 200, "schedule.eval_every": 0})
    steps, emitted = [], []
    view.worker_steps = steps
    view.start_training()
    # What the engine has done, recorded on its own thread: a starved GUI thread sees steps late.
    view.worker.step.connect(lambda event: emitted.append(event.global_step), Qt.ConnectionType.DirectConnection)
    view.worker.step.connect(lambda event: steps.append(event.global_step))
    qtbot.waitUntil(lambda: len(steps) >= 1, timeout=120_000)
    seen_at_click = emitted[-1]
    qtbot.mouseClick(view.pause_button, Qt.MouseButton.LeftButton)
    assert view.is_paused() and view.pause_button.text() == "Resume"
    assert "Pausing" in view.state_label.text()
    # The engine finishes the step in flight (its event may still be queued), then says it waits.
    qtbot.waitUntil(lambda: view.paused_at_step is not None, timeout=60_000)
    paused_at = view.paused_at_step
    assert paused_at - seen_at_click <= 3, "the run went on for several steps after Pause"
    assert steps[-1] == paused_at  # every step is reported (log_every_steps 1), in order
    assert f"Paused at step {paused_at:,}" in view.state_label.text()
    qtbot.wait(1500)
    assert steps[-1] == paused_at, "steps continued while paused"
    qtbot.mouseClick(view.pause_button, Qt.MouseButton.LeftButton)
    assert not view.is_paused()
    qtbot.waitUntil(lambda: steps[-1] > paused_at, timeout=60_000)
    qtbot.mouseClick(view.stop_button, Qt.MouseButton.LeftButton)
    assert "Stopping" in view.state_label.text()
    qtbot.waitUntil(lambda: finished(view), timeout=120_000)
    result = view.last_result
    assert result.status == "stopped"
    assert (Path(result.run_dir) / "checkpoints" / "last.pt").is_file()
    assert view.train_button.isEnabled() and not view.stop_button.isEnabled()
    # The run list is refreshed in the background, first while the run still says "running";
    # wait for the refresh made after it stopped.
    qtbot.waitUntil(lambda: any(str(r.path) == result.run_dir and r.status == "stopped" for r in view.runs()), timeout=10_000)
    view.select_run(result.run_dir)
    assert view.resume_button.isEnabled()


def test_invalid_advanced_options_block_the_start_and_say_why(window, qtbot, demo_set):
    view = window.training_view
    ready_to_train(qtbot, window, demo_set)
    view.config_hook = None
    view.fields["model.stages"].widget.setText("2, 9")
    assert view.start_training() is False
    assert not view.is_training()
    assert view.advanced.is_expanded()
    assert view.form_error.isVisibleTo(view) and "model.stages" in view.form_error.text()
    assert view.fields["model.stages"].widget.property("invalid") is True
    view.fields["model.stages"].widget.setText("2, 3, 4")
    view.fields["data.image_size"].write(8)
    assert view.start_training() is False
    assert "data.image_size" in view.form_error.text()


def test_defaults_fill_the_form_for_the_dataset(window, qtbot, demo_set):
    view = window.training_view
    ready_to_train(qtbot, window, demo_set)
    assert view.fields["model.backbone"].read() in ("resnet18", "resnet34", "resnet50")
    config = view.config_from_form()
    assert Path(config.data.path) == demo_set
    assert config.schedule.epochs == 1  # the tiny hook applies on top of the form
    assert view.dataset_hint.text().startswith("18 training images")
    # The settings at a glance, short enough for their narrow column.
    stages = "\u2013".join(str(s) for s in (config.model.stages[0], config.model.stages[-1]))
    assert f"{config.model.attention} {stages}, consistency 1<" in view.glance.text()


def test_a_failing_run_shows_the_reason_and_the_log(window, qtbot, demo_set, tmp_path):
    view = window.training_view
    gone = tmp_path / "gone"
    ready_to_train(qtbot, window, demo_set)
    view.config_hook = lambda config: config.with_overrides({"data.path": str(gone)})
    view.start_training()
    qtbot.waitUntil(lambda: finished(view), timeout=120_000)
    assert type(view.last_result).__name__ in ("FailedEvent", "WorkerFailure")
    box = view.last_error_box
    assert box is not None and box.isVisible()
    assert "does not exist" in box.text()
    assert "train.log" in box.text() or ".log" in box.text()
    box.close()


def test_closing_during_training_asks_then_stops_cleanly(window, qtbot, demo_set):
    view = window.training_view
    ready_to_train(qtbot, window, demo_set, **{"schedule.epochs": 200, "schedule.eval_every": 0})
    asked = []
    window.confirm_stop_training = lambda: asked.append(True) or False
    view.start_training()
    qtbot.waitUntil(lambda: view._latest_step is not None, timeout=120_000)
    window.close()
    assert asked == [True] and window.isVisible() and view.is_training()  # "Cancel" keeps the run going
    window.confirm_stop_training = lambda: asked.append(True) or True
    window.close()
    assert len(asked) == 2
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=120_000)
    assert not view.is_training()
    assert view.last_result.status == "stopped"
    assert (Path(view.last_result.run_dir) / "checkpoints" / "last.pt").is_file()


def test_a_stopped_run_resumes_from_the_table(window, qtbot, demo_set):
    view = window.training_view
    ready_to_train(qtbot, window, demo_set, **{"schedule.epochs": 3, "schedule.eval_every": 0})
    view.start_training()
    # Stop at the first step on the engine's thread too: a starved GUI thread might otherwise see
    # that step only after the short run has finished, and a finished run is not resumable.
    worker = view.worker
    worker.step.connect(lambda _event: worker.stop(), Qt.ConnectionType.DirectConnection)
    qtbot.waitUntil(lambda: view._latest_step is not None, timeout=120_000)
    view.stop_training()
    qtbot.waitUntil(lambda: finished(view), timeout=120_000)
    run_dir = view.last_result.run_dir
    steps_before = view._latest_step.global_step
    qtbot.waitUntil(lambda: view.select_run(run_dir) and view.resume_button.isEnabled(), timeout=10_000)
    qtbot.mouseClick(view.resume_button, Qt.MouseButton.LeftButton)
    assert view.is_training()
    qtbot.waitUntil(lambda: finished(view), timeout=120_000)
    assert view.last_result.status == "finished" and view.last_result.run_dir == run_dir
    assert view.last_result.epochs_done == 3
    steps = [int(x) for x in view.loss_curve.getData()[0]]
    assert steps[0] <= steps_before < steps[-1] == 6  # the curve continues the run's history


def test_train_classifier_shows_scores_and_a_confusion_matrix(window, qtbot, trained_run):
    view = window.training_view
    window.show_page("train")
    assert view.train_classifier(trained_run)
    assert view.classifier_progress.isVisibleTo(view)
    qtbot.waitUntil(lambda: not view.classifier_running(), timeout=180_000)
    report = view.classifier_report
    assert view.top1_label.text().endswith("%") and view.top5_label.text().endswith("%")
    assert view.confusion_plot.isVisibleTo(view)
    assert view.confusion_image.image.shape == (3, 3)
    assert view.confusion_legend.text().splitlines()[0] == f"0 {report.class_names[0]}"
    assert (Path(trained_run) / "classifier.pt").is_file()
    # What 1 and 5 labels per class would give (the demo set has 6 training images a class).
    assert [score.labels_per_class for score in report.few_labels] == [1, 5]
    assert [score.num_train for score in report.few_labels] == [3, 15]
    assert view.few_labels_label.isVisibleTo(view)
    assert view.few_labels_label.text().startswith("1 / 5 labels per class: ")
    assert "1 per class" in view.few_labels_label.toolTip() and "5 per class" in view.few_labels_label.toolTip()


def test_a_confusion_cell_names_itself_and_opens_its_test_images_in_inspect(window, qtbot, tmp_path):
    """Hovering a cell says what it counts; clicking one off the diagonal (or its name under
    the matrix) lists those test images in Inspect, each with Versus set to where it looks
    like the class it was taken for rather than its own."""
    import shutil

    from PySide6.QtCore import QPointF
    from PySide6.QtTest import QTest

    from helpers_runs import make_colour_data, make_run

    data = make_colour_data(tmp_path / "colours")  # colour alone tells red from blue
    mislabelled = data / "test" / "blue" / "red0.png"  # a red test image filed as blue: a real mistake
    shutil.move(data / "test" / "red" / "red0.png", mislabelled)
    run = make_run(tmp_path / "runs", data, attention="none")
    view, inspect = window.training_view, window.inspect_view
    messages = []
    window.training_view.status_message.connect(messages.append)
    inspect.status_message.connect(messages.append)
    window.show_page("train")
    assert view.train_classifier(run)
    qtbot.waitUntil(lambda: not view.classifier_running(), timeout=180_000)
    report = view.classifier_report
    assert report.class_names == ["blue", "red"] and report.confusion.tolist() == [[3, 1], [0, 2]]
    assert view.confused_label.isVisibleTo(view) and "0 \u2192 1</a> (1/4)" in view.confused_label.text()
    assert "blue \u2192 red: 1 of 4 test images" in view.confused_label.toolTip()

    plot = view.confusion_plot
    qtbot.waitUntil(lambda: plot.isVisible() and plot.width() > 50, timeout=10_000)
    cell_centre = plot.getViewBox().mapViewToScene(QPointF(1.5, 0.5))  # row blue, column red
    assert view.confusion_cell_at(cell_centre) == (0, 1)
    view._on_confusion_hover(cell_centre)
    assert plot.toolTip() == "blue taken for red: 1 of 4 test images (25.0%); click to look at them"
    diagonal = plot.getViewBox().mapViewToScene(QPointF(0.5, 0.5))
    assert view.confusion_cell_at(diagonal) == (0, 0)
    QTest.mouseClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=plot.mapFromScene(diagonal))
    assert inspect.image_list.count() == 0 and messages[-1].startswith("blue: 3 of 4 test images right")

    QTest.mouseClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=plot.mapFromScene(cell_centre))
    qtbot.waitUntil(lambda: inspect.image_list.count() == 1, timeout=10_000)
    assert window.pages.currentWidget() is inspect
    qtbot.waitUntil(lambda: inspect.current_run() == str(run), timeout=10_000)  # the run list is read off the GUI thread
    entry = inspect._entries[0]
    assert entry.source == str(mislabelled) and (entry.favour, entry.against) == ("red", "blue")
    assert inspect._items[entry.key].text().endswith("blue\u00a0\u2192\u00a0red")
    assert messages[-1].startswith("1 test image of blue taken for red")
    qtbot.waitUntil(lambda: entry.result is not None, timeout=120_000)
    shown = entry.result.prediction
    assert shown.topk[0][0] == "red" and (shown.contrast_favoured, shown.contrast_class) == ("red", "blue")
    assert inspect.image_subtitle.text().startswith("A test image of blue, taken for red (")

    # The name under the matrix opens the same cell.
    window.show_page("train")
    view.confused_label.linkActivated.emit("0,1")
    qtbot.waitUntil(lambda: inspect.image_list.count() == 2, timeout=10_000)
    assert window.pages.currentWidget() is inspect

    # A fit by an earlier fgdesk recorded no images: the cell says how to get them.
    report.mistakes = None
    assert not view.open_confusion_cell(0, 1) and "train the classifier again" in messages[-1]
    assert inspect.image_list.count() == 2


def test_the_y_range_of_a_falling_loss_changes_rarely():
    """A loss falling over 3,000 steps re-ranges its axis a dozen times, not on every point,
    and the range always holds the data and is at least half filled by it."""
    import numpy as np

    from fgdesk.gui.training_view import stepped_range

    rng = np.random.default_rng(0)
    losses = 8 * np.exp(-np.arange(3000) / 800) + 1 + 0.3 * rng.standard_normal(3000)
    current, changes = None, 0
    for seen in range(1, len(losses) + 1):
        low, high = losses[:seen].min(), losses[:seen].max()
        wanted = stepped_range(current, low, high)
        changes += wanted != current
        current = wanted
        bottom, top = current
        assert bottom <= low and high <= top and high - low >= 0.5 * (top - bottom) - 1e-9 or seen == 1
    assert changes <= 20
    assert stepped_range((0.0, 1.0), float("nan"), 2.0) == (0.0, 1.0)  # a skipped step's NaN changes nothing


def test_curves_from_a_saved_run_with_a_skipped_step():
    """A skipped step is saved with a null loss: the curves show a gap there, and the
    smoothed loss goes on from the finite steps instead of turning NaN for good."""
    import math

    from fgdesk.gui.training_view import TrainingCurves

    records = [{"type": "step", "global_step": s, "loss": None if s == 2 else 5.0 - 0.1 * s, "lr": 0.1,
                "images_per_s": 10.0} for s in range(1, 6)]
    curves = TrainingCurves.from_records(records)
    losses = curves.loss.arrays()[1]
    assert math.isnan(losses[1]) and len(losses) == 5
    smoothed = curves.loss_ema.arrays()[1]
    assert len(smoothed) == 5 and all(math.isfinite(v) for v in smoothed)
    assert 4.4 < smoothed[-1] < 4.9


def test_each_epoch_refreshes_the_past_runs_table(window, qtbot, trained_run):
    """A run's row follows its epochs while it trains, not only when it starts and ends."""
    import shutil

    from fgdesk import paths

    view = window.training_view
    qtbot.waitUntil(lambda: not view._runner.busy(), timeout=10_000)
    before = {str(r.path) for r in view.runs()}
    copy = paths.runs_dir() / "copied-run"
    shutil.copytree(trained_run, copy)
    view._on_epoch(object())  # what the worker's epoch signal delivers
    qtbot.waitUntil(lambda: str(copy) in {str(r.path) for r in view.runs()}, timeout=10_000)
    assert str(copy) not in before


def _copy_into_runs(trained_run, name, **config_changes):
    """A copy of the trained run in the user's runs folder (so the table lists it), settings changed."""
    import json
    import shutil

    from fgdesk import paths

    copy = paths.runs_dir() / name
    shutil.copytree(trained_run, copy)
    config = json.loads((copy / "config.json").read_text())
    for dotted, value in config_changes.items():
        section, _, field = dotted.rpartition(".")
        (config[section] if section else config)[field] = value
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def _select_rows(view, folders):
    from PySide6.QtCore import QItemSelectionModel

    view.runs_table.clearSelection()
    model = view.runs_table.selectionModel()
    for row, info in enumerate(view.runs()):
        if str(info.path) in {str(f) for f in folders}:
            model.select(view.runs_table.model().index(row, 0),
                         QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)


def test_selecting_a_run_shows_its_own_saved_classifier_or_none(window, qtbot, trained_run):
    """The classifier card never shows one run's scores under another run's name."""
    view = window.training_view
    window.show_page("train")
    fitted = _copy_into_runs(trained_run, "with-classifier")
    bare = _copy_into_runs(trained_run, "without-classifier")
    for name in ("classifier.pt", "classifier.json", "confusion.csv"):
        (bare / name).unlink(missing_ok=True)
    assert view.train_classifier(fitted)
    qtbot.waitUntil(lambda: not view.classifier_running(), timeout=180_000)
    top1 = view.top1_label.text()
    view.refresh_runs()
    qtbot.waitUntil(lambda: {str(fitted), str(bare)} <= {str(r.path) for r in view.runs()}, timeout=10_000)
    row = next(i for i, info in enumerate(view.runs()) if info.path == fitted)
    assert view.runs_table.item(row, 4).text() == top1  # the Classifier column gives the score

    assert view.select_run(bare)
    assert view.top1_label.text() == "—" and not view.confusion_plot.isVisibleTo(view)
    assert "without-classifier" in view.classifier_run_label.text()
    assert view.select_run(fitted)  # read back from classifier.json, not fitted again
    qtbot.waitUntil(lambda: view.top1_label.text() == top1, timeout=20_000)
    assert not view.classifier_running() and view.confusion_plot.isVisibleTo(view)
    assert "with-classifier" in view.classifier_run_label.text() and "Fitted" in view.classifier_run_label.toolTip()


def test_compare_shows_selected_runs_curves_scores_and_differing_settings(window, qtbot, trained_run):
    view = window.training_view
    window.show_page("train")
    first = _copy_into_runs(trained_run, "compare-a")
    second = _copy_into_runs(trained_run, "compare-b", seed=7, **{"model.attention": "none"})
    view.refresh_runs()
    qtbot.waitUntil(lambda: {str(first), str(second)} <= {str(r.path) for r in view.runs()}, timeout=10_000)
    assert not view.compare_button.isEnabled()
    _select_rows(view, [first, second])
    assert view.compare_button.isEnabled() and view.selected_run() is None  # the one-run buttons step aside
    assert not view.resume_button.isEnabled() and not view.classifier_button.isEnabled()
    view.refresh_runs()  # a refresh keeps the comparison's selection
    qtbot.waitUntil(lambda: not view._runner.busy(), timeout=10_000)
    assert {str(info.path) for info in view.selected_runs()} == {str(first), str(second)}

    view.compare_button.click()
    dialog = view.compare_dialog
    assert dialog is not None and dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.comparison is not None, timeout=20_000)
    headers = [dialog.table.horizontalHeaderItem(c).text() for c in range(dialog.table.columnCount())]
    assert sorted(headers) == ["compare-a", "compare-b"]
    labels = [dialog.table.verticalHeaderItem(r).text() for r in range(dialog.table.rowCount())]
    assert "model.attention" in labels and "seed" in labels and "data.path" not in labels
    seed_row = labels.index("seed")
    assert sorted(dialog.table.item(seed_row, c).text() for c in range(2)) == ["0", "7"]
    curves = [item for item in dialog.knn_plot.getPlotItem().listDataItems() if len(item.getData()[0] or [])]
    assert len(curves) == 2  # one kNN curve per run
    dialog.by_minutes.setChecked(True)  # the x axis switches to training time
    xs = dialog.knn_plot.getPlotItem().listDataItems()[0].getData()[0]
    assert dialog.knn_plot.getPlotItem().getAxis("bottom").labelText == "minutes of training"
    assert all(0 < x < 60 for x in xs)
    dialog.close()


def test_the_card_follows_a_selection_made_while_a_fit_ran(window, qtbot, trained_run):
    view = window.training_view
    window.show_page("train")
    first = _copy_into_runs(trained_run, "fit-first")
    other = _copy_into_runs(trained_run, "fit-other")
    assert view.train_classifier(first)
    qtbot.waitUntil(lambda: not view.classifier_running(), timeout=180_000)
    shown = view.top1_label.text()
    view.refresh_runs()
    qtbot.waitUntil(lambda: {str(first), str(other)} <= {str(r.path) for r in view.runs()}, timeout=10_000)
    assert view.select_run(first)
    assert view.train_classifier(other)  # a fit of another run; the card shows that fit
    assert not view.confusion_plot.isVisibleTo(view) and "fit-other" in view.classifier_run_label.text()
    assert view.select_run(first)  # picked while the fit runs
    qtbot.waitUntil(lambda: not view.classifier_running(), timeout=180_000)
    qtbot.waitUntil(lambda: view.top1_label.text() == shown, timeout=20_000)  # first's own saved scores
    assert "fit-first" in view.classifier_run_label.text() and view.confusion_plot.isVisibleTo(view)


def test_a_resumed_run_drops_the_part_epoch_its_budget_ended_in():
    from fgdesk.gui.training_view import TrainingCurves

    history = TrainingCurves()
    for epoch, knn in ((1, 0.2), (2, 0.3), (2.4, 0.31)):  # the budget ended 40% into epoch 3
        history.add_epoch(epoch, knn)
    live = TrainingCurves()
    live.add_epoch(3, 0.35)  # the resumed run finishes epoch 3
    assert [x for x, _ in live.after(history).epochs] == [1, 2, 3]
    partial = TrainingCurves()
    partial.add_epoch(2.7, 0.33)  # resumed, and a new budget ended it again in epoch 3
    assert [x for x, _ in partial.after(history).epochs] == [1, 2, 2.7]


def test_a_finished_run_trains_further_from_the_table(window, qtbot, trained_run, monkeypatch):
    """Resume becomes "Train further…" on a finished run: the epochs asked for are added and
    the run goes on from its checkpoint, its curve continuing the one it had."""
    from PySide6.QtWidgets import QInputDialog

    from fgdesk.train import runs

    view = window.training_view
    window.show_page("train")
    run = _copy_into_runs(trained_run, "further")
    epochs_before = runs.run_info(run).epochs_done
    view.refresh_runs()
    qtbot.waitUntil(lambda: view.select_run(run) and view.resume_button.isEnabled(), timeout=10_000)
    assert view.resume_button.text() == "Train further…"
    monkeypatch.setattr(QInputDialog, "getInt", staticmethod(lambda *args, **kwargs: (1, True)))
    qtbot.mouseClick(view.resume_button, Qt.MouseButton.LeftButton)
    assert view.is_training()
    # No dataset is open here, so the Train button stays off: wait for the result itself.
    qtbot.waitUntil(lambda: view.last_result is not None and not view.is_training(), timeout=120_000)
    assert view.last_result.status == "finished" and view.last_result.epochs_done == epochs_before + 1
    assert runs.run_info(run).epochs == epochs_before + 1
    qtbot.waitUntil(lambda: [x for x, _ in view.curves.epochs] == list(range(1, epochs_before + 2)), timeout=10_000)


def test_deleting_runs_frees_their_space_and_refuses_one_being_trained(window, qtbot, trained_run, monkeypatch):
    """Delete asks, works on a worker thread, clears the curves it showed, makes Inspect drop
    the run, and skips a run that another process trains (its lock) with a message."""
    from fgdesk.train import runs

    view = window.training_view
    window.show_page("train")
    doomed = _copy_into_runs(trained_run, "doomed")
    view.refresh_runs()
    qtbot.waitUntil(lambda: view.select_run(doomed), timeout=10_000)
    qtbot.waitUntil(lambda: view._shown_run == str(doomed), timeout=10_000)  # its curves are on screen
    row = next(r for r, info in enumerate(view.runs()) if info.path == doomed)
    size = runs.run_disk_bytes(doomed)
    assert view.runs_table.item(row, 7).text() == runs.format_bytes(size) and size > 1_000_000
    assert view.runs_total_label.text() == f"1 run · {runs.format_bytes(size)}"
    window.inspect_view.set_run(doomed)
    qtbot.waitUntil(lambda: window.inspect_view.current_run() == str(doomed), timeout=10_000)

    asked: list = []
    monkeypatch.setattr(view, "confirm_delete", lambda infos: asked.append([i.name for i in infos]) or False)
    view.runs_table.setFocus()
    qtbot.keyClick(view.runs_table, Qt.Key.Key_Delete)  # the Delete key asks; "Cancel" keeps the run
    assert asked == [["doomed"]] and doomed.is_dir()

    monkeypatch.setattr(view, "confirm_delete", lambda infos: True)
    messages: list[str] = []
    view.status_message.connect(messages.append)
    assert view.train_classifier(doomed)  # a fit in this window: the run is in use, not even asked about
    assert not view.delete_selected() and "in use here" in messages[-1] and doomed.is_dir()
    qtbot.waitUntil(lambda: not view.classifier_running(), timeout=120_000)
    assert view._classifier_shown_for == str(doomed)
    size = runs.run_disk_bytes(doomed)  # now with the classifier and its cached embeddings
    view.runs_table.setFocus()
    qtbot.keyClick(view.runs_table, Qt.Key.Key_Delete)
    qtbot.waitUntil(lambda: view._delete_task is None and not view._runner.busy(), timeout=30_000)
    assert not doomed.exists() and any(f"{runs.format_bytes(size)} freed" in m for m in messages)
    assert str(doomed) not in {str(info.path) for info in view.runs()} and view.runs_total_label.text() == ""
    assert view._shown_run is None and view.curves.steps == []  # its curves and scores went with it
    assert view._classifier_shown_for is None and view.top1_label.text() == "—"
    qtbot.waitUntil(lambda: window.inspect_view.run_combo.findData(str(doomed)) < 0, timeout=10_000)
    assert window.inspect_view.current_run() != str(doomed)

    second = _copy_into_runs(trained_run, "second")
    busy = _copy_into_runs(trained_run, "trained-elsewhere")
    view.refresh_runs()
    qtbot.waitUntil(lambda: {str(second), str(busy)} <= {str(info.path) for info in view.runs()}, timeout=10_000)
    lock = runs.acquire_lock(busy)  # as `fgdesk train` in another terminal holds it
    try:
        _select_rows(view, [second, busy])
        qtbot.mouseClick(view.delete_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: view._delete_task is None, timeout=30_000)
    finally:
        lock.release()
    assert not second.exists() and (busy / "checkpoints" / "last.pt").is_file()
    error = view.last_error_box.text()
    assert "trained-elsewhere" in error and "being trained" in error and "second" not in error


def test_the_runs_table_gives_this_years_times_short_and_older_ones_as_dates():
    import time as clock

    from fgdesk.gui.training_view import short_time

    now = clock.mktime((2026, 12, 6, 21, 2, 0, 0, 0, -1))
    march = clock.mktime((2026, 3, 9, 8, 5, 0, 0, 0, -1))
    assert short_time(march, now) == f"{clock.strftime('%b', clock.localtime(march))} 9 08:05"  # "Mar 9 08:05"
    assert short_time(clock.mktime((2025, 12, 30, 23, 0, 0, 0, 0, -1)), now) == "2025-12-30"


def test_a_run_deleted_while_inspect_fits_its_classifier_stays_deleted(window, qtbot, trained_run, demo_set, monkeypatch):
    """Inspect loads a run without a classifier, so it fits one first; the run is deleted in
    the middle of that fit. The fit fails (the Inspect error names the missing checkpoint),
    writes nothing into a new folder, and Inspect moves off the run."""
    import threading

    from fgdesk.evaluate import report
    from fgdesk.train import runs

    fitting, deleted = threading.Event(), threading.Event()
    real_fit_linear = report.fit_linear

    def fit_linear_held_until_deleted(*args, **kwargs):
        fitting.set()
        deleted.wait(60)
        return real_fit_linear(*args, **kwargs)

    monkeypatch.setattr(report, "fit_linear", fit_linear_held_until_deleted)
    view = window.training_view
    run = _copy_into_runs(trained_run, "inspected")
    (run / runs.CLASSIFIER_FILE).unlink(missing_ok=True)
    view.refresh_runs()
    qtbot.waitUntil(lambda: view.select_run(run), timeout=10_000)
    inspect_view = window.inspect_view
    inspect_view.set_run(run)
    qtbot.waitUntil(lambda: inspect_view.current_run() == str(run), timeout=10_000)
    inspect_view.add_paths(sorted((demo_set / "test").rglob("*.png"))[:2])  # loading the run starts the fit
    qtbot.waitUntil(fitting.is_set, timeout=120_000)

    view.confirm_delete = lambda infos: True
    assert view.delete_selected()
    qtbot.waitUntil(lambda: view._delete_task is None, timeout=30_000)
    assert not run.exists()
    deleted.set()
    qtbot.waitUntil(lambda: not inspect_view._runner.busy() and not inspect_view._general.busy(), timeout=120_000)
    assert not run.exists()  # the fit's classifier.pt was not written into a new folder
    assert inspect_view.run_combo.findData(str(run)) < 0 and inspect_view.current_run() != str(run)
