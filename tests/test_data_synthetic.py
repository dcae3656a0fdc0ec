"""The demo set: deterministic, fine-grained (classes differ only inside a known box), detected as folders."""
from __future__ import annotations

import csv
import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fgdesk.data import detect, make_demo_dataset
from fgdesk.data.synthetic import PATTERNS, draw_demo_image


def digest_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory) -> tuple[Path, float]:
    root = tmp_path_factory.mktemp("demo") / "fgdesk-demo"
    started = time.thread_time()  # CPU of this thread (drawing is single-threaded), not the machine's load
    make_demo_dataset(root)
    return root, time.thread_time() - started


def test_default_demo_is_quick_and_detected_as_eight_folder_classes_with_boxes(default_demo):
    root, seconds = default_demo
    assert seconds < 8.0  # about 2 s of CPU
    index = detect(root)
    assert index.layout == "folders" and index.problems == []
    assert len(index.classes) == 8 and index.classes[0] == "class_0_circle"
    assert {name.split("_", 2)[2] for name in index.classes} == set(list(PATTERNS)[:8])
    assert len(index.samples) == 480
    assert len(index.split("train")) == 360 and len(index.split("test")) == 120
    assert all(s.box is not None for s in index.samples)
    assert index.summary().width == (112, 112.0, 112)
    assert "fine-grained" in (root / "README.txt").read_text()


def test_boxes_are_inside_the_image_and_about_a_sixth_of_its_side(default_demo):
    root, _ = default_demo
    with open(root / "boxes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 480
    for row in rows:
        x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= 112 and 0 <= y0 < y1 <= 112
        assert 0.1 * 112 <= max(x1 - x0, y1 - y0) <= 0.21 * 112
    positions = {(int(r["x0"]) // 8, int(r["y0"]) // 8) for r in rows}
    assert len(positions) > 20  # the detail moves around


def test_marking_is_dark_and_high_contrast_inside_its_box(default_demo):
    root, _ = default_demo
    with open(root / "boxes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[::7]
    for row in rows:
        grey = np.asarray(Image.open(root / row["path"]).convert("L"), dtype=np.int16)
        x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
        inside = grey[y0:y1, x0:x1]
        around = np.concatenate(
            [grey[max(0, y0 - 3) : y0, x0:x1].ravel(), grey[y1 : y1 + 3, x0:x1].ravel(),
             grey[y0:y1, max(0, x0 - 3) : x0].ravel(), grey[y0:y1, x1 : x1 + 3].ravel()]
        )
        assert np.percentile(inside, 10) < 60
        assert np.median(around) - np.percentile(inside, 10) > 40


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    first = make_demo_dataset(tmp_path / "a", num_classes=3, per_class=4, size=64, seed=5)
    second = make_demo_dataset(tmp_path / "b", num_classes=3, per_class=4, size=64, seed=5)
    third = make_demo_dataset(tmp_path / "c", num_classes=3, per_class=4, size=64, seed=6)
    assert digest_tree(first) == digest_tree(second)
    assert len(digest_tree(first)) == 3 * 4 + 2
    different = {k for k, v in digest_tree(third).items() if digest_tree(first).get(k) != v}
    assert len(different) >= 12


def test_classes_differ_only_inside_the_box(tmp_path):
    # Same random draws, different class pattern: only the marking's pixels may change.
    for seed in range(4):
        renders = [draw_demo_image(np.random.default_rng([seed, 99]), PATTERNS[name], 112) for name in PATTERNS]
        base_pixels, base_box = np.asarray(renders[0][0]), renders[0][1]
        for pixels_image, box in renders[1:]:
            pixels = np.asarray(pixels_image)
            outside = np.ones(pixels.shape[:2], bool)
            for x0, y0, x1, y1 in (base_box, box):
                outside[y0:y1, x0:x1] = False
            assert np.array_equal(pixels[outside], base_pixels[outside])
            x0, y0, x1, y1 = box
            changed = np.abs(pixels[y0:y1, x0:x1].astype(int) - base_pixels[y0:y1, x0:x1]).sum(axis=2) > 60
            assert changed.mean() > 0.1


def test_pattern_shapes_are_pairwise_distinct():
    masks = {}
    for name, draw_pattern in PATTERNS.items():
        mask = Image.new("L", (20, 20), 0)
        draw_pattern(ImageDraw.Draw(mask), 2, 2, 16)
        masks[name] = np.asarray(mask) > 0
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            union = (masks[a] | masks[b]).sum()
            iou = (masks[a] & masks[b]).sum() / union
            assert iou < 0.85, (a, b, iou)
    # Horizontal and vertical stripes must stay apart under the horizontal flips of training.
    assert not np.array_equal(masks["hstripes"][:, ::-1], masks["vstripes"])


def test_invalid_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="num_classes"):
        make_demo_dataset(tmp_path, num_classes=len(PATTERNS) + 1)
    with pytest.raises(ValueError, match="per_class"):
        make_demo_dataset(tmp_path, per_class=1)
