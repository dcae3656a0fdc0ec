"""Shared helpers for the benchmark scripts: results files, machine facts, timing, tables.

Every script writes bench/results/NAME.json with the same header (commit, machine,
threads, date, versions, settings) followed by its own `results`, then prints the
JSON and a short aligned table. Paths written into results are relative to the
repository root, so a results file never names the machine it was made on.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
DOCS_DIR = ROOT / "docs"
# The benchmark dataset lives next to the repository, never inside it.
DEFAULT_CUB = Path("..") / "shared" / "data" / "cub50" / "CUB_200_2011"

log = logging.getLogger("bench")


# -- paths -------------------------------------------------------------------------


def resolve_data(path: str | os.PathLike[str] | None) -> Path:
    """`--data` or the default cub50 folder, resolved against the repository root."""
    raw = Path(path) if path else DEFAULT_CUB
    return raw if raw.is_absolute() else (ROOT / raw).resolve()


def relative(path: str | os.PathLike[str] | None) -> str | None:
    """A path as the repository sees it (../shared/...), never an absolute machine path."""
    if path is None:
        return None
    path = Path(path).resolve()
    try:
        return os.path.relpath(path, ROOT)
    except ValueError:  # another drive on Windows
        return path.name


# -- facts about the machine and the code ------------------------------------------


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown" if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_dirty() -> bool | None:
    """True when tracked files differ from the commit (the figures then describe uncommitted code)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")(),
        "gpu": None,
    }
    try:
        from fgdesk.train.device import cpu_has_fast_bf16

        info["cpu_fast_bf16"] = cpu_has_fast_bf16()
    except Exception:  # the header must never fail the benchmark
        info["cpu_fast_bf16"] = None
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        info["memory_gb"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["gpu_count"] = torch.cuda.device_count()
    return info


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads explicitly (default: every usable core) and return the count."""
    import torch

    count = threads if threads and threads > 0 else usable_cpus()
    torch.set_num_threads(count)
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- timing ------------------------------------------------------------------------


class Timer:
    """`with Timer() as t: ...` then `t.elapsed` (seconds); `sync` runs before each reading (CUDA)."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync
        self.start = 0.0
        self.elapsed = 0.0

    def __enter__(self) -> "Timer":
        if self.sync:
            self.sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sync:
            self.sync()
        self.elapsed = time.perf_counter() - self.start


def cuda_sync_for(device: Any) -> Callable[[], None] | None:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.synchronize
    return None


# -- statistics ----------------------------------------------------------------------


def summarize(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation, min and max of the finite values (n counts them)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {
        "n": len(finite),
        "mean": statistics.fmean(finite),
        "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
        "min": min(finite),
        "max": max(finite),
    }


def pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}"


def pct_spread(stats: dict[str, Any], digits: int = 1) -> str:
    """'23.4 ± 1.2' (mean ± std, in percent) or 'n/a'."""
    if not stats or stats.get("mean") is None:
        return "n/a"
    if stats.get("n", 0) > 1:
        return f"{100 * stats['mean']:.{digits}f} ± {100 * stats['std']:.{digits}f}"
    return f"{100 * stats['mean']:.{digits}f}"


# -- results -------------------------------------------------------------------------


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 6)
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, Path):
        return relative(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return _json_ready(value.item())
    return value


class Report:
    """Collects the header at start (load average then too) and writes it with the results."""

    def __init__(self, name: str, settings: dict[str, Any]) -> None:
        import torch

        self.name = name
        self.settings = settings
        self.started = time.time()
        self.load_start = load_average()
        self.header: dict[str, Any] = {
            "benchmark": name,
            "commit": git_commit(),
            "uncommitted_changes": git_dirty(),
            "machine": machine_info(),
            "threads": torch.get_num_threads(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
        }
        try:
            import torchvision

            self.header["torchvision"] = torchvision.__version__
        except ImportError:
            pass

    def document(self, results: dict[str, Any], notes: Sequence[str] = ()) -> dict[str, Any]:
        import torch

        return _json_ready({
            **self.header,
            "threads": torch.get_num_threads(),
            "load_average_start": self.load_start,
            "load_average_end": load_average(),
            "wall_s": time.time() - self.started,
            "settings": self.settings,
            "results": results,
            "notes": list(notes),
        })

    def write(self, results: dict[str, Any], tables: Sequence[str] = (), notes: Sequence[str] = (),
              filename: str | None = None, print_json: bool = True) -> Path:
        document = self.document(results, notes)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / (filename or f"{self.name}.json")
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        if print_json:
            print(json.dumps(document, indent=2))
        print()
        for table in tables:
            print(table)
            print()
        for note in notes:
            print(f"note: {note}")
        print(f"wrote {relative(path)}", flush=True)
        return path


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], title: str = "") -> str:
    """Plain aligned text: `columns` is [(key, heading)]; values are shown with str()."""
    headings = [heading for _, heading in columns]
    cells = [["" if row.get(key) is None else str(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headings)]

    def line(values: Sequence[str]) -> str:
        parts = []
        for i, value in enumerate(values):
            parts.append(value.ljust(widths[i]) if i == 0 else value.rjust(widths[i]))
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out.append(line(headings))
    out.append(line(["-" * w for w in widths]))
    out.extend(line(c) for c in cells)
    return "\n".join(out)


@contextlib.contextmanager
def quiet_logging(level: int = logging.WARNING) -> Iterator[None]:
    """fgdesk logs at INFO during training; benchmarks keep the console for their own lines."""
    logger = logging.getLogger("fgdesk")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def progress(message: str) -> None:
    """One progress line on stderr (stdout carries the JSON and the tables)."""
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# -- scoring frozen features ------------------------------------------------------------

KNN_K, KNN_T = 20, 0.07  # the kNN of `fgdesk eval` (fgdesk.evaluate.report)


def score_features(train_vectors, train_labels, query_vectors, query_labels, num_classes: int, seed: int,
                   linear: bool = True) -> dict[str, float]:
    """kNN top-1/top-5 and (with `linear`) linear-probe top-1 of frozen features, as `fgdesk eval` scores them."""
    from fgdesk.evaluate.knn import knn_scores, topk_accuracy
    from fgdesk.evaluate.linear import fit_linear

    scores = knn_scores(train_vectors, train_labels, query_vectors, num_classes, KNN_K, KNN_T)
    knn = topk_accuracy(scores, query_labels, (1, 5))
    result = {"knn_top1": knn[1], "knn_top5": knn[5]}
    if linear:
        probe = fit_linear(train_vectors, train_labels, num_classes, seed=seed)
        logits = probe.logits(query_vectors)
        result["linear_top1"] = (logits.argmax(dim=1) == query_labels).float().mean().item()
        result["linear_weight_decay"] = probe.weight_decay
    return result
