"""Weighted kNN on frozen embeddings (cosine similarity, k=20, temperature 0.07)."""
from __future__ import annotations

import torch


def knn_scores(
    train_embeddings: torch.Tensor,
    train_labels: torch.Tensor,
    query_embeddings: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores (Q, C) from similarity-weighted votes of the k nearest training embeddings.

    Embeddings need not be normalised; they are L2-normalised here. Votes are
    exp(similarity / temperature), as in the InstDisc/DINO/solo-learn protocol.
    """
    bank = torch.nn.functional.normalize(train_embeddings.float(), dim=1)
    labels = train_labels.long()
    k = min(k, len(bank))
    scores = []
    for start in range(0, len(query_embeddings), chunk):
        query = torch.nn.functional.normalize(query_embeddings[start:start + chunk].float(), dim=1)
        similarity, neighbour = (query @ bank.t()).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(len(query), num_classes, dtype=torch.float32)
        votes.scatter_add_(1, labels[neighbour], weights)
        scores.append(votes)
    return torch.cat(scores) if scores else torch.zeros(0, num_classes)


def class_prototypes(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, D): each class's mean embedding minus the mean over classes. A kNN has no weight
    vectors; these stand in for them when its class evidence is explained (what sets a
    class apart, not what every class shares). Unlabelled rows (label < 0) are left out."""
    labels = labels.long().to(embeddings.device)
    keep = labels >= 0
    sums = torch.zeros(num_classes, embeddings.shape[1], device=embeddings.device)
    sums.index_add_(0, labels[keep], embeddings[keep].float())
    counts = torch.bincount(labels[keep], minlength=num_classes).clamp_min(1).unsqueeze(1)
    prototypes = sums / counts
    return prototypes - prototypes.mean(dim=0, keepdim=True)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    if len(labels) == 0:
        return {k: float("nan") for k in ks}
    ranked = scores.argsort(dim=1, descending=True)
    return {k: (ranked[:, : min(k, scores.shape[1])] == labels.view(-1, 1)).any(dim=1).float().mean().item() for k in ks}


def knn_top1(train_embeddings, train_labels, query_embeddings, query_labels, num_classes, k=20, temperature=0.07) -> float:
    scores = knn_scores(train_embeddings, train_labels, query_embeddings, num_classes, k, temperature)
    return topk_accuracy(scores, query_labels, (1,))[1]


def leave_one_out_knn_scores(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int = 20,
                             temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Class scores (N, C) of every image from the vote of its k nearest *other* images."""
    unit = torch.nn.functional.normalize(embeddings.float(), dim=1)
    labels = labels.long()
    k = min(k, len(unit) - 1)
    scores = []
    for start in range(0, len(unit), chunk):
        similarity = unit[start:start + chunk] @ unit.t()
        rows = torch.arange(len(similarity))
        similarity[rows, rows + start] = float("-inf")  # not its own neighbour
        nearest, neighbour = similarity.topk(k, dim=1)
        votes = torch.zeros(len(similarity), num_classes, device=unit.device)
        scores.append(votes.scatter_add_(1, labels[neighbour], (nearest / temperature).exp()))
    return torch.cat(scores) if scores else torch.zeros(0, num_classes)


def leave_one_out_knn_top1(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int = 20,
                           temperature: float = 0.07) -> float:
    """kNN top-1 of every image against all the others, with the vote of `knn_scores`.

    Scoring every labelled image instead of a held-out few roughly halves the standard
    error, so small differences between runs can be told apart.
    """
    if len(embeddings) < 2:
        return float("nan")
    votes = leave_one_out_knn_scores(embeddings, labels, num_classes, k, temperature)
    return (votes.argmax(dim=1) == labels.long()).float().mean().item()
