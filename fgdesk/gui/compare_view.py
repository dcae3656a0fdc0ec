"""The "Compare runs" window: runs' loss and kNN curves overlaid, their scores, and the
settings that differ. It shows a `Comparison` made by fgdesk.train.compare on a worker."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QRadioButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from fgdesk.gui.style import configure_plots
from fgdesk.gui.widgets import muted_label
from fgdesk.train.compare import best_of

# Okabe-Ito, in an order that keeps neighbours apart; runs past the eighth reuse them dashed.
RUN_COLOURS = [(0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0),
               (240, 228, 66), (0, 0, 0)]


def run_pen(position: int) -> pg.QtGui.QPen:
    style = Qt.PenStyle.SolidLine if position < len(RUN_COLOURS) else Qt.PenStyle.DashLine
    return pg.mkPen(RUN_COLOURS[position % len(RUN_COLOURS)], width=2, style=style)


class CompareDialog(QDialog):
    """Non-modal: the Train page stays usable (a run can go on training) while it is open."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Compare runs")
        self.resize(1000, 740)
        configure_plots()
        self.comparison = None
        layout = QVBoxLayout(self)
        self.summary_label = muted_label("Loading…")
        layout.addWidget(self.summary_label)

        axis_row = QHBoxLayout()
        axis_row.addWidget(QLabel("Plot against:"))
        self.by_epoch = QRadioButton("epochs")
        self.by_minutes = QRadioButton("training minutes")
        self.by_epoch.setChecked(True)
        self._axis_group = QButtonGroup(self)
        for button in (self.by_epoch, self.by_minutes):
            self._axis_group.addButton(button)
            axis_row.addWidget(button)
        axis_row.addStretch(1)
        self.by_epoch.toggled.connect(lambda _checked: self._plot())
        layout.addLayout(axis_row)

        splitter = QSplitter(Qt.Orientation.Vertical)
        plots = QWidget()
        plot_row = QHBoxLayout(plots)
        plot_row.setContentsMargins(0, 0, 0, 0)
        self.loss_plot = self._make_plot("Mean contrastive loss per epoch")
        self.knn_plot = self._make_plot("kNN top-1 (%) on held-out training images")
        self.knn_plot.addLegend(offset=(-8, -8), labelTextSize="8pt")
        plot_row.addWidget(self.loss_plot)
        plot_row.addWidget(self.knn_plot)
        splitter.addWidget(plots)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        splitter.addWidget(self.table)
        splitter.setSizes([320, 360])
        layout.addWidget(splitter, 1)

    @staticmethod
    def _make_plot(title: str) -> pg.PlotWidget:
        plot = pg.PlotWidget()
        plot.setMenuEnabled(False)
        plot.setTitle(title, size="9pt", color="#1d2330")
        plot.showGrid(x=False, y=True, alpha=0.15)
        plot.getPlotItem().hideButtons()
        plot.setMinimumHeight(180)
        return plot

    def show_error(self, message: str) -> None:
        self.summary_label.setText(f"Cannot compare these runs: {message}")

    def show_comparison(self, comparison) -> None:
        self.comparison = comparison
        count = len(comparison.runs)
        differing = len(comparison.differing)
        self.summary_label.setText(
            f"{count} runs. " + (f"{differing} setting{'s differ' if differing != 1 else ' differs'}; listed below the scores."
                                 if differing else "Their settings are the same (seeds included).")
        )
        self._plot()
        self._fill_table()

    def _plot(self) -> None:
        if self.comparison is None:
            return
        minutes = self.by_minutes.isChecked()
        x_label = "minutes of training" if minutes else "epoch"
        for plot in (self.loss_plot, self.knn_plot):
            plot.clear()
            plot.setLabel("bottom", x_label)
        legend = self.knn_plot.getPlotItem().legend
        if legend is not None:
            legend.clear()
        for position, run in enumerate(self.comparison.runs):
            curves = run.curves
            x = np.asarray(curves.minutes if minutes else curves.epochs, dtype=np.float64)
            loss = np.asarray(curves.loss, dtype=np.float64)
            knn = 100.0 * np.asarray(curves.knn, dtype=np.float64)
            pen = run_pen(position)
            keep = np.isfinite(loss)
            self.loss_plot.plot(x[keep], loss[keep], pen=pen)
            keep = np.isfinite(knn)
            colour = RUN_COLOURS[position % len(RUN_COLOURS)]
            self.knn_plot.plot(x[keep], knn[keep], pen=pen, name=run.name, symbol="o", symbolSize=5,
                               symbolBrush=pg.mkBrush(colour), symbolPen=None)

    def _fill_table(self) -> None:
        runs = self.comparison.runs
        score_rows = self.comparison.score_rows()
        rows = [(label, texts) for label, texts, _ in score_rows]
        rows += [(key, [self.comparison.setting(run, key) for run in runs]) for key in self.comparison.differing]
        self.table.clear()
        self.table.setRowCount(len(rows))
        self.table.setColumnCount(len(runs))
        self.table.setHorizontalHeaderLabels([run.name for run in runs])
        self.table.setVerticalHeaderLabels([label for label, _ in rows])
        for column, run in enumerate(runs):
            header = self.table.horizontalHeaderItem(column)
            header.setIcon(_swatch(RUN_COLOURS[column % len(RUN_COLOURS)]))  # the colour of its curves
            header.setToolTip(str(run.path))
        # Scores on different datasets are not comparable: then no run is marked best.
        same_data = not {"data.path", "data.layout", "data.level"} & set(self.comparison.differing)
        best = {row: best_of(numbers) for row, (_, _, numbers) in enumerate(score_rows)
                if numbers is not None and same_data}
        for row, (_, values) in enumerate(rows):
            for column, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if best.get(row) is not None and best[row] == column:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                    item.setToolTip("the best of these runs")
                self.table.setItem(row, column, item)
        if len(rows) > len(score_rows):
            self.table.verticalHeaderItem(len(score_rows)).setToolTip("from here down: the settings that differ")


def _swatch(colour: tuple[int, int, int]) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(*colour))
    return QIcon(pixmap)
