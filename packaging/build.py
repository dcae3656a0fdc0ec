#!/usr/bin/env python3
"""Build the fgdesk one-folder bundle (dist/fgdesk/) with PyInstaller and smoke-test it.

    python3 dev.py package            # sets up .venv with PyInstaller, then runs this
    python packaging/build.py         # inside an environment that has fgdesk[package]

Steps: check that the installed fgdesk matches pyproject.toml, run
`python -m PyInstaller --noconfirm --clean packaging/fgdesk.spec`, check the bundle
holds both executables and the icons, run `dist/fgdesk/fgdesk --version`, and on
Linux add an install kit (install.sh, the .desktop file, AppStream metainfo, icons)
to the bundle. See packaging/README.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPEC = HERE / "fgdesk.spec"
DIST = ROOT / "dist"
WORK = ROOT / "build"
BUNDLE = DIST / "fgdesk"
RESOURCES = ROOT / "fgdesk" / "resources"
APP_ID = "io.github.fgdesk.fgdesk"
ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)
EXE_SUFFIX = ".exe" if os.name == "nt" else ""


class BuildError(Exception):
    pass


def shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it, for messages."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def project_version() -> str:
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["version"]


def installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fgdesk")
    except PackageNotFoundError:
        return None


def check_environment() -> str:
    """The version the bundle will report; raises BuildError when the build cannot work."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        raise BuildError(
            "PyInstaller is not installed in this environment. Use `python3 dev.py package`, "
            "or `pip install -e '.[package]'` and run this script again."
        ) from None
    wanted = project_version()
    have = installed_version()
    if have is None:
        raise BuildError(
            "fgdesk is not installed in this environment, so the bundle would have no version "
            "metadata. Run `pip install -e .` (or `python3 dev.py package`) first."
        )
    if have != wanted:
        raise BuildError(
            f"the installed fgdesk metadata says {have} but pyproject.toml says {wanted}; "
            "re-run `pip install -e .` so the bundle reports the right version."
        )
    return wanted


def torch_cuda_version() -> str | None:
    """The CUDA version the installed torch was built for (None: CPU-only or no torch).

    Read from torch/version.py rather than by importing torch, which takes seconds."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    version_file = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        text = version_file.read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^cuda\b[^=]*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return match.group(1) if match else None


def run_pyinstaller(clean: bool) -> None:
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm",
               "--distpath", str(DIST), "--workpath", str(WORK)]
    if clean:
        command.append("--clean")
    command.append(str(SPEC))
    print("+", " ".join(command), flush=True)
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode != 0:
        raise BuildError(f"PyInstaller failed with exit status {result.returncode}")


def check_bundle(version: str) -> None:
    for name in ("fgdesk", "fgdesk-app"):
        exe = BUNDLE / (name + EXE_SUFFIX)
        if not exe.is_file():
            raise BuildError(f"the bundle has no {exe.name} executable ({exe})")
    if not any(BUNDLE.rglob("fgdesk/resources/fgdesk.svg")):
        raise BuildError("the bundle does not contain fgdesk/resources (icons are missing)")

    cli = BUNDLE / ("fgdesk" + EXE_SUFFIX)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    print(f"+ {shown(cli)} --version", flush=True)
    try:
        result = subprocess.run([str(cli), "--version"], capture_output=True, text=True,
                                timeout=300, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{cli.name} --version did not finish within 300 s") from None
    output = (result.stdout + result.stderr).strip()
    print(output)
    if result.returncode != 0:
        raise BuildError(f"{cli.name} --version exited with status {result.returncode}")
    if f"fgdesk {version}" not in output:
        raise BuildError(f"{cli.name} --version printed {output!r}, expected 'fgdesk {version}'")


def write_linux_install_kit() -> None:
    """Put install.sh and the files it installs into the bundle, so dist/fgdesk/ alone
    (for example as a tarball) is enough to install fgdesk on another Linux machine."""
    share = BUNDLE / "share"
    if share.exists():
        shutil.rmtree(share)
    (share / "applications").mkdir(parents=True)
    (share / "metainfo").mkdir()
    shutil.copy2(HERE / "fgdesk.desktop", share / "applications" / "fgdesk.desktop")
    shutil.copy2(HERE / f"{APP_ID}.metainfo.xml", share / "metainfo" / f"{APP_ID}.metainfo.xml")
    for size in ICON_SIZES:
        target = share / "icons" / "hicolor" / f"{size}x{size}" / "apps"
        target.mkdir(parents=True)
        shutil.copy2(RESOURCES / "icons" / f"fgdesk-{size}.png", target / "fgdesk.png")
    scalable = share / "icons" / "hicolor" / "scalable" / "apps"
    scalable.mkdir(parents=True)
    shutil.copy2(RESOURCES / "fgdesk.svg", scalable / "fgdesk.svg")
    script = BUNDLE / "install.sh"
    shutil.copy2(HERE / "install-linux.sh", script)
    script.chmod(0o755)
    print(f"wrote the Linux install kit: {shown(script)} and {shown(share)}/")


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build dist/fgdesk/ with PyInstaller.")
    parser.add_argument("--no-clean", action="store_true",
                        help="reuse PyInstaller's cache in build/ (faster rebuilds)")
    parser.add_argument("--skip-smoke", action="store_true",
                        help="do not run `fgdesk --version` from the bundle")
    parser.add_argument("--no-install-kit", action="store_true",
                        help="on Linux, do not add install.sh and share/ to the bundle")
    args = parser.parse_args(argv)

    started = time.monotonic()
    try:
        version = check_environment()
        cuda = torch_cuda_version()
        if cuda:
            print(f"note: torch here is built for CUDA {cuda}; the bundle will carry the CUDA "
                  "libraries (gigabytes). For a small CPU-only bundle, build in an environment "
                  "with CPU-only torch (packaging/README.md).", flush=True)
        run_pyinstaller(clean=not args.no_clean)
        if not args.skip_smoke:
            check_bundle(version)
        if sys.platform.startswith("linux") and not args.no_install_kit:
            write_linux_install_kit()
    except BuildError as error:
        print(f"build.py: error: {error}", file=sys.stderr)
        return 1
    size_mib = folder_size(BUNDLE) / 2**20
    minutes = (time.monotonic() - started) / 60
    print(f"built {shown(BUNDLE)}/ ({size_mib:,.0f} MiB) in {minutes:.1f} min")
    if sys.platform.startswith("linux") and not args.no_install_kit:
        print(f"install it for this user with: {shown(BUNDLE / 'install.sh')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
