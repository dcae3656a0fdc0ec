"""Run folders: everything about one training run lives in one directory.

    config.json        the RunConfig
    state.json         status, progress and best score (rewritten atomically)
    metrics.jsonl      one line per logged step and per epoch (appended)
    train.log          the engine's log
    checkpoints/       last.pt and best.pt
    classifier.pt      linear head fitted on the labelled split (after `eval`)
    eval.json          the last evaluation report
    .lock              held by the process training the run (pid, host), so no second one joins in
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgdesk import paths
from fgdesk.fileio import atomic_write_text, read_jsonl

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
CLASSIFIER_FILE = "classifier.pt"
EVAL_FILE = "eval.json"
LOCK_FILE = ".lock"

log = logging.getLogger(__name__)


@dataclass
class RunInfo:
    path: Path
    name: str
    status: str  # running | interrupted | finished | stopped | failed | new
    epochs_done: int
    epochs: int
    best_knn_top1: float | None
    created: float
    updated: float
    dataset: str
    has_classifier: bool

    @property
    def resumable(self) -> bool:
        return self.status in ("interrupted", "stopped", "failed") and (self.path / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file()


def new_run_dir(name: str = "", root: Path | None = None) -> Path:
    root = Path(root) if root else paths.runs_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{name}" if name else stamp
    candidate, counter = root / base, 1
    while candidate.exists():
        counter += 1
        candidate = root / f"{base}-{counter}"
    candidate.mkdir(parents=True)
    (candidate / CHECKPOINT_DIR).mkdir()
    return candidate


def read_state(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def write_state(run_dir: Path, **changes: Any) -> dict[str, Any]:
    state = read_state(run_dir)
    state.setdefault("created", time.time())
    state.update(changes)
    state["updated"] = time.time()
    atomic_write_text(Path(run_dir) / STATE_FILE, json.dumps(state, indent=2) + "\n")
    return state


def mark_running(run_dir: Path, **changes: Any) -> dict[str, Any]:
    return write_state(run_dir, status="running", pid=os.getpid(), host=socket.gethostname(), **changes)


class RunBusy(RuntimeError):
    """Another process is training this run; the message says which and how to clear a stale lock."""


@dataclass
class RunLock:
    path: Path
    token: str

    def release(self) -> None:
        """Remove the lock if it is still ours (a stale-lock takeover may have replaced it)."""
        if _read_lock(self.path).get("token") == self.token:
            self.path.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def acquire_lock(run_dir: Path) -> RunLock:
    """Claim the run for this process, or raise RunBusy while another live process holds it.

    A lock left by a process that died on this host is taken over. One from another host
    (a shared folder) cannot be checked, so it is respected and the message says how to
    remove it.
    """
    path = Path(run_dir) / LOCK_FILE
    token = secrets.token_hex(8)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "token": token}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if not holder and time.time() - _mtime(path) < 5.0:
                time.sleep(0.2)  # another process is writing its lock right now
                continue
            pid, host = holder.get("pid"), holder.get("host")
            if host == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() and _process_alive(pid):
                raise RunBusy(f"{run_dir} is being trained by process {pid} on this computer; "
                              "stop that run first, or resume it once it has stopped") from None
            if holder and host != socket.gethostname():
                since = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(holder.get("since", 0))))
                raise RunBusy(f"{run_dir} is being trained on {host} (process {pid}, since {since}). If that "
                              f"process has ended, delete {path} and try again") from None
            path.unlink(missing_ok=True)  # left by a process that died here, or unreadable: stale
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        return RunLock(path, token)
    raise RunBusy(f"could not claim {run_dir}: its lock file {path} keeps changing; is another fgdesk starting it?")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def truncate_metrics(run_dir: Path, global_step: int, epochs_done: int) -> int:
    """Drop the step, epoch and checkpoint records written after the checkpoint a run resumes
    from: a crash after them would otherwise leave curves that run backwards. Returns how
    many records went."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for record in read_jsonl(path):
        kind = record.get("type")
        later = (
            (kind in ("step", "checkpoint") and int(record.get("global_step", 0)) > global_step)
            or (kind == "epoch" and int(record.get("epoch", 0)) >= epochs_done)
        )
        if later:
            dropped += 1
        else:
            kept.append(record)
    if dropped:
        atomic_write_text(path, "".join(json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n" for r in kept))
    return dropped


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def effective_status(state: dict[str, Any]) -> str:
    """'running' only while the writing process lives; a dead writer means 'interrupted'."""
    status = state.get("status", "new")
    if status != "running":
        return status
    if state.get("host") == socket.gethostname() and isinstance(state.get("pid"), int) and _process_alive(state["pid"]):
        return "running"
    return "interrupted"


def run_info(run_dir: Path) -> RunInfo | None:
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    if not state and not (run_dir / CONFIG_FILE).is_file():
        return None
    return RunInfo(
        path=run_dir,
        name=run_dir.name,
        status=effective_status(state),
        epochs_done=int(state.get("epochs_done", 0)),
        epochs=int(state.get("epochs", 0)),
        best_knn_top1=state.get("best_knn_top1"),
        created=float(state.get("created", run_dir.stat().st_mtime)),
        updated=float(state.get("updated", run_dir.stat().st_mtime)),
        dataset=str(state.get("dataset", "")),
        has_classifier=(run_dir / CLASSIFIER_FILE).is_file(),
    )


def list_runs(root: Path | None = None) -> list[RunInfo]:
    """Runs under `root`, newest first. By default: the user's runs folder and the runs
    made elsewhere with `--out` (those still there)."""
    folders: list[Path] = []
    if root is not None:
        folders = [child for child in Path(root).iterdir() if child.is_dir()] if Path(root).is_dir() else []
    else:
        default = paths.runs_dir()
        if default.is_dir():
            folders = [child for child in default.iterdir() if child.is_dir()]
        folders += [folder for folder in remembered_runs() if folder.is_dir()]
    seen: set[str] = set()
    infos = []
    for folder in folders:
        key = os.path.realpath(folder)
        if key not in seen and (info := run_info(folder)):
            seen.add(key)
            infos.append(info)
    return sorted(infos, key=lambda info: info.created, reverse=True)


def remembered_runs() -> list[Path]:
    try:
        lines = paths.runs_elsewhere_file().read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [Path(line) for line in lines if line.strip()]


def remember_run(run_dir: Path) -> None:
    """Note a run made outside the runs folder, so `fgdesk runs` and the app list it."""
    run_dir = Path(run_dir).resolve()
    try:
        run_dir.relative_to(paths.runs_dir().resolve())
        return  # listed anyway
    except ValueError:
        pass
    known = [folder for folder in remembered_runs() if folder.is_dir()]  # forget deleted ones
    if run_dir in known:
        return
    try:
        atomic_write_text(paths.runs_elsewhere_file(), "".join(f"{p}\n" for p in [*known, run_dir]))
    except OSError as exc:  # a read-only home must not stop a run
        log.warning("could not note %s in %s: %s", run_dir, paths.runs_elsewhere_file(), exc)


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


def best_checkpoint(run_dir: Path) -> Path:
    """best.pt when a kNN monitor picked one, else last.pt."""
    best = Path(run_dir) / CHECKPOINT_DIR / BEST_CHECKPOINT
    return best if best.is_file() else last_checkpoint(run_dir)
