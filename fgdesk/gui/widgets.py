"""Reusable widgets: cards, empty states, a collapsible section, an aspect-keeping image canvas."""
from __future__ import annotations

from PySide6.QtCore import QByteArray, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

# Stroke icons (24 px grid) drawn in the sidebar and on empty states; colour is filled in.
_ICON_PATHS = {
    "dataset": '<rect x="3" y="3" width="7" height="7" rx="1.5"/><rect x="14" y="3" width="7" height="7" rx="1.5"/>'
    '<rect x="3" y="14" width="7" height="7" rx="1.5"/><rect x="14" y="14" width="7" height="7" rx="1.5"/>',
    "train": '<polyline points="3 17 9 11 13 15 21 7"/><polyline points="15 7 21 7 21 13"/>',
    "inspect": '<circle cx="11" cy="11" r="7"/><line x1="16.5" y1="16.5" x2="21" y2="21"/>',
    "folder": '<path d="M3 7a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2z"/>',
    "image": '<rect x="3" y="4" width="18" height="16" rx="2"/><circle cx="9" cy="10" r="2"/>'
    '<polyline points="21 17 16 12 6 20"/>',
    "chart": '<line x1="4" y1="20" x2="20" y2="20"/><rect x="6" y="11" width="3" height="7"/>'
    '<rect x="11" y="7" width="3" height="11"/><rect x="16" y="13" width="3" height="5"/>',
}


def line_icon(name: str, colour: str = "#d7dce5", size: int = 48) -> QIcon:
    """A crisp stroke icon from the small built-in set (needs Qt's SVG image plug-in)."""
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24" fill="none" '
        f'stroke="{colour}" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round">'
        f"{_ICON_PATHS[name]}</svg>"
    )
    pixmap = QPixmap()
    if not pixmap.loadFromData(QByteArray(svg.encode("utf-8")), "SVG"):
        return QIcon()
    return QIcon(pixmap.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))


class Card(QFrame):
    """A white rounded panel with an optional title row."""

    def __init__(self, title: str = "", parent: QWidget | None = None, margins: int = 14) -> None:
        super().__init__(parent)
        self.setObjectName("Card")
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(margins, margins, margins, margins)
        self.body.setSpacing(8)
        self.header = QHBoxLayout()
        self.header.setSpacing(8)
        self.title_label = QLabel(title)
        self.title_label.setObjectName("Subtitle")
        if title:
            self.header.addWidget(self.title_label)
            self.header.addStretch(1)
            self.body.addLayout(self.header)


class ElidedLabel(QLabel):
    """One line that ends in an ellipsis when it does not fit its width, as the width changes;
    `full_text()` and the tooltip hold it whole."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = ""
        self._given_tooltip = ""  # a tooltip set from outside wins over the full text
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        self._full = text
        self._elide()

    def setToolTip(self, text: str) -> None:  # noqa: N802
        self._given_tooltip = text
        self._elide()

    def full_text(self) -> str:
        return self._full

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._elide()

    def changeEvent(self, event) -> None:  # noqa: N802 (a new font changes what fits)
        super().changeEvent(event)
        if event.type() == event.Type.FontChange:
            self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, max(0, self.width()))
        super().setText(shown)
        super().setToolTip(self._given_tooltip or (self._full if shown != self._full else ""))


def muted_label(text: str = "", wrap: bool = True) -> QLabel:
    label = QLabel(text)
    label.setObjectName("Muted")
    label.setWordWrap(wrap)
    return label


class EmptyState(QWidget):
    """A centred icon, headline, explanation and optional action buttons."""

    def __init__(self, icon: str, title: str, text: str, parent: QWidget | None = None, text_width: int = 520) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        column = QVBoxLayout()
        column.setSpacing(10)
        self.icon_label = QLabel()
        self.icon_label.setPixmap(line_icon(icon, "#aab3c2", 64).pixmap(64, 64))
        self.icon_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        column.addWidget(self.icon_label)
        self.title_label = QLabel(title)
        self.title_label.setObjectName("Title")
        self.title_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        column.addWidget(self.title_label)
        self.text_label = muted_label(text)
        self.text_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text_label.setFixedWidth(text_width)  # a fixed width lets the wrapped text get its full height
        column.addWidget(self.text_label, 0, Qt.AlignmentFlag.AlignHCenter)
        self.buttons = QHBoxLayout()
        self.buttons.setSpacing(8)
        self.buttons.addStretch(1)
        column.addSpacing(6)
        column.addLayout(self.buttons)
        self.extra = QVBoxLayout()
        column.addLayout(self.extra)
        outer.addLayout(column)
        outer.addStretch(2)
        self._outer, self._column = outer, column
        self._has_stretch_end = False

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        # The wrapped text's height is asked once its style sheet font is known: measured
        # before, it came out a line short and the text ran under the headline.
        self.text_label.setMinimumHeight(self.text_label.heightForWidth(self.text_label.width()))
        # On a short window (a 768-px laptop screen) the icon gives way first, so the
        # headline and the text are never drawn over each other.
        icon = self.icon_label.sizeHint().height() + self._column.spacing() if self.icon_label.isHidden() else 0
        margins = self._outer.contentsMargins()
        needed = self._column.sizeHint().height() + icon + margins.top() + margins.bottom()
        self.icon_label.setVisible(event.size().height() >= needed)

    def add_button(self, text: str, primary: bool = False) -> QPushButton:
        button = QPushButton(text)
        if primary:
            button.setObjectName("Primary")
        button.setMinimumHeight(32)
        if self._has_stretch_end:
            self.buttons.takeAt(self.buttons.count() - 1)
        self.buttons.addWidget(button)
        self.buttons.addStretch(1)
        self._has_stretch_end = True
        return button


class CollapsibleSection(QWidget):
    """A disclosure button that shows or hides its content widget."""

    toggled = Signal(bool)

    def __init__(self, title: str, content: QWidget, expanded: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.content = content
        self.button = QToolButton()
        self.button.setObjectName("Disclosure")
        self.button.setText(title)
        self.button.setCheckable(True)
        self.button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.button.toggled.connect(self.set_expanded)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.button)
        layout.addWidget(content)
        self.button.setChecked(expanded)
        self.set_expanded(expanded)

    def is_expanded(self) -> bool:
        return self.button.isChecked()

    def set_expanded(self, expanded: bool) -> None:
        if self.button.isChecked() != expanded:
            self.button.setChecked(expanded)
            return
        self.button.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.content.setVisible(expanded)
        self.toggled.emit(expanded)


class ImageCanvas(QWidget):
    """Paints a pixmap scaled to fit (aspect kept), an optional box, or a placeholder text."""

    clicked = Signal()

    def __init__(self, placeholder: str = "", parent: QWidget | None = None, align_top: bool = False,
                 fit_height: bool = False) -> None:
        super().__init__(parent)
        self._align_top = align_top
        self._fit_height = fit_height  # ask the layout for the height the image needs at this width
        self._pixmap: QPixmap | None = None
        self._box: tuple[float, float, float, float] | None = None  # in pixmap pixels
        self._placeholder = placeholder
        self._note = ""
        self._selected = False
        self._dim = False
        self.setMinimumSize(64, 64)
        vertical = QSizePolicy.Policy.Preferred if fit_height else QSizePolicy.Policy.Expanding
        policy = QSizePolicy(QSizePolicy.Policy.Expanding, vertical)
        policy.setHeightForWidth(fit_height)
        self.setSizePolicy(policy)

    def sizeHint(self) -> QSize:
        return QSize(320, self.heightForWidth(320) if self._fit_height else 240)

    def hasHeightForWidth(self) -> bool:
        return self._fit_height

    def heightForWidth(self, width: int) -> int:
        if self._pixmap is None or self._pixmap.isNull():
            return int(width * 0.75)
        return max(64, min(900, int(width * self._pixmap.height() / max(1, self._pixmap.width()))))

    def pixmap(self) -> QPixmap | None:
        return self._pixmap

    def set_pixmap(self, pixmap: QPixmap | None, box: tuple[float, float, float, float] | None = None) -> None:
        self._pixmap = pixmap
        self._box = box
        if self._fit_height:
            self.updateGeometry()
        self.update()

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    def set_note(self, text: str, dim: bool = True) -> None:
        """Text drawn over the image (e.g. why a heatmap is not shown)."""
        self._note = text
        self._dim = bool(text) and dim
        self.update()

    def note(self) -> str:
        return self._note

    def set_selected(self, selected: bool) -> None:
        self._selected = selected
        self.update()

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit()
        super().mousePressEvent(event)

    def image_rect(self) -> QRectF:
        if self._pixmap is None or self._pixmap.isNull():
            return QRectF()
        area = QRectF(self.rect()).adjusted(2, 2, -2, -2)
        size = self._pixmap.size().toSizeF().scaled(area.size(), Qt.AspectRatioMode.KeepAspectRatio)
        rect = QRectF(0, 0, size.width(), size.height())
        rect.moveCenter(area.center())
        if self._align_top:
            rect.moveTop(area.top())
        return rect

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self._pixmap is None or self._pixmap.isNull():
            painter.setPen(QColor("#98a1b0"))
            painter.drawText(self.rect().adjusted(8, 8, -8, -8), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self._placeholder)
            return
        target = self.image_rect()
        painter.drawPixmap(target, self._pixmap, QRectF(self._pixmap.rect()))
        if self._box is not None:
            scale = target.width() / max(1, self._pixmap.width())
            x0, y0, x1, y1 = self._box
            box = QRectF(target.left() + x0 * scale, target.top() + y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale)
            painter.setPen(QPen(QColor("#ffd60a"), 2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(box)
        if self._dim:
            painter.fillRect(target, QColor(255, 255, 255, 170))
        if self._note:
            font = QFont(self.font())
            font.setPointSizeF(font.pointSizeF() - 0.5)
            painter.setFont(font)
            painter.setPen(QColor("#4a5365"))
            painter.drawText(target.adjusted(8, 8, -8, -8), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self._note)
        if self._selected:
            painter.setPen(QPen(QColor("#2f6fed"), 3))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(target.adjusted(1, 1, -1, -1), 3, 3)


def metric_block(caption: str, value: str = "—") -> tuple[QWidget, QLabel]:
    """A big number over a small caption; returns (widget, value label)."""
    widget = QWidget()
    layout = QVBoxLayout(widget)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(0)
    value_label = QLabel(value)
    value_label.setObjectName("Metric")
    caption_label = QLabel(caption.upper())
    caption_label.setObjectName("MetricCaption")
    layout.addWidget(value_label)
    layout.addWidget(caption_label)
    return widget, value_label


def chip(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("Chip")
    return label
