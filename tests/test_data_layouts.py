"""detect(): which layout a folder holds, and the index of (path, label, split, box) rows it gives."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgdesk.data import DatasetError, DatasetIndex, Problem, Sample, detect

CUB_ROOT = Path(os.environ.get("FGDESK_CUB_ROOT", Path(__file__).resolve().parents[2] / "shared/data/cub50/CUB_200_2011"))


def write_image(path: Path, size: tuple[int, int] = (24, 16), colour=(90, 120, 150)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# -- CUB-200-2011 ----------------------------------------------------------------------

CUB_CLASSES = {3: "003.Yellow_headed_Blackbird", 17: "017.Cardinal", 200: "200.Common_Yellowthroat"}


def make_fake_cub(parent: Path, with_boxes: bool = True) -> Path:
    """A 3-class CUB tree whose class ids (3, 17, 200) are not contiguous, as in a subset."""
    root = parent / "CUB_200_2011"
    images, labels, split, boxes = [], [], [], []
    image_id = 100
    for class_id, name in CUB_CLASSES.items():
        for k in range(4):
            image_id += 1
            rel = f"{name}/{name.split('.')[1]}_{k:04d}.jpg"
            write_image(root / "images" / rel, (40, 30))
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {class_id}")
            split.append(f"{image_id} {1 if k < 3 else 0}")
            boxes.append(f"{image_id} 2.0 3.0 10.0 5.5")
    write_lines(root / "classes.txt", [f"{i} {n}" for i, n in CUB_CLASSES.items()])
    write_lines(root / "images.txt", images)
    write_lines(root / "image_class_labels.txt", labels)
    write_lines(root / "train_test_split.txt", split)
    if with_boxes:
        write_lines(root / "bounding_boxes.txt", boxes)
    return root


def test_cub_maps_non_contiguous_class_ids_to_contiguous_labels(tmp_path):
    root = make_fake_cub(tmp_path)
    index = detect(root)
    assert index.layout == "cub" and index.root == root
    assert index.classes == list(CUB_CLASSES.values())
    assert sorted({s.label for s in index.samples}) == [0, 1, 2]
    cardinal = [s for s in index.samples if "Cardinal" in s.path.name]
    assert {s.label for s in cardinal} == {1}
    assert len(index.split("train")) == 9 and len(index.test_samples()) == 3
    assert index.train_samples() == index.split("train")
    assert all(s.box == (2.0, 3.0, 12.0, 8.5) for s in index.samples)  # x y w h -> x0 y0 x1 y1
    assert index.problems == [] and index.labelled()


def test_cub_is_found_from_its_parent_and_boxes_are_optional(tmp_path):
    make_fake_cub(tmp_path, with_boxes=False)
    index = detect(tmp_path, layout="cub", check_images=False)
    assert index.root == tmp_path / "CUB_200_2011"
    assert len(index.samples) == 12 and all(s.box is None for s in index.samples)


def test_cub_with_a_missing_file_says_which(tmp_path):
    root = make_fake_cub(tmp_path)
    (root / "train_test_split.txt").unlink()
    with pytest.raises(DatasetError, match="images.txt is present but train_test_split.txt is missing"):
        detect(tmp_path)


def test_cub_image_missing_on_disk_is_a_problem(tmp_path):
    root = make_fake_cub(tmp_path)
    victim = next((root / "images" / CUB_CLASSES[17]).iterdir())
    victim.unlink()
    index = detect(root, check_images=False)
    assert len(index.samples) == 11
    assert index.problems == [Problem(victim, "listed in images.txt but the file is missing")]


def test_layout_cub_on_a_plain_folder_explains_what_it_looked_for(tmp_path):
    write_image(tmp_path / "a.jpg")
    with pytest.raises(DatasetError, match="not a CUB-200-2011 folder: looked for images.txt"):
        detect(tmp_path, layout="cub")


@pytest.mark.skipif(not (CUB_ROOT / "images.txt").is_file(), reason="CUB subset not available")
def test_real_cub_subset_has_50_classes_and_2952_images():
    index = detect(CUB_ROOT.parent)
    assert index.layout == "cub"
    assert len(index.classes) == 50 and len(index.samples) == 2952 and not index.problems
    assert index.classes[0].startswith("001.")
    summary = index.summary()
    assert summary.num_images == 2952 and summary.width is not None
    assert sum(sum(per_split.values()) for per_split in summary.counts.values()) == 2952


# -- FGVC-Aircraft ----------------------------------------------------------------------

AIRCRAFT = [  # variant, family, manufacturer: names with spaces and a slash, as in the real files
    ("707-320", "Boeing 707", "Boeing"),
    ("A300B4", "A300", "Airbus"),
    ("Cessna 172", "Cessna 172", "Cessna"),
    ("F/A-18", "F/A-18", "McDonnell Douglas"),
    ("Falcon 2000", "Falcon 2000", "Dassault Aviation"),
    ("Falcon 900", "Falcon 900", "Dassault Aviation"),
]


def make_fake_aircraft(parent: Path) -> Path:
    """parent/fgvc-aircraft-2013b/data with 3 images per variant, one per split."""
    data = parent / "fgvc-aircraft-2013b" / "data"
    # Class lists in an order that is neither alphabetical nor first-appearance.
    write_lines(data / "variants.txt", [v for v, _, _ in reversed(AIRCRAFT)])
    families = list(dict.fromkeys(f for _, f, _ in AIRCRAFT))
    write_lines(data / "families.txt", families[::2] + families[1::2])
    write_lines(data / "manufacturers.txt", sorted({m for _, _, m in AIRCRAFT}, reverse=True))
    rows: dict[tuple[str, str], list[str]] = {}
    image_id = 1025790
    for variant, family, manufacturer in AIRCRAFT:
        for split in ("train", "val", "test"):
            image_id += 1
            write_image(data / "images" / f"{image_id:07d}.jpg", (60, 48))
            for level, name in (("variant", variant), ("family", family), ("manufacturer", manufacturer)):
                rows.setdefault((level, split), []).append(f"{image_id:07d} {name}")
    for (level, split), lines in rows.items():
        write_lines(data / f"images_{level}_{split}.txt", lines)
    for level in ("variant", "family", "manufacturer"):
        write_lines(data / f"images_{level}_trainval.txt", rows[(level, "train")] + rows[(level, "val")])
    return data


@pytest.mark.parametrize("level", ["variant", "family", "manufacturer"])
def test_aircraft_matches_torchvision_for_every_split_and_level(tmp_path, level):
    from torchvision.datasets import FGVCAircraft

    make_fake_aircraft(tmp_path)
    index = detect(tmp_path, level=level)
    assert index.layout == "aircraft" and index.crop_bottom == 20
    for split in ("train", "val", "test"):
        reference = FGVCAircraft(tmp_path, split=split, annotation_level=level, download=False)
        assert index.classes == reference.classes
        ours = sorted((str(s.path), s.label) for s in index.split(split))
        theirs = sorted(zip(reference._image_files, reference._labels))
        assert ours == theirs and len(ours) == len(AIRCRAFT)
    assert len(index.train_samples()) == 2 * len(AIRCRAFT)  # train + val, no trainval duplicates


@pytest.mark.parametrize("where", ["data", "fgvc-aircraft-2013b", "parent"])
def test_aircraft_is_found_from_data_dir_its_parent_or_above(tmp_path, where):
    data = make_fake_aircraft(tmp_path)
    start = {"data": data, "fgvc-aircraft-2013b": data.parent, "parent": tmp_path}[where]
    index = detect(start, check_images=False)
    assert index.layout == "aircraft" and index.root == data and len(index.samples) == 3 * len(AIRCRAFT)


def test_aircraft_sizes_in_summary_exclude_the_banner(tmp_path):
    make_fake_aircraft(tmp_path)
    summary = detect(tmp_path, level="family").summary()
    assert summary.width == (60, 60.0, 60) and summary.height == (28, 28.0, 28)
    assert summary.num_classes == len({f for _, f, _ in AIRCRAFT})


def test_unknown_level_is_rejected(tmp_path):
    with pytest.raises(DatasetError, match="label level 'model'"):
        detect(tmp_path, level="model")


# -- class folders ------------------------------------------------------------------------


def test_class_folders_with_hash_split(tmp_path):
    for name in ("sparrow", "wren"):
        for k in range(50):
            write_image(tmp_path / name / f"{k:03d}.png", (8, 8))
    index = detect(tmp_path)
    assert index.layout == "folders" and index.classes == ["sparrow", "wren"]
    test_share = len(index.test_samples()) / len(index.samples)
    assert 0.1 <= test_share <= 0.3
    assert {s.split for s in index.samples} == {"train", "test"}
    again = detect(tmp_path, check_images=False)
    assert [(s.path, s.split) for s in again.samples] == [(s.path, s.split) for s in index.samples]


def test_every_class_keeps_a_training_image_and_a_single_image_class_works(tmp_path):
    for k in range(2):
        write_image(tmp_path / "pair" / f"{k}.png")
    write_image(tmp_path / "single" / "only.png")
    for k in range(5):
        write_image(tmp_path / "many" / f"{k}.png")
    index = detect(tmp_path)
    for label, name in enumerate(index.classes):
        assert any(s.label == label and s.split == "train" for s in index.samples), name
    assert [s.split for s in index.samples if s.path.name == "only.png"] == ["train"]


def test_empty_class_hidden_and_non_image_files(tmp_path):
    write_image(tmp_path / "a" / "1.png")
    write_image(tmp_path / "b" / "1.png")
    write_image(tmp_path / "b" / ".hidden.png")
    write_image(tmp_path / ".thumbs" / "x.png")
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    index = detect(tmp_path)
    assert index.classes == ["a", "b", "empty"]
    assert sorted(s.path.relative_to(tmp_path).as_posix() for s in index.samples) == ["a/1.png", "b/1.png"]
    assert index.problems == [Problem(tmp_path / "empty", "class folder has no images")]


def test_split_folders_define_the_split(tmp_path):
    for split, count in (("train", 3), ("val", 1), ("test", 2)):
        for name in ("owl", "hawk"):
            for k in range(count):
                write_image(tmp_path / split / name / f"{k}.jpg")
    index = detect(tmp_path)
    assert index.layout == "folders" and index.classes == ["hawk", "owl"]
    assert len(index.split("train")) == 6 and len(index.split("val")) == 2 and len(index.split("test")) == 4
    assert len(index.train_samples()) == 8
    owl = [s for s in index.samples if "owl" in s.path.parts]
    assert {s.label for s in owl} == {1}


def test_boxes_csv_gives_boxes_with_unicode_and_spaces_in_paths(tmp_path):
    write_image(tmp_path / "train" / "Grünfink" / "bild 1.png", (40, 40))
    write_image(tmp_path / "train" / "Stieglitz" / "bild 2.png", (40, 40))
    write_image(tmp_path / "test" / "Stieglitz" / "bild 3.png", (40, 40))
    (tmp_path / "boxes.csv").write_text(
        "path,x0,y0,x1,y1\ntrain/Grünfink/bild 1.png,1,2,30,31\ntest/Stieglitz/bild 3.png,5,5,9,12\n"
        "train/Stieglitz/bild 2.png,not,a,box,!\n",
        encoding="utf-8",
    )
    index = detect(tmp_path)
    boxes = {s.path.name: s.box for s in index.samples}
    assert boxes == {"bild 1.png": (1.0, 2.0, 30.0, 31.0), "bild 2.png": None, "bild 3.png": (5.0, 5.0, 9.0, 12.0)}
    assert [p.path.name for p in index.problems] == ["boxes.csv"]
    assert "bad box" in index.problems[0].reason


@pytest.mark.parametrize("folder_name", ["unlabeled", "Unlabelled"])
def test_unlabeled_folder_beside_class_folders_feeds_pretraining_only(tmp_path, folder_name):
    for name in ("finch", "siskin"):
        for k in range(3):
            write_image(tmp_path / name / f"{k}.png")
    write_image(tmp_path / folder_name / "a.png")
    write_image(tmp_path / folder_name / "trap 3" / "b.jpg")
    index = detect(tmp_path)
    assert index.layout == "folders" and index.classes == ["finch", "siskin"] and index.labelled()
    unlabeled = [s for s in index.samples if s.label == -1]
    assert sorted(s.path.name for s in unlabeled) == ["a.png", "b.jpg"]
    assert {s.split for s in unlabeled} == {"unlabeled"}
    labelled = [s for s in index.samples if s.label >= 0]
    assert len(labelled) == 6 and not any(folder_name in s.path.parts for s in labelled)
    # Pretraining sees every image but the test split; the test split stays labelled.
    assert set(index.train_samples()) == set(unlabeled) | {s for s in labelled if s.split == "train"}
    assert all(s.label >= 0 for s in index.test_samples())
    summary = index.summary()
    assert summary.num_classes == 2 and summary.num_images == 8
    assert list(summary.counts)[-1] == "(unlabeled)" and summary.counts["(unlabeled)"] == {"unlabeled": 2}
    assert "(unlabeled)" in summary.as_text()


def test_unlabeled_folder_beside_split_folders(tmp_path):
    for split in ("train", "test"):
        for name in ("owl", "hawk"):
            write_image(tmp_path / split / name / "1.png")
    for k in range(4):
        write_image(tmp_path / "unlabeled" / f"{k}.png")
    write_image(tmp_path / "train" / "Unlabelled" / "more" / "5.png")  # inside a split folder: not a class either
    index = detect(tmp_path)
    assert index.classes == ["hawk", "owl"]
    assert len(index.split("unlabeled")) == 5 and len(index.train_samples()) == 7
    assert len(index.test_samples()) == 2


def test_loose_images_beside_class_folders_are_reported(tmp_path):
    write_image(tmp_path / "a" / "1.png")
    write_image(tmp_path / "b" / "1.png")
    write_image(tmp_path / "stray.png")
    index = detect(tmp_path)
    assert index.layout == "folders" and len(index.samples) == 2
    assert [p.path.name for p in index.problems] == ["stray.png"]


# -- unlabeled --------------------------------------------------------------------------


def test_unlabeled_folder_is_walked_recursively(tmp_path):
    write_image(tmp_path / "x.png")
    write_image(tmp_path / "deep" / "er" / "y.jpg")
    index = detect(tmp_path)
    assert index.layout == "unlabeled" and index.classes == [] and not index.labelled()
    assert [s.path.name for s in index.samples] == ["y.jpg", "x.png"]
    assert all(s.label == -1 and s.split == "unlabeled" for s in index.samples)
    assert index.train_samples() == index.samples and index.test_samples() == []


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlink_loops_terminate(tmp_path):
    write_image(tmp_path / "a" / "img.png")
    write_image(tmp_path / "a" / "b" / "img2.png")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "back_up")  # a/b/back_up -> a
    os.symlink(tmp_path, tmp_path / "a" / "root_link")  # a/root_link -> root
    os.symlink(tmp_path / "nowhere", tmp_path / "broken.png")
    started = time.perf_counter()
    index = detect(tmp_path, layout="unlabeled")
    assert time.perf_counter() - started < 2.0
    assert sorted(s.path.name for s in index.samples) == ["img.png", "img2.png"]
    assert [p.path.name for p in index.problems] == ["broken.png"]
    detect(tmp_path)  # auto detection walks the same loop and terminates too


# -- errors and the image check ---------------------------------------------------------------


def test_missing_folder_file_and_empty_folder_give_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset folder .*nope does not exist"):
        detect(tmp_path / "nope")
    write_image(tmp_path / "pic.png")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        detect(tmp_path / "pic.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no pictures here")
    with pytest.raises(DatasetError) as caught:
        detect(tmp_path / "empty")
    message = str(caught.value)
    assert "no images found in" in message and str(tmp_path / "empty") in message and ".jpg" in message


def test_unknown_layout_is_rejected(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        detect(tmp_path, layout="imagenet")


def bad_image_bytes() -> dict[str, bytes]:
    return {"text.jpg": b"hello, I am text", "zero.png": b"", "header_only.gif": b"GIF89a\x10"}


def test_check_images_moves_unreadable_files_to_problems(tmp_path):
    for name in ("a", "b"):
        write_image(tmp_path / name / "good.png")
    for filename, data in bad_image_bytes().items():
        (tmp_path / "a" / filename).write_bytes(data)
    checked = detect(tmp_path)
    assert sorted(s.path.name for s in checked.samples) == ["good.png", "good.png"]
    reasons = {p.path.name: p.reason for p in checked.problems}
    assert set(reasons) == set(bad_image_bytes())
    assert reasons["zero.png"] == "empty file (0 bytes)"
    assert checked.summary().num_problems == 3
    unchecked = detect(tmp_path, check_images=False)
    assert len(unchecked.samples) == 5 and unchecked.problems == []
    assert unchecked.summary().width is None


def test_detect_records_fuzzed_files_as_problems_without_raising(tmp_path):
    rng = np.random.default_rng(7)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(buffer, "PNG")
    png = buffer.getvalue()
    written = []
    for k in range(60):
        source = bytearray(jpeg if k % 2 else png)
        if k % 3 == 0:
            source = source[: int(rng.integers(1, len(source)))]
        for _ in range(int(rng.integers(0, 4))):
            source[int(rng.integers(0, min(40, len(source))))] = int(rng.integers(0, 256))
        if k % 7 == 0:
            source = bytearray(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
        path = tmp_path / f"class_{k % 3}" / f"f{k:02d}{'.jpg' if k % 2 else '.png'}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes(source))
        written.append(path)
    index = detect(tmp_path)
    accounted = {s.path for s in index.samples} | {p.path for p in index.problems}
    assert set(written) <= accounted
    assert not {s.path for s in index.samples} & {p.path for p in index.problems}
    assert index.problems  # some of them are certainly broken


# -- summary and speed -----------------------------------------------------------------------


def test_summary_counts_and_text_table(tmp_path):
    for split, count in (("train", 3), ("test", 1)):
        for name in ("kestrel", "merlin"):
            for k in range(count):
                write_image(tmp_path / split / name / f"{k}.png", (30 + k, 20))
    summary = detect(tmp_path).summary()
    assert summary.counts == {"kestrel": {"train": 3, "test": 1}, "merlin": {"train": 3, "test": 1}}
    assert summary.width == (30, 30.5, 32) and summary.height == (20, 20.0, 20)
    text = summary.as_text()
    assert "Layout: folders" in text and "Classes: 2" in text and "Images: 8" in text
    assert any(line.split() == ["kestrel", "3", "1", "4"] for line in text.splitlines())
    assert any(line.split() == ["total", "6", "2", "8"] for line in text.splitlines())


def test_summary_of_unlabeled_folder(tmp_path):
    write_image(tmp_path / "x.png")
    summary = detect(tmp_path).summary()
    assert summary.counts == {"(unlabeled)": {"unlabeled": 1}} and summary.num_classes == 0
    assert "unlabeled" in summary.as_text()


def test_index_rows_are_frozen_dataclasses(tmp_path):
    sample = Sample(tmp_path / "a.png", 0, "train", None)
    with pytest.raises(AttributeError):
        sample.label = 1  # type: ignore[misc]
    assert isinstance(DatasetIndex(tmp_path, "folders", ["a"], [sample], []).summary().counts, dict)


def test_detect_without_probing_is_fast_on_ten_thousand_files(tmp_path):
    # 1,000 real files seen through 10 class folders (links): detect does the full
    # per-file work 10,000 times while the test stays cheap to set up.
    shared = tmp_path / "class_0"
    shared.mkdir()
    for k in range(1000):
        os.close(os.open(shared / f"{k:04d}.jpg", os.O_CREAT | os.O_WRONLY))
    for c in range(1, 10):
        os.symlink(shared, tmp_path / f"class_{c}", target_is_directory=True)
    started = time.thread_time()  # this thread's CPU: waiting for a core on a busy machine does not count
    index = detect(tmp_path, check_images=False)
    elapsed = time.thread_time() - started
    assert len(index.samples) == 10_000 and len(index.classes) == 10
    assert elapsed < 1.0, f"detect took {elapsed:.2f} s"


def test_val_folder_is_the_test_split_when_there_is_no_test_folder(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for name in ("owl", "hawk"):
            for k in range(count):
                write_image(tmp_path / split / name / f"{k}.jpg")
    index = detect(tmp_path)
    assert len(index.test_samples()) == 4 and all("val" in s.path.parts for s in index.test_samples())
    assert len(index.train_samples()) == 6 and all("train" in s.path.parts for s in index.train_samples())
