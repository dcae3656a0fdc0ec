"""Messy inputs and long pauses: files are skipped and reported, resources are released."""
from __future__ import annotations

import multiprocessing
import random
import threading
import time

import pytest

from fgdesk.config import RunConfig
from fgdesk.data.synthetic import make_demo_dataset
from fgdesk.train import engine as engine_module
from fgdesk.train.engine import Trainer
from fgdesk.train.events import BadImageEvent, EpochEvent, FinishedEvent, StepEvent, TrainingControl


def corrupt_corpus(folder, count: int = 12, seed: int = 0) -> list:
    """Random bytes and mangled PNGs under image names, like a messy shared drive."""
    rng = random.Random(seed)
    good = sorted(folder.parent.rglob("*.png"))[0].read_bytes()
    paths = []
    for index in range(count):
        kind = index % 4
        if kind == 0:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        elif kind == 1:
            data = good[: rng.randint(8, len(good) - 1)]  # truncated
        elif kind == 2:
            data = bytearray(good)
            for _ in range(6):
                data[rng.randrange(8, 64)] = rng.getrandbits(8)  # corrupt header fields
            data = bytes(data)
        else:
            data = b"not an image at all\n" * rng.randint(1, 5)
        path = folder / f"broken {index} ünïcode.{['png', 'jpg', 'jpeg', 'webp'][index % 4]}"
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.fixture()
def messy_data(tmp_path):
    root = make_demo_dataset(tmp_path / "messy data", num_classes=3, per_class=8, size=48, seed=3)
    corrupt_corpus(root / "train" / "class_0_circle")
    return root


def small_config(data, **changes) -> RunConfig:
    config = RunConfig()
    config.data.path = str(data)
    config.data.image_size = 32
    config.data.eval_size = 32
    config.data.local_crops = 0
    config.data.num_workers = 0
    config.model.stages = [4]
    config.model.proj_hidden = 32
    config.model.proj_dim = 16
    config.contrastive.queue_size = 16
    config.schedule.batch_size = 6
    config.schedule.epochs = 1
    config.precision = "fp32"
    return config.with_overrides(changes) if changes else config


def test_training_skips_and_reports_corrupt_files(messy_data, tmp_path):
    events: list = []
    result = Trainer(small_config(messy_data), run_dir=tmp_path / "run", on_event=events.append).run()
    assert isinstance(result, FinishedEvent)
    reported = {e.path for e in events if isinstance(e, BadImageEvent)}
    broken = {str(p) for p in (messy_data / "train" / "class_0_circle").glob("broken*")}
    assert broken <= reported


def test_a_run_follows_images_labelled_while_it_trains(tmp_path, monkeypatch):
    """Labels given (files moved) while a run trains on the same folder: the run's loader
    workers find each moved image at its new place, instead of skipping it as missing."""
    from fgdesk.data import loading
    from fgdesk.data.labeling import DatasetLabeler

    data = make_demo_dataset(tmp_path / "data", num_classes=2, per_class=4, size=48, unlabeled=6)
    loaded_list = tmp_path / "loaded.txt"
    real_load = loading.load_rgb

    def recording_load(path, **kwargs):  # appends from the worker processes too (they fork)
        with open(loaded_list, "a", encoding="utf-8") as handle:
            handle.write(f"{path}\n")
        return real_load(path, **kwargs)

    monkeypatch.setattr(loading, "load_rgb", recording_load)
    events: list = []
    moves: list = []

    def label_on_first_step(event):
        events.append(event)
        if isinstance(event, StepEvent) and not moves:
            labeler = DatasetLabeler(data)
            moves.extend(labeler.assign(image, "class_0_circle") for image in sorted((data / "unlabeled").iterdir())[:3])

    config = small_config(data, **{"schedule.epochs": 2, "data.num_workers": 1})
    result = Trainer(config, run_dir=tmp_path / "run", on_event=label_on_first_step).run()
    assert isinstance(result, FinishedEvent) and result.status == "finished"
    assert len(moves) == 3
    assert not [e for e in events if isinstance(e, BadImageEvent)]
    loaded = set(loaded_list.read_text(encoding="utf-8").split())
    assert {str(move.target) for move in moves} <= loaded  # read from where the label put them


def test_predictor_reports_each_bad_file_and_classifies_the_rest(messy_data, tmp_path):
    from fgdesk.infer.predictor import Predictor

    Trainer(small_config(messy_data), run_dir=tmp_path / "run").run()
    predictor = Predictor.load(tmp_path / "run", device="cpu")
    broken = sorted((messy_data / "train" / "class_0_circle").glob("broken*"))
    good = sorted((messy_data / "test").rglob("*.png"))[:2]
    predictions = predictor.predict([*broken, *good, tmp_path / "missing.png"])
    assert all(p.error for p in predictions[: len(broken)])
    assert all(p.error is None and p.topk for p in predictions[len(broken): -1])
    assert predictions[-1].error


def test_long_pause_shuts_down_loader_workers_and_resume_restarts_them(messy_data, tmp_path, monkeypatch):
    """A long pause lets go of the loader's worker processes and of the kNN monitor's decoded images."""
    monkeypatch.setattr(engine_module, "LONG_PAUSE_S", 0.3)
    control = TrainingControl()
    seen: dict[str, object] = {}
    config = small_config(messy_data, **{"data.num_workers": 1, "schedule.epochs": 2})
    trainer = Trainer(config, run_dir=tmp_path / "run", control=control)

    def pause_once(event):
        if isinstance(event, EpochEvent):
            seen.setdefault("monitored", event.knn_top1 is not None)
        if isinstance(event, StepEvent) and "monitored" in seen and "workers_running" not in seen:
            seen["workers_running"] = len(multiprocessing.active_children())
            seen["images_kept"] = trainer._monitor_images is not None
            control.pause()

            def check_and_resume():
                time.sleep(0.5)  # past the long-pause limit
                # The loop lets its workers go, then drops the images: wait for that, not a fixed time.
                deadline = time.monotonic() + 60
                while trainer._monitor_images is not None and time.monotonic() < deadline:
                    time.sleep(0.05)
                seen["workers_paused"] = len(multiprocessing.active_children())
                seen["images_kept_paused"] = trainer._monitor_images is not None
                control.resume()

            threading.Thread(target=check_and_resume, daemon=True).start()

    trainer.on_event = pause_once
    result = trainer.run()
    assert result.status == "finished"
    assert seen["monitored"] and seen["images_kept"]
    assert seen["workers_running"] >= 1
    assert seen["workers_paused"] == 0
    assert seen["images_kept_paused"] is False


def test_stopping_releases_loader_workers(messy_data, tmp_path):
    control = TrainingControl()

    def stop_at_first_step(event):
        if isinstance(event, StepEvent):
            control.stop()

    config = small_config(messy_data, **{"data.num_workers": 1})
    result = Trainer(config, run_dir=tmp_path / "run", on_event=stop_at_first_step, control=control).run()
    assert result.status == "stopped"
    deadline = time.monotonic() + 5
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()


def test_empty_dataset_and_single_image_class(tmp_path):
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    result = Trainer(small_config(empty), run_dir=tmp_path / "r1").run()
    assert result.__class__.__name__ == "FailedEvent" and str(empty) in result.reason

    root = make_demo_dataset(tmp_path / "tiny", num_classes=2, per_class=6, size=48, seed=4)
    lonely = root / "train" / "lonely class"
    lonely.mkdir()
    next((root / "train" / "class_0_circle").glob("*.png")).rename(lonely / "only.png")
    result = Trainer(small_config(root, **{"schedule.batch_size": 4}), run_dir=tmp_path / "r2").run()
    assert result.status == "finished"
