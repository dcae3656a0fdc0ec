"""Where fgdesk keeps runs, caches and settings (platformdirs), overridable for tests."""
from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "fgdesk"
HOME_ENV = "FGDESK_HOME"  # one folder for everything; tests and portable installs set it


def _base(kind: str) -> Path:
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser() / kind
    import platformdirs

    getter = {
        "data": platformdirs.user_data_dir,
        "cache": platformdirs.user_cache_dir,
        "config": platformdirs.user_config_dir,
        "log": platformdirs.user_log_dir,
    }[kind]
    return Path(getter(APP_NAME, appauthor=False))


def runs_dir() -> Path:
    return _base("data") / "runs"


def runs_elsewhere_file() -> Path:
    """Runs made in folders of the user's choosing (`--out`), one path a line, so they are listed too."""
    return _base("data") / "runs-elsewhere.txt"


def demo_data_dir() -> Path:
    return _base("data") / "demo"


def thumbnail_cache_dir() -> Path:
    return _base("cache") / "thumbnails"


def embedding_cache_dir() -> Path:
    return _base("cache") / "embeddings"


def settings_dir() -> Path:
    return _base("config")


def log_dir() -> Path:
    return _base("log")
