"""Which images are copies of one another: the same photo saved twice, mirrored or cropped.

Lab datasets gather photos from several people, cameras and sources over months, and the
same photo ends up in them more than once: saved again, resized, mirrored, brightened or
cropped. A copy across the training and test splits makes the test score count an image the
classifier has seen; a copy under two classes is a label that contradicts itself; a copy in
one class counts twice. CUB-200-2011 itself holds such pairs (docs/benchmarks.md).

The pixels decide; the network only proposes:

1. every image is shrunk to 64 x 64 grey levels. Its *pattern* is that image at 32 x 32
   with the coarse shading taken out (what is left is edges and texture), standardised so
   brightness and contrast do not count;
2. candidate pairs are images whose patterns correlate at 0.5 or more, either way round (a
   mirrored copy counts), and, for a run, each image's 3 nearest images by the network's
   embedding: contrastive pretraining maps crops of one photo close together, which is how
   a cropped copy, whose pixels no longer line up, comes up;
3. one image's pattern is searched for in the other at scales from 100% down to 65% of a
   side in steps of 2.5%, at any offset, mirrored or not. The pair is the **same photo**
   when the two line up whole (a correlation of 0.8 or more without a crop). It is a
   **cropped copy** when the network proposed it, the best alignment reaches a normalised
   cross-correlation of 0.6, and the aligned patterns also agree cell by cell (three
   quarters of the cells of a 4 x 4 grid correlate at 0.6 or more): one correlation over
   the whole is ruled by the strongest edges, so the outline of a bird drawn in another
   place passes it, but not the cells of the background around it.
   The search runs on half-size patterns at every other scale first; only the pairs that
   match there at 0.4 or more (one in seven on cub50; every copy found there matched at
   0.68 or more at half size) are searched in full, at the scales beside the best one.

On cub50 with copies planted on purpose, re-saved, resized, mirrored and brightened copies
line up whole at 0.98 or more, and crops of 90% and 87% of a side match at 0.85 or more with
three quarters of their cells at 0.81 or more; the same drawn bird at two places on the demo
set reaches 0.70, but a quarter of its cells stay at or below 0.48 (docs/benchmarks.md). Photos of a burst, where the bird moved
between frames, are different photos and are not listed.
"""
from __future__ import annotations

import concurrent.futures
import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

GREY_SIZE = 64
PATTERN_SIZE = 32
SHADING_WINDOW = 5  # pixels of the pattern averaged into the coarse shading taken out
CANDIDATE = 0.5  # pattern correlation from which a pair is looked at
NEIGHBOURS = 3  # a run's nearest images per image looked at
# The share of a side a copy may keep: finely in full, where a scale a few per cent off
# already blurs the cells apart; every other one at half size, which is coarse anyway.
SCALES = tuple(round(1.0 - 0.025 * step, 3) for step in range(15))  # 1.0 down to 0.65
COARSE_SCALES = SCALES[::2]
MATCH = 0.6  # cross-correlation from which a pair the network put side by side may be a cropped copy
CELLS = 4  # the aligned patterns are compared in CELLS x CELLS cells too
AGREEMENT = 0.6  # correlation that three quarters of the cells of a cropped copy reach
FLAT_CELL = 2.0  # a cell whose detail varies less than this (grey levels) in both images agrees
SAME_PHOTO = 0.8  # correlation without a crop from which a copy is the same photo
SHOWN_PAIRS = 200
CHUNK = 256  # rows of a similarity matrix computed at once: bounds memory on large datasets
PAIR_BATCH = 1024  # candidate pairs matched at once (sorted, so their images repeat within a batch)
COARSE_MATCH = 0.4  # half-size match a pair needs to be matched in full
COARSE_SHADING_WINDOW = 3

KINDS = ("two classes", "train and test", "repeated")
KIND_TEXT = {
    "two classes": "the same image filed under two classes",
    "train and test": "a test image with a copy among the images trained on: the test score counts it as seen",
    "repeated": "the same image twice in one class (or among the unlabeled images): it counts twice",
}


# -- pixels -----------------------------------------------------------------------------------


def grey_thumbnail(image) -> torch.Tensor:
    """(GREY_SIZE, GREY_SIZE) uint8 grey levels of a PIL image, squeezed to a square."""
    from PIL import Image

    small = image.convert("L").resize((GREY_SIZE, GREY_SIZE), Image.Resampling.BILINEAR)
    return torch.frombuffer(bytearray(small.tobytes()), dtype=torch.uint8).view(GREY_SIZE, GREY_SIZE)


def grey_thumbnails(paths: Sequence[Path], crop_bottom: int = 0, on_progress: Callable[[int, int], None] | None = None,
                    threads: int | None = None) -> tuple[torch.Tensor, list[int]]:
    """(N, GREY_SIZE, GREY_SIZE) uint8 of the images that decoded, positions of those that did not."""
    from fgdesk.data.images import ImageDecodeError, load_rgb

    def thumbnail(path: Path) -> torch.Tensor | None:
        try:
            # A JPEG decodes at 1/8 scale when that still leaves twice the thumbnail's size.
            return grey_thumbnail(load_rgb(path, crop_bottom=crop_bottom, min_short_side=2 * GREY_SIZE))
        except ImageDecodeError as exc:
            log.info("skipping %s: %s", path, exc.reason)
            return None

    threads = threads or max(1, min(4, os.cpu_count() or 1))
    found: list[torch.Tensor] = []
    bad: list[int] = []
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:  # PIL decodes without the GIL
        for position, result in enumerate(pool.map(thumbnail, paths)):
            if result is None:
                bad.append(position)
            else:
                found.append(result)
            if on_progress and (position % 64 == 63 or position == len(paths) - 1):
                on_progress(position + 1, len(paths))
    return (torch.stack(found) if found else torch.zeros(0, GREY_SIZE, GREY_SIZE, dtype=torch.uint8)), bad


def _detail(grey: torch.Tensor, size: int, shading_window: int = SHADING_WINDOW) -> torch.Tensor:
    """(N, size, size) float: grey thumbnails shrunk to `size`, less their local mean."""
    small = F.interpolate(grey.float()[:, None], size=(size, size), mode="area")
    shading = F.avg_pool2d(small, shading_window, 1, shading_window // 2, count_include_pad=False)
    return (small - shading)[:, 0]


def _standardised(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    return x / x.flatten(1).std(dim=1).clamp_min(1e-6)[:, None, None]


def patterns(grey: torch.Tensor) -> torch.Tensor:
    """(N, PATTERN_SIZE, PATTERN_SIZE): the standardised detail of each grey thumbnail."""
    return _standardised(_detail(grey, PATTERN_SIZE))


def pairs_above(similarity: Callable[[slice], torch.Tensor], count: int, threshold: float,
                chunk: int = CHUNK) -> dict[tuple[int, int], float]:
    """{(i, j): similarity} for i < j with similarity >= threshold. `similarity(rows)` gives
    the rows' similarities to all `count` items; computed a chunk of rows at a time."""
    found: dict[tuple[int, int], float] = {}
    for start in range(0, count, chunk):
        rows = similarity(slice(start, min(count, start + chunk)))
        first = torch.arange(start, start + len(rows)).unsqueeze(1)
        upper = torch.arange(count).unsqueeze(0) > first  # each pair once, never an image with itself
        hits = torch.nonzero((rows >= threshold) & upper)
        for row, column in hits.tolist():
            found[(start + row, column)] = float(rows[row, column])
    return found


def pattern_correlation(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(N, M) correlation of patterns (N, S, S) and (M, S, S), the better of as-is and mirrored."""
    a = F.normalize(first.flatten(1), dim=1)
    return torch.maximum(a @ F.normalize(second.flatten(1), dim=1).t(),
                         a @ F.normalize(second.flip(-1).flatten(1), dim=1).t())


def _window_at(field: torch.Tensor, flat_index: torch.Tensor, pattern: int) -> torch.Tensor:
    """(N, pattern, pattern) windows of fields (N, S, S) whose top-left corners sit at
    `flat_index` in their correlation maps (S - pattern + 1 wide)."""
    size = field.shape[-1]
    columns = size - pattern + 1
    top, left = flat_index // columns, flat_index % columns
    offsets = torch.arange(pattern)
    rows = (top[:, None] + offsets)[:, :, None]
    cols = (left[:, None] + offsets)[:, None, :]
    return field.flatten(1).gather(1, (rows * size + cols).flatten(1)).view(-1, pattern, pattern)


def cell_agreement(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(N,) lower quartile of the correlations of a 4 x 4 grid of cells of aligned patterns (N, S, S).

    One correlation over the whole pattern is ruled by its strongest edges: the outline of
    a bird matches the same outline drawn elsewhere. A crop of one photo matches cell by
    cell, its background included; cells flat in both images (a clear sky) agree."""
    count, cell = len(first), first.shape[-1] // CELLS

    def cells(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(count, CELLS, cell, CELLS, cell).permute(0, 1, 3, 2, 4).reshape(count, CELLS * CELLS, -1)
        return x - x.mean(dim=-1, keepdim=True)

    a, b = cells(first), cells(second)
    correlation = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-6)
    flat = (a.std(dim=-1) < FLAT_CELL) & (b.std(dim=-1) < FLAT_CELL)
    return torch.where(flat, torch.ones_like(correlation), correlation).quantile(0.25, dim=-1)


@dataclass
class Match:
    best: torch.Tensor  # (N,) normalised cross-correlation at the best alignment
    whole: torch.Tensor  # (N,) the same without a crop (scale 1, either way round, mirrored or not)
    agreement: torch.Tensor  # (N,) cell_agreement at the best alignment
    scale: torch.Tensor  # (N,) position in the scales searched of the best alignment's scale


def match(first: torch.Tensor, second: torch.Tensor) -> Match:
    """How pairs of grey thumbnails (N, G, G) line up: one image's pattern searched for in
    the other at each of SCALES, any offset, both ways round and mirrored."""
    count = len(first)
    return match_pairs(torch.cat([first, second]), torch.arange(count), torch.arange(count, 2 * count))


def match_pairs(grey: torch.Tensor, first: torch.Tensor, second: torch.Tensor, pattern: int = PATTERN_SIZE,
                shading_window: int = SHADING_WINDOW, align: bool = True, scales: Sequence[float] = SCALES) -> Match:
    """`match` for the pairs (first[k], second[k]) of rows of `grey`, with patterns `pattern`
    pixels wide. Each image's shrunk detail and its windows' spreads are computed once,
    however many pairs it is in. Without `align`, the cells are not compared (agreement 0)."""
    count = len(first)
    images, inverse = torch.unique(torch.cat([first, second]), return_inverse=True)
    first, second = inverse[:count], inverse[count:]
    window = torch.full((1, 1, pattern, pattern), 1.0 / pattern ** 2)
    fields, spreads = {}, {}
    for scale in scales:
        field = _detail(grey[images], round(pattern / scale), shading_window)
        # Each window's spread; the template has mean 0, so a window's mean drops out.
        mean = F.conv2d(field[:, None], window)[:, 0]
        spreads[scale] = (F.conv2d(field[:, None] ** 2, window)[:, 0] - mean ** 2).clamp_min(1e-6).sqrt()
        fields[scale] = field
    details = fields[1.0]
    templates = _standardised(details)
    best = torch.full((count,), -1.0)
    whole = torch.full((count,), -1.0)
    best_scale = torch.zeros(count, dtype=torch.long)
    best_window = torch.zeros(count, pattern, pattern)
    best_template = torch.zeros(count, pattern, pattern)
    for searched, sought in ((first, second), (second, first)):
        # As-is and mirrored, as two filters per pair in one grouped convolution.
        kernels = torch.stack([templates[sought], templates[sought].flip(-1)], dim=1) / pattern ** 2
        kernels = kernels.reshape(2 * count, 1, pattern, pattern)
        for position, scale in enumerate(scales):
            field = fields[scale][searched]
            correlation = F.conv2d(field[None], kernels, groups=count)[0]
            correlation = correlation.view(count, 2, -1) / spreads[scale][searched].flatten(1)[:, None, :]
            value, where = correlation.flatten(1).max(dim=1)
            mirrored, where = where // correlation.shape[-1], where % correlation.shape[-1]
            if scale == 1.0:
                whole = torch.maximum(whole, value)
            better = value > best
            best = torch.where(better, value, best)
            best_scale[better] = position
            if align and bool(better.any()):
                best_window[better] = _window_at(field, where, pattern)[better]
                aligned = torch.where(mirrored.bool()[:, None, None], details[sought].flip(-1), details[sought])
                best_template[better] = aligned[better]
    agreement = cell_agreement(best_window, best_template) if align else torch.zeros(count)
    return Match(best.clamp(max=1.0), whole.clamp(max=1.0), agreement, best_scale)


# -- pairs ---------------------------------------------------------------------------------


@dataclass
class DuplicatePair:
    first: int  # positions in the images checked
    second: int
    how: str  # "same photo" | "cropped copy"
    match: float  # cross-correlation of the best alignment
    embedding_similarity: float | None  # the run's cosine similarity, when a run was given


def candidate_pairs(grey: torch.Tensor, embeddings: torch.Tensor | None = None,
                    neighbours: int = NEIGHBOURS) -> dict[tuple[int, int], bool]:
    """{(i, j): whether the network put them side by side} for the pairs (i < j) worth
    matching: similar patterns, or among each other's nearest images in the embedding."""
    shapes = patterns(grey)
    found = {pair: False for pair in pairs_above(lambda rows: pattern_correlation(shapes[rows], shapes), len(grey),
                                                 CANDIDATE)}
    if embeddings is not None and len(embeddings) > 1:
        unit = F.normalize(embeddings.float(), dim=1)
        k = min(neighbours, len(unit) - 1)
        for start in range(0, len(unit), CHUNK):
            similarity = unit[start:start + CHUNK] @ unit.t()
            rows = torch.arange(start, start + len(similarity))
            similarity[torch.arange(len(similarity)), rows] = -2.0  # not itself
            nearest = similarity.topk(k, dim=1).indices
            for row, columns in zip(rows.tolist(), nearest.tolist()):
                found.update({(min(row, c), max(row, c)): True for c in columns})
    return found


def find_duplicate_pairs(grey: torch.Tensor, embeddings: torch.Tensor | None = None,
                         on_progress: Callable[[int, int], None] | None = None) -> list[DuplicatePair]:
    """Copies among grey thumbnails (N, G, G), strongest match first; `embeddings` (N, D),
    when given, propose cropped copies too."""
    proposed = candidate_pairs(grey, embeddings)
    candidates = sorted(proposed)
    unit = F.normalize(embeddings.float(), dim=1) if embeddings is not None and len(embeddings) else None
    # Half-size patterns first: a few per cent of the pairs come close enough to be matched in full.
    coarse_grey = F.interpolate(grey.float()[:, None], size=(GREY_SIZE // 2,) * 2, mode="area")[:, 0]
    pairs = []
    for start in range(0, len(candidates), PAIR_BATCH):
        if on_progress:  # also where a cancel is noticed
            on_progress(start, len(candidates))
        batch = torch.tensor(candidates[start:start + PAIR_BATCH])
        coarse = match_pairs(coarse_grey, batch[:, 0], batch[:, 1], PATTERN_SIZE // 2, COARSE_SHADING_WINDOW,
                             align=False, scales=COARSE_SCALES)
        close = coarse.best >= COARSE_MATCH
        # In full, only the fine scales beside the half-size search's best (and 1.0, for the whole).
        for coarse_scale in torch.unique(coarse.scale[close]).tolist():
            chosen = batch[close & (coarse.scale == coarse_scale)]
            fine = SCALES.index(COARSE_SCALES[coarse_scale])
            scales = sorted({1.0, *SCALES[max(0, fine - 1):fine + 2]}, reverse=True)
            pairs += _accepted(match_pairs(grey, chosen[:, 0], chosen[:, 1], scales=scales), chosen, proposed, unit)
    if on_progress:
        on_progress(len(candidates), len(candidates))
    pairs.sort(key=lambda p: (-p.match, p.first, p.second))
    return pairs


def _accepted(found: Match, batch: torch.Tensor, proposed: dict[tuple[int, int], bool],
              unit: torch.Tensor | None) -> list[DuplicatePair]:
    """The pairs of `batch` whose match makes them copies."""
    pairs = []
    for position, (i, j) in enumerate(batch.tolist()):
        if float(found.whole[position]) >= SAME_PHOTO:
            how, score = "same photo", float(found.whole[position])
        # A crop shifts the pixels and weakens the match: one is only trusted when the
        # network also put the two side by side and the pixels agree cell by cell.
        elif proposed[(i, j)] and float(found.best[position]) >= MATCH \
                and float(found.agreement[position]) >= AGREEMENT:
            how, score = "cropped copy", float(found.best[position])
        else:
            continue
        pairs.append(DuplicatePair(i, j, how, score, float(unit[i] @ unit[j]) if unit is not None else None))
    return pairs


# -- for a run or a dataset -------------------------------------------------------------------


@dataclass
class DuplicateRow:
    rank: int
    kind: str  # one of KINDS
    how: str  # "same photo" | "cropped copy"
    path: str  # the image to look at: the test one of a train/test pair, else the newer file
    split: str
    label: str  # its class ("" when unlabeled)
    other_path: str  # the image it copies
    other_split: str
    other_label: str
    match: float
    embedding_similarity: float | None

    @property
    def relation(self) -> str:
        """How this image relates to the other, to put before the other's name."""
        return "same photo as" if self.how == "same photo" else "cropped copy of"

    @property
    def why(self) -> str:
        """Why a copy of this kind matters (KIND_TEXT), carried with the row so a view needs no import."""
        return KIND_TEXT[self.kind]


@dataclass
class DuplicateCheck:
    pairs: list[DuplicateRow]  # the first `count`, by kind (two classes, train and test, repeated)
    found: int  # pairs found, shown or not
    counts: dict[str, int]  # pairs of each kind
    checked: int  # images compared
    unreadable: int
    dataset: str
    used_network: bool  # a run's embeddings proposed pairs too (cropped copies are found then)

    def shown_path(self, path: str) -> str:
        """`path` from the dataset's root, when it lies inside it."""
        try:
            return Path(path).relative_to(self.dataset).as_posix()
        except ValueError:
            return str(path)

    def images_to_look_at(self) -> list[DuplicateRow]:
        """The rows whose `path` comes up for the first time: three copies of one photo make
        three pairs, but fewer images to look at."""
        seen: set[str] = set()
        rows = []
        for row in self.pairs:
            if row.path not in seen:
                seen.add(row.path)
                rows.append(row)
        return rows


def _kind(first, second, test_paths: set[str]) -> str:
    if first.label >= 0 and second.label >= 0 and first.label != second.label:
        return "two classes"
    if (str(first.path) in test_paths) != (str(second.path) in test_paths):
        return "train and test"
    return "repeated"


def _look_at_last(sample, test_paths: set[str]) -> tuple[bool, int, str]:
    """Sort key whose larger end is the image to look at: the test one of a pair, or else the
    newer file, which is likelier to be the copy."""
    try:
        modified = os.stat(sample.path).st_mtime_ns
    except OSError:
        modified = 0
    return str(sample.path) in test_paths, modified, str(sample.path)


def _unique_samples(index) -> list:
    """Every image of the dataset once: training, test and unlabeled."""
    seen: set[str] = set()
    samples = []
    for sample in index.samples:
        if str(sample.path) not in seen:
            seen.add(str(sample.path))
            samples.append(sample)
    return samples


def check_duplicates(source, count: int = SHOWN_PAIRS, device: str = "auto",
                     on_progress: Callable[[str, float], None] | None = None,
                     should_cancel: Callable[[], bool] | None = None) -> DuplicateCheck:
    """Copies among the images of a dataset folder, or of a run's dataset (whose network then
    proposes cropped copies too). Every image is compared: training, test and unlabeled.

    `should_cancel()` is asked while images are read and embedded; EmbeddingCancelled is raised then."""
    from fgdesk.data.layouts import detect
    from fgdesk.evaluate.embeddings import EmbeddingCancelled
    from fgdesk.train import runs

    source = Path(source)
    is_run = runs.is_run_folder(source)
    if is_run:
        from fgdesk.evaluate.report import open_run

        net, config, checkpoint_path, index, torch_device = open_run(source, device, on_progress)
    else:
        index = detect(source)
    samples = _unique_samples(index)
    test_paths = {str(s.path) for s in index.test_samples()}

    def progress(stage: str, start: float, end: float) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            if should_cancel is not None and should_cancel():
                raise EmbeddingCancelled(f"cancelled after {done} of {total} images")
            if on_progress:
                on_progress(stage, start + (end - start) * done / max(1, total))
        return report

    grey, bad_positions = grey_thumbnails([s.path for s in samples], index.crop_bottom,
                                          progress("reading the images", 0.02, 0.4 if is_run else 0.7))
    bad = set(bad_positions)
    kept = [i for i in range(len(samples)) if i not in bad]
    embeddings = None
    if is_run and kept:
        embeddings, unembedded = _run_embeddings(source, net, config, checkpoint_path, index, torch_device,
                                                 [samples[i] for i in kept], on_progress, should_cancel)
        if unembedded:  # read for the pixels but not for the network (rare): their rows are zero, never near
            log.info("%d images could be read for their pixels but not embedded", len(unembedded))
    pairs = find_duplicate_pairs(grey, embeddings, progress("matching similar images", 0.85 if is_run else 0.7, 0.98))
    checked = [samples[i] for i in kept]
    ordered = []
    for pair in pairs:
        first, second = sorted((checked[pair.first], checked[pair.second]), key=lambda s: _look_at_last(s, test_paths))
        kind = _kind(first, second, test_paths)
        ordered.append((KINDS.index(kind), pair, kind, first, second))
    ordered.sort(key=lambda item: item[0])  # stable: within a kind, the best match first
    counts = {kind: sum(1 for item in ordered if item[2] == kind) for kind in KINDS}

    def name(sample) -> str:
        return index.classes[sample.label] if sample.label >= 0 else ""

    rows = [
        DuplicateRow(rank, kind, pair.how, str(second.path), second.split, name(second), str(first.path), first.split,
                     name(first), pair.match, pair.embedding_similarity)
        for rank, (_, pair, kind, first, second) in enumerate(ordered[: max(0, count)], start=1)
    ]
    if on_progress:
        on_progress("done", 1.0)
    log.info("duplicate check of %s: %d pairs among %d images", index.root, len(ordered), len(checked))
    return DuplicateCheck(rows, len(ordered), counts, len(checked), len(bad), str(index.root), embeddings is not None)


def _run_embeddings(run_dir, net, config, checkpoint_path, index, device, samples, on_progress,
                    should_cancel) -> tuple[torch.Tensor, set[int]]:
    """(embeddings of `samples`, zero rows for those that could not be embedded; their positions)."""
    from fgdesk.evaluate.embeddings import cached_embeddings, run_embedder
    from fgdesk.evaluate.report import training_samples

    embed = run_embedder(net, config, index.crop_bottom, device, on_progress, should_cancel)
    # The evaluation's and the suggestions' cache names, so a run evaluated before embeds nothing here.
    train_paths = {str(s.path) for s in training_samples(index)}
    test_paths = {str(s.path) for s in index.test_samples() if s.label >= 0}
    parts: dict[str, list[int]] = {"train": [], "test": [], "unlabeled": []}
    for position, sample in enumerate(samples):
        path = str(sample.path)
        parts["train" if path in train_paths else "test" if path in test_paths else "unlabeled"].append(position)
    vectors = torch.zeros(len(samples), net.embed_dim)
    unembedded = set(range(len(samples)))
    spans = {"train": (0.4, 0.6), "test": (0.6, 0.7), "unlabeled": (0.7, 0.85)}
    for part, positions in parts.items():
        if positions:
            embedded = cached_embeddings(run_dir, checkpoint_path, part, embed(f"embedding {part} images", *spans[part]),
                                         [samples[p] for p in positions])
            rows = [positions[int(i)] for i in embedded.sample_indices]
            vectors[rows] = embedded.vectors.float()
            unembedded -= set(rows)
    return vectors, unembedded


def write_duplicates_csv(path, check: DuplicateCheck) -> None:
    import csv

    from fgdesk.fileio import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "kind", "how", "path", "split", "class", "copy_of", "copy_split", "copy_class",
                     "match", "embedding_similarity"])
    for row in check.pairs:
        writer.writerow([row.rank, row.kind, row.how, os.path.abspath(row.path), row.split, row.label,
                         os.path.abspath(row.other_path), row.other_split, row.other_label,
                         f"{row.match:.4f}",
                         "" if row.embedding_similarity is None else f"{row.embedding_similarity:.4f}"])
    atomic_write_text(path, buffer.getvalue())
