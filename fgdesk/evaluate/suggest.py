"""Which unlabeled images to label next: typical images of the groups no label covers yet.

With few labels, the images that help a classifier most are not the ones it is least sure
of (at a handful of labels per class those are mostly odd or broken images) but typical
members of kinds of image that no label covers yet. This follows TypiClust (Hacohen,
Dekel & Weinshall, "Active learning on a budget", ICML 2022):

1. cluster the labelled and unlabeled embeddings together into (labelled + budget) groups
   with spherical k-means;
2. take the groups without any labelled image, largest first;
3. from each, suggest its most typical image: the one whose nearest neighbours inside the
   group are closest (the inverse of their mean cosine distance).

When the budget outnumbers the uncovered groups, the rest go to the images farthest from
everything labelled or suggested so far (k-center greedy).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

TYPICALITY_NEIGHBOURS = 20
TYPICALITY_SAMPLE = 4_000  # a bigger group is scored on a random sample of it: distances grow with its square
KMEANS_ITERATIONS = 25
MAX_CLUSTERS = 2_000  # k-means cost grows with groups x images; beyond this, k-center fills in


@dataclass
class Suggestion:
    index: int  # into the pool
    cluster_size: int  # images in its group (0: chosen by k-center greedy, outside any group)
    typicality: float  # 1 / mean cosine distance to its nearest neighbours in the group


def spherical_kmeans(points: torch.Tensor, clusters: int, generator: torch.Generator,
                     iterations: int = KMEANS_ITERATIONS) -> torch.Tensor:
    """(N,) cluster of each unit-norm row; k-means++ seeding on cosine distance."""
    count = len(points)
    clusters = max(1, min(clusters, count))
    first = int(torch.randint(count, (1,), generator=generator))
    centres = [points[first]]
    nearest = 1.0 - points @ points[first]
    for _ in range(1, clusters):
        weights = nearest.clamp_min(0).pow(2)
        if float(weights.sum()) <= 0:
            choice = int(torch.randint(count, (1,), generator=generator))
        else:
            choice = int(torch.multinomial(weights, 1, generator=generator))
        centres.append(points[choice])
        nearest = torch.minimum(nearest, 1.0 - points @ points[choice])
    centre = torch.stack(centres)
    assignment = torch.zeros(count, dtype=torch.long)
    for iteration in range(iterations):
        new_assignment = (points @ centre.t()).argmax(dim=1)
        if iteration and torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
        sums = torch.zeros_like(centre).index_add_(0, assignment, points)
        filled = torch.bincount(assignment, minlength=len(centre)) > 0
        centre = torch.where(filled.unsqueeze(1), F.normalize(sums, dim=1), centre)
    return assignment


def typicality(members: torch.Tensor, neighbours: int = TYPICALITY_NEIGHBOURS) -> torch.Tensor:
    """(n,) inverse mean cosine distance of each unit-norm row to its nearest other rows."""
    if len(members) < 2:
        return torch.ones(len(members))
    distance = (1.0 - members @ members.t()).clamp_min(0).fill_diagonal_(float("inf"))
    near = distance.topk(min(neighbours, len(members) - 1), dim=1, largest=False).values
    return 1.0 / near.mean(dim=1).clamp_min(1e-6)


def suggest_to_label(pool: torch.Tensor, labelled: torch.Tensor, count: int, seed: int = 0) -> list[Suggestion]:
    """`count` pool rows (or all, if fewer) to label next, most useful first.

    `pool` (N, D) are embeddings of unlabeled images, `labelled` (M, D) of labelled ones
    (M may be 0). Deterministic for a given seed.
    """
    count = max(0, min(count, len(pool)))
    if count == 0:
        return []
    pool_unit = F.normalize(pool.float(), dim=1)
    labelled_unit = F.normalize(labelled.float(), dim=1) if len(labelled) else pool_unit[:0]
    points = torch.cat([labelled_unit, pool_unit])
    generator = torch.Generator().manual_seed(seed)
    assignment = spherical_kmeans(points, min(len(labelled_unit) + count, MAX_CLUSTERS), generator)
    covered = set(assignment[: len(labelled_unit)].tolist())
    pool_assignment = assignment[len(labelled_unit):]
    sizes = torch.bincount(assignment)
    uncovered = sorted((c for c in set(pool_assignment.tolist()) if c not in covered),
                       key=lambda c: (-int(sizes[c]), c))
    chosen: list[Suggestion] = []
    for cluster in uncovered[:count]:
        members = torch.nonzero(pool_assignment == cluster).flatten()
        if len(members) > TYPICALITY_SAMPLE:
            members = members[torch.randperm(len(members), generator=generator)[:TYPICALITY_SAMPLE]]
        scores = typicality(pool_unit[members])
        best = int(scores.argmax())
        chosen.append(Suggestion(int(members[best]), int(sizes[cluster]), float(scores[best])))
    if len(chosen) < count:
        chosen += _k_center(pool_unit, labelled_unit, [s.index for s in chosen], count - len(chosen))
    log.info("suggested %d image(s) to label: %d from uncovered groups, %d by distance",
             len(chosen), min(len(uncovered), count), max(0, count - len(uncovered)))
    return chosen


def _k_center(pool: torch.Tensor, labelled: torch.Tensor, taken: list[int], count: int) -> list[Suggestion]:
    """Greedily the pool rows farthest (cosine) from everything labelled or taken."""
    anchors = torch.cat([labelled, pool[taken]]) if taken else labelled
    if len(anchors):
        distance = (1.0 - pool @ anchors.t()).min(dim=1).values
    else:
        distance = torch.full((len(pool),), float("inf"))
    free = torch.ones(len(pool), dtype=torch.bool)
    free[taken] = False
    picked = []
    for _ in range(min(count, int(free.sum()))):
        # Near-duplicates of a taken row score about 0 (or a rounding error below): still free.
        index = int(torch.where(free, distance, torch.tensor(float("-inf"))).argmax())
        picked.append(Suggestion(index, 0, 0.0))
        free[index] = False
        distance = torch.minimum(distance, 1.0 - pool @ pool[index])
    return picked


# -- for a run ------------------------------------------------------------------------------


@dataclass
class LabelSuggestion:
    rank: int  # 1: label first
    path: str
    guess: str  # the class a kNN vote of the labelled images gives ("" without labels)
    guess_share: float  # that class's share of the vote, 0..1
    group_size: int  # images in its group of similar images (0: picked by distance)
    typicality: float


def suggest_for_run(run_dir, count: int = 50, device: str = "auto", seed: int = 0,
                    on_progress=None, should_cancel=None) -> list[LabelSuggestion]:
    """The run's unlabeled images (its dataset's unlabeled/ folder; every image of a dataset
    without labels) that are most worth labelling next, with the class a kNN vote guesses.

    Embedding a large pool takes a while: `should_cancel()` is asked after every batch, and
    EmbeddingCancelled raised when it says so (nothing is cached then)."""
    from pathlib import Path

    from fgdesk.evaluate.embeddings import cached_embeddings, run_embedder
    from fgdesk.evaluate.knn import knn_scores
    from fgdesk.evaluate.report import KNN_K, KNN_TEMPERATURE, EvaluationError, open_run, training_samples

    run_dir = Path(run_dir)
    net, config, checkpoint_path, index, torch_device = open_run(run_dir, device, on_progress)
    labelled = index.labelled()
    pool_samples = index.split("unlabeled") if labelled else list(index.samples)
    if not pool_samples:
        raise EvaluationError(
            f"the dataset at {index.root} has no unlabeled images to choose from: put the images still to "
            "label in an unlabeled/ folder beside the class folders"
        )
    labelled_samples = training_samples(index) if labelled else []

    embed = run_embedder(net, config, index.crop_bottom, torch_device, on_progress, should_cancel)
    known = cached_embeddings(run_dir, checkpoint_path, "train", embed("embedding labelled images", 0.02, 0.4),
                              labelled_samples) if labelled_samples else None
    pool = cached_embeddings(run_dir, checkpoint_path, "unlabeled", embed("embedding unlabeled images", 0.4, 0.9),
                             pool_samples)
    if len(pool.vectors) == 0:
        raise EvaluationError(f"none of the {len(pool_samples)} unlabeled images of {index.root} could be read")
    if on_progress:
        on_progress("choosing images", 0.9)
    known_vectors = known.vectors if known is not None else pool.vectors[:0]
    picks = suggest_to_label(pool.vectors, known_vectors, count, seed=seed)
    guesses: list[tuple[str, float]] = [("", 0.0)] * len(picks)
    if known is not None and len(known.vectors) and picks:
        votes = knn_scores(known.vectors, known.labels, pool.vectors[[p.index for p in picks]], len(index.classes),
                           KNN_K, KNN_TEMPERATURE)
        shares = votes / votes.sum(dim=1, keepdim=True).clamp_min(1e-12)
        best = shares.argmax(dim=1)
        guesses = [(index.classes[int(b)], float(shares[row, b])) for row, b in enumerate(best)]
    if on_progress:
        on_progress("done", 1.0)
    return [
        LabelSuggestion(rank, str(pool_samples[int(pool.sample_indices[pick.index])].path), guess, share,
                        pick.cluster_size, pick.typicality)
        for rank, (pick, (guess, share)) in enumerate(zip(picks, guesses), start=1)
    ]


def write_suggestions_csv(path, suggestions: list[LabelSuggestion]) -> None:
    import csv
    import io
    import os

    from fgdesk.fileio import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    # `label` is left empty for the user to fill in; `fgdesk label DATA --csv FILE` then applies it.
    writer.writerow(["rank", "path", "guess", "guess_share", "group_size", "typicality", "label"])
    for s in suggestions:
        # Absolute, so the table can be applied from any folder.
        writer.writerow([s.rank, os.path.abspath(s.path), s.guess, f"{s.guess_share:.4f}", s.group_size,
                         f"{s.typicality:.4f}", ""])
    atomic_write_text(path, buffer.getvalue())
