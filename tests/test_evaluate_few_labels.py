"""Scores from a few labelled images per class: the draws, their determinism, and that more labels help."""
from __future__ import annotations

import pytest
import torch

from fgdesk.evaluate.few_labels import draw_labelled, few_label_scores, parse_labels_per_class


def clustered(num_classes: int, per_class: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, 32, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return centres[labels] + spread * torch.randn(len(labels), 32, generator=generator), labels


def test_a_draw_takes_n_images_of_every_class_and_all_of_a_smaller_one():
    labels = torch.tensor([0] * 10 + [1] * 2 + [2] * 7)
    picked = draw_labelled(labels, 3, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[picked]).tolist() == [3, 2, 3]
    assert picked.unique().numel() == len(picked)
    other = draw_labelled(labels, 3, torch.Generator().manual_seed(1))
    assert not torch.equal(picked, other)  # another seed, other images


def test_more_labels_score_higher_and_the_same_call_gives_the_same_draws():
    train, train_labels = clustered(6, 30, spread=1.6, seed=0)
    test, test_labels = clustered(6, 40, spread=1.6, seed=1)
    scores = few_label_scores(train, train_labels, test, test_labels, 6, (1, 10, 30, 50), draws=4)
    assert [s.labels_per_class for s in scores] == [1, 10]  # 30 and more is the full evaluation
    one, ten = scores
    assert one.num_train == 6 and ten.num_train == 60
    assert len(one.knn_top1) == len(one.linear_top1) == 4
    assert len(set(one.linear_top1)) > 1  # the draws differ
    chance = 1 / 6
    for score in scores:
        assert min(score.knn_top1) > chance and min(score.linear_top1) > chance
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    assert mean(ten.linear_top1) > mean(one.linear_top1) + 0.1
    assert mean(ten.knn_top1) > mean(one.knn_top1) + 0.1
    again = few_label_scores(train, train_labels, test, test_labels, 6, (1, 10), draws=4)
    assert [s.as_dict() for s in again] == [s.as_dict() for s in scores]
    row = one.as_dict()
    assert row["linear_top1"]["mean"] == pytest.approx(mean(one.linear_top1)) and row["linear_top1"]["std"] > 0


@pytest.mark.parametrize("text, expected", [("1,5,10", (1, 5, 10)), (" 10, 1 ,1", (1, 10)), ("none", ()), ("", ())])
def test_parse_labels_per_class(text, expected):
    assert parse_labels_per_class(text) == expected


@pytest.mark.parametrize("text", ["1,x", "-2", "1,0"])
def test_parse_labels_per_class_rejects_bad_counts(text):
    with pytest.raises(ValueError, match="labels per class"):
        parse_labels_per_class(text)
