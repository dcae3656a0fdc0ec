"""Shared fixtures: every test gets its own FGDESK_HOME so nothing touches real user folders."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Session-scoped fixtures (a trained run shared by many tests) run before any test's own
# home is set: they get this one, so no test ever writes to the user's real folders.
_SESSION_HOME = tempfile.mkdtemp(prefix="fgdesk-tests-home-")
os.environ["FGDESK_HOME"] = _SESSION_HOME
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)
# Tests run tiny tensors, where a second thread costs more than it gives, and
# oversubscribed threads on a busy 2-core machine slow each op tenfold.
# Benchmarks in bench/ use every core.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("fgdesk_home")
    monkeypatch.setenv("FGDESK_HOME", str(home))
    yield home
    # Runs saved here hold checkpoints of 100+ MB; 370 tests' worth would fill a disk.
    shutil.rmtree(home, ignore_errors=True)
