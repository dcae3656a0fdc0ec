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
    first = cached_embeddings(tmp_path, checkpoint, "train", lambda subset: computed, before)
    assert torch.equal(first.labels, computed.labels)

    after = [Sample(s.path, s.label + 1, s.split) for s in before]  # "aaa_new" now sorts first

    def must_not_run(subset) -> Embeddings:
        raise AssertionError("the cache should have answered")

    again = cached_embeddings(tmp_path, checkpoint, "train", must_not_run, after)
    assert torch.equal(again.vectors, vectors) and again.bad == [3]
    assert again.labels.tolist() == [1, 2, 3, 2, 3]


def test_labelling_a_few_images_embeds_only_those_again(tmp_path):
    """A label moves the file; the next evaluation must embed the moved files alone, reuse
    every other vector as it was, and notice an image changed in place."""
    import os

    from PIL import Image

    from fgdesk.data.layouts import Sample
    from fgdesk.evaluate.embeddings import Embeddings, cached_embeddings

    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"weights")
    paths = []
    for k in range(6):
        paths.append(tmp_path / "unlabeled" / f"{k}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (k, k, k)).save(paths[-1])
    asked: list[list] = []

    def fake_embed(subset) -> Embeddings:  # one distinct vector per file, by its pixel value
        asked.append([s.path for s in subset])
        values = [float(Image.open(s.path).getpixel((0, 0))[0]) for s in subset]
        return Embeddings(torch.tensor([[v, 1.0] for v in values]), torch.zeros(len(subset), dtype=torch.long),
                          torch.arange(len(subset)), [])

    samples = [Sample(p, -1, "unlabeled") for p in paths]
    first = cached_embeddings(tmp_path, checkpoint, "unlabeled", fake_embed, samples)
    assert len(asked) == 1 and first.vectors[:, 0].tolist() == [0, 1, 2, 3, 4, 5]

    moved = tmp_path / "class_a" / "4.png"  # labelled: same file, new path
    moved.parent.mkdir()
    os.replace(paths[4], moved)
    Image.new("RGB", (8, 8), (9, 9, 9)).save(paths[1])  # edited in place
    os.utime(paths[1], ns=(1, 10**18))  # a clearly different modification time
    samples = [Sample(p, 0 if p == moved else -1, "x") for p in [paths[0], paths[1], paths[2], moved, paths[3], paths[5]]]
    again = cached_embeddings(tmp_path, checkpoint, "unlabeled", fake_embed, samples)
    assert sorted(map(str, asked[-1])) == sorted(map(str, [paths[1], moved]))
    assert again.vectors[:, 0].tolist() == [0, 9, 2, 4, 3, 5] and again.sample_indices.tolist() == list(range(6))
    assert again.labels.tolist() == [-1, -1, -1, 0, -1, -1]

    def must_not_run(subset) -> Embeddings:
        raise AssertionError(f"the cache should have answered, asked for {subset}")

    assert torch.equal(cached_embeddings(tmp_path, checkpoint, "unlabeled", must_not_run, samples).vectors, again.vectors)
    assert len(list((tmp_path / "cache").glob("embeddings-unlabeled-*.pt"))) == 1


def test_a_split_with_no_readable_image_keeps_the_network_width(tmp_path):
    from fgdesk.data.layouts import Sample
    from fgdesk.evaluate.embeddings import Embeddings, cached_embeddings

    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"weights")

    def none_readable(subset) -> Embeddings:
        empty = torch.zeros(0, dtype=torch.long)
        return Embeddings(torch.zeros(0, 7), empty, empty, list(range(len(subset))))

    samples = [Sample(tmp_path / f"gone{k}.png", 0, "test") for k in range(2)]
    result = cached_embeddings(tmp_path, checkpoint, "test", none_readable, samples)
    assert tuple(result.vectors.shape) == (0, 7) and result.bad == [0, 1]
