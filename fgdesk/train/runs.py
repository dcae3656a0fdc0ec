"""Run folders: everything about one training run lives in one directory.

    config.json        the RunConfig
    state.json         status, progress and best score (rewritten atomically)
    metrics.jsonl      one line per logged step and per epoch (appended)
    train.log          the engine's log
    checkpoints/       last.pt and best.pt
    classifier.pt      linear head fitted on the labelled split (after `eval`)
    eval.json          the last evaluation report
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgdesk import paths
from fgdesk.fileio import atomic_write_text

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
CLASSIFIER_FILE = "classifier.pt"
EVAL_FILE = "eval.json"


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
    """Runs under `root` (default: the user's runs folder), newest first."""
    root = Path(root) if root else paths.runs_dir()
    if not root.is_dir():
        return []
    infos = [info for child in root.iterdir() if child.is_dir() and (info := run_info(child))]
    return sorted(infos, key=lambda info: info.created, reverse=True)


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


def best_checkpoint(run_dir: Path) -> Path:
    """best.pt when a kNN monitor picked one, else last.pt."""
    best = Path(run_dir) / CHECKPOINT_DIR / BEST_CHECKPOINT
    return best if best.is_file() else last_checkpoint(run_dir)
