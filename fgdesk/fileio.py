"""Crash-safe file writes: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _fsync_dir(directory: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _proc_umask() -> int | None:
    """The process umask as Linux reports it, without changing it; None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def _umask_at_import() -> int:
    mask = _proc_umask()
    if mask is None:
        mask = os.umask(0o022)  # the only portable way to read it is to set it: once, at import
        os.umask(mask)
    return mask


_IMPORT_UMASK = _umask_at_import()


def _file_mode() -> int:
    """mkstemp makes owner-only files; a run folder shared in a lab must be readable as any
    other file the user writes would be."""
    mask = _proc_umask()
    return 0o666 & ~(_IMPORT_UMASK if mask is None else mask)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through `write(fileobj)` into a temp file, fsync, then rename over `path`.

    On any error (disk full included) the temp file is removed and `path` keeps
    its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    if hasattr(os, "fchmod"):
        try:
            os.fchmod(fd, _file_mode())
        except OSError:  # file systems without modes (vfat, some network mounts): keep mkstemp's
            pass
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename in (None, tmp_name):
            exc.filename = str(path)  # the file the user knows, not the hidden temp one
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it; a kill can tear only this last line."""
    line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        exc.filename = exc.filename or str(path)  # a failed write (a full disk) names no file
        raise


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the complete records of a JSON-lines file, skipping a torn or corrupt line."""
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # torn last line from a kill mid-write
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


def drop_torn_jsonl_line(path: Path) -> bool:
    """Cut a torn last line off a JSON-lines file, so the next append starts a line of its own.

    Without this, a record appended after a kill mid-write would share the torn line and be
    skipped with it. Returns whether anything was cut.
    """
    try:
        handle = open(path, "r+b")
    except FileNotFoundError:
        return False
    with handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return False
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return False
        # Scan back in blocks for the end of the last complete line.
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            block = handle.read(end - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        handle.truncate(end)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Delete temp files left by a writer that was killed; return what was removed."""
    removed = []
    for tmp in Path(directory).glob(".*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed
