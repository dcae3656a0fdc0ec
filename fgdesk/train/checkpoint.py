"""Versioned checkpoints, written atomically and read without executing pickled code."""
from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from fgdesk.config import RunConfig
from fgdesk.fileio import atomic_write

FORMAT_NAME = "fgdesk-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, unsafe or made for another model; the message says which."""


def save_checkpoint(path: Path, payload: dict[str, Any], config: RunConfig, kind: str = "pretrain") -> None:
    """Write `payload` (tensors, numbers, strings, lists, dicts) with a format header.

    The config travels as JSON text so loading needs no custom classes.
    """
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "kind": kind,
        "config_json": json.dumps(config.to_dict()),
        **payload,
    }
    buffer = io.BytesIO()
    torch.save(document, buffer)
    atomic_write(Path(path), lambda handle: handle.write(buffer.getbuffer()))


def load_checkpoint(path: Path, kind: str | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True` and check its header."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        document = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: it contains Python objects other than tensors and plain data, "
            "which could run code when loaded. Only open checkpoints that fgdesk wrote."
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is truncated or corrupt and cannot be read ({type(exc).__name__}: {exc}). fgdesk writes "
            "checkpoints whole, so it was damaged afterwards; use another copy of it"
        ) from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not an fgdesk checkpoint (no '{FORMAT_NAME}' header)")
    version = document.get("version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this fgdesk reads version {FORMAT_VERSION}. "
            "Open it with the fgdesk release that wrote it."
        )
    if kind is not None and document.get("kind") != kind:
        raise CheckpointError(f"{path} is a {document.get('kind')!r} checkpoint, but a {kind!r} one is needed")
    return document


def checkpoint_config(document: dict[str, Any]) -> RunConfig:
    return RunConfig.from_dict(json.loads(document["config_json"]), "checkpoint config")


def check_compatible(document: dict[str, Any], path: Path, backbone: str | None = None, num_classes: int | None = None) -> None:
    """Refuse a checkpoint made for another backbone or class count, saying which."""
    config = checkpoint_config(document)
    if backbone is not None and config.model.backbone != backbone:
        raise CheckpointError(
            f"{path} was made for backbone {config.model.backbone}, not {backbone}; "
            f"choose backbone {config.model.backbone} or start a new run"
        )
    have = document.get("num_classes")
    if num_classes is not None and have is not None and int(have) != num_classes:
        raise CheckpointError(f"{path} was trained for {have} classes, but this dataset has {num_classes}")
