"""Shared fixtures: every test gets its own FGDESK_HOME so nothing touches real user folders."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("fgdesk_home")
    monkeypatch.setenv("FGDESK_HOME", str(home))
    return home
