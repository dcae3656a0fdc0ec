"""Dataset layouts: find out what a folder holds and index it as (path, label, split, box) rows.

`detect()` understands CUB-200-2011, FGVC-Aircraft, one-folder-per-class trees (with or
without train/val/test folders, and with an optional `unlabeled/` folder of images that
only pretraining uses) and plain folders of unlabeled images. It never decodes
pixels: with `check_images` it reads each header so that broken files are reported up
front as `Problem`s instead of surfacing halfway through training.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
import statistics
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fgdesk.data.images import IMAGE_EXTENSIONS, ImageDecodeError, is_image_file, probe_image

logger = logging.getLogger(__name__)

LAYOUTS = ("auto", "cub", "aircraft", "folders", "unlabeled")
AIRCRAFT_LEVELS = ("variant", "family", "manufacturer")
SPLITS = ("train", "val", "test", "unlabeled")
AIRCRAFT_BANNER_ROWS = 20  # copyright banner at the bottom of every FGVC-Aircraft image
TEST_FRACTION = 0.2  # folders without split folders: share hashed into the test split

Box = tuple[float, float, float, float]

_CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
_AIRCRAFT_CLASS_FILES = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
_SPLIT_FOLDER_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
# Next to class folders, these hold images without a label: the many-images-few-labels case,
# where pretraining should see every image and classification only the labelled ones.
UNLABELED_FOLDER_NAMES = ("unlabeled", "unlabelled")
UNLABELED_ROW = "(unlabeled)"


class DatasetError(Exception):
    """The folder is not a usable dataset; the message names the path and what is missing."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # -1: unlabeled
    split: str  # train | val | test | unlabeled
    box: Box | None = None  # (x0, y0, x1, y1) in decoded pixels, after the banner crop


@dataclass(frozen=True)
class Problem:
    path: Path
    reason: str


@dataclass
class DatasetSummary:
    layout: str
    num_classes: int
    num_images: int
    counts: dict[str, dict[str, int]]  # class name -> split -> images
    width: tuple[int, float, int] | None  # (min, median, max); None without probing
    height: tuple[int, float, int] | None
    num_problems: int

    def as_text(self) -> str:
        """A readable multi-line report: totals, image sizes and a class x split table."""
        lines = [
            f"Layout: {self.layout}   Classes: {self.num_classes}   Images: {self.num_images}   "
            f"Problems: {self.num_problems}"
        ]
        if self.width and self.height:
            lines.append(
                "Image size: width {} / {:g} / {}, height {} / {:g} / {} (min / median / max)".format(
                    *self.width, *self.height
                )
            )
        else:
            lines.append("Image size: not checked")
        splits = [s for s in SPLITS if any(per_split.get(s) for per_split in self.counts.values())]
        if not splits:
            return "\n".join(lines)
        name_width = max([len("class"), len("total")] + [len(name) for name in self.counts])
        columns = splits + ["total"]
        col_width = max(7, *(len(c) + 2 for c in columns))
        lines.append("class".ljust(name_width) + "".join(c.rjust(col_width) for c in columns))
        totals = dict.fromkeys(splits, 0)
        for name, per_split in self.counts.items():
            row = [per_split.get(s, 0) for s in splits]
            for s, n in zip(splits, row):
                totals[s] += n
            lines.append(name.ljust(name_width) + "".join(str(n).rjust(col_width) for n in row + [sum(row)]))
        total_row = [totals[s] for s in splits]
        lines.append(
            "total".ljust(name_width) + "".join(str(n).rjust(col_width) for n in total_row + [sum(total_row)])
        )
        return "\n".join(lines)


@dataclass
class DatasetIndex:
    root: Path
    layout: str
    classes: list[str]
    samples: list[Sample]
    problems: list[Problem]
    crop_bottom: int = 0
    # Displayed (width, height) per probed file, before the banner crop; empty without probing.
    image_sizes: dict[Path, tuple[int, int]] = field(default_factory=dict, repr=False)

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def train_samples(self) -> list[Sample]:
        """What pretraining sees: train + val + unlabeled images; every image for an unlabeled folder.

        Never the test split. Unlabeled images (label -1) are included; callers that need
        labels keep `label >= 0`.
        """
        if not self.labelled():
            return list(self.samples)
        return [s for s in self.samples if s.split in ("train", "val", "unlabeled")]

    def test_samples(self) -> list[Sample]:
        return self.split("test")

    def labelled(self) -> bool:
        return bool(self.classes) and any(s.label >= 0 for s in self.samples)

    def summary(self) -> DatasetSummary:
        """Counts per class and split; unlabeled images, when there are any, form the last row."""
        counts: dict[str, dict[str, int]] = {name: {} for name in self.classes}
        for sample in self.samples:
            if 0 <= sample.label < len(self.classes):
                name = self.classes[sample.label]
            elif sample.label < 0:
                name = UNLABELED_ROW
            else:
                continue
            per_split = counts.setdefault(name, {})
            per_split[sample.split] = per_split.get(sample.split, 0) + 1
        if not counts:
            counts[UNLABELED_ROW] = {}
        sizes = [self.image_sizes[s.path] for s in self.samples if s.path in self.image_sizes]
        width = height = None
        if sizes:
            widths = [w for w, _ in sizes]
            heights = [h - self.crop_bottom for _, h in sizes]
            width = (min(widths), float(statistics.median(widths)), max(widths))
            height = (min(heights), float(statistics.median(heights)), max(heights))
        return DatasetSummary(
            layout=self.layout,
            num_classes=len(self.classes),
            num_images=len(self.samples),
            counts=counts,
            width=width,
            height=height,
            num_problems=len(self.problems),
        )


# -- entry point ---------------------------------------------------------------


def detect(
    path: str | os.PathLike[str],
    layout: str = "auto",
    level: str = "variant",
    check_images: bool = True,
) -> DatasetIndex:
    """Index the dataset at `path`. `layout="auto"` tries cub, aircraft, folders, unlabeled."""
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if level not in AIRCRAFT_LEVELS:
        raise DatasetError(f"unknown FGVC-Aircraft label level {level!r}; choose one of {', '.join(AIRCRAFT_LEVELS)}")
    root = _check_folder(Path(path).expanduser())

    if layout in ("auto", "cub"):
        cub_root = _find_cub_root(root, required=layout == "cub")
        if cub_root is not None:
            index = _index_cub(cub_root)
            return _finish(index, check_images)
    if layout in ("auto", "aircraft"):
        data_dir = _find_aircraft_dir(root, required=layout == "aircraft")
        if data_dir is not None:
            return _finish(_index_aircraft(data_dir, level), check_images)
    if layout in ("auto", "folders"):
        index = _index_folders(root, required=layout == "folders")
        if index is not None:
            return _finish(index, check_images)
    index = _index_unlabeled(root)
    if not index.samples:
        looked_for = (
            "CUB-200-2011 (images.txt, classes.txt, ...), FGVC-Aircraft (data/images_variant_train.txt, ...), "
            "class folders, and image files"
            if layout == "auto"
            else "image files"
        )
        raise DatasetError(
            f"no images found in {root}: looked for {looked_for} "
            f"with extensions {', '.join(sorted(IMAGE_EXTENSIONS))} (hidden files are ignored)"
        )
    return _finish(index, check_images)


def _check_folder(root: Path) -> Path:
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a folder; choose the folder that holds the images")
    if not os.access(root, os.R_OK | os.X_OK):
        raise DatasetError(f"dataset folder {root} cannot be read (permission denied)")
    return root


def _finish(index: DatasetIndex, check_images: bool) -> DatasetIndex:
    """Probe headers when asked; unreadable files move from samples to problems."""
    if check_images:
        kept: list[Sample] = []
        for sample in index.samples:
            try:
                index.image_sizes[sample.path] = probe_image(sample.path)
            except ImageDecodeError as exc:
                index.problems.append(Problem(sample.path, exc.reason))
                continue
            kept.append(sample)
        index.samples = kept
        _clip_boxes_to_images(index)
    if index.problems:
        logger.info("%s: %d problem(s) while indexing %s", index.layout, len(index.problems), index.root)
    return index


def _clip_boxes_to_images(index: DatasetIndex) -> None:
    """Boxes must stay inside the image that remains after the banner crop."""
    clipped = []
    for sample in index.samples:
        size = index.image_sizes.get(sample.path)
        if sample.box is not None and size is not None:
            width, height = size[0], size[1] - index.crop_bottom
            x0, y0, x1, y1 = sample.box
            box = (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(x1, width), min(y1, height))
            sample = Sample(sample.path, sample.label, sample.split, box if box[2] > box[0] and box[3] > box[1] else None)
        clipped.append(sample)
    index.samples = clipped


# -- CUB-200-2011 ---------------------------------------------------------------


def _find_cub_root(root: Path, required: bool) -> Path | None:
    """root itself or root/CUB_200_2011, when it holds images.txt; explain what is missing."""
    for candidate in (root, root / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            missing = [name for name in _CUB_FILES if not (candidate / name).is_file()]
            if not (candidate / "images").is_dir():
                missing.append("images/")
            if missing:
                raise DatasetError(
                    f"{candidate}: images.txt is present but {', '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} missing (CUB-200-2011 needs {', '.join(_CUB_FILES)} and images/)"
                )
            return candidate
    if required:
        raise DatasetError(
            f"{root} is not a CUB-200-2011 folder: looked for images.txt, image_class_labels.txt, "
            f"train_test_split.txt, classes.txt and images/ in {root} and {root / 'CUB_200_2011'}"
        )
    return None


def _read_pairs(path: Path, value_count: int = 1) -> Iterator[tuple[int, list[str], int]]:
    """Yield (line number, fields, first field as int) for 'id value...' lines; blank lines skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = line.split(maxsplit=value_count)
        try:
            if len(fields) != value_count + 1:
                raise ValueError
            yield number, fields[1:], int(fields[0])
        except ValueError:
            raise DatasetError(f"{path}, line {number}: expected an id and {value_count} value(s), got {line!r}") from None


def _index_cub(cub_root: Path) -> DatasetIndex:
    class_names: dict[int, str] = {}
    for _, (name,), class_id in _read_pairs(cub_root / "classes.txt"):
        class_names[class_id] = name
    class_ids = sorted(class_names)  # ids may be a non-contiguous subset (e.g. 50 of 200)
    label_of = {class_id: label for label, class_id in enumerate(class_ids)}

    image_paths = {image_id: rel for _, (rel,), image_id in _read_pairs(cub_root / "images.txt")}
    image_class = {}
    for number, (value,), image_id in _read_pairs(cub_root / "image_class_labels.txt"):
        image_class[image_id] = _parse_int(value, cub_root / "image_class_labels.txt", number)
    is_train = {}
    for number, (value,), image_id in _read_pairs(cub_root / "train_test_split.txt"):
        is_train[image_id] = _parse_int(value, cub_root / "train_test_split.txt", number) == 1
    boxes: dict[int, Box] = {}
    box_file = cub_root / "bounding_boxes.txt"
    if box_file.is_file():
        for number, values, image_id in _read_pairs(box_file, value_count=4):
            try:
                x, y, w, h = (float(v) for v in values)
            except ValueError:
                raise DatasetError(f"{box_file}, line {number}: expected 'id x y width height'") from None
            boxes[image_id] = (x, y, x + w, y + h)

    samples: list[Sample] = []
    problems: list[Problem] = []
    images_dir = cub_root / "images"
    for image_id in sorted(image_paths):
        path = images_dir / image_paths[image_id]
        class_id = image_class.get(image_id)
        if class_id is None:
            problems.append(Problem(path, f"image id {image_id} has no class in image_class_labels.txt"))
        elif class_id not in label_of:
            problems.append(Problem(path, f"class id {class_id} is not listed in classes.txt"))
        elif image_id not in is_train:
            problems.append(Problem(path, f"image id {image_id} has no entry in train_test_split.txt"))
        elif not path.is_file():
            problems.append(Problem(path, "listed in images.txt but the file is missing"))
        else:
            split = "train" if is_train[image_id] else "test"
            samples.append(Sample(path, label_of[class_id], split, boxes.get(image_id)))
    _report_empty_classes([class_names[c] for c in class_ids], samples, images_dir, problems)
    return DatasetIndex(cub_root, "cub", [class_names[c] for c in class_ids], samples, problems)


def _parse_int(value: str, path: Path, number: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{path}, line {number}: {value!r} is not a whole number") from None


# -- FGVC-Aircraft ----------------------------------------------------------------


def _find_aircraft_dir(root: Path, required: bool) -> Path | None:
    """The fgvc-aircraft-2013b/data folder, given it, fgvc-aircraft-2013b, or their parent."""
    for candidate in (root, root / "data", root / "fgvc-aircraft-2013b" / "data"):
        if any((candidate / f"images_variant_{split}.txt").is_file() for split in ("train", "trainval", "test")):
            missing = [name for name in ("variants.txt",) if not (candidate / name).is_file()]
            if not (candidate / "images").is_dir():
                missing.append("images/")
            if missing:
                raise DatasetError(
                    f"{candidate}: images_variant_*.txt is present but {', '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} missing (FGVC-Aircraft layout)"
                )
            return candidate
    if required:
        raise DatasetError(
            f"{root} is not an FGVC-Aircraft folder: looked for images/ and images_variant_train.txt "
            f"in {root}, {root / 'data'} and {root / 'fgvc-aircraft-2013b' / 'data'}"
        )
    return None


def _index_aircraft(data_dir: Path, level: str) -> DatasetIndex:
    class_file = data_dir / _AIRCRAFT_CLASS_FILES[level]
    if not class_file.is_file():
        raise DatasetError(f"{class_file} is missing; it lists the {level} names of FGVC-Aircraft")
    # Same class order as torchvision.datasets.FGVCAircraft: the order of the names file.
    classes = [line.strip() for line in _read_text(class_file).splitlines() if line.strip()]
    label_of = {name: label for label, name in enumerate(classes)}

    split_files = {split: data_dir / f"images_{level}_{split}.txt" for split in ("train", "val", "test")}
    if not split_files["train"].is_file() and (data_dir / f"images_{level}_trainval.txt").is_file():
        split_files["train"] = data_dir / f"images_{level}_trainval.txt"
        split_files.pop("val")
    if not any(p.is_file() for p in split_files.values()):
        raise DatasetError(f"no images_{level}_train.txt / _val.txt / _test.txt in {data_dir}")

    boxes = _read_aircraft_boxes(data_dir / "images_box.txt")
    images_dir = data_dir / "images"
    samples: list[Sample] = []
    problems: list[Problem] = []
    for split, split_file in split_files.items():
        if not split_file.is_file():
            logger.info("FGVC-Aircraft: %s is missing; no %s images", split_file, split)
            continue
        for number, line in enumerate(_read_text(split_file).splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            image_name, _, label_name = line.partition(" ")  # names may contain spaces
            path = images_dir / f"{image_name}.jpg"
            if label_name not in label_of:
                problems.append(Problem(path, f"{split_file.name}, line {number}: unknown {level} {label_name!r}"))
            elif not path.is_file():
                problems.append(Problem(path, f"listed in {split_file.name} but the file is missing"))
            else:
                samples.append(Sample(path, label_of[label_name], split, boxes.get(image_name)))
    _report_empty_classes(classes, samples, data_dir, problems)
    return DatasetIndex(data_dir, "aircraft", classes, samples, problems, crop_bottom=AIRCRAFT_BANNER_ROWS)


def _read_aircraft_boxes(path: Path) -> dict[str, Box]:
    """images_box.txt: 'name xmin ymin xmax ymax', 1-based inclusive pixels."""
    boxes: dict[str, Box] = {}
    if not path.is_file():
        return boxes
    for line in _read_text(path).splitlines():
        fields = line.split()
        if len(fields) != 5:
            continue
        try:
            x0, y0, x1, y1 = (float(v) for v in fields[1:])
        except ValueError:
            continue
        boxes[fields[0]] = (x0 - 1.0, y0 - 1.0, x1, y1)
    return boxes


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc


# -- class folders -----------------------------------------------------------------


def _index_folders(root: Path, required: bool) -> DatasetIndex | None:
    entries, problems = _list_dir(root)
    subdirs = {name: path for name, path, is_dir in entries if is_dir}
    unlabeled_dirs = [path for name, path in subdirs.items() if name.lower() in UNLABELED_FOLDER_NAMES]
    subdirs = {name: path for name, path in subdirs.items() if name.lower() not in UNLABELED_FOLDER_NAMES}
    split_dirs = {}
    for name, path in subdirs.items():
        split = _SPLIT_FOLDER_NAMES.get(name.lower())
        if split is not None and split not in split_dirs:
            split_dirs[split] = path
    if "train" in split_dirs or ("test" in split_dirs and len(split_dirs) > 1):
        return _with_unlabeled_and_boxes(_index_split_folders(root, split_dirs, problems, required), unlabeled_dirs)

    # One folder per class directly under root.
    class_images: dict[str, list[Path]] = {}
    for name in sorted(subdirs):
        images, walk_problems = walk_images(subdirs[name])
        problems.extend(walk_problems)
        class_images[name] = images
    non_empty = [name for name, images in class_images.items() if images]
    if len(non_empty) < (1 if required else 2):
        if required:
            raise DatasetError(
                f"{root} has no class folders with images: expected one subfolder per class "
                "(optionally under train/ and test/)"
            )
        return None
    for name, path, is_dir in entries:
        if not is_dir and is_image_file(name):
            problems.append(Problem(path, "image is not inside a class folder; ignored"))

    classes = sorted(class_images)
    samples: list[Sample] = []
    for label, name in enumerate(classes):
        images = class_images[name]
        if not images:
            problems.append(Problem(subdirs[name], "class folder has no images"))
            continue
        samples.extend(_hash_split(root, images, label))
    return _with_unlabeled_and_boxes(DatasetIndex(root, "folders", classes, samples, problems), unlabeled_dirs)


def _with_unlabeled_and_boxes(index: DatasetIndex | None, folders: list[Path]) -> DatasetIndex | None:
    """Images under `unlabeled/` (any depth) join the index with label -1, split "unlabeled";
    then boxes.csv gives boxes to every image it names."""
    if index is None:
        return None
    for folder in folders:
        images, problems = walk_images(folder)
        index.problems.extend(problems)
        index.samples.extend(Sample(path, -1, "unlabeled") for path in images)
    _apply_boxes_csv(index.root, index.samples, index.problems)
    return index


def _index_split_folders(
    root: Path, split_dirs: dict[str, Path], problems: list[Problem], required: bool
) -> DatasetIndex | None:
    per_split: dict[str, dict[str, list[Path]]] = {}
    class_dirs: dict[str, Path] = {}
    unlabeled: list[Path] = []
    for split, split_dir in split_dirs.items():
        entries, list_problems = _list_dir(split_dir)
        problems.extend(list_problems)
        per_split[split] = {}
        for name, path, is_dir in entries:
            if is_dir and name.lower() in UNLABELED_FOLDER_NAMES:  # train/unlabeled/: not a class
                images, walk_problems = walk_images(path)
                problems.extend(walk_problems)
                unlabeled.extend(images)
            elif is_dir:
                images, walk_problems = walk_images(path)
                problems.extend(walk_problems)
                per_split[split][name] = images
                class_dirs.setdefault(name, path)
            elif is_image_file(name):
                problems.append(Problem(path, f"image is not inside a class folder of {split}/; ignored"))
    classes = sorted(class_dirs)
    if not any(images for by_class in per_split.values() for images in by_class.values()):
        if required:
            raise DatasetError(
                f"{root} has split folders ({', '.join(p.name for p in split_dirs.values())}) "
                "but no class folders with images inside them"
            )
        return None
    label_of = {name: label for label, name in enumerate(classes)}
    # train/ + val/ without test/ (the ImageNet way): val is what the scores are measured on.
    split_names = {"train": "train", "val": "test" if "test" not in per_split else "val", "test": "test"}
    if "test" not in per_split and "val" in per_split:
        logger.info("%s has no test/ folder: its val/ images are the test split", root)
    samples: list[Sample] = []
    for split in ("train", "val", "test"):
        for name, images in sorted(per_split.get(split, {}).items()):
            samples.extend(Sample(path, label_of[name], split_names[split]) for path in images)
    for name in classes:
        if not any(per_split[s].get(name) for s in per_split):
            problems.append(Problem(class_dirs[name], "class folder has no images"))
    samples.extend(Sample(path, -1, "unlabeled") for path in unlabeled)
    return DatasetIndex(root, "folders", classes, samples, problems)


def _hash_split(root: Path, images: list[Path], label: int) -> list[Sample]:
    """Stable ~20% test split by a hash of the relative path; keeps >= 1 training image per class."""
    scored = []
    for path in images:
        rel = relative_key(root, path)
        digest = hashlib.sha1(rel.encode("utf-8")).digest()
        scored.append((int.from_bytes(digest[:8], "big") / 2**64, path))
    splits = ["test" if score < TEST_FRACTION else "train" for score, _ in scored]
    if "train" not in splits:
        # Highest score is the one "closest" to train; moving it keeps the choice stable.
        best = max(range(len(scored)), key=lambda i: scored[i][0])
        splits[best] = "train"
    return [Sample(path, label, split) for (_, path), split in zip(scored, splits)]


def relative_key(root: Path, path: Path) -> str:
    """Forward-slash, NFC-normalised relative path (macOS stores names decomposed)."""
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = path.as_posix()
    return unicodedata.normalize("NFC", rel)


def _apply_boxes_csv(root: Path, samples: list[Sample], problems: list[Problem]) -> None:
    """Optional boxes.csv (path,x0,y0,x1,y1; path relative to root) attaches boxes in place."""
    csv_path = root / "boxes.csv"
    if not csv_path.is_file():
        return
    boxes: dict[str, Box] = {}
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return
            names = [h.strip().lower() for h in header]
            if names[:5] != ["path", "x0", "y0", "x1", "y1"]:
                problems.append(Problem(csv_path, "header must be path,x0,y0,x1,y1; boxes ignored"))
                return
            for row in reader:
                if not row or not "".join(row).strip():
                    continue
                try:
                    x0, y0, x1, y1 = (float(v) for v in row[1:5])
                    if len(row) < 5 or not (x1 > x0 and y1 > y0):
                        raise ValueError
                except ValueError:
                    problems.append(Problem(csv_path, f"line {reader.line_num}: bad box {row!r}; ignored"))
                    continue
                key = row[0].strip().replace("\\", "/")
                key = unicodedata.normalize("NFC", key[2:] if key.startswith("./") else key)
                boxes[key] = (x0, y0, x1, y1)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(Problem(csv_path, f"cannot read boxes: {exc}"))
        return
    for i, sample in enumerate(samples):
        box = boxes.get(relative_key(root, sample.path))
        if box is not None:
            samples[i] = Sample(sample.path, sample.label, sample.split, box)


# -- unlabeled ----------------------------------------------------------------------


def _index_unlabeled(root: Path) -> DatasetIndex:
    images, problems = walk_images(root)
    samples = [Sample(path, -1, "unlabeled") for path in images]
    return DatasetIndex(root, "unlabeled", [], samples, problems)


def walk_images(top: Path) -> tuple[list[Path], list[Problem]]:
    """Image files under `top`, recursively and sorted; follows folder links without looping."""
    images: list[Path] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    try:
        seen.add(os.path.realpath(top))
    except OSError:
        pass
    stack = [top]
    while stack:
        folder = stack.pop()
        entries, list_problems = _list_dir(folder)
        problems.extend(list_problems)
        subfolders = []
        for name, path, is_dir in entries:
            if is_dir:
                real = os.path.realpath(path)
                if real in seen:
                    logger.debug("skipping %s: already visited (link loop or duplicate link)", path)
                    continue
                seen.add(real)
                subfolders.append(path)
            elif is_image_file(name):
                images.append(path)
        stack.extend(reversed(subfolders))  # depth-first, in name order
    images.sort()
    return images, problems


def _list_dir(folder: Path) -> tuple[list[tuple[str, Path, bool]], list[Problem]]:
    """Visible entries of `folder` as (name, path, is_dir), sorted; hidden names are skipped."""
    entries: list[tuple[str, Path, bool]] = []
    problems: list[Problem] = []
    try:
        with os.scandir(folder) as iterator:
            for entry in iterator:
                name = entry.name
                if name.startswith("."):
                    continue
                path = folder / name
                try:
                    if entry.is_dir():  # follows links
                        entries.append((name, path, True))
                    elif entry.is_file():
                        entries.append((name, path, False))
                    elif is_image_file(name):
                        problems.append(Problem(path, "broken link or not a regular file"))
                except OSError as exc:
                    problems.append(Problem(path, f"cannot be read ({exc.strerror or exc})"))
    except PermissionError:
        problems.append(Problem(folder, "folder cannot be read (permission denied)"))
    except OSError as exc:
        problems.append(Problem(folder, f"folder cannot be read ({exc.strerror or exc})"))
    entries.sort(key=lambda e: e[0])
    return entries, problems


def _report_empty_classes(classes: Iterable[str], samples: list[Sample], where: Path, problems: list[Problem]) -> None:
    used = {s.label for s in samples}
    for label, name in enumerate(classes):
        if label not in used:
            problems.append(Problem(where / name, "class has no images"))
