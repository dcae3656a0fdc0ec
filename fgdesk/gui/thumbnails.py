"""Thumbnail grid for large datasets: a list model, a loader pool and a disk cache.

- Only items the view paints ask for a thumbnail (a QListView with uniform item sizes
  calls `data()` for visible rows only).
- Requests go to a bounded queue. The requests of one pass of the event loop (one paint of
  the grid) form a screen; the newest screen is served first, top to bottom. Scrolling fast
  through 10,000 images loads what is on screen now and drops requests for rows long gone,
  and a screen fills in reading order.
- Worker threads decode at thumbnail size (`QImageReader.setScaledSize`, falling back to
  `fgdesk.data.load_rgb` for files Qt cannot read) and build `QImage`s only; pixmaps are
  made on the GUI thread.
- Thumbnails are kept in a freedesktop-style cache: `<cache>/normal/<md5(file URI)>.png`
  holding `Thumb::URI` and `Thumb::MTime`; a thumbnail is valid while the mtime matches.
  Files are written to a temporary name and renamed into place.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import (
    QAbstractListModel,
    QPoint,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QRunnable,
    QSize,
    Qt,
    QThread,
    QThreadPool,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor, QFont, QImage, QImageReader, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QStyle, QStyledItemDelegate, QStyleOptionViewItem

from fgdesk import paths

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 128  # freedesktop "normal" size
CACHE_FLAVOUR = "normal"
SAMPLE_ROLE = Qt.ItemDataRole.UserRole + 1
STATE_ROLE = Qt.ItemDataRole.UserRole + 2  # "loading" | "ready" | "failed"

# Formats Qt reads but whose colours Qt does not manage the way load_rgb does.
_ODD_FORMATS = {
    QImage.Format.Format_Invalid,
    QImage.Format.Format_Grayscale16,
    QImage.Format.Format_RGBA64,
    QImage.Format.Format_RGBX64,
    QImage.Format.Format_RGBA64_Premultiplied,
    QImage.Format.Format_RGBA16FPx4,
    QImage.Format.Format_RGBX16FPx4,
    QImage.Format.Format_RGBA32FPx4,
    QImage.Format.Format_RGBX32FPx4,
}
if hasattr(QImage.Format, "Format_CMYK8888"):
    _ODD_FORMATS.add(QImage.Format.Format_CMYK8888)


# --------------------------------------------------------------------------- disk cache
def file_uri(path: str | Path) -> str:
    return Path(os.path.abspath(path)).as_uri()


class ThumbnailCache:
    """Freedesktop-style thumbnail files keyed by md5 of the file URI, validated by mtime."""

    def __init__(self, root: Path | None = None, flavour: str = CACHE_FLAVOUR) -> None:
        self.folder = (root if root is not None else paths.thumbnail_cache_dir()) / flavour
        self._made = False

    def path_for(self, uri: str) -> Path:
        return self.folder / (hashlib.md5(uri.encode("utf-8")).hexdigest() + ".png")

    def load(self, uri: str, mtime: int, crop_bottom: int = 0) -> QImage | None:
        target = self.path_for(uri)
        if not target.exists():
            return None
        image = QImageReader(str(target)).read()
        # Read the text chunks from the decoded image: QImageReader.text() splits keys at ':'.
        if image.isNull() or image.text("Thumb::URI") != uri or image.text("Thumb::MTime") != str(mtime):
            return None
        if image.text("Thumb::X-FGDesk-CropBottom") not in ("", str(crop_bottom)):
            return None
        return image

    def store(self, uri: str, mtime: int, image: QImage, crop_bottom: int = 0) -> None:
        if not self._made:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._made = True
        tagged = QImage(image)
        tagged.setText("Thumb::URI", uri)
        tagged.setText("Thumb::MTime", str(mtime))
        tagged.setText("Software", "fgdesk")
        if crop_bottom:
            tagged.setText("Thumb::X-FGDesk-CropBottom", str(crop_bottom))
        target = self.path_for(uri)
        temporary = target.with_name(f".{target.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            if not tagged.save(str(temporary), "PNG"):
                raise OSError(f"could not write {temporary}")
            os.replace(temporary, target)
        except OSError as exc:  # a full disk or a read-only cache never breaks browsing
            log.debug("thumbnail cache write failed: %s", exc)
            try:
                temporary.unlink()
            except OSError:
                pass


# --------------------------------------------------------------------------- decoding
def decode_thumbnail(path: str | Path, size: int = THUMBNAIL_SIZE, crop_bottom: int = 0) -> QImage:
    """Decode `path` at thumbnail size; raises ValueError with a short reason on failure."""
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)  # EXIF orientation
    if reader.canRead():
        full = reader.size()
        if full.isValid():
            height = full.height() - crop_bottom if 0 < crop_bottom < full.height() else full.height()
            if height != full.height():
                reader.setClipRect(QRect(0, 0, full.width(), height))
            if full.width() > size or height > size:
                reader.setScaledSize(QSize(full.width(), height).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio))
        image = reader.read()
        if not image.isNull() and image.format() not in _ODD_FORMATS:
            if image.hasAlphaChannel():
                return image.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
            return image.convertToFormat(QImage.Format.Format_RGB32)
    return _decode_with_core(path, size, crop_bottom)


def _decode_with_core(path: str | Path, size: int, crop_bottom: int) -> QImage:
    from fgdesk.gui.qtutil import pil_to_qimage
    from fgdesk.gui.workers import core

    data = core("fgdesk.data")
    ImageDecodeError, load_rgb = data.ImageDecodeError, data.load_rgb
    try:
        image = load_rgb(Path(path), crop_bottom=crop_bottom, draft_size=(size, size))
    except ImageDecodeError as exc:
        raise ValueError(getattr(exc, "reason", str(exc))) from exc
    image.thumbnail((size, size))
    return pil_to_qimage(image).convertToFormat(QImage.Format.Format_RGB32)


# --------------------------------------------------------------------------- loader
@dataclass(frozen=True)
class _Request:
    path: str
    crop_bottom: int
    screen: int  # requests of one event-loop pass share a number; later passes have larger ones


class _DrainQueue(QRunnable):
    """A pool worker that keeps taking the next pending request until none is left."""

    def __init__(self, loader: "ThumbnailLoader") -> None:
        super().__init__()
        self._loader = loader

    def run(self) -> None:
        QThread.currentThread().setPriority(QThread.Priority.LowPriority)
        while True:
            request = self._loader._take()
            if request is None:
                return
            self._loader._load(request)


class ThumbnailLoader(QObject):
    """Loads thumbnails on a private pool from a bounded queue: the newest screen first, in order."""

    loaded = Signal(str, QImage)  # path, image
    failed = Signal(str, str)  # path, reason

    def __init__(
        self,
        size: int = THUMBNAIL_SIZE,
        cache: ThumbnailCache | None = None,
        max_pending: int = 256,
        threads: int | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.size = size
        self.cache = cache if cache is not None else ThumbnailCache()
        self.max_pending = max_pending
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads or max(1, min(4, QThread.idealThreadCount())))
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, _Request] = OrderedDict()  # oldest first; screens ascend along it
        self._in_flight: set[str] = set()
        self._screen = 0
        self._screen_open = False
        self._workers = 0
        self.dropped = 0  # requests pushed out of the bounded queue (for tests and benches)

    def request(self, path: str, crop_bottom: int = 0) -> None:
        """Ask for a thumbnail (GUI thread); a repeated request moves it to the newest screen."""
        if not self._screen_open:
            # Everything asked for until the event loop turns belongs to this screen.
            self._screen_open = True
            QTimer.singleShot(0, self, self._close_screen)
        with self._lock:
            if path in self._in_flight:
                return
            self._pending.pop(path, None)
            self._pending[path] = _Request(path, crop_bottom, self._screen)
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                self.dropped += 1
            start_worker = self._workers < self._pool.maxThreadCount()
            if start_worker:
                self._workers += 1
        if start_worker:
            self._pool.start(_DrainQueue(self))

    def _close_screen(self) -> None:
        self._screen += 1
        self._screen_open = False

    def pending(self) -> list[str]:
        """Queued paths, the next one to load first: newest screen first, each top to bottom."""
        with self._lock:
            requests = list(self._pending.values())
        return [r.path for r in sorted(requests, key=lambda r: -r.screen)]  # stable: request order within a screen

    def clear(self) -> None:
        """Forget queued requests (loads already running still report)."""
        with self._lock:
            self._pending.clear()

    def shutdown(self, msecs: int = 3000) -> None:
        self.clear()
        self._pool.waitForDone(msecs)

    def _take(self) -> _Request | None:
        with self._lock:
            if not self._pending:
                self._workers -= 1
                return None
            # The first request of the newest screen: walk back from the end while the screen holds.
            newest = next(reversed(self._pending.values())).screen
            request = None
            for candidate in reversed(self._pending.values()):
                if candidate.screen != newest:
                    break
                request = candidate
            del self._pending[request.path]
            self._in_flight.add(request.path)
            return request

    def _load(self, request: _Request) -> None:
        try:
            image = self.load_now(request.path, request.crop_bottom)
        except Exception as exc:
            self.failed.emit(request.path, str(exc) or type(exc).__name__)
        else:
            self.loaded.emit(request.path, image)
        finally:
            with self._lock:
                self._in_flight.discard(request.path)

    def load_now(self, path: str, crop_bottom: int = 0) -> QImage:
        """Cached thumbnail or a fresh decode (stored in the cache); any thread."""
        mtime = int(os.stat(path).st_mtime)
        uri = file_uri(path)
        image = self.cache.load(uri, mtime, crop_bottom)
        if image is None:
            image = decode_thumbnail(path, self.size, crop_bottom)
            self.cache.store(uri, mtime, image, crop_bottom)
        return image


# --------------------------------------------------------------------------- model
class ThumbnailModel(QAbstractListModel):
    """Dataset samples as a flat, filterable list; thumbnails arrive asynchronously."""

    thumbnail_ready = Signal(int)  # number of thumbnails held in memory

    def __init__(self, loader: ThumbnailLoader | None = None, memory_limit: int = 1500, parent: QObject | None = None):
        super().__init__(parent)
        self.loader = loader if loader is not None else ThumbnailLoader(parent=self)
        self.loader.loaded.connect(self._on_loaded)
        self.loader.failed.connect(self._on_failed)
        self._memory_limit = memory_limit
        self._pixmaps: OrderedDict[str, QPixmap] = OrderedDict()  # LRU, most recent last
        self._failed: dict[str, str] = {}
        self._samples: list = []
        self._paths: list[str] = []
        self._names_lower: list[str] = []
        self._class_names: list[str] = []
        self._visible: list[int] = []  # sample indices shown, in order
        self._row_of_path: dict[str, int] = {}
        self._crop_bottom = 0
        self._placeholder = _placeholder_pixmap(self.loader.size, broken=False)
        self._broken = _placeholder_pixmap(self.loader.size, broken=True)

    # -- content ---------------------------------------------------------------------
    def set_samples(self, samples: list, class_names: list[str], crop_bottom: int = 0,
                    paths: list[str] | None = None, names_lower: list[str] | None = None) -> None:
        """`paths` and `names_lower` (str(path) and the lower-case file name of each sample)
        may come ready from a worker thread; large folders then reset without a stall."""
        self.beginResetModel()
        self.loader.clear()
        self._samples = list(samples)
        self._paths = paths if paths is not None else [str(sample.path) for sample in self._samples]
        self._names_lower = names_lower if names_lower is not None else [Path(p).name.lower() for p in self._paths]
        self._class_names = list(class_names)
        self._crop_bottom = crop_bottom
        self._failed.clear()
        self._visible = list(range(len(self._samples)))
        self._reindex()
        self.endResetModel()

    def set_filter(self, label: int | None = None, split: str | None = None, text: str = "") -> None:
        """Show samples of one class (label index) and/or split whose file name contains text."""
        needle = text.strip().lower()
        samples, names = self._samples, self._names_lower
        keep = [
            i
            for i in range(len(samples))
            if (label is None or samples[i].label == label)
            and (split is None or samples[i].split == split)
            and (not needle or needle in names[i])
        ]
        self.beginResetModel()
        self.loader.clear()
        self._visible = keep
        self._reindex()
        self.endResetModel()

    def _reindex(self) -> None:
        self._row_of_path = {self._paths[i]: row for row, i in enumerate(self._visible)}

    def total_count(self) -> int:
        return len(self._samples)

    def sample_at(self, row: int):
        return self._samples[self._visible[row]]

    def row_of(self, path: str | Path) -> int:
        return self._row_of_path.get(str(path), -1)

    def class_name(self, label: int) -> str:
        if 0 <= label < len(self._class_names):
            return self._class_names[label]
        return "unlabeled"

    def cached_count(self) -> int:
        return len(self._pixmaps)

    def has_thumbnail(self, row: int) -> bool:
        return self._paths[self._visible[row]] in self._pixmaps

    # -- Qt model API ----------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._visible)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        sample_index = self._visible[index.row()]
        path = self._paths[sample_index]
        if role == Qt.ItemDataRole.DecorationRole:
            pixmap = self._pixmaps.get(path)
            if pixmap is not None:
                self._pixmaps.move_to_end(path)
                return pixmap
            if path in self._failed:
                return self._broken
            self.loader.request(path, self._crop_bottom)
            return self._placeholder
        if role == Qt.ItemDataRole.DisplayRole:
            return Path(path).name
        if role == Qt.ItemDataRole.ToolTipRole:
            sample = self._samples[sample_index]
            tip = f"{path}\n{self.class_name(sample.label)} · {sample.split}"
            if path in self._failed:
                tip += f"\nCannot show: {self._failed[path]}"
            return tip
        if role == SAMPLE_ROLE:
            return self._samples[sample_index]
        if role == STATE_ROLE:
            if path in self._pixmaps:
                return "ready"
            return "failed" if path in self._failed else "loading"
        return None

    def _on_loaded(self, path: str, image: QImage) -> None:
        self._pixmaps[path] = QPixmap.fromImage(image)  # GUI thread
        self._pixmaps.move_to_end(path)
        while len(self._pixmaps) > self._memory_limit:
            self._pixmaps.popitem(last=False)
        self._notify(path)
        self.thumbnail_ready.emit(len(self._pixmaps))

    def _on_failed(self, path: str, reason: str) -> None:
        self._failed[path] = reason
        self._notify(path)

    def _notify(self, path: str) -> None:
        row = self._row_of_path.get(path, -1)
        if row >= 0:
            index = self.index(row, 0)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole, STATE_ROLE])


def _placeholder_pixmap(size: int, broken: bool) -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    inset = size // 8
    rect = pixmap.rect().adjusted(inset, inset, -inset, -inset)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor("#eef1f5") if not broken else QColor("#fbeae8"))
    painter.drawRoundedRect(rect, 6, 6)
    if broken:
        pen = QPen(QColor("#c8372d"), 3)
        painter.setPen(pen)
        c = rect.center()
        d = size // 10
        painter.drawLine(c.x() - d, c.y() - d, c.x() + d, c.y() + d)
        painter.drawLine(c.x() - d, c.y() + d, c.x() + d, c.y() - d)
    painter.end()
    return pixmap


# --------------------------------------------------------------------------- view
class ThumbnailDelegate(QStyledItemDelegate):
    """A fixed cell: the thumbnail centred over its elided file name."""

    def __init__(self, thumb_size: int = THUMBNAIL_SIZE, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thumb_size = thumb_size
        self.cell = QSize(thumb_size + 14, thumb_size + 32)

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return self.cell

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        cell = option.rect.adjusted(3, 3, -3, -3)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        hovered = bool(option.state & QStyle.StateFlag.State_MouseOver)
        if selected or hovered:
            path = QPainterPath()
            path.addRoundedRect(cell, 8, 8)
            painter.fillPath(path, QColor("#dbe6fc") if selected else QColor("#eef2f8"))
        pixmap = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(pixmap, QPixmap) and not pixmap.isNull():
            area = QRect(cell.left(), cell.top() + 4, cell.width(), self.thumb_size)
            scaled = pixmap.size().scaled(
                min(pixmap.width(), self.thumb_size), min(pixmap.height(), self.thumb_size),
                Qt.AspectRatioMode.KeepAspectRatio,
            )
            target = QRect(0, 0, scaled.width(), scaled.height())
            target.moveCenter(area.center())
            painter.drawPixmap(target, pixmap)
        text_rect = QRect(cell.left() + 4, cell.bottom() - 22, cell.width() - 8, 20)
        font = QFont(option.font)
        font.setPointSizeF(max(7.5, font.pointSizeF() - 1))
        painter.setFont(font)
        painter.setPen(QColor("#1d2330") if selected else QColor("#4a5365"))
        name = index.data(Qt.ItemDataRole.DisplayRole) or ""
        elided = painter.fontMetrics().elidedText(name, Qt.TextElideMode.ElideMiddle, text_rect.width())
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignCenter, elided)
        painter.restore()


class ThumbnailView(QListView):
    """Icon-mode list tuned for tens of thousands of uniform cells."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setUniformItemSizes(True)  # only visible rows are asked for data
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(2000)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)  # several to label at once
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(24)
        self.setMouseTracking(True)
        self.setSpacing(2)
        self.delegate = ThumbnailDelegate(parent=self)
        self.setItemDelegate(self.delegate)
        self.setGridSize(self.delegate.cell)

    def visible_rows(self) -> list[int]:
        """Rows whose cells intersect the viewport now, in order (cost: one screen of cells)."""
        model = self.model()
        if model is None or model.rowCount() == 0:
            return []
        viewport = self.viewport().rect()
        column_x = self.gridSize().width() // 2
        first = -1
        for y in range(0, viewport.height(), 6):  # the topmost line, even when half scrolled out
            index = self.indexAt(QPoint(column_x, y))
            if index.isValid():
                first = index.row()
                break
        if first < 0:
            return []
        rows = []
        for row in range(first, model.rowCount()):
            rect = self.visualRect(model.index(row, 0))
            if rect.top() > viewport.bottom():
                break
            if rect.intersects(viewport):
                rows.append(row)
        return rows
