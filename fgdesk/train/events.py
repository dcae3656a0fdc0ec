"""What the engine reports while it runs, and how other threads steer it."""
from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass


@dataclass
class StepEvent:
    epoch: int  # 0-based
    epochs: int
    step_in_epoch: int  # 1-based count of steps done in this epoch
    steps_per_epoch: int
    global_step: int
    total_steps: int
    loss: float
    lr: float
    images_per_s: float
    eta_s: float


@dataclass
class EpochEvent:
    epoch: int  # 0-based index of the epoch just finished
    epochs: int
    mean_loss: float
    knn_top1: float | None  # on the held-out validation images, in [0, 1]
    elapsed_s: float
    fraction: float = 1.0  # share of the epoch trained: below 1 when the time budget ended the run in it


@dataclass
class CheckpointEvent:
    path: str
    global_step: int


@dataclass
class BadImageEvent:
    path: str
    reason: str


@dataclass
class PausedEvent:
    """The engine has finished the step in flight and is now waiting for resume or stop."""

    epoch: int  # 0-based
    global_step: int


@dataclass
class FinishedEvent:
    run_dir: str
    status: str  # "finished" | "stopped"
    epochs_done: int
    best_knn_top1: float | None


@dataclass
class FailedEvent:
    run_dir: str
    reason: str
    traceback: str
    log_path: str


Event = StepEvent | EpochEvent | CheckpointEvent | BadImageEvent | PausedEvent | FinishedEvent | FailedEvent


def event_record(event: Event) -> dict:
    """A JSON-safe dict: non-finite numbers (a skipped step's loss) become null."""
    fields = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(event).items()}
    return {"type": type(event).__name__.removesuffix("Event").lower(), **fields}


class TrainingControl:
    """Thread-safe pause/resume/stop flags that the engine checks between steps."""

    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pauses = 0

    def pause(self) -> None:
        with self._lock:
            self._pauses += 1
            self._running.clear()

    @property
    def pause_count(self) -> int:
        """How many times pause() was called: each call is a request the engine answers once."""
        return self._pauses

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # wake a paused loop so it can see the stop

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Block while paused; return True once running (or stopped)."""
        return self._running.wait(timeout)
