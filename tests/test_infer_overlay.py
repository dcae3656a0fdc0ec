"""Colormaps and overlays: plain numpy + Pillow, predictable colours and sizes."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fgdesk.infer.overlay import COLORMAPS, colorize, render_overlay, save_heatmaps
from fgdesk.infer.predictor import Prediction


def test_every_colormap_is_a_256_entry_rgb_lookup_table():
    assert set(COLORMAPS) >= {"inferno", "viridis", "magma", "jet", "gray"}
    for table in COLORMAPS.values():
        assert table.shape == (256, 3) and table.dtype == np.uint8
        assert np.abs(np.diff(table.astype(int), axis=0)).max() <= 8  # smooth, no jumps


def test_colormaps_run_from_their_known_ends():
    assert tuple(COLORMAPS["gray"][0]) == (0, 0, 0) and tuple(COLORMAPS["gray"][255]) == (255, 255, 255)
    assert tuple(COLORMAPS["viridis"][0]) == (68, 1, 84) and tuple(COLORMAPS["viridis"][255]) == (253, 231, 37)
    assert tuple(COLORMAPS["inferno"][0]) == (0, 0, 4) and tuple(COLORMAPS["inferno"][255]) == (252, 255, 164)
    assert tuple(COLORMAPS["viridis"][128]) == (33, 145, 140)  # the familiar teal midpoint
    jet = COLORMAPS["jet"]
    assert jet[0][2] > jet[0][0] and jet[255][0] > jet[255][2]  # blue low, red high
    inferno = COLORMAPS["inferno"].astype(int).sum(axis=1)
    assert inferno[255] > inferno[128] > inferno[0]  # brightness rises with the value


def test_colorize_clips_and_treats_nan_as_zero():
    colours = colorize(np.array([[-1.0, np.nan], [0.5, 2.0]]), "gray")
    assert colours.shape == (2, 2, 3)
    assert colours[0, 0, 0] == colours[0, 1, 0] == 0 and colours[1, 1, 0] == 255 and colours[1, 0, 0] == 128
    with pytest.raises(ValueError, match="unknown colormap"):
        colorize(np.zeros((2, 2)), "rainbow")


def test_overlay_keeps_the_image_size_and_blends_by_alpha():
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    heatmap = np.zeros((15, 20), dtype=np.float32)  # coarser than the image: resized up
    heatmap[:, 10:] = 1.0
    untouched = render_overlay(image, heatmap, "gray", alpha=0.0)
    assert untouched.size == (40, 30) and np.array_equal(np.asarray(untouched), np.asarray(image))
    pure = np.asarray(render_overlay(image, heatmap, "gray", alpha=1.0))
    assert tuple(pure[15, 2]) == (0, 0, 0) and tuple(pure[15, 37]) == (255, 255, 255)
    half = np.asarray(render_overlay(image, heatmap, "gray", alpha=0.5))
    assert tuple(half[15, 37]) == (228, 132, 132)  # (200 + 255) / 2, (10 + 255) / 2
    with pytest.raises(ValueError):
        render_overlay(image, heatmap, alpha=1.5)


def test_outside_the_part_the_network_saw_the_image_is_dimmed_not_coloured():
    image = Image.new("RGB", (40, 30), (200, 100, 50))
    heatmap = np.zeros((30, 40), dtype=np.float32)
    heatmap[5:25, 10:30] = 1.0
    pixels = np.asarray(render_overlay(image, heatmap, "gray", alpha=0.5, frame=(10, 5, 30, 25)))
    assert tuple(pixels[15, 20]) == (228, 178, 152)  # inside: blended with the map's colour
    assert tuple(pixels[2, 2]) == tuple(pixels[15, 35]) == (80, 40, 20)  # outside: the image at 40%
    # A map that is cold inside the frame still reads apart from the dimmed outside.
    cold = np.asarray(render_overlay(image, np.zeros((30, 40), np.float32), "gray", alpha=0.5, frame=(10, 5, 30, 25)))
    assert tuple(cold[15, 20]) == (100, 50, 25) and tuple(cold[2, 2]) == (80, 40, 20)


def test_save_heatmaps_writes_one_png_per_map(tmp_path):
    image = Image.new("RGB", (24, 16), (90, 90, 90))
    maps = {"stage3": np.random.default_rng(0).random((16, 24), dtype=np.float32), "fused": np.zeros((16, 24), np.float32)}
    prediction = Prediction("data/test/class_a/img 1.png", image, [], [], maps, {})
    written = save_heatmaps(prediction, tmp_path / "out")
    assert sorted(p.name for p in written) == ["class_a_img_1-fused.png", "class_a_img_1-stage3.png"]
    assert all(Image.open(p).size == (24, 16) for p in written)
    framed = Prediction("data/test/class_a/img 2.png", image, [], [], {"fused": np.ones((16, 24), np.float32)}, {},
                        frame=(4, 0, 20, 16))
    (path,) = save_heatmaps(framed, tmp_path / "framed", colormap="gray", alpha=1.0)
    saved = np.asarray(Image.open(path))
    assert tuple(saved[8, 10]) == (255, 255, 255) and tuple(saved[8, 1]) == (36, 36, 36)  # white map; 90 at 40%
    failed = Prediction("broken.png", None, [], [], {}, {}, error="not an image")
    assert save_heatmaps(failed, tmp_path / "out") == []


def test_overlay_module_imports_no_plotting_or_gui_library():
    code = "import sys, fgdesk.infer.overlay; print(sorted(m for m in ('matplotlib', 'pyqtgraph', 'PySide6', 'torch') if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
