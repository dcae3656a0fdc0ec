"""Giving labels by moving unlabeled images into class folders: where they go, that nothing is
overwritten or lost, that the dataset index sees the label, and that every move can be undone."""
from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

import pytest
from PIL import Image

from fgdesk.data import labeling
from fgdesk.data.labeling import LABEL_LOG, DatasetLabeler, LabelingError, apply_label_table
from fgdesk.data.layouts import detect
from fgdesk.data.synthetic import make_demo_dataset


def _image(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)
    return path


@pytest.fixture
def flat(tmp_path):
    """Class folders a/ and b/ directly under the root, unlabeled/ beside them (with a subfolder)."""
    root = tmp_path / "flat"
    for name in ("a", "b"):
        for i in range(3):
            _image(root / name / f"{name}{i}.png")
    _image(root / "unlabeled" / "x.png", (1, 2, 3))
    _image(root / "unlabeled" / "cam2" / "y.png", (4, 5, 6))
    return root


def _label_of(root, path):
    index = detect(root, check_images=False)
    by_path = {s.path: s for s in index.samples}
    sample = by_path[path]
    return (index.classes[sample.label] if sample.label >= 0 else None), sample.split


def test_label_moves_the_image_into_its_class_folder_and_the_index_sees_it(flat):
    labeler = DatasetLabeler(flat)
    assert labeler.classes == ["a", "b"]
    before = (flat / "unlabeled" / "x.png").read_bytes()
    move = labeler.assign(flat / "unlabeled" / "x.png", "b")
    assert move.target == flat / "b" / "x.png"
    assert not move.source.exists() and move.target.read_bytes() == before
    assert _label_of(flat, move.target)[0] == "b"
    assert len(detect(flat, check_images=False).split("unlabeled")) == 1

    # Subfolders inside unlabeled/ are kept, so same-named files from two cameras cannot collide.
    nested = labeler.assign(flat / "unlabeled" / "cam2" / "y.png", "a")
    assert nested.target == flat / "a" / "cam2" / "y.png"
    assert _label_of(flat, nested.target)[0] == "a"

    rows = list(csv.DictReader(open(flat / LABEL_LOG, encoding="utf-8")))
    assert [(r["action"], r["class"], r["from"], r["to"]) for r in rows] == [
        ("label", "b", "unlabeled/x.png", "b/x.png"), ("label", "a", "unlabeled/cam2/y.png", "a/cam2/y.png")]
    assert all(r["time"].endswith("+00:00") and "user" in r for r in rows)


def test_undo_puts_the_image_back_and_removes_only_the_folders_the_label_made(flat):
    labeler = DatasetLabeler(flat)
    data = (flat / "unlabeled" / "cam2" / "y.png").read_bytes()
    nested = labeler.assign(flat / "unlabeled" / "cam2" / "y.png", "a")
    assert (flat / "a" / "cam2").is_dir()
    assert labeler.undo(nested) == flat / "unlabeled" / "cam2" / "y.png"
    assert (flat / "unlabeled" / "cam2" / "y.png").read_bytes() == data
    assert not (flat / "a" / "cam2").exists() and (flat / "a").is_dir()
    assert _label_of(flat, flat / "unlabeled" / "cam2" / "y.png") == (None, "unlabeled")
    assert labeler.logged_moves() == []


def test_labels_never_overwrite_a_file_of_the_same_name(flat):
    clash = _image(flat / "a" / "x.png", (9, 9, 9))
    kept = clash.read_bytes()
    move = DatasetLabeler(flat).assign(flat / "unlabeled" / "x.png", "a")
    assert move.target == flat / "a" / "x-2.png"
    assert clash.read_bytes() == kept


def test_split_folders_take_labels_into_train(tmp_path):
    root = make_demo_dataset(tmp_path / "demo", num_classes=2, per_class=4, size=48, unlabeled=2)
    labeler = DatasetLabeler(root)
    assert labeler.classes == ["class_0_circle", "class_1_triangle"]
    move = labeler.assign(root / "unlabeled" / "img_0001.png", "class_1_triangle")
    assert move.target == root / "train" / "class_1_triangle" / "img_0001.png"
    assert _label_of(root, move.target) == ("class_1_triangle", "train")

    # train/unlabeled/ stays inside train/
    _image(root / "train" / "unlabeled" / "z.png")
    move = DatasetLabeler(root).assign(root / "train" / "unlabeled" / "z.png", "class_0_circle")
    assert move.target == root / "train" / "class_0_circle" / "z.png"


def test_class_names_are_checked_and_new_classes_are_explicit(flat):
    labeler = DatasetLabeler(flat)
    image = flat / "unlabeled" / "x.png"
    with pytest.raises(LabelingError, match="no class 'c'.*a, b"):
        labeler.assign(image, "c")
    assert labeler.check_class_name(" A ") == "a"  # one folder on case-insensitive disks
    for bad in ("", "../evil", "sub/dir", ".hidden", "unlabeled", "Train", "test"):
        with pytest.raises(LabelingError):
            labeler.assign(image, bad, allow_new=True)
    assert image.is_file()

    move = labeler.assign(image, "c", allow_new=True)
    assert move.target == flat / "c" / "x.png" and "c" in labeler.classes
    assert _label_of(flat, move.target)[0] == "c"
    labeler.undo(move)
    assert not (flat / "c").exists()  # the class folder the label made goes with it


def test_only_the_datasets_own_images_of_a_class_folder_dataset_take_labels(flat, tmp_path):
    with pytest.raises(LabelingError, match="neither an unlabeled/ folder nor a class folder"):
        DatasetLabeler(flat).assign(_image(tmp_path / "elsewhere.png"), "b")
    with pytest.raises(LabelingError, match="neither an unlabeled/ folder nor a class folder"):
        DatasetLabeler(flat).assign(_image(flat / "loose.png"), "b")  # beside the class folders, in none
    with pytest.raises(LabelingError, match="no longer exists"):
        DatasetLabeler(flat).assign(flat / "unlabeled" / "gone.png", "b")
    with pytest.raises(LabelingError, match="already in class a"):
        DatasetLabeler(flat).assign(flat / "a" / "a0.png", "a")

    cub = tmp_path / "cub"
    (cub / "images").mkdir(parents=True)
    for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"):
        (cub / name).write_text("")
    with pytest.raises(LabelingError, match="CUB-200-2011"):
        DatasetLabeler(cub)


def test_a_move_without_hard_links_copies_in_full_and_leaves_no_partial_file(flat, monkeypatch):
    def no_links(*_args, **_kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(labeling.os, "link", no_links)
    data = (flat / "unlabeled" / "x.png").read_bytes()
    move = DatasetLabeler(flat).assign(flat / "unlabeled" / "x.png", "a")
    assert move.target.read_bytes() == data and not move.source.exists()
    assert not [p for p in (flat / "a").iterdir() if p.name.startswith(".")]


def test_a_move_from_another_disk_claims_its_name_without_replacing_a_newcomer(flat, monkeypatch):
    first, second = flat / "unlabeled" / "x.png", flat / "unlabeled" / "cam2" / "y.png"
    data = first.read_bytes()
    real_link, real_copy = os.link, labeling.shutil.copy2

    def other_disk(source, target, *args, **kwargs):  # the originals live on another disk; the copies do not
        if Path(source) in (first, second):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(source, target, *args, **kwargs)

    renamed_over = []  # a check-then-rename would leave a window in which a newcomer is lost
    monkeypatch.setattr(labeling.os, "replace", lambda *names: renamed_over.append(names))
    monkeypatch.setattr(labeling.os, "link", other_disk)
    move = DatasetLabeler(flat).assign(first, "a")
    assert move.target.read_bytes() == data and not first.exists() and not renamed_over
    assert not [p for p in (flat / "a").iterdir() if p.name.startswith(".")]

    # A file that takes the name while the copy is being written is kept, and so is the original.
    newcomer = flat / "b" / "cam2" / "y.png"  # labelled images keep their subfolder

    def someone_else_saves_meanwhile(source, destination, **kwargs):
        real_copy(source, destination, **kwargs)
        newcomer.write_bytes(b"theirs")

    monkeypatch.setattr(labeling.shutil, "copy2", someone_else_saves_meanwhile)
    with pytest.raises(LabelingError, match="exists"):
        DatasetLabeler(flat).assign(second, "b")
    assert newcomer.read_bytes() == b"theirs" and second.is_file()
    assert [p.name for p in newcomer.parent.iterdir()] == ["y.png"]


def test_a_copy_that_fails_half_way_leaves_no_partial_file_or_new_folder(flat, monkeypatch):
    def no_links(*_args, **_kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def disk_full(_source, destination, **_kwargs):
        open(destination, "wb").write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(labeling.os, "link", no_links)
    monkeypatch.setattr(labeling.shutil, "copy2", disk_full)
    with pytest.raises(LabelingError, match="No space left"):
        DatasetLabeler(flat).assign(flat / "unlabeled" / "x.png", "c", allow_new=True)
    assert (flat / "unlabeled" / "x.png").is_file() and not (flat / "c").exists()


def test_a_failed_removal_of_the_original_keeps_exactly_one_copy(flat, monkeypatch):
    real_unlink = os.unlink

    def refuse(path, *args, **kwargs):
        if str(path).endswith("x.png") and "unlabeled" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(labeling.os, "unlink", refuse)
    with pytest.raises(LabelingError, match="Permission denied"):
        DatasetLabeler(flat).assign(flat / "unlabeled" / "x.png", "a")
    assert (flat / "unlabeled" / "x.png").is_file() and not (flat / "a" / "x.png").exists()
    assert not (flat / LABEL_LOG).exists()


def test_undo_last_works_from_the_log_in_a_later_session(flat):
    first = DatasetLabeler(flat)
    first.assign(flat / "unlabeled" / "x.png", "a")
    first.assign(flat / "unlabeled" / "cam2" / "y.png", "b")
    undone, errors = DatasetLabeler(flat).undo_last(1)  # a new process: only the log remembers
    assert [m.target for m in undone] == [flat / "b" / "cam2" / "y.png"] and errors == []
    assert (flat / "unlabeled" / "cam2" / "y.png").is_file() and (flat / "a" / "x.png").is_file()
    assert not (flat / "b" / "cam2").exists()  # the folder that label made is gone, from the log's record
    assert [m.target for m in DatasetLabeler(flat).logged_moves()] == [flat / "a" / "x.png"]


def test_undo_keeps_a_class_folder_made_by_hand_and_goes_on_past_a_missing_file(flat):
    (flat / "c").mkdir()  # an empty class folder the user made
    labeler = DatasetLabeler(flat)
    first = labeler.assign(flat / "unlabeled" / "x.png", "c")
    labeler.assign(flat / "unlabeled" / "cam2" / "y.png", "b")
    labeler.undo(first)
    assert (flat / "c").is_dir()
    labeler.assign(flat / "unlabeled" / "x.png", "a")
    (flat / "b" / "cam2" / "y.png").unlink()  # deleted by hand since
    undone, errors = DatasetLabeler(flat).undo_last(2)
    assert [m.target for m in undone] == [flat / "a" / "x.png"] and len(errors) == 1 and "no longer there" in errors[0]


def test_a_relative_path_is_logged_from_the_root_so_undo_puts_it_back(flat, monkeypatch):
    monkeypatch.chdir(flat / "unlabeled")
    labeler = DatasetLabeler(os.path.relpath(flat))
    move = labeler.assign("x.png", "a")
    assert move.source == flat / "unlabeled" / "x.png"
    DatasetLabeler(flat).undo_last(1)
    assert (flat / "unlabeled" / "x.png").is_file() and not (flat / "x.png").exists()


def test_a_log_that_cannot_be_written_does_not_undo_or_hide_the_move(flat):
    (flat / LABEL_LOG).mkdir()  # stands in for a log locked by another program
    labeler = DatasetLabeler(flat)
    move = labeler.assign(flat / "unlabeled" / "x.png", "a")
    assert move.target.is_file() and len(labeler.warnings) == 1 and "cannot be undone from the log" in labeler.warnings[0]


def test_names_that_some_system_cannot_hold_are_refused(flat):
    labeler = DatasetLabeler(flat)
    for bad in ("C:x", "a*b", 'say"so', "tab\tname", "trailing.", "CON", "com1.birds", "a|b"):
        with pytest.raises(LabelingError, match="every system"):
            labeler.check_class_name(bad, allow_new=True)
    assert labeler.check_class_name("Parus major (f)", allow_new=True) == "Parus major (f)"


def test_a_filled_in_table_labels_its_rows_and_reports_bad_ones(flat, tmp_path):
    table = tmp_path / "next.csv"
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "path", "guess", "label"])
        writer.writerow([1, str(flat / "unlabeled" / "x.png"), "a", "b"])
        writer.writerow([2, "unlabeled/cam2/y.png", "a", ""])  # relative to the dataset; no label yet
        writer.writerow([3, str(flat / "unlabeled" / "missing.png"), "a", "a"])
        writer.writerow([4, str(flat / "a" / "a0.png"), "a", "nope"])
        writer.writerow([5, "unlabeled/cam2/y.png", "a", "", "a note typed past the last column"])
    labeler = DatasetLabeler(flat)

    dry = apply_label_table(labeler, table, dry_run=True)
    assert [m.target for m in dry.moves] == [flat / "b" / "x.png"] and dry.skipped == 2
    assert [line for line, _ in dry.errors] == [4, 5]
    assert (flat / "unlabeled" / "x.png").is_file() and not (flat / LABEL_LOG).exists()

    done = apply_label_table(labeler, table)
    assert [m.target for m in done.moves] == [flat / "b" / "x.png"] and (flat / "b" / "x.png").is_file()
    assert len(done.errors) == 2 and (flat / "unlabeled" / "cam2" / "y.png").is_file()

    bad = tmp_path / "bad.csv"
    bad.write_text("file,klass\nx,y\n")
    with pytest.raises(LabelingError, match="'path' column"):
        apply_label_table(labeler, bad)


def test_a_symbolic_link_moves_as_a_link_still_aimed_at_its_file(flat, tmp_path):
    store = _image(tmp_path / "raw-store" / "deep" / "z.png", (7, 7, 7))
    relative_link = flat / "unlabeled" / "z.png"
    absolute_link = flat / "unlabeled" / "cam2" / "w.png"
    try:
        relative_link.symlink_to(os.path.relpath(store, relative_link.parent))
        absolute_link.symlink_to(store)
    except (OSError, NotImplementedError):
        pytest.skip("symbolic links are not available here")
    labeler = DatasetLabeler(flat)
    for link in (relative_link, absolute_link):
        move = labeler.assign(link, "a")
        assert move.target.is_symlink() and move.target.resolve() == store.resolve()
        assert move.target.read_bytes() == store.read_bytes() and not os.path.lexists(link)
        labeler.undo(move)
        assert link.is_symlink() and link.resolve() == store.resolve()
    assert store.is_file()


def test_relative_links_inside_a_linked_unlabeled_folder_still_open_their_file(tmp_path):
    """unlabeled/ is itself a link to a folder of relative links (a shared store): a moved link
    is re-aimed from where the system resolves it, never left dangling."""
    store = tmp_path / "store"
    _image(store / "files" / "z.png", (3, 3, 3))
    (store / "pool").mkdir()
    root = tmp_path / "data"
    _image(root / "a" / "1.png")
    _image(root / "b" / "1.png")
    try:
        (store / "pool" / "z.png").symlink_to(os.path.join("..", "files", "z.png"))
        (root / "unlabeled").symlink_to(store / "pool", target_is_directory=True)
    except (OSError, NotImplementedError):
        pytest.skip("symbolic links are not available here")
    labeler = DatasetLabeler(root)
    move = labeler.assign(root / "unlabeled" / "z.png", "a")
    assert move.target.read_bytes() == (store / "files" / "z.png").read_bytes()
    labeler.undo(move)
    assert (store / "pool" / "z.png").read_bytes() == (store / "files" / "z.png").read_bytes()


def test_a_box_follows_its_image_to_the_class_folder_and_back(tmp_path):
    root = make_demo_dataset(tmp_path / "demo", num_classes=2, per_class=4, size=48, unlabeled=2)
    image = root / "unlabeled" / "img_0000.png"
    box_before = next(s.box for s in detect(root, check_images=False).samples if s.path == image)
    assert box_before is not None
    labeler = DatasetLabeler(root)
    move = labeler.assign(image, "class_0_circle")
    assert next(s.box for s in detect(root, check_images=False).samples if s.path == move.target) == box_before
    assert "unlabeled/img_0000.png" not in (root / "boxes.csv").read_text()
    labeler.undo(move)
    assert next(s.box for s in detect(root, check_images=False).samples if s.path == image) == box_before
    assert labeler.warnings == []


def test_a_table_written_from_another_folder_finds_its_images(flat, tmp_path, monkeypatch):
    """Paths relative to where the table was made (the current folder) are found too."""
    monkeypatch.chdir(flat.parent)
    table = tmp_path / "labels.csv"
    table.write_text("path,label\nflat/unlabeled/x.png,a\n", encoding="utf-8")
    done = apply_label_table(DatasetLabeler(flat), table)
    assert [m.target for m in done.moves] == [flat / "a" / "x.png"] and not done.errors


def test_moved_images_follow_labels_and_undos_through_the_log(flat, tmp_path):
    from fgdesk.data.labeling import MovedImages

    moved = MovedImages(flat)
    x, y = flat / "unlabeled" / "x.png", flat / "unlabeled" / "cam2" / "y.png"
    assert moved.find(x) is None  # no log yet
    labeler = DatasetLabeler(flat)
    first = labeler.assign(x, "a")
    assert moved.find(x) == flat / "a" / "x.png"  # the log changed since the last look: read again
    labeler.undo(first)
    assert moved.find(first.target) == x  # an undo moves a labelled image back
    assert moved.find(x) is None  # labelled, then undone: back where it started, nothing to follow
    x.unlink()
    assert moved.find(x) is None  # the chain label, undo leads back to the missing file itself
    _image(x)
    again = labeler.assign(x, "b")
    assert moved.find(x) == again.target == flat / "b" / "x.png"
    assert moved.find(first.target) == again.target  # a/x.png -> unlabeled/x.png -> b/x.png

    # A worker process gets its own copy, which reads the log for itself.
    import pickle
    assert pickle.loads(pickle.dumps(moved)).find(x) == again.target

    # A file moved on and then deleted, one outside the dataset, one never moved: nothing found.
    labeler.assign(y, "a").target.unlink()
    assert moved.find(y) is None
    assert moved.find(tmp_path / "elsewhere.png") is None
    assert moved.find(flat / "a" / "never.png") is None

    # A damaged line, even one with bytes that are not UTF-8, does not hide the others.
    with open(flat / LABEL_LOG, "ab") as handle:
        handle.write(b"garbage\n2026-01-01,label,a,,\n2026-01-01,label,a,unlabeled/\xff.png,a/\xff.png,u,\n")
    assert moved.find(x) == again.target


def test_moved_images_keep_the_spelling_of_decomposed_unicode_names(flat):
    """Files copied from a Mac carry decomposed (NFD) names; Linux tells them apart from NFC."""
    import unicodedata

    from fgdesk.data.labeling import MovedImages

    name = unicodedata.normalize("NFD", "Amsel-ö.png")
    image = _image(flat / "unlabeled" / name)
    target = DatasetLabeler(flat).assign(image, "a").target
    assert target.name == name and target.is_file()
    assert MovedImages(flat).find(image) == target
    assert MovedImages(flat).find(flat / "unlabeled" / unicodedata.normalize("NFC", name)) == target


def test_an_undone_label_is_not_followed_to_a_later_file_of_that_name(flat):
    from fgdesk.data.labeling import MovedImages

    x = flat / "unlabeled" / "x.png"
    labeler = DatasetLabeler(flat)
    labeler.undo(labeler.assign(x, "a"))
    x.unlink()  # deleted by hand after the undo
    _image(flat / "a" / "x.png", (9, 9, 9))  # another image later takes the name
    assert MovedImages(flat).find(x) is None


def test_a_dry_run_plans_what_the_real_run_does_when_rows_collide(tmp_path):
    """Two unlabeled folders holding the same name land in one class folder: the dry run gives
    the second `-2`, as the real run does, and an image listed twice is planned once."""
    root = make_demo_dataset(tmp_path / "demo", num_classes=2, per_class=4, size=48, unlabeled=1)
    top = _image(root / "unlabeled" / "same.png")
    inner = _image(root / "train" / "unlabeled" / "same.png")
    planner = DatasetLabeler(root)
    planned = [planner.plan(top, "class_0_circle"), planner.plan(inner, "class_0_circle")]
    with pytest.raises(LabelingError, match="already planned"):
        planner.plan(top, "class_1_triangle")
    assert not (root / "train" / "class_0_circle" / "same.png").exists()  # nothing moved
    labeler = DatasetLabeler(root)
    done = [labeler.assign(top, "class_0_circle"), labeler.assign(inner, "class_0_circle")]
    assert [m.target for m in planned] == [m.target for m in done]
    assert done[1].target.name == "same-2.png"
    with pytest.raises(LabelingError, match="no longer exists"):
        labeler.assign(top, "class_1_triangle")


def test_a_dry_run_knows_the_classes_its_earlier_rows_make(flat):
    x, y = flat / "unlabeled" / "x.png", flat / "unlabeled" / "cam2" / "y.png"
    planner = DatasetLabeler(flat)
    planned = [planner.plan(x, "Bird", allow_new=True), planner.plan(y, "bird")]  # no allow_new: it exists by then
    labeler = DatasetLabeler(flat)
    done = [labeler.assign(x, "Bird", allow_new=True), labeler.assign(y, "bird")]
    assert [(m.target, m.class_name) for m in planned] == [(m.target, m.class_name) for m in done]
    assert done[1].target.parent.parent.name == "Bird"  # one folder, spelled as first made


# -- correcting a label ------------------------------------------------------------------


def test_a_wrong_label_is_corrected_by_moving_the_image_to_the_other_class_and_undone(flat):
    labeler = DatasetLabeler(flat)
    data = (flat / "a" / "a1.png").read_bytes()
    assert labeler.class_of(flat / "a" / "a1.png") == "a" and labeler.class_of(flat / "unlabeled" / "x.png") is None
    move = labeler.assign(flat / "a" / "a1.png", "b")
    assert (move.target, move.previous_class, move.class_name) == (flat / "b" / "a1.png", "a", "b")
    assert move.target.read_bytes() == data and not move.source.exists()
    assert _label_of(flat, move.target)[0] == "b"
    rows = list(csv.DictReader(open(flat / LABEL_LOG, encoding="utf-8")))
    assert [(r["action"], r["class"], r["from"], r["to"]) for r in rows] == [("relabel", "b", "a/a1.png", "b/a1.png")]

    # Another process finds the correction in the log, with the class the image had, and can undo it.
    logged = DatasetLabeler(flat).logged_moves()
    assert [(m.source, m.target, m.previous_class) for m in logged] == [(flat / "a" / "a1.png", flat / "b" / "a1.png", "a")]
    # A run that indexed the image before the correction still finds it.
    assert labeling.MovedImages(flat).find(flat / "a" / "a1.png") == flat / "b" / "a1.png"
    undone, errors = DatasetLabeler(flat).undo_last(1)
    assert errors == [] and (flat / "a" / "a1.png").read_bytes() == data
    assert (flat / "a").is_dir() and _label_of(flat, flat / "a" / "a1.png")[0] == "a"


def test_a_corrected_test_image_stays_in_the_test_split(tmp_path):
    root = make_demo_dataset(tmp_path / "demo", num_classes=2, per_class=4, size=48)
    image = next((root / "test" / "class_0_circle").iterdir())
    labeler = DatasetLabeler(root)  # no unlabeled/ folder: labels can still be corrected
    move = labeler.assign(image, "class_1_triangle")
    # The other class has a test image of that name already: -2, never an overwrite.
    assert move.target == root / "test" / "class_1_triangle" / f"{image.stem}-2.png"
    assert _label_of(root, move.target) == ("class_1_triangle", "test")


def test_a_table_corrects_labels_and_skips_rows_that_keep_theirs(flat, tmp_path):
    table = tmp_path / "check.csv"
    table.write_text("path,given,label\n"
                     f"{flat / 'a' / 'a0.png'},a,b\n"
                     f"{flat / 'b' / 'b0.png'},b,B\n"  # kept: the class it has, in another case
                     f"{flat / 'b' / 'b1.png'},b,\n"  # not decided
                     f"{flat / 'b' / 'b2.png'},b,a\n", encoding="utf-8")
    planned = apply_label_table(DatasetLabeler(flat), table, dry_run=True)
    assert [m.target for m in planned.moves] == [flat / "b" / "a0.png", flat / "a" / "b2.png"]
    assert (flat / "a" / "a0.png").is_file()  # a dry run moves nothing
    result = apply_label_table(DatasetLabeler(flat), table)
    assert (result.kept, result.skipped, result.errors) == (1, 1, [])
    assert sorted(p.name for p in (flat / "a").iterdir()) == ["a1.png", "a2.png", "b2.png"]
    assert sorted(p.name for p in (flat / "b").iterdir()) == ["a0.png", "b0.png", "b1.png"]


def test_a_label_kept_after_a_check_is_logged_until_the_file_moves_or_it_is_taken_back(flat):
    labeler = DatasetLabeler(flat)
    kept = labeler.confirm(flat / "a" / "a0.png")
    assert (kept.image, kept.class_name) == (flat / "a" / "a0.png", "a")
    labeler.confirm(flat / "b" / "b0.png")
    assert labeling.confirmed_labels(flat) == {"a/a0.png": "a", "b/b0.png": "b"}
    assert labeler.logged_moves() == []  # nothing moved: --undo takes back moves only
    with pytest.raises(LabelingError, match="only a label can be kept"):
        labeler.confirm(flat / "unlabeled" / "x.png")

    labeler.undo(kept)  # Undo in the app takes a kept label back
    assert labeling.confirmed_labels(flat) == {"b/b0.png": "b"}
    labeler.assign(flat / "b" / "b0.png", "a")  # corrected later after all: the old confirmation ends
    assert labeling.confirmed_labels(flat) == {}
    rows = list(csv.DictReader(open(flat / LABEL_LOG, encoding="utf-8")))
    assert [r["action"] for r in rows] == ["confirm", "confirm", "unconfirm", "relabel"]


def test_a_set_aside_image_leaves_the_index_keeps_its_path_and_comes_back_on_undo(flat):
    labeler = DatasetLabeler(flat)
    copy = flat / "b" / "b1.png"
    data = copy.read_bytes()
    move = labeler.set_aside(copy)
    hidden = flat / labeling.SET_ASIDE_FOLDER
    assert move.target == hidden / "b" / "b1.png" and move.target.read_bytes() == data and not copy.exists()
    assert (move.action, move.previous_class, move.class_name) == ("set aside", "b", "")
    index = detect(flat, check_images=False)
    assert copy not in {s.path for s in index.samples} and not any(hidden in s.path.parents for s in index.samples)
    assert labeler.classes == ["a", "b"]  # the hidden folder is no class
    # An unlabeled image can go too; a name taken there gets -2, never an overwrite.
    _image(flat / "b" / "b1.png", (9, 9, 9))
    again = labeler.set_aside(flat / "b" / "b1.png")
    assert again.target == hidden / "b" / "b1-2.png"
    pooled = labeler.set_aside(flat / "unlabeled" / "x.png")
    assert pooled.target == hidden / "unlabeled" / "x.png" and pooled.previous_class == ""

    rows = list(csv.DictReader(open(flat / LABEL_LOG, encoding="utf-8")))
    assert [(r["action"], r["class"], r["from"], r["to"]) for r in rows] == [
        ("set aside", "b", "b/b1.png", f"{labeling.SET_ASIDE_FOLDER}/b/b1.png"),
        ("set aside", "b", "b/b1.png", f"{labeling.SET_ASIDE_FOLDER}/b/b1-2.png"),
        ("set aside", "", "unlabeled/x.png", f"{labeling.SET_ASIDE_FOLDER}/unlabeled/x.png")]
    # A later session undoes them from the log, newest first: each file is back where it was.
    later = DatasetLabeler(flat)
    assert [m.set_aside for m in later.logged_moves()] == [True, True, True]
    undone, errors = later.undo_last(3)
    assert (flat / "unlabeled" / "x.png").is_file() and (flat / "b" / "b1.png").read_bytes() != data
    # The first one's place is taken again (by the second one, now back): never overwritten.
    assert len(undone) == 2 and len(errors) == 1 and "exists again" in errors[0]
    assert move.target.read_bytes() == data
    (flat / "b" / "b1.png").unlink()
    assert later.undo_last(1)[0] == [move] and (flat / "b" / "b1.png").read_bytes() == data
    assert not hidden.exists()  # the folders the set-asides made went with them
    with pytest.raises(LabelingError, match="only the dataset's own images"):
        later.set_aside(_image(flat.parent / "elsewhere.png"))
