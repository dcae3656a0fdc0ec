"""Helpers shared by the app tests (imported by name; pytest puts this folder on sys.path)."""
from __future__ import annotations

from pathlib import Path

TINY_OVERRIDES = {
    "model.backbone": "resnet18",
    "model.weights": "random",
    "data.image_size": 32,
    "data.eval_size": 32,
    "data.local_crops": 0,
    "data.local_size": 16,
    "data.num_workers": 0,
    "schedule.epochs": 1,
    "schedule.batch_size": 8,
    "schedule.time_budget_min": 0.0,
    "contrastive.queue_size": 64,
}


def tiny_config_hook(**extra):
    """A TrainingView.config_hook that shrinks a run to seconds on a CPU."""

    def hook(config):
        return config.with_overrides({**TINY_OVERRIDES, **extra})

    return hook


def load_dataset(qtbot, win, path: Path, timeout: int = 30_000):
    win.dataset_view.load_dataset(path)
    qtbot.waitUntil(lambda: win.dataset_view.index is not None and not win.dataset_view.is_loading(), timeout=timeout)
    return win.dataset_view.index


def ready_to_train(qtbot, win, demo_set: Path, **extra) -> None:
    """Open the demo set and wait until the Train button is live, with a tiny config hook."""
    load_dataset(qtbot, win, demo_set)
    win.training_view.config_hook = tiny_config_hook(**extra)
    win.show_page("train")
    qtbot.waitUntil(lambda: win.training_view.train_button.isEnabled(), timeout=60_000)
