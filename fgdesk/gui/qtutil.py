"""Small Qt helpers shared by the views: settings, recent lists, image conversion, dialogs."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QImage
from PySide6.QtWidgets import QMessageBox, QWidget

from fgdesk import paths

log = logging.getLogger(__name__)

ORGANIZATION = "fgdesk"
APPLICATION = "fgdesk"
SETTINGS_FILE = "fgdesk.ini"

# Suffixes the app offers in file dialogs and accepts on drops (the core decides what it can decode).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def app_settings() -> QSettings:
    """The app's QSettings, an INI file in fgdesk's settings folder (moved by FGDESK_HOME)."""
    folder = paths.settings_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return QSettings(str(folder / SETTINGS_FILE), QSettings.Format.IniFormat)


class RecentList:
    """Most-recent-first list of paths kept in QSettings under one key."""

    def __init__(self, settings: QSettings, key: str, limit: int = 8) -> None:
        self._settings = settings
        self._key = key
        self._limit = limit

    def items(self) -> list[str]:
        value = self._settings.value(self._key, [])
        if isinstance(value, str):  # QSettings returns a bare string for a one-item list
            value = [value]
        return [str(item) for item in (value or []) if item]

    def add(self, path: str | Path) -> None:
        text = str(path)
        entries = [text] + [item for item in self.items() if item != text]
        self._settings.setValue(self._key, entries[: self._limit])
        self._settings.sync()

    def remove(self, path: str | Path) -> None:
        self._settings.setValue(self._key, [item for item in self.items() if item != str(path)])
        self._settings.sync()

    def clear(self) -> None:
        self._settings.setValue(self._key, [])
        self._settings.sync()


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files_under(folder: Path, limit: int | None = None) -> list[Path]:
    """Image files below `folder`, sorted, skipping hidden entries (call off the GUI thread)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            candidate = Path(root) / name
            if is_image_file(candidate):
                found.append(candidate)
                if limit is not None and len(found) >= limit:
                    return found
    return found


def pil_to_qimage(image) -> QImage:
    """A deep-copied QImage (RGB888 or RGBA8888) from a PIL image; safe to build off the GUI thread."""
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGB")
    fmt = QImage.Format.Format_RGB888 if image.mode == "RGB" else QImage.Format.Format_RGBA8888
    data = image.tobytes()
    channels = 3 if image.mode == "RGB" else 4
    qimage = QImage(data, image.width, image.height, channels * image.width, fmt)
    return qimage.copy()  # detach from the Python bytes buffer


def qimage_to_pil(qimage: QImage):
    """A PIL RGB image from any QImage (used for pasted clipboard images)."""
    from PIL import Image

    rgb = qimage.convertToFormat(QImage.Format.Format_RGB888)
    width, height, stride = rgb.width(), rgb.height(), rgb.bytesPerLine()
    buffer = np.frombuffer(rgb.constBits(), dtype=np.uint8, count=stride * height)
    array = buffer.reshape(height, stride)[:, : width * 3].reshape(height, width, 3)
    return Image.fromarray(array.copy(), "RGB")


def open_in_file_manager(path: str | Path) -> None:
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


def show_error(parent: QWidget | None, title: str, message: str, details: str = "") -> QMessageBox:
    """A non-blocking error dialog (window-modal); the caller may keep the returned box."""
    log.error("%s: %s", title, message)
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Critical)
    box.setWindowTitle(title)
    box.setText(message)
    if details:
        box.setDetailedText(details)
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setObjectName("ErrorDialog")
    box.open()
    return box


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_percent(value: float | None) -> str:
    """Accuracy for display; accepts fractions (0..1) as the core reports them."""
    if value is None:
        return "—"
    return f"{100.0 * value:.1f}%" if value <= 1.0 else f"{value:.1f}%"
