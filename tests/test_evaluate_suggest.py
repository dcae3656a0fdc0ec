"""Suggestions of images to label: typical members of the groups no label covers yet."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fgdesk.evaluate.suggest import suggest_to_label


def groups(sizes: list[int], dim: int = 24, spread: float = 0.25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(len(sizes), dim, generator=generator), dim=1)
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    points = centres[labels] + spread * torch.randn(len(labels), dim, generator=generator) / dim ** 0.5
    return points, labels


def test_suggestions_cover_the_groups_without_labels_with_typical_images():
    points, labels = groups([60, 50, 40, 30, 30, 20, 20, 15, 12, 10])
    outliers = F.normalize(torch.randn(6, points.shape[1], generator=torch.Generator().manual_seed(5)), dim=1) * 3
    pool = torch.cat([points, outliers])
    pool_labels = torch.cat([labels, torch.full((6,), -1)])
    labelled = torch.cat([points[labels == k][:2] for k in (0, 1, 2)])  # groups 0-2 already have labels
    suggestions = suggest_to_label(pool, labelled, 7)
    picked = pool_labels[[s.index for s in suggestions]].tolist()
    assert sorted(picked) == [3, 4, 5, 6, 7, 8, 9]  # one per uncovered group, no outlier
    assert all(s.cluster_size > 0 and s.typicality > 0 for s in suggestions)
    # Each is typical of its group: nearer its group's centre than most of its members.
    for s in suggestions:
        members = F.normalize(points[labels == pool_labels[s.index]], dim=1)
        centre = F.normalize(members.mean(dim=0), dim=0)
        closeness = members @ centre
        assert float(F.normalize(pool[s.index], dim=0) @ centre) >= float(closeness.quantile(0.5))
    again = suggest_to_label(pool, labelled, 7)
    assert [s.index for s in again] == [s.index for s in suggestions]


def test_with_no_labels_the_suggestions_cover_more_classes_than_random_picks():
    points, labels = groups([80, 60, 40, 30, 20, 15, 10, 8, 6, 5], seed=1)
    suggested = {int(labels[s.index]) for s in suggest_to_label(points, points[:0], 10)}
    generator = torch.Generator().manual_seed(0)
    random_cover = [len(set(labels[torch.randperm(len(points), generator=generator)[:10]].tolist())) for _ in range(50)]
    assert len(suggested) >= 9 and len(suggested) > sum(random_cover) / len(random_cover) + 2


def test_a_budget_larger_than_the_groups_goes_on_by_distance_and_never_repeats():
    points, _ = groups([20, 20, 20], seed=2)
    suggestions = suggest_to_label(points, points[:3], 40)
    indices = [s.index for s in suggestions]
    assert len(indices) == 40 and len(set(indices)) == 40
    assert suggest_to_label(points, points[:0], 0) == []
    assert len(suggest_to_label(points[:5], points[:0], 9)) == 5


def test_duplicates_do_not_cut_the_suggestions_short():
    """Three distinct images, each copied ten times: after one per group, the rest come by
    distance, where a copy of a taken image is at distance 0 (or a rounding error below)."""
    distinct = F.normalize(torch.randn(3, 24, generator=torch.Generator().manual_seed(2)), dim=1)  # rounds 1 - x·x below 0
    pool = distinct.repeat(10, 1)
    for seed in range(20):
        suggestions = suggest_to_label(pool, pool[:0], 8, seed=seed)
        assert len({s.index for s in suggestions}) == 8
