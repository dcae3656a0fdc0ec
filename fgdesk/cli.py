"""The `fgdesk` command: no arguments opens the app; subcommands run the same core headless."""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from fgdesk import __version__
from fgdesk.evaluate import DEFAULT_LABELS_PER_CLASS

log = logging.getLogger("fgdesk.cli")

# Command-line flags that map straight onto config fields.
TRAIN_OPTIONS: list[tuple[str, str, type, str]] = [
    ("--epochs", "schedule.epochs", int, "number of passes over the training images"),
    ("--batch-size", "schedule.batch_size", int, "images per step (per process under torchrun)"),
    ("--time-budget", "schedule.time_budget_min", float, "stop after this many minutes; the schedules span the budget (0: none)"),
    ("--eval-every", "schedule.eval_every", int, "epochs between kNN monitor passes (0: never)"),
    ("--checkpoint-every", "schedule.checkpoint_every_steps", int, "steps between checkpoints (also at every epoch end)"),
    ("--image-size", "data.image_size", int, "side of the global crops in pixels"),
    ("--eval-size", "data.eval_size", int, "side of the centre crop used for embeddings"),
    ("--early-size", "data.early_size", int, "resolution schedule: global crops of this side first (0: off)"),
    ("--early-fraction", "data.early_fraction", float, "share of the run (budget or steps) spent at --early-size"),
    ("--local-crops", "data.local_crops", int, "number of small local crops per image (0: off)"),
    ("--local-size", "data.local_size", int, "side of the local crops in pixels"),
    ("--workers", "data.num_workers", int, "data loader worker processes (-1: automatic)"),
    ("--layout", "data.layout", str, "dataset layout: auto, cub, aircraft, folders, unlabeled"),
    ("--level", "data.level", str, "FGVC-Aircraft label level: variant, family, manufacturer"),
    ("--backbone", "model.backbone", str, "resnet18, resnet34 or resnet50"),
    ("--weights", "model.weights", str, "random, imagenet (needs internet once) or a state-dict file"),
    ("--attention", "model.attention", str, "multiscale, or none for plain global pooling"),
    ("--lr", "optim.lr", float, "learning rate for a batch of 256 (scaled linearly)"),
    ("--optimizer", "optim.name", str, "sgd or adamw"),
    ("--weight-decay", "optim.weight_decay", float, "weight decay"),
    ("--temperature", "contrastive.temperature", float, "InfoNCE temperature"),
    ("--queue-size", "contrastive.queue_size", int, "negatives kept in the queue"),
    ("--momentum", "contrastive.momentum", float, "starting EMA momentum of the key encoder"),
    ("--loss", "contrastive.loss", str, "infonce, or dcl (decoupled contrastive loss)"),
    ("--device", "device", str, "auto, cpu, cuda or mps"),
    ("--precision", "precision", str, "auto, fp32, bf16 or fp16"),
    ("--seed", "seed", int, "random seed"),
    ("--name", "name", str, "a name for the run folder"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fgdesk",
        description="Self-supervised fine-grained image recognition. Without a command, opens the desktop app.",
    )
    parser.add_argument("--version", action="version", version=f"fgdesk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="pretrain an encoder without labels (resumable)",
                                description="Contrastive pretraining with multi-scale attention. "
                                "Under torchrun --nproc_per_node=N it trains with DistributedDataParallel.")
    train.add_argument("--data", help="dataset folder (CUB-200-2011, FGVC-Aircraft, class folders or plain images)")
    train.add_argument("--config", type=Path, help="a TOML or JSON config file; flags given here override it")
    train.add_argument("--resume", type=Path, metavar="RUN", help="continue the run in this folder from its last checkpoint")
    train.add_argument("--out", type=Path, metavar="RUN", help="folder for the new run (default: the user's runs folder)")
    train.add_argument("--stages", help="ResNet stages for attention, e.g. 2,3,4")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any config field, e.g. --set contrastive.symmetric=false (repeatable)")
    train.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    for flag, _, kind, text in TRAIN_OPTIONS:
        train.add_argument(flag, type=kind, help=text)

    evaluate = commands.add_parser("eval", help="kNN, linear probe and heatmap scores of a run on the test split")
    evaluate.add_argument("run", type=Path, help="run folder")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate.add_argument("--labels-per-class", default=",".join(map(str, DEFAULT_LABELS_PER_CLASS)),
                          metavar="N[,N...]",
                          help="also score with only N labelled training images per class, e.g. 1,5,10 "
                               "(default), or none")
    evaluate.add_argument("--draws", type=int, default=5, help="random draws of the labelled images per N (default 5)")
    evaluate.add_argument("--faithfulness", type=int, default=50, metavar="N",
                          help="check on N test images whether the heatmaps follow the classifier: deleting pixels "
                               "in each map's order, how fast the predicted class fades (default 50; 0 skips it). "
                               "Needs no boxes")

    predict = commands.add_parser("predict", help="classify images with a run and save heatmaps")
    predict.add_argument("run", type=Path, help="run folder")
    predict.add_argument("images", nargs="+", type=Path, help="image files or folders")
    predict.add_argument("--csv", type=Path, help="write one row per image to this CSV file")
    predict.add_argument("--heatmaps", type=Path, metavar="DIR", help="save per-scale and fused heatmap overlays here")
    predict.add_argument("--embeddings", type=Path, metavar="FILE",
                         help="save each image's embedding for analysis elsewhere: FILE.csv (path,e0,e1,...: "
                              "spreadsheets, R, Orange) or FILE.npz (arrays paths and embeddings: numpy). "
                              "Unit-length vectors, so a dot product is a cosine similarity")
    predict.add_argument("--topk", type=int, default=5)
    predict.add_argument("--against", metavar="CLASS",
                         help="the class the contrast heatmap sets the top class against: where the image favours "
                              "the top class over CLASS (default: the runner-up)")
    predict.add_argument("--device", default="auto")

    suggest = commands.add_parser(
        "suggest", help="which unlabeled images to label next",
        description="Typical images of the groups of similar unlabeled images that no label covers yet "
                    "(TypiClust), most useful first, with the class the labelled images suggest for each. "
                    "The pool is the dataset's unlabeled/ folder.")
    suggest.add_argument("run", type=Path, help="run folder")
    suggest.add_argument("--count", type=int, default=50, help="how many images to suggest (default 50)")
    suggest.add_argument("--csv", type=Path, help="also write them to this CSV file")
    suggest.add_argument("--device", default="auto")

    check = commands.add_parser(
        "check-labels", help="which labelled images look mislabelled",
        description="Fits a classifier on the run's embeddings in 5 folds, so each labelled image (training and "
                    "test split) is judged by a classifier that never saw its label, and lists the images whose "
                    "label it doubts (confident learning), likeliest mistakes first, with the class each looks "
                    "like. Write them with --csv, fill in the label column with the right class (or the one "
                    "given, to keep it), and `fgdesk label RUN --csv FILE` moves each image; a label kept that "
                    "way is logged and not listed again.")
    check.add_argument("run", type=Path, help="run folder")
    check.add_argument("--count", type=int, default=50, help="how many suspects to list (default 50)")
    check.add_argument("--csv", type=Path, help="also write them to this CSV file")
    check.add_argument("--method", choices=("linear", "knn"), default="linear",
                       help="what judges each image: a cross-validated linear classifier (default), or its kNN "
                            "neighbours among the other images (faster, less precise)")
    check.add_argument("--device", default="auto")

    duplicates = commands.add_parser(
        "duplicates", help="which images are copies of one another (train/test leaks, one photo in two classes)",
        description="Compares every image of a dataset (training, test and unlabeled) with the others by its "
                    "pixels, and lists the pairs that are the same photo: saved again, resized, mirrored or "
                    "brightened. Given a run, its network also proposes the images it places side by side, which "
                    "finds cropped copies too. Pairs across two classes come first, then test images with a copy "
                    "among the training images (the test score counts them as seen), then repeats within a class.")
    duplicates.add_argument("data", type=Path, help="a run folder, or a dataset folder (same-photo copies only)")
    duplicates.add_argument("--count", type=int, default=50, help="how many pairs to list (default 50)")
    duplicates.add_argument("--csv", type=Path, help="write the pairs found (up to --count) to this CSV file")
    duplicates.add_argument("--device", default="auto")

    label = commands.add_parser(
        "label", help="give labels: move unlabeled images into class folders, or correct a label (undoable)",
        description="Labels an image of a class-folder dataset's unlabeled/ folder by moving it into its class "
                    "folder (train/CLASS when the dataset has split folders); an image already in a class folder "
                    "moves to the other class folder of its split, which corrects its label. Nothing is "
                    "overwritten, and every move is logged in fgdesk-labels.csv at the dataset's root, so --undo "
                    "can reverse it.")
    label.add_argument("data", type=Path, help="the dataset folder, or a run folder (its dataset)")
    label.add_argument("images", nargs="*", type=Path, help="images to label (or to relabel) as --as CLASS")
    label.add_argument("--as", dest="class_name", metavar="CLASS", help="the class of the images named")
    label.add_argument("--csv", type=Path, help="a table with path and label columns, such as `fgdesk suggest --csv` "
                                                "or `fgdesk check-labels --csv` write, with the label column filled "
                                                "in; rows without a label, or with the class the image has, are skipped")
    label.add_argument("--set-aside", action="store_true",
                       help="take the images named out of the dataset instead (a copy of another, say): they move "
                            "into its hidden .fgdesk-set-aside folder, logged and undoable like a label")
    label.add_argument("--new-class", action="store_true", help="make a class folder for a class the dataset lacks")
    label.add_argument("--dry-run", action="store_true", help="say where each image would go, and move nothing")
    label.add_argument("--undo", type=int, nargs="?", const=1, metavar="N", help="move the last N labelled images back (default 1)")

    export = commands.add_parser("export", help="export a run's encoder to TorchScript and ONNX")
    export.add_argument("run", type=Path, help="run folder")
    export.add_argument("--format", choices=("torchscript", "onnx", "all"), default="all")
    export.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: RUN/export)")

    demo = commands.add_parser("demo-data", help="draw the built-in fine-grained demo dataset")
    demo.add_argument("dir", type=Path)
    demo.add_argument("--classes", type=int, default=8)
    demo.add_argument("--per-class", type=int, default=60)
    demo.add_argument("--size", type=int, default=112)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--unlabeled", type=int, default=0, metavar="N",
                      help="also draw N images without labels into unlabeled/ (few labels, many images)")

    summary = commands.add_parser("summary", help="detect a dataset's layout and print its summary and problems")
    summary.add_argument("data", type=Path)
    summary.add_argument("--layout", default="auto")
    summary.add_argument("--level", default="variant")

    runs_parser = commands.add_parser("runs", help="list the runs: status, scores and disk size",
                                      description="Lists the runs in the user's runs folder and those made elsewhere "
                                                  "with --out, newest first.")
    runs_parser.add_argument("--json", action="store_true", help="print JSON (one object per run) for scripts")
    compare = commands.add_parser(
        "compare", help="runs side by side: scores, training time and the settings that differ",
        description="Show runs side by side: status, epochs, training time, the kNN monitor's best, the "
                    "classifier's test top-1/top-5 (after \"Train classifier\" or `fgdesk eval`), and every "
                    "setting that is not the same in all of them.")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or run names as `fgdesk runs` lists them")
    compare.add_argument("--json", action="store_true", help="print JSON instead of a table")
    delete = commands.add_parser(
        "delete", help="delete runs: their checkpoints, curves, classifier and exports",
        description="Deletes what fgdesk wrote in each run folder (checkpoints, curves, log, classifier, scores, "
                    "exports, cached embeddings), then the folder if nothing else is in it. A run being trained "
                    "is refused. Without --yes, asks first.")
    delete.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or run names as `fgdesk runs` lists them")
    delete.add_argument("--yes", action="store_true", help="do not ask (needed where no one can answer)")
    app = commands.add_parser("app", help="open the desktop app")
    app.add_argument("path", nargs="?", type=Path, help="a dataset folder or an image to open")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if argv and argv[0] not in commands and not argv[0].startswith("-") and Path(argv[0]).exists():
        argv.insert(0, "app")  # `fgdesk FOLDER`, as a file manager's "Open with" runs it
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if args.command in (None, "app"):
        from fgdesk.gui.app import main as app_main

        path = getattr(args, "path", None)
        return app_main([str(path)] if path else [])
    handler = {
        "train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "export": cmd_export, "suggest": cmd_suggest,
        "check-labels": cmd_check_labels, "duplicates": cmd_duplicates,
        "label": cmd_label, "demo-data": cmd_demo_data, "summary": cmd_summary, "runs": cmd_runs,
        "compare": cmd_compare, "delete": cmd_delete,
    }[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except CLIError as exc:
        print(f"fgdesk {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not isinstance(exc, _user_errors()):
            raise  # a bug: the traceback is what a report needs
        print(f"fgdesk {args.command}: {exc}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message tells the user what to change; they never need a traceback.
    Imported only when something failed, so a plain `fgdesk --help` stays light."""
    from fgdesk.config import ConfigError
    from fgdesk.data.layouts import DatasetError
    from fgdesk.evaluate.report import EvaluationError
    from fgdesk.infer.export import ExportError
    from fgdesk.train.checkpoint import CheckpointError
    from fgdesk.train.device import DeviceError

    return (ConfigError, DatasetError, EvaluationError, ExportError, CheckpointError, DeviceError)


class CLIError(RuntimeError):
    pass


def _shown_from(root) -> Callable[[str | Path], str]:
    """How a command prints a path: from the dataset's root when it lies inside it."""
    def shown(path: str | Path) -> str:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            return str(path)
    return shown


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _flag_overrides(args: argparse.Namespace) -> dict:
    """Config fields set by flags on the command line (unset flags are left out)."""
    overrides = {key: getattr(args, flag.lstrip("-").replace("-", "_")) for flag, key, _, _ in TRAIN_OPTIONS}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.stages:
        try:
            overrides["model.stages"] = [int(part) for part in args.stages.split(",") if part.strip()]
        except ValueError:
            raise CLIError(f"--stages expects ResNet stage numbers separated by commas, e.g. 2,3,4; got {args.stages!r}") from None
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise CLIError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = _parse_value(value.strip())
    return overrides


def resolve_train_config(args: argparse.Namespace):
    """Config from defaults (or --config), then flags; errors name the flag."""
    from fgdesk.config import ConfigError, RunConfig
    from fgdesk.data.layouts import DatasetError, detect
    from fgdesk.train.defaults import default_config

    try:
        if args.config:
            config = RunConfig.load(args.config)
            if args.data:
                config.data.path = str(args.data)
        else:
            if not args.data:
                raise CLIError("give --data FOLDER (or --config FILE, or --resume RUN)")
            try:
                count = len(detect(args.data, layout=args.layout or "auto", level=args.level or "variant", check_images=False).train_samples())
            except DatasetError as exc:
                raise CLIError(str(exc)) from exc
            config = default_config(str(args.data), count, args.device or "auto")
        config = config.with_overrides(_flag_overrides(args)).validate()
        if config.data.path:  # the run must find its dataset from any folder later (eval, suggest, label)
            config.data.path = os.path.abspath(os.path.expanduser(config.data.path))
        return config
    except (ConfigError, ValueError) as exc:
        raise CLIError(str(exc)) from exc


class _Progress:
    """Turns engine events into a tqdm bar per epoch plus one line per epoch."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        from fgdesk.train.events import BadImageEvent, EpochEvent, FailedEvent, FinishedEvent, StepEvent

        if isinstance(event, StepEvent):
            if self.bar is None:
                self.bar = tqdm(total=event.steps_per_epoch, initial=event.step_in_epoch - 1,
                                desc=f"epoch {event.epoch + 1}/{event.epochs}", unit="step", leave=False, dynamic_ncols=True)
            self.bar.update(event.step_in_epoch - self.bar.n)
            self.bar.set_postfix(loss=f"{event.loss:.3f}", lr=f"{event.lr:.3g}", img_s=f"{event.images_per_s:.0f}")
        elif isinstance(event, EpochEvent):
            self.close()
            knn = "n/a" if event.knn_top1 is None else f"{100 * event.knn_top1:.1f}%"
            loss = f"{event.mean_loss:.4f}" if math.isfinite(event.mean_loss) else "n/a"
            part = "" if event.fraction >= 1.0 else f" ({100 * event.fraction:.0f}% of it, when the time budget ran out)"
            print(f"epoch {event.epoch + 1}/{event.epochs}{part}: loss {loss}, kNN top-1 (validation) {knn}, "
                  f"{event.elapsed_s / 60:.1f} min", flush=True)
        elif isinstance(event, BadImageEvent):
            self.close()
            print(f"skipped {event.path}: {event.reason}", file=sys.stderr)
        elif isinstance(event, (FinishedEvent, FailedEvent)):
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _stop_gracefully_on_signals(control) -> None:
    """First Ctrl+C (or a scheduler's SIGTERM) stops after the current step with a checkpoint;
    a second Ctrl+C aborts at once (the run then shows as interrupted and still resumes)."""
    import signal

    def request_stop(signum, frame):
        if control.stopped and signum == signal.SIGINT:
            raise KeyboardInterrupt
        print("\nstopping after this step and saving a checkpoint (Ctrl+C again to abort)", file=sys.stderr, flush=True)
        control.stop()

    signal.signal(signal.SIGINT, request_stop)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, request_stop)


def cmd_train(args: argparse.Namespace) -> int:
    from fgdesk.config import ConfigError
    from fgdesk.train.checkpoint import CheckpointError
    from fgdesk.train.engine import Trainer
    from fgdesk.train.events import FailedEvent

    progress = _Progress()
    try:
        if args.resume:
            clashing = [flag for flag, given in (("--data", args.data), ("--config", args.config), ("--out", args.out)) if given]
            if clashing:
                raise CLIError(f"--resume continues {args.resume} with its own dataset, settings and folder; "
                               f"{', '.join(clashing)} cannot change them (start a new run instead)")
            overrides = _flag_overrides(args)
            if args.print_config:
                print(json.dumps(_resumed_config(args.resume, overrides).to_dict(), indent=2))
                return 0
            trainer = Trainer.resume(args.resume, on_event=progress, overrides=overrides)
        else:
            config = resolve_train_config(args)
            if args.print_config:
                print(json.dumps(config.to_dict(), indent=2))
                return 0
            first_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 creates the folder
            if args.out and args.out.exists() and not args.out.is_dir():
                raise CLIError(f"--out {args.out} is a file; give a folder for the new run")
            if first_process and args.out and args.out.exists() and any(args.out.iterdir()):
                raise CLIError(f"--out {args.out} already holds files; choose a new folder or use --resume {args.out}")
            trainer = Trainer(config, run_dir=args.out, on_event=progress)
    except (CheckpointError, ConfigError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    if trainer.dist.is_main:
        print(f"run folder: {trainer.run_dir}", flush=True)
    _stop_gracefully_on_signals(trainer.control)
    result = trainer.run()
    if isinstance(result, FailedEvent):
        print(f"training failed: {result.reason}\nlog: {result.log_path}", file=sys.stderr)
        return 1
    if trainer.dist.is_main:
        best = "n/a" if result.best_knn_top1 is None else f"{100 * result.best_knn_top1:.1f}%"
        print(f"{result.status} after {result.epochs_done} epoch(s); best validation kNN top-1 {best}\nrun folder: {result.run_dir}")
    return 0


def _resumed_config(run: Path, overrides: dict):
    """The settings `--resume RUN` with these flags would train with (nothing is written)."""
    from fgdesk.config import RunConfig
    from fgdesk.train import runs
    from fgdesk.train.engine import RESUMABLE_CHANGES

    config_path = Path(run) / runs.CONFIG_FILE
    if not config_path.is_file():
        raise CLIError(f"{run} is not an fgdesk run folder (no {runs.CONFIG_FILE})")
    fixed = [key for key in overrides if not key.startswith(RESUMABLE_CHANGES)]
    if fixed:
        raise CLIError(f"cannot change {', '.join(fixed)} when resuming; start a new run instead")
    return RunConfig.load(config_path).with_overrides(overrides).validate()


def cmd_eval(args: argparse.Namespace) -> int:
    from fgdesk.evaluate.few_labels import parse_labels_per_class
    from fgdesk.evaluate.report import EvaluationError, evaluate_run
    from fgdesk.train.checkpoint import CheckpointError

    try:
        labels_per_class = parse_labels_per_class(args.labels_per_class)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if args.draws < 1:
        raise CLIError(f"--draws must be at least 1, got {args.draws}")
    if args.faithfulness < 0:
        raise CLIError(f"--faithfulness takes a count of 0 or more, got {args.faithfulness}")
    try:
        report = evaluate_run(args.run, device=args.device, labels_per_class=labels_per_class, draws=args.draws,
                              faithfulness_images=args.faithfulness)
    except (CheckpointError, EvaluationError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.as_text())
    return 0


def _expand_images(paths: list[Path]) -> list[Path]:
    from fgdesk.data.images import IMAGE_EXTENSIONS

    images: list[Path] = []
    for path in paths:
        if path.is_dir():
            images.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()))
        else:
            images.append(path)
    return images


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fgdesk.evaluate.report import EvaluationError
    from fgdesk.infer.overlay import save_heatmaps
    from fgdesk.infer.predictor import Predictor
    from fgdesk.train.checkpoint import CheckpointError

    if args.topk < 1:
        raise CLIError(f"--topk must be at least 1, got {args.topk}")
    if args.embeddings is not None and args.embeddings.suffix.lower() not in (".csv", ".npz"):
        raise CLIError(f"--embeddings writes a .csv or an .npz file, not {args.embeddings.name}")
    if args.embeddings is not None and args.csv is not None and args.embeddings.resolve() == args.csv.resolve():
        raise CLIError("--csv and --embeddings name the same file; give each its own")
    if args.against is not None and not args.heatmaps:
        print("note: --against only shapes the contrast heatmap; add --heatmaps DIR to save it", file=sys.stderr)
    images = _expand_images(args.images)
    if not images:
        raise CLIError("no images given (folders are searched recursively)")
    try:
        predictor = Predictor.load(args.run, device=args.device)
    except (CheckpointError, EvaluationError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    if args.against is not None:
        args.against = _class_named(args.against, predictor.class_names, "--against")
    if args.csv or args.embeddings:
        with tqdm(total=len(images), desc="classifying", unit="img") as bar:
            count = predictor.predict_to_csv(images, args.csv, on_progress=lambda done, total: bar.update(done - bar.n),
                                             topk=args.topk, embeddings_path=args.embeddings)
        if args.embeddings:
            saved = _embedding_rows(args.embeddings)
            print(f"wrote {saved} embeddings to {args.embeddings}"
                  + (f"; {count - saved} image(s) could not be read" if saved < count else ""))
        if args.csv:
            print(f"wrote {count} rows to {args.csv}")
            csv_failures = _csv_error_rows(args.csv)
            if csv_failures:
                print(f"{csv_failures} of {count} image(s) could not be classified; see the error column", file=sys.stderr)
        else:
            csv_failures = count - saved
        if not args.heatmaps:
            return 1 if csv_failures == len(images) else 0
    failures = 0
    if args.heatmaps or not (args.csv or args.embeddings):
        for start in range(0, len(images), 16):
            for prediction in predictor.predict(images[start:start + 16], topk=args.topk, against=args.against):
                if prediction.error:
                    failures += 1
                    print(f"{prediction.source}: skipped ({prediction.error})", file=sys.stderr)
                    continue
                if not args.csv:
                    top = ", ".join(f"{name} {100 * prob:.1f}%" for name, prob in prediction.topk)
                    print(f"{prediction.source}: {top}")
                if args.heatmaps:
                    save_heatmaps(prediction, args.heatmaps)
        if args.heatmaps:
            print(f"heatmaps saved in {args.heatmaps}")
    return 1 if failures == len(images) else 0


def cmd_suggest(args: argparse.Namespace) -> int:
    from fgdesk.evaluate.suggest import suggest_for_run, write_suggestions_csv

    if args.count < 1:
        raise CLIError(f"--count must be at least 1, got {args.count}")
    suggestions = suggest_for_run(args.run, count=args.count, device=args.device)
    width = max([len(s.guess) for s in suggestions] + [5])
    print(f"{'rank':>4}  {'guess':<{width}}  {'vote':>5}  {'group':>5}  path")
    for s in suggestions:
        vote = f"{100 * s.guess_share:.0f}%" if s.guess else "-"
        group = str(s.group_size) if s.group_size else "-"
        print(f"{s.rank:>4}  {s.guess or '-':<{width}}  {vote:>5}  {group:>5}  {s.path}")
    if args.csv:
        write_suggestions_csv(args.csv, suggestions)
        print(f"wrote {len(suggestions)} suggestions to {args.csv}; fill in its label column, then "
              f"`fgdesk label {args.run} --csv {args.csv}` moves each image into its class folder")
    return 0


def cmd_check_labels(args: argparse.Namespace) -> int:
    from fgdesk.evaluate.label_check import check_labels_for_run, write_label_check_csv

    if args.count < 1:
        raise CLIError(f"--count must be at least 1, got {args.count}")
    check = check_labels_for_run(args.run, count=args.count, method=args.method, device=args.device)
    shown = _shown_from(check.dataset)
    given_width = max([len(row.given) for row in check.issues] + [5])
    suggested_width = max([len(row.suggested) for row in check.issues] + [10])
    if check.issues:
        print(f"{'rank':>4}  {'given':<{given_width}}  {'p':>4}  {'looks like':<{suggested_width}}  {'p':>4}  path")
    for row in check.issues:
        print(f"{row.rank:>4}  {row.given:<{given_width}}  {100 * row.given_probability:>3.0f}%  "
              f"{row.suggested:<{suggested_width}}  {100 * row.suggested_probability:>3.0f}%  {shown(row.path)}")
    summary = (f"{check.suspects} of {check.checked} labelled images have a label the classifier doubts"
               + (f"; the {len(check.issues)} likeliest are listed" if check.suspects > len(check.issues) else ""))
    if check.kept:
        summary += f"; {check.kept} more were checked and kept before, and are not listed"
    if check.unchecked:
        summary += f"; {check.unchecked} not checked (the only labelled image of their class)"
    if check.unreadable:
        summary += f"; {check.unreadable} unreadable"
    print(summary)
    print(f"the classifier, judging each image without seeing its label, agrees with {100 * check.agreement:.0f}% "
          "of the labels" + ("; below 80%, most doubts are its own mistakes: train the run longer, or start it "
                             "from better weights, before trusting them" if check.weak_judge else ""))
    if args.csv:
        write_label_check_csv(args.csv, check)
        print(f"wrote {len(check.issues)} rows to {args.csv}; fill in its label column with the right class, then "
              f"`fgdesk label {args.run} --csv {args.csv}` moves each image into that class's folder")
    return 0


def cmd_duplicates(args: argparse.Namespace) -> int:
    from fgdesk.evaluate.duplicates import KIND_TEXT, KINDS, check_duplicates, write_duplicates_csv

    if args.count < 1:
        raise CLIError(f"--count must be at least 1, got {args.count}")
    if not args.data.is_dir():
        raise CLIError(f"{args.data} is not a folder")
    check = check_duplicates(args.data, count=args.count, device=args.device)
    shown = _shown_from(check.dataset)
    for kind in KINDS:
        rows = [row for row in check.pairs if row.kind == kind]
        if not rows:
            continue
        print(f"{kind}: {KIND_TEXT[kind]} ({check.counts[kind]})")
        for row in rows:
            print(f"  {row.rank:>4}  {row.how:<12}  {row.match:.2f}  {shown(row.path)}  =  {shown(row.other_path)}")
    found = ", ".join(f"{check.counts[kind]} {kind}" for kind in KINDS if check.counts[kind])
    summary = (f"{check.found} pair{'' if check.found == 1 else 's'} of copies among {check.checked} images"
               + (f" ({found})" if found else ""))
    if check.found > len(check.pairs):
        summary += f"; the first {len(check.pairs)} are listed"
    if check.unreadable:
        summary += f"; {check.unreadable} unreadable"
    print(summary)
    if not check.used_network:
        print("compared by their pixels alone: same-photo copies are found; give a run folder to find cropped "
              "copies too")
    if args.csv:
        write_duplicates_csv(args.csv, check)
        print(f"wrote {len(check.pairs)} pairs to {args.csv}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from fgdesk.data.labeling import DatasetLabeler, apply_label_table, dataset_folder

    modes = [bool(args.images), args.csv is not None, args.undo is not None]
    if sum(modes) != 1:
        raise CLIError("name images with --as CLASS, or give --csv TABLE, or --undo [N]: exactly one of them")
    if args.set_aside and (not args.images or args.class_name):
        raise CLIError("--set-aside takes the images named out of the dataset; name some images, without --as")
    if args.images and not args.class_name and not args.set_aside:
        raise CLIError("say which class the images are with --as CLASS, or take them out with --set-aside")
    if args.class_name and not args.images:
        raise CLIError("--as names the class of the images given; name some images")
    labeler = DatasetLabeler(dataset_folder(args.data))
    shown = _shown_from(labeler.root)
    if args.undo is not None:
        if args.undo < 1:
            raise CLIError(f"--undo takes a count of 1 or more, got {args.undo}")
        if args.dry_run:
            moves = labeler.logged_moves()[-args.undo:]
            for move in reversed(moves):
                print(f"would move back {shown(move.target)} -> {shown(move.source)}")
            return 0
        undone, errors = labeler.undo_last(args.undo)
        for move in undone:
            print(f"moved back {shown(move.target)} -> {shown(move.source)}")
        for error in errors:
            print(f"skipped: {error}", file=sys.stderr)
        for warning in labeler.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        left = args.undo - len(undone) - len(errors)
        set_aside = sum(1 for move in undone if move.set_aside)
        kinds = [f"{count} {what}" for count, what in ((len(undone) - set_aside, "label(s)"),
                                                       (set_aside, "set-aside(s)")) if count]
        print(f"undid {' and '.join(kinds) or '0 label(s)'}" + (f", {len(errors)} could not be" if errors else "")
              + ("; the log holds no more" if left > 0 else ""))
        return 1 if errors else 0

    if args.set_aside:
        return _set_aside(labeler, args.images, args.dry_run, shown)

    failures: list[str] = []
    if args.csv is not None:
        result = apply_label_table(labeler, args.csv, allow_new=args.new_class, dry_run=args.dry_run)
        moves, skipped, kept = result.moves, result.skipped, result.kept
        failures = [f"{args.csv}, line {line}: {message}" for line, message in result.errors]
    else:
        from fgdesk.data.labeling import LabelingError

        moves, skipped, kept = [], 0, 0
        act = labeler.plan if args.dry_run else labeler.assign
        for image in args.images:
            try:
                moves.append(act(image, args.class_name, allow_new=args.new_class))
            except LabelingError as exc:
                failures.append(str(exc))
    for move in moves:
        verb = ("would move" if args.dry_run else "relabelled" if move.previous_class else "labelled")
        change = f"{move.previous_class} -> {move.class_name}" if move.previous_class else move.class_name
        print(f"{verb} {shown(move.source)} -> {shown(move.target)}  ({change})")
    for failure in failures:
        print(f"skipped: {failure}", file=sys.stderr)
    for warning in labeler.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    relabelled = sum(1 for move in moves if move.previous_class)
    summary = f"{len(moves) - relabelled} image(s) {'would be labelled' if args.dry_run else 'labelled'}"
    if relabelled:
        summary += f", {relabelled} {'would be relabelled' if args.dry_run else 'relabelled'}"
    if skipped:
        summary += f", {skipped} row(s) without a label"
    if kept:
        summary += f", {kept} kept as labelled"
    if failures:
        summary += f", {len(failures)} could not be"
    if moves and not args.dry_run:
        summary += f"; the moves are logged in {labeler.log_path}"
    print(summary)
    return 1 if failures else 0  # scripts must see that some images were left unlabelled


def _set_aside(labeler, images: list[Path], dry_run: bool, shown) -> int:
    from fgdesk.data.labeling import SET_ASIDE_FOLDER, LabelingError

    done, failures = 0, []
    for image in images:
        if dry_run:
            print(f"would set aside {shown(Path(os.path.abspath(image)))} into {SET_ASIDE_FOLDER}/")
            continue
        try:
            move = labeler.set_aside(image)
        except LabelingError as exc:
            failures.append(str(exc))
            continue
        done += 1
        print(f"set aside {shown(move.source)} -> {shown(move.target)}"
              + (f"  (was {move.previous_class})" if move.previous_class else ""))
    for failure in failures:
        print(f"skipped: {failure}", file=sys.stderr)
    for warning in labeler.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not dry_run:
        print(f"{done} image(s) set aside" + (f", {len(failures)} could not be" if failures else "")
              + (f"; `fgdesk label {labeler.root} --undo {done}` puts them back" if done else ""))
    return 1 if failures else 0


def _class_named(text: str, names: list[str], option: str) -> str:
    """The class `text` names: exactly; or ignoring case and a numbered prefix, so "blue_jay"
    finds CUB's "020.Blue_Jay" (and "Tern" finds "001.Tern" beside "002.Arctic_Tern"); or as
    the one class whose name contains it."""
    if text in names:
        return text
    whole = [name for name in names if text.lower() in (name.lower(), name.split(".", 1)[-1].lower())]
    if len(whole) == 1:
        return whole[0]
    found = [name for name in names if text.lower() in name.lower()]
    if len(found) == 1:
        return found[0]
    if found:
        raise CLIError(f"{option} {text!r} fits {len(found)} classes ({', '.join(found[:8])}"
                       f"{', …' if len(found) > 8 else ''}); give more of the name")
    raise CLIError(f"{option} {text!r} is not one of the run's classes"
                   + (f" ({', '.join(names[:8])}{', …' if len(names) > 8 else ''})" if names else ""))


def _embedding_rows(path: Path) -> int:
    import numpy as np

    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            return len(arrays["paths"])
    with path.open(encoding="utf-8") as handle:
        return max(0, sum(1 for _ in handle) - 1)


def _csv_error_rows(path: Path) -> int:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return sum(1 for row in csv.DictReader(handle) if row.get("error"))


def cmd_export(args: argparse.Namespace) -> int:
    from fgdesk.infer.export import ExportError, export_onnx, export_torchscript
    from fgdesk.train import runs

    out_dir = args.out or (args.run / runs.EXPORT_DIR)
    written, problems = [], []
    if args.format in ("torchscript", "all"):
        written.append(export_torchscript(args.run, out_dir / runs.EXPORT_FILES[0]))
    if args.format in ("onnx", "all"):
        try:
            written.append(export_onnx(args.run, out_dir / runs.EXPORT_FILES[1]))
        except ExportError as exc:
            problems.append(str(exc))
    for path in written:
        print(f"wrote {path}")
    for problem in problems:
        print(f"ONNX export skipped: {problem}", file=sys.stderr)
    if args.format == "onnx" and problems:
        return 1
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from fgdesk.data.synthetic import make_demo_dataset

    try:
        root = make_demo_dataset(args.dir, num_classes=args.classes, per_class=args.per_class, size=args.size,
                                 seed=args.seed, unlabeled=args.unlabeled)
    except ValueError as exc:  # a setting out of range
        raise CLIError(str(exc)) from exc
    except OSError as exc:
        raise CLIError(f"cannot write the demo set to {args.dir}: {exc.strerror or exc}") from exc
    extra = f", {args.unlabeled} unlabeled" if args.unlabeled else ""
    print(f"demo dataset written to {root} ({args.classes} classes x {args.per_class} images{extra})")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from fgdesk.data.layouts import DatasetError, detect

    try:
        index = detect(args.data, layout=args.layout, level=args.level, check_images=True)
    except DatasetError as exc:
        raise CLIError(str(exc)) from exc
    print(index.summary().as_text())
    for problem in index.problems[:50]:
        print(f"problem: {problem.path}: {problem.reason}")
    if len(index.problems) > 50:
        print(f"... and {len(index.problems) - 50} more problems")
    return 0


def run_folders(given: list[str]) -> list[Path]:
    """Run folders from folders, or from run names as `fgdesk runs` lists them; a folder that
    exists wins, a name shared by several runs is refused, and each run counts once."""
    from fgdesk.train.runs import list_runs

    known = None
    folders: dict[str, Path] = {}
    for name in given:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            known = list_runs() if known is None else known
            matches = [info.path for info in known if info.name == name]
            if not matches:
                raise CLIError(f"{name} is neither a run folder nor the name of a run that `fgdesk runs` lists")
            if len(matches) > 1:
                raise CLIError(f"several runs are named {name}: {', '.join(map(str, matches))}; give the folder instead")
            folder = matches[0]
        folders.setdefault(os.path.realpath(folder), Path(os.path.abspath(folder)))
    return list(folders.values())


def cmd_compare(args: argparse.Namespace) -> int:
    from fgdesk.train.compare import compare_runs

    folders = run_folders(args.runs)
    try:
        comparison = compare_runs(folders)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    print(json.dumps(comparison.as_dict(), indent=2) if args.json else comparison.as_text())
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    import time

    from fgdesk.train.runs import format_bytes, list_runs

    infos = list_runs()
    if args.json:
        fields = ("name", "status", "epochs_done", "epochs", "best_knn_top1", "classifier_top1", "disk_bytes",
                  "created", "updated", "dataset")
        print(json.dumps([{"path": str(info.path), **{name: getattr(info, name) for name in fields}} for info in infos],
                         indent=2))
        return 0
    if not infos:
        print("no runs yet")
        return 0
    for info in infos:
        best = "-" if info.best_knn_top1 is None else f"{100 * info.best_knn_top1:.1f}%"
        classifier = "-" if info.classifier_top1 is None else f"{100 * info.classifier_top1:.1f}%"
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.created))
        print(f"{info.name:32s} {info.status:12s} epochs {info.epochs_done}/{info.epochs:<5d} best kNN {best:>6s}  "
              f"classifier {classifier:>6s}  {format_bytes(info.disk_bytes):>8s}  {created}  {info.path}")
    print(f"{len(infos)} run(s), {format_bytes(sum(info.disk_bytes for info in infos))} on disk "
          "(`fgdesk delete RUN` frees a run's space)")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from fgdesk.train import runs

    folders = run_folders(args.runs)
    for folder in folders:
        if not runs.is_run_folder(folder):
            raise CLIError(f"{folder} is not an fgdesk run folder (it has no run state or config); nothing was deleted")
    total = sum(runs.run_disk_bytes(folder) for folder in folders)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CLIError("deleting cannot be undone; add --yes to delete without a question")
        listed = "".join(f"  {folder}\n" for folder in folders)
        answer = input(f"{listed}Delete these {len(folders)} run(s), {runs.format_bytes(total)}? This cannot be undone. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    deleted, problems = runs.delete_runs(folders)
    for result in deleted:
        print(f"deleted {result.path} ({runs.format_bytes(result.freed_bytes)} freed)")
        if result.kept:
            shown = ", ".join(result.kept[:5]) + (f" and {len(result.kept) - 5} more" if len(result.kept) > 5 else "")
            print(f"  kept what fgdesk did not write there, and the folder for it: {shown}")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0
