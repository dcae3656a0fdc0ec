"""Finding wrong labels: planted mistakes come first, with their true class suggested, and a
run's check reads its dataset's images and writes a table `fgdesk label` can apply."""
from __future__ import annotations

import csv
import shutil

import pytest
import torch

from helpers_runs import make_colour_data, make_run

from fgdesk.data.labeling import DatasetLabeler, apply_label_table
from fgdesk.evaluate.label_check import (
    check_labels_for_run,
    cross_validated_probabilities,
    find_label_issues,
    stratified_folds,
    write_label_check_csv,
)


def _clusters(classes=8, per_class=30, dim=32, spread=0.9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=generator), labels


def _plant(labels, classes, count, seed=1):
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(labels), generator=generator)[:count]
    noisy = labels.clone()
    noisy[chosen] = (labels[chosen] + torch.randint(1, classes, (count,), generator=generator)) % classes
    return noisy, set(chosen.tolist())


@pytest.mark.parametrize("method", ["linear", "knn"])
def test_planted_mistakes_come_first_with_their_true_class(method):
    vectors, truth = _clusters()
    noisy, planted = _plant(truth, 8, 12)
    issues = find_label_issues(cross_validated_probabilities(vectors, noisy, 8, method), noisy)
    first = [issue.index for issue in issues[: len(planted)]]
    # Random ranking would put 5% of mistakes first (12 of 240); these clusters overlap a
    # little, so a few right labels may come before a mistake, but most must be found.
    assert len(planted & set(first)) >= 9, (method, sorted(planted), first)
    found = [issue for issue in issues if issue.index in planted]
    assert sum(issue.suggested == int(truth[issue.index]) for issue in found) >= 0.8 * len(found)
    assert all(issue.suggested != issue.given == int(noisy[issue.index]) for issue in issues)
    assert all(issue.suggested_probability > issue.given_probability for issue in issues)
    ranked = [issue.given_probability for issue in issues]
    assert ranked == sorted(ranked)


def test_clean_well_separated_labels_raise_no_doubt():
    vectors, labels = _clusters(spread=0.2)
    assert find_label_issues(cross_validated_probabilities(vectors, labels, 8, "linear"), labels) == []


def test_probabilities_never_come_from_a_classifier_that_saw_the_label():
    # Every image is the only one of its class: a classifier that saw it would be sure of
    # its label; one that did not has never seen its class at all.
    vectors = torch.eye(12) + 0.01 * torch.randn(12, 12, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(12)
    knn = cross_validated_probabilities(vectors, labels, 12, "knn")
    assert float(knn.gather(1, labels.view(-1, 1)).max()) == 0.0
    linear = cross_validated_probabilities(vectors, labels, 12, "linear", folds=3)
    assert float(linear.gather(1, labels.view(-1, 1)).max()) < 1 / 12


def test_a_class_with_one_labelled_image_is_not_checked():
    vectors, labels = _clusters(classes=3, per_class=10, spread=0.3)
    labels = torch.cat([labels, torch.tensor([3])])
    vectors = torch.cat([vectors, vectors[:1]])  # looks exactly like class 0, but is class 3's only image
    issues = find_label_issues(cross_validated_probabilities(vectors, labels, 4, "knn"), labels)
    assert all(issue.index != len(labels) - 1 for issue in issues)


def test_folds_hold_every_class_evenly():
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 3)
    folds = stratified_folds(labels, 5, seed=3)
    for cls in (0, 1, 2):
        counts = torch.bincount(folds[labels == cls], minlength=5)
        assert int(counts.max()) - int(counts.min()) <= 1
    assert torch.equal(folds, stratified_folds(labels, 5, seed=3))


# -- a run ---------------------------------------------------------------------------------


@pytest.fixture
def colour_run(tmp_path):
    data = make_colour_data(tmp_path / "colours")
    return make_run(tmp_path / "runs", data, attention="none"), data


def test_a_run_finds_the_red_image_filed_as_blue_and_fgdesk_label_moves_it(colour_run, tmp_path):
    run, data = colour_run
    wrong = data / "train" / "blue" / "red0.png"
    shutil.move(data / "train" / "red" / "red0.png", wrong)
    wrong_test = data / "test" / "red" / "blue1.png"
    shutil.move(data / "test" / "blue" / "blue1.png", wrong_test)

    from fgdesk.evaluate.embeddings import EmbeddingCancelled

    with pytest.raises(EmbeddingCancelled):  # as Clear or another run in the app does it
        check_labels_for_run(run, device="cpu", should_cancel=lambda: True)
    check = check_labels_for_run(run, count=10, method="linear", device="cpu")
    assert check.checked == 22 and check.unchecked == 0 and check.unreadable == 0
    first_two = {(row.path, row.split, row.given, row.suggested) for row in check.issues[:2]}
    assert first_two == {(str(wrong), "train", "blue", "red"), (str(wrong_test), "test", "red", "blue")}

    # A label a person checked and kept is not listed again, until the confirmation is taken back.
    labeler = DatasetLabeler(data)
    kept = labeler.confirm(wrong_test)
    again = check_labels_for_run(run, count=10, method="linear", device="cpu")
    assert str(wrong_test) not in {row.path for row in again.issues} and str(wrong) == again.issues[0].path
    assert (again.kept, again.suspects) == (1, check.suspects - 1)
    labeler.undo(kept)
    assert str(wrong_test) in {row.path for row in check_labels_for_run(run, count=10, device="cpu").issues}

    table = tmp_path / "issues.csv"
    write_label_check_csv(table, check)
    rows = list(csv.DictReader(open(table, encoding="utf-8")))
    assert [row["label"] for row in rows] == [""] * len(rows)
    for row in rows:  # the user's verdict: the two real mistakes take the suggestion, any other keeps its label
        row["label"] = row["suggested"] if row["path"] in (str(wrong), str(wrong_test)) else row["given"]
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = apply_label_table(DatasetLabeler(data), table)
    assert result.errors == [] and result.kept == len(rows) - 2
    kept_rows = {row["path"] for row in rows} - {str(wrong), str(wrong_test)}
    assert {(m.previous_class, m.class_name, m.target) for m in result.moves} == {
        ("blue", "red", data / "train" / "red" / "red0.png"), ("red", "blue", data / "test" / "blue" / "blue1.png")}
    assert not wrong.exists() and not wrong_test.exists()

    # The corrected images are no longer doubted, and the labels the table kept are not listed.
    after = check_labels_for_run(run, count=10, method="knn", device="cpu")
    assert not {row.path for row in after.issues} & (kept_rows | {str(wrong), str(wrong_test)})


def test_a_dataset_with_one_labelled_image_per_class_is_refused_with_the_reason(tmp_path):
    from fgdesk.evaluate.report import EvaluationError

    data = make_colour_data(tmp_path / "colours", per_class=1, test_per_class=0)
    run = make_run(tmp_path / "runs", data, attention="none")
    with pytest.raises(EvaluationError, match="each class has a single labelled image"):
        check_labels_for_run(run, device="cpu")
