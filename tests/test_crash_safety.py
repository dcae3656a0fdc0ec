"""SIGKILL at seeded random moments: the run folder stays consistent and resumes every time."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from fgdesk.data.synthetic import make_demo_dataset
from fgdesk.fileio import read_jsonl
from fgdesk.train import runs
from fgdesk.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

TRAIN_FLAGS = [
    "--epochs", "3", "--batch-size", "8", "--image-size", "32", "--eval-size", "32", "--local-crops", "0",
    "--workers", "0", "--queue-size", "32", "--checkpoint-every", "1", "--time-budget", "0", "--precision", "fp32",
    "--set", "model.proj_hidden=64", "--set", "model.proj_dim=32",
]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fgdesk", "train", *map(str, args)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy(),
    )


def step_records(run) -> list[int]:
    return [r["global_step"] for r in read_jsonl(run / runs.METRICS_FILE) if r["type"] == "step"]


def wait_for_steps(run, minimum: int, process: subprocess.Popen, timeout: float = 120, after: int = 0) -> int:
    """The last logged step once it is at least `minimum`, counting only records past the first `after`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = step_records(run)[after:]
        if steps and steps[-1] >= minimum:
            return steps[-1]
        if process.poll() is not None:
            return steps[-1] if steps else 0
        time.sleep(0.02)
    raise AssertionError("training made no progress")


def stop_during_checkpoint_write(run, process: subprocess.Popen, timeout: float = 60) -> None:
    """Freeze the process (SIGSTOP) while its last.pt temp file exists, so a kill lands mid-write."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if list((run / runs.CHECKPOINT_DIR).glob(".last.pt.*.tmp")):
            process.send_signal(signal.SIGSTOP)
            if list((run / runs.CHECKPOINT_DIR).glob(".last.pt.*.tmp")):
                return  # still writing, and now frozen there
            process.send_signal(signal.SIGCONT)  # the rename won the race; catch the next write
        time.sleep(0.002)
    raise AssertionError("no checkpoint write was seen")


def wait_for_own_state(run, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runs.read_state(run).get("pid") == process.pid:
            return
        if process.poll() is not None:
            raise AssertionError(f"training exited with {process.returncode}: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError("the resumed process never marked the run as its own")


def assert_folder_consistent(run) -> int | None:
    """Every file that looks final is complete; returns the checkpoint's step, if any."""
    state = json.loads((run / runs.STATE_FILE).read_text())  # atomic: always whole JSON
    assert state["status"] == "running"  # what the killed process last wrote
    assert runs.run_info(run).status == "interrupted"  # its writer is gone
    list(read_jsonl(run / runs.METRICS_FILE))  # a torn last line is tolerated
    checkpoint = runs.last_checkpoint(run)
    if not checkpoint.exists():
        return None
    return load_checkpoint(checkpoint)["global_step"]  # raises if half-written


@pytest.mark.timeout(900)  # several interpreters import torch; slow on a loaded machine
def test_sigkill_at_random_moments_then_resume_every_time(tmp_path):
    data = make_demo_dataset(tmp_path / "demo", num_classes=4, per_class=10, size=48, seed=2)
    run = tmp_path / "run"
    rng = random.Random(1234)
    process = start("--data", data, "--out", run, *TRAIN_FLAGS)
    kills, interrupted_writes = 0, 0
    previous_checkpoint_step = 0
    while kills < 5:
        reached = wait_for_steps(run, previous_checkpoint_step + 1, process)
        if kills in (1, 3):
            stop_during_checkpoint_write(run, process)  # kill in the middle of writing last.pt
        else:
            time.sleep(rng.uniform(0.0, 0.6))  # somewhere in the next step or checkpoint write
        if process.poll() is not None:
            pytest.fail(f"the run ended before kill {kills + 1}: {process.stderr.read().decode()[-2000:]}")
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        interrupted_writes += bool(list((run / runs.CHECKPOINT_DIR).glob(".*.tmp")))
        if kills in (2, 4):
            assert interrupted_writes, "a targeted kill should have left a half-written temp file"
        checkpoint_step = assert_folder_consistent(run)
        # Step N is logged before its checkpoint is written, so at most one step is lost;
        # a kill during the very first write leaves no checkpoint and the run starts over.
        if checkpoint_step is None:
            assert reached <= 1
            checkpoint_step = 0
        assert checkpoint_step >= reached - 1
        previous_checkpoint_step = checkpoint_step
        logged_before = sum(step <= checkpoint_step for step in step_records(run))
        process = start("--resume", run)
        wait_for_own_state(run, process)  # written after the records past the checkpoint are dropped
        wait_for_steps(run, checkpoint_step + 1, process, after=logged_before)
        # The resumed process starts right after the checkpoint: nothing is skipped or done twice,
        # the records of steps the checkpoint did not keep are gone (the curves never run
        # backwards), and its records are not lost to a line the kill tore.
        steps = step_records(run)
        assert len(steps) > logged_before and steps == list(range(1, len(steps) + 1))
    assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-2000:]
    info = runs.run_info(run)
    assert info.status == "finished" and info.epochs_done == 3
    final = load_checkpoint(runs.last_checkpoint(run))
    steps = [r for r in read_jsonl(run / runs.METRICS_FILE) if r["type"] == "step"]
    assert final["global_step"] == steps[-1]["total_steps"]
    assert not list((run / runs.CHECKPOINT_DIR).glob(".*.tmp"))  # stale temp files are swept on resume


def test_sigterm_stops_with_a_checkpoint_and_the_run_resumes(tmp_path):
    data = make_demo_dataset(tmp_path / "demo", num_classes=4, per_class=10, size=48, seed=2)
    run = tmp_path / "run"
    process = start("--data", data, "--out", run, *TRAIN_FLAGS)
    wait_for_steps(run, 2, process)
    process.send_signal(signal.SIGTERM)  # what a cluster scheduler sends before killing
    assert process.wait(timeout=60) == 0
    assert runs.run_info(run).status == "stopped"
    stopped_at = load_checkpoint(runs.last_checkpoint(run))["global_step"]
    assert stopped_at >= 2
    resumed = start("--resume", run)
    assert resumed.wait(timeout=300) == 0
    assert runs.run_info(run).status == "finished"
