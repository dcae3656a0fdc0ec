"""Training panel: one-click runs, live curves, pause/stop, past runs and the linear classifier."""
from __future__ import annotations

import html
import logging
import math
import os
import time
from array import array
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtGui import QCursor, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGraphicsItem,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from fgdesk.config import ATTENTION_KINDS, BACKBONES, DEVICES, ConfigError, RunConfig
from fgdesk.gui import workers
from fgdesk.gui.qtutil import format_duration, format_percent, open_in_file_manager, show_error
from fgdesk.gui.style import PLOT_COLOURS, STATUS_COLOURS, configure_plots
from fgdesk.gui.widgets import Card, CollapsibleSection, EmptyState, metric_block, muted_label
from fgdesk.train.runs import format_bytes  # no torch: runs.py reads folders and JSON only

log = logging.getLogger(__name__)

REDRAW_INTERVAL_MS = 200  # ~5 Hz: a fast run cannot flood the GUI
EMA_BETA = 0.9


class CurveSeries:
    """Growing x/y arrays for one plotted curve (append is O(1); numpy views for plotting)."""

    def __init__(self) -> None:
        self.x = array("d")
        self.y = array("d")

    def append(self, x: float, y: float) -> None:
        self.x.append(x)
        self.y.append(y)

    def clear(self) -> None:
        self.x = array("d")
        self.y = array("d")

    def __len__(self) -> int:
        return len(self.x)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.frombuffer(self.x, dtype=np.float64).copy(), np.frombuffer(self.y, dtype=np.float64).copy()


class TrainingCurves:
    """Plot data for a run: raw and smoothed loss, lr, speed per step; kNN top-1 per epoch."""

    def __init__(self) -> None:
        self.loss = CurveSeries()
        self.loss_ema = CurveSeries()
        self.lr = CurveSeries()
        self.speed = CurveSeries()
        self.knn = CurveSeries()
        self.steps: list[tuple[float, float, float, float]] = []  # raw (step, loss, lr, images/s)
        self.epochs: list[tuple[float, float | None]] = []  # raw (epoch number, kNN top-1 in [0, 1])
        self._ema_raw = 0.0
        self._ema_count = 0

    def add_step(self, step: float, loss: float, lr: float, speed: float) -> None:
        self.steps.append((step, loss, lr, speed))
        self.loss.append(step, loss)
        if math.isfinite(loss):  # a skipped step's NaN would poison the average for good
            self._ema_count += 1
            self._ema_raw = EMA_BETA * self._ema_raw + (1.0 - EMA_BETA) * loss
        if self._ema_count:
            self.loss_ema.append(step, self._ema_raw / (1.0 - EMA_BETA**self._ema_count))  # bias-corrected
        self.lr.append(step, lr)
        if speed > 0:
            self.speed.append(step, speed)

    def add_epoch(self, epoch_number: float, knn_top1: float | None) -> None:
        """`epoch_number` counts from 1 at the end of the first epoch; a part of one is a fraction."""
        self.epochs.append((epoch_number, knn_top1))
        if knn_top1 is not None:
            self.knn.append(epoch_number, 100.0 * knn_top1 if knn_top1 <= 1.0 else knn_top1)

    def best_knn(self) -> float | None:
        scores = [knn for _, knn in self.epochs if knn is not None]
        return max(scores) if scores else None

    @classmethod
    def from_records(cls, records: list[dict]) -> "TrainingCurves":
        """Curves from metrics.jsonl records (as written by the engine)."""
        curves = cls()
        for record in records:
            if record.get("type") == "step":
                loss = record.get("loss")  # null for a skipped (non-finite) step
                curves.add_step(record.get("global_step", 0), float("nan") if loss is None else loss,
                                record.get("lr") or 0.0, record.get("images_per_s") or 0.0)
            elif record.get("type") == "epoch":
                curves.add_epoch(int(record.get("epoch", 0)) + float(record.get("fraction") or 1.0), record.get("knn_top1"))
        return curves

    def after(self, history: "TrainingCurves") -> "TrainingCurves":
        """`history` followed by these points (for a resumed run); history past our first step is dropped."""
        first_step = self.steps[0][0] if self.steps else float("inf")
        # Epochs that ended before the one our points continue; a part of that one (where a
        # time budget ended it) goes, as the engine drops its record when it resumes.
        last_whole = math.ceil(self.epochs[0][0]) - 1 if self.epochs else 10**9
        merged = TrainingCurves()
        for point in [p for p in history.steps if p[0] < first_step] + self.steps:
            merged.add_step(*point)
        for point in [p for p in history.epochs if p[0] <= last_whole] + self.epochs:
            merged.add_epoch(*point)
        return merged


NO_RUN_CAPTION = "Select a run to fit a linear classifier on its features."


def short_time(timestamp: float, now: float | None = None) -> str:
    """'Dec 6 21:02' this year, '2025-12-06' before: the runs table keeps room for its other columns."""
    when = time.localtime(timestamp)
    if when.tm_year == time.localtime(now).tm_year:
        return f"{time.strftime('%b', when)} {when.tm_mday} {time.strftime('%H:%M', when)}"
    return time.strftime("%Y-%m-%d", when)


def _classifier_cell(info) -> str:
    if info.classifier_top1 is not None:
        return format_percent(info.classifier_top1)
    return "yes" if info.has_classifier else "—"


def read_run_history(run_dir: str) -> list[dict]:
    """The step and epoch records of a run's metrics.jsonl (worker thread)."""
    read_jsonl = workers.core("fgdesk.fileio").read_jsonl
    metrics_file = workers.core("fgdesk.train.runs").METRICS_FILE
    return [r for r in read_jsonl(Path(run_dir) / metrics_file) if r.get("type") in ("step", "epoch")]


def nice_limit(value: float) -> float:
    """The axis end for `value`: the next of 10, 20, 50, 100, 200, ... at or above it."""
    limit = 10.0
    while limit < value:
        for factor in (2.0, 2.5, 2.0):
            limit *= factor
            if limit >= value:
                break
    return limit


def nice_step(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^k at or above `value` (> 0)."""
    power = 10.0 ** math.floor(math.log10(value))
    for factor in (1.0, 2.0, 5.0):
        if factor * power >= value * (1 - 1e-9):
            return factor * power
    return 10.0 * power


def stepped_range(current: tuple[float, float] | None, low: float, high: float) -> tuple[float, float] | None:
    """A y range for data in [low, high], on a coarse grid, kept while the data still fills it.

    Auto-ranging on every new point makes each repaint regenerate the axis's tick labels;
    this range changes only when the data leaves it or fills less than half of it.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return current
    if current is not None:
        bottom, top = current
        if bottom <= low and high <= top and high - low >= 0.5 * (top - bottom):
            return current
    step = nice_step(max(high - low, abs(high) * 0.02, 1e-12) / 4)
    bottom, top = math.floor(low / step) * step, math.ceil(high / step) * step
    if top - bottom < step / 2:
        top = bottom + step
    return bottom, top


class _Field:
    """A form widget bound to a dotted config key."""

    def __init__(self, key: str, widget: QWidget, read: Callable[[], object], write: Callable[[object], None]):
        self.key, self.widget, self.read, self.write = key, widget, read, write


def _stage_span(stages) -> str:
    """Backbone stages as a span ("2\u20134") when consecutive, else listed ("2, 4")."""
    stages = sorted(int(stage) for stage in stages)
    if len(stages) > 2 and stages == list(range(stages[0], stages[-1] + 1)):
        return f"{stages[0]}\u2013{stages[-1]}"
    return ", ".join(str(stage) for stage in stages)


class TrainingView(QWidget):
    """The Train page."""

    open_in_inspect = Signal(str)  # run folder
    open_mistakes = Signal(str, list)  # run folder, the test images of one confusion cell (Mistake rows)
    run_started = Signal(str)
    run_ended = Signal(object)  # FinishedEvent, FailedEvent or WorkerFailure
    status_message = Signal(str)
    classifier_trained = Signal(str)  # run folder whose classifier.pt was just written
    deleting_runs = Signal(list)  # run folders about to be deleted: stop using them
    runs_deleted = Signal(list)  # run folders whose files were deleted

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Page")
        configure_plots()
        self.config_hook: Callable[[RunConfig], RunConfig] | None = None  # tests shrink runs here
        self.worker: workers.TrainingWorker | None = None
        self.last_result = None
        self.last_error_box: QMessageBox | None = None
        self.curves = TrainingCurves()
        self._best_knn: float | None = None
        self.bad_images: list[tuple[str, str]] = []
        self._runner = workers.TaskRunner(parent=self)
        self._dataset_path: str | None = None
        self._dataset_images = 0
        self._images_text = ""
        self._dataset_labelled = False
        self._base_config: RunConfig | None = None
        self._defaults_generation = 0
        self._pending_steps: list = []
        self._pending_epochs: list = []
        self._latest_step = None
        self._runs: list = []
        self._history_generation = 0
        self._shown_run: str | None = None
        self._classifier_task = None
        self._classifier_run: str | None = None  # the run the classifier task fits
        self._delete_task = None
        self._deleting: set[str] = set()  # run folders a delete in progress is removing
        self._runs_generation = 0  # a listing read before a later one started is dropped
        self.classifier_report = None  # the last ClassifierReport shown on the card
        self._classifier_shown_for: str | None = None  # the run folder it belongs to
        self._report_generation = 0
        self.compare_dialog = None  # the open "Compare runs" window
        self._paused = False
        self.paused_at_step: int | None = None  # the step the engine last parked after
        self.redraw_count = 0
        self._x_limit = 0.0
        self._epoch_limit = 0.0
        self._y_ranges: dict[str, tuple[float, float] | None] = {}

        self._redraw_timer = QTimer(self)
        self._redraw_timer.setInterval(REDRAW_INTERVAL_MS)
        self._redraw_timer.timeout.connect(self.redraw)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setChildrenCollapsible(False)
        splitter.setHandleWidth(10)
        top = QWidget()
        top_layout = QHBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.setSpacing(12)
        top_layout.addWidget(self._build_controls())
        top_layout.addWidget(self._build_monitor(), 1)
        splitter.addWidget(top)
        splitter.addWidget(self._build_history())
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([440, 320])  # room below for the classifier card: scores, legend, fewer-label line
        self.splitter = splitter
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 14, 16, 12)
        layout.addWidget(splitter)
        self._update_buttons()

    # ================================================================== building
    def _build_controls(self) -> QWidget:
        card = Card("New run")
        card.setFixedWidth(330)
        self.dataset_label = QLabel("No dataset open")
        self.dataset_label.setWordWrap(True)
        self.dataset_label.setObjectName("Subtitle")
        self.dataset_hint = muted_label("Open a dataset on the Dataset page first.")
        card.body.addWidget(self.dataset_label)
        card.body.addWidget(self.dataset_hint)

        self.train_button = QPushButton("Train")
        self.train_button.setObjectName("Primary")
        self.train_button.setMinimumHeight(36)
        self.train_button.setToolTip("Start a run with the settings below (sensible defaults for this dataset and device)")
        self.train_button.clicked.connect(self.start_training)
        card.body.addWidget(self.train_button)
        row = QHBoxLayout()
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("Danger")
        self.stop_button.setToolTip("Stop after the current step; a checkpoint is saved so the run can be resumed")
        self.stop_button.clicked.connect(self.stop_training)
        row.addWidget(self.pause_button)
        row.addWidget(self.stop_button)
        card.body.addLayout(row)
        self.state_label = muted_label("")
        card.body.addWidget(self.state_label)

        form_widget = QWidget()
        self.form = QFormLayout(form_widget)
        self.form.setContentsMargins(0, 0, 6, 0)
        self.form.setHorizontalSpacing(10)
        self.form.setVerticalSpacing(6)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.fields: dict[str, _Field] = {}
        self._add_combo("model.backbone", "Backbone", BACKBONES)
        self._add_combo("model.weights", "Initial weights", ("random", "imagenet"),
                        "ImageNet weights need a download (or a cached copy) once")
        self._add_spin("data.image_size", "Image size (px)", 1, 4096, 16)
        self._add_spin("data.early_size", "Early image size (px)", 0, 4096, 16,
                       "Resolution schedule: smaller views for the first part of the run buy more steps; 0 is off")
        self._add_double("data.early_fraction", "Early share of the run", 0, 0.99, 2, 0.05,
                         "How much of the run (by the time budget, or by steps) uses the early image size")
        self._add_spin("schedule.epochs", "Epochs", 0, 1_000_000)
        self._add_double("schedule.time_budget_min", "Time budget (min)", 0, 1e6, 1, 5,
                         "Stop after this many minutes; 0 means no limit. The schedule adapts to the budget.")
        self._add_spin("schedule.batch_size", "Batch size", 1, 65_536, 8)
        self._add_double("optim.lr", "Learning rate", 0, 100, 4, 0.01, "For a batch of 256; scaled with the batch")
        self._add_double("contrastive.temperature", "Temperature", 0, 10, 3, 0.01)
        self._add_spin("contrastive.queue_size", "Queue size", 0, 10_000_000, 256)
        self._add_double("contrastive.momentum", "Key momentum", 0, 1, 4, 0.001)
        self._add_combo("model.attention", "Attention", ATTENTION_KINDS)
        self._add_stages("model.stages", "Attention scales")
        self._add_double("contrastive.attention_consistency", "Attention consistency", 0, 100, 2, 0.5,
                         "Asks each scale's attention to agree, between the two views of an image, on the part both "
                         "show. It keeps the heatmaps on content rather than on a corner of the frame; 0 is off")
        self._add_spin("data.local_crops", "Local crops", 0, 64)
        self._add_spin("data.local_size", "Local crop size (px)", 1, 4096, 8)
        self._add_combo("device", "Device", DEVICES)
        name = QLineEdit()
        name.setPlaceholderText("optional")
        self._register("name", "Run name", name, lambda: name.text().strip(), lambda v: name.setText(str(v)))
        self.advanced = CollapsibleSection("Advanced options", form_widget, expanded=False)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setStyleSheet("QScrollArea, QScrollArea > QWidget > QWidget { background: transparent; }")
        holder = QWidget()
        holder_layout = QVBoxLayout(holder)
        holder_layout.setContentsMargins(0, 0, 0, 0)
        holder_layout.addWidget(self.advanced)
        self.glance = QLabel()
        self.glance.setObjectName("Muted")
        self.glance.setTextFormat(Qt.TextFormat.RichText)
        self.glance.setContentsMargins(0, 6, 0, 0)
        holder_layout.addWidget(self.glance)
        self.advanced.toggled.connect(lambda expanded: self.glance.setVisible(not expanded))
        self.form_error = QLabel()
        self.form_error.setObjectName("Error")
        self.form_error.setWordWrap(True)
        self.form_error.hide()
        holder_layout.addWidget(self.form_error)
        holder_layout.addStretch(1)
        scroll.setWidget(holder)
        card.body.addWidget(scroll, 1)
        self._write_form(RunConfig())
        return card

    def _register(self, key: str, label: str, widget: QWidget, read, write, tip: str = "") -> None:
        if tip:
            widget.setToolTip(tip)
        self.fields[key] = _Field(key, widget, read, write)
        self.form.addRow(label, widget)

    def _add_combo(self, key: str, label: str, choices, tip: str = "") -> None:
        combo = QComboBox()
        combo.addItems(list(choices))

        def write(value):
            if combo.findText(str(value)) < 0:
                combo.addItem(str(value))
            combo.setCurrentText(str(value))

        self._register(key, label, combo, combo.currentText, write, tip)

    def _add_spin(self, key: str, label: str, low: int, high: int, step: int = 1, tip: str = "") -> None:
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setSingleStep(step)
        spin.setGroupSeparatorShown(True)
        self._register(key, label, spin, spin.value, lambda v: spin.setValue(int(v)), tip)

    def _add_double(self, key, label, low, high, decimals, step, tip: str = "") -> None:
        spin = QDoubleSpinBox()
        spin.setRange(low, high)
        spin.setDecimals(decimals)
        spin.setSingleStep(step)
        self._register(key, label, spin, spin.value, lambda v: spin.setValue(float(v)), tip)

    def _add_stages(self, key: str, label: str) -> None:
        edit = QLineEdit()
        edit.setPlaceholderText("e.g. 2, 3, 4")

        def read():
            parts = [p for p in edit.text().replace(",", " ").split() if p]
            try:
                return [int(p) for p in parts]
            except ValueError:
                raise ConfigError(f"model.stages: {edit.text()!r} must list ResNet stages 1 to 4, e.g. 2, 3, 4.") from None

        self._register(key, label, edit, read, lambda v: edit.setText(", ".join(str(s) for s in v)),
                       "ResNet stages whose attention maps are pooled and fused (1 = finest, 4 = coarsest)")

    def _build_monitor(self) -> QWidget:
        card = Card(margins=14)
        top = QHBoxLayout()
        top.setSpacing(26)
        self.metrics: dict[str, QLabel] = {}
        for key, caption in (("epoch", "Epoch"), ("loss", "Loss"), ("knn", "Best kNN top-1"),
                             ("speed", "Images / s"), ("eta", "Time left")):
            widget, value = metric_block(caption)
            self.metrics[key] = value
            top.addWidget(widget)
        top.addStretch(1)
        self.run_name_label = muted_label(wrap=False)
        top.addWidget(self.run_name_label, 0, Qt.AlignmentFlag.AlignTop)
        card.body.addLayout(top)
        bars = QGridLayout()
        bars.setHorizontalSpacing(10)
        bars.setVerticalSpacing(4)
        self.epoch_progress = QProgressBar()
        self.epoch_progress.setFormat("%v / %m steps")
        self.total_progress = QProgressBar()
        self.total_progress.setFormat("%p%")
        for bar in (self.epoch_progress, self.total_progress):
            bar.setRange(0, 1)
            bar.setValue(0)
        bars.addWidget(muted_label("This epoch", wrap=False), 0, 0)
        bars.addWidget(self.epoch_progress, 0, 1)
        bars.addWidget(muted_label("Whole run", wrap=False), 1, 0)
        bars.addWidget(self.total_progress, 1, 1)
        card.body.addLayout(bars)

        self.plot_stack = QStackedWidget()
        empty = EmptyState("train", "No run yet",
                           "Press Train to start a run. Its loss, learning rate, speed and kNN accuracy are "
                           "plotted here as it goes; pick a past run below to see its curves.", text_width=420)
        self.plot_stack.addWidget(empty)
        grid_widget = QWidget()
        grid = QGridLayout(grid_widget)
        grid.setContentsMargins(0, 4, 0, 0)
        grid.setSpacing(8)
        self.loss_plot = self._make_plot("Contrastive loss", "step")
        self.loss_plot.addLegend(offset=(-8, 8), labelTextSize="8pt")
        self.loss_curve = self.loss_plot.plot(name="per step", pen=pg.mkPen(PLOT_COLOURS["loss_raw"], width=1))
        self.loss_ema_curve = self.loss_plot.plot(name="smoothed", pen=pg.mkPen(PLOT_COLOURS["loss_ema"], width=2))
        self.lr_plot = self._make_plot("Learning rate", "step")
        self.lr_curve = self.lr_plot.plot(pen=pg.mkPen(PLOT_COLOURS["lr"], width=2))
        self.knn_plot = self._make_plot("kNN top-1 (%) on held-out training images", "epoch")
        self.knn_curve = self.knn_plot.plot(
            pen=pg.mkPen(PLOT_COLOURS["knn"], width=2), symbol="o", symbolSize=6,
            symbolBrush=pg.mkBrush(PLOT_COLOURS["knn"]), symbolPen=None,
        )
        self.speed_plot = self._make_plot("Throughput (images / s)", "step")
        self.speed_curve = self.speed_plot.plot(pen=pg.mkPen(PLOT_COLOURS["speed"], width=2))
        grid.addWidget(self.loss_plot, 0, 0)
        grid.addWidget(self.knn_plot, 0, 1)
        grid.addWidget(self.lr_plot, 1, 0)
        grid.addWidget(self.speed_plot, 1, 1)
        self.plot_stack.addWidget(grid_widget)
        card.body.addWidget(self.plot_stack, 1)
        return card

    def _make_plot(self, title: str, x_label: str) -> pg.PlotWidget:
        plot = pg.PlotWidget()
        plot.setMinimumHeight(120)
        plot.setMenuEnabled(False)
        plot.setTitle(title, size="9pt", color="#1d2330")
        plot.showGrid(x=False, y=True, alpha=0.15)  # vertical lines would double the axis repaint cost
        plot.setLabel("bottom", x_label)
        plot.setClipToView(True)
        plot.setDownsampling(auto=True, mode="peak")
        plot.getPlotItem().hideButtons()
        plot.getViewBox().setMouseEnabled(x=True, y=False)
        # Axes (tick labels and grid lines) cost most of a repaint; cached as pixmaps they are
        # redrawn only when their range changes, which cuts a live-curve redraw about 3x.
        for axis in plot.getPlotItem().axes.values():
            axis["item"].setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        return plot

    def _build_history(self) -> QWidget:
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.setHandleWidth(10)
        runs_card = Card("Past runs")
        self.runs_total_label = muted_label("", wrap=False)
        self.runs_total_label.setToolTip("Disk space of all runs' checkpoints, curves, classifiers and exports")
        runs_card.header.addWidget(self.runs_total_label)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_runs)
        runs_card.header.addWidget(refresh)
        self.runs_table = QTableWidget(0, 8)
        self.runs_table.setHorizontalHeaderLabels(
            ["Run", "Status", "Epochs", "Best kNN", "Classifier", "Dataset", "Updated", "Size"]
        )
        self.runs_table.verticalHeader().hide()
        self.runs_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        # Several rows (Ctrl/Shift-click) are compared; the buttons below act on one.
        self.runs_table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.runs_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.runs_table.setAlternatingRowColors(True)
        self.runs_table.setShowGrid(False)
        self.runs_table.setWordWrap(False)
        self.runs_table.verticalHeader().setDefaultSectionSize(26)
        header = self.runs_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self.runs_table.itemSelectionChanged.connect(self._on_run_selected)
        self.runs_table.itemDoubleClicked.connect(lambda _item: self._open_selected_in_inspect())
        self.runs_empty = muted_label("No runs yet. Runs are kept in your fgdesk data folder.")
        runs_card.body.addWidget(self.runs_table, 1)
        runs_card.body.addWidget(self.runs_empty)
        buttons = QHBoxLayout()
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue this run from its last checkpoint")
        self.resume_button.clicked.connect(self.resume_selected)
        self.inspect_button = QPushButton("Open in Inspect")
        self.inspect_button.clicked.connect(self._open_selected_in_inspect)
        self.folder_button = QPushButton("Show folder")
        self.folder_button.clicked.connect(lambda: self.selected_run() and open_in_file_manager(self.selected_run().path))
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip("Select two or more runs (Ctrl- or Shift-click) to see their curves, "
                                       "scores and differing settings side by side")
        self.compare_button.clicked.connect(self.compare_selected)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setToolTip("Delete the selected runs' checkpoints, curves, classifier and exports, "
                                      "to free disk space (asks first)")
        self.delete_button.clicked.connect(lambda: self.delete_selected())
        delete_key = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.runs_table)
        delete_key.setContext(Qt.ShortcutContext.WidgetShortcut)
        delete_key.activated.connect(lambda: self.delete_selected())
        buttons.addWidget(self.resume_button)
        buttons.addWidget(self.inspect_button)
        buttons.addWidget(self.compare_button)
        buttons.addStretch(1)
        buttons.addWidget(self.folder_button)
        buttons.addWidget(self.delete_button)
        runs_card.body.addLayout(buttons)
        splitter.addWidget(runs_card)

        clf = Card("Linear classifier")
        clf.setMinimumWidth(360)  # scores, the class legend and the matrix side by side
        self.classifier_button = QPushButton("Train classifier")
        self.classifier_button.setToolTip("Fit a linear head on the frozen features of the labelled training split")
        self.classifier_button.clicked.connect(self.train_classifier)
        clf.header.addWidget(self.classifier_button)
        self.classifier_run_label = muted_label(NO_RUN_CAPTION)
        clf.body.addWidget(self.classifier_run_label)
        self.classifier_progress = QProgressBar()
        self.classifier_progress.setRange(0, 100)
        self.classifier_progress.hide()
        clf.body.addWidget(self.classifier_progress)
        results = QHBoxLayout()
        results.setSpacing(14)
        scores = QVBoxLayout()
        scores.setSpacing(10)
        top1, self.top1_label = metric_block("Top-1 (test)")
        top5, self.top5_label = metric_block("Top-5 (test)")
        metrics = QHBoxLayout()  # side by side: the height goes to the class legend below
        metrics.setSpacing(18)
        metrics.addWidget(top1)
        metrics.addWidget(top5)
        metrics.addStretch(1)
        scores.addLayout(metrics)
        self.confusion_legend = muted_label("", wrap=False)  # no wrap: the layout keeps every line visible
        self.confusion_legend.setMaximumWidth(170)
        scores.addWidget(self.confusion_legend, 0, Qt.AlignmentFlag.AlignLeft)
        scores.addStretch(1)
        results.addLayout(scores)
        self.confusion_plot = pg.PlotWidget()
        self.confusion_plot.setMenuEnabled(False)
        self.confusion_plot.getPlotItem().hideButtons()
        self.confusion_plot.setLabel("left", "true class")
        self.confusion_plot.setLabel("bottom", "predicted class")
        self.confusion_plot.getViewBox().invertY(True)
        self.confusion_plot.getViewBox().setAspectLocked(True)
        self.confusion_plot.getViewBox().setMouseEnabled(x=False, y=False)
        self.confusion_image = pg.ImageItem(axisOrder="row-major")
        self.confusion_image.setColorMap(pg.colormap.get("viridis"))
        self.confusion_plot.addItem(self.confusion_image)
        self.confusion_plot.setMinimumSize(150, 140)
        self.confusion_plot.setToolTip("Confusion matrix: each row shows where the test images of one class went")
        self.confusion_plot.hide()
        # A cell says what it counts under the pointer, and a click opens its images in Inspect.
        self.confusion_plot.scene().sigMouseMoved.connect(self._on_confusion_hover)
        self.confusion_plot.scene().sigMouseClicked.connect(self._on_confusion_click)
        results.addWidget(self.confusion_plot, 1)
        results.addStretch(0)
        clf.body.addLayout(results, 1)
        # What fewer labels would give: tells a lab whether labelling more is worth it.
        self.few_labels_label = muted_label("")
        self.few_labels_label.hide()
        clf.body.addWidget(self.few_labels_label)
        # The largest off-diagonal cells by name: on 50 or 200 classes a cell is hard to find.
        self.confused_label = muted_label("")
        self.confused_label.setTextFormat(Qt.TextFormat.RichText)
        self.confused_label.linkActivated.connect(lambda link: self.open_confusion_cell(*map(int, link.split(","))))
        self.confused_label.hide()
        clf.body.addWidget(self.confused_label)
        self.classifier_card = clf
        splitter.addWidget(clf)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        return splitter

    # ================================================================== dataset and config
    def set_dataset(self, index) -> None:
        """Called when the Dataset page opened a folder; prepares default settings off-thread."""
        self._dataset_path = os.path.abspath(str(index.root))  # runs find their dataset from any folder
        training = index.train_samples() if hasattr(index, "train_samples") else index.samples
        self._dataset_images = len(training)
        unlabeled = sum(1 for s in training if s.label < 0) if getattr(index, "classes", None) else 0
        self._images_text = f"{len(training):,} training images" + (f" ({unlabeled:,} unlabeled)" if unlabeled else "")
        self._dataset_labelled = bool(getattr(index, "classes", None))
        name = Path(self._dataset_path).name
        self.dataset_label.setText(name)
        self.dataset_label.setToolTip(self._dataset_path)
        self.dataset_hint.setText(f"{self._images_text} · choosing defaults for this device…")
        self._base_config = None
        self._defaults_generation += 1
        generation = self._defaults_generation
        path, count = self._dataset_path, self._dataset_images
        device = self.fields["device"].read() if self.fields["device"].read() in DEVICES else "auto"
        self._runner.start(
            lambda ctx: workers.default_run_config(path, count, device),
            on_done=lambda cfg: self._on_defaults(generation, cfg),
            on_failed=lambda msg, tb: self._on_defaults_failed(generation, msg, tb),
            name="default config",
        )
        self._update_buttons()

    def _on_defaults(self, generation: int, config: RunConfig) -> None:
        if generation != self._defaults_generation:
            return
        self._base_config = config
        self._write_form(config)
        budget = config.schedule.time_budget_min
        limit = f"up to {budget:g} min" if budget else f"{config.schedule.epochs} epochs"
        self.dataset_hint.setText(
            f"{self._images_text} · {config.model.backbone}, {config.data.image_size} px, {limit}"
        )
        self._update_buttons()

    def _on_defaults_failed(self, generation: int, message: str, details: str) -> None:
        if generation != self._defaults_generation:
            return
        log.error("default config failed: %s", message)
        fallback = RunConfig()
        fallback.data.path = self._dataset_path or ""
        self._base_config = fallback
        self._write_form(fallback)
        self.dataset_hint.setText(f"Could not choose defaults ({message}); using generic settings.")
        self._update_buttons()

    def _write_form(self, config: RunConfig) -> None:
        raw = config.to_dict()
        for key, field in self.fields.items():
            node = raw
            for part in key.split("."):
                node = node[part]
            field.write(node)
        self._mark_invalid(None)
        self._show_glance(config)

    def _show_glance(self, config: RunConfig, title: str = "Settings") -> None:
        """A short table of the settings that matter most, under the advanced options."""
        s, d, m, c = config.schedule, config.data, config.model, config.contrastive
        length = f"{s.epochs} epochs" + (f", at most {s.time_budget_min:g} min" if s.time_budget_min else "")
        rows = [
            ("Model", f"{m.backbone}, {m.weights} weights"),
            ("Attention", f"{m.attention} {_stage_span(m.stages)}"  # short: the glance column is narrow
             + (f", consistency {c.attention_consistency:g}" if c.attention_consistency and m.attention != "none" else "")),
            ("Views", f"2 × {d.image_size} px" + (f" + {d.local_crops} × {d.local_size} px local crops" if d.local_crops else ", no local crops")
             + (f"; {d.early_size} px for the first {d.early_fraction:.0%}" if d.early_size else "")),
            ("Length", length),
            ("Batch", f"{s.batch_size}, lr {config.optim.lr:g}"),
            ("Contrast", f"queue {c.queue_size:,}, T {c.temperature:g}"),
            ("Device", config.device),
        ]
        cells = "".join(f"<tr><td style='padding-right:10px'>{k}</td><td style='color:#1d2330'>{v}</td></tr>"
                        for k, v in rows)
        self.glance.setText(f"<b style='color:#1d2330'>{title}</b><table style='margin-top:4px'>{cells}</table>")

    def config_from_form(self) -> RunConfig:
        """The run's config: defaults for the dataset with the form's values; raises ConfigError."""
        base = self._base_config or RunConfig()
        overrides = {key: field.read() for key, field in self.fields.items()}
        config = base.with_overrides(overrides)
        config.data.path = self._dataset_path or base.data.path
        if self.config_hook is not None:
            config = self.config_hook(config)
        return config.validate()

    def _mark_invalid(self, key: str | None) -> None:
        for field_key, field in self.fields.items():
            field.widget.setProperty("invalid", field_key == key)
            field.widget.style().unpolish(field.widget)
            field.widget.style().polish(field.widget)
        if key is None:
            self.form_error.hide()

    # ================================================================== running
    def is_training(self) -> bool:
        return self.worker is not None and self.worker.isRunning()

    def can_start(self) -> bool:
        return self._dataset_path is not None and self._base_config is not None and not self.is_training()

    def start_training(self) -> bool:
        """Validate the form and start a run; returns False (and says why) when it cannot."""
        if not self.can_start():
            return False
        try:
            config = self.config_from_form()
        except ConfigError as exc:
            message = str(exc)
            key = message.split(":", 1)[0].strip()
            self._mark_invalid(key if key in self.fields else None)
            self.form_error.setText(message)
            self.form_error.show()
            self.advanced.set_expanded(True)
            self.status_message.emit("Fix the highlighted setting to start")
            return False
        self._mark_invalid(None)
        self._show_glance(config, "This run")
        self._start_worker(workers.TrainingWorker(config=config, parent=self), f"Starting a run on {Path(config.data.path).name}")
        return True

    def resume_run(self, run_dir: str | Path, overrides: dict | None = None) -> bool:
        if self.is_training():
            return False
        worker = workers.TrainingWorker(resume_dir=run_dir, parent=self, overrides=overrides)
        self._start_worker(worker, f"Resuming {Path(run_dir).name}")
        self._load_history(str(run_dir), keep_running=True)
        return True

    def resume_selected(self) -> None:
        info = self.selected_run()
        if info is None or str(info.path) in self._deleting:
            return
        if info.status == "finished":
            self.train_further(info.path)
        else:
            self.resume_run(info.path)

    def train_further(self, run_dir: str | Path, more: float | None = None) -> bool:
        """Go on training a finished run: `more` minutes when it had a time budget, else `more`
        epochs (asked for when not given). Its learning-rate schedule stretches over the new length."""
        try:
            schedule = RunConfig.load(Path(run_dir) / "config.json").schedule
        except ConfigError as exc:
            self.last_error_box = show_error(self, "Cannot train this run further", str(exc), "")
            return False
        by_time = schedule.time_budget_min > 0
        if more is None:
            from PySide6.QtWidgets import QInputDialog

            if by_time:
                more, ok = QInputDialog.getDouble(
                    self, "Train further", f"The run had {schedule.time_budget_min:g} minutes. Minutes to add:",
                    10.0, 0.5, 24 * 60.0, 1)
            else:
                more, ok = QInputDialog.getInt(
                    self, "Train further", f"The run had {schedule.epochs} epochs. Epochs to add:", 10, 1, 10_000)
            if not ok:
                return False
        key, total = (("schedule.time_budget_min", schedule.time_budget_min + float(more)) if by_time
                      else ("schedule.epochs", schedule.epochs + int(more)))
        return self.resume_run(run_dir, overrides={key: total})

    def _start_worker(self, worker: workers.TrainingWorker, message: str) -> None:
        if self.worker is not None and not self.worker.isRunning():
            self.worker.deleteLater()  # the last run's thread has ended; without this each run leaks one
        self.worker = worker
        self.last_result = None
        self.bad_images = []
        self._paused = False
        self.paused_at_step = None
        self._pending_steps.clear()
        self._pending_epochs.clear()
        self._latest_step = None
        self._best_knn = None
        self.curves = TrainingCurves()
        self._history_generation += 1  # a history load in flight must not overwrite live curves
        self.redraw(force=True)
        for label in self.metrics.values():
            label.setText("—")
        self.epoch_progress.setRange(0, 1)
        self.epoch_progress.setValue(0)
        self.total_progress.setRange(0, 1)
        self.total_progress.setValue(0)
        self.plot_stack.setCurrentIndex(1)
        worker.run_started.connect(self._on_run_started)
        worker.step.connect(self._on_step)
        worker.epoch.connect(self._on_epoch)
        worker.checkpoint.connect(self._on_checkpoint)
        worker.bad_image.connect(self._on_bad_image)
        worker.paused.connect(self._on_paused)
        worker.run_finished.connect(self._on_finished)
        worker.run_failed.connect(self._on_failed)
        worker.finished.connect(self._on_thread_finished)
        self.state_label.setText("Preparing the data and the model…")
        self.status_message.emit(message)
        self._redraw_timer.start()
        worker.start()
        self._update_buttons()

    def toggle_pause(self) -> None:
        if not self.is_training():
            return
        if self._paused:
            self.worker.resume()
            self._paused = False
            self.paused_at_step = None
            self.state_label.setText("Training…")
            self.status_message.emit("Training resumed")
        else:
            self.worker.pause()
            self._paused = True
            self.state_label.setText("Pausing after the current step…")
            self.status_message.emit("Training paused")
        self._update_buttons()

    def pause_training(self) -> None:
        if self.is_training() and not self._paused:
            self.toggle_pause()

    def resume_training(self) -> None:
        if self.is_training() and self._paused:
            self.toggle_pause()

    def is_paused(self) -> bool:
        return self._paused

    def stop_training(self) -> None:
        """Ask the engine to stop; it saves a checkpoint and reports 'stopped'."""
        if not self.is_training():
            return
        self.worker.stop()
        self._paused = False
        self.state_label.setText("Stopping: saving a checkpoint…")
        self.status_message.emit("Stopping the run (saving a checkpoint)…")
        self._update_buttons()

    def wait_for_worker(self, msecs: int = 60_000) -> bool:
        """Block until the worker thread ended (used on exit, after stop_training)."""
        if self.worker is None:
            return True
        return self.worker.wait(msecs)

    # ---------------------------------------------------------------- worker signals
    def _on_run_started(self, run_dir: str) -> None:
        self.run_name_label.setText(Path(run_dir).name)
        self.run_name_label.setToolTip(run_dir)
        self._shown_run = run_dir
        if not self._paused and not (self.worker and self.worker.stop_requested):
            self.state_label.setText("Training…")
        self.run_started.emit(run_dir)
        self.refresh_runs()

    def _on_step(self, event) -> None:
        if self._latest_step is None:
            self.refresh_runs()  # the run folder now says "running"
        if self.paused_at_step is not None and event.global_step > self.paused_at_step:
            # Events arrive in order: a step after the pause report means the run went on.
            self.paused_at_step = None
            if self._paused:
                self.state_label.setText("Pausing after the current step…")
        self._pending_steps.append(event)
        self._latest_step = event

    def _on_epoch(self, event) -> None:
        self._pending_epochs.append(event)
        self.refresh_runs()  # the run's row shows its epochs and best kNN as they come

    def _on_paused(self, event) -> None:
        self.paused_at_step = event.global_step
        if self._paused:  # not resumed meanwhile
            self.state_label.setText(f"Paused at step {event.global_step:,}. Resume continues where it left off.")

    def _on_checkpoint(self, event) -> None:
        self.status_message.emit(f"Checkpoint saved at step {event.global_step:,}")

    def _on_bad_image(self, event) -> None:
        self.bad_images.append((event.path, event.reason))
        self.status_message.emit(f"Skipped {len(self.bad_images)} unreadable image(s); see the run's log")

    def _on_finished(self, event) -> None:
        self.last_result = event
        self.redraw(force=True)
        best = format_percent(event.best_knn_top1)
        if event.status == "stopped":
            text = f"Stopped after {event.epochs_done} epoch(s). The checkpoint is saved; Resume continues the run."
        else:
            text = f"Finished: {event.epochs_done} epoch(s), best kNN top-1 {best}."
        self.state_label.setText(text)
        self.metrics["eta"].setText("—")
        self.status_message.emit(text)
        self.run_ended.emit(event)

    def _on_failed(self, event) -> None:
        self.last_result = event
        self.redraw(force=True)
        self.state_label.setText("The run failed. See the message for the log file.")
        log_path = getattr(event, "log_path", "") or str(workers.gui_log_path())
        self.last_error_box = show_error(
            self,
            "Training failed",
            f"{event.reason}\n\nThe full log is in:\n{log_path}",
            getattr(event, "traceback", ""),
        )
        self.status_message.emit("Training failed")
        self.run_ended.emit(event)

    def _on_thread_finished(self) -> None:
        self._redraw_timer.stop()
        self.redraw(force=True)
        self._paused = False
        if self.last_result is None:  # the thread ended without a final event: never silently
            self._on_failed(workers.WorkerFailure(
                run_dir=self.worker.run_dir if self.worker else "", reason="the training thread ended unexpectedly",
                traceback="", log_path=str(workers.gui_log_path()),
            ))
        self._update_buttons()
        self.refresh_runs()

    # ---------------------------------------------------------------- drawing
    def redraw(self, force: bool = False) -> None:
        """Drain buffered events into the curves and redraw; the timer calls this at ~5 Hz."""
        steps, epochs = self._pending_steps, self._pending_epochs
        if not steps and not epochs and not force:
            return
        self._pending_steps, self._pending_epochs = [], []
        for event in steps:
            self.curves.add_step(event.global_step, event.loss, event.lr, event.images_per_s)
        for event in epochs:
            self.curves.add_epoch(event.epoch + event.fraction, event.knn_top1)
            if event.knn_top1 is not None and (self._best_knn is None or event.knn_top1 > self._best_knn):
                self._best_knn = event.knn_top1
        self._set_curves(steps=bool(steps) or force, epochs=bool(epochs) or force)
        latest = self._latest_step
        if latest is not None:
            self.metrics["epoch"].setText(f"{latest.epoch + 1} / {latest.epochs}")
            self.metrics["loss"].setText(f"{latest.loss:.3f}")
            self.metrics["speed"].setText(f"{latest.images_per_s:,.0f}")
            if self.is_training():
                self.metrics["eta"].setText(format_duration(latest.eta_s))
            self.epoch_progress.setRange(0, max(1, latest.steps_per_epoch))
            self.epoch_progress.setValue(min(latest.step_in_epoch, latest.steps_per_epoch))
            self.total_progress.setRange(0, max(1, latest.total_steps))
            self.total_progress.setValue(min(latest.global_step, latest.total_steps))
        if epochs:
            self.metrics["knn"].setText(format_percent(self._best_knn))
        if self.last_result is not None and getattr(self.last_result, "status", "") == "finished":
            self.total_progress.setValue(self.total_progress.maximum())
        self.redraw_count += 1

    def _set_curves(self, steps: bool = True, epochs: bool = True) -> None:
        """Hand the step curves and/or the epoch curve to the plots (a plot repaints only if touched)."""
        # Widen the x axes in steps rather than on every point: an axis that keeps its range
        # keeps its cached tick labels, which makes each repaint cheaper.
        if steps:
            last_step = self.curves.steps[-1][0] if self.curves.steps else 0
            limit = nice_limit(last_step)
            if limit != self._x_limit:
                self._x_limit = limit
                for plot in (self.loss_plot, self.lr_plot, self.speed_plot):
                    plot.setXRange(0, limit, padding=0.01)
            loss, lr, speed = self.curves.loss.arrays(), self.curves.lr.arrays(), self.curves.speed.arrays()
            self.loss_curve.setData(*loss)
            self.loss_ema_curve.setData(*self.curves.loss_ema.arrays())
            self.lr_curve.setData(*lr)
            self.speed_curve.setData(*speed)
            # lr and speed are never negative; their axes start at 0 so a restart reads true.
            self._step_y_range("loss", self.loss_plot, loss[1], from_zero=False)
            self._step_y_range("lr", self.lr_plot, lr[1], from_zero=True)
            self._step_y_range("speed", self.speed_plot, speed[1], from_zero=True)
        if epochs:
            last_epoch = self.curves.epochs[-1][0] if self.curves.epochs else 0
            epoch_limit = max(2, nice_limit(last_epoch))
            if epoch_limit != self._epoch_limit:
                self._epoch_limit = epoch_limit
                self.knn_plot.setXRange(0, epoch_limit, padding=0.02)
            self.knn_curve.setData(*self.curves.knn.arrays())

    def _step_y_range(self, name: str, plot: pg.PlotWidget, values: np.ndarray, from_zero: bool) -> None:
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            self._y_ranges[name] = None
            plot.enableAutoRange(axis="y")
            return
        low = 0.0 if from_zero else float(finite.min())
        current = self._y_ranges.get(name)
        wanted = stepped_range(current, low, float(finite.max()))
        if wanted != current and wanted is not None:
            self._y_ranges[name] = wanted
            plot.setYRange(*wanted, padding=0.02)

    # ================================================================== past runs
    def refresh_runs(self) -> None:
        self._runs_generation += 1
        generation = self._runs_generation
        self._runner.start(lambda ctx: workers.list_runs(),
                           on_done=lambda runs: generation == self._runs_generation and self._fill_runs(runs),
                           on_failed=lambda msg, tb: log.warning("cannot list runs: %s", msg), name="list runs")

    def runs(self) -> list:
        return list(self._runs)

    def _fill_runs(self, runs: list) -> None:
        kept = {str(info.path) for info in self.selected_runs()}
        selected = self.selected_run()
        selected_path = str(selected.path) if selected else (None if kept else self._shown_run)
        self._runs = list(runs)
        self.runs_table.blockSignals(True)
        self.runs_table.setRowCount(len(runs))
        select_row = -1
        for row, info in enumerate(runs):
            status = info.status
            if self.is_training() and self.worker.run_dir == str(info.path):
                status = "running"
            cells = [
                info.name,
                status,
                f"{info.epochs_done} / {info.epochs}" if info.epochs else str(info.epochs_done),
                format_percent(info.best_knn_top1),
                _classifier_cell(info),
                Path(info.dataset).name if info.dataset else "—",
                short_time(info.updated),
                format_bytes(info.disk_bytes),
            ]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column == 1:
                    from PySide6.QtGui import QColor

                    item.setForeground(QColor(STATUS_COLOURS.get(status, "#667085")))
                if column == 5:
                    item.setToolTip(info.dataset)
                if column == 0:
                    item.setToolTip(str(info.path))
                if column == 4 and info.has_classifier:
                    item.setToolTip("Top-1 of the linear classifier on the test split" if info.classifier_top1 is not None
                                    else "A classifier was fitted; its test score is not known (the dataset has no "
                                         "test split, or the fit was made before fgdesk kept its scores)")
                if column == 6:
                    item.setToolTip(time.strftime("%Y-%m-%d %H:%M", time.localtime(info.updated)))
                if column == 7:
                    item.setToolTip("Disk space of the run's checkpoints, curves, classifier and exports")
                if column in (2, 3, 4, 7):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.runs_table.setItem(row, column, item)
            if selected_path and str(info.path) == selected_path:
                select_row = row
        self.runs_table.setVisible(bool(runs))
        self.runs_empty.setVisible(not runs)
        total = sum(info.disk_bytes for info in runs)
        self.runs_total_label.setText(f"{len(runs)} run{'' if len(runs) == 1 else 's'} · {format_bytes(total)}" if runs else "")
        if len(kept) > 1:  # a comparison selection survives a refresh; no row's history is loaded
            model = self.runs_table.selectionModel()
            self.runs_table.clearSelection()
            for row, info in enumerate(runs):
                if str(info.path) in kept:
                    model.select(self.runs_table.model().index(row, 0),
                                 QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)
        self.runs_table.blockSignals(False)
        if len(kept) <= 1 and select_row >= 0:
            self.runs_table.selectRow(select_row)
        elif len(kept) > 1 and len(self.selected_runs()) == 1:
            self._on_run_selected()  # one of the compared runs is left: show it as a selection would
        self._update_buttons()

    def selected_runs(self) -> list:
        """The selected runs, in table order."""
        model = self.runs_table.selectionModel()
        rows = sorted(index.row() for index in model.selectedRows()) if model else []
        return [self._runs[row] for row in rows if row < len(self._runs)]

    def selected_run(self):
        """The one selected run; None when none or several are selected (the buttons act on one)."""
        selected = self.selected_runs()
        return selected[0] if len(selected) == 1 else None

    def compare_selected(self) -> bool:
        """Open the comparison window for the selected runs (read on a worker thread)."""
        selected = self.selected_runs()
        if len(selected) < 2:
            return False
        from fgdesk.gui.compare_view import CompareDialog

        if self.compare_dialog is not None:
            self.compare_dialog.close()
        dialog = CompareDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.destroyed.connect(lambda *_: setattr(self, "compare_dialog", None) if self.compare_dialog is dialog else None)
        self.compare_dialog = dialog
        folders = [str(info.path) for info in selected]
        self._runner.start(
            lambda ctx: workers.compare_runs(folders),
            on_done=lambda comparison: self.compare_dialog is dialog and dialog.show_comparison(comparison),
            on_failed=lambda msg, tb: self.compare_dialog is dialog and dialog.show_error(msg),
            name="compare runs",
        )
        dialog.show()
        return True

    def confirm_delete(self, infos: list) -> bool:
        """Ask before deleting (tests replace this)."""
        total = sum(info.disk_bytes for info in infos)
        names = "\n".join(f"  {info.name}" for info in infos[:8]) + (f"\n  and {len(infos) - 8} more" if len(infos) > 8 else "")
        answer = QMessageBox.question(
            self, "Delete runs",
            f"Delete {len(infos)} run(s) and free {format_bytes(total)}?\n\n{names}\n\n"
            "Their checkpoints, curves, classifier, scores and exports are deleted; this cannot be undone. "
            "Files of your own in a run's folder are kept.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel,
        )
        return answer == QMessageBox.StandardButton.Yes

    def delete_selected(self) -> bool:
        """Delete the selected runs on a worker thread, after asking. A run this window trains
        or fits a classifier on is refused up front; one trained elsewhere, by its lock."""
        selected = self.selected_runs()
        if not selected or self._delete_task is not None:
            return False
        in_use = {self.worker.run_dir} if self.is_training() else set()
        if self._classifier_run:
            in_use.add(self._classifier_run)
        busy = [info for info in selected if str(info.path) in in_use]
        if busy:
            self.status_message.emit(f"{busy[0].name} is in use here (training or fitting its classifier); "
                                     "stop it before deleting the run")
            return False
        if not self.confirm_delete(selected):
            return False
        folders = [str(info.path) for info in selected]
        self._deleting = set(folders)
        self.status_message.emit(f"Deleting {len(folders)} run(s)…")
        self.deleting_runs.emit(folders)
        self._delete_task = self._runner.start(
            lambda ctx: workers.delete_runs(folders), on_done=self._on_runs_deleted,
            on_failed=self._on_delete_failed, name="delete runs",
        )
        self._update_buttons()
        return True

    def _on_runs_deleted(self, outcome) -> None:
        self._delete_task = None
        self._deleting = set()
        deleted, problems = outcome
        gone = [str(result.path) for result in deleted]
        if gone:  # off the table at once, before the new listing arrives
            self._fill_runs([info for info in self._runs if str(info.path) not in gone])
        if self._classifier_shown_for in gone:
            self._clear_classifier(NO_RUN_CAPTION)
        if self._shown_run in gone and not self.is_training():
            self._shown_run = None
            self.curves = TrainingCurves()
            self.run_name_label.setText("")
            self._set_curves()
        freed = sum(result.freed_bytes for result in deleted)
        message = f"Deleted {len(deleted)} run(s), {format_bytes(freed)} freed"
        kept = [result for result in deleted if result.kept]
        if kept:
            message += f"; {kept[0].path.name}'s folder is kept for files fgdesk did not write"
        self.status_message.emit(message)
        if problems:
            self.last_error_box = show_error(self, "Some runs were not deleted", "\n".join(problems))
        if gone:
            self.runs_deleted.emit(gone)
        self.refresh_runs()
        self._update_buttons()

    def _on_delete_failed(self, message: str, details: str) -> None:
        self._delete_task = None
        self._deleting = set()
        self.refresh_runs()
        self._update_buttons()
        self.last_error_box = show_error(self, "Deleting runs failed", message, details)

    def select_run(self, run_dir: str | Path) -> bool:
        for row, info in enumerate(self._runs):
            if str(info.path) == str(run_dir):
                self.runs_table.selectRow(row)
                return True
        return False

    def _on_run_selected(self) -> None:
        info = self.selected_run()
        self._update_buttons()
        if info is None:
            return
        if self._classifier_task is None and str(info.path) != self._classifier_shown_for:
            self._clear_classifier(f"Run: {info.name}")
            if info.has_classifier:
                self._load_classifier_report(str(info.path))
        if not self.is_training():
            self._load_history(str(info.path))

    def _load_history(self, run_dir: str, keep_running: bool = False) -> None:
        """Show a past run's curves from its metrics.jsonl."""
        self._history_generation += 1
        generation = self._history_generation
        self._runner.start(
            lambda ctx: read_run_history(run_dir),
            on_done=lambda records: self._on_history(generation, run_dir, records, keep_running),
            on_failed=lambda msg, tb: log.warning("cannot read metrics of %s: %s", run_dir, msg),
            name="run history",
        )

    def _on_history(self, generation: int, run_dir: str, records: list[dict], keep_running: bool) -> None:
        if keep_running:  # a resumed run: its past continues into the live curves
            if not self.is_training() or (self.worker and self.worker.resume_dir is None):
                return
            self.curves = self.curves.after(TrainingCurves.from_records(records))
            self._best_knn = self.curves.best_knn()
            self.metrics["knn"].setText(format_percent(self._best_knn))
            self._set_curves()
            return
        if generation != self._history_generation or self.is_training():
            return
        self.curves = TrainingCurves.from_records(records)
        self._shown_run = run_dir
        self.run_name_label.setText(Path(run_dir).name)
        self.run_name_label.setToolTip(run_dir)
        for label in self.metrics.values():
            label.setText("—")
        last_step = next((r for r in reversed(records) if r.get("type") == "step"), None)
        if last_step:
            self.metrics["epoch"].setText(f"{last_step.get('epoch', 0) + 1} / {last_step.get('epochs', 0)}")
            self.metrics["loss"].setText(f"{last_step.get('loss', 0):.3f}")
            self.metrics["speed"].setText(f"{last_step.get('images_per_s', 0):,.0f}")
            self.epoch_progress.setRange(0, max(1, last_step.get("steps_per_epoch", 1)))
            self.epoch_progress.setValue(last_step.get("step_in_epoch", 0))
            self.total_progress.setRange(0, max(1, last_step.get("total_steps", 1)))
            self.total_progress.setValue(last_step.get("global_step", 0))
        self.metrics["knn"].setText(format_percent(self.curves.best_knn()))
        self._set_curves()
        if records:
            self.plot_stack.setCurrentIndex(1)

    def _open_selected_in_inspect(self) -> None:
        info = self.selected_run()
        if info is not None and str(info.path) not in self._deleting and self._has_checkpoint(info):
            self.open_in_inspect.emit(str(info.path))

    @staticmethod
    def _has_checkpoint(info) -> bool:
        folder = Path(info.path) / "checkpoints"
        return (folder / "last.pt").is_file() or (folder / "best.pt").is_file()

    # ================================================================== classifier
    def train_classifier(self, run_dir: str | Path | None = None) -> bool:
        if run_dir is None or isinstance(run_dir, bool):
            info = self.selected_run()
            if info is None:
                return False
            run_dir = info.path
        run_dir = str(run_dir)
        if run_dir in self._deleting:
            return False
        self._clear_classifier(f"Run: {Path(run_dir).name}")  # also drops a saved report still being read
        self._classifier_run = run_dir
        self.classifier_button.setEnabled(False)
        self.classifier_progress.setValue(0)
        self.classifier_progress.setFormat("Embedding images… %p%")
        self.classifier_progress.show()
        self.status_message.emit(f"Fitting a linear classifier on {Path(run_dir).name}…")
        self._classifier_task = self._runner.start(
            lambda ctx: workers.fit_classifier(run_dir, ctx),
            on_done=lambda report: self._on_classifier_done(report, run_dir),
            on_failed=self._on_classifier_failed,
            on_progress=self._on_classifier_progress,
            name="fit classifier",
        )
        return True

    def classifier_running(self) -> bool:
        return self._classifier_task is not None

    def _on_classifier_progress(self, value) -> None:
        stage, fraction = value
        self.classifier_progress.setFormat(f"{str(stage).capitalize()}… %p%")
        self.classifier_progress.setValue(int(round(100 * max(0.0, min(1.0, fraction)))))

    def _on_classifier_done(self, report, run_dir: str) -> None:
        self._classifier_task = None
        self._classifier_run = None
        self.classifier_progress.hide()
        self._show_classifier(report, run_dir)
        self._follow_selection()
        self.status_message.emit(f"Classifier trained: top-1 {format_percent(report.top1)}, top-5 {format_percent(report.top5)}")
        self._update_buttons()
        self.classifier_trained.emit(run_dir)

    def show_classifier_report(self, run_dir: str, report) -> None:
        """A classifier fitted elsewhere (Inspect's Refit after labelling): the card shows it,
        unless a fit of its own is under way."""
        if self._classifier_task is None:
            self._show_classifier(report, run_dir)

    def _follow_selection(self) -> None:
        """After a fit, the card shows the run selected now (the user may have picked
        another while the fit ran), from its saved report."""
        info = self.selected_run()
        if info is None or str(info.path) == self._classifier_shown_for:
            return
        self._clear_classifier(f"Run: {info.name}")
        self._load_classifier_report(str(info.path))

    def _load_classifier_report(self, run_dir: str) -> None:
        """The saved scores of the run's last classifier fit, read on a worker thread."""
        self._report_generation += 1
        generation = self._report_generation

        def shown(report) -> None:
            if generation != self._report_generation or self._classifier_task is not None or report is None:
                return
            selected = self.selected_run()
            if selected is not None and str(selected.path) == run_dir:
                self._show_classifier(report, run_dir)

        self._runner.start(lambda ctx: workers.load_classifier_report(run_dir), on_done=shown,
                           on_failed=lambda msg, tb: log.warning("cannot read the classifier report of %s: %s", run_dir, msg),
                           name="classifier report")

    def _clear_classifier(self, caption: str) -> None:
        self._report_generation += 1  # a report still being read is for another run
        self.classifier_report = None
        self._classifier_shown_for = None
        self.classifier_run_label.setText(caption)
        self.classifier_run_label.setToolTip("")
        self.top1_label.setText("—")
        self.top5_label.setText("—")
        self.confusion_plot.hide()
        self.confusion_legend.setText("")
        self.few_labels_label.hide()
        self.confused_label.hide()

    def _show_classifier(self, report, run_dir: str) -> None:
        self.classifier_report = report
        self._classifier_shown_for = run_dir
        fitted = getattr(report, "fitted_at", 0.0)
        epoch = getattr(report, "epoch", None)
        on_epoch = f" · epoch {epoch}" if epoch is not None and fitted else ""
        self.classifier_run_label.setText(f"Run: {Path(run_dir).name}{on_epoch}")
        self.classifier_run_label.setToolTip(
            f"Fitted {time.strftime('%Y-%m-%d %H:%M', time.localtime(fitted))} on the encoder after epoch {epoch}"
            if fitted and epoch is not None else "")
        self.top1_label.setText(format_percent(report.top1))
        self.top5_label.setText(format_percent(report.top5))
        self._show_confusion(np.asarray(report.confusion), list(report.class_names))
        self._show_few_labels(report)
        self.refresh_runs()

    def _show_few_labels(self, report) -> None:
        scores = list(getattr(report, "few_labels", []) or [])
        if not scores:
            self.few_labels_label.hide()
            return
        # One line, so the card keeps its height for the class legend: the tooltip says it whole.
        counts = " / ".join(str(score.labels_per_class) for score in scores)
        means = [100 * score.as_dict()["linear_top1"]["mean"] for score in scores]
        self.few_labels_label.setText(f"{counts} labels per class: {' / '.join(f'{m:.1f}' for m in means)}%")
        parts = [f"{score.labels_per_class} per class {format_percent(score.as_dict()['linear_top1']['mean'])}"
                 for score in scores]
        self.few_labels_label.setToolTip(
            f"With fewer labels, top-1: {', '.join(parts)} (all {report.num_train:,} labelled images: "
            f"{format_percent(report.top1)}). Linear classifiers fitted on that many labelled training images per "
            f"class, {scores[0].draws} random draws each (mean shown), scored on the whole test split"
        )
        self.few_labels_label.show()

    def _on_classifier_failed(self, message: str, details: str) -> None:
        self._classifier_task = None
        self._classifier_run = None
        self.classifier_progress.hide()
        self._classifier_shown_for = None
        self._follow_selection()
        self._update_buttons()
        self.last_error_box = show_error(self, "Classifier training failed", message, details)

    def _show_confusion(self, confusion: np.ndarray, class_names: list[str]) -> None:
        """Row-normalised counts as an image (each row shows where one class's images went)."""
        counts = confusion.astype(np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        self.confusion_image.setImage(shares, levels=(0.0, 1.0))
        size = len(shares)
        self.confusion_image.setRect(0, 0, size, size)
        few = size <= 12
        numbers = [(i + 0.5, str(i)) for i in range(size)]
        for axis in ("left", "bottom"):
            self.confusion_plot.getAxis(axis).setTicks([numbers] if few else None)
        legend = [f"{i} {name if len(name) <= 18 else name[:17] + '…'}" for i, name in enumerate(class_names)]
        self.confusion_legend.setText("\n".join(legend) if few else f"{size} classes")
        self.confusion_plot.setToolTip("Confusion matrix (rows: true class, columns: predicted class)\n"
                                       + "\n".join(legend[:40]))
        self.confusion_plot.getViewBox().setRange(xRange=(0, size), yRange=(0, size), padding=0.02)
        self.confusion_plot.show()
        self._show_most_confused()

    def _show_most_confused(self) -> None:
        """The two largest off-diagonal cells, as links that open their images: by number where
        the legend numbers the classes (12 or fewer), by name otherwise; the tooltip names five."""
        report = self.classifier_report
        cells = report.most_confused(5) if report is not None and hasattr(report, "most_confused") else []
        if not cells:
            self.confused_label.hide()
            return
        position = {name: i for i, name in enumerate(report.class_names)}
        numbered = len(report.class_names) <= 12

        def name(cell) -> str:
            if numbered:
                return f"{position[cell.true_class]} \u2192 {position[cell.predicted]}"
            return f"{html.escape(cell.true_class)} \u2192 {html.escape(cell.predicted)}"

        links = [f'<a href="{position[c.true_class]},{position[c.predicted]}">{name(c)}</a> ({c.count}/{c.of})'
                 for c in cells[:2]]
        self.confused_label.setText("Most confused: " + " \u00b7 ".join(links))
        opens = ("Click one, or a cell of the matrix, to look at those images in Inspect, each with where it "
                 "looks like the class it was taken for rather than its own"
                 if getattr(report, "mistakes", None) is not None else
                 "Train the classifier again to open them in Inspect (this fit did not record which images they were)")
        listed = "\n".join(f"{c.true_class} \u2192 {c.predicted}: {c.count} of {c.of} test images" for c in cells)
        self.confused_label.setToolTip(f"True class \u2192 the class its test images were taken for.\n{listed}\n{opens}")
        self.confused_label.show()

    def confusion_cell_at(self, scene_pos) -> tuple[int, int] | None:
        """(true class, predicted class) of the matrix cell under a scene position, or None."""
        report = self.classifier_report
        if report is None or self.confusion_plot.isHidden():
            return None
        view = self.confusion_plot.getViewBox()
        if not view.sceneBoundingRect().contains(scene_pos):
            return None
        point = view.mapSceneToView(scene_pos)
        row, column = math.floor(point.y()), math.floor(point.x())
        size = len(report.class_names)
        return (row, column) if 0 <= row < size and 0 <= column < size else None

    def _confusion_cell_text(self, row: int, column: int) -> str:
        report = self.classifier_report
        names = report.class_names
        counts = np.asarray(report.confusion)
        count, total = int(counts[row, column]), int(counts[row].sum())
        share = f" ({format_percent(count / total)})" if total else ""
        if row == column:
            return f"{names[row]}: {count} of {total} test images right{share}"
        opens = "; click to look at them" if count and getattr(report, "mistakes", None) is not None else ""
        return f"{names[row]} taken for {names[column]}: {count} of {total} test images{share}{opens}"

    def _on_confusion_hover(self, scene_pos) -> None:
        cell = self.confusion_cell_at(scene_pos)
        if cell is None:
            return
        text = self._confusion_cell_text(*cell)
        self.confusion_plot.setToolTip(text)
        QToolTip.showText(QCursor.pos(), text, self.confusion_plot)

    def _on_confusion_click(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        cell = self.confusion_cell_at(event.scenePos())
        if cell is not None:
            self.open_confusion_cell(*cell)

    def open_confusion_cell(self, row: int, column: int) -> bool:
        """Open the test images of class `row` that the classifier took for class `column` in
        Inspect; False (with a message) when there are none to open."""
        report, run_dir = self.classifier_report, self._classifier_shown_for
        if report is None or run_dir is None:
            return False
        names = report.class_names
        if not (0 <= row < len(names) and 0 <= column < len(names)):
            return False
        if row == column:
            self.status_message.emit(f"{self._confusion_cell_text(row, column)}; a cell off the diagonal opens "
                                     "the images taken for another class")
            return False
        if getattr(report, "mistakes", None) is None:
            self.status_message.emit("This classifier was fitted before fgdesk recorded which test images it "
                                     "got wrong: train the classifier again to open them")
            return False
        mistakes = report.mistakes_between(names[row], names[column])
        if not mistakes:
            self.status_message.emit(f"No test image of {names[row]} was taken for {names[column]}")
            return False
        self.open_mistakes.emit(run_dir, mistakes)
        return True

    # ================================================================== state
    def _update_buttons(self) -> None:
        training = self.is_training()
        stopping = training and self.worker.stop_requested
        self.train_button.setEnabled(self.can_start())
        if self._dataset_path is not None and self._base_config is None and not training:
            self.train_button.setText("Preparing…")
        else:
            self.train_button.setText("Train")
        self.pause_button.setEnabled(training and not stopping)
        self.pause_button.setText("Resume" if self._paused else "Pause")
        self.stop_button.setEnabled(training and not stopping)
        info = self.selected_run()
        if any(str(run.path) in self._deleting for run in self.selected_runs()):
            info = None  # rows on their way out: nothing may start on them
        resumable = info is not None and (
            info.resumable if hasattr(info, "resumable") else info.status in ("interrupted", "stopped")
        )
        has_checkpoint = info is not None and self._has_checkpoint(info)
        further = info is not None and info.status == "finished" and has_checkpoint
        self.resume_button.setText("Train further…" if further else "Resume")
        self.resume_button.setToolTip("Add minutes or epochs to this finished run and go on from its last checkpoint; "
                                      "the learning-rate schedule stretches over the new length" if further
                                      else "Continue this run from its last checkpoint")
        self.resume_button.setEnabled(bool(resumable or further) and not training)
        self.inspect_button.setEnabled(has_checkpoint)
        self.folder_button.setEnabled(info is not None)
        self.compare_button.setEnabled(len(self.selected_runs()) >= 2 and not self._deleting)
        self.delete_button.setEnabled(bool(self.selected_runs()) and self._delete_task is None)
        self.classifier_button.setEnabled(has_checkpoint and self._classifier_task is None
                                          and not (training and self.worker.run_dir == str(info.path)))
        for field in self.fields.values():
            field.widget.setEnabled(not training)

    def shutdown(self) -> None:
        """Stop everything this view started; waits for the training thread."""
        self._redraw_timer.stop()
        if self.is_training():
            self.worker.stop()
            self.worker.wait(120_000)
        self._runner.cancel_all()
