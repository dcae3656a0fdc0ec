"""The `fgdesk` command line, end to end on the demo set, as a server user would run it."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TINY_TRAIN = [
    "--epochs", "2", "--batch-size", "8", "--image-size", "32", "--eval-size", "48", "--local-crops", "1",
    "--local-size", "16", "--workers", "0", "--queue-size", "32", "--checkpoint-every", "3", "--time-budget", "0",
    "--set", "model.proj_hidden=64", "--set", "model.proj_dim=32",
]


def fgdesk(*args: str, check: bool = True, timeout: int = 300, module: tuple[str, ...] = ("-m", "fgdesk")) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *module, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    if check and result.returncode != 0:
        raise AssertionError(f"fgdesk {' '.join(map(str, args))} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def fgdesk_here(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The same command through `fgdesk.cli.main` in this process, for quick refusals.

    Each subprocess pays ~4 s to import torch; what a refusal prints and returns is the same.
    An uncaught exception fails the test here as a traceback would in a terminal.
    """
    from fgdesk.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exc:  # argparse's usage errors exit 2
            code = exc.code if isinstance(exc.code, int) else 1
    result = subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"fgdesk {' '.join(map(str, args))} returned {code}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "demo"
    out = fgdesk("demo-data", root, "--classes", "4", "--per-class", "10", "--size", "48")
    assert "demo dataset written" in out.stdout
    return root


def test_help_documents_every_train_option():
    text = fgdesk("train", "--help").stdout
    for flag in ("--data", "--config", "--resume", "--out", "--epochs", "--batch-size", "--image-size", "--lr",
                 "--temperature", "--queue-size", "--momentum", "--stages", "--local-crops", "--attention",
                 "--backbone", "--weights", "--device", "--precision", "--time-budget", "--early-size", "--early-fraction"):
        assert flag in text
    assert fgdesk("--version").stdout.startswith("fgdesk ")


@pytest.mark.timeout(900)  # several interpreters import torch; slow on a loaded machine
def test_train_eval_predict_export_end_to_end(demo, tmp_path):
    run = tmp_path / "run"
    train = fgdesk("train", "--data", demo, "--out", run, *TINY_TRAIN)
    assert "finished after 2 epoch(s)" in train.stdout
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "config.json").is_file()

    evaluation = fgdesk("eval", run)
    assert "kNN" in evaluation.stdout and "pointing" in evaluation.stdout.lower()
    assert "Few labels" in evaluation.stdout  # 1 and 5 of the 8 training images per class, by default
    assert "Do the maps follow the classifier?" in evaluation.stdout and "class evidence below random on" in evaluation.stdout
    report = json.loads(fgdesk("eval", run, "--json", "--labels-per-class", "2,8", "--draws", "3").stdout)
    assert 0.0 <= report["knn"]["top1"] <= 1.0 and 0.0 <= report["linear"]["top1"] <= 1.0
    assert report["faithfulness"]["images"] == report["num_test"] and "random" in report["faithfulness"]["deletion_auc"]
    # 8 labels per class is every training image: the full evaluation, not repeated.
    assert [(row["labels_per_class"], row["num_train"], len(row["linear_top1"]["per_draw"])) for row in report["few_labels"]] == [(2, 8, 3)]
    assert 0.0 <= report["few_labels"][0]["knn_top1"]["mean"] <= 1.0
    bad = fgdesk_here("eval", run, "--labels-per-class", "five", check=False)
    assert bad.returncode == 2 and "whole numbers" in bad.stderr
    assert "fused" in report["localization"] and "evidence" in report["localization"]
    assert (run / "eval.json").is_file() and (run / "classifier.pt").is_file()

    images = sorted((demo / "test").rglob("*.png"))[:3]
    table = tmp_path / "predictions.csv"
    heatmaps = tmp_path / "heatmaps"
    fgdesk("predict", run, *images, "--csv", table, "--heatmaps", heatmaps)
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert len(rows) == 3 and all(row["path"] for row in rows)
    assert len(list(heatmaps.glob("*.png"))) >= 3 * 2  # at least a fused map and one scale per image
    assert len(list(heatmaps.glob("*-contrast.png"))) == 3  # where each favours its top class over the runner-up
    against = fgdesk_here("predict", run, images[0], "--heatmaps", heatmaps, "--against", "2_SQUARE")  # part of a name will do
    assert against.returncode == 0 and "heatmaps saved" in against.stdout

    # --topk reaches the CSV; a CSV of nothing but unreadable files is a failure.
    fgdesk("predict", run, *images, "--csv", table, "--topk", "2")
    assert next(csv.reader(table.open(encoding="utf-8")))[:4] == ["path", "top1", "prob", "top2"]
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_bytes(b"not a picture")
    failed = fgdesk("predict", run, junk, "--csv", tmp_path / "junk.csv", check=False)
    assert failed.returncode == 1 and "could not be classified" in failed.stderr
    # Embeddings alone, for analysis elsewhere: a row per image, a column per dimension.
    assert "wrote 3 embeddings to" in fgdesk_here("predict", run, *images, "--embeddings", tmp_path / "emb.csv").stdout
    embedded = list(csv.reader((tmp_path / "emb.csv").open(encoding="utf-8")))
    assert [row[0] for row in embedded[1:]] == [str(image) for image in images] and embedded[0][1] == "e0"

    # Mistakes get one line saying what to change, never a traceback.
    for args, expected in (
        (("eval", run, "--device", "gpu"), "unknown device 'gpu'"),
        (("train", "--resume", run, "--data", demo), "--data cannot change them"),
        (("train", "--resume", run, "--stages", "a,b"), "--stages expects"),
        (("export", tmp_path / "no-such-run"), "does not exist"),
        (("suggest", run), "no unlabeled images to choose from"),
        (("predict", run, images[0], "--embeddings", tmp_path / "emb.txt"), "writes a .csv or an .npz file"),
        (("predict", run, images[0], "--against", "no_such_class"), "is not one of the run's classes (class_0_circle"),
        (("predict", run, images[0], "--against", "class_"), "fits 4 classes (class_0_circle"),
        (("predict", run, images[0], "--csv", tmp_path / "same.csv", "--embeddings", tmp_path / "same.csv"), "the same file"),
    ):
        refused = fgdesk_here(*args, check=False)
        assert refused.returncode == 2 and expected in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    shown = json.loads(fgdesk_here("train", "--resume", run, "--epochs", "7", "--print-config").stdout)
    assert shown["schedule"]["epochs"] == 7 and json.loads((run / "config.json").read_text())["schedule"]["epochs"] == 2

    exported = fgdesk("export", run, "--format", "torchscript")
    assert (run / "export" / "fgdesk_encoder.pt").is_file(), exported.stdout

    # Labels to check: a table of at most --count rows, for the user to fill in.
    doubts = tmp_path / "doubts.csv"
    checked = fgdesk_here("check-labels", run, "--count", "3", "--csv", doubts).stdout
    assert "of 40 labelled images have a label the classifier doubts" in checked, checked
    assert "agrees with" in checked and "labels" in checked
    rows = list(csv.DictReader(doubts.open(encoding="utf-8")))
    assert len(rows) <= 3 and next(csv.reader(doubts.open(encoding="utf-8"))) == [
        "rank", "path", "split", "given", "suggested", "given_probability", "suggested_probability", "label"]
    assert all(row["given"] != row["suggested"] and row["label"] == "" for row in rows)
    # The verdicts: one label kept, one corrected (a test image stays in test/), then undone.
    kept, wrong = sorted((demo / "test" / "class_1_triangle").iterdir())[:2]
    verdicts = tmp_path / "verdicts.csv"
    verdicts.write_text(f"path,label\n{kept},class_1_triangle\n{wrong},class_2_square\n", encoding="utf-8")
    applied = fgdesk_here("label", run, "--csv", verdicts).stdout
    # The other class has a test image of that name: -2, never an overwrite.
    assert f"relabelled test/class_1_triangle/{wrong.name} -> test/class_2_square/{wrong.stem}-2.png  " \
           "(class_1_triangle -> class_2_square)" in applied, applied
    assert "0 image(s) labelled, 1 relabelled, 1 kept as labelled" in applied, applied
    from fgdesk.data.labeling import confirmed_labels

    assert confirmed_labels(demo) == {f"test/class_1_triangle/{kept.name}": "class_1_triangle"}  # not listed again
    assert "undid 1 label(s)" in fgdesk_here("label", run, "--undo").stdout and wrong.is_file()


def test_a_finished_run_can_be_extended_with_more_epochs(demo, tmp_path):
    run = tmp_path / "run"
    fgdesk("train", "--data", demo, "--out", run, *TINY_TRAIN[:1], "1", *TINY_TRAIN[2:])
    resumed = fgdesk("train", "--resume", run, "--epochs", "2")
    assert "finished after 2 epoch(s)" in resumed.stdout
    refused = fgdesk_here("train", "--resume", run, "--backbone", "resnet50", check=False)
    assert refused.returncode == 2 and "cannot change model.backbone" in refused.stderr


def test_bad_input_gives_a_clear_message_not_a_traceback(demo, tmp_path):
    missing = fgdesk_here("train", "--data", tmp_path / "nowhere", check=False)
    assert missing.returncode == 2
    assert "nowhere" in missing.stderr and "Traceback" not in missing.stderr
    bad_value = fgdesk_here("train", "--data", demo, "--batch-size", "1", check=False)
    assert bad_value.returncode == 2 and "schedule.batch_size" in bad_value.stderr


@pytest.mark.timeout(900)  # several interpreters import torch; slow on a loaded machine
def test_two_process_torchrun_training_on_cpu(demo, tmp_path):
    # Unreadable files leave the two processes with batches of different sizes, which
    # their collectives must still pair up.
    data = tmp_path / "demo"
    shutil.copytree(demo, data)
    broken_class = sorted((data / "train").iterdir())[0]
    (broken_class / "broken 0.jpg").write_bytes(b"not an image")
    good = sorted(broken_class.glob("*.png"))[0].read_bytes()
    (broken_class / "broken 1.png").write_bytes(good[: len(good) // 2])
    run = tmp_path / "ddp"
    result = fgdesk(
        "--standalone", "--nproc_per_node=2", "-m", "fgdesk", "train", "--data", data, "--out", run, *TINY_TRAIN,
        "--device", "cpu", module=("-m", "torch.distributed.run"), timeout=400,
    )
    assert "finished after 2 epoch(s)" in result.stdout
    assert "broken 0.jpg" in result.stderr and "broken 1.png" in result.stderr  # reported by whichever process read it
    from fgdesk.data.layouts import detect
    from fgdesk.fileio import read_jsonl

    steps = [r for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "step"]
    # The training images (the broken ones too) are sharded over 2 processes, each taking batches of 8.
    per_epoch = (len(detect(data).train_samples()) // 2) // 8
    assert steps and steps[-1]["global_step"] == steps[-1]["total_steps"] == 2 * per_epoch
    assert [r["global_step"] for r in steps] == list(range(1, 2 * per_epoch + 1))  # only rank 0 logs
    assert (run / "checkpoints" / "last.pt").is_file()


def test_a_folder_or_image_given_alone_opens_the_app_on_it(tmp_path, monkeypatch):
    """`fgdesk FOLDER` (a file manager's "Open with") and `fgdesk app FOLDER` open the app there."""
    import fgdesk.gui.app
    from fgdesk import cli

    opened: list[list[str]] = []
    monkeypatch.setattr(fgdesk.gui.app, "main", lambda argv: opened.append(list(argv)) or 0)
    image = tmp_path / "bird.png"
    image.write_bytes(b"")
    assert cli.main([str(tmp_path)]) == 0
    assert cli.main(["app", str(image)]) == 0
    assert cli.main([]) == 0
    assert opened == [[str(tmp_path)], [str(image)], []]


def test_label_moves_named_images_applies_a_table_and_undoes(tmp_path):
    data = tmp_path / "few"
    fgdesk("demo-data", data, "--classes", "3", "--per-class", "4", "--size", "48", "--unlabeled", "4")
    pool = data / "unlabeled"
    first, second, third, fourth = sorted(pool.iterdir())

    shown = fgdesk("label", data, first, "--as", "class_2_square", "--dry-run").stdout
    assert "would move unlabeled/img_0000.png -> train/class_2_square/img_0000.png" in shown and first.is_file()
    fgdesk("label", data, first, second, "--as", "class_2_square")
    assert {first.name, second.name} <= {p.name for p in (data / "train" / "class_2_square").iterdir()}
    assert not first.exists() and not second.exists()

    table = tmp_path / "labels.csv"
    table.write_text(f"path,label\n{third},class_0_circle\nunlabeled/{fourth.name},\n", encoding="utf-8")
    out = fgdesk("label", data, "--csv", table).stdout
    assert "1 image(s) labelled, 1 row(s) without a label" in out
    assert (data / "train" / "class_0_circle" / third.name).is_file() and fourth.is_file()

    summary = fgdesk("summary", data).stdout
    assert "(unlabeled)" in summary

    undone = fgdesk("label", data, "--undo", "2").stdout
    assert "undid 2 label(s)" in undone and third.is_file() and second.is_file() and not first.is_file()
    log = list(csv.DictReader((data / "fgdesk-labels.csv").open(encoding="utf-8")))
    assert [row["action"] for row in log] == ["label", "label", "label", "undo", "undo"]

    for args, expected in (
        (("label", data, fourth, "--as", "class_9"), "no class 'class_9'"),
        (("label", data, data / "train" / "class_2_square" / first.name, "--as", "class_2_square"), "already in class"),
        (("label", data, tmp_path / "labels.csv", "--as", "class_0_circle"), "neither an unlabeled/ folder nor a class"),
        (("label", data, fourth), "--as CLASS"),
        (("label", data), "exactly one of them"),
    ):
        refused = fgdesk(*args, check=False)
        assert refused.returncode in (1, 2) and expected in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert fourth.is_file()
    made = fgdesk("label", data, fourth, "--as", "class_9", "--new-class")
    assert (data / "train" / "class_9" / fourth.name).is_file(), made.stdout


def test_a_relative_data_folder_is_recorded_absolute(tmp_path, monkeypatch):
    """A run made with --data d must find d later from any folder (eval, suggest, label)."""
    from fgdesk.cli import build_parser, resolve_train_config
    from fgdesk.data.synthetic import make_demo_dataset

    make_demo_dataset(tmp_path / "d", num_classes=2, per_class=3, size=48)
    monkeypatch.chdir(tmp_path)
    config = resolve_train_config(build_parser().parse_args(["train", "--data", "d"]))
    assert config.data.path == str(tmp_path / "d")


def test_duplicates_lists_a_test_copy_of_a_training_image(tmp_path):
    from fgdesk.data.synthetic import make_demo_dataset

    data = make_demo_dataset(tmp_path / "demo", num_classes=3, per_class=8, size=64, seed=0)
    original = sorted((data / "train" / "class_1_triangle").iterdir())[0]
    copy = data / "test" / "class_1_triangle" / "copy.png"
    shutil.copy(original, copy)
    table = tmp_path / "copies.csv"
    shown = fgdesk_here("duplicates", data, "--csv", table).stdout
    assert "train and test: a test image with a copy among the images trained on" in shown, shown
    assert f"same photo    1.00  test/class_1_triangle/copy.png  =  train/class_1_triangle/{original.name}" in shown
    assert "1 pair of copies among 25 images (1 train and test)" in shown and "give a run folder" in shown
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert [(row["kind"], Path(row["path"]).name, row["copy_split"]) for row in rows] == [("train and test", "copy.png", "train")]
    # The copy is taken out of the dataset, so it is no longer found; undo brings it back.
    aside = fgdesk_here("label", data, copy, "--set-aside").stdout
    assert "set aside test/class_1_triangle/copy.png -> .fgdesk-set-aside/test/class_1_triangle/copy.png  " \
           "(was class_1_triangle)" in aside and "1 image(s) set aside" in aside, aside
    assert "0 pairs of copies among 24 images" in fgdesk_here("duplicates", data).stdout
    assert "undid 1 set-aside(s)" in fgdesk_here("label", data, "--undo").stdout and copy.is_file()
    refused = fgdesk_here("duplicates", tmp_path / "nowhere", check=False)
    assert refused.returncode == 2 and "is not a folder" in refused.stderr


def test_a_class_is_found_by_its_name_without_case_or_number_or_by_a_unique_part():
    from fgdesk.cli import CLIError, _class_named

    names = ["001.Tern", "002.Arctic_Tern", "020.Blue_Jay"]
    assert _class_named("002.Arctic_Tern", names, "--against") == "002.Arctic_Tern"
    assert _class_named("tern", names, "--against") == "001.Tern"  # whole name, though "Arctic_Tern" holds it
    assert _class_named("jay", names, "--against") == "020.Blue_Jay"
    with pytest.raises(CLIError, match="fits 2 classes"):
        _class_named("ter", names, "--against")
    with pytest.raises(CLIError, match="not one of the run's classes"):
        _class_named("Gull", names, "--against")
