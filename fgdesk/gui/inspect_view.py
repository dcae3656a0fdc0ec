"""Inspection: drop images, see the top-5 classes, nearest labelled images and attention heatmaps.

All prediction runs on a one-thread pool (the predictor is used from one thread only);
the worker also prepares display-sized copies of the image and its maps, so the GUI
thread only blends small overlays when the opacity or colormap changes.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QObject, QSize, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QImage, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from fgdesk.data.labeling import LabelConfirmation  # no torch: fgdesk.data is loaded already
from fgdesk.data.layouts import UNLABELED_FOLDER_NAMES
from fgdesk.gui import workers
from fgdesk.gui.qtutil import (
    IMAGE_SUFFIXES,
    format_percent,
    app_settings,
    image_files_under,
    is_image_file,
    pil_to_qimage,
    qimage_to_pil,
    show_error,
)
from fgdesk.gui.widgets import Card, ElidedLabel, EmptyState, ImageCanvas, muted_label

log = logging.getLogger(__name__)

DISPLAY_SIZE = 448  # longest side of the images the heatmap panels blend
ITEM_THUMB = 64
NEIGHBOUR_THUMB = 96
BATCH = 8  # images per prediction task
MAX_DROPPED_IMAGES = 500  # more than this: classify the folder to CSV instead
SUGGESTED_IMAGES = 20  # a labelling session's worth
CHECKED_LABELS = 50  # doubted labels listed by Check labels: the likeliest mistakes
FOUND_COPIES = 100  # pairs Find copies lists: those across two classes, then train/test, then repeats
RANK_KEYS = {getattr(Qt.Key, f"Key_{rank}"): rank for rank in range(1, 6)}
DEFAULT_COLORMAPS = ("inferno", "viridis", "magma", "jet")
IMAGE_LAYER = "image"


NORMALIZE_MODES = {"per_map": "Own peak per map", "shared": "Shared peak"}


HIDDEN_LAYERS_KEY = "inspect/hidden_layers"
DEFAULT_HIDDEN_LAYERS = ("contrast",)
PREDICTIONS_FILTER = "Predictions (*.csv)"
WITH_EMBEDDINGS_FILTER = "Predictions, and embeddings beside them (*.csv)"


def embeddings_beside(csv_path: str | Path) -> Path:
    """Where "Predictions, and embeddings beside them" saves the embeddings: NAME-embeddings.csv."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}-embeddings.csv")


def layer_title(key: str) -> str:
    if key == IMAGE_LAYER:
        return "Image"
    if key == "fused":
        return "Fused"
    if key == "evidence":
        return "Class evidence"
    if key == "contrast":
        return "Versus runner-up"
    if key.startswith("stage") and key[5:].isdigit():
        return f"Stage {key[5:]}"
    return key.replace("_", " ").capitalize()


def layer_tooltip(key: str, evidence_class: str | None = None, contrast_class: str | None = None,
                  contrast_favoured: str | None = None) -> str:
    """What a heatmap shows, for its panel's tooltip: the attention maps and the evidence maps
    answer different questions, and only the evidence maps answer "why this class"."""
    if key == "contrast":
        return (f"Where the image supports {contrast_favoured or evidence_class or 'the top class'} rather than "
                f"{contrast_class or 'the runner-up'}: each place's share of the difference of their scores. "
                "What the two classes share, this map leaves out. Click a class of the top 5 to set the top "
                "class against it")
    if key == "evidence":
        target = evidence_class or "the top class"
        return (f"Class evidence: where the image supports {target}, as each place's share of its score. "
                "This map follows the classifier: hiding its brightest places first lowers the class's "
                "probability faster than hiding the centre or random places")
    if key == "fused":
        return "Fused attention: the stage maps, each scaled to its own peak and weighted by the learned scale weights"
    if key.startswith("stage") and key[5:].isdigit():
        return (f"Stage {key[5:]} attention: where this scale's pooled descriptor draws from (its learned gate "
                "times the feature response). It shows what the network pools, background included, "
                "not why it chose a class: see Class evidence for that")
    return ""


OUTSIDE_FRAME_NOTE = ("\n\nThe network sees the centre of the image, as the test score does; the dimmed edge is "
                      "outside what it saw, so no map is drawn there")


def _frame_leaves_out(result) -> bool:
    """Whether the part of the image the network saw leaves an edge out (the overlay dims it)."""
    frame, image = getattr(result, "display_frame", None), getattr(result, "display_image", None)
    if frame is None or image is None:
        return False
    left, top, right, bottom = frame
    return left >= 0.5 or top >= 0.5 or right <= image.width - 0.5 or bottom <= image.height - 0.5


def layer_order(keys) -> list[str]:
    """Image first, then per-scale maps in stage order, the fused map, then anything else."""
    keys = list(keys)
    stages = sorted((k for k in keys if k.startswith("stage") and k[5:].isdigit()), key=lambda k: int(k[5:]))
    rest = sorted(k for k in keys if k not in stages and k not in ("fused", "evidence", "contrast", IMAGE_LAYER))
    tail = [k for k in ("fused", "evidence", "contrast") if k in keys]
    return [IMAGE_LAYER, *stages, *tail[:1], *rest, *tail[1:]]


# --------------------------------------------------------------------------- worker side
@dataclass
class InspectResult:
    """One prediction plus what the view needs to draw it, prepared on the worker."""

    source: str
    prediction: Any  # fgdesk.infer.predictor.Prediction
    display_image: Any = None  # PIL RGB, at most DISPLAY_SIZE
    display_maps: dict[str, np.ndarray] = field(default_factory=dict)
    display_frame: tuple[float, float, float, float] | None = None  # the part the network saw, on display_image
    thumb: QImage | None = None
    neighbour_thumbs: list[QImage | None] = field(default_factory=list)
    error: str | None = None


class PredictorCache:
    """Holds the loaded predictor of one run; used from the inference thread only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._run: str | None = None
        self._predictor = None
        self._stale = False  # set from any thread: the next get() loads the run again
        self.colormaps: tuple[str, ...] = DEFAULT_COLORMAPS

    def invalidate(self) -> None:
        """The run's classifier or labels changed: load it afresh on the next prediction.
        Takes no lock, so the GUI thread never waits for a model being loaded."""
        self._stale = True

    def get(self, run_dir: str, on_progress=None):
        with self._lock:
            if self._run != run_dir or self._predictor is None or self._stale:
                self._stale = False
                COLORMAPS = workers.core("fgdesk.infer.overlay").COLORMAPS
                Predictor = workers.core("fgdesk.infer.predictor").Predictor
                self._predictor = None  # free the previous model first
                # Loading may first fit the run's classifier (reported through on_progress).
                self._predictor = Predictor.load(Path(run_dir), device="auto", on_progress=on_progress)
                self._run = run_dir
                self.colormaps = tuple(COLORMAPS)
            return self._predictor

    def forget(self) -> None:
        with self._lock:
            self._predictor = None
            self._run = None


def _resize_map(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    array = np.asarray(heatmap, dtype=np.float32)
    if array.shape[::-1] == size:
        return array
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def _thumbnail(image, size: int) -> QImage:
    small = image.copy()
    small.thumbnail((size, size))
    return pil_to_qimage(small)


def _neighbour_thumbnail(path: str) -> QImage | None:
    from fgdesk.gui.thumbnails import decode_thumbnail

    try:
        return decode_thumbnail(path, NEIGHBOUR_THUMB)
    except Exception:
        return None


def prepare_result(source: str, prediction) -> InspectResult:
    """Display copies of one prediction (worker thread)."""
    result = InspectResult(source=source, prediction=prediction, error=getattr(prediction, "error", None))
    image = getattr(prediction, "image", None)
    if image is not None:
        display = image.convert("RGB")
        display.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE))
        result.display_image = display
        result.thumb = _thumbnail(display, ITEM_THUMB)
        for key, heatmap in (getattr(prediction, "maps", None) or {}).items():
            result.display_maps[key] = _resize_map(heatmap, display.size)
        frame = getattr(prediction, "frame", None)
        if frame is not None:
            sx, sy = display.width / image.width, display.height / image.height
            result.display_frame = (frame[0] * sx, frame[1] * sy, frame[2] * sx, frame[3] * sy)
    result.neighbour_thumbs = [_neighbour_thumbnail(path) for path, *_ in (getattr(prediction, "neighbours", None) or [])]
    return result


def predict_sources(cache: PredictorCache, run_dir: str, sources: list, names: list[str], normalize: str,
                    context, against: str | None = None, favour: str | None = None) -> list[InspectResult]:
    context.progress(("loading", run_dir))
    predictor = cache.get(run_dir, on_progress=lambda stage, fraction: context.progress(("preparing", (stage, fraction))))
    if context.cancelled():  # cleared or another run chosen while the model loaded
        return []
    context.progress(("predicting", len(sources)))
    # Classes of another run (the run changed since they were chosen): the usual pair instead.
    against = against if against in predictor.class_names else None
    favour = favour if favour in predictor.class_names else None
    predictions = predictor.predict(sources, topk=5, normalize=normalize, against=against, favour=favour)
    return [prepare_result(name, prediction) for name, prediction in zip(names, predictions)]


def render_full_overlay(image, heatmap, colormap: str, alpha: float, frame=None):
    render_overlay = workers.core("fgdesk.infer.overlay").render_overlay
    return render_overlay(image, heatmap, colormap=colormap, alpha=alpha, frame=frame)


# --------------------------------------------------------------------------- GUI side
@dataclass
class _Entry:
    key: int
    name: str
    source: Any  # path string or PIL image
    result: InspectResult | None = None
    state: str = "queued"  # queued | running | done | failed
    labelled: Any = None  # the LabelMove that gave it a label in this session
    in_pool: bool | None = None  # in the run's dataset's unlabeled/ folder (None: not yet asked)
    doubt: Any = None  # the label check's LabelCheckRow when its label looked wrong
    copy: Any = None  # the duplicate check's DuplicateRow when it is a copy of another image
    mistake: Any = None  # the classifier's Mistake when it is a test image it put in another class
    held_class: str | None = None  # the class folder holding it ("": none; None: not yet asked)
    against: str | None = None  # the class its contrast map is set against (None: the runner-up)
    favour: str | None = None  # the class its contrast map favours (None: the top class)


class _LayerPanel(QWidget):
    """One heatmap layer: its title over the blended image."""

    def __init__(self, key: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.key = key
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.title = ElidedLabel(layer_title(key))  # "Versus <a long class name>" must fit the panel
        self.title.setObjectName("Subtitle")
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.canvas = ImageCanvas(align_top=True)
        self.canvas.setMinimumSize(120, 120)
        layout.addWidget(self.title)
        layout.addWidget(self.canvas, 1)


class InspectView(QWidget):
    """The Inspect page."""

    status_message = Signal(str)
    run_chosen = Signal(str)
    labels_changed = Signal(str, int)  # (a dataset's root, labels given: negative for undone ones)
    classifier_refitted = Signal(str, object)  # (run folder, ClassifierReport) after the Refit button

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Page")
        self.setAcceptDrops(True)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)  # one predictor, one thread
        self._runner = workers.TaskRunner(self._pool, parent=self)
        self._general = workers.TaskRunner(parent=self)
        self._cache = PredictorCache()
        self._entries: list[_Entry] = []
        self._sources_by_name: dict[str, set[str]] = {}  # file name -> the full names listed with it
        self._items: dict[int, QListWidgetItem] = {}
        self._by_key: dict[int, _Entry] = {}
        self._next_key = 0
        self._pasted = 0
        self._run_generation = 0
        self._current: _Entry | None = None
        self._selected_layer = "evidence"  # Save PNG's layer until a panel is clicked: the map that follows the classifier
        self._hidden_layers = self._remembered_hidden_layers()
        self._panels: dict[str, _LayerPanel] = {}
        self._layer_boxes: dict[str, QCheckBox] = {}
        self._csv_task = None
        self._suggest_task = None
        self.last_suggestions: list = []
        self._check_task = None
        self.last_label_check = None  # fgdesk.evaluate.label_check.LabelCheck of the last Check labels
        self._copies_task = None
        self.last_duplicate_check = None  # fgdesk.evaluate.duplicates.DuplicateCheck of the last Find copies
        self._labeler = None  # fgdesk.data.labeling.DatasetLabeler of the run's dataset, when it takes labels
        self._labeler_generation = 0
        self._label_task = None
        # (entry key, LabelMove or LabelConfirmation, DatasetLabeler), oldest first: what Undo takes back
        self.label_history: list = []
        self._label_text_for: tuple[int, bool] | None = None  # (entry, whether the guess filled the box)
        self.labels_since_fit = 0  # labels given here since the run's classifier was last fitted
        self._refit_task = None
        self._pending_run: str | None = None
        self._runs_generation = 0
        self._active_run: str | None = None
        self._colormaps: tuple[str, ...] = DEFAULT_COLORMAPS
        self.last_error_box = None
        self.last_csv_result: tuple[str, int] | None = None
        self.last_embeddings_path: str | None = None  # where the last Classify folder saved embeddings, if asked
        self.last_saved_overlay: str | None = None

        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(30)
        self._render_timer.timeout.connect(self._render_layers)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(16, 14, 16, 12)
        outer.setSpacing(10)
        outer.addWidget(self._build_toolbar())
        self.body = QStackedWidget()
        empty = EmptyState(
            "inspect",
            "Drop images here",
            "Drop image files or a folder on this page, paste an image (Ctrl+V), or use Open images. "
            "Each image gets its top-5 classes, its nearest labelled training images and the "
            "attention heatmaps of the chosen run.",
        )
        open_button = empty.add_button("Open images…", primary=True)
        open_button.clicked.connect(self.choose_files)
        paste_button = empty.add_button("Paste")
        paste_button.clicked.connect(self.paste_from_clipboard)
        self.empty_hint = muted_label("")
        self.empty_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        empty.extra.addWidget(self.empty_hint)
        self.body.addWidget(empty)
        self.body.addWidget(self._build_results())
        outer.addWidget(self.body, 1)
        outer.addWidget(self._build_csv_strip())

        paste = QShortcut(QKeySequence(QKeySequence.StandardKey.Paste), self)
        paste.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        paste.activated.connect(self.paste_from_clipboard)
        for keys, slot in (("Ctrl+Return", self.label_current), ("Ctrl+Enter", self.label_current),
                           ("Ctrl+Z", self.undo_last_label)):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)
        for rank in range(1, 6):  # 1-5: label as the prediction's class of that rank
            shortcut = QShortcut(QKeySequence(str(rank)), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(lambda r=rank: self.label_as_rank(r))
        self._update_hint()

    # ================================================================== building
    def _build_toolbar(self) -> QWidget:
        card = Card(margins=10)
        row = QHBoxLayout()
        row.setSpacing(8)
        label = QLabel("Run")
        label.setObjectName("Subtitle")
        row.addWidget(label)
        self.run_combo = QComboBox()
        self.run_combo.setMinimumWidth(340)
        self.run_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.run_combo.currentIndexChanged.connect(self._on_run_changed)
        row.addWidget(self.run_combo)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_runs)
        row.addWidget(refresh)
        self.model_state = muted_label("", wrap=False)
        row.addWidget(self.model_state)
        row.addStretch(1)
        self.open_button = QPushButton("Open images…")
        self.open_button.clicked.connect(self.choose_files)
        self.paste_button = QPushButton("Paste")
        self.paste_button.setToolTip("Classify the image on the clipboard (Ctrl+V)")
        self.paste_button.clicked.connect(self.paste_from_clipboard)
        self.csv_button = QPushButton("Classify folder to CSV…")
        self.csv_button.clicked.connect(self.choose_csv_folder)
        self.suggest_button = QPushButton("Suggest what to label")
        self.suggest_button.setToolTip(
            "Add the unlabeled images (the dataset's unlabeled/ folder) that would help the classifier most "
            "once labelled: typical images of the groups no label covers yet, most useful first"
        )
        self.suggest_button.clicked.connect(lambda: self._start_or_cancel("_suggest_task", self.suggest_images_to_label))
        self.check_button = QPushButton("Check labels")
        self.check_button.setToolTip(
            "Add the labelled images whose label looks wrong, likeliest mistakes first: a classifier that never "
            "saw an image's label places it in another class. Correct each here, or leave it as it is"
        )
        self.check_button.clicked.connect(lambda: self._start_or_cancel("_check_task", lambda: self.check_labels()))
        self.copies_button = QPushButton("Find copies")
        self.copies_button.setToolTip(
            "Add the images that are copies of another image of the dataset: the same photo saved again, resized, "
            "mirrored or cropped. Copies across two classes come first, then test images with a copy among the "
            "images trained on (the test score counts them as seen), then repeats"
        )
        self.copies_button.clicked.connect(lambda: self._start_or_cancel("_copies_task", lambda: self.find_copies()))
        for button in (self.open_button, self.paste_button, self.csv_button):
            row.addWidget(button)
        card.body.addLayout(row)
        # The tasks that look through the run's whole dataset, on a row of their own: one row
        # cut every button short at the window's usual width.
        tasks = QHBoxLayout()
        tasks.setSpacing(8)
        heading = QLabel("Dataset")
        heading.setObjectName("Subtitle")
        heading.setToolTip("Look through the images of the run's dataset; what is found is added to the list below")
        tasks.addWidget(heading)
        for button in (self.suggest_button, self.check_button, self.copies_button):
            tasks.addWidget(button)
        tasks.addStretch(1)
        card.body.addLayout(tasks)
        return card

    def _build_results(self) -> QWidget:
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.setHandleWidth(10)

        images = Card("Images")
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear_images)
        images.header.addWidget(clear)
        self.image_list = QListWidget()
        self.image_list.setIconSize(QSize(ITEM_THUMB, ITEM_THUMB))
        self.image_list.setViewMode(QListView.ViewMode.ListMode)
        self.image_list.setUniformItemSizes(True)
        self.image_list.setSpacing(2)
        self.image_list.setStyleSheet("QListWidget { border: none; }")
        self.image_list.setWordWrap(True)
        self.image_list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.image_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.image_list.currentItemChanged.connect(self._on_item_changed)
        self.image_list.installEventFilter(self)  # keys 1-5 label, though a list takes digits to search
        images.body.addWidget(self.image_list, 1)
        images.setMinimumWidth(190)
        splitter.addWidget(images)

        centre = Card(margins=12)
        head = QHBoxLayout()
        self.image_title = QLabel()
        self.image_title.setObjectName("Title")
        self.image_subtitle = muted_label(wrap=False)
        # A long path or note must not widen this column and squeeze the image list: cut it, and
        # the tooltip holds it whole.
        self.image_subtitle.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        titles = QVBoxLayout()
        titles.setSpacing(0)
        titles.addWidget(self.image_title)
        titles.addWidget(self.image_subtitle)
        head.addLayout(titles, 1)
        centre.body.addLayout(head)
        layers = QHBoxLayout()
        layers.setSpacing(8)
        self.layers_row = QHBoxLayout()  # a box per layer, to show or hide its panel
        self.layers_row.setSpacing(8)
        layers.addLayout(self.layers_row)
        layers.addStretch(1)
        centre.body.addLayout(layers)
        self.layer_grid_widget = QWidget()
        self.layer_grid = QGridLayout(self.layer_grid_widget)
        self.layer_grid.setContentsMargins(0, 4, 0, 0)
        self.layer_grid.setHorizontalSpacing(12)
        self.layer_grid.setVerticalSpacing(12)
        self.layer_message = muted_label("")
        self.layer_message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        centre.body.addWidget(self.layer_grid_widget, 1)
        centre.body.addWidget(self.layer_message)

        controls = QHBoxLayout()
        controls.setSpacing(8)
        controls.addWidget(muted_label("Opacity", wrap=False))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.setFixedWidth(100)
        self.opacity_slider.setToolTip("Opacity of the heatmap over the image")
        self.opacity_slider.valueChanged.connect(lambda _: self._render_timer.start())
        controls.addWidget(self.opacity_slider)
        controls.addSpacing(6)
        self.colormap_combo = QComboBox()
        self.colormap_combo.setToolTip("Colormap of the heatmaps")
        self.colormap_combo.addItems(list(DEFAULT_COLORMAPS))
        self.colormap_combo.currentIndexChanged.connect(lambda _: self._render_timer.start())
        controls.addWidget(self.colormap_combo)
        self.normalize_combo = QComboBox()
        for mode, text in NORMALIZE_MODES.items():
            self.normalize_combo.addItem(text, mode)
        self.normalize_combo.setToolTip(
            "How the per-scale maps are scaled to [0, 1]: each to its own peak, or all scales to one shared "
            "peak so that a scale that focuses more looks brighter"
        )
        self.normalize_combo.currentIndexChanged.connect(lambda _: self.repredict())
        controls.addWidget(self.normalize_combo)
        controls.addStretch(1)
        self.save_button = QPushButton("Save PNG…")
        self.save_button.setToolTip("Save the selected layer (click a panel to select it) as a PNG at full resolution")
        self.save_button.clicked.connect(lambda: self.save_overlay())
        controls.addWidget(self.save_button)
        centre.body.addLayout(controls)
        splitter.addWidget(centre)

        right = Card("Prediction")
        right.setMinimumWidth(250)
        right.setMaximumWidth(380)
        self.prediction_message = muted_label("")
        right.body.addWidget(self.prediction_message)
        self.topk_rows: list[tuple[ElidedLabel, QProgressBar, QLabel]] = []
        self._topk_rank: dict[QObject, int] = {}
        topk = QVBoxLayout()
        topk.setSpacing(2)
        for i in range(5):
            line = QHBoxLayout()
            name = ElidedLabel("")
            value = QLabel("")
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if i == 0:
                font = name.font()
                font.setBold(True)
                name.setFont(font)
                value.setFont(font)
            line.addWidget(name, 1)
            line.addWidget(value)
            for widget in (name, value):  # a click sets the top class against this one (Versus)
                widget.installEventFilter(self)
                self._topk_rank[widget] = i + 1
            bar = QProgressBar()
            bar.setObjectName("ScoreBar")
            bar.setRange(0, 1000)
            bar.setTextVisible(False)
            bar.setFixedHeight(8)
            topk.addLayout(line)
            topk.addWidget(bar)
            topk.addSpacing(4)
            self.topk_rows.append((name, bar, value))
        right.body.addLayout(topk)
        right.body.addSpacing(6)
        neighbours_title = QLabel("Nearest labelled images")
        neighbours_title.setObjectName("Subtitle")
        right.body.addWidget(neighbours_title)
        # The neighbours scroll on their own: on a short window (a 768-px laptop screen) their
        # fixed-size tiles would otherwise be drawn over one another and over their captions,
        # and the label panel below them must stay in view.
        neighbours = QWidget()
        self.neighbour_grid = QGridLayout(neighbours)
        self.neighbour_grid.setContentsMargins(0, 0, 0, 0)
        self.neighbour_grid.setSpacing(6)
        self.neighbour_tiles: list[tuple[ImageCanvas, QLabel]] = []
        for i in range(5):
            tile = QWidget()
            tile_layout = QVBoxLayout(tile)
            tile_layout.setContentsMargins(0, 0, 0, 0)
            tile_layout.setSpacing(1)
            canvas = ImageCanvas()
            canvas.setFixedSize(NEIGHBOUR_THUMB, NEIGHBOUR_THUMB)
            caption = QLabel("")
            caption.setObjectName("Muted")
            caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
            caption.setFixedWidth(NEIGHBOUR_THUMB + 10)
            # Class and similarity, two lines that a short window must not squeeze onto the image.
            caption.setMinimumHeight(2 * caption.fontMetrics().lineSpacing())
            tile_layout.addWidget(canvas, 0, Qt.AlignmentFlag.AlignHCenter)
            tile_layout.addWidget(caption)
            self.neighbour_grid.addWidget(tile, i // 2, i % 2)
            self.neighbour_tiles.append((canvas, caption))
        self.neighbour_grid.setRowStretch(3, 1)  # spare room goes below the tiles
        self.neighbour_scroll = QScrollArea()
        self.neighbour_scroll.setWidgetResizable(True)
        self.neighbour_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.neighbour_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.neighbour_scroll.setStyleSheet("QScrollArea, QScrollArea > QWidget > QWidget { background: transparent; }")
        self.neighbour_scroll.setWidget(neighbours)
        self.neighbour_scroll.setMinimumHeight(NEIGHBOUR_THUMB + 2 * self.fontMetrics().lineSpacing())
        right.body.addWidget(self.neighbour_scroll, 1)
        right.body.addSpacing(6)
        right.body.addWidget(self._build_label_panel())
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setStretchFactor(2, 0)
        splitter.setSizes([200, 660, 270])
        self.splitter = splitter
        return splitter

    def _build_label_panel(self) -> QWidget:
        """Shown for images of the run's dataset's unlabeled/ folder: give one a class here.
        Kept to three short rows, so the neighbours above keep their room."""
        self.label_panel = QWidget()
        column = QVBoxLayout(self.label_panel)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(4)
        head = QHBoxLayout()
        title = QLabel("Label this image")
        title.setObjectName("Subtitle")
        title.setToolTip("Labelling moves the image into its class folder; train the classifier again to use it. "
                         "Keys 1-5 label it as the prediction of that rank, Ctrl+Z undoes.")
        self.label_title = title
        head.addWidget(title, 1)
        self.undo_label_button = QPushButton("Undo")
        self.undo_label_button.setToolTip("Move the image labelled last back where it was (Ctrl+Z)")
        self.undo_label_button.clicked.connect(lambda: self.undo_last_label())
        head.addWidget(self.undo_label_button)
        column.addLayout(head)
        self.label_row = QWidget()  # hidden for a copy, which is set aside rather than labelled
        row = QHBoxLayout(self.label_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(6)
        self.label_combo = QComboBox()
        self.label_combo.setEditable(True)
        self.label_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.label_combo.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.label_combo.setToolTip("The image's class: one of the dataset's classes, or type a new one")
        self.label_combo.lineEdit().returnPressed.connect(self.label_current)
        # Typed by the user: a prediction arriving later must not replace it.
        self.label_combo.lineEdit().textEdited.connect(
            lambda _text: setattr(self, "_label_text_for", (self._current.key, True) if self._current else None))
        row.addWidget(self.label_combo, 1)
        self.label_button = QPushButton("Label")
        self.label_button.setObjectName("Primary")
        self.label_button.setToolTip("Move the image into this class's folder (Enter; keys 1-5 label it as the "
                                     "predicted class of that rank)")
        self.label_button.clicked.connect(lambda: self.label_current())
        row.addWidget(self.label_button)
        column.addWidget(self.label_row)
        foot = QHBoxLayout()
        self.label_note = muted_label("", wrap=False)
        self.label_note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        foot.addWidget(self.label_note, 1)
        # Shown for a doubted label, where the note is empty: its row keeps the class box wide.
        self.keep_label_button = QPushButton("Keep")
        self.keep_label_button.setToolTip("The label is right: keep it, and leave this image out of later label "
                                          "checks (recorded in the dataset's label log)")
        self.keep_label_button.clicked.connect(lambda: self.keep_current_label())
        foot.addWidget(self.keep_label_button)
        self.set_aside_button = QPushButton("Set aside")
        self.set_aside_button.setObjectName("Primary")
        self.set_aside_button.setToolTip(
            "Take this copy out of the dataset: it moves into the dataset's hidden .fgdesk-set-aside folder, keeping "
            "its path, so no split or class counts it again. Nothing is deleted; Undo (Ctrl+Z) puts it back")
        self.set_aside_button.clicked.connect(lambda: self.set_aside_current())
        foot.addWidget(self.set_aside_button)
        self.refit_button = QPushButton("Refit classifier")
        self.refit_button.setToolTip("Fit the run's classifier again with the labels given, then classify these "
                                     "images again (only the newly labelled images are embedded)")
        self.refit_button.clicked.connect(lambda: self.refit_classifier())
        foot.addWidget(self.refit_button)
        column.addLayout(foot)
        self.label_panel.hide()
        return self.label_panel

    def _build_csv_strip(self) -> QWidget:
        self.csv_strip = Card(margins=8)
        row = QHBoxLayout()
        self.csv_label = QLabel("")
        self.csv_progress = QProgressBar()
        self.csv_progress.setFormat("%v / %m images")
        self.csv_cancel = QPushButton("Cancel")
        self.csv_cancel.clicked.connect(self.cancel_csv)
        row.addWidget(self.csv_label)
        row.addWidget(self.csv_progress, 1)
        row.addWidget(self.csv_cancel)
        self.csv_strip.body.addLayout(row)
        self.csv_strip.hide()
        return self.csv_strip

    # ================================================================== runs
    def refresh_runs(self, select: str | None = None) -> None:
        self._runs_generation += 1
        generation = self._runs_generation
        # A listing read before a later one started (a delete between them) is dropped.
        self._general.start(lambda ctx: workers.list_runs(),
                            on_done=lambda runs: generation == self._runs_generation and self._fill_runs(runs, select),
                            on_failed=lambda msg, tb: log.warning("cannot list runs: %s", msg), name="list runs")

    def _fill_runs(self, runs: list, select: str | None = None) -> None:
        wanted = select or self._pending_run or self.current_run()
        self.run_combo.blockSignals(True)
        self.run_combo.clear()
        for info in runs:
            checkpoints = Path(info.path) / "checkpoints"
            if not ((checkpoints / "last.pt").is_file() or (checkpoints / "best.pt").is_file()):
                continue
            knn = f" · kNN {format_percent(info.best_knn_top1)}" if info.best_knn_top1 is not None else ""
            clf = " · classifier" if info.has_classifier else ""
            self.run_combo.addItem(f"{info.name}  ({info.status}{knn}{clf})", str(info.path))
        if wanted and self.run_combo.findData(wanted) < 0 and Path(wanted).is_dir():
            self.run_combo.addItem(Path(wanted).name, wanted)
        position = self.run_combo.findData(wanted) if wanted else 0
        self.run_combo.setCurrentIndex(max(0, position))
        self.run_combo.blockSignals(False)
        self._pending_run = None
        self._on_run_changed()

    def set_run(self, run_dir: str | Path) -> None:
        """Use this run (e.g. from the Train page's "Open in Inspect")."""
        run_dir = str(run_dir)
        position = self.run_combo.findData(run_dir)
        if position >= 0:
            self.run_combo.setCurrentIndex(position)
            if self.current_run() == run_dir:
                return
        self._pending_run = run_dir
        self.refresh_runs(select=run_dir)

    def forget_runs(self, run_dirs: list[str]) -> None:
        """Runs deleted on the Train page: drop them from the list; a deleted current run
        gives way to the next one, as when the list is first filled."""
        if self._pending_run in run_dirs:
            self._pending_run = None
        for run_dir in run_dirs:
            position = self.run_combo.findData(run_dir)
            if position >= 0:
                self.run_combo.removeItem(position)  # a current one changes the run, as a choice would
        self.refresh_runs()

    def current_run(self) -> str | None:
        data = self.run_combo.currentData()
        return str(data) if data else None

    def _on_run_changed(self, _index: int = -1) -> None:
        run = self.current_run()
        if run == self._active_run:
            self._update_hint()
            return
        self._active_run = run
        self._run_generation += 1
        self._runner.cancel_all()
        self._let_go_of_list_tasks()
        if run:
            self.model_state.setText("")
            self.run_chosen.emit(run)
        self._open_labeler(run)
        self.labels_since_fit = 0  # counted for the run shown
        for entry in self._entries:
            entry.result = None
            entry.state = "queued"
        self._update_hint()
        self._schedule_predictions()
        if self._current is not None:
            self._show_entry(self._current)

    def repredict(self) -> None:
        """Predict every image again (after a change that needs new maps)."""
        self._run_generation += 1
        self._runner.cancel_all()
        for entry in self._entries:
            entry.result = None
            entry.state = "queued"
        self._schedule_predictions()
        if self._current is not None:
            self._show_entry(self._current)

    def _update_hint(self) -> None:
        if self.run_combo.count() == 0:
            self.empty_hint.setText("No trained run yet: start one on the Train page, then come back here.")
        else:
            self.empty_hint.setText(f"Using run {Path(self.current_run() or '').name}.")
        has_run = self.current_run() is not None
        self.csv_button.setEnabled(has_run and self._csv_task is None)
        # A running look through the dataset can take minutes on a large one: its button cancels it.
        for slot, button, text in self._list_task_buttons():
            running = getattr(self, slot) is not None
            button.setEnabled(has_run or running)
            button.setText("Cancel" if running else text)

    def _let_go_of_list_tasks(self) -> None:
        """Cancel Suggest, Check labels and Find copies for a list or run that is gone, and free
        their buttons at once: the new run's must not read Cancel for the old one's task."""
        for slot, _button, _text in self._list_task_buttons():
            task = getattr(self, slot)
            if task is not None:
                task.cancel()
                setattr(self, slot, None)
        self._update_hint()

    def _list_task_buttons(self) -> list[tuple[str, QPushButton, str]]:
        return [("_suggest_task", self.suggest_button, "Suggest what to label"),
                ("_check_task", self.check_button, "Check labels"),
                ("_copies_task", self.copies_button, "Find copies")]

    def _start_or_cancel(self, slot: str, start) -> bool:
        task = getattr(self, slot)
        if task is None:
            return start()
        task.cancel()
        self.status_message.emit("Cancelling…")
        return False

    # ================================================================== what to label next
    def _start_list_task(self, slot: str, job, on_result, working: str, error_title: str) -> bool:
        """Run `job(run, ctx, on_progress)` for the shown run on the general pool (so embedding
        a large folder never holds up predictions), one at a time: its handle lives in
        `self.<slot>`, and the status line says `working` with the stage and share done
        meanwhile. `on_result` gets the answer if the run and the list are still the ones it
        was for; Clear or another run drops it, and a failure is shown under `error_title`.
        Meanwhile the task's button reads Cancel (`_start_or_cancel`)."""
        run = self.current_run()
        if run is None or getattr(self, slot) is not None:
            return False
        generation = self._run_generation

        def finish() -> bool:
            if getattr(self, slot) is handle:  # not already let go for another run or list
                setattr(self, slot, None)
                self._update_hint()
            return generation == self._run_generation

        def still_wanted() -> bool:
            if not finish():  # Clear or another run cancelled it: nothing to say
                return False
            if handle.was_cancelled():  # its button said Cancel
                self.status_message.emit(f"{working.rstrip('…')}: cancelled")
                return False
            return True

        def done(result) -> None:
            if still_wanted():
                on_result(result)

        def failed(message: str, details: str) -> None:
            if still_wanted():
                shown = details if "Traceback" in details and "EvaluationError" not in details else ""
                self.last_error_box = show_error(self, error_title, message, shown)

        def progress(value) -> None:
            if generation == self._run_generation and not handle.was_cancelled():
                stage, fraction = value
                self.status_message.emit(f"{working.rstrip('…')}: {stage} ({100 * fraction:.0f}%)…")

        handle = self._general.start(
            lambda ctx: job(run, ctx, lambda stage, fraction: ctx.progress((stage, fraction))),
            on_done=done, on_failed=failed, on_cancelled=still_wanted, on_progress=progress, name=working)
        setattr(self, slot, handle)
        self._update_hint()
        self.status_message.emit(working)
        return True

    def suggest_images_to_label(self, count: int = SUGGESTED_IMAGES) -> bool:
        """Add the unlabeled images most worth labelling to the list (computed off the GUI thread)."""

        def show(suggestions) -> None:
            self.last_suggestions = suggestions
            if suggestions:
                self._look_for_labels_again()
                self.add_images([(s.path, s.path) for s in suggestions])
                self.status_message.emit(
                    f"Added {len(suggestions)} images worth labelling, most useful first: move each into its "
                    "class folder, then train the classifier again")

        def job(run: str, ctx, on_progress):
            suggest = workers.core("fgdesk.evaluate.suggest")  # imported on the worker thread
            return suggest.suggest_for_run(run, count=count, should_cancel=ctx.cancelled, on_progress=on_progress)

        return self._start_list_task("_suggest_task", job, show, "Choosing the unlabeled images most worth labelling…",
                                     "Cannot suggest images to label")

    # ================================================================== labels that look wrong
    def check_labels(self, count: int = CHECKED_LABELS) -> bool:
        """Add the labelled images whose label looks wrong to the list (computed off the GUI
        thread), each with the class it looks like, ready to be corrected."""

        def show(check) -> None:
            self.last_label_check = check
            judge = (f"the classifier, judging each image without its label, agrees with "
                     f"{format_percent(check.agreement)} of the {check.checked:,} labels")
            if not check.issues:
                self.status_message.emit(f"No label looks wrong: {judge}")
                return
            self._look_for_labels_again()
            self.add_images([(row.path, row.path) for row in check.issues], doubts=check.issues)
            listed = (f"the {len(check.issues)} likeliest are listed" if check.suspects > len(check.issues)
                      else "all are listed")
            caution = ("; below 80% most doubts are its own mistakes, so train the run longer before trusting them"
                       if check.weak_judge else "")
            versus = ("; Versus shows where each looks like its class rather than its label"
                      if "contrast" in self._hidden_layers else "")
            self.status_message.emit(f"{check.suspects:,} labels look doubtful ({listed}); {judge}{caution}{versus}")

        def job(run: str, ctx, on_progress):
            label_check = workers.core("fgdesk.evaluate.label_check")  # imported on the worker thread
            return label_check.check_labels_for_run(run, count=count, should_cancel=ctx.cancelled, on_progress=on_progress)

        return self._start_list_task("_check_task", job, show, "Looking for labels that look wrong…",
                                     "Cannot check the labels")

    # ================================================================== mistakes
    def show_mistakes(self, run_dir: str, mistakes: list) -> None:
        """Add test images the run's classifier put in another class (one cell of its confusion
        matrix, the surest first), each with its Versus map set to where it looks like the class
        it was taken for rather than its own."""
        if not mistakes:
            return
        self.set_run(run_dir)
        self.add_images([(m.path, m.path) for m in mistakes], mistakes=mistakes)
        first = mistakes[0]
        many = len(mistakes) != 1
        versus = ("; turn on Versus to see where" if "contrast" in self._hidden_layers else "; Versus shows where")
        self.status_message.emit(
            f"{len(mistakes)} test image{'s' if many else ''} of {first.true_class} taken for {first.predicted}"
            f"{versus} {'each' if many else 'it'} looks like {first.predicted} rather than {first.true_class}")

    @staticmethod
    def _mistake_title(entry: _Entry) -> tuple[str, str]:
        """(subtitle, tooltip) of a test image the classifier put in another class."""
        mistake = entry.mistake
        return (f"A test image of {mistake.true_class}, taken for {mistake.predicted} "
                f"({format_percent(mistake.predicted_probability)})",
                f"{entry.name}\nThe classifier gave {mistake.predicted} {format_percent(mistake.predicted_probability)} "
                f"and {mistake.true_class} {format_percent(mistake.true_probability)}. Versus shows where the image "
                f"looks like {mistake.predicted} rather than {mistake.true_class}")

    # ================================================================== copies
    def find_copies(self, count: int = FOUND_COPIES) -> bool:
        """Add the images that copy another image of the run's dataset to the list (computed off
        the GUI thread); each one's title names the image it copies."""

        def show(check) -> None:
            self.last_duplicate_check = check
            if not check.pairs:
                self.status_message.emit(f"No copies among the {check.checked:,} images of the dataset")
                return
            rows = check.images_to_look_at()
            self.add_images([(row.path, row.path) for row in rows], copies=rows)
            counts = ", ".join(f"{number} {kind}" for kind, number in check.counts.items() if number)
            listed = "" if check.found <= len(check.pairs) else f"; the first {len(check.pairs)} are listed"
            pairs = f"{check.found:,} pair{'' if check.found == 1 else 's'} of copies"
            self.status_message.emit(f"{pairs} among {check.checked:,} images ({counts}){listed}")

        def job(run: str, ctx, on_progress):
            duplicates = workers.core("fgdesk.evaluate.duplicates")  # imported on the worker thread
            return duplicates.check_duplicates(run, count=count, should_cancel=ctx.cancelled, on_progress=on_progress)

        return self._start_list_task("_copies_task", job, show, "Looking for copies among the dataset's images…",
                                     "Cannot look for copies")

    def _copy_title(self, copy) -> tuple[str, str]:
        """(subtitle, tooltip) of an image found to copy another: what matters first, as the
        line is cut at the column's width; the tooltip says it whole."""
        other = self.last_duplicate_check.shown_path(copy.other_path) if self.last_duplicate_check else copy.other_path
        how = copy.relation
        lead = {"two classes": f"In two classes ({copy.label} and {copy.other_label})",
                "train and test": "Test copy of a training image",
                "repeated": "Repeated"}.get(copy.kind, "Copy")
        similarity = "" if copy.embedding_similarity is None else \
            f", the network's similarity {copy.embedding_similarity:.3f}"
        return (f"{lead}: {how} {other}",
                f"{copy.path}\n{how} {copy.other_path}\n{copy.why}\npixel match {copy.match:.2f}{similarity}")

    # ================================================================== giving labels
    def _open_labeler(self, run: str | None) -> None:
        """Find out, off the GUI thread, whether the run's dataset takes labels (class folders
        plus unlabeled/); the label panel appears only then."""
        self._labeler = None
        self._labeler_generation += 1
        generation = self._labeler_generation
        for entry in self._entries:
            entry.in_pool = entry.held_class = None
        self._update_label_panel()
        if run is None:
            return

        def open_labeler(_ctx):
            labeling = workers.core("fgdesk.data.labeling")
            try:
                return labeling.DatasetLabeler(labeling.dataset_folder(run))
            except labeling.LabelingError as exc:  # CUB, FGVC-Aircraft: labels live in text files; no panel
                log.debug("labels cannot be given for run %s: %s", run, exc)
                return None

        def opened(labeler) -> None:
            if generation == self._labeler_generation:
                self._labeler = labeler
                for entry in self._entries:
                    entry.in_pool = entry.held_class = None
                self._reset_label_choices()
                self._update_label_panel()

        self._general.start(open_labeler, on_done=opened,
                            on_failed=lambda message, _details: log.warning("cannot open the dataset for labels: %s", message),
                            name="open the dataset for labels")

    def _look_for_labels_again(self) -> None:
        """An unlabeled/ folder may have appeared since the run was chosen."""
        if (self._labeler is None or not self._labeler.unlabeled_folders) and self.current_run() is not None:
            self._open_labeler(self.current_run())

    def _reset_label_choices(self) -> None:
        if self._labeler is None:
            return
        text = self.label_combo.currentText()
        self.label_combo.blockSignals(True)
        self.label_combo.clear()
        self.label_combo.addItems(self._labeler.classes)
        self.label_combo.setEditText(text)
        self.label_combo.blockSignals(False)

    def _in_pool(self, entry: _Entry | None) -> bool:
        if entry is None or self._labeler is None or not isinstance(entry.source, str):
            return False
        if entry.in_pool is None:
            entry.in_pool = self._labeler.is_unlabeled(entry.source)
        return entry.in_pool

    def _doubted(self, entry: _Entry | None) -> bool:
        """A label the check doubted, on an image still in one of the dataset's class folders."""
        if entry is None or entry.doubt is None or self._labeler is None or not isinstance(entry.source, str):
            return False
        if entry.held_class is None:
            entry.held_class = self._labeler.class_of(entry.source) or ""
        return bool(entry.held_class)

    def _can_label(self, entry: _Entry | None) -> bool:
        return self._in_pool(entry) or self._doubted(entry)

    def _copied(self, entry: _Entry | None) -> bool:
        """A copy the duplicate check found, still in one of the dataset's class or unlabeled folders."""
        if entry is None or entry.copy is None or self._labeler is None or not isinstance(entry.source, str):
            return False
        if entry.held_class is None:
            entry.held_class = self._labeler.class_of(entry.source) or ""
        return bool(entry.held_class) or self._in_pool(entry)

    def _open_decision(self, entry: _Entry | None) -> bool:
        """Something is still to decide on this image: a label to give or correct, or a copy to set aside."""
        return entry is not None and entry.labelled is None and (self._copied(entry) or self._can_label(entry))

    def _update_label_panel(self) -> None:
        entry = self._current
        labelled = entry is not None and entry.labelled is not None
        copying = entry is not None and entry.copy is not None and (
            getattr(entry.labelled, "set_aside", False) or (not labelled and self._copied(entry)))
        self.label_panel.setVisible(self._labeler is not None and (labelled or copying or self._can_label(entry)))
        self.undo_label_button.setEnabled(bool(self.label_history) and self._label_task is None)
        self.refit_button.setEnabled(self.labels_since_fit > 0 and self._refit_task is None)
        self.refit_button.setText(f"Refit classifier ({self.labels_since_fit})" if self.labels_since_fit else "Refit classifier")
        self._fill_neighbours(entry.result if entry is not None else None)  # four of them beside the panel
        if self.label_panel.isHidden():
            return
        busy = self._label_task is not None
        self.label_row.setVisible(not copying)
        self.set_aside_button.setVisible(copying)
        self.set_aside_button.setEnabled(copying and not labelled and not busy)
        if copying:
            self.label_title.setText("A copy")
            self.keep_label_button.setVisible(False)
            if labelled:
                self.label_note.setText(f"Set aside in {self._shown_path(entry.labelled.target.parent)}")
                self.label_note.setToolTip(str(entry.labelled.target))
            else:
                self.label_note.setText("")
                self.label_note.setToolTip("")
            return
        self.label_combo.setEnabled(not labelled and not busy)
        self.label_button.setEnabled(not labelled and not busy)
        correcting = entry.doubt is not None and (labelled or not self._in_pool(entry))
        self.label_title.setText("Correct this label" if correcting else "Label this image")
        self.label_button.setText("Relabel" if correcting else "Label")
        self.keep_label_button.setVisible(correcting)
        self.keep_label_button.setEnabled(correcting and not labelled and not busy)
        if labelled:
            move = entry.labelled
            self.label_combo.setEditText(move.class_name)
            if self._is_kept(move):
                self.label_note.setText(f"Kept as {move.class_name}")
                self.label_note.setToolTip("Checked and right: later label checks leave it out")
            else:
                self.label_note.setText(f"Moved to {self._shown_path(move.target)}")
                self.label_note.setToolTip(str(move.target))
            return
        if correcting:  # the title above the image says where it is filed and what it looks like
            doubt = entry.doubt
            self.label_note.setText("")
            self.label_note.setToolTip("")
            guess = doubt.suggested if doubt.suggested in self._labeler.classes else ""
            if self._label_text_for is None or self._label_text_for[0] != entry.key:
                self.label_combo.setEditText(guess)
                self._label_text_for = (entry.key, bool(guess))
            return
        topk = list(getattr(entry.result.prediction, "topk", None) or []) if entry.result and entry.result.prediction else []
        guess = next((name for name, _ in topk if name in self._labeler.classes), "")
        # The prediction fills the box once per image; what the user types stays.
        if self._label_text_for is None or self._label_text_for[0] != entry.key or (guess and not self._label_text_for[1]):
            self.label_combo.setEditText(guess)
            self._label_text_for = (entry.key, bool(guess))
        self.label_note.setText("")  # the keys are in the tooltips; the row keeps Refit's room
        self.label_note.setToolTip("")

    @staticmethod
    def _is_kept(done) -> bool:
        return isinstance(done, LabelConfirmation)

    def keep_current_label(self) -> bool:
        """The shown image's doubted label is right: record it (off the GUI thread) so later
        checks leave the image out, and go on to the next image to decide on."""
        entry, labeler = self._current, self._labeler
        if entry is None or entry.labelled is not None or not self._doubted(entry) or self._label_task is not None:
            return False
        source, key = entry.source, entry.key
        return self._start_label_task(lambda: labeler.confirm(source), lambda kept: self._on_kept(key, kept, labeler),
                                      "keep label")

    def set_aside_current(self) -> bool:
        """Take the shown copy out of the dataset (off the GUI thread): it moves into the dataset's
        hidden set-aside folder, logged like a label, and Undo puts it back."""
        entry, labeler = self._current, self._labeler
        if entry is None or entry.labelled is not None or not self._copied(entry) or self._label_task is not None:
            return False
        source, key = entry.source, entry.key
        return self._start_label_task(lambda: labeler.set_aside(source),
                                      lambda move: self._on_labelled(key, move, labeler), "set aside")

    def _start_label_task(self, job, on_done, name: str) -> bool:
        """One file move (or log line) at a time, off the GUI thread; the panel waits for it."""
        self._label_task = self._general.start(lambda ctx: job(), on_done=on_done, on_failed=self._on_label_failed,
                                               name=name)
        self._update_label_panel()
        return True

    def _go_to_next_open(self, after: _Entry | None) -> None:
        """On to the next image still to label or decide on, or the same one shown again."""
        following = self._next_unlabeled(after)
        if following is not None:
            self.image_list.setCurrentItem(self._items[following.key])
        elif self._current is not None:
            self._show_entry(self._current)

    def _on_kept(self, key: int, kept, labeler) -> None:
        self._label_task = None
        self.label_history.append((key, kept, labeler))
        entry = self._entry(key)
        if entry is not None:
            entry.labelled = kept
            self._set_item_text(entry)
        self.status_message.emit(f"Kept {Path(kept.image).name} as {kept.class_name}: later label checks leave it out")
        self._show_label_warnings(labeler)
        self._go_to_next_open(entry)

    def _shown_path(self, path) -> str:
        try:
            return Path(path).relative_to(self._labeler.root).as_posix()
        except (ValueError, AttributeError):
            return str(path)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """In the image list, where labelling goes on, digits 1-5 label the shown image (the
        list would use them for its type-ahead search, before any shortcut sees them)."""
        if event.type() == QEvent.Type.MouseButtonRelease and watched in self._topk_rank:
            if event.button() == Qt.MouseButton.LeftButton:
                self.contrast_with_rank(self._topk_rank[watched])
                return True
        if watched is self.image_list and event.type() == QEvent.Type.KeyPress:
            rank = RANK_KEYS.get(event.key())
            plain = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier == Qt.KeyboardModifier.NoModifier
            if rank is not None and plain and self._can_label(self._current) \
                    and self._current.labelled is None:
                self.label_as_rank(rank)
                return True
        return super().eventFilter(watched, event)

    def confirm_new_class(self, name: str) -> bool:
        answer = QMessageBox.question(
            self, "New class", f"The dataset has no class \u201c{name}\u201d. Make a class folder for it?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def contrast_with_rank(self, rank: int) -> bool:
        """Set the shown image's top class against the class of that rank (1: the top class
        itself, which means the runner-up again): its maps are made again off the GUI thread,
        and the Versus panel is shown."""
        entry = self._current
        topk = list(getattr(entry.result.prediction, "topk", None) or []) if entry and entry.result and entry.result.prediction else []
        if rank > len(topk) or len(topk) < 2:
            return False
        self.set_layer_visible("contrast", True)
        against = topk[rank - 1][0] if rank > 1 else None
        shown = entry.result.prediction
        if getattr(shown, "contrast_favoured", None) == topk[0][0] and \
                getattr(shown, "contrast_class", None) == (against or topk[1][0]):
            entry.against, entry.favour = against, None
            return False  # that map is on screen already
        entry.against, entry.favour = against, None
        entry.state = "queued"  # its old result stays on screen until the new one arrives
        self._schedule_predictions()
        self.status_message.emit(f"Where {Path(entry.name).name} favours {topk[0][0]} over "
                                 f"{against or 'the runner-up'}…")
        return True

    def label_as_rank(self, rank: int) -> bool:
        entry = self._current
        topk = list(getattr(entry.result.prediction, "topk", None) or []) if entry and entry.result and entry.result.prediction else []
        if rank > len(topk):
            return False
        return self.label_current(topk[rank - 1][0])

    def label_current(self, class_name: str | None = None) -> bool:
        """Give the shown image a class: its file moves into that class's folder (off the GUI
        thread), the list moves on to the next unlabeled image, and Undo can take it back."""
        entry, labeler = self._current, self._labeler
        if entry is None or entry.labelled is not None or not self._can_label(entry) or self._label_task is not None:
            return False
        LabelingError = workers.core("fgdesk.data.labeling").LabelingError
        name = (self.label_combo.currentText() if class_name is None else class_name).strip()
        try:
            name = labeler.check_class_name(name, allow_new=True)
        except LabelingError as exc:
            self.status_message.emit(f"Cannot label as that: {exc}")
            return False
        allow_new = name not in labeler.classes
        if allow_new and not self.confirm_new_class(name):
            return False
        source, key = entry.source, entry.key
        return self._start_label_task(lambda: labeler.assign(source, name, allow_new=allow_new),
                                      lambda move: self._on_labelled(key, move, labeler), "label image")

    def _on_labelled(self, key: int, move, labeler) -> None:
        self._label_task = None
        self.label_history.append((key, move, labeler))
        self.labels_since_fit += 1
        self._reset_label_choices()
        entry = self._entry(key)
        if entry is not None:
            self._move_entry(entry, str(move.target))
            entry.labelled = move
            self._set_item_text(entry)
        self.labels_changed.emit(str(labeler.root), 1)
        name = Path(move.target).name
        if move.set_aside:
            done = f"Set aside {name} in {self._shown_path(Path(move.target).parent)}"
        elif move.previous_class:
            done = f"Relabelled {name}: {move.previous_class} \u2192 {move.class_name}"
        else:
            done = f"Labelled {name} as {move.class_name}"
        given = sum(1 for _key, done_before, _labeler in self.label_history if not self._is_kept(done_before))
        self.status_message.emit(f"{done} ({given} this session): Refit classifier uses the new labels")
        self._show_label_warnings(labeler)
        self._go_to_next_open(entry)

    def _show_label_warnings(self, labeler) -> None:
        """Done, but not all of it (a locked log, a box that could not follow): say so once."""
        if labeler.warnings:
            warnings, labeler.warnings = labeler.warnings, []
            self.last_error_box = show_error(self, "Labelled, with a warning", warnings[0], "\n".join(warnings))

    def _on_label_failed(self, message: str, details: str) -> None:
        self._label_task = None
        self._update_label_panel()
        self.last_error_box = show_error(self, "Cannot label this image", message,
                                         details if "Traceback" in details and "LabelingError" not in details else "")

    def _next_unlabeled(self, after: _Entry | None) -> _Entry | None:
        start = self._entries.index(after) + 1 if after in self._entries else 0
        for entry in self._entries[start:] + self._entries[:start]:
            if self._open_decision(entry):
                return entry
        return None

    def _move_entry(self, entry: _Entry, path: str) -> None:
        """The entry's file now lives at `path`: its name and source follow it."""
        sharing = self._sources_by_name.get(Path(entry.name).name)
        if sharing is not None:
            sharing.discard(entry.name)
        entry.name = entry.source = path
        self._sources_by_name.setdefault(Path(path).name, set()).add(path)
        item = self._items.get(entry.key)
        if item is not None:
            item.setToolTip(path)

    def undo_last_label(self) -> bool:
        """Move the image labelled last back where it was, or take back the label kept last."""
        if not self.label_history or self._label_task is not None:
            return False
        key, move, labeler = self.label_history[-1]
        return self._start_label_task(lambda: labeler.undo(move), lambda _path: self._on_unlabelled(key, move, labeler),
                                      "undo label")

    def _on_unlabelled(self, key: int, move, labeler) -> None:
        self._label_task = None
        self.label_history.pop()
        if self._is_kept(move):  # nothing moved: the image is open to a decision again
            entry = self._entry(key)
            if entry is not None:
                entry.labelled = None
                self._set_item_text(entry)
                self.image_list.setCurrentItem(self._items[key])
            self.status_message.emit(f"{Path(move.image).name} is no longer kept: label checks may list it again")
            self._show_label_warnings(labeler)
            if self._current is not None:
                self._show_entry(self._current)
            return
        self.labels_since_fit = max(0, self.labels_since_fit - 1)
        entry = self._entry(key)
        if entry is not None:
            self._move_entry(entry, str(move.source))
            entry.labelled = None
            entry.in_pool = not move.previous_class
            entry.held_class = move.previous_class or ""
            self._set_item_text(entry)
            self._label_text_for = None
            self.image_list.setCurrentItem(self._items[key])
        self.labels_changed.emit(str(labeler.root), -1)
        self.status_message.emit(f"Moved {Path(move.source).name} back to {self._shown_path(move.source.parent)}")
        self._show_label_warnings(labeler)
        if self._current is not None:
            self._show_entry(self._current)

    def refit_classifier(self) -> bool:
        """Fit the run's classifier again with the labels given, on the inference thread (so
        predictions wait for it, not the GUI), then classify the listed images again."""
        run = self.current_run()
        if run is None or self._refit_task is not None:
            return False
        generation = self._run_generation
        cache = self._cache
        counted = self.labels_since_fit  # labels given while it fits still count afterwards

        def refit(ctx):
            report = workers.core("fgdesk.evaluate.report").fit_classifier(
                Path(run), on_progress=lambda stage, fraction: ctx.progress(("preparing", (stage, fraction))))
            cache.invalidate()
            return report

        def done(report) -> None:
            self._refit_task = None
            self.model_state.setText("")
            if generation == self._run_generation or self.current_run() == run:
                self.labels_since_fit = max(0, self.labels_since_fit - counted)
            self.status_message.emit(
                f"Classifier fitted again on {report.num_train:,} labelled images: top-1 {format_percent(report.top1)} "
                f"on {report.num_test:,} test images")
            self.classifier_refitted.emit(run, report)
            if generation == self._run_generation:
                self.repredict()
            self._update_label_panel()

        def failed(message: str, details: str) -> None:
            self._refit_task = None
            self.model_state.setText("")
            self._update_label_panel()
            self.last_error_box = show_error(self, "Cannot fit the classifier", message,
                                             details if "Traceback" in details and "EvaluationError" not in details else "")

        def cancelled() -> None:  # the images or the run changed before it started
            self._refit_task = None
            self.status_message.emit("The classifier was not fitted (the images shown changed first); "
                                     "click Refit classifier again")
            self._update_label_panel()

        self._refit_task = self._runner.start(refit, on_done=done, on_failed=failed, on_cancelled=cancelled,
                                              on_progress=self._on_predict_progress, name="refit classifier")
        self.status_message.emit("Fitting the classifier again with the new labels…")
        self._update_label_panel()
        return True

    def note_labels_given_elsewhere(self, root: str, change: int) -> None:
        """Labels given on the Dataset page count towards Refit when they are this run's dataset's."""
        labeler = self._labeler
        if labeler is not None and os.path.realpath(labeler.root) == os.path.realpath(root):
            self.labels_since_fit = max(0, self.labels_since_fit + change)
            self._open_labeler(self.current_run())  # a new class may have been made; listed files may have moved

    def follow_moved_files(self, moved: list) -> None:
        """Images listed here that a label on the Dataset page moved: their entries follow."""
        new_path = dict(moved)
        for entry in self._entries:
            if isinstance(entry.source, str) and entry.source in new_path:
                self._move_entry(entry, new_path[entry.source])
                entry.in_pool = entry.held_class = None
                self._set_item_text(entry)
                if entry is self._current:
                    self._show_entry(entry)

    def classifier_changed(self, run_dir: str) -> None:
        """Another view fitted this run's classifier: use it from the next prediction on."""
        if run_dir == self.current_run():
            self._cache.invalidate()
            self.labels_since_fit = 0
            self._update_label_panel()
            self.repredict()

    # ================================================================== adding images
    def choose_files(self) -> None:
        patterns = " ".join(f"*{suffix}" for suffix in IMAGE_SUFFIXES)
        files, _ = QFileDialog.getOpenFileNames(self, "Open images", str(Path.home()), f"Images ({patterns})")
        if files:
            self.add_paths(files)

    def paste_from_clipboard(self) -> bool:
        mime = QApplication.clipboard().mimeData()
        if mime is None:
            return False
        if mime.hasUrls():
            local = [url.toLocalFile() for url in mime.urls() if url.isLocalFile()]
            if local:
                self.add_paths(local)
                return True
        if mime.hasImage():
            image = QApplication.clipboard().image()
            if not image.isNull():
                self._pasted += 1
                self.add_images([(f"pasted image {self._pasted}", qimage_to_pil(image))])
                return True
        self.status_message.emit("The clipboard holds no image")
        return False

    def add_paths(self, paths: list[str | Path]) -> None:
        """Add image files and folders (expanded on a worker thread)."""
        paths = [Path(p) for p in paths]
        files = [str(p) for p in paths if p.is_file() and is_image_file(p)]
        folders = [p for p in paths if p.is_dir()]
        if files:
            self.add_images([(path, path) for path in files])
        if folders:
            self._general.start(lambda ctx: self._expand_folders(folders), on_done=self._on_folders_expanded,
                                on_failed=lambda msg, tb: show_error(self, "Cannot read the folder", msg),
                                name="expand folders")
        skipped = [p for p in paths if p.is_file() and not is_image_file(p)]
        if skipped and not files and not folders:
            self.status_message.emit(f"{skipped[0].name} is not an image file")

    @staticmethod
    def _expand_folders(folders: list[Path]) -> tuple[list[str], bool]:
        found: list[str] = []
        for folder in folders:
            found.extend(str(p) for p in image_files_under(folder, limit=MAX_DROPPED_IMAGES + 1 - len(found)))
            if len(found) > MAX_DROPPED_IMAGES:
                return found[:MAX_DROPPED_IMAGES], True
        return found, False

    def _on_folders_expanded(self, result: tuple[list[str], bool]) -> None:
        files, truncated = result
        if not files:
            self.status_message.emit("No images found in the dropped folder")
            return
        self.add_images([(path, path) for path in files])
        if truncated:
            self.status_message.emit(
                f"Showing the first {MAX_DROPPED_IMAGES} images; use Classify folder to CSV for whole folders"
            )

    def add_images(self, items: list[tuple[str, Any]], doubts: list | None = None, copies: list | None = None,
                   mistakes: list | None = None) -> None:
        """Queue (name, path-or-PIL image) pairs for prediction; `doubts` (one per item) are the
        label check's rows for images whose label looks wrong, `copies` the duplicate check's
        rows for images that copy another, `mistakes` the classifier's for test images it put
        in another class."""
        first_new = None
        new_clash = False  # a name now shared by two files: the one listed before shows its folder too
        for position, (name, source) in enumerate(items):
            doubt = doubts[position] if doubts is not None else None
            mistake = mistakes[position] if mistakes is not None else None
            # A doubted label's Versus map favours the class it looks like over the label given,
            # a mistake's the class it was taken for over its own: where the image looks like
            # the one rather than the other.
            against = doubt.given if doubt is not None else mistake.true_class if mistake is not None else None
            favour = doubt.suggested if doubt is not None else mistake.predicted if mistake is not None else None
            entry = _Entry(key=self._next_key, name=str(name), source=source, doubt=doubt,
                           copy=copies[position] if copies is not None else None, mistake=mistake,
                           against=against, favour=favour)
            sharing = self._sources_by_name.setdefault(Path(entry.name).name, set())
            new_clash |= len(sharing) == 1 and entry.name not in sharing
            sharing.add(entry.name)
            self._next_key += 1
            self._entries.append(entry)
            self._by_key[entry.key] = entry
            item = QListWidgetItem(self._item_text(entry))
            item.setData(Qt.ItemDataRole.UserRole, entry.key)
            item.setToolTip(str(name))
            item.setSizeHint(QSize(200, ITEM_THUMB + 8))
            self.image_list.addItem(item)
            self._items[entry.key] = item
            if first_new is None:
                first_new = item
        if new_clash:
            for entry in self._entries:
                self._set_item_text(entry)
        if any(isinstance(source, str) and any(part.lower() in UNLABELED_FOLDER_NAMES for part in Path(source).parts)
               for _name, source in items):
            self._look_for_labels_again()
        self.body.setCurrentIndex(1)
        if first_new is not None:
            self.image_list.setCurrentItem(first_new)
        self._schedule_predictions()

    def clear_images(self) -> None:
        self._runner.cancel_all()
        self._let_go_of_list_tasks()
        self._run_generation += 1
        self._entries.clear()
        self._sources_by_name.clear()
        self._items.clear()
        self._by_key.clear()
        self.image_list.clear()
        self._current = None
        self.body.setCurrentIndex(0)

    # ================================================================== predicting
    def _schedule_predictions(self) -> None:
        run = self.current_run()
        if run is None:
            for entry in self._entries:
                if entry.state == "queued":
                    self._set_item_text(entry)
            return
        queued = [entry for entry in self._entries if entry.state == "queued"]
        generation = self._run_generation
        chunks = []
        for pair in dict.fromkeys((entry.favour, entry.against) for entry in queued):  # one task per contrast
            alike = [entry for entry in queued if (entry.favour, entry.against) == pair]
            chunks.extend((alike[start:start + BATCH], pair) for start in range(0, len(alike), BATCH))
        for chunk, (favour, against) in chunks:
            for entry in chunk:
                entry.state = "running"
                self._set_item_text(entry)
            sources = [entry.source for entry in chunk]
            names = [entry.name for entry in chunk]
            keys = [entry.key for entry in chunk]
            normalize = self.normalize_combo.currentData() or "per_map"
            self._runner.start(
                lambda ctx, s=sources, n=names, m=normalize, a=against, f=favour:
                    predict_sources(self._cache, run, s, n, m, ctx, a, f),
                on_done=lambda results, k=keys, g=generation: self._on_results(g, k, results),
                on_failed=lambda msg, tb, k=keys, g=generation: self._on_predict_failed(g, k, msg, tb),
                on_progress=self._on_predict_progress,
                name="predict",
            )

    def _on_predict_progress(self, value) -> None:
        stage, detail = value
        if stage == "loading":
            self.model_state.setText("Loading the model…")
        elif stage == "preparing":
            step, fraction = detail
            self.model_state.setText(f"Preparing the run: {step} ({100 * fraction:.0f}%)…")
        else:
            self.model_state.setText(f"Classifying {detail} image(s)…")

    def _entry(self, key: int) -> _Entry | None:
        return self._by_key.get(key)

    def _on_results(self, generation: int, keys: list[int], results: list[InspectResult]) -> None:
        self._colormaps = self._cache.colormaps
        self._sync_colormaps()
        if generation != self._run_generation:
            return
        self.model_state.setText("")
        for key, result in zip(keys, results):
            entry = self._entry(key)
            if entry is None:
                continue
            entry.result = result
            entry.state = "failed" if result.error else "done"
            self._set_item_text(entry)
            if self._current is entry:
                self._show_entry(entry)
        done = sum(1 for entry in self._entries if entry.state in ("done", "failed"))
        self.status_message.emit(f"Classified {done} of {len(self._entries)} image(s)")

    def _on_predict_failed(self, generation: int, keys: list[int], message: str, details: str) -> None:
        if generation != self._run_generation:
            return
        self.model_state.setText("")
        for key in keys:
            entry = self._entry(key)
            if entry is not None:
                entry.state = "failed"
                entry.result = InspectResult(source=entry.name, prediction=None, error=message)
                self._set_item_text(entry)
                if self._current is entry:
                    self._show_entry(entry)
        if self.last_error_box is None or not self.last_error_box.isVisible():
            self.last_error_box = show_error(self, "Prediction failed", message, details)

    def _sync_colormaps(self) -> None:
        names = list(self._colormaps)
        current = [self.colormap_combo.itemText(i) for i in range(self.colormap_combo.count())]
        if names and names != current:
            chosen = self.colormap_combo.currentText()
            self.colormap_combo.blockSignals(True)
            self.colormap_combo.clear()
            self.colormap_combo.addItems(names)
            self.colormap_combo.setCurrentText(chosen if chosen in names else ("inferno" if "inferno" in names else names[0]))
            self.colormap_combo.blockSignals(False)

    def _display_name(self, entry: _Entry) -> str:
        """The file name, with its folder where another dropped image has the same name
        (class-folder datasets often number files from 0 in every class)."""
        path = Path(entry.name)
        if path.parent.name and len(self._sources_by_name.get(path.name, ())) > 1:
            return f"{path.parent.name}/{path.name}"
        return path.name

    def _item_text(self, entry: _Entry) -> str:
        name = self._display_name(entry)
        if entry.labelled is not None:
            if getattr(entry.labelled, "set_aside", False):
                return f"{name}\n\u2713\u00a0set\u00a0aside"
            kept = "kept\u00a0" if self._is_kept(entry.labelled) else ""  # no-break spaces: one line, cut at its end
            return f"{name}\n\u2713\u00a0{kept}{entry.labelled.class_name}"
        if entry.doubt is not None:  # the class it is filed under is in the title; the list is narrow
            return f"{name}\n\u2192\u00a0{entry.doubt.suggested}?"
        if entry.copy is not None:
            return f"{name}\n=\u00a0{Path(entry.copy.other_path).name}"
        if entry.mistake is not None:  # no-break spaces: one line, cut at its end
            return f"{name}\n{entry.mistake.true_class}\u00a0\u2192\u00a0{entry.mistake.predicted}"
        if entry.state == "done" and entry.result and entry.result.prediction is not None:
            topk = getattr(entry.result.prediction, "topk", None) or []
            if topk:
                label, probability = topk[0]
                return f"{name}\n{label} · {format_percent(probability)}"
            return f"{name}\nno classes"
        if entry.state == "failed":
            return f"{name}\ncannot classify"
        if self.current_run() is None:
            return f"{name}\nwaiting for a trained run"
        return f"{name}\nclassifying…"

    def _set_item_text(self, entry: _Entry) -> None:
        item = self._items.get(entry.key)
        if item is not None:
            item.setText(self._item_text(entry))
            if entry.result is not None and entry.result.thumb is not None:
                item.setIcon(QPixmap.fromImage(entry.result.thumb))

    # ================================================================== showing
    @property
    def current_result(self) -> InspectResult | None:
        return None if self._current is None else self._current.result

    def results(self) -> list[InspectResult]:
        return [entry.result for entry in self._entries if entry.result is not None]

    def _on_item_changed(self, current: QListWidgetItem | None, _previous=None) -> None:
        if current is None:
            return
        entry = self._entry(current.data(Qt.ItemDataRole.UserRole))
        if entry is not None:
            self._current = entry
            self._show_entry(entry)

    def _show_entry(self, entry: _Entry) -> None:
        self._update_label_panel()
        name = self._display_name(entry)
        self.image_title.setText(name)
        self.image_subtitle.setText(entry.name if name != entry.name else "")
        result = entry.result
        prediction = result.prediction if result is not None else None
        if result is None:
            self.prediction_message.setText("Classifying…" if self.current_run() else "Choose a trained run above.")
            self._fill_topk([])
            self._fill_neighbours(None)
            self._build_layers([])
            self.layer_message.setText("")
            return
        if result.error:
            self.prediction_message.setText(f"Cannot classify this image: {result.error}")
        else:
            self.prediction_message.setText("")
        topk = list(getattr(prediction, "topk", None) or [])
        self._fill_topk(topk)
        if topk and not result.error:
            self.image_subtitle.setText(f"Predicted {topk[0][0]} ({format_percent(topk[0][1])})")
        if self._doubted(entry) and entry.labelled is None:
            doubt = entry.doubt
            self.image_subtitle.setText(f"Filed under {entry.held_class}, looks like {doubt.suggested} "
                                        f"({format_percent(doubt.suggested_probability)})")
            self.image_subtitle.setToolTip(
                f"A classifier that never saw this image's label gives {entry.held_class} "
                f"{format_percent(doubt.given_probability)} and {doubt.suggested} "
                f"{format_percent(doubt.suggested_probability)}" +
                (f"; the run's classifier predicts {topk[0][0]} ({format_percent(topk[0][1])})" if topk else ""))
        elif entry.copy is not None and entry.labelled is None:
            subtitle, tooltip = self._copy_title(entry.copy)
            self.image_subtitle.setText(subtitle)
            self.image_subtitle.setToolTip(tooltip)
        elif entry.mistake is not None:
            subtitle, tooltip = self._mistake_title(entry)
            self.image_subtitle.setText(subtitle)
            self.image_subtitle.setToolTip(tooltip)
        else:
            self.image_subtitle.setToolTip(self.image_subtitle.text())
        self._fill_neighbours(result)
        keys = layer_order(result.display_maps.keys()) if result.display_image is not None else []
        self._build_layers(keys)
        self._render_layers()

    def _fill_topk(self, topk: list) -> None:
        for i, (name_label, bar, value_label) in enumerate(self.topk_rows):
            if i < len(topk):
                label, probability = topk[i]
                name_label.setText(str(label))
                hint = (f"Click to see where the image favours {topk[0][0]} over {label} (the Versus panel)" if i
                        else "Click to set it against the runner-up again (the Versus panel)")
                for widget in (name_label, value_label):
                    widget.setToolTip(f"{label}\n{hint}")
                    widget.setCursor(Qt.CursorShape.PointingHandCursor)
                bar.setValue(int(round(1000 * max(0.0, min(1.0, float(probability))))))
                value_label.setText(format_percent(float(probability)))
                bar.show()
            else:
                name_label.setText("")
                value_label.setText("")
                for widget in (name_label, value_label):
                    widget.setToolTip("")
                    widget.unsetCursor()
                bar.setValue(0)
                bar.setVisible(False)

    def _fill_neighbours(self, result: InspectResult | None) -> None:
        neighbours = list(getattr(result.prediction, "neighbours", None) or []) if result and result.prediction else []
        if not self.label_panel.isHidden():  # the label panel takes the last row's room
            neighbours = neighbours[:4]
        for i, (canvas, caption) in enumerate(self.neighbour_tiles):
            if i < len(neighbours):
                path, label, similarity = neighbours[i]
                thumb = result.neighbour_thumbs[i] if i < len(result.neighbour_thumbs) else None
                canvas.set_pixmap(QPixmap.fromImage(thumb) if thumb is not None else None)
                canvas.set_placeholder("" if thumb is not None else "missing")
                # A long class name is cut with an ellipsis, not clipped at both ends of the centred line.
                shown = caption.fontMetrics().elidedText(label, Qt.TextElideMode.ElideRight, caption.width() - 4)
                caption.setText(f"{shown}\n{similarity:.2f}")
                canvas.setToolTip(f"{path}\nclass {label}, cosine similarity {similarity:.3f}")
                caption.setToolTip(canvas.toolTip())
                canvas.parentWidget().show()
            else:
                canvas.set_pixmap(None)
                caption.setText("")
                canvas.parentWidget().setVisible(False)

    def _build_layers(self, keys: list[str]) -> None:
        if list(self._panels) != keys:
            for panel in self._panels.values():
                panel.setParent(None)
                panel.deleteLater()
            self._panels = {}
            for box in self._layer_boxes.values():
                box.setParent(None)
                box.deleteLater()
            self._layer_boxes = {}
            for key in keys:
                panel = _LayerPanel(key)
                panel.canvas.clicked.connect(lambda k=key: self.select_layer(k))
                self._panels[key] = panel
                box = QCheckBox({"evidence": "Evidence", "contrast": "Versus"}.get(key, layer_title(key)))
                box.setToolTip(f"Show the {layer_title(key)} panel")
                box.setChecked(key not in self._hidden_layers)
                box.toggled.connect(lambda checked, k=key: self.set_layer_visible(k, checked))
                self.layers_row.addWidget(box)
                self._layer_boxes[key] = box
        if self._selected_layer not in keys and keys:
            visible = [k for k in keys if k not in self._hidden_layers] or keys
            self._selected_layer = next((k for k in ("evidence", "fused") if k in visible), visible[-1])
        self._arrange_layers()

    def _arrange_layers(self) -> None:
        while self.layer_grid.count():
            self.layer_grid.takeAt(0)
        shown = [key for key in self._panels if key not in self._hidden_layers]
        columns = 3 if len(shown) > 4 else 2 if len(shown) > 1 else 1
        for position, key in enumerate(shown):
            self.layer_grid.addWidget(self._panels[key], position // columns, position % columns)
        for column in range(3):
            self.layer_grid.setColumnStretch(column, 1 if column < columns else 0)
        for row in range(3):
            self.layer_grid.setRowStretch(row, 1 if row < -(-len(shown) // columns) else 0)
        for key, panel in self._panels.items():
            panel.setVisible(key in shown)
            panel.canvas.set_selected(key == self._selected_layer and len(shown) > 1)
        if not self._panels:
            self.layer_message.setText("")
        elif not shown:
            self.layer_message.setText("All layers are hidden; tick one above.")
        else:
            self.layer_message.setText("")

    def layer_keys(self) -> list[str]:
        return list(self._panels)

    @staticmethod
    def _remembered_hidden_layers() -> set[str]:
        """The layers hidden when the app last closed; at first the runner-up contrast, so the
        six usual panels keep their size until it is asked for (its box reads Versus)."""
        value = app_settings().value(HIDDEN_LAYERS_KEY, None)
        if not isinstance(value, str):  # never set (or not ours)
            return set(DEFAULT_HIDDEN_LAYERS)
        return {key for key in value.split(",") if key}

    def set_layer_visible(self, key: str, visible: bool) -> None:
        if visible:
            self._hidden_layers.discard(key)
        else:
            self._hidden_layers.add(key)
        app_settings().setValue(HIDDEN_LAYERS_KEY, ",".join(sorted(self._hidden_layers)))  # "" when all are shown
        box = self._layer_boxes.get(key)
        if box is not None and box.isChecked() != visible:
            box.blockSignals(True)
            box.setChecked(visible)
            box.blockSignals(False)
        self._arrange_layers()

    def select_layer(self, key: str) -> None:
        self._selected_layer = key
        self._arrange_layers()

    def selected_layer(self) -> str:
        return self._selected_layer

    def _alpha(self) -> float:
        return self.opacity_slider.value() / 100.0

    def _render_layers(self) -> None:
        result = self.current_result
        if result is None or result.display_image is None:
            return
        notes = dict(getattr(result.prediction, "map_notes", None) or {})
        base = QPixmap.fromImage(pil_to_qimage(result.display_image))
        colormap = self.colormap_combo.currentText() or "inferno"
        for key, panel in self._panels.items():
            if key == IMAGE_LAYER:
                panel.canvas.set_pixmap(base)
                panel.canvas.set_note("")
                continue
            if key == "contrast":  # before the note, so a note never sits under another image's title
                panel.title.setText(self._contrast_title(result.prediction))
            note = notes.get(key)
            if note:  # a constant or empty map: say so instead of drawing noise
                panel.canvas.set_pixmap(base)
                panel.canvas.set_note(note)
                panel.setToolTip(note)
                continue
            try:
                overlay = render_full_overlay(result.display_image, result.display_maps[key], colormap, self._alpha(),
                                              result.display_frame)
            except Exception as exc:
                log.exception("overlay failed")
                panel.canvas.set_pixmap(base)
                panel.canvas.set_note(f"cannot draw this map: {exc}")
                continue
            panel.canvas.set_pixmap(QPixmap.fromImage(pil_to_qimage(overlay)))
            panel.canvas.set_note("", dim=False)
            prediction = result.prediction
            panel.setToolTip(layer_tooltip(key, getattr(prediction, "evidence_class", None),
                                           getattr(prediction, "contrast_class", None),
                                           getattr(prediction, "contrast_favoured", None))
                             + (OUTSIDE_FRAME_NOTE if _frame_leaves_out(result) else ""))

    @staticmethod
    def _contrast_title(prediction) -> str:
        """"Versus CLASS", or "FAVOURED over CLASS" when the map favours another than the top class."""
        against = getattr(prediction, "contrast_class", None)
        if not against:
            return layer_title("contrast")
        favoured = getattr(prediction, "contrast_favoured", None)
        top = (getattr(prediction, "topk", None) or [(None, 0.0)])[0][0]
        return f"Versus {against}" if favoured in (None, top) else f"{favoured} over {against}"

    # ================================================================== saving
    def save_overlay(self, path: str | Path | None = None) -> bool:
        """Save the selected layer at full resolution as PNG (asks for a file name when none given)."""
        result = self.current_result
        if result is None or result.prediction is None or getattr(result.prediction, "image", None) is None:
            self.status_message.emit("Nothing to save yet")
            return False
        key = self._selected_layer
        stem = Path(result.source).stem.replace(" ", "_")
        if path is None:
            suggestion = str(Path.home() / f"{stem}_{key}_overlay.png")
            path, _ = QFileDialog.getSaveFileName(self, "Save overlay", suggestion, "PNG image (*.png)")
            if not path:
                return False
        path = str(path)
        if not path.lower().endswith(".png"):
            path += ".png"
        image = result.prediction.image
        heatmap = (result.prediction.maps or {}).get(key)
        frame = getattr(result.prediction, "frame", None)
        colormap, alpha = self.colormap_combo.currentText() or "inferno", self._alpha()

        def write(ctx) -> str:
            picture = image if key == IMAGE_LAYER or heatmap is None else render_full_overlay(image, heatmap, colormap,
                                                                                             alpha, frame)
            picture.save(path, format="PNG")
            return path

        self._general.start(write, on_done=self._on_saved,
                            on_failed=lambda msg, tb: show_error(self, "Cannot save the overlay", msg), name="save overlay")
        return True

    def _on_saved(self, path: str) -> None:
        self.last_saved_overlay = path
        self.status_message.emit(f"Saved {path}")

    # ================================================================== folder to CSV
    def choose_csv_folder(self) -> None:
        if self.current_run() is None:
            return
        folder = QFileDialog.getExistingDirectory(self, "Classify every image in a folder", str(Path.home()))
        if not folder:
            return
        suggestion = str(Path(folder) / f"{Path(folder).name}-predictions.csv")
        csv_path, chosen = QFileDialog.getSaveFileName(self, "Write predictions to", suggestion,
                                                       f"{PREDICTIONS_FILTER};;{WITH_EMBEDDINGS_FILTER}")
        if csv_path:
            embeddings = embeddings_beside(csv_path) if chosen == WITH_EMBEDDINGS_FILTER else None
            self.classify_folder_to_csv(folder, csv_path, embeddings)

    def classify_folder_to_csv(self, folder: str | Path, csv_path: str | Path,
                               embeddings_path: str | Path | None = None) -> bool:
        """Classify every image under `folder` into `csv_path` (off the GUI thread); with
        `embeddings_path`, also save each image's embedding there (.csv or .npz)."""
        run = self.current_run()
        if run is None or self._csv_task is not None:
            return False
        folder, csv_path = Path(folder), Path(csv_path)
        self.csv_label.setText(f"Classifying {folder.name} →  {csv_path.name}")
        self.csv_progress.setRange(0, 0)
        self.csv_progress.setValue(0)
        self.csv_cancel.setEnabled(True)
        self.csv_strip.show()
        started = time.monotonic()

        def job(ctx) -> int:
            paths = image_files_under(folder)
            if not paths:
                raise ValueError(f"no image files found in {folder}")
            ctx.progress((0, len(paths)))
            predictor = self._cache.get(run)
            return predictor.predict_to_csv(
                paths, csv_path,
                on_progress=lambda done, total: ctx.progress((done, total)),
                should_cancel=ctx.cancelled,
                embeddings_path=embeddings_path,
            )

        self.last_embeddings_path = str(embeddings_path) if embeddings_path is not None else None
        self._csv_task = self._runner.start(
            job,
            on_done=lambda count: self._on_csv_done(str(csv_path), count, started),
            on_failed=self._on_csv_failed,
            on_progress=self._on_csv_progress,
            name="classify folder",
            on_cancelled=lambda: self._on_csv_done(str(csv_path), 0, started),
        )
        self._update_hint()
        return True

    def csv_running(self) -> bool:
        return self._csv_task is not None

    def cancel_csv(self) -> None:
        if self._csv_task is not None:
            self._csv_task.cancel()
            self.csv_cancel.setEnabled(False)
            self.csv_label.setText("Cancelling…")

    def _on_csv_progress(self, value) -> None:
        done, total = value
        self.csv_progress.setRange(0, max(1, total))
        self.csv_progress.setValue(done)

    def _on_csv_done(self, csv_path: str, count: int, started: float) -> None:
        cancelled = self._csv_task is not None and self._csv_task.was_cancelled()
        self._csv_task = None
        self.csv_strip.hide()
        self.last_csv_result = (csv_path, int(count))
        verb = "Cancelled after writing" if cancelled else "Wrote"
        also = f", and their embeddings to {Path(self.last_embeddings_path).name}" if self.last_embeddings_path else ""
        self.status_message.emit(f"{verb} {count} prediction(s) to {csv_path}{also} in {time.monotonic() - started:.0f} s")
        self._update_hint()

    def _on_csv_failed(self, message: str, details: str) -> None:
        self._csv_task = None
        self.csv_strip.hide()
        self._update_hint()
        self.last_error_box = show_error(self, "Classifying the folder failed", message, details)

    # ================================================================== drag and drop
    def dragEnterEvent(self, event) -> None:
        mime = event.mimeData()
        if mime.hasUrls() and any(url.isLocalFile() for url in mime.urls()) or mime.hasImage():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:
        mime = event.mimeData()
        local = [url.toLocalFile() for url in mime.urls() if url.isLocalFile()] if mime.hasUrls() else []
        if local:
            self.add_paths(local)
            event.acceptProposedAction()
        elif mime.hasImage():
            image = QImage(mime.imageData())
            if not image.isNull():
                self._pasted += 1
                self.add_images([(f"dropped image {self._pasted}", qimage_to_pil(image))])
                event.acceptProposedAction()
        else:
            event.ignore()

    def busy(self) -> bool:
        return self._runner.busy() or self._general.busy()

    def shutdown(self) -> None:
        self._runner.cancel_all()
        self._general.cancel_all()
        self._pool.waitForDone(10_000)
        self._cache.forget()
