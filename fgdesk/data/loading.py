"""torch Dataset and DataLoader helpers that survive unreadable images.

A broken file must not kill a training run hours in. `SampleDataset` turns a decode
failure into a falsy `BadItem` (it keeps the dataset index, which a bare None would
lose on its way back from a worker process); `collate_skip_bad` drops those items
and lists their indices in `Batch.bad` so the trainer can report them by path.
"""
from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fgdesk.data.augment import AugmentedViews
from fgdesk.data.images import ImageDecodeError, load_rgb
from fgdesk.data.labeling import MovedImages
from fgdesk.data.layouts import Sample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BadItem:
    """Stands in for an unreadable sample; falsy, so `if item:` treats it like None."""

    index: int
    path: str
    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass
class Batch:
    # One stacked tensor per view when the transform returns a list, else one tensor;
    # an empty list when every item in the batch failed.
    views: list[torch.Tensor] | torch.Tensor
    labels: torch.Tensor  # int64, -1 for unlabeled
    indices: torch.Tensor  # int64 positions in the dataset
    bad: list[int] = field(default_factory=list)  # dataset indices that failed to load
    bad_reasons: list[str] = field(default_factory=list)  # parallel to `bad`
    # (B, num_global, 5) where each global view was cut from its image (AugmentedViews.crops).
    crops: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor on `device`; `bad` lists travel unchanged."""
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        views = [move(v) for v in self.views] if isinstance(self.views, list) else move(self.views)
        crops = move(self.crops) if self.crops is not None else None
        return Batch(views, move(self.labels), move(self.indices), self.bad, self.bad_reasons, crops)

    def pin_memory(self) -> "Batch":
        """Called by DataLoader(pin_memory=True), which cannot look inside a dataclass."""
        views = [v.pin_memory() for v in self.views] if isinstance(self.views, list) else self.views.pin_memory()
        crops = self.crops.pin_memory() if self.crops is not None else None
        return Batch(views, self.labels.pin_memory(), self.indices.pin_memory(), self.bad, self.bad_reasons, crops)


class SampleDataset(Dataset):
    """Items are (transform(image), label, index), or a falsy BadItem when the file is unreadable."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Any], Any] | None, crop_bottom: int = 0,
                 min_short_side: int = 0, moved: MovedImages | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.crop_bottom = crop_bottom
        self.min_short_side = min_short_side  # JPEGs decode at a reduced scale down to this (see load_rgb)
        self.moved = moved  # follows images that labels moved after the samples were listed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int, int] | BadItem:
        sample = self.samples[index]
        try:
            image = self._load(sample.path)
        except ImageDecodeError as exc:
            logger.warning("skipping unreadable image %s: %s", sample.path, exc.reason)
            return BadItem(index, str(sample.path), exc.reason)
        data = self.transform(image) if self.transform is not None else image
        return data, sample.label, index

    def _load(self, path: Path) -> Any:
        try:
            return load_rgb(path, crop_bottom=self.crop_bottom, min_short_side=self.min_short_side)
        except ImageDecodeError as exc:
            if self.moved is None or not isinstance(exc.__cause__, FileNotFoundError):
                raise
            moved_to = self.moved.find(path)
            if moved_to is None:
                raise
            logger.debug("%s was moved by a label to %s", path, moved_to)
            return load_rgb(moved_to, crop_bottom=self.crop_bottom, min_short_side=self.min_short_side)


def collate_skip_bad(batch: Sequence[Any]) -> Batch:
    """Stack the good items; None and BadItem entries are dropped and recorded in `bad`."""
    good = [item for item in batch if item is not None and not isinstance(item, BadItem)]
    bad_items = [item for item in batch if isinstance(item, BadItem)]
    bad = [item.index for item in bad_items]
    reasons = [item.reason for item in bad_items]
    if not good:
        empty = torch.zeros(0, dtype=torch.int64)
        return Batch([], empty, empty.clone(), bad, reasons)
    first = good[0][0]
    if isinstance(first, (list, tuple)):
        views: list[torch.Tensor] | torch.Tensor = [
            torch.stack([item[0][v] for item in good]) for v in range(len(first))
        ]
    else:
        views = torch.stack([item[0] for item in good])
    labels = torch.tensor([item[1] for item in good], dtype=torch.int64)
    indices = torch.tensor([item[2] for item in good], dtype=torch.int64)
    crops = torch.stack([item[0].crops for item in good]) if isinstance(first, AugmentedViews) else None
    return Batch(views, labels, indices, bad, reasons, crops)


def resolve_num_workers(num_workers: int) -> int:
    """-1 picks from the machine: one core stays free for the main process, at most 4 workers."""
    if num_workers >= 0:
        return num_workers
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in each worker from torch's per-worker seed (module level: picklable)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    drop_last: bool,
    seed: int,
    sampler: Sampler | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader with the bad-item collate, reproducible shuffling and seeded workers."""
    workers = resolve_num_workers(num_workers)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skip_bad,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=seed_worker if workers > 0 else None,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
    )
