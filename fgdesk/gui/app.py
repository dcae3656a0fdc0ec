"""Start the desktop app: `fgdesk` with no arguments ends here.

Importing this module does not import torch; the first import happens on a worker
thread after the window is shown (device detection), so the window appears fast.
"""
from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
import threading
import time
import traceback
from pathlib import Path

BENCH_STARTUP_ENV = "FGDESK_BENCH_STARTUP"  # print when the window is first exposed, then quit
BENCH_DATASET_ENV = "FGDESK_BENCH_DATASET"  # open this folder, print when thumbnails fill the screen, quit
SHOWN_MARKER = "FGDESK_WINDOW_SHOWN"
INDEXED_MARKER = "FGDESK_DATASET_INDEXED"
THUMBNAILS_MARKER = "FGDESK_THUMBNAILS_VISIBLE"

log = logging.getLogger("fgdesk.gui")


def configure_logging() -> Path | None:
    """Log to a rotating file in fgdesk's log folder (and warnings to stderr)."""
    from fgdesk.gui.workers import gui_log_path

    root = logging.getLogger("fgdesk")
    root.setLevel(logging.INFO)
    log_path = gui_log_path()
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(log_path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    except OSError:
        log_path = None
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
        root.addHandler(handler)
    if not logging.getLogger().handlers:  # the CLI may already log to the console
        console = logging.StreamHandler()
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter("fgdesk: %(levelname)s: %(message)s"))
        root.addHandler(console)
    return log_path


def load_app_icon():
    """The app icon from fgdesk/resources (PNG sizes plus SVG); an empty icon when they are missing."""
    from PySide6.QtGui import QIcon

    icon = QIcon()
    try:
        from fgdesk.resources_path import APP_ICON_SVG, app_icon_paths, resource_path
    except ImportError:
        folder = Path(__file__).resolve().parent.parent / "resources"
        candidates = sorted((folder / "icons").glob("fgdesk-*.png")) if (folder / "icons").is_dir() else []
        svg = folder / "fgdesk.svg"
    else:
        try:
            candidates = app_icon_paths()
            svg = resource_path(APP_ICON_SVG)
        except Exception:  # a broken resources folder must not stop the app
            candidates, svg = [], Path()
    for path in candidates:
        icon.addFile(str(path))
    if svg.is_file():
        icon.addFile(str(svg))
    return icon


def install_excepthook(window_getter) -> None:
    """Uncaught exceptions in slots are logged and shown, never lost on a console nobody reads."""
    previous = sys.excepthook

    def hook(kind, value, trace):
        if issubclass(kind, KeyboardInterrupt):
            previous(kind, value, trace)
            return
        text = "".join(traceback.format_exception(kind, value, trace))
        log.error("unexpected error:\n%s", text)
        if threading.current_thread() is not threading.main_thread():
            return  # widgets only on the GUI thread; workers report their errors through signals
        try:
            from fgdesk.gui.qtutil import show_error
            from fgdesk.gui.workers import gui_log_path

            show_error(window_getter(), "Unexpected error",
                       f"{kind.__name__}: {value}\n\nDetails are in the log:\n{gui_log_path()}", text)
        except Exception:
            previous(kind, value, trace)

    sys.excepthook = hook


class _StartupProbe:
    """Bench hooks driven by environment variables (see bench/gui.py)."""

    def __init__(self, app, window) -> None:
        from PySide6.QtCore import QEvent, QObject, QTimer

        self.app, self.window = app, window
        probe = self

        class Filter(QObject):
            def eventFilter(self, obj, event):  # noqa: N802 (Qt name)
                if event.type() in (QEvent.Type.Expose, QEvent.Type.Paint) and not probe.shown:
                    probe.on_shown()
                return False

        self.shown = False
        self._filter = Filter()
        self._timer = QTimer()
        window.installEventFilter(self._filter)
        handle = window.windowHandle()
        if handle is not None:
            handle.installEventFilter(self._filter)

    def on_shown(self) -> None:
        from PySide6.QtCore import QTimer

        self.shown = True
        print(f"{SHOWN_MARKER} {time.time():.6f}", flush=True)
        dataset = os.environ.get(BENCH_DATASET_ENV)
        if not dataset:
            QTimer.singleShot(0, self.app.quit)
            return
        view = self.window.dataset_view
        view.dataset_loaded.connect(lambda _index: print(f"{INDEXED_MARKER} {time.time():.6f}", flush=True))
        view.thumbnail_model.thumbnail_ready.connect(lambda _n: self._check_thumbnails())
        self._timer.timeout.connect(self._check_thumbnails)
        self._timer.start(50)
        view.load_dataset(dataset)

    def _check_thumbnails(self) -> None:
        from PySide6.QtCore import QTimer

        view = self.window.dataset_view
        model = view.thumbnail_model
        if view.index is None or model.rowCount() == 0:
            return
        grid = view.thumbnail_view
        rows = grid.visible_rows()
        # A first screen is complete when every full line of cells the viewport holds is there.
        cell = grid.gridSize()
        columns = max(1, grid.viewport().width() // max(1, cell.width()))
        full_lines = max(1, grid.viewport().height() // max(1, cell.height()))
        expected = min(model.rowCount(), columns * full_lines)
        if len(rows) >= expected and all(model.has_thumbnail(row) for row in rows):
            self._timer.stop()
            print(f"{THUMBNAILS_MARKER} {time.time():.6f} {len(rows)} {model.rowCount()}", flush=True)
            QTimer.singleShot(0, self.app.quit)


def main(argv: list[str] | None = None) -> int:
    """Open the main window; returns the application's exit code."""
    parser = argparse.ArgumentParser(prog="fgdesk", description="fgdesk desktop app")
    parser.add_argument("path", nargs="?", help="a dataset folder (or an image) to open")
    options, qt_args = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))

    from PySide6.QtCore import QCoreApplication, Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    import fgdesk
    from fgdesk.gui.qtutil import APPLICATION, ORGANIZATION

    configure_logging()
    QCoreApplication.setOrganizationName(ORGANIZATION)
    QCoreApplication.setApplicationName(APPLICATION)
    QCoreApplication.setApplicationVersion(fgdesk.__version__)
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "fgdesk", *qt_args])
    QGuiApplication.setApplicationDisplayName("fgdesk")
    QGuiApplication.setDesktopFileName("fgdesk")

    from fgdesk.gui.main_window import MainWindow
    from fgdesk.gui.style import apply_theme

    apply_theme(app)
    icon = load_app_icon()
    if not icon.isNull():
        app.setWindowIcon(icon)
    window = MainWindow(app_icon=icon)
    install_excepthook(lambda: window)
    probe = _StartupProbe(app, window) if os.environ.get(BENCH_STARTUP_ENV) else None
    window.show()
    if probe is not None and window.windowHandle() is not None:
        window.windowHandle().installEventFilter(probe._filter)
    if options.path:
        window.open_path(options.path)
    code = int(app.exec())
    # Background tasks (a classifier fit, the first torch import) must not outlive the
    # interpreter: wait a while, and if one is still busy, leave without tearing Qt down.
    from PySide6.QtCore import QThreadPool

    if not QThreadPool.globalInstance().waitForDone(10_000):
        log.warning("background work still running at exit; leaving without waiting for it")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
