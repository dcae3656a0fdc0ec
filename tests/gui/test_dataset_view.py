"""The dataset browser: layout detection, class table, filters, thumbnails, preview, problems."""
from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtGui import QImageReader

from guihelpers import load_dataset

from fgdesk import paths
from fgdesk.gui.thumbnails import STATE_ROLE


def test_a_dataset_loads_into_the_browser_and_thumbnails_appear(window, qtbot, demo_set):
    view = window.dataset_view
    index = load_dataset(qtbot, window, demo_set)
    assert index.layout == "folders"
    assert view.pages.currentWidget() is view.browser
    assert view.thumbnail_model.rowCount() == 24
    assert view.counts_label.text() == "3 classes · 24 images"
    # The class table: "All classes" plus one row per class, with train/test counts.
    assert view.class_tree.topLevelItemCount() == 4
    header = [view.class_tree.headerItem().text(i) for i in range(view.class_tree.columnCount())]
    assert header == ["Class", "Train", "Test", "Total"]
    first_class = view.class_tree.topLevelItem(1)
    assert [first_class.text(i) for i in range(1, 4)] == ["6", "2", "8"]
    # Thumbnails of the visible cells arrive from the pool and land in the disk cache.
    # Loads run on a pool and may finish in any order: wait for the first cell itself rather
    # than for a count.
    model = view.thumbnail_model
    qtbot.waitUntil(lambda: model.cached_count() >= 6, timeout=20_000)
    qtbot.waitUntil(lambda: model.data(model.index(0, 0), STATE_ROLE) == "ready", timeout=20_000)
    cached = list((paths.thumbnail_cache_dir() / "normal").glob("*.png"))
    assert len(cached) >= 6
    thumbnail = QImageReader(str(cached[0])).read()
    assert thumbnail.text("Thumb::URI").startswith("file://")
    assert thumbnail.text("Thumb::MTime").isdigit()
    assert max(thumbnail.width(), thumbnail.height()) <= 128
    # Other cells' thumbnails may still be mid-write; none may leave its temporary file behind.
    qtbot.waitUntil(lambda: not list((paths.thumbnail_cache_dir() / "normal").glob("*.tmp")), timeout=20_000)


def test_filters_by_class_split_and_name(window, qtbot, demo_set):
    view = window.dataset_view
    load_dataset(qtbot, window, demo_set)
    view.select_class(1)
    assert view.thumbnail_model.rowCount() == 8
    assert {view.thumbnail_model.sample_at(r).label for r in range(8)} == {1}
    view.set_split_filter("test")
    assert view.thumbnail_model.rowCount() == 2
    view.select_class(None)
    assert view.thumbnail_model.rowCount() == 6
    view.search_edit.setText("img_007")
    qtbot.waitUntil(lambda: view.thumbnail_model.rowCount() == 3, timeout=5_000)
    assert "Showing 3 of 24 images" == view.showing_label.text()


def test_unlabeled_images_have_their_own_row_and_filter(window, qtbot, tmp_path):
    from fgdesk.data.synthetic import make_demo_dataset

    data = make_demo_dataset(tmp_path / "few-labels", num_classes=3, per_class=4, size=48, seed=3, unlabeled=5)
    view = window.dataset_view
    load_dataset(qtbot, window, data)
    assert view.counts_label.text() == "3 classes · 17 images"
    last = view.class_tree.topLevelItem(view.class_tree.topLevelItemCount() - 1)
    header = [view.class_tree.headerItem().text(i) for i in range(view.class_tree.columnCount())]
    assert header == ["Class", "Train", "Test", "Unlabeled", "Total"]
    assert [last.text(i) for i in range(5)] == ["(unlabeled)", "0", "0", "5", "5"]
    view.class_tree.setCurrentItem(last)
    assert view.thumbnail_model.rowCount() == 5
    assert {view.thumbnail_model.sample_at(r).label for r in range(5)} == {-1}
    view.thumbnail_view.setCurrentIndex(view.thumbnail_model.index(0, 0))
    assert view.preview_fields["Class"].text() == "unlabeled"
    view.select_class(2)  # a real class still filters to its own images only
    assert {view.thumbnail_model.sample_at(r).label for r in range(view.thumbnail_model.rowCount())} == {2}


def test_selected_unlabeled_images_are_labelled_from_the_grid_and_the_view_stays_put(window, qtbot, tmp_path):
    from PySide6.QtCore import QItemSelectionModel

    from fgdesk.data.synthetic import make_demo_dataset

    data = make_demo_dataset(tmp_path / "few-labels", num_classes=3, per_class=4, size=48, seed=3, unlabeled=5)
    view = window.dataset_view
    load_dataset(qtbot, window, data)
    assert view.labeler is not None
    view.class_tree.setCurrentItem(view.class_tree.topLevelItem(view.class_tree.topLevelItemCount() - 1))
    assert view.thumbnail_model.rowCount() == 5
    selection = view.thumbnail_view.selectionModel()
    picked = [str(view.thumbnail_model.sample_at(row).path) for row in (1, 3)]
    selection.clearSelection()
    for row in (1, 3):
        selection.select(view.thumbnail_model.index(row, 0), QItemSelectionModel.SelectionFlag.Select)
    assert view.selected_unlabeled_paths() == picked
    menu = view.label_menu()
    submenu = menu.actions()[0].menu()
    assert menu.actions()[0].text() == "Label 2 unlabeled images as"
    assert [a.text() for a in submenu.actions() if a.text()] == ["class_0_circle", "class_1_triangle", "class_2_square", "New class…"]

    window.inspect_view.add_images([(picked[0], picked[0])])  # also listed in Inspect: its entry follows the file
    submenu.actions()[1].trigger()  # class_1_triangle
    qtbot.waitUntil(lambda: view._label_task is None and not view.is_loading()
                    and view.thumbnail_model.rowCount() == 3, timeout=30_000)
    for path in picked:
        assert (data / "train" / "class_1_triangle" / Path(path).name).is_file() and not Path(path).exists()
    assert window.inspect_view._entries[0].source == str(data / "train" / "class_1_triangle" / Path(picked[0]).name)
    # Still on the (unlabeled) row, near the same place, with the class counts updated.
    assert view.class_tree.currentItem().text(0) == "(unlabeled)" and view.thumbnail_view.currentIndex().row() >= 0
    assert {view.thumbnail_model.sample_at(r).label for r in range(3)} == {-1}
    triangle = [view.class_tree.topLevelItem(i) for i in range(view.class_tree.topLevelItemCount())
                if view.class_tree.topLevelItem(i).text(0) == "class_1_triangle"][0]
    assert triangle.text(1) == "5"  # 3 train images + the 2 labelled

    assert view.label_menu().actions()[-1].text() == "Undo labelling 2 images as class_1_triangle"
    assert view.undo_last_labels()
    qtbot.waitUntil(lambda: view._label_task is None and not view.is_loading()
                    and view.thumbnail_model.rowCount() == 5, timeout=30_000)
    assert all(Path(path).is_file() for path in picked) and view.last_label_batch == []

    # A labelled image filed under the wrong class moves to the right one, and back.
    circle = [view.class_tree.topLevelItem(i) for i in range(view.class_tree.topLevelItemCount())
              if view.class_tree.topLevelItem(i).text(0) == "class_0_circle"][0]
    view.class_tree.setCurrentItem(circle)
    qtbot.waitUntil(lambda: view.thumbnail_model.rowCount() == 4, timeout=10_000)
    selection.clearSelection()
    selection.select(view.thumbnail_model.index(0, 0), QItemSelectionModel.SelectionFlag.Select)
    misfiled = view.thumbnail_model.sample_at(0).path
    assert view.selected_labelled_paths() == [str(misfiled)] and view.selected_unlabeled_paths() == []
    menu = view.label_menu()
    assert [a.text() for a in menu.actions() if a.text()] == [
        "Move 1 labelled image to class", "Set aside 1 image (out of the dataset, undoable)"]
    moving = [a for a in menu.actions()[0].menu().actions() if a.text() == "class_2_square"][0]
    moving.trigger()
    qtbot.waitUntil(lambda: view._label_task is None and not view.is_loading()
                    and view.thumbnail_model.rowCount() == 3, timeout=30_000)
    corrected = view.last_label_batch[0].target  # img_000-2.png: the square class has an img_000.png
    assert corrected.parent == misfiled.parent.parent / "class_2_square" and corrected.is_file()
    assert not misfiled.exists()
    assert view.label_menu().actions()[-1].text() == "Undo moving 1 image to class_2_square"
    assert view.undo_last_labels()
    qtbot.waitUntil(lambda: view._label_task is None and not view.is_loading()
                    and view.thumbnail_model.rowCount() == 4, timeout=30_000)
    assert misfiled.is_file() and not corrected.exists()

    # Another folder opened while a labelling finishes: the moves are reported, nothing is
    # reloaded over the new folder, and "Undo" is not offered there.
    selection.clearSelection()
    view.class_tree.setCurrentItem(view.class_tree.topLevelItem(view.class_tree.topLevelItemCount() - 1))
    selection.select(view.thumbnail_model.index(0, 0), QItemSelectionModel.SelectionFlag.Select)
    other = make_demo_dataset(tmp_path / "other", num_classes=2, per_class=3, size=48)
    assert view.label_selected("class_0_circle")
    view.load_dataset(other)
    qtbot.waitUntil(lambda: view._label_task is None and not view.is_loading(), timeout=30_000)
    assert str(view.index.root) == str(other) and str(view.labeler.root) == str(other)
    assert not any(action.text().startswith("Undo") for action in view.label_menu().actions())


def test_preview_shows_the_image_with_its_details(window, qtbot, demo_set):
    view = window.dataset_view
    load_dataset(qtbot, window, demo_set)
    view.thumbnail_view.setCurrentIndex(view.thumbnail_model.index(3, 0))
    sample = view.thumbnail_model.sample_at(3)
    qtbot.waitUntil(lambda: view.preview_canvas.pixmap() is not None, timeout=10_000)
    assert view.preview_fields["File"].text() == Path(sample.path).name
    assert view.preview_fields["Split"].text() == sample.split
    assert view.preview_fields["Class"].text() == view.index.classes[sample.label]
    assert view.preview_fields["Size"].text() == "64 × 64 px"
    assert view.preview_fields["Box"].text() != "—"  # the demo set ships boxes.csv


def test_problems_are_listed(window, qtbot, demo_set, tmp_path):
    broken = tmp_path / "broken_set"
    shutil.copytree(demo_set, broken)
    (broken / "train" / "class_0_circle" / "zz_corrupt.png").write_bytes(b"not an image at all")
    (broken / "train" / "empty_class").mkdir()
    from PIL import Image

    Image.new("RGB", (12, 10), "red").save(broken / "train" / "class_1_triangle" / "zz_tiny.png")
    view = window.dataset_view
    load_dataset(qtbot, window, broken)
    reasons = {view.problem_tree.topLevelItem(i).text(0): view.problem_tree.topLevelItem(i).text(1)
               for i in range(view.problem_tree.topLevelItemCount())}
    assert "zz_corrupt.png" in reasons
    assert "zz_tiny.png" in reasons and "very small" in reasons["zz_tiny.png"]
    assert any("no images" in reason for reason in reasons.values())
    assert view.side_tabs.tabText(2).startswith("Problems (")


def test_find_copies_lists_a_mirrored_test_copy_with_the_problems_and_another_folder_forgets_it(
        window, qtbot, demo_set, tmp_path):
    from PIL import Image, ImageOps

    copied = tmp_path / "copied_set"
    shutil.copytree(demo_set, copied)
    original = sorted((copied / "train" / "class_2_square").iterdir())[0]
    copy = copied / "test" / "class_2_square" / "mirrored.png"
    with Image.open(original) as image:
        ImageOps.mirror(image.convert("RGB")).save(copy)
    view = window.dataset_view
    load_dataset(qtbot, window, copied)
    messages: list[str] = []
    view.status_message.connect(messages.append)
    # Its button cancels it while it runs.
    assert view.find_copies() and view.copies_button.text() == "Cancel"
    view.copies_button.click()
    qtbot.waitUntil(lambda: view._copies_task is None, timeout=60_000)
    assert messages[-1] == "Looking for copies: cancelled" and view.last_duplicate_check is None
    assert view.copies_button.text() == "Find copies"
    view.copies_button.click()
    assert view._copies_task is not None
    qtbot.waitUntil(lambda: view._copies_task is None, timeout=60_000)
    tree = view.problem_tree
    rows = [[tree.topLevelItem(i).text(c) for c in range(2)] for i in range(tree.topLevelItemCount())]
    # The copy is listed with the problems: the folder has no other.
    assert rows == [["mirrored.png", f"same photo as train/class_2_square/{original.name} (train and test)"]]
    assert view.side_tabs.tabText(2) == "Problems (1)" and view.copies_button.text() == "Find copies"
    assert messages[-1] == "1 pair of copies among 25 images (1 train and test), by their pixels"
    assert view.copies_note.text() == messages[-1]
    assert "Looking for copies: reading the images (" in "\n".join(messages)
    tree.itemActivated.emit(tree.topLevelItem(0), 0)  # Enter or a double click
    shown = view.thumbnail_model.sample_at(view.thumbnail_view.currentIndex().row())
    assert shown.path == copy and view.side_tabs.currentIndex() == 0
    assert view.label_menu().actions()[-1].text() == "Set aside 1 image (out of the dataset, undoable)"

    # Set aside from its row: it leaves the grid and the list; Undo brings both back.
    menu = view.problem_menu(tree.topLevelItem(0))
    assert [a.text() for a in menu.actions()] == ["Show in the grid", "Set aside mirrored.png (out of the dataset, undoable)"]
    images = view.index.summary().num_images
    menu.actions()[1].trigger()
    qtbot.waitUntil(lambda: view._label_task is None and not view.is_loading()
                    and view.index.summary().num_images == images - 1, timeout=30_000)
    aside = copied / ".fgdesk-set-aside" / "test" / "class_2_square" / "mirrored.png"
    assert aside.is_file() and not copy.exists() and view.thumbnail_model.row_of(copy) < 0
    assert tree.topLevelItem(0).text(0) == "No problems found" and view.side_tabs.tabText(2) == "Problems"
    assert any(m.startswith("Set aside 1 image(s) in .fgdesk-set-aside/") for m in messages)
    undo = view.problem_menu(None).actions()
    assert [a.text() for a in undo] == ["Undo setting aside 1 image"]
    undo[0].trigger()
    qtbot.waitUntil(lambda: view._label_task is None and not view.is_loading()
                    and view.index.summary().num_images == images, timeout=30_000)
    assert copy.is_file() and not aside.exists() and tree.topLevelItem(0).text(0) == "mirrored.png"
    assert "Moved 1 image(s) back to the dataset" in messages

    load_dataset(qtbot, window, demo_set)  # another folder: its copies are not known yet
    qtbot.waitUntil(lambda: Path(view.index.root) == Path(demo_set), timeout=30_000)
    assert tree.topLevelItem(0).text(0) == "No problems found" and view.side_tabs.tabText(2) == "Problems"
    assert view.copies_note.text() == "" and view.last_duplicate_check is None


def test_a_folder_that_is_not_a_dataset_says_why(window, qtbot, tmp_path):
    empty = tmp_path / "nothing here"
    empty.mkdir()
    window.dataset_view.load_dataset(empty)
    qtbot.waitUntil(lambda: not window.dataset_view.is_loading(), timeout=10_000)
    view = window.dataset_view
    assert view.pages.currentWidget() is view.welcome
    assert "no images found" in view.welcome_error.text()
    assert view.welcome_error.isVisibleTo(view)


def test_a_slow_folder_finishing_after_a_newer_one_is_dropped(window, qtbot, demo_set, tmp_path, monkeypatch):
    import threading

    from fgdesk.gui import workers

    slow = tmp_path / "slow_set"
    shutil.copytree(demo_set, slow)
    release = threading.Event()
    real_index = workers.index_dataset

    def index_dataset(path, layout="auto"):
        if Path(path) == slow:
            release.wait(30)  # a big folder on a network drive
        return real_index(path, layout=layout)

    monkeypatch.setattr(workers, "index_dataset", index_dataset)
    view = window.dataset_view
    opened: list[str] = []
    view.dataset_loaded.connect(lambda index: opened.append(str(index.root)))
    view.load_dataset(slow)
    view.load_dataset(demo_set)
    qtbot.waitUntil(lambda: view.index is not None and Path(view.index.root) == Path(demo_set), timeout=30_000)
    release.set()
    qtbot.waitUntil(lambda: not view.is_loading(), timeout=30_000)
    assert Path(view.index.root) == Path(demo_set) and view.pages.currentWidget() is view.browser
    assert [Path(p) for p in opened] == [Path(demo_set)]


def test_thousands_of_problems_list_the_first_ones_and_count_the_rest(window, tmp_path):
    from fgdesk.data.layouts import DatasetIndex, Problem, Sample
    from fgdesk.gui import workers
    from fgdesk.gui.dataset_view import PROBLEM_ROWS_SHOWN

    samples = [Sample(tmp_path / f"c{k % 2}" / f"{k:05d}.png", k % 2, "train") for k in range(1_800)]
    index = DatasetIndex(tmp_path, "folders", ["c0", "c1"], samples, [Problem(tmp_path / "broken.jpg", "truncated file")])
    index.image_sizes = {s.path: (20, 64) for s in samples[:1_500]}  # 1,500 images too small to learn from
    loaded = workers.prepare_loaded(index)
    assert len(loaded.problem_rows) == 1_501 and loaded.problem_rows[0][1] == "truncated file"
    assert loaded.problem_rows[1][1] == "very small image (20×64 px)"
    view = window.dataset_view
    view._on_loaded(loaded)
    tree = view.problem_tree
    assert tree.topLevelItemCount() == PROBLEM_ROWS_SHOWN + 1
    assert tree.topLevelItem(PROBLEM_ROWS_SHOWN).text(0) == f"… and {1_501 - PROBLEM_ROWS_SHOWN:,} more"
    assert view.side_tabs.tabText(2) == "Problems (1,501)" and view.problem_count == 1_501
    assert view.thumbnail_model.rowCount() == 1_800
