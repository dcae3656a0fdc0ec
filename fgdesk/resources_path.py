"""Locate files shipped in fgdesk/resources (icons), without importing Qt.

Works from a source checkout, from an installed wheel, and from the PyInstaller
bundle, where the data files live under ``sys._MEIPASS/fgdesk/resources``.
"""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path, PurePosixPath

ICON_SIZES: tuple[int, ...] = (16, 32, 48, 64, 128, 256, 512)
APP_ICON_SVG = "fgdesk.svg"


def resources_dir() -> Path:
    """The folder that holds fgdesk's resources."""
    bundle = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and bundle:
        frozen_dir = Path(bundle) / "fgdesk" / "resources"
        if frozen_dir.is_dir():
            return frozen_dir
    try:
        located = resources.files("fgdesk") / "resources"
        if isinstance(located, Path):
            return located
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent / "resources"


def resource_path(name: str = "") -> Path:
    """Path of resource ``name`` (a relative, '/'-separated name like "icons/fgdesk-64.png").

    Names that are absolute or climb out of the resources folder raise ValueError.
    The path is returned whether or not the file exists.
    """
    pure = PurePosixPath(str(name).replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise ValueError(f"resource name must be relative and stay inside resources/: {name!r}")
    return resources_dir().joinpath(*pure.parts)


def icon_path(size: int) -> Path:
    """The PNG app icon whose size is closest to ``size`` (the larger one on a tie)."""
    best = min(ICON_SIZES, key=lambda s: (abs(s - size), -s))
    return resource_path(f"icons/fgdesk-{best}.png")


def app_icon_paths() -> list[Path]:
    """Every PNG app icon that exists, smallest first (feed them all to one QIcon)."""
    paths = [resource_path(f"icons/fgdesk-{size}.png") for size in ICON_SIZES]
    return [path for path in paths if path.is_file()]
