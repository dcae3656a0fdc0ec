"""Predictor on untrained runs: top-k, neighbours, maps at image resolution, bad files, CSV."""
from __future__ import annotations

import copy
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from fgdesk.evaluate.heatmaps import forward_with_maps, network_input
from fgdesk.infer.predictor import CONSTANT_NOTE, Prediction, Predictor
from fgdesk.train import runs
from helpers_runs import NUM_CLASSES, make_demo_data, make_run, one_thread

_threads = pytest.fixture(autouse=True)(one_thread)
MAP_KEYS = {"stage2", "stage3", "stage4", "fused", "evidence", "contrast"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    return root, make_demo_data(root / "data")


@pytest.fixture(scope="module")
def predictor(demo):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    root, data = demo
    run_dir = make_run(root / "runs", data, lively_attention=True)
    loaded = Predictor.load(run_dir, device="cpu")
    torch.set_num_threads(previous)
    return loaded


@pytest.fixture
def sample_image(demo):
    return sorted((demo[1] / "test").rglob("*.png"))[0]


def test_loading_fits_the_missing_classifier_on_the_labelled_dataset(predictor):
    assert predictor.mode == "classifier"
    assert len(predictor.class_names) == NUM_CLASSES
    assert (predictor.run_dir / runs.CLASSIFIER_FILE).is_file()


def test_prediction_has_topk_neighbours_and_every_map_at_image_resolution(predictor, sample_image):
    (prediction,) = predictor.predict([sample_image], topk=5)
    assert isinstance(prediction, Prediction) and prediction.error is None
    assert prediction.source == str(sample_image) and prediction.image.mode == "RGB"
    assert len(prediction.topk) == 5
    probabilities = [p for _, p in prediction.topk]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0 + 1e-6
    assert all(name in predictor.class_names for name, _ in prediction.topk)
    assert len(prediction.neighbours) == 5
    path, name, similarity = prediction.neighbours[0]
    assert "train" in path and name in predictor.class_names and -1.0 <= similarity <= 1.0 + 1e-6
    assert set(prediction.maps) == MAP_KEYS
    for heatmap in prediction.maps.values():
        assert heatmap.shape == (prediction.image.height, prediction.image.width)
        assert heatmap.dtype == np.float32 and heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert prediction.evidence_class == prediction.topk[0][0]
    assert prediction.contrast_class == prediction.topk[1][0]  # the runner-up it is set against
    assert not prediction.map_notes  # lively attention: every map has something to show
    # Set against another class on request; the top class itself falls back to the runner-up.
    third = prediction.topk[2][0]
    (against,) = predictor.predict([sample_image], against=third)
    assert against.contrast_class == third and against.topk == prediction.topk
    assert not np.allclose(against.maps["contrast"], prediction.maps["contrast"])
    np.testing.assert_allclose(against.maps["evidence"], prediction.maps["evidence"], atol=1e-6)
    (itself,) = predictor.predict([sample_image], against=prediction.topk[0][0])
    assert itself.contrast_class == prediction.topk[1][0]
    # Another class favoured (a doubted label's suggestion) over the top class.
    (turned,) = predictor.predict([sample_image], favour=third, against=prediction.topk[0][0])
    assert (turned.contrast_favoured, turned.contrast_class) == (third, prediction.topk[0][0])
    assert prediction.contrast_favoured == prediction.topk[0][0]
    with pytest.raises(ValueError, match="not one of the run's classes"):
        predictor.predict([sample_image], against="no such class")


def test_the_channels_last_layout_keeps_the_scores_and_maps_of_the_plain_layout(predictor, sample_image):
    assert predictor.net.backbone.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = copy.deepcopy(predictor.net).to(memory_format=torch.contiguous_format)
    image = Image.open(sample_image).convert("RGB")
    reference = forward_with_maps(plain, network_input(image, predictor.eval_size).unsqueeze(0), predictor.weight, predictor.bias)
    (prediction,) = predictor.predict([image], topk=3)
    expected = predictor._probabilities(reference.embedding, reference.logits)[0].topk(3)
    assert [name for name, _ in prediction.topk] == [predictor.class_names[i] for i in expected.indices.tolist()]
    assert [p for _, p in prediction.topk] == pytest.approx(expected.values.tolist(), abs=1e-4)
    for stage, attention in zip(reference.stages, reference.attention):
        np.testing.assert_allclose(prediction.raw_maps[f"stage{stage}"], attention[0].numpy(), atol=1e-5)


def test_maps_cover_the_centre_crop_of_a_non_square_image_and_pil_input(predictor, sample_image):
    wide = Image.open(sample_image).convert("RGB").resize((120, 64))
    (prediction,) = predictor.predict([wide])
    assert prediction.error is None and prediction.source == "<image>"
    assert prediction.raw_maps["stage4"].shape == (2, 2)  # the network grid of the 64 x 64 crop
    # The crop of the 135 x 72 resize is its middle 64 x 64: about the middle 57 x 57 of the image.
    left, top, right, bottom = prediction.frame
    assert abs(right - left - 57) <= 1 and abs(bottom - top - 57) <= 1
    assert abs((left + right) / 2 - 60) <= 1 and abs((top + bottom) / 2 - 32) <= 1
    for key, heatmap in prediction.maps.items():
        assert heatmap.shape == (64, 120)
        inside = heatmap[top:bottom, left:right]
        assert inside.max() == pytest.approx(1.0) and heatmap.sum() == pytest.approx(inside.sum()), key  # nothing outside


def test_a_prediction_is_the_one_the_test_score_counts(predictor, demo):
    """Inspect and `fgdesk predict` see the pixels the classifier was fitted and scored on, so
    their class for a test image is the one its row of the confusion matrix counts."""
    from fgdesk.data.layouts import detect
    from fgdesk.evaluate.embeddings import compute_embeddings

    index = detect(demo[1], check_images=False)
    test = [sample for sample in index.samples if sample.split == "test"]
    scored = compute_embeddings(predictor.net, test, predictor.eval_size)
    counted = (scored.vectors @ predictor.weight.t() + predictor.bias).argmax(dim=1)
    shown = predictor.predict([sample.path for sample in test], topk=1)
    assert [p.topk[0][0] for p in shown] == [predictor.class_names[i] for i in counted.tolist()]
    rows = {row[0]: row[1] for row in _csv_rows(predictor, [sample.path for sample in test])}
    assert [rows[str(sample.path)] for sample in test] == [p.topk[0][0] for p in shown]


def _csv_rows(predictor, paths):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        predictor.predict_to_csv(paths, f"{folder}/out.csv")
        with open(f"{folder}/out.csv", newline="") as handle:
            return list(csv.reader(handle))[1:]


def test_a_corrupt_file_is_skipped_with_its_reason(predictor, sample_image, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    results = predictor.predict([broken, sample_image])
    assert results[0].error and results[0].image is None and results[0].topk == []
    assert results[1].error is None


def test_shared_normalisation_puts_all_scales_on_one_peak(predictor, sample_image):
    (shared,) = predictor.predict([sample_image], normalize="shared")
    peaks = [float(shared.maps[k].max()) for k in ("stage2", "stage3", "stage4")]
    assert max(peaks) == pytest.approx(1.0) and min(peaks) < 1.0
    assert shared.maps["fused"].max() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        predictor.predict([sample_image], normalize="sideways")


def test_uniform_attention_is_reported_instead_of_drawn(demo, sample_image):
    root, data = demo
    run_dir = make_run(root / "runs", data, attention="none")
    (prediction,) = Predictor.load(run_dir, device="cpu").predict([sample_image])
    for key in ("stage2", "stage3", "stage4", "fused"):
        assert prediction.map_notes[key].startswith(CONSTANT_NOTE)
        assert not prediction.maps[key].any()
    assert "evidence" not in prediction.map_notes and prediction.maps["evidence"].max() == pytest.approx(1.0)


def test_csv_has_one_row_per_file_in_order_with_errors(predictor, demo, tmp_path):
    images = sorted((demo[1] / "test").rglob("*.png"))[:5]
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    paths = [images[0], broken, *images[1:]]
    progress = []
    count = predictor.predict_to_csv(paths, tmp_path / "out.csv", on_progress=lambda done, total: progress.append((done, total)), batch_size=2)
    with open(tmp_path / "out.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert count == len(rows) == 6 and [row["path"] for row in rows] == [str(p) for p in paths]
    assert rows[1]["error"] and not rows[1]["top1"]
    (single,) = predictor.predict([images[0]])
    assert rows[0]["top1"] == single.topk[0][0]
    assert float(rows[0]["prob"]) == pytest.approx(single.topk[0][1], abs=1e-4)
    assert len(rows[0]["top5"].split(";")) == 5 and not rows[0]["error"]
    assert progress[-1] == (6, 6)


def test_embeddings_are_saved_for_the_images_read_as_csv_or_npz(predictor, demo, tmp_path):
    from fgdesk.data.images import load_rgb
    from fgdesk.infer.predictor import save_embeddings

    images = sorted((demo[1] / "test").rglob("*.png"))[:4]
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    paths = [images[0], broken, *images[1:]]
    assert predictor.predict_to_csv(paths, None, embeddings_path=tmp_path / "emb.npz", batch_size=3) == 5
    with np.load(tmp_path / "emb.npz", allow_pickle=False) as arrays:  # nothing pickled: plain arrays
        saved_paths, vectors, run = list(arrays["paths"]), arrays["embeddings"], str(arrays["run"])
    assert saved_paths == [str(p) for p in images] and run == predictor.run_dir.name  # the unreadable file is left out
    assert vectors.dtype == np.float32 and vectors.shape == (4, predictor.net.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    with torch.no_grad():  # the same vector as the network gives for the image alone
        alone = predictor.net.embed(network_input(load_rgb(images[2]), predictor.eval_size).unsqueeze(0)).float()
    np.testing.assert_allclose(vectors[2], alone[0].numpy(), atol=1e-4)

    # The CSV holds the same numbers, with a column per dimension; the classification CSV is written too.
    predictor.predict_to_csv(images[:2], tmp_path / "out.csv", embeddings_path=tmp_path / "emb.csv")
    with open(tmp_path / "emb.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:3] == ["path", "e0", "e1"] and len(rows[0]) == 1 + predictor.net.embed_dim
    assert [row[0] for row in rows[1:]] == [str(p) for p in images[:2]]
    np.testing.assert_allclose(np.array(rows[1][1:], dtype=np.float32), vectors[0], atol=1e-5)
    assert (tmp_path / "out.csv").is_file()
    with pytest.raises(ValueError, match=".csv or .npz"):
        save_embeddings(tmp_path / "emb.txt", [], np.zeros((0, 3)), "run")


def test_csv_stops_when_cancelled(predictor, demo, tmp_path):
    images = sorted((demo[1] / "test").rglob("*.png"))
    count = predictor.predict_to_csv(images, tmp_path / "cancelled.csv", should_cancel=lambda: True)
    assert count == 0
    assert (tmp_path / "cancelled.csv").read_text().startswith("path,top1")


def test_without_a_classifier_knn_votes_give_the_topk(demo, sample_image, monkeypatch):
    from fgdesk.evaluate.report import EvaluationError
    from fgdesk.infer import predictor as predictor_module

    def refuse(*args, **kwargs):
        raise EvaluationError("no classifier today")

    monkeypatch.setattr(predictor_module, "fit_classifier", refuse)
    root, data = demo
    knn = Predictor.load(make_run(root / "runs", data, lively_attention=True), device="cpu")
    assert knn.mode == "knn" and len(knn.class_names) == NUM_CLASSES
    (prediction,) = knn.predict([sample_image], topk=5)
    assert len(prediction.topk) == 5 and sum(p for _, p in prediction.topk) <= 1.0 + 1e-6
    assert prediction.evidence_class == prediction.topk[0][0]
    assert prediction.contrast_class == prediction.topk[1][0]  # by kNN vote, against its class prototype
    assert set(prediction.maps) == MAP_KEYS and "contrast" not in prediction.map_notes


def test_an_unlabeled_run_still_finds_neighbours_and_maps(tmp_path, demo, sample_image):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, image in enumerate(sorted((demo[1] / "train").rglob("*.png"))[:8]):
        (photos / f"{index}.png").write_bytes(image.read_bytes())
    unlabeled = Predictor.load(make_run(tmp_path / "runs", photos, lively_attention=True), device="cpu")
    assert unlabeled.mode == "none" and unlabeled.class_names == []
    (prediction,) = unlabeled.predict([sample_image])
    assert prediction.topk == [] and len(prediction.neighbours) == 5
    assert all(name == "" for _, name, _ in prediction.neighbours)
    assert set(prediction.maps) == MAP_KEYS  # evidence explains the similarity to the nearest image
    assert prediction.contrast_class is None and "no classes to set apart" in prediction.map_notes["contrast"]


def test_a_classifier_fitted_on_an_older_checkpoint_is_refitted(demo):
    from fgdesk.evaluate.report import checkpoint_fingerprint
    from fgdesk.train.checkpoint import checkpoint_config, load_checkpoint, save_checkpoint

    root, data = demo
    run_dir = make_run(root / "runs", data)
    Predictor.load(run_dir, device="cpu")
    checkpoint = runs.last_checkpoint(run_dir)
    document = load_checkpoint(checkpoint)
    save_checkpoint(checkpoint, {"model": document["model"], "epoch": 1, "global_step": 10}, checkpoint_config(document))
    Predictor.load(run_dir, device="cpu")  # training went on: the head must follow
    classifier = load_checkpoint(run_dir / runs.CLASSIFIER_FILE, kind="classifier")
    assert classifier["source_fingerprint"] == checkpoint_fingerprint(checkpoint)


def test_csv_decodes_big_jpegs_reduced_and_scores_them_as_the_full_decode(predictor, sample_image, tmp_path, monkeypatch):
    from fgdesk.infer import predictor as predictor_module

    small = Image.open(sample_image).convert("RGB")
    big = tmp_path / "big.jpg"
    small.resize((small.width * 8, small.height * 8), Image.Resampling.BICUBIC).save(big, quality=95)
    sizes: dict[int, tuple[int, int]] = {}
    original = predictor_module.load_rgb

    def recording(path, *args, **kwargs):
        image = original(path, *args, **kwargs)
        sizes[kwargs.get("min_short_side", 0)] = image.size
        return image

    monkeypatch.setattr(predictor_module, "load_rgb", recording)
    predictor.predict_to_csv([big], tmp_path / "big.csv")
    (shown,) = predictor.predict([big])  # the Inspect view: the full image, for its overlays
    reduced_side = next(side for side in sizes if side)
    assert sizes[0] == (small.width * 8, small.height * 8)
    assert min(sizes[reduced_side]) >= reduced_side
    assert max(sizes[reduced_side]) < max(sizes[0])  # the CSV path decoded less
    with open(tmp_path / "big.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["top1"] == shown.topk[0][0]
    assert float(row["prob"]) == pytest.approx(shown.topk[0][1], abs=0.015)
