"""The main window: a side bar with the Dataset, Train and Inspect pages, menus and the About box."""
from __future__ import annotations

import logging
import os
import platform
import sys
from pathlib import Path

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import QByteArray, QSize, Qt, QTimer, Signal, qVersion
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

import fgdesk
from fgdesk import paths
from fgdesk.gui import workers
from fgdesk.gui.dataset_view import DatasetView
from fgdesk.gui.inspect_view import InspectView
from fgdesk.gui.qtutil import RecentList, app_settings, is_image_file, open_in_file_manager
from fgdesk.gui.training_view import TrainingView
from fgdesk.gui.widgets import line_icon

log = logging.getLogger(__name__)

PAGES = ("dataset", "train", "inspect")
PAGE_TITLES = {"dataset": "Dataset", "train": "Train", "inspect": "Inspect"}
PAGE_ICONS = {"dataset": "dataset", "train": "train", "inspect": "inspect"}
DEVICE_PROBE_DELAY_MS = 400  # after the window is up: the probe imports torch


class MainWindow(QMainWindow):
    """fgdesk's single window."""

    environment_ready = Signal(dict)

    def __init__(self, settings=None, app_icon: QIcon | None = None) -> None:
        super().__init__()
        # Worker threads run Python between torch calls, and the GUI thread gives up the GIL
        # on each Qt call, then waits up to one switch interval to get it back. 1 ms instead
        # of Python's 5 ms halved the worst event-loop stall measured during a run.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        self.settings = settings if settings is not None else app_settings()
        self.recent_datasets = RecentList(self.settings, "recent/datasets")
        self.recent_runs = RecentList(self.settings, "recent/runs")
        self.environment: dict[str, str] = {}
        self.about_box: QMessageBox | None = None
        self._close_after_stop = False
        self._stale_dataset: str | None = None  # labels given in Inspect moved files of the open dataset
        self._worker_done = False
        self._runner = workers.TaskRunner(parent=self)
        self._app_icon = app_icon or QIcon()
        self.setWindowTitle("fgdesk")
        self.setAcceptDrops(True)
        self.setMinimumSize(QSize(980, 640))

        self.dataset_view = DatasetView()
        self.training_view = TrainingView()
        self.inspect_view = InspectView()
        self.pages = QStackedWidget()
        for view in (self.dataset_view, self.training_view, self.inspect_view):
            self.pages.addWidget(view)

        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self._build_sidebar())
        row.addWidget(self.pages, 1)
        self.setCentralWidget(central)
        self.status = self.statusBar()
        self.status.setSizeGripEnabled(True)
        self.device_status = QLabel("Detecting the compute device…")
        self.device_status.setObjectName("Muted")
        self.status.addPermanentWidget(self.device_status)

        self._build_menus()
        self._connect_views()
        self.dataset_view.set_recent(self.recent_datasets.items())
        self._refresh_recent_menus()
        self._restore_window()
        self.show_page("dataset")
        self._first_run_offer()
        QTimer.singleShot(DEVICE_PROBE_DELAY_MS, self.probe_environment)
        QTimer.singleShot(0, self.training_view.refresh_runs)
        QTimer.singleShot(0, self.inspect_view.refresh_runs)

    # ================================================================== layout
    def _build_sidebar(self) -> QWidget:
        panel = QWidget()
        panel.setObjectName("SidebarPanel")
        panel.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        panel.setFixedWidth(184)
        column = QVBoxLayout(panel)
        column.setContentsMargins(0, 16, 0, 12)
        column.setSpacing(6)
        title_row = QHBoxLayout()
        title_row.setContentsMargins(18, 0, 12, 8)
        title_row.setSpacing(8)
        if not self._app_icon.isNull():
            icon_label = QLabel()
            icon_label.setPixmap(self._app_icon.pixmap(26, 26))
            title_row.addWidget(icon_label)
        title = QLabel("fgdesk")
        title.setObjectName("SidebarTitle")
        title_row.addWidget(title)
        title_row.addStretch(1)
        column.addLayout(title_row)
        self.nav = QListWidget()
        self.nav.setObjectName("Sidebar")
        self.nav.setIconSize(QSize(20, 20))
        self.nav.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        for page in PAGES:
            item = QListWidgetItem(line_icon(PAGE_ICONS[page], "#d7dce5", 40), PAGE_TITLES[page])
            item.setData(Qt.ItemDataRole.UserRole, page)
            item.setSizeHint(QSize(160, 42))
            self.nav.addItem(item)
        self.nav.currentRowChanged.connect(self.pages.setCurrentIndex)
        column.addWidget(self.nav, 1)
        self.sidebar_device = QLabel("")
        self.sidebar_device.setObjectName("SidebarFoot")
        self.sidebar_device.setWordWrap(True)
        self.sidebar_device.setContentsMargins(18, 0, 12, 0)
        column.addWidget(self.sidebar_device)
        return panel

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.open_action = self._action(file_menu, "&Open dataset…", self.dataset_view.choose_folder, QKeySequence.StandardKey.Open)
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.demo_action = self._action(file_menu, "Open the &demo dataset", self.open_demo)
        file_menu.addSeparator()
        self._action(file_menu, "Open &images to inspect…", self._inspect_files, "Ctrl+I")
        self._action(file_menu, "&Paste image to inspect", self._paste_to_inspect, "Ctrl+Shift+V")
        self._action(file_menu, "Classify a folder to &CSV…", self._inspect_csv)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        run_menu = bar.addMenu("&Run")
        self.train_action = self._action(run_menu, "&Train", self._train_from_menu, "Ctrl+T")
        self.pause_action = self._action(run_menu, "&Pause / resume", self.training_view.toggle_pause, "Ctrl+P")
        self.stop_action = self._action(run_menu, "&Stop", self.training_view.stop_training)
        run_menu.addSeparator()
        self.recent_runs_menu = run_menu.addMenu("&Recent runs")
        self._action(run_menu, "Show the runs &folder", lambda: self._open_folder(paths.runs_dir()))

        view_menu = bar.addMenu("&View")
        for number, page in enumerate(PAGES, start=1):
            self._action(view_menu, PAGE_TITLES[page], lambda p=page: self.show_page(p), f"Ctrl+{number}")

        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "&About fgdesk", self.show_about)
        self._action(help_menu, "Show the &log folder", lambda: self._open_folder(paths.log_dir()))
        run_menu.aboutToShow.connect(self._update_run_actions)

    def _action(self, menu: QMenu, text: str, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        return action

    def _connect_views(self) -> None:
        self.dataset_view.dataset_loaded.connect(self._on_dataset_loaded)
        self.dataset_view.status_message.connect(self.show_message)
        self.training_view.status_message.connect(self.show_message)
        self.training_view.open_in_inspect.connect(self.open_run_in_inspect)
        self.training_view.open_mistakes.connect(self.open_mistakes_in_inspect)
        self.training_view.run_started.connect(self._remember_run)
        self.training_view.run_ended.connect(lambda _event: self.inspect_view.refresh_runs())
        self.inspect_view.status_message.connect(self.show_message)
        self.inspect_view.run_chosen.connect(self._remember_run)
        self.inspect_view.labels_changed.connect(self._on_labels_changed)
        self.dataset_view.labels_changed.connect(self.inspect_view.note_labels_given_elsewhere)
        self.dataset_view.files_moved.connect(self.inspect_view.follow_moved_files)
        self.training_view.classifier_trained.connect(self.inspect_view.classifier_changed)
        self.training_view.deleting_runs.connect(self.inspect_view.forget_runs)  # stop using them first
        self.training_view.runs_deleted.connect(self.inspect_view.forget_runs)
        self.inspect_view.classifier_refitted.connect(self.training_view.show_classifier_report)
        self.nav.currentRowChanged.connect(lambda _row: self._reload_stale_dataset())

    # ================================================================== pages
    def show_page(self, page: str) -> None:
        self.nav.setCurrentRow(PAGES.index(page))

    def current_page(self) -> str:
        return PAGES[self.pages.currentIndex()]

    def show_message(self, text: str) -> None:
        self.status.showMessage(text, 8000)

    # ================================================================== datasets
    def open_path(self, path: str | Path) -> None:
        """Open a folder as a dataset, or image files in the Inspect page."""
        path = Path(path)
        if path.is_file() and is_image_file(path):
            self.inspect_view.add_paths([path])
            self.show_page("inspect")
        else:
            self.dataset_view.load_dataset(path)
            self.show_page("dataset")

    def open_demo(self) -> None:
        self.show_page("dataset")
        self.dataset_view.open_demo()

    def _on_dataset_loaded(self, index) -> None:
        self.recent_datasets.add(str(index.root))
        self.settings.setValue("first_run_done", True)
        self.dataset_view.set_recent(self.recent_datasets.items())
        self._refresh_recent_menus()
        self.training_view.set_dataset(index)
        self.setWindowTitle(f"fgdesk — {Path(index.root).name}")

    def _on_labels_changed(self, root: str, _change: int = 0) -> None:
        """Files moved in the open dataset: index it again, once, when its pages are next shown
        (labelling many images in a row must not re-index after each one)."""
        index = self.dataset_view.index
        if index is None or os.path.realpath(index.root) != os.path.realpath(root):
            return
        self._stale_dataset = str(index.root)
        self._reload_stale_dataset()

    def _reload_stale_dataset(self) -> None:
        if self._stale_dataset is None or self.current_page() == "inspect":
            return
        root, self._stale_dataset = self._stale_dataset, None
        index = self.dataset_view.index
        # Another folder opened since (or opening now) wins: the stale one is not brought back.
        if index is not None and str(index.root) == root and not self.dataset_view.is_loading():
            self.dataset_view.load_dataset(root, refresh=True)

    def _first_run_offer(self) -> None:
        """On first launch the welcome page leads with the one-click demo dataset."""
        first_run = not self.settings.value("first_run_done", False, type=bool)
        self.first_run = first_run and not self.recent_datasets.items()
        if self.first_run:
            self.dataset_view.demo_button.setObjectName("Primary")
            self.dataset_view.open_button.setObjectName("")
            for button in (self.dataset_view.demo_button, self.dataset_view.open_button):
                button.style().unpolish(button)
                button.style().polish(button)
            self.dataset_view.welcome.title_label.setText("Welcome to fgdesk")
            self.dataset_view.welcome.text_label.setText(
                "Train a fine-grained image recognizer without labels, then see where it looks. "
                "Try it in one click with the built-in demo dataset (8 look-alike classes, made in "
                "seconds), or open a folder of your own images: CUB-200-2011, FGVC-Aircraft, one "
                "sub-folder per class, or an unlabeled folder. You can also drop a folder on this window."
            )
            self.show_message("Welcome! Create the demo dataset to try fgdesk in one click.")

    def _refresh_recent_menus(self) -> None:
        self.recent_menu.clear()
        for path in self.recent_datasets.items():
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _c=False, p=path: self.open_path(p))
        if self.recent_menu.isEmpty():
            empty = self.recent_menu.addAction("No recent datasets")
            empty.setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            clear = self.recent_menu.addAction("Clear the list")
            clear.triggered.connect(self._clear_recent_datasets)
        self.recent_runs_menu.clear()
        for path in self.recent_runs.items():
            action = self.recent_runs_menu.addAction(Path(path).name)
            action.setToolTip(path)
            action.triggered.connect(lambda _c=False, p=path: self.open_run_in_inspect(p))
        if self.recent_runs_menu.isEmpty():
            empty = self.recent_runs_menu.addAction("No recent runs")
            empty.setEnabled(False)

    def _clear_recent_datasets(self) -> None:
        self.recent_datasets.clear()
        self.dataset_view.set_recent([])
        self._refresh_recent_menus()

    def _remember_run(self, run_dir: str) -> None:
        if run_dir:
            self.recent_runs.add(run_dir)
            self._refresh_recent_menus()

    # ================================================================== runs and inspect
    def open_run_in_inspect(self, run_dir: str) -> None:
        self.inspect_view.set_run(run_dir)
        self.show_page("inspect")

    def open_mistakes_in_inspect(self, run_dir: str, mistakes: list) -> None:
        self.inspect_view.show_mistakes(run_dir, mistakes)
        self.show_page("inspect")

    def _train_from_menu(self) -> None:
        self.show_page("train")
        self.training_view.start_training()

    def _update_run_actions(self) -> None:
        training = self.training_view.is_training()
        self.train_action.setEnabled(self.training_view.can_start())
        self.pause_action.setEnabled(training)
        self.stop_action.setEnabled(training)

    def _inspect_files(self) -> None:
        self.show_page("inspect")
        self.inspect_view.choose_files()

    def _paste_to_inspect(self) -> None:
        self.show_page("inspect")
        self.inspect_view.paste_from_clipboard()

    def _inspect_csv(self) -> None:
        self.show_page("inspect")
        self.inspect_view.choose_csv_folder()

    def _open_folder(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        open_in_file_manager(folder)

    # ================================================================== environment and About
    def probe_environment(self) -> None:
        """Find versions and the device on a worker thread (this is where torch is first imported)."""
        self._runner.start(lambda ctx: workers.probe_environment(), on_done=self._on_environment,
                           on_failed=lambda msg, tb: self._on_environment({"device": f"unknown ({msg})"}),
                           name="probe environment")

    def _on_environment(self, info: dict) -> None:
        self.environment = dict(info)
        device = info.get("device", "unknown")
        self.device_status.setText(f"Device: {device}")
        self.sidebar_device.setText(device)
        self.sidebar_device.setToolTip(f"Compute device: {device}")
        self.environment_ready.emit(self.environment)
        if self.about_box is not None:
            self.about_box.setText(self.about_text())

    def about_text(self) -> str:
        import numpy
        import PIL
        import pyqtgraph

        env = self.environment
        rows = [
            ("fgdesk", fgdesk.__version__),
            ("Device", env.get("device", "detecting…")),
            ("Python", platform.python_version()),
            ("PyTorch", env.get("torch", "detecting…")),
            ("torchvision", env.get("torchvision", "detecting…")),
            ("Qt / PySide6", f"{qVersion()} / {pyside_version}"),
            ("pyqtgraph", pyqtgraph.__version__),
            ("NumPy", numpy.__version__),
            ("Pillow", PIL.__version__),
            ("System", f"{platform.system()} {platform.release()} ({platform.machine()})"),
            ("Data folder", str(paths.runs_dir().parent)),
        ]
        table = "".join(f"<tr><td style='color:#667085;padding-right:14px'>{k}</td><td>{v}</td></tr>" for k, v in rows)
        return (
            "<h3 style='margin-bottom:2px'>fgdesk</h3>"
            "<p>Self-supervised fine-grained image recognition on the desktop: "
            "train without labels, classify, and see where the model looks.</p>"
            f"<table>{table}</table>"
        )

    def show_about(self) -> QMessageBox:
        box = QMessageBox(self)
        box.setWindowTitle("About fgdesk")
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setText(self.about_text())
        if not self._app_icon.isNull():
            box.setIconPixmap(self._app_icon.pixmap(64, 64))
        box.setStandardButtons(QMessageBox.StandardButton.Ok)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.destroyed.connect(lambda *_: setattr(self, "about_box", None))
        self.about_box = box
        box.open()
        if not self.environment:
            self.probe_environment()
        return box

    # ================================================================== drag and drop
    def dragEnterEvent(self, event) -> None:
        mime = event.mimeData()
        if mime.hasUrls() and any(url.isLocalFile() for url in mime.urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:
        local = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        if not local:
            event.ignore()
            return
        event.acceptProposedAction()
        self.handle_dropped_paths(local)

    def handle_dropped_paths(self, local: list[Path]) -> None:
        """A folder opens as a dataset; image files (or anything dropped on Inspect) go to Inspect."""
        images = [p for p in local if p.is_file() and is_image_file(p)]
        folders = [p for p in local if p.is_dir()]
        if self.current_page() == "inspect" or (images and not folders):
            self.inspect_view.add_paths(local)
            self.show_page("inspect")
        elif folders:
            self.dataset_view.load_dataset(folders[0])
            self.show_page("dataset")

    # ================================================================== window state
    def _restore_window(self) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 820)
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        for name, splitter in self._splitters().items():
            value = self.settings.value(f"splitters/{name}")
            if isinstance(value, QByteArray) and not value.isEmpty():
                splitter.restoreState(value)

    def _splitters(self) -> dict:
        return {
            "dataset": self.dataset_view.splitter,
            "train": self.training_view.splitter,
            "inspect": self.inspect_view.splitter,
        }

    def _save_window(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        for name, splitter in self._splitters().items():
            self.settings.setValue(f"splitters/{name}", splitter.saveState())
        self.settings.sync()

    def confirm_stop_training(self) -> bool:
        """Ask before closing during a run (tests replace this)."""
        answer = QMessageBox.question(
            self,
            "Stop training and quit?",
            "A run is in progress. fgdesk will stop it, save a checkpoint and quit; "
            "you can resume the run later from the Train page.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel,
        )
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:
        view = self.training_view
        if view.is_training() and not self._close_after_stop:
            if not self.confirm_stop_training():
                event.ignore()
                return
            self._close_after_stop = True
            self.show_message("Stopping the run and saving a checkpoint before quitting…")
            view.worker.finished.connect(self._close_once_stopped)
            view.stop_training()
            event.ignore()
            return
        if view.is_training():  # asked again while the run is still saving its checkpoint
            if not self._worker_done:
                event.ignore()
                return
            view.wait_for_worker(30_000)  # finished() was emitted: the thread is returning
        self._save_window()
        self.dataset_view.shutdown()
        self.inspect_view.shutdown()
        view.shutdown()
        self._runner.cancel_all()
        event.accept()

    def _close_once_stopped(self) -> None:
        self._worker_done = True
        QTimer.singleShot(0, self.close)
