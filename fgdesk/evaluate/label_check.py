"""Which labels look wrong: labelled images that the rest of the dataset places in another class.

Fine-grained labels are given by people telling apart near-identical species or variants,
often many people over months; a few percent of them are wrong (about 4% in CUB-200-2011
by its authors' own estimate), and each wrong label teaches the classifier the mistake and
scores a right prediction as an error. This follows confident learning (Northcutt, Jiang &
Chuang, "Confident learning: estimating uncertainty in dataset labels", JAIR 2021):

1. every labelled image gets class probabilities from a classifier that never saw its
   label: a linear classifier on the frozen embeddings, fitted on the other folds of a
   stratified K-fold split (or a leave-one-out kNN vote, which needs no fitting);
2. each class j gets a threshold: the mean probability of j over the images labelled j,
   i.e. how sure the classifier is, on average, of a member of j;
3. an image labelled i is a suspect when another class j reaches j's threshold; the
   likeliest such j is the label it is suggested to have;
4. suspects are ranked by p(given), lowest first (cleanlab's "self-confidence"), ties
   broken by the margin p(suggested) - p(given). On cub50 with planted mistakes this put
   twice as many real mistakes first as ranking by the margin alone (docs/benchmarks.md).

An image whose class has no other labelled image cannot be checked (nothing tells the
classifier what its class looks like) and is never a suspect.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

METHODS = ("linear", "knn")
DEFAULT_METHOD = "linear"
DEFAULT_FOLDS = 5
SHOWN_ISSUES = 50
# Below this cross-validated agreement the classifier errs more often than a labelled
# dataset usually does (a few percent), so its doubts say more about it than about the labels.
WEAK_AGREEMENT = 0.8


@dataclass
class LabelIssue:
    index: int  # into the embeddings checked
    given: int
    suggested: int
    given_probability: float
    suggested_probability: float

    @property
    def margin(self) -> float:
        return self.suggested_probability - self.given_probability


def stratified_folds(labels: torch.Tensor, folds: int, seed: int = 0) -> torch.Tensor:
    """(N,) fold of each image: each class's images dealt round-robin over the folds after a
    seeded shuffle, so every fold holds about 1/folds of every class."""
    labels = labels.long().cpu()
    generator = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(labels), dtype=torch.long)
    offset = 0
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        # Rotating where each class starts keeps the small classes from all piling into fold 0.
        fold[members] = (torch.arange(len(members)) + offset) % folds
        offset += len(members)
    return fold


def cross_validated_probabilities(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    method: str = DEFAULT_METHOD,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """(N, C) class probabilities of each labelled image from a classifier that did not see it."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    labels = labels.long()
    if method == "knn":
        from fgdesk.evaluate.knn import leave_one_out_knn_scores
        from fgdesk.evaluate.report import KNN_K, KNN_TEMPERATURE

        votes = leave_one_out_knn_scores(embeddings, labels, num_classes, KNN_K, KNN_TEMPERATURE)
        if on_progress:
            on_progress(1, 1)
        return votes / votes.sum(dim=1, keepdim=True).clamp_min(1e-12)

    from fgdesk.evaluate.linear import fit_linear

    folds = max(2, min(folds, len(labels)))
    fold_of = stratified_folds(labels, folds, seed)
    probabilities = torch.zeros(len(labels), num_classes)
    decays: tuple[float, ...] | None = None
    for fold in range(folds):
        held = fold_of == fold
        if not held.any():
            continue
        # The weight decay is chosen on the first fold's training part only and kept for the
        # others: the folds differ by a fifth of the images, and the search is most of a fit's cost.
        kwargs = {"weight_decays": decays} if decays else {}
        probe = fit_linear(embeddings[~held], labels[~held], num_classes, seed=seed, quiet=True, **kwargs)
        decays = (probe.weight_decay,)
        probabilities[held] = probe.probabilities(embeddings[held]).cpu()
        if on_progress:
            on_progress(fold + 1, folds)
    return probabilities


def find_label_issues(probabilities: torch.Tensor, labels: torch.Tensor) -> list[LabelIssue]:
    """The images whose label looks wrong, surest first (see the module's docstring).

    Images of a class with a single labelled image are not checked.
    """
    labels = labels.long()
    count, num_classes = probabilities.shape
    if count == 0:
        return []
    members = torch.bincount(labels, minlength=num_classes)
    thresholds = torch.full((num_classes,), float("inf"))
    for cls in torch.nonzero(members >= 2).flatten().tolist():
        thresholds[cls] = probabilities[labels == cls, cls].mean()
    given = probabilities.gather(1, labels.view(-1, 1)).squeeze(1)
    above = probabilities >= thresholds  # classes each image is confidently in
    above[torch.arange(count), labels] = False
    candidates = torch.where(above, probabilities, torch.full_like(probabilities, -1.0))
    suggested_probability, suggested = candidates.max(dim=1)
    checkable = members[labels] >= 2
    # A tie with the given label is no evidence against it.
    suspect = checkable & (suggested_probability > given)
    issues = [
        LabelIssue(i, int(labels[i]), int(suggested[i]), float(given[i]), float(suggested_probability[i]))
        for i in torch.nonzero(suspect).flatten().tolist()
    ]
    issues.sort(key=lambda issue: (issue.given_probability, -issue.margin, issue.index))
    return issues


# -- for a run ------------------------------------------------------------------------------


@dataclass
class LabelCheckRow:
    rank: int  # 1: likeliest mistake
    path: str
    split: str
    given: str
    suggested: str
    given_probability: float
    suggested_probability: float


@dataclass
class LabelCheck:
    issues: list[LabelCheckRow]  # the surest `count` suspects
    suspects: int  # every image flagged, shown or not, but for those kept before
    checked: int  # labelled images checked
    unchecked: int  # labelled images of a class with no other labelled image
    unreadable: int
    method: str
    dataset: str
    agreement: float  # share of the checked labels the judging classifier agrees with
    kept: int = 0  # flagged images whose label a person checked and kept before: not listed

    @property
    def weak_judge(self) -> bool:
        """Most doubts then come from the classifier's own mistakes, not from the labels."""
        return self.agreement < WEAK_AGREEMENT


def check_labels_for_run(run_dir, count: int = SHOWN_ISSUES, method: str = DEFAULT_METHOD, folds: int = DEFAULT_FOLDS,
                         device: str = "auto", seed: int = 0, on_progress=None, should_cancel=None) -> LabelCheck:
    """The labelled images of the run's dataset (training and test split alike: a wrong test
    label miscounts the scores) whose label looks wrong, with the class they look like.

    Embeddings come from the run's cache, so after a classifier fit this embeds nothing.
    `should_cancel()` is asked after every batch that is embedded (EmbeddingCancelled)."""
    import unicodedata

    from fgdesk.data.labeling import confirmed_labels
    from fgdesk.evaluate.embeddings import cached_embeddings, run_embedder
    from fgdesk.evaluate.report import EvaluationError, open_run, training_samples

    if method not in METHODS:
        raise EvaluationError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    run_dir = Path(run_dir)
    net, config, checkpoint_path, index, torch_device = open_run(run_dir, device, on_progress)
    if not index.labelled():
        raise EvaluationError(f"the dataset at {index.root} has no labels to check ({index.layout} layout)")

    embed = run_embedder(net, config, index.crop_bottom, torch_device, on_progress, should_cancel)

    # The same split names as the evaluation, so both share one cache.
    parts = [("train", training_samples(index), 0.02, 0.45),
             ("test", [s for s in index.test_samples() if s.label >= 0], 0.45, 0.85)]
    vectors, labels, samples, unreadable = [], [], [], 0
    for split, split_samples, start, end in parts:
        if not split_samples:
            continue
        embedded = cached_embeddings(run_dir, checkpoint_path, split, embed(f"embedding {split} images", start, end),
                                     split_samples)
        vectors.append(embedded.vectors.float())
        labels.append(embedded.labels)
        samples += [split_samples[int(i)] for i in embedded.sample_indices]
        unreadable += len(embedded.bad)
    if not samples:
        raise EvaluationError(f"none of the labelled images of {index.root} could be read")
    all_vectors, all_labels = torch.cat(vectors), torch.cat(labels)
    num_classes = len(index.classes)
    members = torch.bincount(all_labels, minlength=num_classes)
    if int(members.max()) < 2:
        raise EvaluationError(
            f"no label of {index.root} can be checked: each class has a single labelled image, and a label is "
            "judged by the other images of its class")
    if on_progress:
        on_progress("checking the labels", 0.85)

    def fitted(done: int, total: int) -> None:
        if on_progress:
            on_progress("checking the labels", 0.85 + 0.15 * done / max(1, total))

    probabilities = cross_validated_probabilities(all_vectors, all_labels, num_classes, method, folds, seed, fitted)
    found = find_label_issues(probabilities, all_labels)
    # Labels a person already checked and kept (Keep, or the table's label column) are not listed again.
    confirmed = confirmed_labels(index.root)

    def kept(issue: LabelIssue) -> bool:
        try:
            relative = Path(samples[issue.index].path).relative_to(index.root).as_posix()
        except ValueError:
            return False
        return confirmed.get(unicodedata.normalize("NFC", relative)) == index.classes[issue.given]

    listed = [issue for issue in found if not kept(issue)] if confirmed else found
    kept_count, found = len(found) - len(listed), listed
    checkable = members[all_labels] >= 2
    unchecked = int((~checkable).sum())
    agreement = float((probabilities.argmax(dim=1) == all_labels)[checkable].float().mean())
    log.info("label check of %s: %d of %d labelled images look mislabelled (%s)", index.root, len(found),
             len(samples) - unchecked, method)
    rows = [
        LabelCheckRow(rank, str(samples[issue.index].path), samples[issue.index].split,
                      index.classes[issue.given], index.classes[issue.suggested],
                      issue.given_probability, issue.suggested_probability)
        for rank, issue in enumerate(found[: max(0, count)], start=1)
    ]
    if on_progress:
        on_progress("done", 1.0)
    return LabelCheck(rows, len(found), len(samples) - unchecked, unchecked, unreadable, method, str(index.root),
                      agreement, kept_count)


def write_label_check_csv(path, check: LabelCheck) -> None:
    import csv
    import io
    import os

    from fgdesk.fileio import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    # `label` is left empty: the user writes the right class (or the given one, to keep it), and
    # `fgdesk label RUN --csv FILE` moves the image into that class's folder.
    writer.writerow(["rank", "path", "split", "given", "suggested", "given_probability", "suggested_probability", "label"])
    for row in check.issues:
        writer.writerow([row.rank, os.path.abspath(row.path), row.split, row.given, row.suggested,
                         f"{row.given_probability:.4f}", f"{row.suggested_probability:.4f}", ""])
    atomic_write_text(path, buffer.getvalue())
