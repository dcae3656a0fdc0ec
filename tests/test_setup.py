"""dev.py, the one-command set-up: where the venv module cannot make pip, virtualenv does."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def dev(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("fgdesk_dev_script", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "VENV", tmp_path / ".venv")
    monkeypatch.setattr(module, "BOOTSTRAP", tmp_path / ".venv-bootstrap")
    return module


def test_without_ensurepip_the_half_made_venv_is_replaced_by_virtualenv(dev, monkeypatch):
    def no_ensurepip(self, folder):
        Path(folder, "bin").mkdir(parents=True)  # what venv leaves behind before pip fails
        raise subprocess.CalledProcessError(1, ["python", "-m", "ensurepip"])

    commands = []
    monkeypatch.setattr(dev.venv.EnvBuilder, "create", no_ensurepip)
    monkeypatch.setattr(dev.subprocess, "run", lambda command, **kwargs: commands.append((command, kwargs.get("env"))))
    dev.create_venv()
    (install, _), (make, env) = commands
    assert install[:4] == [sys.executable, "-m", "pip", "install"] and install[-3:] == ["--target", str(dev.BOOTSTRAP), "virtualenv"]
    assert make == [sys.executable, "-m", "virtualenv", "-q", str(dev.VENV)] and env["PYTHONPATH"] == str(dev.BOOTSTRAP)
    assert not dev.VENV.exists()  # the half-made folder was removed before virtualenv ran


def test_a_venv_without_pip_is_made_again(dev, monkeypatch):
    made = []
    monkeypatch.setattr(dev, "create_venv", lambda: made.append(True))
    monkeypatch.setattr(dev, "venv_has_pip", lambda: False)
    monkeypatch.setattr(dev.subprocess, "run", lambda *args, **kwargs: None)
    monkeypatch.setattr(dev, "STAMP", dev.VENV / "stamp")
    dev.VENV.mkdir()
    dev.ensure_installed({"test"})
    assert made == [True]



@pytest.fixture(scope="session")
def folder_seen_by_session_fixtures():
    """Set up before any test's own FGDESK_HOME, as the shared trained run is."""
    from fgdesk import paths

    return str(paths.runs_elsewhere_file())


def test_the_suite_never_writes_to_the_real_user_folders(folder_seen_by_session_fixtures):
    import tempfile

    assert folder_seen_by_session_fixtures.startswith(tempfile.gettempdir())
