"""Predict with a trained run: top-k classes, nearest labelled images and heatmaps.

One forward pass per image gives the embedding (-> class probabilities and
neighbours), the attention map of every stage, the fused attention map and the class
evidence map of the top class (which reuses that pass's features). The network sees
what the classifier was fitted and scored on: the eval transform's resize and centre
crop (see `fgdesk.evaluate.heatmaps`), so a prediction is the one the test score
counts. The maps cover that crop; `Prediction.frame` says where it lies in the image,
and outside it the maps are zero (the overlays dim that part rather than colour it).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fgdesk.config import RunConfig
from fgdesk.data.augment import eval_min_short_side
from fgdesk.data.images import ImageDecodeError, load_rgb, to_rgb
from fgdesk.data.layouts import DatasetIndex
from fgdesk.evaluate.embeddings import cached_embeddings, compute_embeddings, load_encoder
from fgdesk.evaluate.heatmaps import (
    ClassVectorChooser,
    bucketed,
    crop_box,
    forward_with_maps,
    fused_attention,
    fused_evidence,
    fuse_upsampled,
    network_input,
    upsample,
)
from fgdesk.evaluate.knn import class_prototypes, knn_scores
from fgdesk.evaluate.localization import is_constant
from fgdesk.evaluate.report import (
    CLASSIFIER_KIND,
    EvaluationError,
    KNN_K,
    KNN_TEMPERATURE,
    checkpoint_fingerprint,
    fit_classifier,
    open_dataset,
    training_samples,
)
from fgdesk.fileio import atomic_write
from fgdesk.model.network import FineGrainedNet
from fgdesk.train import runs
from fgdesk.train.checkpoint import CheckpointError, load_checkpoint
from fgdesk.train.device import channels_last_pays, select_device

log = logging.getLogger(__name__)

NORMALIZE_MODES = ("per_map", "shared")
NUM_NEIGHBOURS = 5
CSV_CHUNK = 128  # images decoded ahead; bounds memory and the delay before a cancel is seen
CSV_BATCH = 32
CONSTANT_NOTE = "constant map: nothing to show"
ZERO_NOTE = "all-zero map: nothing to show"

ImageSource = str | os.PathLike[str] | Image.Image
ProgressFn = Callable[[str, float], None]


@dataclass
class Prediction:
    source: str
    image: Image.Image | None  # RGB as decoded (EXIF orientation applied); None on error
    topk: list[tuple[str, float]]  # (class name, probability), best first
    neighbours: list[tuple[str, str, float]]  # (path, class name or "", cosine similarity)
    maps: dict[str, np.ndarray]  # float32 H x W in [0, 1] at the image's resolution
    map_notes: dict[str, str]  # map key -> why it shows nothing (constant, all zero)
    error: str | None = None  # the image was skipped: why
    raw_maps: dict[str, np.ndarray] = field(default_factory=dict)  # unnormalised, network grid
    evidence_class: str | None = None  # the class the evidence map explains
    contrast_class: str | None = None  # what the contrast map sets the favoured class against (the runner-up unless asked)
    contrast_favoured: str | None = None  # the class the contrast map favours (the top class unless asked)
    frame: tuple[int, int, int, int] | None = None  # (left, top, right, bottom): the part of the image the network saw


@dataclass
class NeighbourBank:
    vectors: torch.Tensor  # (N, D) unit-norm train embeddings
    labels: torch.Tensor  # (N,) -1 when unlabeled
    paths: list[str]


def _error_prediction(source: str, reason: str) -> Prediction:
    return Prediction(source=source, image=None, topk=[], neighbours=[], maps={}, map_notes={}, error=reason)


class Predictor:
    """A run's encoder, classifier (or kNN fallback) and neighbour bank, ready to predict."""

    def __init__(
        self,
        net: FineGrainedNet,
        config: RunConfig,
        device: torch.device,
        class_names: list[str],
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        bank: NeighbourBank | None = None,
        dataset_root: Path | None = None,
        crop_bottom: int = 0,
        run_dir: Path | None = None,
    ) -> None:
        self.net = net.eval()
        self.config = config
        self.device = device
        # NHWC weights and inputs: the same fp32 results, about 15% sooner on a CPU.
        self._channels_last = channels_last_pays(device)
        if self._channels_last:
            self.net.to(memory_format=torch.channels_last)
        self._class_names = list(class_names)
        self.weight = weight.float().to(device) if weight is not None else None
        self.bias = bias.float().to(device) if bias is not None else None
        self.bank = bank
        self.dataset_root = dataset_root
        self.crop_bottom = crop_bottom
        self.run_dir = run_dir
        self.eval_size = config.data.eval_size
        self._bank_device = bank.vectors.to(device) if bank is not None and len(bank.vectors) else None
        self._prototypes = self._class_prototypes() if self.mode == "knn" else None
        self._knn_bank = None
        if self.mode == "knn" and bank is not None:
            keep = bank.labels >= 0
            self._knn_bank = (bank.vectors[keep].float(), bank.labels[keep])

    # -- construction -------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: str | os.PathLike[str], device: str = "auto", on_progress: ProgressFn | None = None) -> "Predictor":
        """Load a run's final checkpoint, its classifier (fitted now when missing or stale and the
        dataset is labelled) and the embeddings of its training images for neighbours."""
        run_dir = Path(run_dir)
        torch_device = select_device(device)
        net, config, checkpoint_path = load_encoder(run_dir, device=torch_device)
        index: DatasetIndex | None
        try:
            index = open_dataset(run_dir, config)
        except EvaluationError as exc:
            log.warning("%s; predictions will have no neighbours", exc)
            index = None
        labelled = index is not None and index.labelled()

        classifier, stale = _load_classifier(run_dir, checkpoint_path, net.embed_dim)
        if classifier is not None and labelled and classifier[0] != list(index.classes):  # type: ignore[union-attr]
            stale = True  # the dataset's classes changed since the classifier was fitted
        if (classifier is None or stale) and labelled:
            try:
                fit_classifier(run_dir, on_progress=on_progress, device=device)
                classifier, stale = _load_classifier(run_dir, checkpoint_path, net.embed_dim)
            except (EvaluationError, ValueError, CheckpointError) as exc:
                fallback = "the older classifier" if classifier is not None else "kNN over the training images"
                log.warning("could not fit a classifier for %s (%s); using %s", run_dir, exc, fallback)
        if classifier is not None and stale:
            log.warning("the classifier of %s was fitted on an older checkpoint; refit it for current scores", run_dir)

        bank = None
        if index is not None:
            samples = training_samples(index)

            def compute(missing):
                return compute_embeddings(
                    net, missing, config.data.eval_size, crop_bottom=index.crop_bottom, device=torch_device,
                    num_workers=config.data.num_workers,
                    on_progress=(lambda done, total: on_progress("embedding training images", done / max(1, total)))
                    if on_progress else None,
                )

            embeddings = cached_embeddings(run_dir, checkpoint_path, "train", compute, samples)
            bank = NeighbourBank(
                vectors=F.normalize(embeddings.vectors.float(), dim=1),
                labels=embeddings.labels.long(),
                paths=[str(samples[int(i)].path) for i in embeddings.sample_indices],
            )
        if classifier is not None:
            class_names, weight, bias = classifier
        else:
            class_names, weight, bias = (list(index.classes) if labelled and index is not None else []), None, None
        if on_progress:
            on_progress("ready", 1.0)
        return cls(
            net, config, torch_device, class_names, weight, bias, bank,
            dataset_root=index.root if index is not None else None,
            crop_bottom=index.crop_bottom if index is not None else 0,
            run_dir=run_dir,
        )

    # -- properties -----------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    @property
    def mode(self) -> str:
        """'classifier', 'knn' (no classifier, labelled neighbours) or 'none' (no labels at all)."""
        if self.weight is not None:
            return "classifier"
        if self.bank is not None and self._class_names and bool((self.bank.labels >= 0).any()):
            return "knn"
        return "none"

    def _class_prototypes(self) -> torch.Tensor | None:
        """The kNN mode's class vectors (`class_prototypes` of the labelled bank)."""
        if self.bank is None or self._bank_device is None:
            return None
        return class_prototypes(self._bank_device, self.bank.labels, len(self._class_names))

    # -- scoring ----------------------------------------------------------------------
    def _probabilities(self, embedding: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor | None:
        if logits is not None:
            return logits.softmax(dim=1)
        if self._knn_bank is None:
            return None
        vectors, labels = self._knn_bank
        votes = knn_scores(vectors, labels, embedding.cpu(), len(self._class_names), KNN_K, KNN_TEMPERATURE)
        return (votes / votes.sum(dim=1, keepdim=True).clamp_min(1e-12)).to(embedding.device)

    def _choose_evidence(self, embedding: torch.Tensor, logits: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Class vectors for the evidence map when there is no classifier."""
        probabilities = self._probabilities(embedding, logits)
        if probabilities is not None and self._prototypes is not None:
            classes = probabilities.argmax(dim=1)
            return self._prototypes[classes], classes
        # No labels: show where the similarity to the nearest training image comes from.
        if self._bank_device is not None:
            nearest = (F.normalize(embedding, dim=1) @ self._bank_device.t()).argmax(dim=1)
            return self._bank_device[nearest], torch.full_like(nearest, -1)
        return torch.zeros_like(embedding), torch.full((len(embedding),), -1, dtype=torch.long, device=embedding.device)

    def _ranking_scores(self, embedding: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor | None:
        """The class probabilities, with the kNN's ties broken: it gives most classes no vote at
        all, and among those the nearest class prototype ranks first, not whichever index a
        tie leaves first (so the top 5 and the Versus runner-up agree)."""
        scores = self._probabilities(embedding, logits)
        if scores is not None and self.weight is None and self._prototypes is not None:
            prototypes = F.normalize(self._prototypes.to(embedding.device), dim=1)
            scores = scores + 1e-6 * (F.normalize(embedding.float(), dim=1) @ prototypes.t())
        return scores

    def _contrast_choosers(self, favour: str | None = None, against: str | None = None
                           ) -> tuple[ClassVectorChooser | None, ClassVectorChooser | None]:
        """(favoured, runner-up) choosers of the contrast map: it favours `favour` (default: the
        top class) over `against` (default, or when it is the favoured class: the best-ranked
        other class); classifier rows, or class prototypes for a kNN."""
        vectors = self.weight if self.weight is not None else self._prototypes
        if vectors is None or len(self._class_names) < 2:
            return None, None
        wanted = {name: self._class_names.index(name) for name in (favour, against) if name is not None}

        ranking = self._ranking_scores

        def first_class(embedding: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
            if favour is not None:
                return torch.full((len(embedding),), wanted[favour], dtype=torch.long, device=embedding.device)
            return ranking(embedding, logits).argmax(dim=1)

        def favoured(embedding: torch.Tensor, logits: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            first = first_class(embedding, logits)
            return vectors[first.to(vectors.device)], first

        def runner_up(embedding: torch.Tensor, logits: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            first = first_class(embedding, logits)
            scores = ranking(embedding, logits).scatter(1, first.view(-1, 1), float("-inf"))
            second = scores.argmax(dim=1)
            if against is not None:
                second = torch.where(first == wanted[against], second, torch.full_like(second, wanted[against]))
            return vectors[second.to(vectors.device)], second

        return (favoured if favour is not None else None), runner_up

    def _neighbours(self, embedding: torch.Tensor, count: int = NUM_NEIGHBOURS) -> list[tuple[str, str, float]]:
        if self._bank_device is None or self.bank is None:
            return []
        similarity = F.normalize(embedding, dim=1) @ self._bank_device.t()
        values, indices = similarity[0].topk(min(count, similarity.shape[1]))
        result = []
        for value, index in zip(values.tolist(), indices.tolist()):
            label = int(self.bank.labels[index])
            name = self._class_names[label] if 0 <= label < len(self._class_names) else ""
            result.append((self.bank.paths[index], name, float(value)))
        return result

    # -- decoding ---------------------------------------------------------------------
    def _decode(self, source: ImageSource, min_short_side: int = 0) -> tuple[str, Image.Image]:
        """(source label, RGB image); raises ImageDecodeError. `min_short_side`: see load_rgb."""
        if isinstance(source, Image.Image):
            label = str(getattr(source, "filename", "") or "<image>")
            try:
                return label, to_rgb(source)
            except Exception as exc:
                raise ImageDecodeError(label, f"cannot convert the image to RGB ({exc})") from exc
        path = Path(source)
        # Dataset images keep the dataset's own cleaning (FGVC-Aircraft's banner).
        crop = self.crop_bottom if self.crop_bottom and self.dataset_root and _is_inside(path, self.dataset_root) else 0
        return str(path), load_rgb(path, crop_bottom=crop, min_short_side=min_short_side)

    def _on_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device)
        return images.contiguous(memory_format=torch.channels_last) if self._channels_last else images

    # -- prediction -------------------------------------------------------------------
    def predict(self, images: Sequence[ImageSource], topk: int = 5, normalize: str = "per_map",
                against: str | None = None, favour: str | None = None) -> list[Prediction]:
        """One Prediction per input, in order; unreadable inputs come back with `.error` set.
        The contrast map favours `favour` (default: the top class) over `against` (default: the
        runner-up)."""
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {normalize!r}")
        for name in (against, favour):
            if name is not None and name not in self._class_names:
                raise ValueError(f"{name!r} is not one of the run's classes")
        predictions = []
        for source in images:
            try:
                label, image = self._decode(source)
            except ImageDecodeError as exc:
                predictions.append(_error_prediction(str(exc.path), exc.reason))
                continue
            try:
                predictions.append(self._predict_one(label, image, topk, normalize, against, favour))
            except Exception as exc:  # one bad image must not lose the others' results
                log.exception("prediction failed for %s", label)
                predictions.append(_error_prediction(label, f"prediction failed ({type(exc).__name__}: {exc})"))
        return predictions

    @torch.no_grad()
    def _predict_one(self, source: str, image: Image.Image, topk: int, normalize: str,
                     against: str | None = None, favour: str | None = None) -> Prediction:
        batch = self._on_device(network_input(image, self.eval_size).unsqueeze(0))
        frame = pixel_frame(image.width, image.height, self.eval_size)
        choose = None if self.weight is not None else self._choose_evidence
        favoured, runner_up = self._contrast_choosers(favour, against)
        result = forward_with_maps(self.net, batch, self.weight, self.bias, choose, runner_up, favoured)
        probabilities = self._probabilities(result.embedding, result.logits)
        ranked: list[tuple[str, float]] = []
        if probabilities is not None:
            order = self._ranking_scores(result.embedding, result.logits)[0].topk(min(topk, probabilities.shape[1])).indices
            ranked = [(self._class_names[i], float(probabilities[0, i])) for i in order.tolist()]
        evidence_class = None
        if result.evidence_class is not None:
            index = int(result.evidence_class[0])
            evidence_class = self._class_names[index] if 0 <= index < len(self._class_names) else "nearest training image"
        contrast_class = contrast_favoured = None
        if result.contrast_class is not None:
            contrast_class = self._class_names[int(result.contrast_class[0])]
            contrast_favoured = self._class_names[int(result.contrast_favoured[0])]
        left, top, right, bottom = frame
        maps, notes, raw = self._maps(result, (bottom - top, right - left), normalize, evidence_class,
                                      contrast_class, contrast_favoured)
        return Prediction(
            source=source, image=image, topk=ranked, neighbours=self._neighbours(result.embedding),
            maps={key: place_in_frame(heatmap, frame, (image.height, image.width)) for key, heatmap in maps.items()},
            map_notes=notes, raw_maps=raw, evidence_class=evidence_class, contrast_class=contrast_class,
            contrast_favoured=contrast_favoured, frame=frame,
        )

    def _maps(self, result, size: tuple[int, int], normalize: str, evidence_class: str | None,
              contrast_class: str | None = None, contrast_favoured: str | None = None) -> tuple[dict, dict, dict]:
        """Normalised maps at the image's size, notes for empty ones, raw maps on the network grid."""
        maps: dict[str, torch.Tensor] = {}
        notes: dict[str, str] = {}
        raw: dict[str, np.ndarray] = {}
        constant: set[str] = set()
        stage_keys = [f"stage{s}" for s in result.stages]
        upsampled = [upsample(attention, size) for attention in result.attention]
        fused = fuse_upsampled(upsampled, result.scale_weights)[0]  # before the stage maps are rescaled in place
        for key, attention, large in zip(stage_keys, result.attention, upsampled):
            raw[key] = attention[0].cpu().numpy().astype(np.float32)
            if is_constant(attention[0]):
                constant.add(key)
                notes[key] = f"{CONSTANT_NOTE} (this stage attends uniformly)"
            # Multiples of uniform attention, so shared normalisation compares scales fairly.
            maps[key] = large[0].mul_(attention.shape[-1] * attention.shape[-2])
        maps["fused"] = fused
        fused_grid = fused_attention(result.attention, result.input_size, result.scale_weights)[0]
        raw["fused"] = fused_grid.cpu().numpy().astype(np.float32)
        if is_constant(fused_grid):
            constant.add("fused")
            notes["fused"] = CONSTANT_NOTE
        why_none = ("one class only: no runner-up to set it against" if len(self._class_names) == 1
                    else "no classifier and no labelled training images: no classes to set apart")
        for key, stage_maps, nothing, missing in (
            ("evidence", result.evidence, f"no positive evidence for {evidence_class or 'the top class'}",
             "no classifier and no labelled training images: no class to explain"),
            ("contrast", result.contrast, f"nothing here favours {contrast_favoured} over {contrast_class}", why_none),
        ):
            if stage_maps is None:
                notes[key] = missing
                maps[key] = torch.zeros(size)
                constant.add(key)
                continue
            grid = fused_evidence(stage_maps, result.input_size)[0]
            raw[key] = grid.cpu().numpy().astype(np.float32)
            if float(grid.max()) <= 0:
                constant.add(key)
                notes[key] = f"{ZERO_NOTE} ({nothing})"
            elif is_constant(grid):
                constant.add(key)
                notes[key] = CONSTANT_NOTE
            maps[key] = fused_evidence(stage_maps, size)[0]
        return normalize_maps(maps, constant, stage_keys, normalize), notes, raw

    # -- batch classification to CSV ------------------------------------------------------
    def predict_to_csv(
        self,
        paths: Sequence[str | os.PathLike[str]],
        csv_path: str | os.PathLike[str] | None,
        on_progress: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        topk: int = 5,
        batch_size: int = CSV_BATCH,
        embeddings_path: str | os.PathLike[str] | None = None,
    ) -> int:
        """Classify many files into a CSV (path, top1, prob, top5, error); returns rows written.

        Rows keep the input order. Unreadable files get a row with the reason in `error`.
        When `should_cancel()` turns true the file keeps the rows written so far.
        Uses the same geometry and classifier as `predict`, without computing maps.
        With `embeddings_path` the embeddings of the images read are saved there too
        (`save_embeddings`); `csv_path` may then be None.
        """
        paths = [Path(p) for p in paths]
        if csv_path is not None:
            Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
        if self.mode == "none":
            log.warning("%s has no labelled classes; the CSV lists files without classes", self.run_dir)
        written = 0
        threads = max(1, min(4, os.cpu_count() or 1))
        kept_paths: list[str] = []
        kept_vectors: list[torch.Tensor] = []
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(threads))
            writer = None
            if csv_path is not None:
                handle = stack.enter_context(open(csv_path, "w", newline="", encoding="utf-8"))
                writer = csv.writer(handle)
                writer.writerow(["path", "top1", "prob", f"top{topk}", "error"])
            for start in range(0, len(paths), CSV_CHUNK):
                if should_cancel and should_cancel():
                    log.info("CSV prediction cancelled after %d of %d images", written, len(paths))
                    break
                chunk = paths[start:start + CSV_CHUNK]
                rows, embedded = self._classify_chunk(chunk, pool, topk, batch_size)
                for position, vector in sorted(embedded.items()):
                    kept_paths.append(str(chunk[position]))
                    kept_vectors.append(vector)
                if writer is not None:
                    writer.writerows(rows)
                    handle.flush()
                written += len(rows)
                if on_progress:
                    on_progress(written, len(paths))
        if embeddings_path is not None:
            vectors = torch.stack(kept_vectors) if kept_vectors else torch.zeros(0, self.net.embed_dim)
            save_embeddings(embeddings_path, kept_paths, vectors.numpy(), self.run_dir.name)
        return written

    def _load_for_csv(self, path: Path) -> torch.Tensor | str:
        try:
            # Only the network sees these pixels (no map is drawn), so big JPEGs decode reduced.
            _, image = self._decode(path, min_short_side=eval_min_short_side(self.eval_size))
        except ImageDecodeError as exc:
            return exc.reason
        return network_input(image, self.eval_size)

    @torch.no_grad()
    def _classify_chunk(self, chunk: list[Path], pool: concurrent.futures.Executor, topk: int, batch_size: int
                        ) -> tuple[list[list[str]], dict[int, torch.Tensor]]:
        """(CSV rows in the chunk's order, {position in the chunk: embedding} of the images read)."""
        loaded = list(pool.map(self._load_for_csv, chunk))
        rows: list[list[str] | None] = [None] * len(chunk)
        embedded: dict[int, torch.Tensor] = {}
        for position, item in enumerate(loaded):
            if isinstance(item, str):
                rows[position] = [str(chunk[position]), "", "", "", item]
        tensors = [(position, item) for position, item in enumerate(loaded) if not isinstance(item, str)]
        for batch in bucketed(tensors, key=lambda pair: tuple(pair[1].shape), batch_size=batch_size):
            images = self._on_device(torch.stack([tensor for _, tensor in batch]))
            embedding = self.net.embed(images).float()
            logits = embedding @ self.weight.t() + self.bias if self.weight is not None else None
            probabilities = self._probabilities(embedding, logits)
            for row, (position, _) in enumerate(batch):
                embedded[position] = embedding[row].cpu()
                if probabilities is None:
                    rows[position] = [str(chunk[position]), "", "", "", ""]
                    continue
                values, indices = probabilities[row].topk(min(topk, probabilities.shape[1]))
                ranked = [(self._class_names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]
                rows[position] = [
                    str(chunk[position]), ranked[0][0], f"{ranked[0][1]:.4f}",
                    ";".join(f"{name}:{prob:.4f}" for name, prob in ranked), "",
                ]
        return [row for row in rows if row is not None], embedded


EMBEDDING_SUFFIXES = (".csv", ".npz")


def save_embeddings(path: str | os.PathLike[str], image_paths: Sequence[str], vectors: np.ndarray, run_name: str) -> Path:
    """Write embeddings for use outside fgdesk, atomically, in the format the suffix names:

    - .csv: a header `path,e0,e1,...` and a row per image (spreadsheets, R, Orange);
    - .npz: arrays `paths` (N,), `embeddings` (N, D) float32 and `run` (numpy.load, no pickle).

    The vectors are the unit-length embeddings the kNN and the classifier use, so a dot
    product between two rows is their cosine similarity."""
    path = Path(path)
    if path.suffix.lower() not in EMBEDDING_SUFFIXES:
        raise ValueError(f"embeddings are written as .csv or .npz, not {path.suffix or 'a file without a suffix'}: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors = np.asarray(vectors, dtype=np.float32)
    if path.suffix.lower() == ".npz":
        def write(handle) -> None:
            np.savez(handle, paths=np.asarray(list(image_paths), dtype=str), embeddings=vectors, run=np.asarray(run_name))
        atomic_write(path, write)
        return path
    def write_csv(handle) -> None:  # streamed: 100k images make ~300 MB of text
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(["path", *(f"e{k}" for k in range(vectors.shape[1]))])
        for image_path, vector in zip(image_paths, vectors):
            writer.writerow([image_path, *(f"{value:.6g}" for value in vector.tolist())])
        text.flush()
        text.detach()  # the handle stays open for atomic_write to sync and close

    atomic_write(path, write_csv)
    return path


def pixel_frame(width: int, height: int, eval_size: int) -> tuple[int, int, int, int]:
    """`crop_box` in whole pixels inside the image: (left, top, right, bottom), never empty."""
    x0, y0, x1, y1 = crop_box(width, height, eval_size)
    left, top = min(max(0, round(x0)), width - 1), min(max(0, round(y0)), height - 1)
    return left, top, min(max(left + 1, round(x1)), width), min(max(top + 1, round(y1)), height)


def place_in_frame(heatmap: np.ndarray, frame: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """A map of the frame's size on an (H, W) canvas of zeros: nothing is claimed outside the
    part of the image the network saw."""
    height, width = size
    if tuple(frame) == (0, 0, width, height):
        return heatmap
    left, top, right, bottom = frame
    canvas = np.zeros((height, width), dtype=np.float32)
    canvas[top:bottom, left:right] = heatmap
    return canvas


def normalize_maps(maps: dict[str, torch.Tensor], constant: set[str], stage_keys: list[str], mode: str) -> dict[str, np.ndarray]:
    """Scale maps into [0, 1] as float32 numpy arrays; constant maps become zeros.

    per_map: every map is divided by its own peak. shared: the stage maps (in multiples
    of uniform attention) share one peak, so a scale that focuses more looks brighter;
    the fused and evidence maps are on scales of their own and stay per map.
    """
    shared_peak = None
    if mode == "shared":
        peaks = [float(maps[k].max()) for k in stage_keys if k in maps and k not in constant]
        shared_peak = max(peaks) if peaks else None
    result = {}
    for key, heatmap in maps.items():
        if key in constant:
            result[key] = np.zeros(tuple(heatmap.shape), dtype=np.float32)
            continue
        peak = shared_peak if shared_peak is not None and key in stage_keys else float(heatmap.max())
        scaled = heatmap.float() / peak if peak > 0 else torch.zeros_like(heatmap, dtype=torch.float32)
        result[key] = scaled.clamp_(0.0, 1.0).cpu().numpy()
    return result


def _is_inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


Classifier = tuple[list[str], torch.Tensor, torch.Tensor]


def _load_classifier(run_dir: Path, checkpoint_path: Path, embed_dim: int) -> tuple[Classifier | None, bool]:
    """((class names, weight, bias) or None when missing or unusable, whether it is stale).

    Stale: fitted on an earlier version of the checkpoint (training went on since).
    """
    path = run_dir / runs.CLASSIFIER_FILE
    if not path.is_file():
        return None, False
    try:
        document = load_checkpoint(path, kind=CLASSIFIER_KIND)
    except CheckpointError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None, False
    weight, bias = document.get("weight"), document.get("bias")
    names = document.get("class_names")
    if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor) or not isinstance(names, list):
        log.warning("ignoring %s: it lacks weight, bias or class names", path)
        return None, False
    if weight.ndim != 2 or weight.shape[1] != embed_dim or weight.shape[0] != len(names) or bias.shape != (len(names),):
        log.warning("ignoring %s: made for %s features, the encoder gives %d", path, tuple(weight.shape), embed_dim)
        return None, False
    fingerprint = document.get("source_fingerprint")
    stale = fingerprint is not None and checkpoint_path.is_file() and fingerprint != checkpoint_fingerprint(checkpoint_path)
    return ([str(n) for n in names], weight.float(), bias.float()), bool(stale)

