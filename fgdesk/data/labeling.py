"""Giving labels: move images from a class-folder dataset's unlabeled/ folder into class
folders, correct a wrong label by moving an image from one class folder to another, and set
an image aside (a copy of another, say) by moving it out of the dataset's view.

A label is where the file lives, so labelling moves the file beside its peers and every
part of fgdesk (the browser, the classifier, the scores) sees it on the next index. Moves
never overwrite a file, and each one is appended to `fgdesk-labels.csv` at the dataset's
root (time, action, class, from, to, user), so every label can be traced and undone, in the
app or with `fgdesk label --undo`.

Only class-folder datasets take labels this way: CUB-200-2011 and FGVC-Aircraft keep
theirs in text files that fgdesk reads but does not edit.
"""
from __future__ import annotations

import csv
import errno
import io
import logging
import os
import shutil
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fgdesk.data.layouts import (
    _SPLIT_FOLDER_NAMES,
    UNLABELED_FOLDER_NAMES,
    DatasetError,
    _find_aircraft_dir,
    _find_cub_root,
    _list_dir,
    relative_key,
)
from fgdesk.fileio import atomic_write_text

log = logging.getLogger(__name__)

LABEL_LOG = "fgdesk-labels.csv"
# Inside the dataset, so nothing is written elsewhere, and hidden, so no layout indexes it.
SET_ASIDE_FOLDER = ".fgdesk-set-aside"
_LOG_HEADER = ["time", "action", "class", "from", "to", "user", "made"]  # made: folders the label created
_FORBIDDEN_IN_NAMES = set('\\/:*?"<>|')  # not in a folder name on Windows, or a path separator anywhere
_WINDOWS_DEVICE_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}


class LabelingError(DatasetError):
    """A label cannot be given; the message says why and what to do."""


@dataclass(frozen=True)
class LabelMove:
    """One labelled image: it was at `source` (in an unlabeled folder, or in the folder of
    `previous_class` when a label was corrected) and is now at `target`."""

    source: Path
    target: Path
    class_name: str
    created: tuple[Path, ...] = field(default=(), compare=False)  # folders made for it, outermost first
    previous_class: str = field(default="", compare=False)  # "" for an image that had no label
    set_aside: bool = field(default=False, compare=False)  # moved out of the dataset: class_name is ""

    @property
    def action(self) -> str:
        if self.set_aside:
            return "set aside"
        return "relabel" if self.previous_class else "label"


@dataclass(frozen=True)
class LabelConfirmation:
    """A label checked by a person and kept as it is: the label check lists the image no more."""

    image: Path
    class_name: str


class DatasetLabeler:
    """The class folders of one dataset and the moves that label its unlabeled images."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root = Path(os.path.abspath(Path(root).expanduser()))
        if not root.is_dir():
            raise LabelingError(f"dataset folder {root} does not exist")
        if _find_cub_root(root, required=False) is not None:
            raise LabelingError(
                f"{root} is a CUB-200-2011 dataset, whose labels live in its text files; fgdesk gives labels "
                "only to datasets of class folders (one folder per class, plus unlabeled/)")
        if _find_aircraft_dir(root, required=False) is not None:
            raise LabelingError(
                f"{root} is an FGVC-Aircraft dataset, whose labels live in its text files; fgdesk gives labels "
                "only to datasets of class folders (one folder per class, plus unlabeled/)")
        self.root = root
        entries, _ = _list_dir(root)
        folders = {name: path for name, path, is_dir in entries if is_dir}
        self._unlabeled = [path for name, path in folders.items() if name.lower() in UNLABELED_FOLDER_NAMES]
        self.split_dirs: dict[str, Path] = {}
        for name, path in folders.items():
            split = _SPLIT_FOLDER_NAMES.get(name.lower())
            if split is not None and split not in self.split_dirs:
                self.split_dirs[split] = path
        self.has_splits = "train" in self.split_dirs or ("test" in self.split_dirs and len(self.split_dirs) > 1)
        names: set[str] = set()
        for parent in list(self.split_dirs.values()) if self.has_splits else [root]:
            for name, path, is_dir in _list_dir(parent)[0]:
                if not is_dir:
                    continue
                if name.lower() in UNLABELED_FOLDER_NAMES:
                    if parent != root:
                        self._unlabeled.append(path)  # train/unlabeled/
                elif parent != root or name.lower() not in _SPLIT_FOLDER_NAMES:
                    names.add(name)
        self.classes = sorted(names)
        self._resolved: dict[Path, Path] = {}
        self._planned: dict[Path, Path] = {}  # dry-run moves so far: source -> target
        self.warnings: list[str] = []  # done, but not all of it: a move missing from the log, a box left behind

    @property
    def unlabeled_folders(self) -> list[Path]:
        return list(self._unlabeled)

    @property
    def log_path(self) -> Path:
        return self.root / LABEL_LOG

    # ------------------------------------------------------------------ where a label puts a file
    def is_unlabeled(self, image: str | os.PathLike[str]) -> bool:
        return self._unlabeled_folder_of(Path(image)) is not None

    def class_of(self, image: str | os.PathLike[str]) -> str | None:
        """The class whose folder holds `image` (its label), or None outside the class folders."""
        found = self._class_folder_of(Path(os.path.abspath(Path(image).expanduser())))
        return found[1] if found is not None else None

    def _inside(self, resolved: Path, folder: Path) -> Path | None:
        """`resolved`'s path inside `folder` (resolved once, then remembered), or None outside it."""
        if folder not in self._resolved:
            self._resolved[folder] = _resolve(folder)
        try:
            return resolved.relative_to(self._resolved[folder])
        except ValueError:
            return None

    def _class_folder_of(self, image: Path) -> tuple[Path, str, Path] | None:
        """(the folder holding the class folders, the class, the image's path inside its class
        folder) for an image in a class folder, or None."""
        resolved = _resolve(image.parent) / image.name
        parents = list(self.split_dirs.values()) if self.has_splits else [self.root]
        for parent in parents:
            inside = self._inside(resolved, parent)
            if inside is None or len(inside.parts) < 2:
                continue
            name = inside.parts[0]
            lowered = name.lower()
            if lowered in UNLABELED_FOLDER_NAMES or (not self.has_splits and lowered in _SPLIT_FOLDER_NAMES):
                continue
            if name in self.classes:
                return parent, name, Path(*inside.parts[1:])
        return None

    def _unlabeled_folder_of(self, image: Path) -> tuple[Path, Path] | None:
        """(the unlabeled folder holding `image`, the image's path inside it), or None."""
        resolved = _resolve(image.parent) / image.name  # the file itself may be a link to elsewhere
        for folder in self._unlabeled:
            inside = self._inside(resolved, folder)
            if inside is not None and inside.parts:
                return folder, inside
        return None

    def check_class_name(self, name: str, allow_new: bool = False) -> str:
        """The folder name for class `name`: an existing class's own spelling, or a new valid name."""
        name = unicodedata.normalize("NFC", name.strip())
        for known in self.classes:
            if unicodedata.normalize("NFC", known) == name:
                return known
        for known in self.classes:  # one folder on case-insensitive disks: never make a second
            if unicodedata.normalize("NFC", known).casefold() == name.casefold():
                return known
        if not name:
            raise LabelingError("the class name is empty")
        if (any(c in _FORBIDDEN_IN_NAMES or ord(c) < 32 for c in name) or name.startswith(".")
                or name.endswith((" ", ".")) or name.split(".")[0].upper() in _WINDOWS_DEVICE_NAMES):
            raise LabelingError(
                f"{name!r} cannot be a class folder's name on every system: no \\ / : * ? \" < > |, no leading dot, "
                "no trailing dot or space, and not a device name such as CON or COM1")
        if name.lower() in UNLABELED_FOLDER_NAMES or name.lower() in _SPLIT_FOLDER_NAMES:
            raise LabelingError(f"{name!r} is reserved: fgdesk reads a folder of that name as a split or as unlabeled images")
        if not allow_new:
            raise LabelingError(
                f"{self.root} has no class {name!r}; its classes are {', '.join(self.classes) or 'none yet'}. "
                "Make a new class explicitly (--new-class on the command line)")
        return name

    def destination(self, image: str | os.PathLike[str], class_name: str, allow_new: bool = False,
                    taken: frozenset[Path] | set[Path] = frozenset()) -> Path:
        """Where labelling `image` as `class_name` puts it, keeping any subfolders: for an
        unlabeled image, the class folder beside its unlabeled folder (train/ when unlabeled/
        sits beside split folders); for a labelled one, the other class folder of the same
        split, so a test image stays a test image."""
        return self._destination(Path(image), class_name, allow_new, taken)[0]

    def _destination(self, image: Path, class_name: str, allow_new: bool,
                     taken: frozenset[Path] | set[Path] = frozenset()) -> tuple[Path, str]:
        """(destination, the class the image has now: "" when unlabeled)."""
        found = self._unlabeled_folder_of(image)
        previous = ""
        if found is not None:
            folder, inside = found
            parent = folder.parent
            if parent == self.root and self.has_splits:
                if "train" not in self.split_dirs:
                    raise LabelingError(f"{self.root} has split folders but no train/ folder to put labelled images in")
                parent = self.split_dirs["train"]
        else:
            held = self._class_folder_of(image)
            if held is None:
                raise LabelingError(
                    f"{image} is in neither an unlabeled/ folder nor a class folder of {self.root}; only the "
                    "dataset's own images can be given a label")
            parent, previous, inside = held
        name = self.check_class_name(class_name, allow_new=allow_new)
        if name == previous:
            raise LabelingError(f"{image} is already in class {name}")
        class_dir = next((path for n, path, is_dir in _list_dir(parent)[0] if is_dir and n == name), parent / name)
        return _free_name(class_dir / inside, taken), previous

    def plan(self, image: str | os.PathLike[str], class_name: str, allow_new: bool = False) -> LabelMove:
        """The move `assign` would make, checked the same way; nothing is moved (a dry run).

        Plans on one labeler add up as the real moves would: a later plan does not claim a
        name an earlier one took (it gets `-2`, as the move would), a class a plan makes is
        known to the later ones, and an image is planned once.
        """
        source = Path(os.path.abspath(Path(image).expanduser()))
        if not source.is_file():
            raise LabelingError(f"{source} does not exist")
        if source in self._planned:
            raise LabelingError(f"{source} is already planned to move to {self._planned[source]}; an image takes one label")
        target, previous = self._destination(source, class_name, allow_new, taken=set(self._planned.values()))
        move = LabelMove(source, target, self.check_class_name(class_name, allow_new=allow_new), previous_class=previous)
        self._planned[source] = move.target
        if move.class_name not in self.classes:  # as `assign` does: a later row finds the new class
            self.classes = sorted([*self.classes, move.class_name])
        return move

    # ------------------------------------------------------------------ moving
    def assign(self, image: str | os.PathLike[str], class_name: str, allow_new: bool = False) -> LabelMove:
        """Label `image` as `class_name` by moving it into the class folder; never overwrites.
        An image in another class folder moves from there: its label is corrected."""
        source = Path(os.path.abspath(Path(image).expanduser()))  # the log must name it from the root
        if not source.is_file():
            raise LabelingError(f"{source} no longer exists (moved or deleted since it was listed)")
        target, previous = self._destination(source, class_name, allow_new)
        name = self.check_class_name(class_name, allow_new=allow_new)
        created = _move_into_new_folders(source, target)
        if name not in self.classes:
            self.classes = sorted([*self.classes, name])
        move = LabelMove(source, target, name, tuple(created), previous_class=previous)
        self._move_box(source, target)
        self._log(move.action, move)
        return move

    def set_aside(self, image: str | os.PathLike[str]) -> LabelMove:
        """Take `image` out of the dataset: it moves, keeping its path, into the hidden
        SET_ASIDE_FOLDER at the root, which no layout indexes. Nothing is deleted; the log
        says where it went, and `undo` puts it back."""
        source = Path(os.path.abspath(Path(image).expanduser()))
        if not source.is_file():
            raise LabelingError(f"{source} no longer exists (moved or deleted since it was listed)")
        previous = self.class_of(source)
        if previous is None and not self.is_unlabeled(source):
            raise LabelingError(f"{source} is in neither a class folder nor an unlabeled/ folder of {self.root}; "
                                "only the dataset's own images can be set aside")
        inside = self._inside(_resolve(source.parent) / source.name, self.root)
        target = _free_name(self.root / SET_ASIDE_FOLDER / (inside if inside is not None else source.name))
        created = _move_into_new_folders(source, target)
        move = LabelMove(source, target, "", tuple(created), previous_class=previous or "", set_aside=True)
        self._move_box(source, target)
        self._log(move.action, move)
        return move

    def confirm(self, image: str | os.PathLike[str]) -> LabelConfirmation:
        """Record that the label of `image` was checked and is right (a `confirm` line in the
        log), so the label check lists it no more; nothing moves."""
        path = Path(os.path.abspath(Path(image).expanduser()))
        if not path.is_file():
            raise LabelingError(f"{path} no longer exists (moved or deleted since it was listed)")
        name = self.class_of(path)
        if name is None:
            raise LabelingError(f"{path} is not in a class folder of {self.root}; only a label can be kept")
        confirmation = LabelConfirmation(path, name)
        self._log("confirm", LabelMove(path, path, name))
        return confirmation

    def undo(self, move: LabelMove | LabelConfirmation) -> Path:
        """Put a labelled image back where it was; folders the label made are removed when empty.
        A confirmation is taken back: the label check may list the image again."""
        if isinstance(move, LabelConfirmation):
            self._log("unconfirm", LabelMove(move.image, move.image, move.class_name))
            return move.image
        if not move.target.is_file():
            raise LabelingError(f"{move.target} is no longer there; it cannot be moved back")
        try:
            move.source.parent.mkdir(parents=True, exist_ok=True)
            _move_without_overwrite(move.target, move.source)
        except FileExistsError as exc:
            raise LabelingError(f"cannot move {move.target} back: {move.source} exists again") from exc
        except OSError as exc:
            raise LabelingError(f"cannot move {move.target} back to {move.source}: {exc.strerror or exc}") from exc
        _remove_empty(list(move.created))  # only folders the label made: a class folder made by hand stays
        self._move_box(move.target, move.source)
        self._log("undo", move)
        return move.source

    def undo_last(self, count: int = 1) -> tuple[list[LabelMove], list[str]]:
        """Undo the last `count` labels recorded in the log, newest first: (undone, why others
        could not be). One that cannot be undone does not stop the others."""
        undone, errors = [], []
        for move in reversed(self.logged_moves()[-count:] if count > 0 else []):
            try:
                self.undo(move)
                undone.append(move)
            except LabelingError as exc:
                errors.append(str(exc))
        return undone, errors

    def logged_moves(self) -> list[LabelMove]:
        """The labels in the log that have not been undone, oldest first."""
        if not self.log_path.is_file():
            return []
        moves: list[LabelMove] = []
        with open(self.log_path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                try:
                    made = tuple(self.root / part for part in (row.get("made") or "").split("|") if part)
                    action = row["action"]
                    source = self.root / row["from"]
                    # The class it had is where it came from (the log keeps the paths, not the class).
                    previous = (self.class_of(source) or "an unknown class") if action == "relabel" else ""
                    if action == "set aside":
                        move = LabelMove(source, self.root / row["to"], "", made, previous_class=row["class"],
                                         set_aside=True)
                    else:
                        move = LabelMove(source, self.root / row["to"], row["class"], made, previous_class=previous)
                except (KeyError, TypeError, AttributeError):
                    continue  # a damaged line: the others still count
                if action in ("label", "relabel", "set aside"):
                    moves.append(move)
                elif action == "undo":
                    for i in range(len(moves) - 1, -1, -1):
                        if moves[i].target == move.target and moves[i].source == move.source:
                            del moves[i]
                            break
        return moves

    def _move_box(self, old: Path, new: Path) -> None:
        """boxes.csv names images by path: its row follows the file, so the box is not lost."""
        boxes = self.root / "boxes.csv"
        if not boxes.is_file():
            return
        old_key, new_key = relative_key(self.root, old), relative_key(self.root, new)
        try:
            with open(boxes, newline="", encoding="utf-8-sig") as handle:
                rows = list(csv.reader(handle))
            changed = False
            for row in rows[1:]:
                if row and unicodedata.normalize("NFC", row[0].strip().replace("\\", "/").removeprefix("./")) == old_key:
                    row[0], changed = new_key, True
            if changed:
                buffer = io.StringIO()
                csv.writer(buffer, lineterminator="\n").writerows(rows)
                atomic_write_text(boxes, buffer.getvalue())
        except (OSError, UnicodeDecodeError, csv.Error) as exc:  # the box is extra; the label stands
            message = f"the box of {old_key} in {boxes} could not follow it to {new_key} ({exc})"
            log.warning("%s", message)
            self.warnings.append(message)

    def _log(self, action: str, move: LabelMove) -> None:
        """Append one line and flush it to disk: the log is what lets a label be traced later."""
        # A set-aside image has no class now: the line keeps the one it had.
        row = [datetime.now(timezone.utc).isoformat(timespec="seconds"), action,
               move.previous_class if move.set_aside else move.class_name,
               _relative(self.root, move.source), _relative(self.root, move.target), _user(),
               "|".join(_relative(self.root, folder) for folder in move.created)]
        try:
            new = not self.log_path.exists()
            with open(self.log_path, "a", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                if new:
                    writer.writerow(_LOG_HEADER)
                writer.writerow(row)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:  # the move itself is done and must be reported as done
            if action in ("confirm", "unconfirm"):
                message = (f"that the label of {_relative(self.root, move.source)} was checked was not written to "
                           f"{self.log_path} ({exc.strerror or exc}); the label check may list it again")
            else:
                message = (f"{_relative(self.root, move.source)} -> {_relative(self.root, move.target)} was not written "
                           f"to {self.log_path} ({exc.strerror or exc}); it cannot be undone from the log")
            log.warning("%s", message)
            self.warnings.append(message)


class MovedImages:
    """Where labels moved a dataset's images, read from its label log.

    A run indexes its images once and may train for hours while the user labels some of
    them; without this, each labelled image would be skipped as missing for the rest of the
    run. Picklable, so DataLoader workers carry it; each re-reads the log when it changes.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self._stamp: tuple[int, int] | None = None
        self._next: dict[str, str] = {}  # NFC relative path -> where its latest move took it, as logged

    def find(self, image: str | os.PathLike[str]) -> Path | None:
        """The file `image` became through labels and undos, when it exists now; else None."""
        try:
            inside = Path(os.path.abspath(image)).relative_to(self.root)
        except ValueError:
            return None  # not inside this dataset
        key = _lookup_key(inside.as_posix())
        self._refresh()
        seen = {key}
        while key in self._next:
            logged = self._next[key]
            candidate = self.root / logged  # the log's own spelling: on Linux, NFC and NFD names differ
            if candidate.is_file():
                return candidate
            key = _lookup_key(logged)
            if key in seen:  # moved back and forth: the chain has no current end
                return None
            seen.add(key)
        return None

    def _refresh(self) -> None:
        log_path = self.root / LABEL_LOG
        try:
            info = log_path.stat()
        except OSError:
            self._stamp, self._next = None, {}
            return
        stamp = (info.st_size, info.st_mtime_ns)
        if stamp == self._stamp:
            return
        self._stamp = stamp  # a log that cannot be read is not read again until it changes
        edges: dict[str, str] = {}
        try:
            # A line with bytes that are not UTF-8 (an editor's doing) spoils only its own paths.
            with open(log_path, newline="", encoding="utf-8", errors="replace") as handle:
                for row in csv.DictReader(handle):
                    source, target = (row.get("from") or "").strip(), (row.get("to") or "").strip()
                    if not source or not target:
                        continue  # a damaged line: the others still count
                    if row.get("action") in ("label", "relabel"):
                        edges[_lookup_key(source)] = target
                    elif row.get("action") == "undo":
                        edges[_lookup_key(target)] = source
                        if _lookup_key(edges.get(_lookup_key(source), "")) == _lookup_key(target):
                            del edges[_lookup_key(source)]  # back where it was: nothing to follow from there
        except (OSError, csv.Error) as exc:
            log.warning("cannot read %s to follow labelled images: %s", log_path, exc)
        self._next = edges


def _lookup_key(relative: str) -> str:
    return unicodedata.normalize("NFC", relative)


def confirmed_labels(root: str | os.PathLike[str]) -> dict[str, str]:
    """{NFC path relative to the root: class} of the images whose label a person kept as it
    is, read from the dataset's label log (empty without one). A later move of the file, or
    of another file onto its name, ends the confirmation."""
    log_path = Path(root) / LABEL_LOG
    confirmed: dict[str, str] = {}
    try:
        with open(log_path, newline="", encoding="utf-8", errors="replace") as handle:
            for row in csv.DictReader(handle):
                action = row.get("action")
                source, target = (row.get("from") or "").strip(), (row.get("to") or "").strip()
                if not source or not target:
                    continue  # a damaged line: the others still count
                if action == "confirm":
                    confirmed[_lookup_key(target)] = (row.get("class") or "").strip()
                else:  # unconfirm, or a move from or onto that name
                    confirmed.pop(_lookup_key(source), None)
                    confirmed.pop(_lookup_key(target), None)
    except FileNotFoundError:
        pass
    except (OSError, csv.Error) as exc:
        log.warning("cannot read %s for the labels kept: %s", log_path, exc)
    return confirmed


def dataset_folder(path: str | os.PathLike[str]) -> Path:
    """A dataset folder as given, or the dataset a run folder (one with config.json) was trained on."""
    from fgdesk.config import RunConfig

    path = Path(path).expanduser()
    config_file = path / "config.json"
    if config_file.is_file():
        data = RunConfig.load(config_file).data.path
        if not data:
            raise LabelingError(f"the run {path} does not record a dataset folder (data.path is empty)")
        return Path(data)
    return path


# -- a table of labels (the `fgdesk suggest --csv` file with its label column filled in) ----------


@dataclass
class TableResult:
    moves: list[LabelMove]
    skipped: int  # rows without a label
    errors: list[tuple[int, str]]  # (line number, message)
    kept: int = 0  # rows whose label is the class the image already has


def read_label_table(path: str | os.PathLike[str], root: Path) -> list[tuple[int, Path, str]]:
    """(line, image, class) for each row of a CSV with `path` and `label` (or `class`) columns.
    A relative image path is looked for from the dataset's root, then from the current
    folder, then from the table's folder; the first that exists is taken."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [name.strip().lower() for name in reader.fieldnames or []]
            column = "label" if "label" in fields else "class" if "class" in fields else None
            if "path" not in fields or column is None:
                raise LabelingError(f"{path} needs a 'path' column and a 'label' (or 'class') column; it has "
                                    f"{', '.join(fields) or 'none'}")
            rows = []
            for row in reader:
                # Cells beyond the header (a note added in a spreadsheet) come under None: ignored.
                row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(k, str)}
                image = Path(row.get("path", "")).expanduser()
                if not image.is_absolute():
                    candidates = [root / image, Path.cwd() / image, path.parent / image]
                    image = next((c for c in candidates if c.exists()), candidates[0])
                rows.append((reader.line_num, image, row.get(column, "")))
            return rows
    except OSError as exc:
        raise LabelingError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LabelingError(f"{path} is not a UTF-8 CSV file ({exc})") from exc


def apply_label_table(labeler: DatasetLabeler, path: str | os.PathLike[str], allow_new: bool = False,
                      dry_run: bool = False) -> TableResult:
    """Label every row of the table that has a label; a bad row is reported and the rest go on."""
    result = TableResult([], 0, [], 0)
    for line, image, name in read_label_table(path, labeler.root):
        if not name:
            result.skipped += 1
            continue
        current = labeler.class_of(image)
        if current is not None and unicodedata.normalize("NFC", current).casefold() == \
                unicodedata.normalize("NFC", name.strip()).casefold():
            result.kept += 1  # a checked label kept as it is: logged, so the label check lists it no more
            if not dry_run:
                try:
                    labeler.confirm(image)
                except LabelingError as exc:
                    result.errors.append((line, str(exc)))
            continue
        try:
            act = labeler.plan if dry_run else labeler.assign
            result.moves.append(act(image, name, allow_new=allow_new))
        except LabelingError as exc:
            result.errors.append((line, str(exc)))
    return result


# -- files ---------------------------------------------------------------------------


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return Path(os.path.abspath(path))


def _relative(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _user() -> str:
    """Who gave the label: shared datasets are labelled by several people."""
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no user name in this environment (some containers)
        return ""


def _free_name(path: Path, taken: frozenset[Path] | set[Path] = frozenset()) -> Path:
    """`path`, or `stem-2.ext`, `stem-3.ext`… when a file of that name is already there (or `taken`)."""
    if not path.exists() and path not in taken:
        return path
    number = 2
    while True:
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        if not candidate.exists() and candidate not in taken:
            return candidate
        number += 1


def _move_into_new_folders(source: Path, target: Path) -> list[Path]:
    """Move `source` to `target`, making its missing folders (returned, outermost first); on
    failure nothing is left behind: the folders made go again, and LabelingError says why."""
    created: list[Path] = []
    try:
        created = _make_parents(target.parent, created)
        _move_without_overwrite(source, target)
    except OSError as exc:
        _remove_empty(created)
        raise LabelingError(f"cannot move {source} to {target}: {exc.strerror or exc}") from exc
    return created


def _make_parents(folder: Path, created: list[Path]) -> list[Path]:
    """Create `folder` and its missing parents, outermost first, appending each to `created`
    as it is made (so a failure half-way still says what to remove)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
        created.append(path)
    return created


def _remove_empty(folders: list[Path]) -> None:
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            pass


def _move_without_overwrite(source: Path, target: Path) -> None:
    """Move a file; FileExistsError if `target` exists. A hard link claims the name atomically;
    where links are not possible (FAT, some shares, another disk) the file is copied in full
    under a temporary name first, so an interruption never leaves a half-written image.
    A symbolic link moves as a link (still pointing at the same file), never as a copy."""
    if source.is_symlink():
        pointee = os.readlink(source)
        if not os.path.isabs(pointee):  # re-aimed from the new folder, as the system resolves it: physically
            pointee = os.path.relpath(os.path.realpath(source), os.path.realpath(target.parent))
        os.symlink(pointee, target)  # FileExistsError if taken
        try:
            if not os.path.samefile(target, source):
                raise OSError(errno.EINVAL, "the moved link would not open the same file")
            os.unlink(source)
        except OSError:
            os.unlink(target)
            raise
        return
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if not _links_unsupported(exc):
            raise
        partial = target.with_name(f".{target.name}.fgdesk-partial")
        try:
            shutil.copy2(source, partial)
            with open(partial, "rb") as handle:
                os.fsync(handle.fileno())
            _claim_name(partial, target)
        finally:
            if os.path.lexists(partial):
                os.unlink(partial)
    try:
        os.unlink(source)
    except OSError:
        target.unlink(missing_ok=True)  # one copy, where it was, rather than two
        raise


def _links_unsupported(exc: OSError) -> bool:
    """Whether a failed hard link means "not here" (another disk, a file system without links)
    rather than a real error. EINVAL and ENOSYS are how Windows reports FAT, exFAT and SMB shares."""
    return exc.errno in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EACCES,
                         errno.EINVAL, errno.ENOSYS)


def _claim_name(complete: Path, target: Path) -> None:
    """Give the finished file `complete` the name `target`, never replacing a file there
    (FileExistsError). The copy sits on the target's own disk, so a hard link claims the name
    atomically on POSIX even when the original was on another disk; only a file system with
    no links at all (FAT on Linux or macOS) falls back to check, then rename."""
    if os.name == "nt":
        os.rename(complete, target)  # refuses to replace an existing file
        return
    try:
        os.link(complete, target)  # the caller removes `complete`
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if not _links_unsupported(exc):
            raise
    if target.exists():  # no portable no-replace rename: a narrow window remains here alone
        raise FileExistsError(errno.EEXIST, "file exists", str(target))
    os.replace(complete, target)
