"""The deletion check of the heatmaps: the class-evidence map must follow the classifier."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fgdesk.evaluate.faithfulness import curve_area, deletion_frames, score_faithfulness
from helpers_runs import make_run, one_thread

_threads = pytest.fixture(autouse=True)(one_thread)


def test_deletion_frames_remove_pixels_in_the_order_given():
    image = torch.arange(1, 3 * 4 * 4 + 1, dtype=torch.float32).view(3, 4, 4)
    order = torch.arange(15, -1, -1)  # bottom-right pixel first
    frames = deletion_frames(image, order, steps=4)
    assert frames.shape == (5, 3, 4, 4)
    assert torch.equal(frames[0], image) and not frames[4].any()
    assert not frames[1][:, 3].any() and torch.equal(frames[1][:, :3], image[:, :3])  # the last row went first
    assert curve_area(np.array([1.0, 1.0, 1.0])) == pytest.approx(1.0)
    assert curve_area(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.25)


def test_the_class_evidence_order_fades_the_predicted_class_faster_than_random(tmp_path):
    """Grey noise with one red or blue square at a random place: the square is all that tells
    the classes apart, so a map that follows the classifier deletes it first."""
    from fgdesk.data.layouts import detect
    from fgdesk.evaluate.embeddings import compute_embeddings, load_encoder
    from fgdesk.evaluate.linear import fit_linear

    rng = np.random.default_rng(0)
    for split, count in (("train", 10), ("test", 6)):
        for name, colour in (("blue", (20, 40, 220)), ("red", (220, 30, 20))):
            for i in range(count):
                pixels = np.clip(128 + rng.integers(-20, 21, (64, 64, 3)), 0, 255).astype(np.uint8)
                y, x = rng.integers(0, 48, 2)
                pixels[y:y + 16, x:x + 16] = colour
                path = tmp_path / "data" / split / name / f"{name}{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
    run = make_run(tmp_path / "runs", tmp_path / "data")  # random init separates colours well enough
    net, config, _ = load_encoder(run, device="cpu")
    index = detect(tmp_path / "data", check_images=False)
    embeddings = compute_embeddings(net, index.train_samples(), config.data.eval_size)
    probe = fit_linear(embeddings.vectors, embeddings.labels, 2, seed=0)
    seen = []
    score = score_faithfulness(net, index.test_samples(), 0, config.data.eval_size, probe.weight, probe.bias,
                               images=12, on_progress=lambda done, total: seen.append((done, total)))
    assert score is not None and score.images == 12 and seen[-1] == (12, 12)
    assert set(score.deletion) == {"class evidence", "fused attention", "centre first", "random"}
    assert all(0.0 <= area <= 1.0 for area in score.deletion.values())
    assert score.deletion["class evidence"] < score.deletion["random"] - 0.05
    assert score.deletion["class evidence"] < score.deletion["centre first"]
    assert score.evidence_beats_random >= 0.75
