"""Workers that call the core off the GUI thread and report back through Qt signals.

Everything that may import torch (training, prediction, device detection) runs here,
inside worker threads, so the window opens without loading it. Results travel as
plain Python objects through queued signals; the views never touch the core's threads.
"""
from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal, Slot

from fgdesk import paths

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- generic tasks
class TaskSignals(QObject):
    progress = Signal(object)
    done = Signal(object)
    failed = Signal(str, str)  # message, traceback
    cancelled = Signal()  # cancelled before it started: its function never ran


class TaskContext:
    """What a task function sees: a progress reporter and a cancel flag."""

    def __init__(self, signals: TaskSignals, cancel_event: threading.Event) -> None:
        self._signals = signals
        self._cancel_event = cancel_event

    def progress(self, value: Any) -> None:
        try:
            self._signals.progress.emit(value)
        except RuntimeError:  # shutting down
            pass

    def cancelled(self) -> bool:
        return self._cancel_event.is_set()


class Task(QRunnable):
    """Runs `fn(context)` on a thread pool; emits done(result) or failed(message, traceback)."""

    def __init__(self, fn: Callable[[TaskContext], Any], name: str = "task") -> None:
        super().__init__()
        self.setAutoDelete(False)  # the TaskRunner owns it until its result is delivered
        self.name = name
        self.signals = TaskSignals()
        self._cancel_event = threading.Event()
        self._fn = fn

    def cancel(self) -> None:
        self._cancel_event.set()

    def was_cancelled(self) -> bool:
        return self._cancel_event.is_set()

    def run(self) -> None:  # runs on a pool thread
        if self._cancel_event.is_set():  # queued behind others and cancelled meanwhile: skip it
            self._emit(self.signals.cancelled)
            return
        context = TaskContext(self.signals, self._cancel_event)
        try:
            result = self._fn(context)
        except BaseException as exc:  # reported, never swallowed
            log.exception("%s failed", self.name)
            self._emit(self.signals.failed, describe_exception(exc), traceback.format_exc())
        else:
            self._emit(self.signals.done, result)

    def _emit(self, signal, *args) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:  # the app is shutting down and nobody is listening any more
            log.debug("%s finished after its receivers were deleted", self.name)


def describe_exception(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


_ALIVE: set[Task] = set()  # tasks kept alive until their result reached the GUI thread


def _release(task: Task) -> None:
    _ALIVE.discard(task)


class TaskRunner(QObject):
    """Starts tasks on a pool and routes each result to the callbacks given for it.

    Results come back through slots of this object, so when the owning view is destroyed
    its pending callbacks are dropped instead of reaching deleted widgets.
    """

    def __init__(self, pool: QThreadPool | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = pool if pool is not None else QThreadPool.globalInstance()
        self._tasks: dict[TaskSignals, tuple[Task, Callable | None, Callable | None, Callable | None, Callable | None]] = {}

    @property
    def pool(self) -> QThreadPool:
        return self._pool

    def busy(self) -> bool:
        return bool(self._tasks)

    def start(
        self,
        fn: Callable[[TaskContext], Any],
        on_done: Callable[[Any], None] | None = None,
        on_failed: Callable[[str, str], None] | None = None,
        on_progress: Callable[[Any], None] | None = None,
        name: str = "task",
        on_cancelled: Callable[[], None] | None = None,
    ) -> Task:
        """Every task ends in exactly one call: on_done, on_failed, or (cancelled before it
        started) on_cancelled. A task cancelled while running finishes and calls on_done."""
        task = Task(fn, name)
        _ALIVE.add(task)
        self._tasks[task.signals] = (task, on_done, on_failed, on_progress, on_cancelled)
        task.signals.done.connect(lambda _result, t=task: _release(t))
        task.signals.failed.connect(lambda _msg, _tb, t=task: _release(t))
        task.signals.cancelled.connect(lambda t=task: _release(t))
        task.signals.done.connect(self._on_done)
        task.signals.failed.connect(self._on_failed)
        task.signals.cancelled.connect(self._on_cancelled)
        task.signals.progress.connect(self._on_progress)
        self._pool.start(task)
        return task

    @Slot(object)
    def _on_done(self, result: Any) -> None:
        entry = self._tasks.pop(self.sender(), None)
        if entry is not None and entry[1] is not None:
            entry[1](result)

    @Slot(str, str)
    def _on_failed(self, message: str, details: str) -> None:
        entry = self._tasks.pop(self.sender(), None)
        if entry is not None and entry[2] is not None:
            entry[2](message, details)

    @Slot()
    def _on_cancelled(self) -> None:
        entry = self._tasks.pop(self.sender(), None)
        if entry is not None and entry[4] is not None:
            entry[4]()

    @Slot(object)
    def _on_progress(self, value: Any) -> None:
        entry = self._tasks.get(self.sender())
        if entry is not None and entry[3] is not None:
            entry[3](value)

    def cancel_all(self) -> None:
        for task, *_ in list(self._tasks.values()):
            task.cancel()

    def wait(self, msecs: int = 5000) -> bool:
        return self._pool.waitForDone(msecs)


# --------------------------------------------------------------------------- core calls
_IMPORT_LOCK = threading.RLock()
_modules_at_freeze = 0  # len(sys.modules) at the last gc.freeze()
_torchvision_tried = False


def core(module: str):
    """Import a core module from a worker thread.

    Imports are serialised: two threads importing torchvision at the same moment can
    see each other's half-initialised modules and fail.
    """
    global _modules_at_freeze, _torchvision_tried
    with _IMPORT_LOCK:
        imported = importlib.import_module(module)
        if "torch" in sys.modules and "torchvision" not in sys.modules and not _torchvision_tried:
            _torchvision_tried = True  # once: a broken torchvision is reported, not retried on every call
            # torchvision's import registers operators (through torch._dynamo), and torch code
            # running on another thread meanwhile has been seen to break it. Import it here,
            # under the lock, before any caller can run torch code from what it got.
            try:
                importlib.import_module("torchvision")
            except Exception as exc:  # the About box reports a broken torchvision
                log.warning("torchvision could not be imported: %s", describe_exception(exc))
        if len(sys.modules) > _modules_at_freeze:
            # torch brings ~350k long-lived objects (~380k with Qt); a full garbage collection walks them
            # all while holding the GIL (~0.25 s here), and the GUI thread stalls. Freezing
            # moves everything alive now out of the collector's reach, so later full
            # collections scan only what was made since.
            gc.freeze()
            _modules_at_freeze = len(sys.modules)
        return imported


@dataclass
class LoadedDataset:
    index: Any  # fgdesk.data.DatasetIndex
    summary: Any  # fgdesk.data.DatasetSummary
    # Prepared here, off the GUI thread: on 40,000 images they take a good part of a second.
    problem_rows: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), files then tiny images
    paths: list[str] = field(default_factory=list)  # str(sample.path), in sample order
    names_lower: list[str] = field(default_factory=list)  # file names, lower case, for the name filter
    labeler: Any = None  # fgdesk.data.labeling.DatasetLabeler when the dataset takes labels (class folders + unlabeled/)


SMALL_IMAGE_SIDE = 32  # images smaller than this on either side are listed as problems


def index_dataset(path: str, layout: str = "auto", level: str = "variant") -> LoadedDataset:
    detect = core("fgdesk.data").detect
    return prepare_loaded(detect(path, layout=layout, level=level, check_images=True))


def prepare_loaded(index: Any) -> LoadedDataset:
    """What the browser shows of an index, computed on the worker thread."""
    rows = [(str(problem.path), problem.reason) for problem in index.problems]
    reported = {row[0] for row in rows}
    sizes = getattr(index, "image_sizes", {}) or {}
    for sample in index.samples:
        size = sizes.get(sample.path)
        if size and min(size[0], size[1] - index.crop_bottom) < SMALL_IMAGE_SIDE and str(sample.path) not in reported:
            rows.append((str(sample.path), f"very small image ({size[0]}×{size[1] - index.crop_bottom} px)"))
    files = [str(sample.path) for sample in index.samples]
    labeler = None
    if index.layout == "folders" and index.samples:  # unlabeled images to label, or labels to correct
        labeling = core("fgdesk.data.labeling")
        try:
            labeler = labeling.DatasetLabeler(index.root)
        except labeling.LabelingError as exc:
            log.info("the images of %s cannot be given labels here: %s", index.root, exc)
    return LoadedDataset(index=index, summary=index.summary(), problem_rows=rows, paths=files,
                         names_lower=[os.path.basename(f).lower() for f in files], labeler=labeler)


def make_demo_dataset() -> Path:
    make = core("fgdesk.data").make_demo_dataset
    root = paths.demo_data_dir()
    return Path(make(root))


def demo_dataset_exists() -> bool:
    root = paths.demo_data_dir()
    return root.is_dir() and any(root.iterdir())


def probe_environment() -> dict[str, str]:
    """Versions and the compute device; imports torch, so call it on a worker thread."""
    info: dict[str, str] = {}
    try:
        info["torch"] = core("torch").__version__
    except Exception as exc:  # torch missing or broken: say so in the About box
        info["torch"] = f"unavailable ({describe_exception(exc)})"
    try:
        info["torchvision"] = core("torchvision").__version__
    except Exception:
        info["torchvision"] = "unavailable"
    try:
        info["device"] = core("fgdesk.train.device").describe_device()
    except Exception as exc:
        info["device"] = f"unknown ({describe_exception(exc)})"
    return info


def default_run_config(data_path: str, num_images: int, device: str = "auto"):
    default_config = core("fgdesk.train.defaults").default_config
    return default_config(data_path, num_images, device=device)


def list_runs() -> list:
    return list(core("fgdesk.train.runs").list_runs())


def load_classifier_report(run_dir: str):
    # fgdesk.evaluate.scores loads no torch: selecting a run never imports it.
    return core("fgdesk.evaluate.scores").load_classifier_report(Path(run_dir))


def delete_runs(run_dirs: list[str]) -> tuple[list, list[str]]:
    return core("fgdesk.train.runs").delete_runs([Path(run_dir) for run_dir in run_dirs])


def compare_runs(run_dirs: list[str]):
    return core("fgdesk.train.compare").compare_runs(run_dirs)


def fit_classifier(run_dir: str, context: TaskContext):
    core_fit = core("fgdesk.evaluate.report").fit_classifier
    labels_per_class = core("fgdesk.evaluate.few_labels").DEFAULT_LABELS_PER_CLASS
    return core_fit(Path(run_dir), on_progress=lambda stage, fraction: context.progress((stage, fraction)),
                    labels_per_class=labels_per_class)


# --------------------------------------------------------------------------- training
@dataclass
class WorkerFailure:
    """Same fields as the engine's FailedEvent, for errors raised around the engine."""

    run_dir: str
    reason: str
    traceback: str
    log_path: str


class TrainingWorker(QThread):
    """Drives one `Trainer.run()` on its own thread and re-emits the engine's events as signals.

    Control (pause/resume/stop) goes through the engine's thread-safe TrainingControl;
    requests made before the engine started are remembered and applied on start.
    """

    run_started = Signal(str)  # run folder
    step = Signal(object)  # StepEvent
    epoch = Signal(object)  # EpochEvent
    checkpoint = Signal(object)  # CheckpointEvent
    bad_image = Signal(object)  # BadImageEvent
    paused = Signal(object)  # PausedEvent: the step in flight is done and the run waits
    run_finished = Signal(object)  # FinishedEvent
    run_failed = Signal(object)  # FailedEvent or WorkerFailure

    def __init__(self, config=None, resume_dir: str | Path | None = None, parent: QObject | None = None,
                 overrides: dict | None = None) -> None:
        super().__init__(parent)
        if (config is None) == (resume_dir is None):
            raise ValueError("give either a config or a run folder to resume")
        self.config = config
        self.resume_dir = Path(resume_dir) if resume_dir is not None else None
        self.overrides = dict(overrides or {})  # a resumed run's new length (schedule.*)
        self.run_dir: str = str(self.resume_dir or "")
        self._lock = threading.Lock()
        self._control = None
        self._want_pause = False
        self._want_stop = False
        self._final_sent = False

    # -- control, callable from the GUI thread ---------------------------------------
    def pause(self) -> None:
        with self._lock:
            self._want_pause = True
            if self._control is not None:
                self._control.pause()

    def resume(self) -> None:
        with self._lock:
            self._want_pause = False
            if self._control is not None:
                self._control.resume()

    def stop(self) -> None:
        with self._lock:
            self._want_stop = True
            if self._control is not None:
                self._control.stop()

    @property
    def stop_requested(self) -> bool:
        return self._want_stop

    # -- worker thread ---------------------------------------------------------------
    def run(self) -> None:
        try:
            Trainer = core("fgdesk.train.engine").Trainer
            TrainingControl = core("fgdesk.train.events").TrainingControl
            control = TrainingControl()
            with self._lock:
                self._control = control
                if self._want_pause:
                    control.pause()
                if self._want_stop:
                    control.stop()
            if self.resume_dir is not None:
                trainer = Trainer.resume(self.resume_dir, on_event=self._dispatch, control=control,
                                         overrides=self.overrides or None)
            else:
                trainer = Trainer(self.config, run_dir=None, on_event=self._dispatch, control=control)
            self.run_dir = str(trainer.run_dir)
            self.run_started.emit(self.run_dir)
            result = trainer.run()
            if not self._final_sent and result is not None:
                self._dispatch(result)
        except BaseException as exc:
            log.exception("training worker failed")
            if not self._final_sent:
                self._final_sent = True
                self.run_failed.emit(
                    WorkerFailure(
                        run_dir=self.run_dir,
                        reason=describe_exception(exc),
                        traceback=traceback.format_exc(),
                        log_path=str(gui_log_path()),
                    )
                )

    def _dispatch(self, event: object) -> None:
        kind = type(event).__name__
        if kind == "StepEvent":
            self.step.emit(event)
        elif kind == "EpochEvent":
            self.epoch.emit(event)
        elif kind == "CheckpointEvent":
            self.checkpoint.emit(event)
        elif kind == "BadImageEvent":
            self.bad_image.emit(event)
        elif kind == "PausedEvent":
            self.paused.emit(event)
        elif kind == "FinishedEvent":
            if not self._final_sent:
                self._final_sent = True
                self.run_finished.emit(event)
        elif kind == "FailedEvent":
            if not self._final_sent:
                self._final_sent = True
                self.run_failed.emit(event)
        else:
            log.debug("ignoring engine event %s", kind)


def gui_log_path() -> Path:
    return paths.log_dir() / "fgdesk-gui.log"
