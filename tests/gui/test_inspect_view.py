"""The inspection view: drop or paste images, top-5, neighbours, heatmap layers, overlays, CSV."""
from __future__ import annotations

import csv
import threading
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QImage
from PySide6.QtWidgets import QApplication

pytestmark = pytest.mark.slow


def drop_files(widget, paths: list[Path]) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(event)


@pytest.fixture
def inspect(window, qtbot, trained_run):
    view = window.inspect_view
    window.show_page("inspect")
    view.set_run(trained_run)
    qtbot.waitUntil(lambda: view.current_run() == str(trained_run), timeout=10_000)
    return view


def test_dropping_an_image_gives_predictions_and_heatmap_layers(inspect, qtbot, demo_set, tmp_path):
    view = inspect
    image_path = sorted((demo_set / "test").rglob("*.png"))[0]
    drop_files(view, [image_path])
    assert view.image_list.count() == 1
    qtbot.waitUntil(lambda: view.current_result is not None, timeout=180_000)
    result = view.current_result
    assert result.error is None
    topk = result.prediction.topk
    assert 1 <= len(topk) <= 5
    probabilities = [p for _, p in topk]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0 + 1e-5
    assert view.topk_rows[0][0].full_text() == topk[0][0]  # shown whole, or cut with an ellipsis and a tooltip
    assert view.topk_rows[0][2].text().endswith("%")
    # Nearest labelled training images, with their class and similarity.
    neighbours = result.prediction.neighbours
    assert 1 <= len(neighbours) <= 5
    canvas, caption = view.neighbour_tiles[0]
    assert canvas.pixmap() is not None and f"class {neighbours[0][1]}," in caption.toolTip()
    shown = caption.text().split("\n")[0]  # the class, cut with an ellipsis when it is too long for the tile
    assert shown == neighbours[0][1] or (shown.endswith("…") and neighbours[0][1].startswith(shown[:-1]))
    # One panel per scale plus the fused map (and the image itself first).
    keys = view.layer_keys()
    assert keys[0] == "image" and "fused" in keys
    stages = [k for k in keys if k.startswith("stage")]
    assert stages and set(stages) <= set(result.prediction.maps)
    for key in keys:
        assert view._panels[key].canvas.pixmap() is not None
    # Each map's tooltip says what it answers: only class evidence says why this class.
    evidence = view._panels["evidence"].toolTip()
    if "evidence" not in result.prediction.map_notes:
        assert evidence.startswith(f"Class evidence: where the image supports {result.prediction.evidence_class}")
    assert "not why it chose a class" in view._panels[stages[0]].toolTip()
    # The maps cover the centre crop the network saw; the tooltip says why the edge is dimmed.
    frame = result.prediction.frame
    assert 0 < frame[0] < frame[2] < 64 and 0 < frame[1] < frame[3] < 64 and result.display_frame is not None
    assert not result.prediction.maps["fused"][:, :frame[0]].any()
    assert view._panels["fused"].toolTip().endswith("so no map is drawn there")
    # The opacity slider and the colormap redraw the overlays.
    fused = view._panels["fused"].canvas
    before = fused.pixmap().toImage()
    view.opacity_slider.setValue(90)
    qtbot.waitUntil(lambda: fused.pixmap().toImage() != before, timeout=5_000)
    again = fused.pixmap().toImage()
    view.colormap_combo.setCurrentText("viridis")
    qtbot.waitUntil(lambda: fused.pixmap().toImage() != again, timeout=5_000)
    # A toggle per scale hides or shows its panel.
    view._layer_boxes[stages[0]].setChecked(False)
    assert not view._panels[stages[0]].isVisibleTo(view)
    view._layer_boxes[stages[0]].setChecked(True)
    assert view._panels[stages[0]].isVisibleTo(view)
    # The top class against the runner-up: hidden at first, shown when ticked, and remembered.
    contrast = view._panels["contrast"]
    assert not contrast.isVisibleTo(view) and not view._layer_boxes["contrast"].isChecked()
    view._layer_boxes["contrast"].setChecked(True)
    assert contrast.isVisibleTo(view) and contrast.canvas.pixmap() is not None
    assert contrast.toolTip().startswith(f"Where the image supports {topk[0][0]} rather than {topk[1][0]}: ")
    assert "contrast" not in view._remembered_hidden_layers()
    assert contrast.title.full_text() == f"Versus {topk[1][0]}"
    # A click on another class of the top 5 sets the top class against that one instead.
    from PySide6.QtCore import Qt

    qtbot.mouseClick(view.topk_rows[2][0], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.current_result.prediction.contrast_class == topk[2][0], timeout=60_000)
    assert contrast.title.full_text() == f"Versus {topk[2][0]}" and f"rather than {topk[2][0]}" in contrast.toolTip()
    assert [name for name, _ in view.current_result.prediction.topk] == [name for name, _ in topk]
    assert "over " + topk[2][0] in view.topk_rows[2][0].toolTip()  # the row says what a click does
    view.topk_rows[2][0].resize(30, 20)  # eliding again on a resize keeps that hint
    assert "over " + topk[2][0] in view.topk_rows[2][0].toolTip()
    assert view.contrast_with_rank(1)  # the top class itself: the runner-up again
    qtbot.waitUntil(lambda: view.current_result.prediction.contrast_class == topk[1][0], timeout=60_000)
    view._layer_boxes["contrast"].setChecked(False)
    assert view._remembered_hidden_layers() == {"contrast"}
    # Save the selected layer as a PNG at the image's own resolution.
    view.select_layer("fused")
    target = tmp_path / "overlay.png"
    assert view.save_overlay(target)
    qtbot.waitUntil(lambda: view.last_saved_overlay == str(target), timeout=10_000)
    with Image.open(target) as saved:
        assert saved.size == (64, 64) and saved.format == "PNG"


def test_map_notes_are_shown_instead_of_drawing_noise(inspect, qtbot, demo_set):
    view = inspect
    drop_files(view, [sorted((demo_set / "train").rglob("*.png"))[0]])
    qtbot.waitUntil(lambda: view.current_result is not None, timeout=180_000)
    stage = next(k for k in view.layer_keys() if k.startswith("stage"))
    view.current_result.prediction.map_notes[stage] = "constant map: nothing to show"
    view._render_layers()
    assert view._panels[stage].canvas.note() == "constant map: nothing to show"
    assert view._panels["fused"].canvas.note() in ("", view.current_result.prediction.map_notes.get("fused", ""))


def test_pasting_an_image_and_dropping_a_folder(inspect, qtbot, demo_set):
    view = inspect
    picture = QImage(str(sorted((demo_set / "test").rglob("*.png"))[1]))
    QApplication.clipboard().setImage(picture)
    assert view.paste_from_clipboard()
    assert view.image_list.count() == 1
    drop_files(view, [demo_set / "test" / "class_0_circle"])
    qtbot.waitUntil(lambda: view.image_list.count() == 3, timeout=10_000)
    qtbot.waitUntil(lambda: len(view.results()) == 3, timeout=180_000)
    assert all(r.error is None for r in view.results())
    assert view.results()[0].source == "pasted image 1"


def test_classifying_a_folder_to_csv_with_progress_and_cancel(inspect, qtbot, demo_set, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from fgdesk.gui.inspect_view import WITH_EMBEDDINGS_FILTER

    view = inspect
    out = tmp_path / "predictions.csv"
    progress: list[int] = []
    messages: list[str] = []
    view.csv_progress.valueChanged.connect(progress.append)
    view.status_message.connect(messages.append)
    # The save dialog's second file type also saves the embeddings, beside the predictions.
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args: str(demo_set / "test"))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args: (str(out), WITH_EMBEDDINGS_FILTER))
    view.choose_csv_folder()
    assert view.csv_strip.isVisibleTo(view) and view.csv_running()
    assert not view.csv_button.isEnabled()
    qtbot.waitUntil(lambda: view.last_csv_result is not None, timeout=180_000)
    assert view.last_csv_result == (str(out), 6)
    assert progress and progress[-1] == 6 and view.csv_progress.maximum() == 6
    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:3] == ["path", "top1", "prob"] and len(rows) == 7
    with open(tmp_path / "predictions-embeddings.csv", newline="", encoding="utf-8") as handle:
        embedded = list(csv.reader(handle))
    assert [row[0] for row in embedded[1:]] == [row[0] for row in rows[1:]] and embedded[0][1] == "e0"
    assert messages[-1].startswith(f"Wrote 6 prediction(s) to {out}, and their embeddings to predictions-embeddings.csv")
    assert not view.csv_strip.isVisibleTo(view) and view.csv_button.isEnabled()
    # Cancel: hold the inference thread so the cancel surely lands before the first chunk.
    gate = threading.Event()
    view._runner.start(lambda ctx: gate.wait(30), name="hold the inference thread")
    cancelled = tmp_path / "cancelled.csv"
    view.last_csv_result = None
    view.classify_folder_to_csv(demo_set, cancelled)
    view.cancel_csv()
    assert view.csv_label.text() == "Cancelling…"
    gate.set()
    qtbot.waitUntil(lambda: view.last_csv_result is not None, timeout=180_000)
    assert view.last_csv_result == (str(cancelled), 0)
    assert not cancelled.exists()  # cancelled while queued: it never started, so it wrote nothing
    assert not view.csv_running() and view.csv_button.isEnabled()


def test_images_with_the_same_file_name_are_told_apart_by_their_folder(inspect, qtbot, demo_set):
    view = inspect
    circle = demo_set / "test" / "class_0_circle" / "img_006.png"
    other = demo_set / "test" / "class_0_circle" / "img_007.png"
    triangle = demo_set / "test" / "class_1_triangle" / "img_006.png"

    def first_lines() -> list[str]:
        return [view.image_list.item(row).text().splitlines()[0] for row in range(view.image_list.count())]

    view.add_images([(str(circle), circle), (str(other), other)])
    assert first_lines() == ["img_006.png", "img_007.png"]
    # The second img_006.png renames the first too; the unique name stays short.
    view.add_images([(str(triangle), triangle)])
    assert first_lines() == ["class_0_circle/img_006.png", "img_007.png", "class_1_triangle/img_006.png"]
    view.image_list.setCurrentRow(2)
    assert view.image_title.text() == "class_1_triangle/img_006.png"
    # Names stay told apart once predictions replace the second line.
    qtbot.waitUntil(lambda: len(view.results()) == 3, timeout=180_000)
    assert first_lines()[0] == "class_0_circle/img_006.png" and "%" in view.image_list.item(0).text()
    view.clear_images()
    view.add_images([(str(triangle), triangle)])
    assert first_lines() == ["img_006.png"]


def test_suggest_what_to_label_adds_unlabeled_images_or_says_why_not(inspect, qtbot, demo_set, trained_run, tmp_path):
    import json
    import shutil

    view = inspect
    # The demo set has no unlabeled/ folder: the message says where to put such images.
    assert view.suggest_images_to_label(count=3)
    qtbot.waitUntil(lambda: view._suggest_task is None, timeout=120_000)
    assert view.last_error_box is not None and "unlabeled/ folder" in view.last_error_box.text()
    view.last_error_box.close()
    # The same run pointed at a copy with unlabeled images.
    data = tmp_path / "with-unlabeled"
    shutil.copytree(demo_set, data)
    run = tmp_path / "run-copy"
    shutil.copytree(trained_run, run)
    config = json.loads((run / "config.json").read_text())
    config["data"]["path"] = str(data)
    (run / "config.json").write_text(json.dumps(config))
    view.set_run(run)
    qtbot.waitUntil(lambda: view.current_run() == str(run) and not view._general.busy(), timeout=10_000)
    assert view._labeler is not None  # class folders take corrections, even before unlabeled/ exists
    (data / "unlabeled").mkdir()  # made while the run is shown: found when its images arrive
    for k, image in enumerate(sorted((demo_set / "test").rglob("*.png"))):
        shutil.copy(image, data / "unlabeled" / f"u{k:02d}.png")
    view.clear_images()
    assert view.suggest_images_to_label(count=3)
    assert view.suggest_button.text() == "Cancel"  # while it runs, its button cancels it
    qtbot.waitUntil(lambda: view._suggest_task is None, timeout=120_000)
    assert [Path(s.path).parent.name for s in view.last_suggestions] == ["unlabeled"] * 3
    assert view.image_list.count() == 3 and view.suggest_button.text() == "Suggest what to label"

    # Labelling them here: each file moves into train/CLASS, the list goes on to the next image,
    # and Undo puts the last one back. The open dataset is indexed again when its page shows.
    window = view.window()
    window.dataset_view.load_dataset(data)
    qtbot.waitUntil(lambda: window.dataset_view.index is not None and not window.dataset_view.is_loading(), timeout=30_000)
    unlabeled_before = len(window.dataset_view.index.split("unlabeled"))
    window.show_page("inspect")
    view.image_list.setCurrentRow(0)
    qtbot.waitUntil(lambda: view.label_panel.isVisible() and view.current_result is not None, timeout=120_000)
    first = view._current
    source = Path(first.source)
    predicted = first.result.prediction.topk[0][0]
    assert view.label_combo.currentText() == predicted
    assert view.label_title.text() == "Label this image" and not view.keep_label_button.isVisible()
    # What the user types stays, even when the image is shown again (as when its prediction lands).
    view.label_combo.setEditText("typed by hand")
    view.label_combo.lineEdit().textEdited.emit("typed by hand")
    view._show_entry(first)
    assert view.label_combo.currentText() == "typed by hand"
    # A digit typed in the box is text, not the "label as rank 1" key.
    view.label_combo.lineEdit().setFocus()
    qtbot.keyClicks(view.label_combo.lineEdit(), " 1")
    assert view.label_combo.currentText() == "typed by hand 1" and view.label_history == [] and source.exists()
    view.image_list.setFocus()
    qtbot.keyClick(view.image_list, "1")  # the key for "label as the top prediction"
    qtbot.waitUntil(lambda: view._label_task is None and bool(view.label_history), timeout=10_000)
    target = data / "train" / predicted / source.name
    assert target.is_file() and not source.exists() and first.source == str(target)
    assert view._items[first.key].text().endswith(f"\u2713\u00a0{predicted}")
    assert view._current is not first and view.label_panel.isVisible()  # on to the next image
    second = view._current
    view.confirm_new_class = lambda name: name == "class_new"
    view.label_combo.setEditText("class_new")
    assert view.label_current()
    qtbot.waitUntil(lambda: view._label_task is None, timeout=10_000)
    assert (data / "train" / "class_new" / Path(second.name).name).is_file()
    assert len(view.label_history) == 2 and "class_new" in [view.label_combo.itemText(i) for i in range(view.label_combo.count())]
    assert view.undo_last_label()
    qtbot.waitUntil(lambda: view._label_task is None, timeout=10_000)
    assert not (data / "train" / "class_new").exists() and Path(second.source).parent == data / "unlabeled"
    assert view._current is second and second.labelled is None and view.label_button.isEnabled()
    assert window._stale_dataset == str(data)  # not indexed again while Inspect shows

    # Refit: the classifier and the neighbour bank learn the label given; the labelled image,
    # classified again, is now its own nearest labelled image.
    assert view.labels_since_fit == 1 and view.refit_button.isEnabled()
    assert view.refit_classifier()
    qtbot.waitUntil(lambda: view._refit_task is None, timeout=120_000)
    assert view.labels_since_fit == 0 and not view.refit_button.isEnabled()
    card = window.training_view  # the Train page's classifier card shows the new fit too
    assert card.classifier_report is not None and card.classifier_report.num_train >= 1
    assert card.classifier_run_label.text().startswith(f"Run: {run.name}")
    qtbot.waitUntil(lambda: first.result is not None and first.state == "done", timeout=120_000)
    assert first.result.prediction.neighbours[0][0] == str(target)
    window.training_view.classifier_trained.emit(str(run))  # fitted on the Train page: predictions follow
    assert first.state in ("queued", "running") or first.result is None
    qtbot.waitUntil(lambda: first.state == "done", timeout=120_000)
    window.show_page("dataset")
    qtbot.waitUntil(lambda: window._stale_dataset is None and not window.dataset_view.is_loading(), timeout=30_000)
    qtbot.waitUntil(lambda: len(window.dataset_view.index.split("unlabeled")) == unlabeled_before - 1, timeout=30_000)
    window.show_page("inspect")
    # Cleared before the answer came: the work stops and nothing lands in the emptied list.
    view.clear_images()
    view.last_suggestions, view.last_error_box = [], None
    assert view.suggest_images_to_label(count=2)
    view.clear_images()
    qtbot.waitUntil(lambda: view._suggest_task is None, timeout=120_000)
    assert view.image_list.count() == 0 and view.last_suggestions == [] and view.last_error_box is None


def _inspect_with_labels(window, qtbot, run):
    """(the Inspect view on `run`, once its dataset takes labels; the status messages it shows from now on)."""
    view = window.inspect_view
    window.show_page("inspect")
    view.refresh_runs(select=str(run))
    qtbot.waitUntil(lambda: view.current_run() == str(run) and view._labeler is not None, timeout=30_000)
    messages: list[str] = []
    view.status_message.connect(messages.append)
    return view, messages


def test_check_labels_lists_a_wrong_label_and_relabel_moves_it_back_to_its_class(window, qtbot, tmp_path):
    import shutil

    from helpers_runs import make_colour_data, make_run

    data = make_colour_data(tmp_path / "colours")
    wrong = data / "train" / "blue" / "red0.png"  # a red image filed as blue
    shutil.move(data / "train" / "red" / "red0.png", wrong)
    run = make_run(tmp_path / "runs", data, attention="none")
    view, messages = _inspect_with_labels(window, qtbot, run)

    # Cancelled from its button: nothing is listed, the status line says so, and it can start again.
    assert view.check_labels() and view.check_button.text() == "Cancel"
    view.check_button.click()
    qtbot.waitUntil(lambda: view._check_task is None, timeout=120_000)
    assert messages[-1] == "Looking for labels that look wrong: cancelled" and view.image_list.count() == 0
    assert view.last_label_check is None and view.last_error_box is None and view.check_button.text() == "Check labels"

    # Clearing the list lets a running check go at once: the button is free for the next one.
    assert view.check_labels() and view.check_button.text() == "Cancel"
    view.clear_images()
    assert view._check_task is None and view.check_button.text() == "Check labels"

    view.check_button.click()
    assert view._check_task is not None
    qtbot.waitUntil(lambda: view._check_task is None, timeout=120_000)
    check = view.last_label_check
    assert check is not None and check.issues[0].path == str(wrong)
    assert view.image_list.count() == len(check.issues) and view.check_button.text() == "Check labels"
    assert view._items[view._entries[0].key].text().endswith("\u2192\u00a0red?")
    assert "labels look doubtful" in messages[-1] and "agrees with" in messages[-1]
    # Meanwhile the status line said what it was doing, and how far it had got.
    assert "Looking for labels that look wrong: embedding train images (" in "\n".join(messages)
    assert "Looking for labels that look wrong: checking the labels (" in "\n".join(messages)

    view.image_list.setCurrentRow(0)
    entry = view._current
    qtbot.waitUntil(lambda: view.label_panel.isVisible(), timeout=10_000)
    assert view.label_title.text() == "Correct this label" and view.label_button.text() == "Relabel"
    assert view.label_combo.currentText() == "red"
    qtbot.waitUntil(lambda: entry.result is not None, timeout=120_000)
    assert view.image_subtitle.text().startswith("Filed under blue, looks like red (")
    assert "never saw this image's label" in view.image_subtitle.toolTip()
    # Its Versus map favours the class it looks like over the label it was given, whatever the top class.
    shown = entry.result.prediction
    assert (entry.favour, entry.against) == ("red", "blue") == (shown.contrast_favoured, shown.contrast_class)
    view.set_layer_visible("contrast", True)
    assert view._panels["contrast"].title.full_text() in ("Versus blue", "red over blue")
    assert view._panels["contrast"].toolTip().startswith("Where the image supports red rather than blue")
    view.set_layer_visible("contrast", False)
    assert "Versus shows where each looks like its class rather than its label" in "\n".join(messages)
    assert view.label_current()
    qtbot.waitUntil(lambda: view._label_task is None, timeout=10_000)
    moved = data / "train" / "red" / "red0.png"
    assert moved.is_file() and not wrong.exists() and entry.source == str(moved)
    assert entry.labelled.previous_class == "blue" and "Relabelled red0.png: blue \u2192 red" in messages[-1]
    assert view.labels_since_fit == 1 and view.refit_button.isEnabled()

    # Undo puts it back where it was: in blue/, its label doubted again and open to correction.
    view.image_list.setCurrentRow(0)
    assert view.undo_last_label()
    qtbot.waitUntil(lambda: view._label_task is None, timeout=10_000)
    assert wrong.is_file() and not moved.exists() and entry.labelled is None
    assert view._current is entry and view.label_button.isEnabled() and view.label_button.text() == "Relabel"

    # Keep: the label is recorded as checked (later checks leave it out); Undo takes that back.
    from fgdesk.data.labeling import confirmed_labels

    assert view.keep_label_button.isVisible() and view.keep_current_label()
    qtbot.waitUntil(lambda: view._label_task is None, timeout=10_000)
    assert confirmed_labels(data) == {"train/blue/red0.png": "blue"} and wrong.is_file()
    assert view._items[entry.key].text().endswith("\u2713\u00a0kept\u00a0blue") and view.labels_since_fit == 0
    view.image_list.setCurrentRow(0)
    assert view.label_note.text() == "Kept as blue" and not view.keep_label_button.isEnabled()
    assert view.undo_last_label()
    qtbot.waitUntil(lambda: view._label_task is None, timeout=10_000)
    assert confirmed_labels(data) == {} and entry.labelled is None and view.keep_label_button.isEnabled()


def test_find_copies_lists_a_test_copy_of_a_training_image_and_set_aside_takes_it_out(window, qtbot, tmp_path):
    import shutil

    from helpers_runs import make_run

    from fgdesk.data.labeling import SET_ASIDE_FOLDER
    from fgdesk.data.synthetic import make_demo_dataset

    data = make_demo_dataset(tmp_path / "demo", num_classes=3, per_class=8, size=64, seed=0)
    original = sorted((data / "train" / "class_1_triangle").iterdir())[0]
    copy = data / "test" / "class_1_triangle" / "copy.png"
    shutil.copy(original, copy)
    run = make_run(tmp_path / "runs", data, attention="none")
    view, messages = _inspect_with_labels(window, qtbot, run)

    assert view.find_copies()
    assert view.copies_button.text() == "Cancel"
    qtbot.waitUntil(lambda: view._copies_task is None, timeout=120_000)
    check = view.last_duplicate_check
    assert check is not None and [(row.path, row.other_path) for row in check.pairs] == [(str(copy), str(original))]
    assert view.image_list.count() == 1 and view.copies_button.text() == "Find copies"
    assert view._items[view._entries[0].key].text().endswith(f"=\u00a0{original.name}")
    assert "1 pair of copies among 25 images (1 train and test)" in messages[-1]
    assert "Looking for copies among the dataset's images: reading the images (" in "\n".join(messages)

    view.image_list.setCurrentRow(0)
    entry = view._current
    qtbot.waitUntil(lambda: entry.result is not None and view.label_panel.isVisible(), timeout=120_000)
    assert view.image_subtitle.text() == \
        f"Test copy of a training image: same photo as train/class_1_triangle/{original.name}"
    assert "the test score counts it as seen" in view.image_subtitle.toolTip()
    assert view.label_title.text() == "A copy" and view.set_aside_button.isVisible()
    assert not view.label_row.isVisible() and not view.keep_label_button.isVisible()
    assert view.set_aside_current()
    qtbot.waitUntil(lambda: view._label_task is None, timeout=10_000)
    hidden = data / SET_ASIDE_FOLDER / "test" / "class_1_triangle" / "copy.png"
    assert hidden.is_file() and not copy.exists() and entry.source == str(hidden)
    assert view._items[entry.key].text().endswith("\u2713\u00a0set\u00a0aside")
    assert "Set aside copy.png in .fgdesk-set-aside/test/class_1_triangle" in messages[-1]
    assert view.label_note.text() == "Set aside in .fgdesk-set-aside/test/class_1_triangle"
    assert not view.set_aside_button.isEnabled()

    assert view.undo_last_label()
    qtbot.waitUntil(lambda: view._label_task is None, timeout=10_000)
    assert copy.is_file() and not hidden.exists() and entry.labelled is None and view.set_aside_button.isEnabled()
