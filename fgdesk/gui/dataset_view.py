"""Dataset browser: open a folder, see its classes and splits, scroll its thumbnails, check problems."""
from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QRect, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QImage, QImageIOHandler, QImageReader, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from fgdesk import paths
from fgdesk.gui import workers
from fgdesk.gui.qtutil import show_error
from fgdesk.gui.thumbnails import ThumbnailModel, ThumbnailView
from fgdesk.gui.widgets import Card, EmptyState, ImageCanvas, chip, muted_label

log = logging.getLogger(__name__)

PREVIEW_SIZE = 1024  # longest side the preview decodes to (never the full file on the GUI thread)
PROBLEM_ROWS_SHOWN = 500  # more would take the GUI thread seconds to build, and nobody reads them all
COPY_PAIRS_SHOWN = 500
PROBLEMS_TAB = 2
SPLIT_ORDER = ("train", "val", "test", "unlabeled")
LAYOUT_NAMES = {
    "cub": "CUB-200-2011",
    "aircraft": "FGVC-Aircraft",
    "folders": "Class folders",
    "unlabeled": "Unlabeled images",
}


def decode_preview(path: str, crop_bottom: int, size: int = PREVIEW_SIZE) -> tuple[QImage, tuple[int, int], float]:
    """(image at most `size` px, full displayed (w, h) after the crop, display scale); worker thread."""
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    full = reader.size()  # before EXIF orientation
    if reader.canRead() and full.isValid():
        height = full.height() - crop_bottom if 0 < crop_bottom < full.height() else full.height()
        if height != full.height():
            reader.setClipRect(QRect(0, 0, full.width(), height))
        if full.width() > size or height > size:
            reader.setScaledSize(QSize(full.width(), height).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio))
        rotated = bool(reader.transformation() & QImageIOHandler.Transformation.TransformationRotate90)
        image = reader.read()
        if not image.isNull():
            shown = (height, full.width()) if rotated else (full.width(), height)
            scale = image.width() / max(1, shown[0])
            return image.convertToFormat(QImage.Format.Format_RGB32), shown, scale
    from fgdesk.gui.qtutil import pil_to_qimage

    rgb = workers.core("fgdesk.data").load_rgb(path, crop_bottom=crop_bottom)
    width, height = rgb.size
    rgb.thumbnail((size, size))
    return pil_to_qimage(rgb), (width, height), rgb.width / max(1, width)


class DatasetView(QWidget):
    """The Dataset page. Emits `dataset_loaded(index)` once a folder has been indexed."""

    dataset_loaded = Signal(object)  # fgdesk.data.DatasetIndex
    status_message = Signal(str)
    labels_changed = Signal(str, int)  # (a dataset's root, labels given: negative for undone ones)
    files_moved = Signal(object)  # [(old path, new path)] of the images a label or an undo moved

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Page")
        self.index = None
        self.summary = None
        self._runner = workers.TaskRunner(parent=self)
        self._label_runner = workers.TaskRunner(parent=self)  # file moves; loading has its own runner
        self.labeler = None  # fgdesk.data.labeling.DatasetLabeler when the open dataset takes labels
        self.last_label_batch: list = []  # the LabelMoves of the last "Label … as", for undo
        self._batch_labeler = None  # the DatasetLabeler those moves belong to
        self._label_task = None
        self._copies_runner = workers.TaskRunner(parent=self)
        self._copies_task = None
        self.last_duplicate_check = None  # fgdesk.evaluate.duplicates.DuplicateCheck of the folder shown
        self._problem_rows: list[tuple[str, str]] = []  # the index's problems; copies found are listed after them
        self.last_error_box = None
        self._loading_path: str | None = None
        self._preview_generation = 0
        self._load_generation = 0  # bumped by each folder asked for; older results are dropped
        self._recent: list[str] = []

        self.pages = QStackedWidget()
        self.welcome = self._build_welcome()
        self.loading = self._build_loading()
        self.browser = self._build_browser()
        self.pages.addWidget(self.welcome)
        self.pages.addWidget(self.loading)
        self.pages.addWidget(self.browser)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.pages)

        self._filter_timer = QTimer(self)
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(150)
        self._filter_timer.timeout.connect(self._apply_filter)

    # ------------------------------------------------------------------ pages
    def _build_welcome(self) -> QWidget:
        page = EmptyState(
            "folder",
            "Open a dataset",
            "Choose a folder of images: CUB-200-2011, FGVC-Aircraft, one sub-folder per class "
            "(optionally under train/ and test/), or a plain folder of unlabeled images. "
            "You can also drop a folder anywhere on this window.",
        )
        self.open_button = page.add_button("Open folder…", primary=True)
        self.open_button.clicked.connect(self.choose_folder)
        self.demo_button = page.add_button("Create the demo dataset")
        self.demo_button.setToolTip(
            "A small synthetic fine-grained set (8 classes) with known discriminative regions, made in seconds."
        )
        self.demo_button.clicked.connect(self.open_demo)
        self.welcome_error = QLabel()
        self.welcome_error.setObjectName("Error")
        self.welcome_error.setWordWrap(True)
        self.welcome_error.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.welcome_error.setMaximumWidth(560)
        self.welcome_error.hide()
        page.extra.addWidget(self.welcome_error, 0, Qt.AlignmentFlag.AlignHCenter)
        self.recent_title = QLabel("Recent datasets")
        self.recent_title.setObjectName("Subtitle")
        self.recent_list = QListWidget()
        self.recent_list.setMaximumWidth(560)
        self.recent_list.setMaximumHeight(150)
        self.recent_list.itemActivated.connect(lambda item: self.load_dataset(item.data(Qt.ItemDataRole.UserRole)))
        self.recent_list.itemClicked.connect(lambda item: self.load_dataset(item.data(Qt.ItemDataRole.UserRole)))
        page.extra.addSpacing(18)
        page.extra.addWidget(self.recent_title, 0, Qt.AlignmentFlag.AlignHCenter)
        page.extra.addWidget(self.recent_list, 0, Qt.AlignmentFlag.AlignHCenter)
        self.recent_title.hide()
        self.recent_list.hide()
        self.refresh_demo_button()
        return page

    def _build_loading(self) -> QWidget:
        page = EmptyState("dataset", "Reading the dataset…", "")
        bar = QProgressBar()
        bar.setRange(0, 0)
        bar.setMaximumWidth(320)
        bar.setTextVisible(False)
        page.extra.addWidget(bar, 0, Qt.AlignmentFlag.AlignHCenter)
        self.loading_label = page.text_label
        return page

    def _build_browser(self) -> QWidget:
        page = QWidget()
        outer = QVBoxLayout(page)
        outer.setContentsMargins(16, 14, 16, 12)
        outer.setSpacing(10)

        # Header: name, layout, counts, path.
        header = QHBoxLayout()
        header.setSpacing(10)
        titles = QVBoxLayout()
        titles.setSpacing(2)
        name_row = QHBoxLayout()
        name_row.setSpacing(8)
        self.name_label = QLabel()
        self.name_label.setObjectName("Title")
        self.layout_chip = chip("")
        name_row.addWidget(self.name_label)
        name_row.addWidget(self.layout_chip)
        name_row.addStretch(1)
        titles.addLayout(name_row)
        self.path_label = muted_label(wrap=False)
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        titles.addWidget(self.path_label)
        header.addLayout(titles, 1)
        self.counts_label = QLabel()
        self.counts_label.setObjectName("Subtitle")
        header.addWidget(self.counts_label)
        header.addSpacing(12)
        reopen = QPushButton("Open another…")
        reopen.clicked.connect(self.choose_folder)
        header.addWidget(reopen)
        outer.addLayout(header)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.setHandleWidth(10)

        # Left: filters and the class table.
        left = Card(margins=10)
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Filter by file name…")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.textChanged.connect(lambda _: self._filter_timer.start())
        self.split_combo = QComboBox()
        self.split_combo.currentIndexChanged.connect(lambda _: self._apply_filter())
        filters = QFormLayout()
        filters.setContentsMargins(0, 0, 0, 0)
        filters.setHorizontalSpacing(8)
        filters.addRow("Split", self.split_combo)
        left.body.addWidget(self.search_edit)
        left.body.addLayout(filters)
        self.class_tree = QTreeWidget()
        self.class_tree.setRootIsDecorated(False)
        self.class_tree.setAlternatingRowColors(True)
        self.class_tree.setUniformRowHeights(True)
        self.class_tree.itemSelectionChanged.connect(self._apply_filter)
        left.body.addWidget(self.class_tree, 1)
        left.setMinimumWidth(280)
        splitter.addWidget(left)

        # Centre: the thumbnail grid.
        centre = Card(margins=8)
        self.thumbnail_model = ThumbnailModel(parent=self)
        self.thumbnail_view = ThumbnailView()
        self.thumbnail_view.setModel(self.thumbnail_model)
        self.thumbnail_view.selectionModel().currentChanged.connect(self._show_preview)
        self.thumbnail_view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.thumbnail_view.customContextMenuRequested.connect(self._thumbnail_menu)
        self.thumbnail_view.setStyleSheet("QListView { border: none; }")
        centre.body.addWidget(self.thumbnail_view, 1)
        self.showing_label = muted_label(wrap=False)
        centre.body.addWidget(self.showing_label)
        splitter.addWidget(centre)

        # Right: preview, summary, problems.
        self.side_tabs = QTabWidget()
        self.side_tabs.setMinimumWidth(250)
        preview = QWidget()
        preview_layout = QVBoxLayout(preview)
        preview_layout.setContentsMargins(10, 10, 10, 10)
        self.preview_canvas = ImageCanvas("Select a thumbnail to preview it.", align_top=True, fit_height=True)
        preview_layout.addWidget(self.preview_canvas)
        self.preview_form = QFormLayout()
        self.preview_form.setHorizontalSpacing(10)
        self.preview_form.setVerticalSpacing(4)
        self.preview_fields: dict[str, QLabel] = {}
        for key in ("File", "Class", "Split", "Size", "Box", "Folder"):
            value = QLabel("—")
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            caption = muted_label(key, wrap=False)
            self.preview_form.addRow(caption, value)
            self.preview_fields[key] = value
        preview_layout.addSpacing(6)
        preview_layout.addLayout(self.preview_form)
        preview_layout.addStretch(1)
        self.side_tabs.addTab(preview, "Preview")
        self.summary_text = QPlainTextEdit()
        self.summary_text.setReadOnly(True)
        self.summary_text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.summary_text.setStyleSheet("QPlainTextEdit { border: none; font-family: monospace; }")
        self.side_tabs.addTab(self.summary_text, "Summary")
        problems = QWidget()
        problems_layout = QVBoxLayout(problems)
        problems_layout.setContentsMargins(0, 6, 0, 0)
        problems_layout.setSpacing(4)
        copies_row = QHBoxLayout()
        copies_row.setContentsMargins(6, 0, 6, 0)
        self.copies_button = QPushButton("Find copies")
        self.copies_button.setToolTip(
            "Compare every image with the others by its pixels, and list the copies here: the same photo saved "
            "again, resized, mirrored or brightened. A test image whose copy is a training image is scored as seen; "
            "one photo under two classes contradicts itself. Inspect's Find copies, with a trained run, finds "
            "cropped copies too")
        self.copies_button.clicked.connect(lambda: self.find_copies() if self._copies_task is None
                                           else self._cancel_copies())
        copies_row.addWidget(self.copies_button)
        self.copies_note = muted_label("", wrap=False)
        self.copies_note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        copies_row.addWidget(self.copies_note, 1)
        problems_layout.addLayout(copies_row)
        self.problem_tree = QTreeWidget()
        self.problem_tree.setHeaderLabels(["File", "Problem"])
        self.problem_tree.setRootIsDecorated(False)
        self.problem_tree.setAlternatingRowColors(True)
        self.problem_tree.setStyleSheet("QTreeWidget { border: none; }")
        self.problem_tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.problem_tree.header().resizeSection(0, 160)
        self.problem_tree.itemActivated.connect(self._reveal_problem)
        self.problem_tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.problem_tree.customContextMenuRequested.connect(
            lambda position: self._exec_menu(self.problem_menu(self.problem_tree.itemAt(position)),
                                             self.problem_tree.viewport(), position))
        problems_layout.addWidget(self.problem_tree, 1)
        self.side_tabs.addTab(problems, "Problems")
        splitter.addWidget(self.side_tabs)

        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setStretchFactor(2, 0)
        splitter.setSizes([290, 620, 290])
        self.splitter = splitter
        outer.addWidget(splitter, 1)
        return page

    # ------------------------------------------------------------------ copies
    def find_copies(self) -> bool:
        """Look for copies among the shown folder's images by their pixels (off the GUI thread)."""
        if self.index is None or self._copies_task is not None:
            return False
        root, generation = str(self.index.root), self._load_generation

        def job(ctx):
            duplicates = workers.core("fgdesk.evaluate.duplicates")  # imported on the worker thread
            return duplicates.check_duplicates(root, count=COPY_PAIRS_SHOWN, should_cancel=ctx.cancelled,
                                               on_progress=lambda stage, fraction: ctx.progress((stage, fraction)))

        def current() -> bool:  # still the folder it was asked for (reopened after labels counts)
            if self._copies_task is handle:  # not already let go for another folder's check
                self._copies_task = None
                self.copies_button.setText("Find copies")
            return self.index is not None and str(self.index.root) == root

        def wanted() -> bool:
            here, cancelled = current(), handle.was_cancelled()  # by its button, or another folder opened
            if here and cancelled:
                self.status_message.emit("Looking for copies: cancelled")
            return here and not cancelled

        def done(check) -> None:
            if wanted():
                self._show_copies(check)

        def failed(message: str, details: str) -> None:
            if wanted() and generation == self._load_generation:
                self.last_error_box = show_error(self, "Cannot look for copies", message,
                                                 details if "Traceback" in details else "")

        def progress(value) -> None:
            if handle.was_cancelled():
                return
            stage, fraction = value
            self.status_message.emit(f"Looking for copies: {stage} ({100 * fraction:.0f}%)…")

        handle = self._copies_runner.start(job, on_done=done, on_failed=failed, on_progress=progress,
                                           on_cancelled=wanted, name="find copies")
        self._copies_task = handle
        self.copies_button.setText("Cancel")
        self.status_message.emit("Looking for copies among the images…")
        return True

    def _cancel_copies(self) -> None:
        if self._copies_task is not None:
            self._copies_task.cancel()
            self.status_message.emit("Cancelling…")

    def _show_copies(self, check) -> None:
        self.last_duplicate_check = check
        self._fill_problems(self._problem_rows)
        counts = ", ".join(f"{number} {kind}" for kind, number in check.counts.items() if number)
        pairs = f"{check.found:,} pair{'' if check.found == 1 else 's'} of copies"
        text = (f"{pairs} among {check.checked:,} images ({counts}), by their pixels"
                if check.found else f"No copies among the {check.checked:,} images")
        self.copies_note.setText(text)
        self.copies_note.setToolTip(text)
        self.status_message.emit(text)

    def _forget_copies(self) -> None:
        if self._copies_task is not None:
            # Let it go at once: the new folder's button must not read Cancel for the old one.
            self._copies_task.cancel()
            self._copies_task = None
            self.copies_button.setText("Find copies")
        self.last_duplicate_check = None
        self.copies_note.setText("")
        self.copies_note.setToolTip("")

    # ------------------------------------------------------------------ opening
    def set_recent(self, recent: list[str]) -> None:
        self._recent = list(recent)
        self.recent_list.clear()
        for path in recent:
            item = QListWidgetItem(f"{Path(path).name}    {path}")
            item.setData(Qt.ItemDataRole.UserRole, path)
            item.setToolTip(path)
            self.recent_list.addItem(item)
        visible = bool(recent)
        self.recent_title.setVisible(visible)
        self.recent_list.setVisible(visible)

    def refresh_demo_button(self) -> None:
        exists = workers.demo_dataset_exists()
        self.demo_button.setText("Open the demo dataset" if exists else "Create the demo dataset")

    def choose_folder(self) -> None:
        start = str(Path(self._recent[0]).parent) if self._recent else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open a dataset folder", start)
        if folder:
            self.load_dataset(folder)

    def open_demo(self) -> None:
        """Open the demo set, creating it first when needed (one click on first run)."""
        if workers.demo_dataset_exists() and (paths.demo_data_dir() / "boxes.csv").exists():
            self.load_dataset(str(paths.demo_data_dir()))
            return
        self._show_loading(str(paths.demo_data_dir()), "Drawing the demo dataset (a few seconds)…")
        self._load_generation += 1
        generation = self._load_generation
        self._runner.start(
            lambda ctx: workers.make_demo_dataset(),
            on_done=lambda root: self.load_dataset(str(root)) if generation == self._load_generation else None,
            on_failed=lambda message, details: (self._on_load_failed(message, details)
                                                if generation == self._load_generation else None),
            name="make demo dataset",
        )

    def load_dataset(self, path: str | Path, layout: str = "auto", refresh: bool = False) -> None:
        """Index `path` on a worker thread; the browser shows it when done. `refresh` keeps the
        browser on screen meanwhile (the same folder again, after labels moved files)."""
        path = str(path)
        if refresh and self.index is not None:
            self.status_message.emit(f"Updating {Path(path).name}…")
        else:
            self._show_loading(path, f"Reading {path}")
            self.status_message.emit(f"Reading {path}…")
        # Only the folder asked for last may show: a slow index of an earlier one is dropped.
        self._load_generation += 1
        generation = self._load_generation
        self._runner.start(
            lambda ctx: workers.index_dataset(path, layout=layout),
            on_done=lambda loaded: self._on_loaded(loaded) if generation == self._load_generation else None,
            on_failed=lambda message, details: (self._on_load_failed(message, details)
                                                if generation == self._load_generation else None),
            name="index dataset",
        )

    def is_loading(self) -> bool:
        return self._runner.busy()

    def _show_loading(self, path: str, text: str) -> None:
        self._loading_path = path
        self.loading_label.setText(text)
        self.welcome_error.hide()
        self.pages.setCurrentWidget(self.loading)

    def _on_load_failed(self, message: str, details: str) -> None:
        self.pages.setCurrentWidget(self.browser if self.index is not None else self.welcome)
        self.welcome_error.setText(message)
        self.welcome_error.setVisible(self.index is None)
        self.status_message.emit("Could not open the dataset")
        self.refresh_demo_button()
        show_error(self, "Cannot open this dataset", message, details if "Traceback" in details else "")

    def _on_loaded(self, loaded: workers.LoadedDataset) -> None:
        same_folder = self.index is not None and str(self.index.root) == str(loaded.index.root)
        keep = self._view_state() if same_folder else None  # reopened after labelling: stay where the user was
        self.labeler = loaded.labeler
        if not same_folder:  # "Undo labelling" and the copies found belong to the folder they were for
            self.last_label_batch, self._batch_labeler = [], None
            self._forget_copies()
        self.index = loaded.index
        self.summary = loaded.summary
        index, summary = loaded.index, loaded.summary
        root = Path(index.root)
        self.name_label.setText(root.name or str(root))
        self.layout_chip.setText(LAYOUT_NAMES.get(index.layout, index.layout))
        self.path_label.setText(str(root))
        self.path_label.setToolTip(str(root))
        classes = f"{summary.num_classes} classes · " if summary.num_classes else ""
        self.counts_label.setText(f"{classes}{summary.num_images:,} images")
        self.summary_text.setPlainText(summary.as_text())
        self._fill_splits(summary)
        self._fill_classes(summary)
        self._fill_problems(loaded.problem_rows)
        self.thumbnail_model.set_samples(index.samples, index.classes, index.crop_bottom,
                                         paths=loaded.paths or None, names_lower=loaded.names_lower or None)
        self._update_showing()
        self._clear_preview()
        self.pages.setCurrentWidget(self.browser)
        self.refresh_demo_button()
        self.status_message.emit(f"Opened {root.name}: {summary.num_images:,} images, {len(index.problems)} problem(s)")
        self.dataset_loaded.emit(index)
        if self.thumbnail_model.rowCount():
            self.thumbnail_view.setCurrentIndex(self.thumbnail_model.index(0, 0))
        if keep is not None:
            self._restore_view_state(keep)

    def _view_state(self) -> tuple[str | None, str | None, int]:
        item = self.class_tree.currentItem()
        name = item.text(0) if item is not None and item.data(0, Qt.ItemDataRole.UserRole) is not None else None
        return name, self.split_combo.currentData(), self.thumbnail_view.currentIndex().row()

    def _restore_view_state(self, state: tuple[str | None, str | None, int]) -> None:
        name, split, row = state
        for position in range(self.class_tree.topLevelItemCount()):
            item = self.class_tree.topLevelItem(position)
            if name is not None and item.text(0) == name:
                self.class_tree.blockSignals(True)
                self.class_tree.setCurrentItem(item)
                self.class_tree.blockSignals(False)
        position = self.split_combo.findData(split)
        if position >= 0:
            self.split_combo.blockSignals(True)
            self.split_combo.setCurrentIndex(position)
            self.split_combo.blockSignals(False)
        self._apply_filter()
        count = self.thumbnail_model.rowCount()
        if count:
            self.thumbnail_view.setCurrentIndex(self.thumbnail_model.index(max(0, min(row, count - 1)), 0))

    # ------------------------------------------------------------------ labelling
    def _selected_samples(self) -> list:
        rows = sorted(index.row() for index in self.thumbnail_view.selectionModel().selectedIndexes())
        return [self.thumbnail_model.sample_at(row) for row in rows]

    def selected_unlabeled_paths(self) -> list[str]:
        return [str(sample.path) for sample in self._selected_samples() if sample.label < 0]

    def selected_labelled_paths(self) -> list[str]:
        return [str(sample.path) for sample in self._selected_samples() if sample.label >= 0]

    def _thumbnail_menu(self, position) -> None:
        self._exec_menu(self.label_menu(), self.thumbnail_view.viewport(), position)

    @staticmethod
    def _exec_menu(menu: QMenu, viewport: QWidget, position) -> None:
        if menu.actions():
            menu.exec(viewport.mapToGlobal(position))

    def problem_menu(self, item: QTreeWidgetItem | None) -> QMenu:
        """A listed file (a copy, an unreadable image): show it in the grid, or set it aside."""
        menu = QMenu(self)
        path = item.data(0, Qt.ItemDataRole.UserRole) if item is not None else None
        if path:
            # The menu runs its own event loop: a reload meanwhile deletes `item`, so only its path is kept.
            if self.thumbnail_model.row_of(path) >= 0:
                menu.addAction("Show in the grid", lambda: self._reveal_path(path))
            if self.labeler is not None and Path(path).is_file():
                menu.addAction(f"Set aside {Path(path).name} (out of the dataset, undoable)",
                               lambda: self.set_aside_selected([path]))
        if self._undo_offered():
            menu.addAction(self._undo_text(self.last_label_batch), self.undo_last_labels)
        return menu

    def _undo_offered(self) -> bool:
        # Only for the folder shown: a labelling that ended after another folder opened is not undone here.
        return bool(self.last_label_batch and self._batch_labeler is not None and self.labeler is not None
                    and self._batch_labeler.root == self.labeler.root)

    def label_menu(self) -> QMenu:
        """"Label N images as" the dataset's classes (or a new one), "Move N labelled images to"
        another class (a label corrected), and undo of the last labelling."""
        menu = QMenu(self)
        if self.labeler is None:
            return menu
        for chosen, title in ((self.selected_unlabeled_paths(), "Label {} unlabeled image{} as"),
                              (self.selected_labelled_paths(), "Move {} labelled image{} to class")):
            if not chosen:
                continue
            sub = menu.addMenu(title.format(f"{len(chosen):,}", "s" if len(chosen) != 1 else ""))
            for name in self.labeler.classes:
                sub.addAction(name, lambda n=name, paths=chosen: self.label_selected(n, paths=paths))
            sub.addSeparator()
            sub.addAction("New class…", lambda paths=chosen: self._label_as_new_class(paths))
        chosen = [str(sample.path) for sample in self._selected_samples()]
        if chosen:
            count = f"{len(chosen):,} image{'s' if len(chosen) != 1 else ''}"
            menu.addSeparator()
            menu.addAction(f"Set aside {count} (out of the dataset, undoable)",
                           lambda paths=chosen: self.set_aside_selected(paths))
        if self._undo_offered():
            menu.addAction(self._undo_text(self.last_label_batch), self.undo_last_labels)
        return menu

    @staticmethod
    def _undo_text(moves: list) -> str:
        count = f"{len(moves):,} image{'s' if len(moves) != 1 else ''}"
        if moves[0].set_aside:
            return f"Undo setting aside {count}"
        if moves[0].previous_class:
            return f"Undo moving {count} to {moves[0].class_name}"
        return f"Undo labelling {count} as {moves[0].class_name}"

    def set_aside_selected(self, paths: list[str] | None = None) -> bool:
        """Take the images (by default the selected ones) out of the dataset, into its hidden
        set-aside folder (off the GUI thread), then index the dataset again. Undoable."""
        paths = [str(sample.path) for sample in self._selected_samples()] if paths is None else paths
        labeler = self.labeler
        if not paths or labeler is None or self._label_task is not None:
            return False
        self._start_moves(labeler, paths, labeler.set_aside, "set images aside")
        self.status_message.emit(f"Setting aside {len(paths):,} image(s)…")
        return True

    def _start_moves(self, labeler, paths: list[str], move, name: str) -> None:
        """Run `move(path)` (a LabelMove or a LabelingError; None: nothing to do) for every path
        off the GUI thread; `_on_labelled` gets the moves and the errors."""
        LabelingError = workers.core("fgdesk.data.labeling").LabelingError

        def move_all(_ctx):
            moves, errors = [], []
            for path in paths:
                try:
                    done = move(path)
                except LabelingError as exc:
                    errors.append(str(exc))
                    continue
                if done is not None:
                    moves.append(done)
            return moves, errors

        self._label_task = self._label_runner.start(move_all, on_done=lambda result: self._on_labelled(result, labeler),
                                                    on_failed=self._on_label_failed, name=name)

    def _label_as_new_class(self, paths: list[str] | None = None) -> None:
        name, ok = QInputDialog.getText(self, "New class", "Name of the new class (a folder of that name is made):")
        if ok and name.strip():
            self.label_selected(name, allow_new=True, paths=paths)

    def label_selected(self, class_name: str, allow_new: bool = False, paths: list[str] | None = None) -> bool:
        """Move the images (by default the selected unlabeled ones) into `class_name`'s folder
        (off the GUI thread), then index the dataset again, keeping the filter and position.
        Labelled images move from their class folder: their label is corrected."""
        paths = self.selected_unlabeled_paths() if paths is None else paths
        labeler = self.labeler
        if not paths or labeler is None or self._label_task is not None:
            return False
        LabelingError = workers.core("fgdesk.data.labeling").LabelingError
        try:
            labeler.check_class_name(class_name, allow_new=allow_new)
        except LabelingError as exc:
            show_error(self, "Cannot label these images", str(exc))
            return False

        def assign(path: str):
            if labeler.class_of(path) == class_name:
                return None  # already in that class: nothing to correct
            return labeler.assign(path, class_name, allow_new=allow_new)

        self._start_moves(labeler, paths, assign, "label images")
        self.status_message.emit(f"Labelling {len(paths):,} image(s) as {class_name}…")
        return True

    def _on_labelled(self, result, labeler) -> None:
        """Moves done for `labeler`'s folder, which may no longer be the one shown."""
        self._label_task = None
        moves, errors = result
        errors = errors + labeler.warnings  # shown with the errors: each needs the user's eye
        labeler.warnings = []
        if moves:
            self.last_label_batch, self._batch_labeler = moves, labeler
            self.labels_changed.emit(str(labeler.root), len(moves))
            self.files_moved.emit([(str(m.source), str(m.target)) for m in moves])
        if not moves:
            text = "No image was moved"
        elif moves[0].set_aside:
            folder = workers.core("fgdesk.data.labeling").SET_ASIDE_FOLDER
            text = f"Set aside {len(moves):,} image(s) in {folder}/ (right-click › Undo brings them back)"
        else:
            where = f" (moved into {Path(moves[0].target).parent.name}/)"
            verb = "Moved" if moves[0].previous_class else "Labelled"
            text = f"{verb} {len(moves):,} image(s) {'to' if verb == 'Moved' else 'as'} {moves[0].class_name}{where}"
        self.status_message.emit(text + (f"; {len(errors)} could not be" if errors else ""))
        if errors:
            self.last_error_box = show_error(self, "Some images could not be labelled", errors[0],
                                             "\n".join(errors[:200]))
        if moves:
            self._reload_if_showing(labeler.root)

    def _reload_if_showing(self, root) -> None:
        if self.index is not None and str(self.index.root) == str(root) and not self.is_loading():
            self.load_dataset(root, refresh=True)

    def _on_label_failed(self, message: str, details: str) -> None:
        self._label_task = None
        self.last_error_box = show_error(self, "Cannot label these images", message, details)

    def undo_last_labels(self) -> bool:
        """Move the images labelled last (one menu action's worth) back where they were."""
        moves, labeler = list(self.last_label_batch), self._batch_labeler
        if not moves or labeler is None or self._label_task is not None:
            return False

        def undo_all(_ctx):
            errors, undone = [], []
            for move in reversed(moves):
                try:
                    labeler.undo(move)
                    undone.append(move)
                except workers.core("fgdesk.data.labeling").LabelingError as exc:
                    errors.append(str(exc))
            return undone, errors

        def done(result) -> None:
            self._label_task = None
            self.last_label_batch, self._batch_labeler = [], None
            errors = result[1] + labeler.warnings
            labeler.warnings = []
            undone = len(result[0])
            self.files_moved.emit([(str(m.target), str(m.source)) for m in result[0]])
            back = ("the dataset" if moves[0].set_aside else "their class folders" if moves[0].previous_class
                    else "unlabeled/")
            self.status_message.emit(f"Moved {undone:,} image(s) back to {back}")
            if errors:
                self.last_error_box = show_error(self, "Some images could not be moved back", errors[0], "\n".join(errors))
            self.labels_changed.emit(str(labeler.root), -undone)
            self._reload_if_showing(labeler.root)

        self._label_task = self._label_runner.start(undo_all, on_done=done, on_failed=self._on_label_failed, name="undo labels")
        return True

    # ------------------------------------------------------------------ filters
    def _present_splits(self, summary) -> list[str]:
        present = {split for per_split in summary.counts.values() for split, n in per_split.items() if n}
        return [split for split in SPLIT_ORDER if split in present]

    def _fill_splits(self, summary) -> None:
        self.split_combo.blockSignals(True)
        self.split_combo.clear()
        self.split_combo.addItem("All splits", None)
        for split in self._present_splits(summary):
            total = sum(per_split.get(split, 0) for per_split in summary.counts.values())
            self.split_combo.addItem(f"{split} ({total:,})", split)
        self.split_combo.blockSignals(False)

    def _fill_classes(self, summary) -> None:
        splits = self._present_splits(summary)
        self.class_tree.blockSignals(True)
        self.class_tree.clear()
        self.class_tree.setHeaderLabels(["Class", *[s.capitalize() for s in splits], "Total"])
        totals = {split: 0 for split in splits}
        items = []
        labelled = bool(self.index.classes)
        for label, (name, per_split) in enumerate(summary.counts.items()):
            counts = [per_split.get(split, 0) for split in splits]
            for split, n in zip(splits, counts):
                totals[split] += n
            item = QTreeWidgetItem([name, *[f"{n:,}" for n in counts], f"{sum(counts):,}"])
            # Unlabeled images of a labelled dataset come last; -1 filters them (their label).
            item.setData(0, Qt.ItemDataRole.UserRole, (label if label < len(self.index.classes) else -1) if labelled else None)
            item.setToolTip(0, name)
            for column in range(1, len(splits) + 2):
                item.setTextAlignment(column, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            items.append(item)
        everything = QTreeWidgetItem(
            ["All classes", *[f"{totals[s]:,}" for s in splits], f"{sum(totals.values()):,}"]
        )
        everything.setData(0, Qt.ItemDataRole.UserRole, None)
        font = everything.font(0)
        font.setBold(True)
        for column in range(len(splits) + 2):
            everything.setFont(column, font)
            if column:
                everything.setTextAlignment(column, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.class_tree.addTopLevelItem(everything)
        self.class_tree.addTopLevelItems(items)
        header = self.class_tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(splits) + 2):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.class_tree.setCurrentItem(everything)
        self.class_tree.blockSignals(False)

    def _fill_problems(self, rows: list[tuple[str, str]]) -> None:
        """List the problems found while indexing, then the copies found (Find copies); a folder
        with thousands shows the first ones."""
        self._problem_rows = rows
        self.problem_tree.clear()
        items = []
        for path, reason in rows[:PROBLEM_ROWS_SHOWN]:
            items.append(self._problem_item(path, Path(path).name, reason))
        if len(rows) > PROBLEM_ROWS_SHOWN:
            more = QTreeWidgetItem([f"… and {len(rows) - PROBLEM_ROWS_SHOWN:,} more",
                                    "`fgdesk summary FOLDER` lists every one"])
            more.setFlags(Qt.ItemFlag.NoItemFlags)
            items.append(more)
        check = self.last_duplicate_check
        # A copy set aside (or moved by a label) since the check is no longer listed; undo lists it again.
        copies = [row for row in check.pairs if Path(row.path).is_file()] if check is not None else []
        for row in copies:
            items.append(self._problem_item(row.path, Path(row.path).name,
                                            f"{row.relation} {check.shown_path(row.other_path)} ({row.kind})"))
        self.problem_tree.addTopLevelItems(items)
        count = len(rows) + (check.found - (len(check.pairs) - len(copies)) if check is not None else 0)
        self.side_tabs.setTabText(PROBLEMS_TAB, f"Problems ({count:,})" if count else "Problems")
        if not items:
            empty = QTreeWidgetItem(["No problems found", ""])
            empty.setFlags(Qt.ItemFlag.NoItemFlags)
            self.problem_tree.addTopLevelItem(empty)
        self.problem_count = len(rows)

    @staticmethod
    def _problem_item(path: str, name: str, reason: str) -> QTreeWidgetItem:
        item = QTreeWidgetItem([name, reason])
        item.setToolTip(0, path)
        item.setToolTip(1, reason)
        item.setData(0, Qt.ItemDataRole.UserRole, path)
        return item

    def selected_label(self) -> int | None:
        item = self.class_tree.currentItem()
        return None if item is None else item.data(0, Qt.ItemDataRole.UserRole)

    def select_class(self, label: int | None) -> None:
        for row in range(self.class_tree.topLevelItemCount()):
            item = self.class_tree.topLevelItem(row)
            if item.data(0, Qt.ItemDataRole.UserRole) == label:
                self.class_tree.setCurrentItem(item)
                return

    def set_split_filter(self, split: str | None) -> None:
        position = self.split_combo.findData(split)
        if position >= 0:
            self.split_combo.setCurrentIndex(position)

    def _apply_filter(self) -> None:
        if self.index is None:
            return
        self.thumbnail_model.set_filter(
            label=self.selected_label(), split=self.split_combo.currentData(), text=self.search_edit.text()
        )
        self._update_showing()
        if self.thumbnail_model.rowCount():
            self.thumbnail_view.setCurrentIndex(self.thumbnail_model.index(0, 0))
        else:
            self._clear_preview()
        self.thumbnail_view.scrollToTop()

    def _update_showing(self) -> None:
        shown, total = self.thumbnail_model.rowCount(), self.thumbnail_model.total_count()
        self.showing_label.setText(
            f"Showing all {total:,} images" if shown == total else f"Showing {shown:,} of {total:,} images"
        )

    # ------------------------------------------------------------------ preview
    def _clear_preview(self) -> None:
        self.preview_canvas.set_pixmap(None)
        for value in self.preview_fields.values():
            value.setText("—")

    def _show_preview(self, current, _previous=None) -> None:
        if not current.isValid() or self.index is None:
            return
        sample = self.thumbnail_model.sample_at(current.row())
        path = Path(sample.path)
        self.preview_fields["File"].setText(path.name)
        self.preview_fields["Class"].setText(self.thumbnail_model.class_name(sample.label))
        self.preview_fields["Split"].setText(sample.split)
        self.preview_fields["Folder"].setText(str(path.parent))
        self.preview_fields["Box"].setText(
            "—" if sample.box is None else "({:.0f}, {:.0f}) – ({:.0f}, {:.0f})".format(*sample.box)
        )
        size = (getattr(self.index, "image_sizes", {}) or {}).get(sample.path)
        self.preview_fields["Size"].setText(
            f"{size[0]} × {size[1] - self.index.crop_bottom} px" if size else "…"
        )
        self._preview_generation += 1
        generation = self._preview_generation
        crop = self.index.crop_bottom
        self._runner.start(
            lambda ctx: decode_preview(str(path), crop),
            on_done=lambda result: self._on_preview(generation, sample, result),
            on_failed=lambda message, _tb: self._on_preview_failed(generation, message),
            name="preview",
        )

    def _on_preview(self, generation: int, sample, result) -> None:
        if generation != self._preview_generation:
            return  # the user moved on
        image, (width, height), scale = result
        box = None
        if sample.box is not None:
            box = tuple(value * scale for value in sample.box)
        self.preview_canvas.set_pixmap(QPixmap.fromImage(image), box)
        self.preview_canvas.setToolTip(str(sample.path))
        self.preview_fields["Size"].setText(f"{width} × {height} px")

    def _on_preview_failed(self, generation: int, message: str) -> None:
        if generation == self._preview_generation:
            self.preview_canvas.set_pixmap(None)
            self.preview_canvas.set_placeholder(f"Cannot show this image:\n{message}")

    def _reveal_problem(self, item: QTreeWidgetItem) -> None:
        self._reveal_path(item.data(0, Qt.ItemDataRole.UserRole))

    def _reveal_path(self, path: str | None) -> None:
        row = self.thumbnail_model.row_of(path) if path else -1
        if row >= 0:
            index = self.thumbnail_model.index(row, 0)
            self.thumbnail_view.setCurrentIndex(index)
            self.thumbnail_view.scrollTo(index)
            self.side_tabs.setCurrentIndex(0)

    def shutdown(self) -> None:
        self.thumbnail_model.loader.shutdown()
        self._runner.cancel_all()
        self._copies_runner.cancel_all()
