"""Finding copies: photos saved again, mirrored or cropped into a dataset are found with the
right kind (two classes, train and test, repeated), and drawn look-alikes are not."""
from __future__ import annotations

import csv
import shutil

import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from helpers_runs import make_run

from fgdesk.data.synthetic import make_demo_dataset
from fgdesk.evaluate.duplicates import (
    cell_agreement,
    check_duplicates,
    find_duplicate_pairs,
    grey_thumbnails,
    match,
    write_duplicates_csv,
)
from fgdesk.evaluate.embeddings import EmbeddingCancelled


@pytest.fixture
def planted(tmp_path):
    """A drawn dataset (every image shows the same kind of bird, so images are look-alikes by
    design) with copies planted: a re-saved test copy of a training image, a mirrored and
    brightened copy filed under another class, an exact copy within a class, and a crop."""
    data = make_demo_dataset(tmp_path / "demo", num_classes=4, per_class=12, size=96, seed=0)
    circles = sorted((data / "train" / "class_0_circle").glob("*.png"))
    squares = sorted((data / "train" / "class_2_square").glob("*.png"))
    copies = {}
    leak = data / "test" / "class_0_circle" / "resaved.jpg"
    with Image.open(circles[0]) as image:
        image.convert("RGB").resize((80, 80)).save(leak, quality=80)
    copies["train and test"] = (leak, circles[0])
    conflict = data / "train" / "class_1_triangle" / "mirrored.png"
    with Image.open(circles[1]) as image:
        ImageEnhance.Brightness(ImageOps.mirror(image.convert("RGB"))).enhance(1.3).save(conflict)
    copies["two classes"] = (conflict, circles[1])
    repeat = data / "train" / "class_2_square" / "again.png"
    shutil.copy(squares[0], repeat)
    copies["repeated"] = (repeat, squares[0])
    crop = data / "test" / "class_2_square" / "cropped.png"
    with Image.open(squares[1]) as image:
        image.crop((4, 10, 86, 92)).save(crop)  # 85% of each side, off centre
    return data, copies, (crop, squares[1])


def _found(check) -> dict:
    return {row.kind: (row.path, row.other_path, row.how) for row in check.pairs}


def test_same_photo_copies_are_found_by_their_pixels_and_nothing_else(planted, tmp_path):
    data, copies, _crop = planted
    whole = (data / "train" / "class_3_cross" / "img_000.png").read_bytes()
    (data / "train" / "class_3_cross" / "cut.png").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    check = check_duplicates(data)
    assert not check.used_network
    # The test image is the one to look at; the mirrored, brightened copy is still the same photo.
    assert _found(check) == {kind: (str(copy), str(original), "same photo") for kind, (copy, original) in copies.items()}
    assert [row.kind for row in check.pairs] == ["two classes", "train and test", "repeated"]
    assert check.found == 3 and check.counts == {"two classes": 1, "train and test": 1, "repeated": 1}
    assert check.unreadable == 1 and check.checked == 4 * 12 + 4
    leak = next(row for row in check.pairs if row.kind == "train and test")
    assert (leak.split, leak.label, leak.other_split, leak.other_label) == ("test", "class_0_circle", "train", "class_0_circle")

    table = tmp_path / "copies.csv"
    write_duplicates_csv(table, check)
    rows = list(csv.DictReader(open(table, encoding="utf-8")))
    assert [(row["kind"], row["path"], row["copy_of"]) for row in rows] == [
        (row.kind, row.path, row.other_path) for row in check.pairs]
    assert all(float(row["match"]) >= 0.8 and row["embedding_similarity"] == "" for row in rows)


def test_a_crop_is_found_when_the_network_puts_it_beside_its_photo_and_look_alikes_are_not(planted):
    data, copies, (crop, original) = planted
    paths = sorted(data.rglob("*.png")) + sorted(data.rglob("*.jpg"))
    grey, bad = grey_thumbnails(paths)
    assert bad == []
    position = {path: i for i, path in enumerate(paths)}
    # Without a network the crop does not line up whole, so it is not claimed.
    by_pixels = {(p.first, p.second) for p in find_duplicate_pairs(grey)}
    pair = tuple(sorted((position[crop], position[original])))
    assert pair not in by_pixels

    # A network that groups each class's images (as a trained one does) proposes every image's
    # nearest look-alikes: birds drawn in the same shape and colours, which must not pass.
    labels = torch.tensor([hash(path.parent.name) % 97 for path in paths])
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.one_hot(labels, 97).float() + 0.05 * torch.randn(len(paths), 97, generator=generator)
    embeddings[position[crop]] = embeddings[position[original]] + 0.001
    pairs = {(p.first, p.second): p for p in find_duplicate_pairs(grey, embeddings)}
    assert pairs[pair].how == "cropped copy" and pairs[pair].embedding_similarity > 0.99
    planted_pairs = {tuple(sorted((position[copy], position[source]))) for copy, source in copies.values()} | {pair}
    assert set(pairs) == planted_pairs


def test_a_cropped_copy_lines_up_cell_by_cell_and_a_redrawn_shape_does_not():
    F = torch.nn.functional
    generator = torch.Generator().manual_seed(1)

    def texture(size: int, *cells: int, amplitude: float = 255.0) -> torch.Tensor:
        """Smooth random shading at a few scales, as a photo's background has."""
        return sum(F.interpolate(torch.rand(1, 1, c, c, generator=generator), size=(size, size), mode="bicubic",
                                 align_corners=False) for c in cells)[0, 0] * amplitude / len(cells)

    photo = texture(96, 12, 24)
    crop = F.interpolate(photo[None, None, 8:88, 4:84], size=(64, 64), mode="area")[0, 0]  # 83% of a side
    whole = F.interpolate(photo[None, None], size=(64, 64), mode="area")[0, 0]
    # The same bright disc drawn over two unrelated backgrounds: one strong outline, nothing else shared.
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    disc = ((yy - 30) ** 2 + (xx - 34) ** 2 < 15 ** 2).float()
    drawn = [60 + texture(64, 16, amplitude=40) + 120 * disc for _ in range(2)]

    def grey(*images: torch.Tensor) -> torch.Tensor:
        return torch.stack([image.clamp(0, 255).round().to(torch.uint8) for image in images])

    found = match(grey(crop, drawn[0]), grey(whole, drawn[1]))
    assert float(found.whole[0]) < 0.8  # a crop does not line up whole: not the same photo
    assert float(found.best[0]) > 0.7 and float(found.agreement[0]) > 0.7
    # The outline matches as well as the crop does, but only in the cells it crosses.
    assert float(found.best[1]) > 0.7 and float(found.agreement[1]) < 0.6
    same = torch.randn(3, 32, 32, generator=generator)
    assert torch.allclose(cell_agreement(same, same * 2 + 1), torch.ones(3), atol=1e-5)


def test_a_run_checks_its_dataset_with_its_network_and_can_be_cancelled(planted, tmp_path):
    data, copies, (crop, original) = planted
    run = make_run(tmp_path / "runs", data, attention="none")
    with pytest.raises(EmbeddingCancelled):  # as Clear or another run in the app does it
        check_duplicates(run, device="cpu", should_cancel=lambda: True)
    check = check_duplicates(run, device="cpu")
    assert check.used_network and check.dataset == str(data)
    found = {(row.kind, row.path, row.other_path) for row in check.pairs}
    expected = {(kind, str(copy), str(original)) for kind, (copy, original) in copies.items()}
    # An untrained network proposes look-alikes freely; the pixels admit only the copies (the
    # crop too, when this network happens to put it beside its photo).
    assert expected <= found <= expected | {("train and test", str(crop), str(original))}
    assert all(row.embedding_similarity is not None for row in check.pairs)
