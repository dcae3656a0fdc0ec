"""Launching the app: fast imports (no torch), the real entry point shows a window."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, env_extra: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_importing_the_app_does_not_import_torch():
    result = run_python(
        "import sys\n"
        "import fgdesk.gui.app, fgdesk.gui.main_window, fgdesk.gui.workers\n"
        "import fgdesk.gui.dataset_view, fgdesk.gui.training_view, fgdesk.gui.inspect_view, fgdesk.gui.thumbnails\n"
        "print('torch' in sys.modules, 'torchvision' in sys.modules)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_building_the_window_does_not_import_torch(tmp_path):
    result = run_python(
        "import sys\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from fgdesk.gui.main_window import MainWindow\n"
        "w = MainWindow(); w.show(); app.processEvents()\n"
        "print('torch' in sys.modules)\n",
        {"FGDESK_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_fgdesk_without_arguments_opens_the_window(tmp_path):
    started = time.time()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", FGDESK_HOME=str(tmp_path), FGDESK_BENCH_STARTUP="1")
    result = subprocess.run([sys.executable, "-m", "fgdesk"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    marker = [line for line in result.stdout.splitlines() if line.startswith("FGDESK_WINDOW_SHOWN")]
    assert marker, result.stdout + result.stderr
    shown_at = float(marker[0].split()[1])
    assert started < shown_at < time.time()
    assert "Traceback" not in result.stderr


def test_torch_loaded_by_a_worker_stays_out_of_the_garbage_collectors_walks():
    """A full collection over torch's ~350k objects holds the GIL for a quarter second and
    freezes the window; after `core()` loads torch they sit in the permanent generation."""
    result = run_python(
        "import gc\n"
        "from fgdesk.gui.workers import core\n"
        "before = len(gc.get_objects())\n"
        "core('torch'); core('fgdesk.train.engine')\n"
        "print(before, len(gc.get_objects()), gc.get_freeze_count())\n"
    )
    assert result.returncode == 0, result.stderr
    before, tracked, frozen = map(int, result.stdout.split())
    assert frozen > 100_000  # torch alone leaves far more than this alive
    assert tracked < before + 10_000, f"{tracked} objects still walked by full collections (before: {before})"


def test_a_worker_that_loads_torch_gets_torchvision_loaded_too():
    """torchvision's import registers operators; torch code on another thread meanwhile has
    broken it. So the call that first loads torch also loads torchvision, under the import
    lock, before its caller can run torch code."""
    result = run_python(
        "import sys\n"
        "from fgdesk.gui.workers import core\n"
        "core('fgdesk.train.runs'); print('torch' in sys.modules, 'torchvision' in sys.modules)\n"
        "core('fgdesk.train.device'); print('torch' in sys.modules, 'torchvision' in sys.modules)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "True", "True"]
