"""Thumbnail loading: the newest screen first, a bounded queue, a valid disk cache, odd files."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtCore import QSize

from fgdesk.gui.thumbnails import ThumbnailCache, ThumbnailLoader, ThumbnailModel, ThumbnailView, decode_thumbnail, file_uri


@dataclass(frozen=True)
class FakeSample:
    path: Path
    label: int
    split: str
    box: tuple | None = None


def test_queue_is_bounded_and_serves_the_newest_screen_first_top_to_bottom(qtbot, tmp_path):
    loader = ThumbnailLoader(max_pending=3, cache=ThumbnailCache(tmp_path))
    loader._workers = loader._pool.maxThreadCount()  # hold the workers back so the queue only fills
    for name in ("a", "b"):  # one paint of the grid asks for its cells in reading order
        loader.request(name)
    qtbot.wait(20)  # the event loop turns: the next requests belong to a new screen
    for name in ("c", "d"):
        loader.request(name)
    assert loader.pending() == ["c", "d", "b"]  # newest screen first, in order; the oldest request dropped
    assert loader.dropped == 1
    qtbot.wait(20)
    loader.request("b")  # asked again on a later screen: it moves to the front
    assert loader.pending() == ["b", "c", "d"]
    assert loader._take().path == "b" and loader._take().path == "c"
    loader._workers = 0
    loader.clear()


def test_disk_cache_is_keyed_by_uri_and_invalidated_by_mtime(qtbot, tmp_path):
    image_path = tmp_path / "photo.png"
    Image.new("RGB", (300, 200), "blue").save(image_path)
    cache = ThumbnailCache(tmp_path / "cache")
    loader = ThumbnailLoader(cache=cache)
    first = loader.load_now(str(image_path))
    assert (first.width(), first.height()) == (128, 85)
    stored = cache.path_for(file_uri(image_path))
    assert stored.exists() and stored.parent.name == "normal"
    assert cache.load(file_uri(image_path), int(os.stat(image_path).st_mtime)) is not None
    assert cache.load(file_uri(image_path), int(os.stat(image_path).st_mtime) + 5) is None  # file changed
    Image.new("RGB", (100, 300), "red").save(image_path)
    later = time.time() + 10
    os.utime(image_path, (later, later))
    second = loader.load_now(str(image_path))
    assert (second.width(), second.height()) == (42, 128)
    assert not list(stored.parent.glob("*.tmp"))


def test_odd_image_modes_fall_back_to_the_core_decoder(tmp_path):
    deep = tmp_path / "deep.png"
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)).save(deep)
    thumb = decode_thumbnail(deep, 32)
    assert not thumb.isNull() and max(thumb.width(), thumb.height()) <= 32
    cmyk = tmp_path / "print.jpg"
    Image.new("CMYK", (80, 40), (0, 255, 255, 0)).save(cmyk)
    thumb = decode_thumbnail(cmyk, 32)
    assert (thumb.width(), thumb.height()) == (32, 16)
    red = thumb.pixelColor(16, 8)
    assert red.red() > 200 and red.green() < 60


def test_ten_thousand_images_only_visible_cells_ask_for_thumbnails(qtbot, tmp_path):
    samples = [FakeSample(tmp_path / f"missing_{i:05d}.jpg", i % 50, "train") for i in range(10_000)]
    model = ThumbnailModel()
    requested = []
    model.loader.request = lambda path, crop_bottom=0: requested.append(path)
    started = time.thread_time()  # GUI-thread CPU: a busy machine's waits do not count
    model.set_samples(samples, [f"class {i}" for i in range(50)])
    view = ThumbnailView()
    qtbot.addWidget(view)
    view.resize(QSize(900, 700))
    view.setModel(model)
    view.show()
    qtbot.waitExposed(view)
    qtbot.waitUntil(lambda: len(requested) > 0, timeout=10_000)  # the cells' first paint
    elapsed = time.thread_time() - started
    assert model.rowCount() == 10_000
    assert elapsed < 2.0
    visible = len(view.visible_rows())
    assert 0 < len(set(requested)) <= visible + 12
    started = time.thread_time()
    model.set_filter(label=7, text="missing_00")
    assert time.thread_time() - started < 0.5
    assert model.rowCount() == 20  # label 7: files 00007, 00057, ..., 00957
