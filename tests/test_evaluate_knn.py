"""Weighted kNN on frozen embeddings: the protocol, checked against a brute-force reference."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fgdesk.evaluate.knn import knn_scores, knn_top1, leave_one_out_knn_top1, topk_accuracy


def separable(num_classes: int, per_class: int, dim: int = 32, noise: float = 0.3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    vectors = centres[labels] + noise * torch.randn(len(labels), dim, generator=generator)
    return vectors, labels


def brute_force_scores(bank, bank_labels, queries, num_classes, k, temperature):
    scores = torch.zeros(len(queries), num_classes)
    bank = F.normalize(bank, dim=1)
    for row, query in enumerate(F.normalize(queries, dim=1)):
        similarities = [(float(query @ bank[i]), int(bank_labels[i])) for i in range(len(bank))]
        similarities.sort(key=lambda pair: -pair[0])
        for similarity, label in similarities[:k]:
            scores[row, label] += math.exp(similarity / temperature)
    return scores


def test_knn_beats_chance_on_separable_embeddings():
    bank, bank_labels = separable(5, 20, seed=0)
    queries, query_labels = separable(5, 10, seed=0)
    queries = queries + 0.05 * torch.randn_like(queries)
    accuracy = knn_top1(bank, bank_labels, queries, query_labels, num_classes=5)
    assert accuracy > 0.9  # chance is 0.2


def test_knn_scores_equal_a_brute_force_reference():
    bank, bank_labels = separable(4, 15, noise=1.0, seed=1)
    queries, _ = separable(4, 5, noise=1.0, seed=2)
    expected = brute_force_scores(bank, bank_labels, queries, 4, k=20, temperature=0.07)
    actual = knn_scores(bank, bank_labels, queries, 4, k=20, temperature=0.07, chunk=7)
    assert torch.allclose(actual, expected, rtol=1e-4)


def test_k_larger_than_the_bank_uses_every_training_embedding():
    bank, bank_labels = separable(3, 2, seed=3)
    queries, _ = separable(3, 1, seed=4)
    expected = brute_force_scores(bank, bank_labels, queries, 3, k=6, temperature=0.07)
    assert torch.allclose(knn_scores(bank, bank_labels, queries, 3, k=20), expected, rtol=1e-4)


def test_topk_accuracy_counts_a_hit_anywhere_in_the_top_k():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1]])
    labels = torch.tensor([2, 2])
    accuracy = topk_accuracy(scores, labels, (1, 2, 3))
    assert accuracy == {1: 0.0, 2: 0.5, 3: 1.0}


def test_leave_one_out_classifies_each_image_by_the_others_alone():
    vectors, labels = separable(4, 12, noise=1.2, seed=5)
    hits = 0
    for i in range(len(vectors)):
        others = torch.arange(len(vectors)) != i
        scores = brute_force_scores(vectors[others], labels[others], vectors[i:i + 1], 4, k=20, temperature=0.07)
        hits += int(scores.argmax(dim=1).item() == labels[i].item())
    assert round(leave_one_out_knn_top1(vectors, labels, 4) * len(vectors)) == hits
    # With itself in the bank every image would find its own vote first; left out, duplicates
    # of one image under different labels can only be told apart by chance.
    twins = torch.cat([vectors[:1], vectors[:1]])
    assert leave_one_out_knn_top1(twins, torch.tensor([0, 1]), 2) == 0.0


def test_class_prototypes_keep_what_sets_each_class_apart_and_skip_unlabelled_rows():
    from fgdesk.evaluate.knn import class_prototypes

    embeddings = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [9.0, 9.0, 9.0]])
    labels = torch.tensor([0, 0, 1, -1])
    prototypes = class_prototypes(embeddings, labels, 3)
    # Class means (1,0,1), (0,1,1) and (0,0,0) for the class without images; the shared part is taken out.
    expected = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(prototypes, expected - expected.mean(dim=0))
    assert torch.allclose(prototypes.sum(dim=0), torch.zeros(3), atol=1e-6)
