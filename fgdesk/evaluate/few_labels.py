"""How many labels are enough: kNN and linear-probe top-1 from n labelled images per class.

A lab with many images and few labels wants to know what labelling 1, 5 or 10 images per
class buys before labelling more. For each n, several random draws of n training images
per class are scored on the whole test split, and the mean and spread over the draws are
reported (the spread is mostly which images were drawn, which at 1 per class is large).
The embeddings are those of the full evaluation, so this costs only the classifier fits.
"""
from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence

import torch

from fgdesk.evaluate import DEFAULT_LABELS_PER_CLASS  # re-exported: its home loads no torch
from fgdesk.evaluate.knn import knn_scores, topk_accuracy
from fgdesk.evaluate.linear import fit_linear
from fgdesk.evaluate.scores import FewLabelScore  # noqa: F401  (its home loads no torch)

log = logging.getLogger(__name__)

DEFAULT_DRAWS = 5


def draw_labelled(labels: torch.Tensor, per_class: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of `per_class` random images of every class (all of a smaller class)."""
    chosen = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long)


def parse_labels_per_class(text: str) -> tuple[int, ...]:
    """'1,5,10' -> (1, 5, 10); 'none' or '' -> (). Raises ValueError with the reason."""
    text = text.strip().lower()
    if text in ("", "none", "0"):
        return ()
    values = []
    for part in text.split(","):
        try:
            value = int(part)
        except ValueError:
            raise ValueError(f"labels per class must be whole numbers separated by commas, e.g. 1,5,10; got {part.strip()!r}") from None
        if value < 1:
            raise ValueError(f"labels per class must be at least 1, got {value}")
        values.append(value)
    return tuple(sorted(set(values)))


def few_label_scores(
    train_vectors: torch.Tensor,
    train_labels: torch.Tensor,
    test_vectors: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    labels_per_class: Sequence[int] = DEFAULT_LABELS_PER_CLASS,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    knn_k: int = 20,
    knn_temperature: float = 0.07,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[FewLabelScore]:
    """Scores for each n in `labels_per_class` smaller than the largest class.

    An n that covers every class whole would repeat the full evaluation, so it is left
    out. Draw d of n uses the seed (seed, n, d): the same run scores the same draws.
    """
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    if len(train_labels) == 0 or len(test_labels) == 0:
        return []
    largest = int(torch.bincount(train_labels.long()).max())
    wanted = [n for n in sorted(set(labels_per_class)) if n < largest]
    if len(wanted) < len(set(labels_per_class)):
        log.info("few-label scores: leaving out %d label count(s) of %d or more per class (the full evaluation)",
                 len(set(labels_per_class)) - len(wanted), largest)
    results = []
    total, done = len(wanted) * draws, 0
    for n in wanted:
        knn, linear, sizes = [], [], []
        for draw in range(draws):
            generator = torch.Generator().manual_seed((seed * 1_000_003 + n) * 1_009 + draw)
            picked = draw_labelled(train_labels, n, generator)
            vectors, labels = train_vectors[picked], train_labels[picked]
            scores = knn_scores(vectors, labels, test_vectors, num_classes, knn_k, knn_temperature)
            knn.append(topk_accuracy(scores, test_labels, (1,))[1])
            probe = fit_linear(vectors, labels, num_classes, seed=seed + draw, quiet=True)
            linear.append((probe.logits(test_vectors).argmax(dim=1).cpu() == test_labels.long().cpu()).float().mean().item())
            sizes.append(len(picked))
            done += 1
            if on_progress:
                on_progress(done, total)
        results.append(FewLabelScore(n, draws, sizes[0], knn, linear))
        log.info("%d labels per class: kNN %.3f, linear %.3f (mean of %d draws)", n,
                 statistics.fmean(knn), statistics.fmean(linear), draws)
    return results
