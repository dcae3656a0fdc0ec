"""SampleDataset, collate_skip_bad and make_loader: unreadable files are skipped and reported by index."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fgdesk.config import DataConfig
from fgdesk.data import detect
from fgdesk.data.augment import ContrastiveViews, eval_transform
from fgdesk.data.layouts import Sample
from fgdesk.data.loading import BadItem, Batch, SampleDataset, collate_skip_bad, make_loader, resolve_num_workers


def write_dataset_with_bad_files(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    for name in ("finch", "tit"):
        for k in range(3):
            path = root / name / f"good_{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    png = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    bad = {
        "truncated_png": (root / "finch" / "truncated.png", png[: len(png) // 2]),
        "truncated_jpeg": (root / "tit" / "truncated.jpg", jpeg[: len(jpeg) // 3]),
        "corrupt_jpeg": (root / "tit" / "corrupt.jpg", jpeg[:2] + b"\x00garbage" * 50),
        "text_named_jpg": (root / "finch" / "notes.jpg", b"shopping list\n"),
        "zero_bytes": (root / "tit" / "empty.jpg", b""),
    }
    for path, data in bad.values():
        path.write_bytes(data)
    return {key: path for key, (path, _) in bad.items()}


def test_bad_images_are_skipped_and_reported_by_path(tmp_path, caplog):
    bad = write_dataset_with_bad_files(tmp_path)
    index = detect(tmp_path)
    # Files whose header is broken are caught by detect; the rest surface while loading.
    reported = {p.path for p in index.problems}
    dataset = SampleDataset(index.samples, eval_transform(32), index.crop_bottom)
    loader = make_loader(dataset, batch_size=4, shuffle=False, num_workers=0, drop_last=False, seed=0)
    good_rows = 0
    with caplog.at_level(logging.WARNING, logger="fgdesk.data.loading"):
        for batch in loader:
            assert isinstance(batch, Batch)
            good_rows += len(batch)
            reported |= {index.samples[i].path for i in batch.bad}
            assert all(batch.bad_reasons)
    assert reported == set(bad.values())
    assert good_rows == 6
    assert "truncated.png" in caplog.text


def test_dataset_items_and_bad_items(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 30), (255, 0, 0)).save(good)
    samples = [Sample(good, 2, "train"), Sample(tmp_path / "missing.jpg", 1, "train")]
    dataset = SampleDataset(samples, transform=None, crop_bottom=5)
    image, label, position = dataset[0]
    assert image.size == (20, 25) and label == 2 and position == 0
    item = dataset[1]
    assert isinstance(item, BadItem) and not item
    assert item.index == 1 and item.reason == "file not found"


def test_dataset_follows_an_image_that_a_label_moved_after_it_was_listed(tmp_path):
    from fgdesk.data.labeling import DatasetLabeler, MovedImages

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (16, 16), (0, 0, 0)).save(tmp_path / name / f"{name}.png")
    image = tmp_path / "unlabeled" / "u.png"
    image.parent.mkdir()
    Image.new("RGB", (20, 12), (0, 200, 0)).save(image)
    samples = [Sample(image, -1, "unlabeled")]
    following = SampleDataset(samples, transform=None, moved=MovedImages(tmp_path))
    plain = SampleDataset(samples, transform=None)

    DatasetLabeler(tmp_path).assign(image, "b")
    loaded, label, _ = following[0]
    assert loaded.size == (20, 12) and loaded.getpixel((0, 0)) == (0, 200, 0)
    assert label == -1  # the label counts from the next index; this list stays as it was made
    assert isinstance(plain[0], BadItem) and plain[0].reason == "file not found"


def test_collate_stacks_each_view_and_drops_bad_items():
    views = [torch.zeros(3, 8, 8), torch.ones(3, 4, 4)]
    batch = collate_skip_bad([(views, 0, 5), None, BadItem(7, "x.jpg", "truncated image data"), (views, 1, 6)])
    assert [tuple(v.shape) for v in batch.views] == [(2, 3, 8, 8), (2, 3, 4, 4)]
    assert batch.labels.tolist() == [0, 1] and batch.labels.dtype == torch.int64
    assert batch.indices.tolist() == [5, 6] and batch.bad == [7]
    assert batch.bad_reasons == ["truncated image data"] and len(batch) == 2
    moved = batch.to("cpu")
    assert torch.equal(moved.views[1], batch.views[1]) and moved.bad == [7]


def test_collate_single_tensor_and_all_bad():
    batch = collate_skip_bad([(torch.zeros(3, 4, 4), 1, 0), (torch.ones(3, 4, 4), -1, 1)])
    assert isinstance(batch.views, torch.Tensor) and batch.views.shape == (2, 3, 4, 4)
    assert batch.labels.tolist() == [1, -1]
    empty = collate_skip_bad([BadItem(3, "a.png", "empty file (0 bytes)"), None])
    assert len(empty) == 0 and empty.views == [] and empty.bad == [3]


def test_loader_shuffles_reproducibly_and_with_contrastive_views(tmp_path):
    write_dataset_with_bad_files(tmp_path)
    index = detect(tmp_path)
    dataset = SampleDataset(index.samples, ContrastiveViews(DataConfig(image_size=32, local_crops=1, local_size=16)))

    def order(seed: int) -> list[int]:
        loader = make_loader(dataset, batch_size=3, shuffle=True, num_workers=0, drop_last=False, seed=seed)
        return [i for batch in loader for i in batch.indices.tolist() + batch.bad]

    assert order(1) == order(1) and sorted(order(1)) == list(range(len(dataset)))
    batch = next(iter(make_loader(dataset, batch_size=3, shuffle=False, num_workers=0, drop_last=True, seed=0)))
    assert [tuple(v.shape[1:]) for v in batch.views] == [(3, 32, 32), (3, 32, 32), (3, 16, 16)]


def test_worker_processes_report_bad_items_too(tmp_path):
    bad = write_dataset_with_bad_files(tmp_path)
    samples = [Sample(bad["truncated_png"], 0, "train"), Sample(next(tmp_path.glob("finch/good_*.png")), 0, "train")]
    loader = make_loader(SampleDataset(samples, eval_transform(32)), 2, False, num_workers=1, drop_last=False, seed=0)
    assert loader.persistent_workers and loader.worker_init_fn is not None
    batches = list(loader)
    assert [b.bad for b in batches] == [[0]] and batches[0].indices.tolist() == [1]


def test_auto_worker_count():
    assert 0 <= resolve_num_workers(-1) <= 4
    assert resolve_num_workers(0) == 0 and resolve_num_workers(3) == 3
