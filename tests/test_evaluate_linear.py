"""Linear probe: learns separable classes; its weight decay is picked on training data only."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest

from fgdesk.evaluate import linear
from fgdesk.evaluate.linear import fit_linear, stratified_split
from helpers_runs import one_thread

_threads = pytest.fixture(autouse=True)(one_thread)


def clustered(num_classes: int, per_class: int, dim: int, noise: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    vectors = F.normalize(centres[labels] + noise * torch.randn(len(labels), dim, generator=generator), dim=1)
    return vectors, labels


def test_stratified_split_is_deterministic_disjoint_and_keeps_every_class_on_both_sides():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 2 + [3])
    fit, val = stratified_split(labels, val_fraction=0.2, seed=0)
    again_fit, again_val = stratified_split(labels, val_fraction=0.2, seed=0)
    assert torch.equal(fit, again_fit) and torch.equal(val, again_val)
    assert sorted(fit.tolist() + val.tolist()) == list(range(len(labels)))
    assert [int((labels[val] == c).sum()) for c in range(4)] == [2, 1, 1, 0]  # a singleton stays in fit
    assert set(labels[fit].tolist()) == {0, 1, 2, 3}


def test_probe_learns_separable_classes_and_its_logits_act_on_raw_embeddings():
    train_x, train_y = clustered(4, 30, dim=24, noise=0.3, seed=0)
    test_x, test_y = clustered(4, 10, dim=24, noise=0.3, seed=0)  # same centres, new noise
    test_x = F.normalize(test_x + 0.02 * torch.randn(test_x.shape, generator=torch.Generator().manual_seed(9)), dim=1)
    probe = fit_linear(train_x, train_y, num_classes=4)
    assert probe.weight.shape == (4, 24) and probe.bias.shape == (4,)
    assert (probe.logits(test_x).argmax(dim=1) == test_y).float().mean() > 0.95
    assert torch.allclose(probe.logits(test_x), test_x @ probe.weight.t() + probe.bias)
    probabilities = probe.probabilities(test_x)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(test_x)), atol=1e-5)
    # Rows are centred: softmax ignores a shared shift, heatmaps need a canonical one.
    assert torch.allclose(probe.weight.sum(dim=0), torch.zeros(24), atol=1e-4)


def test_weight_decay_is_chosen_by_validation_scores_from_the_training_split(monkeypatch):
    train_x, train_y = clustered(3, 20, dim=40, noise=1.5, seed=1)
    _, val_idx = stratified_split(train_y, 0.2, seed=0)
    seen_sizes = []
    original = linear._evaluate

    def recording(x, y, weight, bias):
        seen_sizes.append(len(x))
        assert torch.equal(y, train_y[val_idx])  # scored on the held-out part of train, nothing else
        return original(x, y, weight, bias)

    monkeypatch.setattr(linear, "_evaluate", recording)
    probe = fit_linear(train_x, train_y, num_classes=3, weight_decays=(1.0, 1e-2, 1e-4))
    assert seen_sizes == [len(val_idx)] * 3
    assert probe.num_val == len(val_idx) and probe.num_train == len(train_x)
    assert set(probe.val_accuracy) == {1.0, 1e-2, 1e-4}
    best = max(probe.val_accuracy, key=lambda d: (probe.val_accuracy[d], -probe.val_loss[d]))
    assert probe.weight_decay == best


def test_too_few_examples_for_a_validation_split_fall_back_to_the_default_decay():
    x, y = clustered(3, 1, dim=8, noise=0.1, seed=2)
    probe = fit_linear(x, y, num_classes=3)
    assert probe.num_val == 0 and probe.weight_decay == linear.DEFAULT_WEIGHT_DECAY
    assert (probe.logits(x).argmax(dim=1) == y).all()


def test_labels_outside_the_class_range_are_refused():
    with pytest.raises(ValueError, match="labels must lie in"):
        fit_linear(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), num_classes=3)
