"""Checkpoints: atomic, versioned, and never a way to run someone else's code."""
from __future__ import annotations

import io
import os
import stat
import pickle
import zipfile

import pytest
import torch

from fgdesk.config import RunConfig
from fgdesk.fileio import append_jsonl, atomic_write_bytes, drop_torn_jsonl_line, read_jsonl
from fgdesk.train.checkpoint import CheckpointError, check_compatible, load_checkpoint, save_checkpoint


def write_checkpoint(path, **extra):
    save_checkpoint(path, {"model": {"w": torch.arange(4.0)}, "epoch": 3, **extra}, RunConfig())


def test_round_trip_keeps_tensors_numbers_and_config(tmp_path):
    path = tmp_path / "last.pt"
    write_checkpoint(path, num_classes=5)
    document = load_checkpoint(path, kind="pretrain")
    assert torch.equal(document["model"]["w"], torch.arange(4.0))
    assert document["epoch"] == 3 and document["version"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_truncated_checkpoint_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "last.pt"
    write_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_unknown_format_version_is_refused(tmp_path):
    path = tmp_path / "future.pt"
    buffer = io.BytesIO()
    torch.save({"format": "fgdesk-checkpoint", "version": 99, "kind": "pretrain"}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)


def test_a_file_from_another_program_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="not an fgdesk checkpoint"):
        load_checkpoint(path)


class RunsCode:
    """Unpickling this would write a marker file: the classic malicious checkpoint."""

    marker = ""

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_crafted_checkpoint_never_runs_its_code(tmp_path, container):
    marker = tmp_path / "marker.txt"
    RunsCode.marker = str(marker)
    payload = {"format": "fgdesk-checkpoint", "version": 1, "kind": "pretrain", "model": RunsCode()}
    path = tmp_path / "evil.pt"
    if container == "torch_zip":
        torch.save(payload, path)  # a real torch zip whose data.pkl holds the exploit
        assert zipfile.is_zipfile(path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match="refused|corrupt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_for_another_backbone_or_class_count_is_refused(tmp_path):
    path = tmp_path / "cls.pt"
    write_checkpoint(path, num_classes=5)
    document = load_checkpoint(path)
    with pytest.raises(CheckpointError, match="resnet18, not resnet50"):
        check_compatible(document, path, backbone="resnet50")
    with pytest.raises(CheckpointError, match="5 classes"):
        check_compatible(document, path, num_classes=7)
    check_compatible(document, path, backbone="resnet18", num_classes=5)


def test_failed_atomic_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")

    class Boom(Exception):
        pass

    from fgdesk.fileio import atomic_write

    def half_then_fail(handle):
        handle.write(b"new but incomplete")
        raise Boom

    with pytest.raises(Boom):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_torn_last_metrics_line_is_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 1})
    append_jsonl(path, {"step": 2})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"step": 3, "lo')  # killed mid-write
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
    # A resumed run cuts the torn line first, so its own first record is not lost with it.
    assert drop_torn_jsonl_line(path)
    append_jsonl(path, {"step": 3})
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]
    assert not drop_torn_jsonl_line(path) and not drop_torn_jsonl_line(tmp_path / "missing.jsonl")


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
def test_atomic_writes_get_the_mode_of_any_new_file(tmp_path):
    """Colleagues sharing a run folder can read its checkpoints and state, as the umask allows."""
    from fgdesk.fileio import atomic_write_text

    previous = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic_write_text(tmp_path / "state.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
