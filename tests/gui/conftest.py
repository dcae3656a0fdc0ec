"""Fixtures for the app's tests: tiny demo data, a window, and a tiny training config."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QThreadPool  # noqa: E402


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory) -> Path:
    """3 classes x 8 images at 64 px: 6 train + 2 test per class (enough for a kNN monitor)."""
    from fgdesk.data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo3", num_classes=3, per_class=8, size=64)


@pytest.fixture
def window(qtbot, isolated_home):
    """The main window, shown; teardown stops any run and waits for worker threads."""
    from fgdesk.gui.main_window import MainWindow

    win = MainWindow()
    win.confirm_stop_training = lambda: True
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    view = win.training_view
    if view.is_training():
        view.stop_training()
        view.wait_for_worker(120_000)
    win.inspect_view.shutdown()
    QThreadPool.globalInstance().waitForDone(60_000)


@pytest.fixture(scope="session")
def trained_run(demo_set, tmp_path_factory) -> Path:
    """A finished one-epoch run on the demo set, made with the core trainer (no GUI)."""
    from fgdesk.config import RunConfig
    from fgdesk.train.engine import Trainer

    from guihelpers import TINY_OVERRIDES

    config = RunConfig().with_overrides({**TINY_OVERRIDES, "data.path": str(demo_set)})
    run_dir = tmp_path_factory.mktemp("runs") / "tiny-run"
    result = Trainer(config, run_dir=run_dir).run()
    assert result.status == "finished", result
    return run_dir
