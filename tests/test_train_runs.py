"""Deleting runs and measuring their disk use: only what fgdesk wrote goes, never more."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from fgdesk import paths
from fgdesk.train import runs


def fake_run(folder, checkpoint_bytes: int = 300_000):
    """A run folder as the engine leaves it, with checkpoints of known sizes (no torch needed)."""
    folder.mkdir(parents=True)
    (folder / runs.CONFIG_FILE).write_text(json.dumps({"data": {}, "model": {}, "schedule": {}}))
    runs.write_state(folder, status="finished", epochs_done=2, epochs=2)
    (folder / runs.METRICS_FILE).write_text('{"type": "step"}\n')
    (folder / runs.LOG_FILE).write_text("INFO training\n")
    (folder / runs.CHECKPOINT_DIR).mkdir()
    (folder / runs.CHECKPOINT_DIR / runs.LAST_CHECKPOINT).write_bytes(b"\0" * checkpoint_bytes)
    (folder / runs.CHECKPOINT_DIR / runs.BEST_CHECKPOINT).write_bytes(b"\0" * checkpoint_bytes)
    (folder / runs.CLASSIFIER_FILE).write_bytes(b"\0" * 1000)
    (folder / runs.CACHE_DIR).mkdir()
    (folder / runs.CACHE_DIR / "embeddings-train-0123.pt").write_bytes(b"\0" * 5000)
    (folder / runs.EXPORT_DIR).mkdir()
    (folder / runs.EXPORT_DIR / "fgdesk_encoder.pt").write_bytes(b"\0" * 7000)
    (folder / ".state.json.k3j2.tmp").write_bytes(b"{")  # a write a kill cut short
    return folder


def test_deleting_a_run_removes_what_fgdesk_wrote_and_frees_what_the_table_showed(isolated_home):
    run = fake_run(paths.runs_dir() / "old-run")
    info = runs.run_info(run)
    assert info.disk_bytes == runs.run_disk_bytes(run) > 2 * 300_000 + 13_000
    deleted = runs.delete_run(run)
    assert deleted.freed_bytes == info.disk_bytes and deleted.kept == []
    assert not run.exists() and runs.list_runs() == []


def test_files_of_ones_own_and_the_folder_holding_them_are_kept(tmp_path, isolated_home):
    run = fake_run(tmp_path / "my-experiment")
    (run / "notes.md").write_text("lr 0.03 looked better")
    (run / "figures").mkdir()
    (run / "figures" / "fig1.png").write_bytes(b"png")
    # Kept beside fgdesk's own files, in fgdesk's folders: still the user's.
    (run / runs.CHECKPOINT_DIR / "epoch50-keep.pt").write_bytes(b"\0" * 4000)
    (run / runs.EXPORT_DIR / "README.txt").write_text("deployed on the scope PC")
    runs.remember_run(run)
    assert [info.path.resolve() for info in runs.list_runs()] == [run.resolve()]
    size_before = runs.run_disk_bytes(run)
    assert size_before < sum(f.stat().st_size for f in run.rglob("*") if f.is_file()) - 4000  # theirs not counted

    deleted = runs.delete_run(run)
    assert deleted.freed_bytes == size_before
    assert deleted.kept == ["checkpoints/epoch50-keep.pt", "export/README.txt", "figures", "notes.md"]
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == [
        "checkpoints", "checkpoints/epoch50-keep.pt", "export", "export/README.txt", "figures", "figures/fig1.png", "notes.md"]
    assert (run / "figures" / "fig1.png").read_bytes() == b"png"
    assert runs.list_runs() == []  # what is left is not a run


def test_a_run_being_trained_is_refused_and_left_whole(tmp_path):
    run = fake_run(tmp_path / "busy")
    lock = runs.acquire_lock(run)  # as the training process holds it
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    try:
        with pytest.raises(runs.RunBusy, match="being trained"):
            runs.delete_run(run)
    finally:
        lock.release()
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    runs.delete_run(run)  # once the training has stopped
    assert not run.exists()


def test_a_folder_that_is_not_a_run_is_never_touched(tmp_path):
    dataset = tmp_path / "birds"
    (dataset / "train" / "sparrow").mkdir(parents=True)
    (dataset / "train" / "sparrow" / "1.jpg").write_bytes(b"jpg")
    (dataset / "config.json").write_text('{"name": "birds", "version": 2}')  # a dataset's own config
    (dataset / "train.log").write_text("download log")
    (dataset / "cache").mkdir()
    before = sorted(p.relative_to(dataset) for p in dataset.rglob("*"))
    with pytest.raises(runs.NotARun, match="not an fgdesk run folder"):
        runs.delete_run(dataset)
    with pytest.raises(runs.NotARun, match="does not exist"):
        runs.delete_run(tmp_path / "nowhere")
    assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before


def test_a_link_inside_a_run_is_removed_without_touching_what_it_points_to(tmp_path):
    elsewhere = tmp_path / "big-disk" / "checkpoints"
    elsewhere.mkdir(parents=True)
    (elsewhere / "last.pt").write_bytes(b"\0" * 1000)
    run = fake_run(tmp_path / "linked")
    shutil.rmtree(run / runs.CHECKPOINT_DIR)
    try:
        (run / runs.CHECKPOINT_DIR).symlink_to(elsewhere, target_is_directory=True)
    except OSError:
        pytest.skip("this file system cannot make symbolic links")
    runs.delete_run(run)
    assert not run.exists() and (elsewhere / "last.pt").stat().st_size == 1000


def test_a_run_folder_reached_through_a_link_or_as_the_current_folder_goes_whole(tmp_path, monkeypatch):
    real = fake_run(tmp_path / "other-disk" / "run")
    link = tmp_path / "runs" / "run"
    link.parent.mkdir()
    try:
        link.symlink_to(real, target_is_directory=True)
    except OSError:
        pytest.skip("this file system cannot make symbolic links")
    assert runs.delete_run(link).kept == []
    assert not os.path.lexists(link) and not real.exists() and (tmp_path / "other-disk").is_dir()

    here = fake_run(tmp_path / "here")
    monkeypatch.chdir(here)
    deleted = runs.delete_run(Path("."))
    assert deleted.path == Path(".") and deleted.kept == [] and not here.exists()


def test_a_delete_cut_short_leaves_a_listed_run_that_a_second_delete_finishes(isolated_home, monkeypatch):
    run = fake_run(paths.runs_dir() / "half")
    real_unlink = Path.unlink

    def fail_in_export(self, *args, **kwargs):
        if self.parent.name == runs.EXPORT_DIR:
            raise PermissionError(13, "Permission denied", str(self))
        real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", fail_in_export)
    with pytest.raises(PermissionError):
        runs.delete_run(run)
    assert not (run / runs.CHECKPOINT_DIR / runs.LAST_CHECKPOINT).exists()  # the largest went first
    listed = runs.list_runs()
    assert [info.name for info in listed] == ["half"] and listed[0].disk_bytes < 20_000
    monkeypatch.setattr(Path, "unlink", real_unlink)
    runs.delete_run(run)
    assert not run.exists()


@pytest.mark.parametrize(("count", "text"), [(0, "0 bytes"), (999, "999 bytes"), (1500, "1.5 KB"),
                                              (142_300_000, "142 MB"), (2_500_000_000, "2.5 GB"),
                                              (12_300_000_000_000, "12300 GB")])
def test_sizes_read_as_a_file_manager_shows_them(count, text):
    assert runs.format_bytes(count) == text


def test_fgdesk_runs_shows_sizes_and_fgdesk_delete_asks_or_needs_yes(isolated_home, tmp_path, capsys, monkeypatch):
    from fgdesk.cli import main

    first = fake_run(paths.runs_dir() / "first-run")
    second = fake_run(paths.runs_dir() / "second-run", checkpoint_bytes=1_000_000)
    assert main(["runs"]) == 0
    listing = capsys.readouterr().out
    assert "2 run(s), 2.6 MB on disk" in listing and f"{runs.format_bytes(runs.run_disk_bytes(second)):>8s}" in listing
    assert main(["runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {row["name"]: row["disk_bytes"] for row in listed} == {"first-run": runs.run_disk_bytes(first),
                                                                   "second-run": runs.run_disk_bytes(second)}
    assert {row["status"] for row in listed} == {"finished"} and all(row["path"] for row in listed)

    monkeypatch.setattr("sys.stdin", open(os.devnull))  # no one to answer: refused, nothing deleted
    assert main(["delete", "first-run"]) == 2
    assert "add --yes" in capsys.readouterr().err and first.is_dir()
    assert main(["delete", str(tmp_path)]) == 2  # not a run: refused before anything is deleted
    assert "not an fgdesk run folder" in capsys.readouterr().err and first.is_dir()

    class Terminal:
        def __init__(self, answer):
            self.answer = answer

        def isatty(self):
            return True

        def readline(self):
            return self.answer

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert main(["delete", "first-run"]) == 1 and first.is_dir()
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert main(["delete", "first-run"]) == 0
    assert "deleted" in capsys.readouterr().out and not first.exists()

    lock = runs.acquire_lock(second)
    try:
        assert main(["delete", "second-run", "--yes"]) == 1
        assert "being trained" in capsys.readouterr().err and second.is_dir()
    finally:
        lock.release()
    assert main(["delete", str(second), "--yes"]) == 0 and not second.exists()

    # Two runs of one name (one made elsewhere with --out): the name alone deletes neither.
    here = fake_run(paths.runs_dir() / "twin")
    elsewhere = fake_run(tmp_path / "elsewhere" / "twin")
    runs.remember_run(elsewhere)
    assert main(["delete", "twin", "--yes"]) == 2
    assert "several runs are named twin" in capsys.readouterr().err and here.is_dir() and elsewhere.is_dir()


def test_scores_written_after_a_delete_do_not_bring_the_run_folder_back(tmp_path):
    """A classifier fit still running when its run is deleted must not remake the folder
    (atomic writes make missing parents): it fails, saying why."""
    import numpy as np

    from fgdesk.evaluate.scores import ClassifierReport, save_classifier_report

    run = fake_run(tmp_path / "fitting")
    runs.delete_run(run)
    report = ClassifierReport(top1=0.5, top5=1.0, per_class={"a": 0.5}, confusion=np.eye(1, dtype=np.int64), class_names=["a"])
    with pytest.raises(FileNotFoundError, match="no longer exists"):
        save_classifier_report(run, report)
    assert not run.exists()
