#!/usr/bin/env python3
"""Screenshots of each view for the README, from a real (short) training run on the demo set.

    python scripts/screenshots.py [--out docs/screenshots] [--epochs 6]

Writes browser.png, training_running.png, training_done.png, inspect.png, versus.png, confusions.png,
labelling.png, check_labels.png, copies.png and compare.png. With no DISPLAY it starts Xvfb when it is
installed (the
Qt xcb plug-in needs a few Debian packages; the script says which are missing), and falls
back to Qt's offscreen platform otherwise. Everything it creates (demo set, run, thumbnails) lives in a temporary
FGDESK_HOME unless --home is given, so your own runs are not touched.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Debian packages that Qt's xcb platform plug-in needs beyond what the wheels carry,
# with a shared library from each to look for.
XCB_PACKAGES = {
    "libxcb-cursor0": "libxcb-cursor.so.0",
    "libxcb-icccm4": "libxcb-icccm.so.4",
    "libxcb-keysyms1": "libxcb-keysyms.so.1",
    "libxcb-image0": "libxcb-image.so.0",
    "libxcb-render-util0": "libxcb-render-util.so.0",
    "libxcb-xkb1": "libxcb-xkb.so.1",
    "libxkbcommon-x11-0": "libxkbcommon-x11.so.0",
    "libxcb-shape0": "libxcb-shape.so.0",
}
WINDOW_SIZE = (1280, 800)


def missing_xcb_packages() -> list[str]:
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return []  # cannot tell; let Qt try
    return [package for package, library in XCB_PACKAGES.items() if library not in listing]


def start_display() -> subprocess.Popen | None:
    """Use the current display, else start Xvfb, else fall back to offscreen rendering."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    xvfb = shutil.which("Xvfb")
    missing = missing_xcb_packages() if sys.platform.startswith("linux") else []
    if xvfb is None or missing:
        needed = (["xvfb"] if xvfb is None else []) + missing
        print("No display: rendering offscreen. For a real X window on a virtual screen install:\n"
              f"    sudo apt-get install {' '.join(needed)}", file=sys.stderr)
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        return None
    number = next(n for n in range(99, 200) if not Path(f"/tmp/.X{n}-lock").exists())
    width, height = WINDOW_SIZE
    server = subprocess.Popen(
        [xvfb, f":{number}", "-screen", "0", f"{width + 160}x{height + 160}x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    socket = Path(f"/tmp/.X11-unix/X{number}")
    deadline = time.monotonic() + 15
    while not socket.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            print("Xvfb did not start; rendering offscreen instead.", file=sys.stderr)
            os.environ["QT_QPA_PLATFORM"] = "offscreen"
            return None
        time.sleep(0.05)
    os.environ["DISPLAY"] = f":{number}"
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the real demo run (default 6)")
    parser.add_argument("--home", type=Path, help="FGDESK_HOME to use (default: a temporary folder)")
    args = parser.parse_args()

    temporary = None
    if args.home is None:
        temporary = tempfile.TemporaryDirectory(prefix="fgdesk-screenshots-")
        args.home = Path(temporary.name)
    os.environ["FGDESK_HOME"] = str(args.home)
    server = start_display()
    try:
        return take_screenshots(args.out, args.epochs)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        if temporary is not None:
            temporary.cleanup()


def take_screenshots(out: Path, epochs: int) -> int:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from fgdesk.gui.app import load_app_icon
    from fgdesk.gui.main_window import MainWindow
    from fgdesk.gui.style import apply_theme

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("fgdesk")
    apply_theme(app)
    icon = load_app_icon()
    app.setWindowIcon(icon)
    window = MainWindow(app_icon=icon)
    window.confirm_stop_training = lambda: True
    window.resize(*WINDOW_SIZE)
    window.show()
    out.mkdir(parents=True, exist_ok=True)
    print(f"platform: {app.platformName()}, FGDESK_HOME: {os.environ['FGDESK_HOME']}")

    def pump(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    def wait(condition, what: str, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            pump(50)

    def save(name: str) -> None:
        pump(300)
        path = out / f"{name}.png"
        if not window.grab().save(str(path)):
            raise OSError(f"could not write {path}")
        print(f"wrote {path}")

    # 1. The dataset browser on the demo set, with a preview.
    dataset = window.dataset_view
    dataset.open_demo()
    wait(lambda: dataset.index is not None and not dataset.is_loading(), "the demo set")
    model, grid = dataset.thumbnail_model, dataset.thumbnail_view
    wait(lambda: all(model.has_thumbnail(row) for row in grid.visible_rows()), "thumbnails")
    grid.setCurrentIndex(model.index(7, 0))
    wait(lambda: dataset.preview_canvas.pixmap() is not None, "the preview")
    save("browser")

    # 2. A real short run, caught half-way, then finished with the linear classifier.
    training = window.training_view
    window.show_page("train")
    wait(training.can_start, "default settings")
    training.config_hook = lambda config: config.with_overrides({
        "schedule.epochs": epochs, "schedule.time_budget_min": 0.0, "data.image_size": 64, "data.eval_size": 64,
        "data.local_size": 32, "schedule.batch_size": 32, "contrastive.queue_size": 256,
    })
    training.start_training()
    wait(lambda: training._latest_step is not None and training._latest_step.epoch >= epochs // 2
         and len(training.curves.knn) >= 1, "the run to get going")
    save("training_running")
    wait(lambda: training.last_result is not None and not training.is_training(), "the run to finish")
    run_dir = training.last_result.run_dir
    wait(lambda: training.select_run(run_dir), "the run in the list", 30)
    training.train_classifier()
    wait(lambda: not training.classifier_running(), "the classifier")
    save("training_done")

    # Images still to label, as a lab would add them after the run: unlabeled/ beside the classes.
    import numpy as np

    from fgdesk.data.synthetic import PATTERNS, draw_demo_image

    pool = Path(dataset.index.root) / "unlabeled"
    pool.mkdir(exist_ok=True)
    patterns = list(PATTERNS)[:len(dataset.index.classes)]
    for j in range(40):
        image, _box = draw_demo_image(np.random.default_rng([7, 1 << 21, j]), PATTERNS[patterns[j % len(patterns)]], 112)
        image.save(pool / f"field_{j:03d}.png")

    # 3. Inspection of a few test images with their heatmaps.
    inspect = window.inspect_view
    window.open_run_in_inspect(run_dir)
    wait(lambda: inspect.current_run() == run_dir, "the run in Inspect", 30)
    test_root = Path(dataset.index.root) / "test"
    samples = [sorted(folder.glob("*.png"))[0] for folder in sorted(test_root.iterdir()) if folder.is_dir()][:4]
    inspect.add_paths(samples)
    wait(lambda: len(inspect.results()) == len(samples), "predictions")
    inspect.image_list.setCurrentRow(1)
    save("inspect")
    # 3b. Versus: where the image favours its top class over the runner-up.
    inspect.set_layer_visible("contrast", True)
    save("versus")

    # 3c. The most confused pair of the confusion matrix, opened from the Train page: each test
    # image with where it looks like the class it was taken for rather than its own.
    confused = training.classifier_report.most_confused(1)
    if confused:
        names = training.classifier_report.class_names
        inspect.clear_images()
        window.show_page("train")
        training.open_confusion_cell(names.index(confused[0].true_class), names.index(confused[0].predicted))
        wait(lambda: len(inspect.results()) == confused[0].count, "predictions of the confused images")
        inspect.image_list.setCurrentRow(0)
        save("confusions")
    inspect.set_layer_visible("contrast", False)

    # 4. What to label next, labelled in place: the prediction fills the class box.
    inspect.clear_images()
    inspect.suggest_images_to_label(count=8)
    wait(lambda: inspect._suggest_task is None and len(inspect.results()) == 8, "suggestions")
    inspect.image_list.setCurrentRow(0)
    wait(lambda: inspect.label_panel.isVisible(), "the label panel", 30)
    inspect.label_as_rank(1)
    wait(lambda: inspect._label_task is None, "the label", 30)
    save("labelling")

    # 4b. Labels that look wrong: two images filed under another class, then Check labels.
    import shutil

    train_root = Path(dataset.index.root) / "train"
    classes = sorted(folder for folder in train_root.iterdir() if folder.is_dir() and folder.name != "unlabeled")
    for k, (source, target) in enumerate(((classes[0], classes[1]), (classes[2], classes[3]))):
        image = sorted(source.glob("*.png"))[k]
        shutil.move(image, target / f"misfiled_{k}.png")
    inspect.clear_images()
    inspect.check_labels(count=12)
    wait(lambda: inspect._check_task is None, "the label check")
    if inspect.last_label_check is None:
        raise RuntimeError("the label check failed; see the log above")
    wait(lambda: len(inspect.results()) == len(inspect.last_label_check.issues), "predictions of the doubted images")
    inspect.image_list.setCurrentRow(0)
    wait(lambda: inspect.label_panel.isVisible(), "the correction panel", 30)
    save("check_labels")

    # 4c. Copies: a test image that is a training image mirrored and re-saved, then Find copies.
    from PIL import Image, ImageOps

    original = sorted(classes[4].glob("*.png"))[0]
    copy = test_root / classes[4].name / "from_the_field.jpg"
    with Image.open(original) as opened:
        ImageOps.mirror(opened.convert("RGB")).save(copy, quality=85)
    inspect.clear_images()
    inspect.find_copies()
    wait(lambda: inspect._copies_task is None, "the copy check")
    if inspect.last_duplicate_check is None or not inspect.last_duplicate_check.pairs:
        raise RuntimeError("the copy check found nothing; see the log above")
    rows = inspect.last_duplicate_check.images_to_look_at()
    wait(lambda: len(inspect.results()) == len(rows), "predictions of the copies")
    inspect.image_list.setCurrentRow(0)
    wait(lambda: inspect.label_panel.isVisible(), "the set-aside panel", 30)
    save("copies")

    # 5. A second run with the attention module off, compared with the first.
    window.show_page("train")
    base_hook = training.config_hook
    training.config_hook = lambda config: base_hook(config).with_overrides({"model.attention": "none"})
    training.start_training()
    wait(lambda: training.last_result is not None and training.last_result.run_dir != run_dir
         and not training.is_training(), "the second run to finish")
    second = training.last_result.run_dir
    wait(lambda: training.select_run(second), "the second run in the list", 30)
    training.train_classifier()
    wait(lambda: not training.classifier_running(), "the second classifier")
    wait(lambda: all(any(str(r.path) == folder for r in training.runs()) for folder in (run_dir, second)),
         "both runs in the list", 30)
    training.runs_table.selectAll()
    training.compare_selected()
    dialog = training.compare_dialog
    wait(lambda: dialog.comparison is not None, "the comparison", 60)
    pump(300)
    path = out / "compare.png"
    if not dialog.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    print(f"wrote {path}")
    dialog.close()

    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
