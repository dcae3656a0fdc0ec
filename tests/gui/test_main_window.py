"""The main window: pages, menus, About box, recent lists, drops, first run, geometry."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from guihelpers import load_dataset

from fgdesk import paths
from fgdesk.gui.main_window import MainWindow


def test_window_opens_with_three_pages(window):
    assert window.isVisible()
    assert [window.nav.item(i).text() for i in range(window.nav.count())] == ["Dataset", "Train", "Inspect"]
    for page in ("train", "inspect", "dataset"):
        window.show_page(page)
        assert window.current_page() == page
    menus = [action.text().replace("&", "") for action in window.menuBar().actions()]
    assert menus == ["File", "Run", "View", "Help"]


def test_about_box_shows_versions_and_the_device(window, qtbot):
    box = window.show_about()
    qtbot.waitUntil(lambda: "device" in window.environment, timeout=60_000)
    text = box.text()
    for expected in ("fgdesk", "Python", "PyTorch", "PySide6", "pyqtgraph", window.environment["device"]):
        assert expected in text
    assert "CPU" in window.environment["device"] or "GPU" in window.environment["device"] or "CUDA" in window.environment["device"]
    assert window.device_status.text().startswith("Device: ")
    box.close()


def test_first_run_offers_the_demo_set_and_makes_it_in_one_click(window, qtbot, monkeypatch):
    import fgdesk.data

    made = []
    real = fgdesk.data.make_demo_dataset

    def small_demo(root, **kwargs):  # same code path, fewer images to keep the test quick
        made.append(root)
        return real(root, num_classes=3, per_class=4, size=48)

    monkeypatch.setattr(fgdesk.data, "make_demo_dataset", small_demo)
    assert window.first_run
    assert window.dataset_view.demo_button.text() == "Create the demo dataset"
    qtbot.mouseClick(window.dataset_view.demo_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.dataset_view.index is not None, timeout=30_000)
    assert made == [paths.demo_data_dir()]
    assert Path(window.dataset_view.index.root) == paths.demo_data_dir()
    assert window.dataset_view.thumbnail_model.rowCount() == 12


def test_recent_datasets_and_geometry_are_remembered(window, qtbot, demo_set, monkeypatch):
    load_dataset(qtbot, window, demo_set)
    window.resize(1111, 777)
    window.dataset_view.splitter.setSizes([300, 500, 300])
    assert str(demo_set) in window.recent_datasets.items()
    recent_actions = [a.text() for a in window.recent_menu.actions()]
    assert str(demo_set) in recent_actions
    saved_splitter = window.dataset_view.splitter.saveState()
    window.close()
    restored = []
    # The offscreen screen is 800 px wide, so Qt clamps restored sizes: check what is handed back.
    monkeypatch.setattr(MainWindow, "restoreGeometry", lambda self, data: restored.append(bytes(data)) or True)
    again = MainWindow()
    qtbot.addWidget(again)
    assert again.recent_datasets.items()[0] == str(demo_set)
    assert not again.first_run
    assert restored == [bytes(window.saveGeometry())]
    assert again.dataset_view.splitter.saveState() == saved_splitter
    assert again.dataset_view.recent_list.count() == 1


def test_dropping_a_folder_on_the_window_opens_it(window, qtbot, demo_set):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(demo_set))])
    event = QDropEvent(QPointF(300, 300), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.dataset_view.index is not None, timeout=30_000)
    assert Path(window.dataset_view.index.root) == demo_set
    assert window.current_page() == "dataset"
    assert window.windowTitle() == f"fgdesk — {demo_set.name}"


def test_dropping_images_goes_to_inspect(window, demo_set):
    image = next(demo_set.rglob("*.png"))
    window.handle_dropped_paths([image])
    assert window.current_page() == "inspect"
    assert window.inspect_view.image_list.count() == 1


def test_a_folder_opened_after_labels_were_given_in_inspect_is_not_replaced(window, qtbot, demo_set, tmp_path):
    from fgdesk.data.synthetic import make_demo_dataset

    load_dataset(qtbot, window, demo_set)
    window.show_page("inspect")
    window._on_labels_changed(str(demo_set), 1)  # labels given in Inspect: the open folder is stale
    assert window._stale_dataset == str(demo_set)
    other = make_demo_dataset(tmp_path / "other", num_classes=2, per_class=3, size=48)
    window.dataset_view.load_dataset(other)
    window.show_page("dataset")
    qtbot.waitUntil(lambda: not window.dataset_view.is_loading(), timeout=30_000)
    assert str(window.dataset_view.index.root) == str(other) and window._stale_dataset is None
