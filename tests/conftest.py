"""Shared fixtures: every test gets its own FGDESK_HOME so nothing touches real user folders."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests run tiny tensors, where a second thread costs more than it gives, and
# oversubscribed threads on a busy 2-core machine slow each op tenfold.
# Benchmarks in bench/ use every core.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("fgdesk_home")
    monkeypatch.setenv("FGDESK_HOME", str(home))
    return home
