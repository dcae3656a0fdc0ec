"""The pretraining loop: no Qt, driven by the CLI, the app's worker thread and the tests.

It reports through `on_event`, obeys a `TrainingControl` between steps, keeps
everything about the run in its folder, and can continue a run from its last
checkpoint after a stop, a crash or a kill.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import math
import random
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import Sampler

from fgdesk.config import DataConfig, RunConfig
from fgdesk.data.augment import ContrastiveViews
from fgdesk.data.labeling import MovedImages
from fgdesk.data.layouts import DatasetIndex, Sample, detect, relative_key
from fgdesk.data.loading import SampleDataset, make_loader
from fgdesk.evaluate.embeddings import DecodedImages, compute_embeddings, decode_images, embed_decoded
from fgdesk.evaluate.knn import knn_top1
from fgdesk.fileio import append_jsonl, drop_torn_jsonl_line, remove_stale_temp_files
from fgdesk.model.moco import MoCo, cosine_momentum
from fgdesk.train import distributed, runs
from fgdesk.train.checkpoint import CheckpointError, checkpoint_config, load_checkpoint, save_checkpoint
from fgdesk.train.device import autocast, resolve_precision, select_device
from fgdesk.train.events import (
    BadImageEvent,
    CheckpointEvent,
    EpochEvent,
    Event,
    FailedEvent,
    FinishedEvent,
    PausedEvent,
    StepEvent,
    TrainingControl,
    event_record,
)
from fgdesk.train.schedule import scaled_lr, warmup_cosine

log = logging.getLogger(__name__)

LONG_PAUSE_S = 30.0  # paused longer than this: the loader's worker processes are shut down
# On CPU, bf16 convolution backward gives non-finite weight gradients for stage 4's strided
# conv when its input map is 1x1, i.e. views under 32 px (measured: 8 of 20 steps at 16 px).
MIN_CPU_BF16_VIEW = 32
MONITOR_BANK_LIMIT = 4000  # images embedded per kNN monitor pass, to bound its cost
# The monitor's images are decoded once and kept as uint8 when they fit in this much memory
# (4,000 at 224 px take 600 MB; cub50 at 96 px, 40 MB): decoding them again every epoch
# cost 40% of a monitor pass, about 4% of a CPU training budget.
MONITOR_CACHE_BYTES = 768 * 2**20
MAX_BAD_IMAGE_EVENTS = 200
MAX_NONFINITE_STEPS = 5
RESUMABLE_CHANGES = ("schedule.", "device", "precision", "data.num_workers")


def view_size(data: DataConfig, progress: float) -> int:
    """The global view side at this point of the run: the resolution schedule's early size
    before `early_fraction` of the run, the full `image_size` after (and when it is off)."""
    if data.early_size and progress < data.early_fraction:
        return data.early_size
    return data.image_size


def views_at(data: DataConfig, size: int) -> DataConfig:
    """The data settings for global views of `size` px; local crops shrink in proportion."""
    if size == data.image_size:
        return data
    local = max(16, round(data.local_size * size / data.image_size))
    return dataclasses.replace(data, image_size=size, local_size=min(local, size))


class TrainingFailure(RuntimeError):
    """A run cannot go on; the message tells the user why and what to change."""


def checkpoint_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """About what one checkpoint of this run takes: the model's state (query and key
    encoders, the queue) and the optimizer's buffers (SGD's momentum, AdamW's two moments)."""
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if isinstance(optimizer, torch.optim.SGD):
        buffers = 1 if optimizer.defaults.get("momentum", 0) else 0
    else:
        buffers = 2
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return model_bytes + buffers * sum(p.numel() * 4 for p in params)  # buffers are kept in fp32


# What the file system and the run's other files need besides the checkpoints.
DISK_MARGIN_BYTES = 32 * 1024 * 1024


def disk_space_problem(run_dir: Path, per_checkpoint: int, best_to_come: bool) -> str | None:
    """Why the run should not start (its disk cannot hold one checkpoint), or None; warns
    when the disk cannot hold the last and best checkpoints still to be written."""
    try:
        free = shutil.disk_usage(run_dir).free
    except OSError:
        return None  # a file system that cannot tell: a checkpoint's own error still says it
    checkpoints = run_dir / runs.CHECKPOINT_DIR
    coming = int(not (checkpoints / runs.LAST_CHECKPOINT).is_file())
    coming += int(best_to_come and not (checkpoints / runs.BEST_CHECKPOINT).is_file())
    # The files still to come stay; each later write also needs room for a whole new file
    # before it replaces the old one.
    needed = per_checkpoint * (coming + 1)
    if free < per_checkpoint + DISK_MARGIN_BYTES:
        return (
            f"the disk holding {run_dir} has {runs.format_bytes(free)} free, and one checkpoint of this model takes "
            f"about {runs.format_bytes(per_checkpoint)}: the run would fail at its first checkpoint. Free some space "
            "(deleting old runs frees theirs: `fgdesk delete RUN`, or Delete… on the Train page) or choose a run "
            "folder on another disk."
        )
    if free < needed + DISK_MARGIN_BYTES:
        log.warning("the disk holding %s has %s free; this run's checkpoints need about %s (%s each). "
                    "It will stop with its last checkpoint kept if the disk fills.",
                    run_dir, runs.format_bytes(free), runs.format_bytes(needed), runs.format_bytes(per_checkpoint))
    return None


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded across ranks, that can start mid-epoch.

    Starting at `start_batch` skips already-trained batches without decoding them,
    which is what makes a mid-epoch resume cheap and exact in sample order.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return (self.size // self.world_size) // self.batch_size

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        shard = order[self.rank::self.world_size][: self.batches_per_epoch * self.batch_size]
        return iter(shard[self.start_batch * self.batch_size:].tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def stable_order(samples: list[Sample], root: Path | None) -> list[Sample]:
    """Samples sorted by a hash of their path relative to the dataset root.

    Relative, so that the same dataset in another folder or on another machine (a
    server, a colleague's laptop, a moved disk) picks the same images.
    """
    def key(sample: Sample) -> str:
        name = relative_key(root, sample.path) if root is not None else sample.path.as_posix()
        return hashlib.sha1(name.encode("utf-8")).hexdigest()

    return sorted(samples, key=key)


def holdout_split(samples: list[Sample], root: Path | None = None, fraction: float = 0.1) -> tuple[list[Sample], list[Sample]]:
    """Split labelled training samples into (bank, validation) by a stable hash of the path
    relative to `root` (the dataset's root folder).

    The kNN monitor and best-checkpoint choice read only these training images, never
    the test split. Classes with fewer than 5 images stay whole in the bank.
    """
    per_class: dict[int, list[Sample]] = {}
    for sample in samples:
        per_class.setdefault(sample.label, []).append(sample)
    bank, validation = [], []
    for members in per_class.values():
        if len(members) < 5:
            bank.extend(members)
            continue
        ranked = stable_order(members, root)
        count = max(1, round(len(members) * fraction))
        validation.extend(ranked[:count])
        bank.extend(ranked[count:])
    return bank, validation


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        run_dir: Path | None = None,
        on_event: Callable[[Event], None] | None = None,
        control: TrainingControl | None = None,
    ) -> None:
        self.config = config.validate()
        self.on_event = on_event
        self.control = control or TrainingControl()
        self.device = select_device(config.device)
        self.dist = distributed.init_from_env(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if run_dir is None and self.dist.is_main:
            run_dir = runs.new_run_dir(config.name)
        self.run_dir = Path(distributed.broadcast_object(str(run_dir) if run_dir else None, self.dist))
        self._resuming = False
        self._bad_reported = 0
        self._log_handler: logging.Handler | None = None
        self._monitor_images: tuple[DecodedImages, DecodedImages] | None = None
        self._announced_pause = 0  # the control's pause_count last announced with a PausedEvent
        self._lock: runs.RunLock | None = None
        self._save_config = False  # a resume with overrides writes them to config.json

    @classmethod
    def resume(
        cls,
        run_dir: Path,
        on_event: Callable[[Event], None] | None = None,
        control: TrainingControl | None = None,
        overrides: dict | None = None,
    ) -> "Trainer":
        """A trainer that continues the run in `run_dir` from its last complete checkpoint.

        `overrides` may change how the rest of the run goes (epochs, batch size, time
        budget, device, workers), e.g. a smaller batch after running out of memory;
        settings that define the model cannot change.
        """
        run_dir = Path(run_dir)
        config_path = run_dir / runs.CONFIG_FILE
        if not config_path.is_file():
            raise CheckpointError(f"{run_dir} is not an fgdesk run folder (no {runs.CONFIG_FILE})")
        config = RunConfig.load(config_path)
        if overrides:
            fixed = [key for key in overrides if not key.startswith(RESUMABLE_CHANGES)]
            if fixed:
                raise CheckpointError(f"cannot change {', '.join(fixed)} when resuming; start a new run instead")
            config = config.with_overrides(overrides)
        trainer = cls(config, run_dir, on_event, control)
        trainer._resuming = True
        trainer._save_config = bool(overrides)  # once the run is ours (run() takes its lock first)
        return trainer

    # -- public ---------------------------------------------------------------
    def run(self) -> FinishedEvent | FailedEvent:
        """Train until done, stopped or failed; never raises for training problems."""
        busy = self._claim_run_dir()
        if busy is not None:
            # The run belongs to another process: nothing here may touch its files.
            distributed.shutdown(self.dist)
            event = FailedEvent(str(self.run_dir), busy, "", str(self.run_dir / runs.LOG_FILE))
            if self.on_event:
                self.on_event(event)
            return event
        self._attach_log()
        try:
            result: FinishedEvent | FailedEvent = self._train()
        except TrainingFailure as exc:
            result = self._fail(str(exc), traceback.format_exc())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the curves, the state or the log, not a checkpoint
                where = exc.filename or "a file of the run"
                result = self._fail(f"the disk is full: {where} could not be written. The last checkpoint is kept; free "
                                    "some space (deleting old runs frees theirs) and resume the run.", traceback.format_exc())
            else:
                result = self._fail(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        except Exception as exc:  # report, never die silently
            if _is_out_of_memory(exc):
                result = self._fail(self._oom_message(), traceback.format_exc())
            else:
                result = self._fail(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        finally:
            self._detach_log()
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            distributed.shutdown(self.dist)
        return result

    def _claim_run_dir(self) -> str | None:
        """Lock the run folder for this run (the main process holds it for all); the reason when busy."""
        busy = None
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            try:
                self._lock = runs.acquire_lock(self.run_dir)
            except runs.RunBusy as exc:
                busy = str(exc)
        busy = distributed.broadcast_object(busy, self.dist)
        if busy is not None:
            log.error("%s", busy)
        return busy

    # -- set-up ---------------------------------------------------------------
    def _attach_log(self) -> None:
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(self.run_dir / runs.LOG_FILE, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logging.getLogger("fgdesk").addHandler(handler)
            logging.getLogger("fgdesk").setLevel(min(logging.getLogger("fgdesk").getEffectiveLevel(), logging.INFO))
            self._log_handler = handler

    def _detach_log(self) -> None:
        if self._log_handler:
            logging.getLogger("fgdesk").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def _emit(self, event: Event, record: bool = True) -> None:
        if not self.dist.is_main:
            return
        if record:
            try:
                append_jsonl(self.run_dir / runs.METRICS_FILE, {"time": time.time(), **event_record(event)})
            except OSError as exc:
                if not isinstance(event, FailedEvent):
                    raise
                # The failure itself must still reach the listener (a full disk is often why it failed).
                log.warning("could not log the failure in %s: %s", runs.METRICS_FILE, exc)
        if self.on_event:
            try:
                self.on_event(event)
            except Exception:  # a broken listener must not end the run
                log.exception("event listener failed on %s", type(event).__name__)

    def _fail(self, reason: str, trace: str) -> FailedEvent:
        log.error("run failed: %s", reason)
        if self.dist.is_main and self.run_dir.is_dir():
            try:
                runs.write_state(self.run_dir, status="failed", reason=reason)
            except OSError as exc:  # a full disk: the run then lists as interrupted, still resumable
                log.warning("could not record the failure in %s: %s", runs.STATE_FILE, exc)
        event = FailedEvent(str(self.run_dir), reason, trace, str(self.run_dir / runs.LOG_FILE))
        self._emit(event)
        return event

    def _load_dataset(self) -> DatasetIndex:
        cfg = self.config.data
        if not cfg.path:
            raise TrainingFailure("no dataset given: set data.path (fgdesk train --data FOLDER)")
        try:
            index = detect(cfg.path, layout=cfg.layout, level=cfg.level, check_images=True)
        except Exception as exc:  # DatasetError carries the path and the fix
            raise TrainingFailure(str(exc)) from exc
        for problem in index.problems:
            self._report_bad(str(problem.path), problem.reason)
        return index

    def _report_bad(self, path: str, reason: str) -> None:
        self._bad_reported += 1
        log.warning("skipping %s: %s", path, reason)
        if self._bad_reported <= MAX_BAD_IMAGE_EVENTS:
            self._emit(BadImageEvent(path, reason))

    # -- the loop -------------------------------------------------------------
    def _train(self) -> FinishedEvent:
        cfg = self.config
        index = self._load_dataset()
        samples = index.train_samples()
        if len(samples) < 2:
            raise TrainingFailure(f"{cfg.data.path} has {len(samples)} usable training image(s); pretraining needs at least 2")
        batch_size = min(cfg.schedule.batch_size, len(samples) // self.dist.world_size)
        if batch_size < cfg.schedule.batch_size:
            log.warning("batch size lowered from %d to %d to fit %d images", cfg.schedule.batch_size, batch_size, len(samples))
        if batch_size < 2:
            raise TrainingFailure(f"too few images ({len(samples)}) for {self.dist.world_size} processes")

        torch.manual_seed(cfg.seed + self.dist.rank)
        random.seed(cfg.seed + self.dist.rank)
        dtype = resolve_precision(cfg.precision, self.device)
        smallest_view = min(cfg.data.image_size, cfg.data.local_size) if cfg.data.local_crops else cfg.data.image_size
        if cfg.data.early_size:
            smallest_view = min(smallest_view, cfg.data.early_size)
        if dtype == torch.bfloat16 and self.device.type == "cpu" and smallest_view < MIN_CPU_BF16_VIEW:
            log.warning("training in fp32: bf16 on the CPU is unstable for views under %d px (smallest here: %d px)",
                        MIN_CPU_BF16_VIEW, smallest_view)
            dtype = None
        channels_last = cfg.channels_last and self.device.type in ("cpu", "cuda")
        queue_size = min(cfg.contrastive.queue_size, max(batch_size, len(samples)))
        model = MoCo(cfg, queue_size=queue_size).to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        trainable = [p for p in model.query.parameters() if p.requires_grad]
        base_lr = scaled_lr(cfg.optim.lr, batch_size, self.dist.world_size)
        if cfg.optim.name == "sgd":
            optimizer = torch.optim.SGD(trainable, lr=base_lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
        else:
            optimizer = torch.optim.AdamW(trainable, lr=base_lr, weight_decay=cfg.optim.weight_decay)
        query_for_step = model
        if self.dist.enabled:
            query_for_step = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None, broadcast_buffers=False
            )

        sampler = EpochSampler(len(samples), batch_size, cfg.seed, self.dist.rank, self.dist.world_size)
        steps_per_epoch = sampler.batches_per_epoch
        total_steps = steps_per_epoch * cfg.schedule.epochs
        warmup_fraction = min(0.5, cfg.optim.warmup_epochs / cfg.schedule.epochs)
        budget_s = cfg.schedule.time_budget_min * 60.0

        labelled = index.labelled()
        # The monitor's kNN needs labels: unlabeled images train the encoder but stay out of it.
        bank, validation = holdout_split([s for s in samples if s.label >= 0], index.root) if labelled else (samples, [])
        state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "elapsed_s": 0.0, "best_knn_top1": None}
        global_batch = batch_size * self.dist.world_size
        if self._save_config and self.dist.is_main:
            cfg.save(self.run_dir / runs.CONFIG_FILE)
        logged_step, step_scale = 0, 1.0  # where metrics.jsonl's records end, and their steps in this run's units
        if self._resuming and runs.last_checkpoint(self.run_dir).is_file():
            state, logged_step, step_scale = self._restore(model, optimizer, state, global_batch, steps_per_epoch, len(samples))
            budget_spent = budget_s > 0 and state["elapsed_s"] >= budget_s
            if state["epoch"] >= cfg.schedule.epochs or budget_spent:
                return self._already_finished(state, budget_spent)
        elif self._resuming:
            log.warning("%s has no complete checkpoint yet; starting it from the beginning", self.run_dir)
        elif self.dist.is_main:
            cfg.save(self.run_dir / runs.CONFIG_FILE)
            runs.remember_run(self.run_dir)
        space_problem = None
        if self.dist.is_main:
            remove_stale_temp_files(self.run_dir / runs.CHECKPOINT_DIR)
            monitored = bool(validation) and cfg.schedule.eval_every > 0
            space_problem = disk_space_problem(self.run_dir, checkpoint_bytes(model, optimizer), monitored)
        # Every process stops, or the others would wait in the first step's collectives.
        space_problem = distributed.broadcast_object(space_problem, self.dist)
        if space_problem:
            raise TrainingFailure(space_problem)
        if self.dist.is_main:
            drop_torn_jsonl_line(self.run_dir / runs.METRICS_FILE)
            if self._resuming:  # from the checkpoint, or from the start when there is none yet
                dropped = runs.truncate_metrics(self.run_dir, logged_step, state["epoch"], step_scale)
                if dropped:
                    log.info("dropped %d metric record(s) written after the checkpoint resumed from", dropped)
            runs.mark_running(
                self.run_dir, epochs=cfg.schedule.epochs, epochs_done=state["epoch"], dataset=str(cfg.data.path),
                best_knn_top1=state["best_knn_top1"], num_images=len(samples), layout=index.layout,
            )
        log.info(
            "training on %d images (%s layout, %d classes), device %s, precision %s, batch %d x %d process(es), %d steps/epoch",
            len(samples), index.layout, len(index.classes), self.device, dtype or "fp32", batch_size, self.dist.world_size, steps_per_epoch,
        )

        # Labels given while the run trains move images; the loader follows them (see MovedImages).
        moved = MovedImages(index.root)
        views_size = 0  # the global view side the dataset below makes; set per epoch
        dataset: SampleDataset | None = None
        num_global = 2
        loop_started = time.monotonic()
        elapsed_at_start = state["elapsed_s"]
        paused_s = 0.0

        def elapsed() -> float:
            return elapsed_at_start + time.monotonic() - loop_started - paused_s

        # Under torchrun, decisions that end or change the run (the time budget, the
        # learning rate, the resolution switch, a stop signal) come from values averaged
        # over the processes at each step: a process that stopped a step before the
        # others would leave them waiting in a collective forever.
        shared = {"elapsed_s": elapsed_at_start, "stop": 0.0}

        def clock() -> float:
            return shared["elapsed_s"] if self.dist.enabled else elapsed()

        def stop_requested() -> bool:
            return shared["stop"] > 0 if self.dist.enabled else self.control.stopped

        def progress(step: int) -> float:
            by_steps = step / max(1, total_steps)
            return max(by_steps, clock() / budget_s) if budget_s > 0 else by_steps

        def save(kind: str = "last") -> None:
            if not self.dist.is_main:
                return
            payload = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": state["epoch"],
                "step_in_epoch": state["step_in_epoch"],
                "global_step": state["global_step"],
                "elapsed_s": elapsed(),
                "best_knn_top1": state["best_knn_top1"],
                "torch_rng": torch.get_rng_state(),
                "python_rng": list(random.getstate()[1]),
                "num_images": len(samples),
                "global_batch": global_batch,  # the unit of step_in_epoch and global_step
                "class_names": list(index.classes),
            }
            target = runs.last_checkpoint(self.run_dir) if kind == "last" else self.run_dir / runs.CHECKPOINT_DIR / runs.BEST_CHECKPOINT
            try:
                save_checkpoint(target, payload, cfg)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise TrainingFailure(
                        f"the disk is full: the checkpoint {target.name} could not be written in {target.parent}. "
                        "The previous checkpoint is kept; free some space and resume the run."
                    ) from exc
                raise
            self._emit(CheckpointEvent(str(target), state["global_step"]))

        out_of_budget = False
        stopped = False
        epoch_losses: list[float] = []
        epoch_disagreement: list[float] = []  # the attention-consistency term, when it is on
        bad_steps = 0
        while state["epoch"] < cfg.schedule.epochs and not out_of_budget:
            epoch = state["epoch"]
            # A run that reached full size stays there until this process ends.
            size = views_size if views_size == cfg.data.image_size else view_size(cfg.data, progress(state["global_step"]))
            if dataset is None or size != views_size:
                if views_size:
                    log.info("step %d: global views of %d px from here on (were %d px)", state["global_step"], size, views_size)
                views_size = size
                views = ContrastiveViews(views_at(cfg.data, size))
                dataset = SampleDataset(samples, views, index.crop_bottom, min_short_side=views.min_short_side, moved=moved)
            sampler.set_position(epoch, state["step_in_epoch"])
            loader = make_loader(
                dataset, batch_size=batch_size, shuffle=False, num_workers=cfg.data.num_workers,
                drop_last=True, seed=cfg.seed * 7919 + epoch * 101 + state["step_in_epoch"] + self.dist.rank, sampler=sampler,
                pin_memory=self.device.type == "cuda",  # so the non_blocking copies below overlap the step
            )
            window_start, window_images = time.monotonic(), 0
            interrupted_for_pause = False
            for batch in loader:
                for bad_index, reason in zip(batch.bad, batch.bad_reasons):
                    self._report_bad(str(samples[bad_index].path), reason)
                # A batch that lost nearly all its images to unreadable files is skipped, by
                # every process together.
                if distributed.all_reduce_min(len(batch.indices), self.dist, self.device) < 2:
                    state["step_in_epoch"] += 1
                    continue
                views = [v.to(self.device, non_blocking=True) for v in batch.views]
                if channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                ids = batch.indices.to(self.device)
                step_progress = progress(state["global_step"])
                lr = warmup_cosine(base_lr, step_progress, warmup_fraction)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with autocast(self.device, dtype):
                    crops = batch.crops.to(self.device) if batch.crops is not None else None
                    output = query_for_step(views[:num_global], views[num_global:], ids, crops)
                loss = output.loss
                # NaN on any process makes the mean NaN, so every process skips together.
                loss_value, shared["elapsed_s"], shared["stop"] = distributed.all_reduce_mean(
                    [loss.item(), elapsed(), float(self.control.stopped)], self.dist, self.device)
                optimizer.zero_grad(set_to_none=True)
                healthy = math.isfinite(loss_value)
                if healthy:
                    loss.backward()
                    healthy = math.isfinite(float(torch.nn.utils.clip_grad_norm_(trainable, float("inf"))))
                if healthy:
                    optimizer.step()
                    bad_steps = 0
                else:
                    # A rare non-finite step (bf16 rounding, a degenerate crop) is skipped, as
                    # AMP's gradient scaler does; only a run of them means the run has diverged.
                    optimizer.zero_grad(set_to_none=True)
                    bad_steps += 1
                    log.warning("skipped step %d: non-finite loss or gradient (%d in a row)", state["global_step"], bad_steps)
                    if bad_steps >= MAX_NONFINITE_STEPS:
                        raise TrainingFailure(
                            f"the loss or its gradient was not finite for {bad_steps} steps in a row, up to step "
                            f"{state['global_step']} (lr {lr:.4g}). Lower optim.lr, or set precision to fp32, "
                            "then start a new run or resume from the last checkpoint."
                        )
                model.momentum_update(cosine_momentum(cfg.contrastive.momentum, step_progress))
                keys, key_ids = distributed.all_gather_rows(output.keys.detach(), output.ids, batch_size, self.dist)
                model.enqueue(keys, key_ids)

                state["step_in_epoch"] += 1
                state["global_step"] += 1
                if healthy:
                    epoch_losses.append(loss_value)
                    if output.attention_consistency is not None:
                        epoch_disagreement.append(float(output.attention_consistency.detach()))
                window_images += len(batch.indices) * self.dist.world_size
                now = time.monotonic()
                speed = window_images / max(1e-9, now - window_start)
                if state["global_step"] % cfg.schedule.log_every_steps == 0 or state["step_in_epoch"] == steps_per_epoch:
                    done = progress(state["global_step"])
                    eta = elapsed() * (1.0 - done) / max(done, 1e-9)
                    self._emit(StepEvent(
                        epoch, cfg.schedule.epochs, state["step_in_epoch"], steps_per_epoch, state["global_step"],
                        total_steps, loss_value, lr, speed, eta,
                    ))
                if state["global_step"] % cfg.schedule.checkpoint_every_steps == 0:
                    save()
                if budget_s > 0 and clock() >= budget_s:
                    out_of_budget = True
                    break
                if stop_requested():
                    stopped = True
                    break
                if self.control.paused:
                    paused_for = self._wait_while_paused(LONG_PAUSE_S, epoch, state["global_step"])
                    paused_s += paused_for
                    if self.control.stopped:
                        stopped = True
                        break
                    if self.control.paused:
                        interrupted_for_pause = True  # leaving the loop shuts the workers down
                        break
                    window_start, window_images = time.monotonic(), 0
                if views_size != cfg.data.image_size and view_size(cfg.data, progress(state["global_step"])) != views_size:
                    break  # the resolution schedule switches here; the loader restarts at this step
            del loader
            if stopped:
                break
            if interrupted_for_pause:
                self._monitor_images = None  # like the loader's workers, freed during a long pause
                paused_s += self._wait_while_paused(None, epoch, state["global_step"])
                if self.control.stopped:
                    stopped = True
                    break
                continue
            if state["step_in_epoch"] < steps_per_epoch and not out_of_budget:
                continue
            # The epoch is complete, or the time budget ended it part-way. A part counts as
            # no epoch: the run keeps its place in it, so a larger budget resumes it there.
            fraction = min(1.0, state["step_in_epoch"] / steps_per_epoch)
            if fraction >= 1.0:
                state["epoch"] += 1
                state["step_in_epoch"] = 0
            knn = self._monitor(model, index, bank, validation, dtype) if self._should_monitor(state["epoch"], out_of_budget) else None
            improved = knn is not None and (state["best_knn_top1"] is None or knn > state["best_knn_top1"])
            if improved:
                state["best_knn_top1"] = knn
            mean_loss = sum(epoch_losses) / len(epoch_losses) if epoch_losses else math.nan  # no step ran here
            epoch_losses = []
            if epoch_disagreement:
                log.info("epoch %d: attention disagreement between views %.3g (mean of %d steps)",
                         epoch + 1, sum(epoch_disagreement) / len(epoch_disagreement), len(epoch_disagreement))
                epoch_disagreement = []
            self._emit(EpochEvent(epoch, cfg.schedule.epochs, mean_loss, knn, elapsed(), fraction))
            save()
            if improved:
                save("best")
            if self.dist.is_main:
                runs.write_state(self.run_dir, epochs_done=state["epoch"], best_knn_top1=state["best_knn_top1"], elapsed_s=elapsed())

        if stopped:
            save()
        status = "stopped" if stopped else "finished"
        if self.dist.is_main:
            runs.write_state(self.run_dir, status=status, epochs_done=state["epoch"], best_knn_top1=state["best_knn_top1"], elapsed_s=elapsed())
        part = f" and {100 * state['step_in_epoch'] / steps_per_epoch:.0f}% of the next" if state["step_in_epoch"] else ""
        log.info("run %s after %d epoch(s)%s, %.0f s", status, state["epoch"], part, elapsed())
        result = FinishedEvent(str(self.run_dir), status, state["epoch"], state["best_knn_top1"])
        self._emit(result)
        return result

    def _wait_while_paused(self, limit_s: float | None, epoch: int, global_step: int) -> float:
        """Wait while paused, saying so once per pause request (a Resume then Pause that
        lands while this waits is a new request, announced again)."""
        started = time.monotonic()
        while self.control.paused and not self.control.stopped:
            if self.control.pause_count != self._announced_pause:
                self._announced_pause = self.control.pause_count
                self._emit(PausedEvent(epoch, global_step), record=False)
            if limit_s is not None and time.monotonic() - started >= limit_s:
                break
            self.control.wait_while_paused(0.2)
        return time.monotonic() - started

    def _should_monitor(self, epochs_done: int, last: bool) -> bool:
        every = self.config.schedule.eval_every
        return every > 0 and (epochs_done % every == 0 or epochs_done == self.config.schedule.epochs or last)

    def _monitor(self, model: MoCo, index: DatasetIndex, bank: list[Sample], validation: list[Sample], dtype) -> float | None:
        """kNN top-1 of held-out training images against the rest (never the test split)."""
        if not validation or not self.dist.is_main:
            distributed.barrier(self.dist)
            return None
        if len(bank) > MONITOR_BANK_LIMIT:
            bank = stable_order(bank, index.root)[:MONITOR_BANK_LIMIT]
        size = self.config.data.eval_size
        moved = MovedImages(index.root)  # an undo can move a labelled image back to unlabeled/
        if self._monitor_images is None and DecodedImages.size_in_bytes(len(bank) + len(validation), size) <= MONITOR_CACHE_BYTES:
            self._monitor_images = (decode_images(bank, size, index.crop_bottom, moved=moved),
                                    decode_images(validation, size, index.crop_bottom, moved=moved))
            unreadable = sum(len(images.bad) for images in self._monitor_images)
            if unreadable:
                log.warning("the kNN monitor leaves out %d unreadable image(s) for this session of the run", unreadable)
        if self._monitor_images is not None:
            bank_embeddings, val_embeddings = (embed_decoded(model.net, images, self.device, dtype) for images in self._monitor_images)
        else:
            common = dict(image_size=size, crop_bottom=index.crop_bottom, device=self.device, dtype=dtype, num_workers=0,
                          moved=moved)
            bank_embeddings = compute_embeddings(model.net, bank, **common)
            val_embeddings = compute_embeddings(model.net, validation, **common)
        distributed.barrier(self.dist)
        if len(bank_embeddings.labels) == 0 or len(val_embeddings.labels) == 0:
            return None
        return knn_top1(bank_embeddings.vectors, bank_embeddings.labels, val_embeddings.vectors, val_embeddings.labels, len(index.classes))

    def _already_finished(self, state: dict, budget_spent: bool) -> FinishedEvent:
        """Resuming a run that has nothing left to do changes nothing in it."""
        cfg = self.config.schedule
        if budget_spent:
            log.info("the run has used its %.4g-minute budget; give a larger time budget to train it further",
                     cfg.time_budget_min)
        else:
            log.info("the run has done its %d epoch(s); give more epochs to train it further", cfg.epochs)
        if self.dist.is_main and runs.read_state(self.run_dir).get("status") != "finished":
            runs.write_state(self.run_dir, status="finished", epochs_done=state["epoch"],
                             best_knn_top1=state["best_knn_top1"], elapsed_s=state["elapsed_s"])
        result = FinishedEvent(str(self.run_dir), "finished", state["epoch"], state["best_knn_top1"])
        self._emit(result, record=False)
        return result

    def _restore(self, model: MoCo, optimizer: torch.optim.Optimizer, state: dict,
                 global_batch: int, steps_per_epoch: int, num_images: int) -> tuple[dict, int, float]:
        """The training state of the checkpoint resumed from, in this run's step units; the
        checkpoint's own global step; and the factor from its step units to this run's."""
        path = runs.last_checkpoint(self.run_dir)
        try:
            document = load_checkpoint(path, kind="pretrain", map_location=self.device)
        except CheckpointError as exc:
            # fgdesk writes checkpoints whole, so this one was damaged afterwards (a copy cut
            # short, a failing disk). best.pt holds the same state from an earlier epoch.
            best = self.run_dir / runs.CHECKPOINT_DIR / runs.BEST_CHECKPOINT
            if not best.is_file():
                raise TrainingFailure(f"{exc}; the run has no best.pt to go back to, so start a new run") from exc
            document = load_checkpoint(best, kind="pretrain", map_location=self.device)
            log.warning("%s; resuming from best.pt instead (epoch %s, step %s)", exc, document.get("epoch"), document.get("global_step"))
            path = best
        saved = checkpoint_config(document)
        if saved.model.backbone != self.config.model.backbone:
            raise TrainingFailure(f"{path} was made for backbone {saved.model.backbone}, not {self.config.model.backbone}")
        try:
            model.load_state_dict(document["model"])
        except RuntimeError as exc:
            raise TrainingFailure(f"{path} does not fit this run's model: {exc}") from exc
        optimizer.load_state_dict(document["optimizer"])
        torch.set_rng_state(document["torch_rng"].cpu())
        rng_words = tuple(int(x) for x in document["python_rng"])
        random.setstate((3, rng_words, None))
        restored = {key: document[key] for key in state}
        saved_step = int(restored["global_step"])
        saved_images = int(document.get("num_images", num_images))
        if saved_images != num_images:
            log.warning("the dataset has %d training images now, %d when this checkpoint was written", num_images, saved_images)
        if "global_batch" in document:
            saved_batch = int(document["global_batch"])
        else:  # written before checkpoints recorded it: assume the same processes as now
            world = self.dist.world_size
            saved_batch = min(saved.schedule.batch_size, saved_images // world) * world
        if saved_batch != global_batch or saved_images != num_images:
            # Steps count batches: carry the position over in images, so the learning-rate and
            # momentum schedules go on from where they were and no epoch is cut short or run twice.
            offset = restored["step_in_epoch"] * saved_batch
            restored["step_in_epoch"] = min(offset // global_batch, steps_per_epoch)
            restored["global_step"] = restored["epoch"] * steps_per_epoch + restored["step_in_epoch"]
            log.info("batch of %d images now, %d before: the run goes on from step %d of epoch %d",
                     global_batch, saved_batch, restored["step_in_epoch"], restored["epoch"])
        log.info("resumed %s at epoch %d, step %d of the epoch", self.run_dir, restored["epoch"], restored["step_in_epoch"])
        return restored, saved_step, saved_batch / global_batch

    def _oom_message(self) -> str:
        batch = self.config.schedule.batch_size
        smaller = max(2, 2 ** int(math.log2(max(2, batch // 2))))
        where = "GPU" if self.device.type == "cuda" else "memory"
        return (
            f"out of {where} at batch size {batch}. Resume with a smaller batch, e.g. --batch-size {smaller}, "
            "or a smaller --image-size."
        )


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError) or isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
