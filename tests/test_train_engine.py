"""The training engine: events, control from another thread, resume, and clear failures."""
from __future__ import annotations

import errno
import math
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from fgdesk.config import RunConfig
from fgdesk.data.synthetic import make_demo_dataset
from fgdesk.fileio import read_jsonl
from fgdesk.model.moco import MoCo
from fgdesk.train import checkpoint as checkpoint_module
from fgdesk.train import runs
from fgdesk.train.checkpoint import load_checkpoint
from fgdesk.train.engine import Trainer
from fgdesk.train.events import CheckpointEvent, EpochEvent, FailedEvent, FinishedEvent, PausedEvent, StepEvent, TrainingControl


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), num_classes=4, per_class=10, size=48, seed=1)


def tiny_config(data, **changes) -> RunConfig:
    config = RunConfig()
    config.data.path = str(data)
    config.data.image_size = 32
    config.data.eval_size = 32
    config.data.local_crops = 1
    config.data.local_size = 16
    config.data.num_workers = 0
    config.model.stages = [3, 4]
    config.model.proj_hidden = 64
    config.model.proj_dim = 32
    config.contrastive.queue_size = 32
    config.schedule.batch_size = 8
    config.schedule.epochs = 2
    config.schedule.checkpoint_every_steps = 2
    config.precision = "fp32"  # bit-for-bit comparisons below
    return config.with_overrides(changes).validate() if changes else config.validate()


def collect(events: list):
    return events.append


def test_run_emits_events_writes_the_run_folder_and_finishes(tiny_data, tmp_path):
    events: list = []
    result = Trainer(tiny_config(tiny_data), run_dir=tmp_path / "run", on_event=collect(events)).run()
    assert isinstance(result, FinishedEvent) and result.status == "finished" and result.epochs_done == 2
    steps = [e for e in events if isinstance(e, StepEvent)]
    epochs = [e for e in events if isinstance(e, EpochEvent)]
    assert steps and steps[-1].global_step == steps[-1].total_steps == 2 * steps[0].steps_per_epoch
    assert all(torch.isfinite(torch.tensor(e.loss)) and e.lr >= 0 and e.images_per_s > 0 for e in steps)
    assert [e.epoch for e in epochs] == [0, 1]
    assert all(e.knn_top1 is not None and 0.0 <= e.knn_top1 <= 1.0 for e in epochs)
    assert any(isinstance(e, CheckpointEvent) for e in events)
    run = tmp_path / "run"
    records = list(read_jsonl(run / runs.METRICS_FILE))
    assert sum(r["type"] == "step" for r in records) == len(steps)
    assert sum(r["type"] == "epoch" for r in records) == 2
    info = runs.run_info(run)
    assert info.status == "finished" and info.epochs_done == 2 and info.best_knn_top1 is not None
    assert RunConfig.load(run / runs.CONFIG_FILE).to_dict() == tiny_config(tiny_data).to_dict()
    assert load_checkpoint(runs.last_checkpoint(run), kind="pretrain")["global_step"] == steps[-1].global_step


def test_stop_mid_epoch_then_resume_continues_exactly_where_it_stopped(tiny_data, tmp_path):
    config = tiny_config(tiny_data)
    reference: list = []
    Trainer(config, run_dir=tmp_path / "uninterrupted", on_event=collect(reference)).run()
    reference_losses = {e.global_step: e.loss for e in reference if isinstance(e, StepEvent)}

    control = TrainingControl()
    first: list = []

    def stop_at_step_three(event):
        first.append(event)
        if isinstance(event, StepEvent) and event.global_step == 3:
            control.stop()

    result = Trainer(config, run_dir=tmp_path / "run", on_event=stop_at_step_three, control=control).run()
    assert result.status == "stopped"
    assert runs.run_info(tmp_path / "run").status == "stopped"
    saved = load_checkpoint(runs.last_checkpoint(tmp_path / "run"))
    assert saved["global_step"] == 3 and saved["epoch"] == 0 and saved["step_in_epoch"] == 3

    second: list = []
    result = Trainer.resume(tmp_path / "run", on_event=collect(second)).run()
    assert result.status == "finished" and result.epochs_done == 2
    resumed_steps = [e.global_step for e in second if isinstance(e, StepEvent)]
    assert resumed_steps == list(range(4, max(reference_losses) + 1))
    # Model, optimizer, queue, data order and random state all came back: same losses.
    for event in second:
        if isinstance(event, StepEvent):
            assert event.loss == pytest.approx(reference_losses[event.global_step], abs=1e-4)


def test_pause_holds_the_loop_and_resume_lets_it_finish(tiny_data, tmp_path):
    control = TrainingControl()
    times: dict[int, float] = {}
    parked: list[int] = []

    def pause_at_step_two(event):
        if isinstance(event, PausedEvent):
            parked.append(event.global_step)
            if len(parked) == 1:  # Resume then Pause again before the loop wakes: a new request
                control.resume()
                control.pause()
            else:  # parked for good: time the pause from here, not from the step (a checkpoint may follow it)
                threading.Timer(0.6, control.resume).start()
        if isinstance(event, StepEvent):
            times[event.global_step] = time.monotonic()
            if event.global_step == 2:
                control.pause()

    result = Trainer(tiny_config(tiny_data, **{"schedule.epochs": 1}), run_dir=tmp_path / "run", on_event=pause_at_step_two, control=control).run()
    assert result.status == "finished"
    assert times[3] - times[2] >= 0.55
    assert parked == [2, 2]  # said once per request, after the step in flight


def test_stop_while_paused_saves_and_returns(tiny_data, tmp_path):
    control = TrainingControl()

    def pause_then_stop(event):
        if isinstance(event, StepEvent) and event.global_step == 1:
            control.pause()
            threading.Timer(0.3, control.stop).start()

    result = Trainer(tiny_config(tiny_data), run_dir=tmp_path / "run", on_event=pause_then_stop, control=control).run()
    assert result.status == "stopped"
    assert load_checkpoint(runs.last_checkpoint(tmp_path / "run"))["global_step"] == 1


def test_nan_loss_stops_the_run_with_a_clear_message(tiny_data, tmp_path, monkeypatch):
    original = MoCo.forward

    def poisoned(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(MoCo, "forward", poisoned)
    events: list = []
    result = Trainer(tiny_config(tiny_data), run_dir=tmp_path / "run", on_event=collect(events)).run()
    assert isinstance(result, FailedEvent)
    assert "not finite for 5 steps in a row" in result.reason and "optim.lr" in result.reason
    assert runs.run_info(tmp_path / "run").status == "failed"
    assert any(isinstance(e, FailedEvent) for e in events)


def test_a_single_non_finite_step_is_skipped_and_the_run_goes_on(tiny_data, tmp_path, monkeypatch):
    original = MoCo.forward
    calls = {"n": 0}

    def one_bad_step(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            output.loss = output.loss * float("inf")
        return output

    monkeypatch.setattr(MoCo, "forward", one_bad_step)
    events: list = []
    result = Trainer(tiny_config(tiny_data), run_dir=tmp_path / "run", on_event=collect(events)).run()
    assert isinstance(result, FinishedEvent) and result.status == "finished"
    losses = [e.loss for e in events if isinstance(e, StepEvent)]
    assert not math.isfinite(losses[1]) and all(math.isfinite(x) for x in losses[:1] + losses[2:])
    weights = load_checkpoint(runs.last_checkpoint(tmp_path / "run"))["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    records = [r for r in read_jsonl(tmp_path / "run" / runs.METRICS_FILE) if r["type"] == "step"]
    assert records[1]["loss"] is None


def test_views_too_small_for_cpu_bf16_train_in_fp32_without_skipped_steps(tiny_data, tmp_path, caplog):
    # 16-px local crops give stage 4 a 1x1 input; CPU bf16 backward then made 8 of 20
    # steps' gradients non-finite, and five in a row ended the run.
    caplog.set_level("WARNING", logger="fgdesk")
    events: list = []
    config = tiny_config(tiny_data, **{"precision": "bf16", "schedule.epochs": 3})
    result = Trainer(config, run_dir=tmp_path / "run", on_event=collect(events)).run()
    assert isinstance(result, FinishedEvent) and result.status == "finished"
    assert "training in fp32" in caplog.text and "skipped step" not in caplog.text
    assert all(math.isfinite(e.loss) for e in events if isinstance(e, StepEvent))


def test_out_of_memory_suggests_a_smaller_batch(tiny_data, tmp_path, monkeypatch):
    def exhausted(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(MoCo, "forward", exhausted)
    result = Trainer(tiny_config(tiny_data), run_dir=tmp_path / "run").run()
    assert isinstance(result, FailedEvent)
    assert "--batch-size 4" in result.reason


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tiny_data, tmp_path, monkeypatch):
    real_atomic_write = checkpoint_module.atomic_write
    calls = {"n": 0}

    def fill_disk_on_second_checkpoint(path, write):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_atomic_write(path, write)

    monkeypatch.setattr(checkpoint_module, "atomic_write", fill_disk_on_second_checkpoint)
    result = Trainer(tiny_config(tiny_data), run_dir=tmp_path / "run").run()
    assert isinstance(result, FailedEvent) and "disk is full" in result.reason
    kept = load_checkpoint(runs.last_checkpoint(tmp_path / "run"))
    assert kept["global_step"] == 2  # the first checkpoint survived intact
    assert not list((tmp_path / "run" / runs.CHECKPOINT_DIR).glob(".*.tmp"))


def test_a_disk_that_fills_while_logging_stops_the_run_naming_the_file_and_never_raises(tiny_data, tmp_path, monkeypatch):
    """Not a checkpoint but metrics.jsonl meets the full disk, and recording the failure in
    state.json fails too: the run still ends with a FailedEvent, its last checkpoint intact."""
    from fgdesk import fileio

    full = {"now": False}
    real_open = open

    def opening(path, mode="r", *args, **kwargs):
        if full["now"] and mode == "a":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    real_write_state = runs.write_state

    def write_state(run_dir, **changes):
        if full["now"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / runs.STATE_FILE))
        return real_write_state(run_dir, **changes)

    monkeypatch.setattr(fileio, "open", opening, raising=False)
    monkeypatch.setattr(runs, "write_state", write_state)

    def fill_after_the_first_checkpoint(event):
        if isinstance(event, CheckpointEvent):
            full["now"] = True

    result = Trainer(tiny_config(tiny_data), run_dir=tmp_path / "run", on_event=fill_after_the_first_checkpoint).run()
    assert isinstance(result, FailedEvent)
    assert result.reason.startswith("the disk is full: ") and f"{runs.METRICS_FILE} could not be written" in result.reason
    assert load_checkpoint(runs.last_checkpoint(tmp_path / "run"))["global_step"] == 2


def test_a_disk_too_full_for_one_checkpoint_fails_before_training_and_a_tight_one_warns(tiny_data, tmp_path, monkeypatch, caplog):
    from collections import namedtuple

    from fgdesk.train import engine

    usage = namedtuple("usage", "total used free")
    free = {"bytes": 50_000_000}
    monkeypatch.setattr(engine.shutil, "disk_usage", lambda path: usage(10**12, 0, free["bytes"]))
    estimates: list[int] = []
    real_check = engine.disk_space_problem
    monkeypatch.setattr(engine, "disk_space_problem", lambda run_dir, per, best: estimates.append(per) or real_check(run_dir, per, best))
    events: list = []
    result = Trainer(tiny_config(tiny_data), run_dir=tmp_path / "full", on_event=collect(events)).run()
    assert isinstance(result, FailedEvent) and "would fail at its first checkpoint" in result.reason
    assert "fgdesk delete" in result.reason and "has 50 MB free" in result.reason
    assert not [e for e in events if isinstance(e, StepEvent)]  # it failed before spending time on steps

    # Room for one checkpoint, not for last and best: a warning, and the run goes on.
    caplog.set_level("WARNING", logger="fgdesk")
    free["bytes"] = 200_000_000
    result = Trainer(tiny_config(tiny_data), run_dir=tmp_path / "tight").run()
    assert isinstance(result, FinishedEvent) and result.status == "finished"
    assert any("checkpoints need about" in record.getMessage() for record in caplog.records)
    written = runs.last_checkpoint(tmp_path / "tight").stat().st_size
    assert 0.95 < written / estimates[-1] < 1.05  # the estimate is the checkpoint's real size


def test_a_folder_without_images_fails_with_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    config = tiny_config(tmp_path / "empty")
    result = Trainer(config, run_dir=tmp_path / "run").run()
    assert isinstance(result, FailedEvent)
    assert str(tmp_path / "empty") in result.reason


def test_the_knn_monitor_decodes_its_images_once_and_scores_as_before(tiny_data, tmp_path, monkeypatch):
    """The monitor keeps its images decoded between epochs; its kNN scores equal those of
    decoding every epoch (what it does when the images do not fit the memory cap)."""
    from fgdesk.train import engine

    decoded: list[int] = []
    original = engine.decode_images
    monkeypatch.setattr(engine, "decode_images", lambda samples, *a, **k: decoded.append(len(samples)) or original(samples, *a, **k))
    config = tiny_config(tiny_data, **{"schedule.epochs": 3})

    def knn_per_epoch(run_dir):
        events: list = []
        Trainer(config, run_dir=run_dir, on_event=collect(events)).run()
        return [e.knn_top1 for e in events if isinstance(e, EpochEvent)]

    kept = knn_per_epoch(tmp_path / "kept")
    assert len(decoded) == 2 and sum(decoded) > 0  # the bank and the held-out images, once, for 3 epochs
    monkeypatch.setattr(engine, "MONITOR_CACHE_BYTES", 0)
    streamed = knn_per_epoch(tmp_path / "streamed")
    assert len(decoded) == 2
    assert len(kept) == 3 and None not in kept
    assert kept == streamed


def test_the_resolution_schedule_switches_mid_epoch_and_a_resume_keeps_the_switch_step(tiny_data, tmp_path, monkeypatch):
    sizes: list[tuple[int, int]] = []
    forward = MoCo.forward

    def recording(self, global_views, local_views, ids, crops=None):
        sizes.append((global_views[0].shape[-1], local_views[0].shape[-1]))
        return forward(self, global_views, local_views, ids, crops)

    monkeypatch.setattr(MoCo, "forward", recording)
    config = tiny_config(tiny_data, **{"data.image_size": 40, "data.early_size": 32, "data.local_size": 36,
                                       "data.early_fraction": 0.5, "schedule.epochs": 3})
    events: list = []
    result = Trainer(config, run_dir=tmp_path / "uninterrupted", on_event=collect(events)).run()
    assert isinstance(result, FinishedEvent) and result.status == "finished"
    total = [e for e in events if isinstance(e, StepEvent)][-1].total_steps
    assert total % 3 == 0 and (total // 2) % (total // 3) != 0  # the switch falls inside an epoch
    # Steps before half of the run see 32 px global views and local crops shrunk in proportion
    # (36 * 32 / 40 = 29 px); every step after sees the full sizes.
    switch = math.ceil(total / 2)
    assert sizes == [(32, 29)] * switch + [(40, 36)] * (total - switch)

    # Stopped before the switch and resumed: the switch comes at the same step.
    uninterrupted, sizes[:] = list(sizes), []
    control = TrainingControl()

    def stop_at_step_two(event):
        if isinstance(event, StepEvent) and event.global_step == 2:
            control.stop()

    assert Trainer(config, run_dir=tmp_path / "run", on_event=stop_at_step_two, control=control).run().status == "stopped"
    assert Trainer.resume(tmp_path / "run").run().status == "finished"
    assert sizes == uninterrupted


def test_a_resolution_schedule_larger_than_the_views_is_refused(tiny_data):
    from fgdesk.config import ConfigError

    with pytest.raises(ConfigError, match="data.early_size"):
        tiny_config(tiny_data, **{"data.early_size": 64})



@pytest.fixture()
def two_process_world(monkeypatch):
    """Rank 0 of a two-process torchrun world whose collectives are simulated here: the
    test sets what the other process contributes to each step's averages."""
    from fgdesk.train import distributed

    other = {"elapsed_s": 0.0, "stop": 0.0}

    def mean_with_the_other_process(values, context, device):
        loss, seconds, stop = values
        return [loss, (seconds + other["elapsed_s"]) / 2, (stop + other["stop"]) / 2]

    monkeypatch.setattr(distributed, "init_from_env", lambda device_type: distributed.DistContext(0, 2, 0))
    monkeypatch.setattr(distributed, "all_reduce_mean", mean_with_the_other_process)
    monkeypatch.setattr(distributed, "all_reduce_min", lambda value, context, device: value)
    monkeypatch.setattr(distributed, "all_gather_rows", lambda rows, ids, most, context: (rows, ids))
    monkeypatch.setattr(distributed, "broadcast_object", lambda value, context: value)
    monkeypatch.setattr(distributed, "barrier", lambda context: None)
    monkeypatch.setattr(distributed, "shutdown", lambda context: None)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda model, **kwargs: model)
    return other


def test_under_torchrun_the_budget_and_a_stop_come_from_what_all_processes_share(tiny_data, tmp_path, two_process_world):
    # Each process has its own clock and its own signal handler; a process that left the
    # loop a step before the others would leave them waiting in a collective forever.
    config = tiny_config(tiny_data, **{"schedule.time_budget_min": 30.0})
    two_process_world["elapsed_s"] = 7200.0  # the other process's clock: two hours in
    events: list = []
    result = Trainer(config, run_dir=tmp_path / "budget", on_event=collect(events)).run()
    assert isinstance(result, FinishedEvent) and result.status == "finished"
    assert [e.global_step for e in events if isinstance(e, StepEvent)] == [1]

    # The other process got a stop signal; this one did not.
    two_process_world.update(elapsed_s=0.0, stop=1.0)
    events.clear()
    result = Trainer(tiny_config(tiny_data), run_dir=tmp_path / "stop", on_event=collect(events)).run()
    assert result.status == "stopped"
    assert [e.global_step for e in events if isinstance(e, StepEvent)] == [1]


def test_training_and_its_monitor_decode_camera_sized_jpegs_reduced(tmp_path, monkeypatch):
    """Big JPEGs are decoded at a DCT scale that still covers every view's pixels, in the
    training loader and in the kNN monitor, and the run trains on them as usual."""
    import numpy as np
    from PIL import Image

    from fgdesk.data import loading
    from fgdesk.data.augment import ContrastiveViews, eval_min_short_side

    rng = np.random.default_rng(0)
    for name, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for k in range(8):
            pixels = np.clip(rng.normal(colour, 30, (480, 640, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / name / f"{k}.jpg", quality=85)
    decoded: list[tuple[int, tuple[int, int]]] = []
    original = loading.load_rgb

    def recording(path, *args, **kwargs):
        image = original(path, *args, **kwargs)
        decoded.append((kwargs.get("min_short_side", 0), image.size))
        return image

    monkeypatch.setattr(loading, "load_rgb", recording)
    config = tiny_config(tmp_path / "photos", **{"schedule.epochs": 1})
    result = Trainer(config, run_dir=tmp_path / "run").run()
    assert isinstance(result, FinishedEvent) and result.status == "finished"
    train_side, eval_side = ContrastiveViews(config.data).min_short_side, eval_min_short_side(config.data.eval_size)
    assert train_side != eval_side
    sides = {side for side, _ in decoded}
    assert sides == {train_side, eval_side}
    # 1/4 scale (160 x 120) is the smallest that keeps both sides; nothing decodes in full.
    assert {size for _, size in decoded} == {(160, 120)}
    assert all(min(size) >= side for side, size in decoded)


def test_the_held_out_images_and_the_monitor_follow_the_dataset_not_its_folder(tiny_data, tmp_path):
    """The same dataset in another folder (another machine, a moved disk) gets the same
    held-out images, so the kNN monitor and the best checkpoint agree across copies."""
    import shutil

    from fgdesk.data.layouts import detect
    from fgdesk.train.engine import holdout_split

    copy = tmp_path / "elsewhere" / "deeper" / "demo-copy"
    shutil.copytree(tiny_data, copy)
    held_out = []
    for root in (tiny_data, copy):
        index = detect(root, check_images=False)
        bank, validation = holdout_split(index.train_samples(), index.root)
        assert validation and len(bank) + len(validation) == len(index.train_samples())
        held_out.append(sorted(sample.path.relative_to(root).as_posix() for sample in validation))
    assert held_out[0] == held_out[1]

    scores = []
    for root, name in ((tiny_data, "a"), (copy, "b")):
        events: list = []
        Trainer(tiny_config(root, **{"schedule.epochs": 1}), run_dir=tmp_path / name, on_event=collect(events)).run()
        scores.append([e.knn_top1 for e in events if isinstance(e, EpochEvent)])
    assert scores[0] == scores[1] and scores[0][0] is not None


def test_unlabeled_images_train_the_encoder_but_stay_out_of_the_monitor_and_classifier(tmp_path):
    """Few labels, many images: unlabeled/ beside the class folders adds steps to every
    epoch, while the kNN monitor and the linear classifier use labelled images only."""
    from fgdesk.data.layouts import detect
    from fgdesk.evaluate.report import fit_classifier

    data = make_demo_dataset(tmp_path / "few-labels", num_classes=4, per_class=8, size=48, seed=2, unlabeled=16)
    index = detect(data, check_images=False)
    labelled_train = [s for s in index.train_samples() if s.label >= 0]
    assert len(labelled_train) == 24 and len(index.split("unlabeled")) == 16
    events: list = []
    run = tmp_path / "run"
    result = Trainer(tiny_config(data, **{"schedule.epochs": 1}), run_dir=run, on_event=collect(events)).run()
    assert result.status == "finished"
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert steps[0].steps_per_epoch == (24 + 16) // 8  # labelled and unlabeled images alike
    knn = [e.knn_top1 for e in events if isinstance(e, EpochEvent)]
    assert knn[0] is not None and 0.0 <= knn[0] <= 1.0
    report = fit_classifier(run, device="cpu")
    assert report.num_train == 24 and report.num_test == 8 and report.confusion.shape == (4, 4)

    # What to label next comes from unlabeled/ only, with a guessed class for each.
    from fgdesk.evaluate.suggest import suggest_for_run, write_suggestions_csv

    from fgdesk.evaluate.embeddings import EmbeddingCancelled

    with pytest.raises(EmbeddingCancelled):
        suggest_for_run(run, count=5, device="cpu", should_cancel=lambda: True)
    suggestions = suggest_for_run(run, count=5, device="cpu")
    assert [s.rank for s in suggestions] == [1, 2, 3, 4, 5]
    assert len({s.path for s in suggestions}) == 5 and all("unlabeled" in Path(s.path).parts for s in suggestions)
    assert all(s.guess in index.classes and 0.0 < s.guess_share <= 1.0 for s in suggestions)
    table = tmp_path / "suggested.csv"
    write_suggestions_csv(table, suggestions)
    assert table.read_text().splitlines()[0] == "rank,path,guess,guess_share,group_size,typicality,label"

    # The loop closes: fill in the label column (here with the guesses) and apply it. The
    # images join train/ under their classes, the classifier learns from them, and they are
    # no longer suggested.
    import csv as csv_module

    from fgdesk.data.labeling import DatasetLabeler, apply_label_table

    rows = list(csv_module.DictReader(table.open(encoding="utf-8")))
    for row in rows[:3]:
        row["label"] = row["guess"]
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv_module.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    applied = apply_label_table(DatasetLabeler(data), table)
    assert len(applied.moves) == 3 and applied.skipped == 2 and not applied.errors
    assert all(m.target.parent == data / "train" / m.class_name for m in applied.moves)
    report = fit_classifier(run, device="cpu")
    assert report.num_train == 24 + 3 and report.num_test == 8
    again = suggest_for_run(run, count=5, device="cpu")
    assert not {str(m.source) for m in applied.moves} & {s.path for s in again}
    assert all(Path(s.path).is_file() for s in again)


@pytest.mark.parametrize("new_batch, expected_steps", [(16, [2, 3, 4]), (4, list(range(7, 17)))])
def test_resuming_with_another_batch_size_goes_on_from_the_same_image(tiny_data, tmp_path, new_batch, expected_steps):
    """Stopped after 3 steps of 8 images (24 of 32), resumed with batches of 16 or 4: the run
    carries on from image 24 in the new units, so the schedules neither end early (a
    learning rate of 0 for the rest of the run) nor repeat an epoch's images."""
    control = TrainingControl()

    def stop_at_step_three(event):
        if isinstance(event, StepEvent) and event.global_step == 3:
            control.stop()

    run = tmp_path / "run"
    assert Trainer(tiny_config(tiny_data), run_dir=run, on_event=stop_at_step_three, control=control).run().status == "stopped"
    events: list = []
    result = Trainer.resume(run, on_event=collect(events), overrides={"schedule.batch_size": new_batch}).run()
    assert result.status == "finished" and result.epochs_done == 2
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.global_step for e in steps] == expected_steps
    assert all(e.total_steps == expected_steps[-1] and e.lr > 0 for e in steps)
    epochs = [e for e in events if isinstance(e, EpochEvent)]
    assert [e.epoch for e in epochs] == [0, 1] and all(math.isfinite(e.mean_loss) for e in epochs)
    saved = load_checkpoint(runs.last_checkpoint(run), kind="pretrain")
    assert saved["global_step"] == expected_steps[-1] and saved["global_batch"] == new_batch
    # The steps logged before the change are kept, in the new units: the curve goes forward.
    logged = [r["global_step"] for r in read_jsonl(run / runs.METRICS_FILE) if r["type"] == "step"]
    assert len(logged) == 3 + len(expected_steps) and logged == sorted(logged)
    assert logged[2] == round(3 * 8 / new_batch)


def test_resuming_a_run_that_used_its_budget_changes_nothing(tiny_data, tmp_path):
    run = tmp_path / "run"
    config = tiny_config(tiny_data, **{"schedule.epochs": 50, "schedule.time_budget_min": 0.002})
    first = Trainer(config, run_dir=run).run()
    assert first.status == "finished" and first.epochs_done < 50
    metrics = (run / runs.METRICS_FILE).read_bytes()
    checkpoint = runs.last_checkpoint(run).read_bytes()
    for _ in range(2):
        events: list = []
        again = Trainer.resume(run, on_event=collect(events)).run()
        assert again.status == "finished" and again.epochs_done == first.epochs_done
        assert not [e for e in events if isinstance(e, (StepEvent, EpochEvent))]
    assert (run / runs.METRICS_FILE).read_bytes() == metrics
    assert runs.last_checkpoint(run).read_bytes() == checkpoint
    assert runs.run_info(run).status == "finished"
    # A larger budget trains it further (by steps: a budget this short may end before an epoch does).
    steps_before = load_checkpoint(runs.last_checkpoint(run), kind="pretrain")["global_step"]
    longer = Trainer.resume(run, overrides={"schedule.time_budget_min": 0.02}).run()
    assert longer.status == "finished" and longer.epochs_done >= first.epochs_done
    assert load_checkpoint(runs.last_checkpoint(run), kind="pretrain")["global_step"] > steps_before


def test_a_budget_that_ends_in_an_epoch_counts_only_whole_epochs_and_resumes_in_it(tiny_data, tmp_path):
    from fgdesk.train.compare import read_curves

    run = tmp_path / "run"
    events: list = []

    def slow_second_step(event):  # the budget runs out right after step 2 of the first epoch
        events.append(event)
        if isinstance(event, StepEvent) and event.global_step == 2:
            time.sleep(3.5)

    config = tiny_config(tiny_data, **{"schedule.epochs": 1, "schedule.time_budget_min": 0.05, "data.local_crops": 0})
    first = Trainer(config, run_dir=run, on_event=slow_second_step).run()
    steps_per_epoch = next(e for e in events if isinstance(e, StepEvent)).steps_per_epoch
    assert steps_per_epoch >= 3
    assert first.status == "finished" and first.epochs_done == 0  # a part of an epoch is no epoch
    last = [e for e in events if isinstance(e, EpochEvent)][-1]
    assert last.epoch == 0 and last.fraction == pytest.approx(2 / steps_per_epoch) and last.knn_top1 is not None
    assert runs.run_info(run).epochs_done == 0
    saved = load_checkpoint(runs.last_checkpoint(run), kind="pretrain")
    assert (saved["epoch"], saved["step_in_epoch"]) == (0, 2)
    assert read_curves(run).epochs == [pytest.approx(2 / steps_per_epoch)]

    # A run without the budget goes on in the same epoch, from its third step.
    events.clear()
    more = Trainer.resume(run, overrides={"schedule.time_budget_min": 0.0}, on_event=collect(events)).run()
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert more.status == "finished" and more.epochs_done == 1
    assert steps[0].epoch == 0 and steps[0].step_in_epoch == 3 and len(steps) == steps_per_epoch - 2
    assert read_curves(run).epochs == [1.0]  # the part's record made way for the whole epoch's


def test_a_run_being_trained_by_another_process_is_left_alone(tiny_data, tmp_path):
    import json
    import os
    import socket
    import subprocess
    import sys

    run = tmp_path / "run"
    assert Trainer(tiny_config(tiny_data, **{"schedule.epochs": 1}), run_dir=run).run().status == "finished"
    state, config = (run / runs.STATE_FILE).read_bytes(), (run / runs.CONFIG_FILE).read_bytes()
    # Another process holds the run (the OS lock on RUN/.lock, as a trainer does).
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fgdesk.train import runs; lock = runs.acquire_lock(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        events: list = []
        busy = Trainer.resume(run, on_event=collect(events), overrides={"schedule.epochs": 2}).run()
        assert isinstance(busy, FailedEvent) and f"process {holder.pid} on {socket.gethostname()}" in busy.reason
        # Nothing in the run is touched: not its state, not its settings.
        assert events == [busy]
        assert (run / runs.STATE_FILE).read_bytes() == state and (run / runs.CONFIG_FILE).read_bytes() == config
    finally:
        holder.kill()
        holder.wait()
    # The holder died without a word: the system dropped its lock, so the run resumes.
    assert json.loads((run / runs.LOCK_FILE).read_text())["pid"] == holder.pid
    resumed = Trainer.resume(run, overrides={"schedule.epochs": 2}).run()
    assert resumed.status == "finished" and resumed.epochs_done == 2
    assert json.loads((run / runs.LOCK_FILE).read_text())["pid"] == os.getpid()
    # Two trainers in one process are kept apart as well.
    lock = runs.acquire_lock(run)
    try:
        assert isinstance(Trainer.resume(run, overrides={"schedule.epochs": 3}).run(), FailedEvent)
    finally:
        lock.release()


def test_resuming_drops_the_records_written_after_the_checkpoint(tiny_data, tmp_path):
    from fgdesk.fileio import append_jsonl

    run = tmp_path / "run"
    control = TrainingControl()

    def stop_at_step_three(event):
        if isinstance(event, StepEvent) and event.global_step == 3:
            control.stop()

    Trainer(tiny_config(tiny_data), run_dir=run, on_event=stop_at_step_three, control=control).run()
    # What a kill after logging step 5 but before its checkpoint would have left behind.
    for step in (4, 5):
        append_jsonl(run / runs.METRICS_FILE, {"type": "step", "global_step": step, "epoch": 0, "loss": 9.0})
    Trainer.resume(run).run()
    steps = [r["global_step"] for r in read_jsonl(run / runs.METRICS_FILE) if r["type"] == "step"]
    assert steps == list(range(1, 9))
    assert 9.0 not in [r["loss"] for r in read_jsonl(run / runs.METRICS_FILE) if r["type"] == "step"]


def test_a_damaged_last_checkpoint_resumes_from_best(tiny_data, tmp_path):
    control = TrainingControl()

    def stop_at_step_six(event):
        if isinstance(event, StepEvent) and event.global_step == 6:
            control.stop()

    run = tmp_path / "run"
    Trainer(tiny_config(tiny_data), run_dir=run, on_event=stop_at_step_six, control=control).run()
    best = load_checkpoint(run / runs.CHECKPOINT_DIR / runs.BEST_CHECKPOINT, kind="pretrain")
    assert best["global_step"] == 4  # the end of the first epoch
    last = runs.last_checkpoint(run)
    last.write_bytes(last.read_bytes()[:5000])  # cut short after it was written
    events: list = []
    result = Trainer.resume(run, on_event=collect(events)).run()
    assert result.status == "finished" and result.epochs_done == 2
    assert [e.global_step for e in events if isinstance(e, StepEvent)] == [5, 6, 7, 8]


def test_runs_made_in_a_folder_of_ones_own_are_listed_too(tiny_data, tmp_path):
    import shutil

    elsewhere = tmp_path / "project" / "run-a"
    Trainer(tiny_config(tiny_data, **{"schedule.epochs": 1}), run_dir=elsewhere).run()
    Trainer(tiny_config(tiny_data, **{"schedule.epochs": 1})).run()  # in the runs folder
    Trainer.resume(elsewhere, overrides={"schedule.epochs": 2}).run()  # noted once, not twice
    listed = [info.path.resolve() for info in runs.list_runs()]
    assert len(listed) == 2 and elsewhere.resolve() in listed
    assert runs.remembered_runs() == [elsewhere.resolve()]
    shutil.rmtree(elsewhere)
    assert [info.path.resolve() for info in runs.list_runs()] == [p for p in listed if p != elsewhere.resolve()]


def test_attention_consistency_gets_each_views_crop_through_loader_workers(tiny_data, tmp_path, caplog):
    """The crops travel with the views from a worker process to the loss, whose value is logged."""
    caplog.set_level("INFO", logger="fgdesk")
    config = tiny_config(tiny_data, **{"contrastive.attention_consistency": 1.0, "data.num_workers": 1})
    result = Trainer(config, run_dir=tmp_path / "run").run()
    assert isinstance(result, FinishedEvent) and result.status == "finished"
    logged = [float(m) for m in re.findall(r"attention disagreement between views ([0-9.e+-]+)", caplog.text)]
    assert len(logged) == 2 and all(math.isfinite(v) and v > 0 for v in logged)
