"""Embeddings of decoded-once images equal those computed from the files."""
from __future__ import annotations

import torch

from fgdesk.config import ModelConfig
from fgdesk.data.layouts import detect
from fgdesk.data.synthetic import make_demo_dataset
from fgdesk.evaluate.embeddings import compute_embeddings, decode_images, embed_decoded
from fgdesk.model.network import FineGrainedNet


def test_decoded_images_embed_like_the_files_and_skip_the_same_bad_ones(tmp_path):
    data = make_demo_dataset(tmp_path / "demo", num_classes=3, per_class=4, size=48, seed=2)
    samples = list(detect(str(data), check_images=False).samples)
    samples[3].path.write_bytes(b"not an image")
    torch.manual_seed(0)
    net = FineGrainedNet(ModelConfig(stages=[3, 4], proj_hidden=64, proj_dim=32)).eval()

    from_files = compute_embeddings(net, samples, 40, batch_size=5)
    decoded = decode_images(samples, 40, batch_size=5)
    assert decoded.pixels.dtype == torch.uint8 and decoded.pixels.shape == (len(samples) - 1, 3, 40, 40)
    kept = embed_decoded(net, decoded, batch_size=7)
    assert from_files.bad == kept.bad == [3]
    assert torch.equal(from_files.labels, kept.labels) and torch.equal(from_files.sample_indices, kept.sample_indices)
    assert torch.allclose(from_files.vectors, kept.vectors, atol=1e-5)
    # Distinct images give distinct embeddings: the check above compares real content.
    assert torch.cdist(kept.vectors, kept.vectors).fill_diagonal_(1.0).min() > 1e-4


def test_cached_embeddings_take_their_labels_from_the_current_samples(tmp_path):
    """A class folder added since the cache was written renumbers the labels: the cached
    vectors stay valid, but their labels must be the new ones, or names shift by one."""
    from fgdesk.data.layouts import Sample
    from fgdesk.evaluate.embeddings import Embeddings, cached_embeddings

    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"weights")
    before = [Sample(tmp_path / f"{k}.png", k % 3, "train") for k in range(6)]
    vectors = torch.randn(5, 4)
    computed = Embeddings(vectors, torch.tensor([0, 1, 2, 1, 2]), torch.tensor([0, 1, 2, 4, 5]), [3])
    first = cached_embeddings(tmp_path, checkpoint, "train", lambda: computed, before)
    assert torch.equal(first.labels, computed.labels)

    after = [Sample(s.path, s.label + 1, s.split) for s in before]  # "aaa_new" now sorts first

    def must_not_run() -> Embeddings:
        raise AssertionError("the cache should have answered")

    again = cached_embeddings(tmp_path, checkpoint, "train", must_not_run, after)
    assert torch.equal(again.vectors, vectors) and again.bad == [3]
    assert again.labels.tolist() == [1, 2, 3, 2, 3]
