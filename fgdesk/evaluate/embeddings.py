"""Frozen embeddings of a list of samples, and loading a trained encoder from a run."""
from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fgdesk.config import RunConfig
from fgdesk.data.augment import eval_min_short_side, eval_normalise, eval_pixels, eval_transform
from fgdesk.data.labeling import MovedImages
from fgdesk.data.layouts import Sample
from fgdesk.data.loading import SampleDataset, make_loader
from fgdesk.fileio import atomic_write
from fgdesk.model.network import FineGrainedNet
from fgdesk.train import runs
from fgdesk.train.checkpoint import CheckpointError, checkpoint_config, load_checkpoint
from fgdesk.train.device import autocast, channels_last_pays

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    vectors: torch.Tensor  # (N, D) float32, unit norm, rows for the samples that decoded
    labels: torch.Tensor  # (N,)
    sample_indices: torch.Tensor  # (N,) positions in the sample list given
    bad: list[int]  # positions of samples that could not be decoded


def load_encoder(run_dir: Path, checkpoint: str = "last", device: torch.device | str = "cpu") -> tuple[FineGrainedNet, RunConfig, Path]:
    """The query encoder of a run, in eval mode, with its config and the checkpoint path used.

    Everything reads the final checkpoint by default, as self-supervised methods are
    evaluated. best.pt (highest kNN on the small held-out monitor split) stays available,
    but on a few thousand images that split is too small to choose by: in 3-minute cub50
    runs it picked the first epoch, 3.3 kNN points below the final model on the test split
    (docs/benchmarks.md).
    """
    run_dir = Path(run_dir)
    path = runs.best_checkpoint(run_dir) if checkpoint == "best" else runs.last_checkpoint(run_dir)
    document = load_checkpoint(path, kind="pretrain")
    config = checkpoint_config(document)
    net = FineGrainedNet(config.model.__class__(**{**config.model.__dict__, "weights": "random"}))
    prefix = "query.net."
    state = {k[len(prefix):]: v for k, v in document["model"].items() if k.startswith(prefix)}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match backbone {config.model.backbone}: {exc}") from exc
    return net.to(device).eval(), config, path


@torch.no_grad()
def compute_embeddings(
    net: FineGrainedNet,
    samples: Sequence[Sample],
    image_size: int,
    crop_bottom: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    moved: MovedImages | None = None,
) -> Embeddings:
    device = torch.device(device)
    was_training = net.training
    net.eval()
    dataset = SampleDataset(list(samples), eval_transform(image_size), crop_bottom, min_short_side=eval_min_short_side(image_size),
                            moved=moved)
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, drop_last=False, seed=0,
                         pin_memory=device.type == "cuda")
    vectors, labels, indices, bad = [], [], [], []
    done = 0
    for batch in loader:
        bad.extend(batch.bad)
        if len(batch.indices):
            vectors.append(_embed_batch(net, batch.views, device, dtype))
            labels.append(batch.labels)
            indices.append(batch.indices)
        done += len(batch.indices) + len(batch.bad)
        if on_progress:
            on_progress(done, len(dataset))
    net.train(was_training)
    return _collect(net, vectors, labels, indices, bad)


class EmbeddingCancelled(Exception):
    """`should_cancel()` turned true while images were being embedded; nothing is cached then."""


def run_embedder(net: FineGrainedNet, config: RunConfig, crop_bottom: int, device: torch.device,
                 on_progress: Callable[[str, float], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None) -> Callable[[str, float, float], Callable]:
    """`embed(stage, start, end)`: a `compute` for `cached_embeddings` that embeds with the
    run's settings, reports (stage, fraction) on [start, end] of the whole task's progress,
    and raises EmbeddingCancelled after any batch once `should_cancel()` says so."""

    def embed(stage: str, start: float, end: float) -> Callable[[Sequence[Sample]], Embeddings]:
        def progress(done: int, total: int) -> None:
            if should_cancel is not None and should_cancel():
                raise EmbeddingCancelled(f"cancelled after embedding {done} of {total} images")
            if on_progress:
                on_progress(stage, start + (end - start) * done / max(1, total))

        return lambda samples: compute_embeddings(net, samples, config.data.eval_size, crop_bottom=crop_bottom,
                                                  device=device, num_workers=config.data.num_workers,
                                                  on_progress=progress)

    return embed


@dataclass
class DecodedImages:
    """Evaluation images decoded once: resized and centre-cropped uint8 pixels (N, 3, S, S)."""

    pixels: torch.Tensor
    labels: torch.Tensor  # (N,)
    sample_indices: torch.Tensor  # (N,) positions in the sample list given
    bad: list[int]  # positions of samples that could not be decoded

    @staticmethod
    def size_in_bytes(num_images: int, image_size: int) -> int:
        return num_images * 3 * image_size * image_size


def decode_images(samples: Sequence[Sample], image_size: int, crop_bottom: int = 0, batch_size: int = 128,
                  moved: MovedImages | None = None) -> DecodedImages:
    """Decode `samples` for evaluation and keep them; `embed_decoded` then gives what
    `compute_embeddings` gives, without reading or decoding a file again."""
    dataset = SampleDataset(list(samples), eval_pixels(image_size), crop_bottom, min_short_side=eval_min_short_side(image_size),
                            moved=moved)
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, drop_last=False, seed=0)
    # Filled in place: joining a list of batches would briefly hold every image twice.
    pixels = torch.empty(len(dataset), 3, image_size, image_size, dtype=torch.uint8)
    labels = torch.empty(len(dataset), dtype=torch.long)
    indices = torch.empty(len(dataset), dtype=torch.long)
    bad: list[int] = []
    kept = 0
    for batch in loader:
        bad.extend(batch.bad)
        count = len(batch.indices)
        if count:
            pixels[kept:kept + count] = batch.views
            labels[kept:kept + count] = batch.labels
            indices[kept:kept + count] = batch.indices
            kept += count
    if kept < len(dataset):
        pixels, labels, indices = pixels[:kept].clone(), labels[:kept].clone(), indices[:kept].clone()
    return DecodedImages(pixels, labels, indices, bad)


@torch.no_grad()
def embed_decoded(
    net: FineGrainedNet,
    images: DecodedImages,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    batch_size: int = 128,
) -> Embeddings:
    device = torch.device(device)
    was_training = net.training
    net.eval()
    normalise = eval_normalise()
    vectors = [
        _embed_batch(net, normalise(images.pixels[start:start + batch_size]), device, dtype)
        for start in range(0, len(images.pixels), batch_size)
    ]
    net.train(was_training)
    return _collect(net, vectors, [images.labels], [images.sample_indices], list(images.bad))


def _embed_batch(net: FineGrainedNet, images: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    if channels_last_pays(device):
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(device, dtype):
        embedding = net.embed(images)
    return embedding.float().cpu()


def _collect(net: FineGrainedNet, vectors: list, labels: list, indices: list, bad: list[int]) -> Embeddings:
    if not vectors:
        empty = torch.zeros(0, dtype=torch.long)
        return Embeddings(torch.zeros(0, getattr(net, "embed_dim", 1)), empty, empty, bad)
    return Embeddings(torch.cat(vectors), torch.cat(labels), torch.cat(indices), bad)


_CACHE_FORMAT = 2


def _file_key(sample: Sample) -> str:
    """What identifies an image file's content cheaply: its path, size and modification time."""
    try:
        stat = os.stat(sample.path)
        return f"{sample.path}\0{stat.st_size}\0{stat.st_mtime_ns}"
    except OSError:
        return f"{sample.path}\0missing"


def cached_embeddings(
    run_dir: Path,
    checkpoint_path: Path,
    split_name: str,
    compute: Callable[[Sequence[Sample]], Embeddings],
    samples: Sequence[Sample],
) -> Embeddings:
    """Embeddings of one split for one checkpoint, kept per image file in the run folder.

    `compute(subset)` embeds the samples the cache lacks: images added, labelled (a label
    moves the file, so it sits under a new path) or changed on disk since. The others come
    from the cache, so labelling a few images and fitting the classifier again embeds only
    those few. Labels always come from `samples`, so a class added, removed or renamed since
    (which renumbers the labels) cannot attach the old numbers to the new names.
    """
    stat = Path(checkpoint_path).stat()
    weights = hashlib.sha256(f"{checkpoint_path.name}:{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()[:16]
    cache = Path(run_dir) / runs.CACHE_DIR / f"embeddings-{split_name}-{weights}.pt"
    keys = [_file_key(sample) for sample in samples]
    cached_rows: dict[str, int] = {}
    cached_bad: set[str] = set()
    cached_vectors = None
    if cache.is_file():
        try:
            raw = torch.load(cache, map_location="cpu", weights_only=True)
            if raw.get("format") == _CACHE_FORMAT:
                cached_vectors = raw["vectors"]
                cached_rows = {key: row for row, key in enumerate(raw["keys"])}
                cached_bad = set(raw["bad_keys"])
        except Exception:  # a damaged cache is only a cache
            log.warning("ignoring damaged embedding cache %s", cache)
    missing = [i for i, key in enumerate(keys) if key not in cached_rows and key not in cached_bad]
    fresh_rows: dict[int, int] = {}
    fresh_bad: set[int] = set()
    fresh_vectors = None
    if missing:
        fresh = compute([samples[i] for i in missing])
        fresh_vectors = fresh.vectors
        fresh_rows = {missing[j]: row for row, j in enumerate(fresh.sample_indices.tolist())}
        fresh_bad = {missing[j] for j in fresh.bad}

    indices, bad, old_at, old_rows, new_at, new_rows = [], [], [], [], [], []
    for i, key in enumerate(keys):
        if i in fresh_rows:
            new_at.append(len(indices))
            new_rows.append(fresh_rows[i])
            indices.append(i)
        elif i not in fresh_bad and key in cached_rows:
            old_at.append(len(indices))
            old_rows.append(cached_rows[key])
            indices.append(i)
        else:
            bad.append(i)
    some = fresh_vectors if fresh_vectors is not None and len(fresh_vectors) else cached_vectors
    if some is None:  # nothing readable and nothing cached: the network still says the width
        some = compute([]).vectors
    dim = some.shape[1]
    dtype = some.dtype if some is not None else torch.float32
    vectors = torch.empty(len(indices), dim, dtype=dtype)
    if old_rows:
        vectors[old_at] = cached_vectors[old_rows].to(dtype)
    if new_rows:
        vectors[new_at] = fresh_vectors[new_rows].to(dtype)
    labels = torch.tensor([samples[i].label for i in indices], dtype=torch.long)
    result = Embeddings(vectors, labels, torch.tensor(indices, dtype=torch.long), bad)

    kept_keys = [keys[i] for i in indices]
    bad_keys = [keys[i] for i in bad]
    # Not into a run folder deleted meanwhile: the write would make it again.
    if Path(run_dir).is_dir() and (missing or set(kept_keys) != set(cached_rows) or set(bad_keys) != cached_bad):
        # Only what the current samples use is kept, so moved and deleted files do not pile up.
        buffer = io.BytesIO()
        torch.save({"format": _CACHE_FORMAT, "keys": kept_keys, "vectors": vectors, "bad_keys": bad_keys}, buffer)
        for stale in cache.parent.glob(f"embeddings-{split_name}-*.pt") if cache.parent.is_dir() else []:
            if stale != cache:
                stale.unlink(missing_ok=True)
        atomic_write(cache, lambda handle: handle.write(buffer.getbuffer()))
    return result
