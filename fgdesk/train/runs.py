"""Run folders: everything about one training run lives in one directory.

    config.json        the RunConfig
    state.json         status, progress and best score (rewritten atomically)
    metrics.jsonl      one line per logged step and per epoch (appended)
    train.log          the engine's log
    checkpoints/       last.pt and best.pt
    classifier.pt      linear head fitted on the labelled split (after `eval` or "Train classifier")
    classifier.json    its scores (top-1, top-5, per class, few labels); confusion.csv its matrix
    eval.json          the last evaluation report
    export/            the encoder exported by `fgdesk export` (unless --out names another folder)
    cache/             embeddings of the dataset's images, kept between evaluations
    .lock              held by the process training the run (pid, host), so no second one joins in
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import math
import os
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
CLASSIFIER_REPORT_FILE = "classifier.json"
EVAL_FILE = "eval.json"
CONFUSION_FILE = "confusion.csv"
MISTAKES_FILE = "test_mistakes.csv"  # each misclassified test image: what it is, what it was taken for
EXPORT_DIR = "export"
CACHE_DIR = "cache"
LOCK_FILE = ".lock"
EXPORT_FILES = ("fgdesk_encoder.pt", "fgdesk_encoder.onnx")
# Everything fgdesk writes in a run folder, the largest first: deleting a run removes these
# and nothing else, and config and state go last, so a delete cut short leaves a run that
# is still listed and can be deleted again. In its subfolders, only the files named here
# (glob patterns) are fgdesk's; anything else a user put there is theirs.
RUN_ENTRIES = (CHECKPOINT_DIR, CACHE_DIR, EXPORT_DIR, CLASSIFIER_FILE, CLASSIFIER_REPORT_FILE, CONFUSION_FILE,
               MISTAKES_FILE, EVAL_FILE, METRICS_FILE, LOG_FILE, CONFIG_FILE, STATE_FILE)
SUBFOLDER_FILES = {
    CHECKPOINT_DIR: (LAST_CHECKPOINT, BEST_CHECKPOINT),
    CACHE_DIR: ("embeddings-*.pt",),
    EXPORT_DIR: EXPORT_FILES,
}

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
    classifier_top1: float | None = None  # test top-1 of the last classifier fit, from classifier.json
    disk_bytes: int = 0  # what fgdesk's files in the folder take: what deleting the run frees

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
    """Another process is training this run; the message says which."""


# An OS lock on RUN/.lock marks the run as taken (flock; on Windows a range lock on a byte
# past the JSON, so the mandatory lock never stops others from reading who holds it). The
# system drops it when the process ends however it ends, so no lock is ever left stale;
# the JSON only says who holds it.
_LOCK_OFFSET = 1 << 20


@dataclass
class RunLock:
    path: Path
    handle: Any  # the open lock file; the lock lives as long as it stays open

    def release(self) -> None:
        try:
            _unlock(self.handle)
        except OSError:
            pass
        finally:
            self.handle.close()


def _lock_byte(handle: Any) -> None:
    """Take the lock without waiting; OSError when another open file holds it."""
    if os.name == "nt":
        import msvcrt

        handle.seek(_LOCK_OFFSET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # per open file: a second open conflicts


def _unlock(handle: Any) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(_LOCK_OFFSET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read(4096).split(b"\n", 1)[0].decode("utf-8"))
    except (OSError, ValueError):
        return {}


def acquire_lock(run_dir: Path) -> RunLock:
    """Claim the run for this process, or raise RunBusy while another holds it (on this
    computer or, on a shared folder whose file system supports locks, on another)."""
    path = Path(run_dir) / LOCK_FILE
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+b")
    try:
        _lock_byte(handle)
    except OSError:
        handle.close()
        holder = _read_lock(path)
        who = f"process {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
        since = f" since {time.strftime('%Y-%m-%d %H:%M', time.localtime(float(holder['since'])))}" if "since" in holder else ""
        raise RunBusy(f"{run_dir} is being trained by {who}{since}; stop that run first, "
                      "or resume it once it has stopped") from None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    handle.seek(0)
    handle.write(json.dumps(record).encode("utf-8") + b"\n")
    handle.truncate()
    handle.flush()
    return RunLock(path, handle)


def truncate_metrics(run_dir: Path, global_step: int, epochs_done: int, step_scale: float = 1.0) -> int:
    """Drop the step, epoch and checkpoint records written after the checkpoint a run resumes
    from (at `global_step`): a crash after them would otherwise leave curves that run
    backwards. `step_scale` turns the steps kept into the resumed run's units when the batch
    size changed (old images per step / new), so the curves stay in one unit. Returns how
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
            continue
        if step_scale != 1.0 and kind in ("step", "checkpoint"):
            record = {**record, "global_step": round(int(record.get("global_step", 0)) * step_scale)}
        kept.append(record)
    if dropped or step_scale != 1.0:
        atomic_write_text(path, "".join(json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n" for r in kept))
    return dropped


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) there sends Ctrl+C to a console process group
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _windows_process_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


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
        best_knn_top1=finite_number(state.get("best_knn_top1")),
        created=float(state.get("created", run_dir.stat().st_mtime)),
        updated=float(state.get("updated", run_dir.stat().st_mtime)),
        dataset=str(state.get("dataset", "")),
        has_classifier=(run_dir / CLASSIFIER_FILE).is_file(),
        classifier_top1=_classifier_top1(run_dir),
        disk_bytes=run_disk_bytes(run_dir),
    )


def finite_number(value: Any) -> float | None:
    """A number read from a JSON file, or None where it is missing or damaged (a string, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def classifier_fingerprint(run_dir: Path) -> str | None:
    """A hash of classifier.pt's bytes (None without one): it changes with every fit and, unlike
    a modification time, survives copying the run folder. The file is small (classes x embedding)."""
    try:
        data = (Path(run_dir) / CLASSIFIER_FILE).read_bytes()
    except OSError:
        return None
    return hashlib.sha1(data).hexdigest()[:16]


def _classifier_top1(run_dir: Path) -> float | None:
    """Read with json alone (no model load), so listing many runs stays fast; only a report
    of the classifier.pt there now counts."""
    try:
        report = json.loads((run_dir / CLASSIFIER_REPORT_FILE).read_text(encoding="utf-8"))
        value = report.get("top1")
        if report.get("classifier_fingerprint") != classifier_fingerprint(run_dir):
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return finite_number(value)


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
    return list(dict.fromkeys(Path(line) for line in lines if line.strip()))


def remember_run(run_dir: Path) -> None:
    """Note a run made outside the runs folder, so `fgdesk runs` and the app list it.

    Appended, one line each: two runs starting at once cannot lose each other's line, and a
    run on a disk that is not plugged in now is listed again when it is.
    """
    run_dir = Path(run_dir).resolve()
    try:
        run_dir.relative_to(paths.runs_dir().resolve())
        return  # listed anyway
    except ValueError:
        pass
    if run_dir in remembered_runs():
        return
    try:
        paths.runs_elsewhere_file().parent.mkdir(parents=True, exist_ok=True)
        with open(paths.runs_elsewhere_file(), "a", encoding="utf-8") as handle:
            handle.write(f"{run_dir}\n")
    except OSError as exc:  # a read-only home must not stop a run
        log.warning("could not note %s in %s: %s", run_dir, paths.runs_elsewhere_file(), exc)


def require_run_folder(run_dir: Path) -> None:
    """For writers into a run folder made long ago: their atomic writes make missing parent
    folders, which would bring back the folder of a run deleted meanwhile."""
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"the run folder {run_dir} no longer exists (was the run deleted?)")


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


def best_checkpoint(run_dir: Path) -> Path:
    """best.pt when a kNN monitor picked one, else last.pt."""
    best = Path(run_dir) / CHECKPOINT_DIR / BEST_CHECKPOINT
    return best if best.is_file() else last_checkpoint(run_dir)


# --------------------------------------------------------------------------- disk use
def _file_bytes(path: Path) -> int:
    try:
        return path.lstat().st_size  # a link counts as itself, never what it points to
    except OSError:
        return 0


def _is_temp_of(name: str, patterns: tuple[str, ...]) -> bool:
    """A write a kill cut short: fgdesk writes FILE through a hidden .FILE….tmp beside it."""
    return name.startswith(".") and name.endswith(".tmp") and any(fnmatch.fnmatchcase(name[1:], f"{p}*") for p in patterns)


def _listdir(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _run_files(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """(fgdesk's files in the run folder in RUN_ENTRIES order, with the temp files of cut
    writes first; fgdesk's subfolders, to remove once empty)."""
    top_files = tuple(name for name in RUN_ENTRIES if name not in SUBFOLDER_FILES)
    files = [run_dir / name for name in _listdir(run_dir) if _is_temp_of(name, top_files)]
    folders = []
    for name in RUN_ENTRIES:
        path = run_dir / name
        if name not in SUBFOLDER_FILES:
            if os.path.lexists(path) and (path.is_symlink() or not path.is_dir()):
                files.append(path)
        elif path.is_symlink():
            files.append(path)  # a link the user made: it goes, what it points to stays
        elif path.is_dir():
            patterns = SUBFOLDER_FILES[name]
            for child in _listdir(path):
                child_path = path / child
                if _is_temp_of(child, patterns) or (any(fnmatch.fnmatchcase(child, p) for p in patterns)
                                                   and (child_path.is_symlink() or not child_path.is_dir())):
                    files.append(child_path)
            folders.append(path)
    return files, folders


def run_disk_bytes(run_dir: Path) -> int:
    """What fgdesk's files in the run folder take: what deleting the run frees."""
    return sum(_file_bytes(path) for path in _run_files(Path(run_dir))[0])


def format_bytes(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}" if count < 10 else f"{count:.0f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- deleting
class NotARun(ValueError):
    """The folder is not an fgdesk run; nothing in it was touched."""


@dataclass
class DeletedRun:
    path: Path  # as the caller gave it
    freed_bytes: int
    kept: list[str]  # what fgdesk did not write (paths inside the run folder); the folder stays for them


def is_run_folder(run_dir: Path) -> bool:
    """True when the folder holds a run's state.json or config.json, as fgdesk writes them,
    not merely files of those names (a dataset may have a config.json of its own)."""
    for name, keys in ((STATE_FILE, ("status",)), (CONFIG_FILE, ("data", "model", "schedule"))):
        try:
            document = json.loads((Path(run_dir) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and all(key in document for key in keys):
            return True
    return False


def delete_run(run_dir: Path) -> DeletedRun:
    """Remove what fgdesk wrote in a run folder, then the folder when nothing else is in it.

    Refuses with RunBusy while a process trains the run, and holds the run's lock while it
    deletes, so no training can start half-way. Files fgdesk did not write are left where
    they are, in the run folder or in its checkpoints/, cache/ and export/ subfolders, and
    so are those folders then. A run folder that is a link: the link goes once the folder
    it points to is empty.
    """
    given = Path(run_dir)  # reported back as given, so callers can match it to what they listed
    run_dir = Path(os.path.abspath(run_dir))
    if not run_dir.is_dir():
        raise NotARun(f"{run_dir} does not exist or is not a folder")
    if not is_run_folder(run_dir):
        raise NotARun(f"{run_dir} is not an fgdesk run folder (it has no run state or config); nothing was deleted")
    lock = acquire_lock(run_dir)
    freed = 0
    try:
        files, folders = _run_files(run_dir)
        for path in files:
            size = _file_bytes(path)
            path.unlink()
            freed += size
        for folder in folders:
            if not _listdir(folder):
                folder.rmdir()
        if os.name != "nt":  # POSIX: unlinked while held, so no resume can take a lock on a file about to vanish
            (run_dir / LOCK_FILE).unlink(missing_ok=True)
    finally:
        lock.release()
    if os.name == "nt":  # Windows cannot remove a file that is open
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
    kept = []
    for name in _listdir(run_dir):
        if name in SUBFOLDER_FILES and (run_dir / name).is_dir():
            kept += [f"{name}/{child}" for child in _listdir(run_dir / name)]
        else:
            kept.append(name)
    if not kept:
        target = Path(os.path.realpath(run_dir))
        try:
            if run_dir.is_symlink():
                run_dir.unlink()
            target.rmdir()
        except OSError as exc:  # emptied all the same; an empty folder is not listed as a run
            log.warning("%s is empty but could not be removed: %s", target, exc)
    return DeletedRun(given, freed, kept)


def delete_runs(run_dirs: list[Path]) -> tuple[list[DeletedRun], list[str]]:
    """Delete each run; (what was deleted, one line per run left alone or cut short, and why).
    One run's refusal does not stop the others."""
    deleted, problems = [], []
    for run_dir in run_dirs:
        try:
            deleted.append(delete_run(run_dir))
        except (RunBusy, NotARun) as exc:
            problems.append(f"not deleted: {exc}")
        except OSError as exc:  # cut short: config and state go last, so the run most likely stays listed
            problems.append(f"could not delete all of {run_dir}: {exc}")
    return deleted, problems
