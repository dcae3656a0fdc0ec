#!/usr/bin/env python3
"""How fast the app opens, and how fast it shows a large folder.

    python bench/gui.py [--runs 5] [--images 10000] [--data FOLDER] [--xvfb]

1. Startup: launches `python -m fgdesk` with FGDESK_BENCH_STARTUP=1; the app prints a
   timestamp when its window is first exposed and quits. Reported: seconds from just
   before the process is spawned to that timestamp (median and best of --runs).
2. Large folder: generates --images JPEGs in class folders (once; reused with --data),
   then launches the app with FGDESK_BENCH_DATASET pointing at it. The app prints when
   the folder is indexed and when every thumbnail cell on the first screen holds its
   thumbnail. Measured with an empty thumbnail cache (cold) and again with the cache
   the first launch wrote (warm).
Peak resident memory of each launched process is recorded too. Results go to
bench/results/gui.json and are printed as JSON and as a short table.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "gui.json"
SHOWN = "FGDESK_WINDOW_SHOWN"
INDEXED = "FGDESK_DATASET_INDEXED"
THUMBNAILS = "FGDESK_THUMBNAILS_VISIBLE"


def launch(env_extra: dict[str, str], timeout_s: float = 600) -> tuple[float, dict[str, list[str]], float | None]:
    """Run the app once; returns (spawn time, marker -> fields, its peak RSS in MiB or None)."""
    env = dict(os.environ, **env_extra)
    started = time.time()
    process = subprocess.Popen([sys.executable, "-m", "fgdesk"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_mib = None
    if hasattr(os, "wait4"):
        # Read both pipes on threads, then reap the child with wait4 to get its own peak RSS.
        output: dict[str, str] = {}
        readers = [threading.Thread(target=lambda name=name, pipe=pipe: output.__setitem__(name, pipe.read()))
                   for name, pipe in (("out", process.stdout), ("err", process.stderr))]
        for reader in readers:
            reader.start()
        killer = threading.Timer(timeout_s, process.kill)
        killer.start()
        _, status, usage = os.wait4(process.pid, 0)
        killer.cancel()
        for reader in readers:
            reader.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout, stderr = output.get("out", ""), output.get("err", "")
        peak_mib = usage.ru_maxrss / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)
    else:
        stdout, stderr = process.communicate(timeout=timeout_s)
    if process.returncode != 0:
        raise RuntimeError(f"the app exited with {process.returncode}:\n{stderr[-3000:]}")
    markers = {}
    for line in stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in (SHOWN, INDEXED, THUMBNAILS):
            markers[parts[0]] = parts[1:]
    if SHOWN not in markers:
        raise RuntimeError(f"the app never reported its window:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return started, markers, peak_mib


def make_folder(root: Path, images: int, classes: int = 50) -> Path:
    """`images` small JPEGs (200 x 150) in `classes` folders; skipped when already there."""
    from PIL import Image, ImageDraw

    marker = root / ".complete"
    if marker.exists() and marker.read_text() == str(images):
        return root
    shutil.rmtree(root, ignore_errors=True)
    per_class = -(-images // classes)
    made = 0
    for label in range(classes):
        folder = root / f"class_{label:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(min(per_class, images - made)):
            hue = (label * 37 + i) % 255
            image = Image.new("RGB", (200, 150), (hue, 120 + (i % 100), 255 - hue))
            draw = ImageDraw.Draw(image)
            x = (i * 13) % 150
            draw.ellipse((x, 30 + (label % 60), x + 45, 80 + (label % 60)), fill=(20, 20, 20))
            image.save(folder / f"img_{i:05d}.jpg", quality=85)
            made += 1
    marker.write_text(str(images))
    return root


def start_xvfb() -> subprocess.Popen | None:
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        print("Xvfb is not installed; measuring offscreen", file=sys.stderr)
        return None
    number = next(n for n in range(99, 200) if not Path(f"/tmp/.X{n}-lock").exists())
    server = subprocess.Popen([xvfb, f":{number}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        if server.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    os.environ["DISPLAY"] = f":{number}"
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    return server


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "threads": threads, "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="startup launches (default 5)")
    parser.add_argument("--images", type=int, default=10_000, help="images in the generated folder")
    parser.add_argument("--data", type=Path, help="where to keep the generated folder (default: temporary)")
    parser.add_argument("--xvfb", action="store_true", help="measure on a virtual X screen instead of offscreen")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    server = start_xvfb() if args.xvfb and not os.environ.get("DISPLAY") else None
    if not os.environ.get("DISPLAY") and "QT_QPA_PLATFORM" not in os.environ:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    scratch = tempfile.TemporaryDirectory(prefix="fgdesk-bench-gui-")
    try:
        result = run_benchmarks(args, Path(scratch.name))
    finally:
        scratch.cleanup()
        if server is not None:
            server.terminate()
            server.wait(10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print_table(result)
    print(f"\nwrote {args.out}")
    return 0


def run_benchmarks(args, scratch: Path) -> dict:
    platform_name = os.environ.get("QT_QPA_PLATFORM", "default")
    # Startup, each launch with a fresh home (no settings, no recent dataset to reopen).
    startup, startup_rss = [], []
    python_only = []
    for run in range(args.runs):
        home = scratch / f"home-startup-{run}"
        started, markers, rss = launch({"FGDESK_HOME": str(home), "FGDESK_BENCH_STARTUP": "1"})
        startup.append(float(markers[SHOWN][0]) - started)
        if rss is not None:
            startup_rss.append(rss)
        before = time.time()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        python_only.append(time.time() - before)

    # A large folder: index it and fill the first screen of thumbnails, cold then warm cache.
    data_root = args.data if args.data else scratch / "images"
    generation_started = time.time()
    folder = make_folder(data_root, args.images)
    generated_s = time.time() - generation_started
    home = scratch / "home-folder"
    folder_runs = {}
    for label in ("cold_cache", "warm_cache"):
        # Same window both times: drop the saved settings (geometry), keep the thumbnail cache.
        shutil.rmtree(home / "config", ignore_errors=True)
        started, markers, rss = launch({"FGDESK_HOME": str(home), "FGDESK_BENCH_STARTUP": "1",
                                        "FGDESK_BENCH_DATASET": str(folder)})
        if THUMBNAILS not in markers or INDEXED not in markers:
            raise RuntimeError(f"the app did not report the folder ({label}): {markers}")
        shown, indexed = float(markers[SHOWN][0]), float(markers[INDEXED][0])
        thumbs_at, visible, total = float(markers[THUMBNAILS][0]), int(markers[THUMBNAILS][1]), int(markers[THUMBNAILS][2])
        folder_runs[label] = {
            "window_shown_s": round(shown - started, 3),
            "indexed_s": round(indexed - shown, 3),
            "first_screen_thumbnails_s": round(thumbs_at - indexed, 3),
            "total_from_launch_s": round(thumbs_at - started, 3),
            "visible_thumbnails": visible,
            "images": total,
            "peak_rss_mib": None if rss is None else round(rss, 1),
        }
    return {
        "benchmark": "gui",
        "commit": commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "threads": machine()["threads"],
        "qt_platform": platform_name,
        "startup": {
            "runs": args.runs,
            "window_shown_median_s": round(statistics.median(startup), 3),
            "window_shown_best_s": round(min(startup), 3),
            "window_shown_all_s": [round(s, 3) for s in startup],
            "bare_python_median_s": round(statistics.median(python_only), 3),
            "peak_rss_mib": round(max(startup_rss), 1) if startup_rss else None,
        },
        "large_folder": {"images": args.images, "generated_in_s": round(generated_s, 1), **folder_runs},
    }


def print_table(result: dict) -> None:
    startup, folder = result["startup"], result["large_folder"]
    rows = [
        ("window shown after launch (median)", f"{startup['window_shown_median_s']:.2f} s"),
        ("window shown after launch (best)", f"{startup['window_shown_best_s']:.2f} s"),
        ("bare Python start (median)", f"{startup['bare_python_median_s']:.2f} s"),
    ]
    for label in ("cold_cache", "warm_cache"):
        run = folder[label]
        name = label.replace("_", " ")
        rows += [
            (f"{folder['images']:,} images: indexed after window ({name})", f"{run['indexed_s']:.2f} s"),
            (f"{folder['images']:,} images: first screen of thumbnails after index ({name})",
             f"{run['first_screen_thumbnails_s']:.2f} s"),
            (f"{folder['images']:,} images: launch to first screen ({name})", f"{run['total_from_launch_s']:.2f} s"),
            (f"peak memory ({name})", f"{run['peak_rss_mib']} MiB"),
        ]
    width = max(len(name) for name, _ in rows)
    print()
    print(f"{'measure'.ljust(width)}  value")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    sys.exit(main())
