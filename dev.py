#!/usr/bin/env python3
"""One-command set-up for fgdesk: `python3 dev.py app` or `python3 dev.py test`.

Also: `dev.py run SCRIPT [args]` runs a script inside the environment,
`dev.py bench bench/NAME.py [args]` adds the benchmark extras first, and
`dev.py package` builds the one-folder app bundle.

Creates `.venv` beside this file on first use, installs fgdesk into it with the
pinned versions from constraints.txt, and re-installs only when pyproject.toml
or constraints.txt change. Needs nothing but Python >= 3.11 and pip: where the
standard venv module cannot install pip (Debian and Ubuntu without python3-venv),
the environment is made with virtualenv instead, fetched by that pip.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".fgdesk-installed"
BOOTSTRAP = ROOT / ".venv-bootstrap"  # virtualenv, when the venv module cannot make pip
EXTRAS = {"app": set(), "test": {"test"}, "bench": {"test", "bench"}, "package": {"test", "package"}}


def venv_python() -> Path:
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return VENV / sub


def sources_digest() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def installed_extras() -> set[str] | None:
    """Extras installed by the last run, or None when the sources changed since."""
    if not STAMP.exists():
        return None
    digest, _, extras = STAMP.read_text().partition("\n")
    if digest != sources_digest():
        return None
    return set(filter(None, extras.split(",")))


def venv_has_pip() -> bool:
    return venv_python().exists() and subprocess.run(
        [str(venv_python()), "-m", "pip", "--version"], capture_output=True).returncode == 0


def create_venv() -> None:
    """A fresh `.venv` with pip, from the venv module or else from virtualenv."""
    shutil.rmtree(VENV, ignore_errors=True)  # a half-made one from an earlier failure
    print(f"Creating a virtual environment in {VENV.name}/ ...", flush=True)
    try:
        venv.EnvBuilder(with_pip=True).create(VENV)
        return
    except subprocess.CalledProcessError:  # ensurepip is missing from this Python
        shutil.rmtree(VENV, ignore_errors=True)
    print("This Python's venv module cannot install pip; using virtualenv instead ...", flush=True)
    # --target installs beside the project, so a system Python that refuses packages (PEP 668) still allows it.
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                    "--target", str(BOOTSTRAP), "virtualenv"], check=True)
    subprocess.run([sys.executable, "-m", "virtualenv", "-q", str(VENV)], check=True,
                   env={**os.environ, "PYTHONPATH": str(BOOTSTRAP)})


def ensure_installed(extras: set[str]) -> Path:
    if sys.version_info < (3, 11):
        sys.exit(f"fgdesk needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    have = installed_extras()
    if have is None and not venv_has_pip():
        create_venv()
    have = installed_extras()
    if have is not None and extras <= have:
        return venv_python()
    extras = extras | (have or set())
    spec = f"{ROOT}[{','.join(sorted(extras))}]" if extras else str(ROOT)
    print("Installing fgdesk and its dependencies (the first run takes a few minutes) ...", flush=True)
    subprocess.run(
        [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q",
         "-c", str(ROOT / "constraints.txt"), "-e", spec],
        check=True,
    )
    STAMP.write_text(sources_digest() + "\n" + ",".join(sorted(extras)))
    return venv_python()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("app", "test", "bench", "package", "run"):
        print(__doc__)
        print("usage: python3 dev.py {app|test|run|bench|package} [args...]")
        return 2
    command, rest = argv[0], argv[1:]
    python = ensure_installed(EXTRAS.get(command, {"test"}))
    env = dict(os.environ)
    if command == "app":
        return subprocess.call([str(python), "-m", "fgdesk", *rest], env=env)
    if command == "test":
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        return subprocess.call([str(python), "-m", "pytest", *rest], env=env, cwd=ROOT)
    if command == "package":
        return subprocess.call([str(python), str(ROOT / "packaging" / "build.py"), *rest], env=env)
    if not rest:
        print(f"usage: python3 dev.py {command} SCRIPT.py [args...]")
        return 2
    return subprocess.call([str(python), *rest], env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
