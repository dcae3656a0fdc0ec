"""Packaging: PyInstaller spec, entry scripts, desktop entry, AppStream metainfo, icons.

Everything here is fast and needs no PyInstaller: the spec is executed with stand-in
Analysis/PYZ/EXE/COLLECT callables that record their arguments. The real bundle build
runs only with FGDESK_BUILD_BUNDLE=1 (see packaging/README.md).
"""
from __future__ import annotations

import ast
import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import types
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
RESOURCES = ROOT / "fgdesk" / "resources"
SPEC_FILE = PACKAGING / "fgdesk.spec"
DESKTOP_FILE = PACKAGING / "fgdesk.desktop"
APP_ID = "io.github.fgdesk.fgdesk"
METAINFO_FILE = PACKAGING / f"{APP_ID}.metainfo.xml"
ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)

# Qt modules the app uses (directly or through pyqtgraph): they must stay in the bundle.
QT_NEEDED = ("QtCore", "QtGui", "QtWidgets", "QtSvg", "QtOpenGL", "QtOpenGLWidgets")
# Large Qt modules the app never uses: each must be excluded.
QT_UNUSED = (
    "QtWebEngineCore", "QtWebEngineWidgets", "QtWebEngineQuick", "Qt3DCore", "Qt3DRender",
    "QtQuick", "QtQuickWidgets", "QtQml", "QtMultimedia", "QtMultimediaWidgets", "QtCharts",
    "QtDataVisualization", "QtPdf", "QtPdfWidgets", "QtBluetooth", "QtNfc", "QtPositioning",
    "QtSensors", "QtSerialPort", "QtSql", "QtTest", "QtDesigner", "QtHelp", "QtNetworkAuth",
    "QtRemoteObjects", "QtScxml", "QtStateMachine", "QtTextToSpeech", "QtWebChannel",
    "QtWebSockets", "QtXml",
)
PY_UNUSED = ("tkinter", "matplotlib", "lightly", "pytest", "hypothesis", "IPython")
# What fgdesk imports at run time: excluding any of these would break the bundle.
RUNTIME_PACKAGES = ("fgdesk", "torch", "torchvision", "numpy", "PIL", "PySide6", "shiboken6",
                    "pyqtgraph", "platformdirs", "tqdm")

FAKE_METADATA = ("/site-packages/fgdesk-0.1.0.dist-info", "fgdesk-0.1.0.dist-info")
FAKE_SUBMODULES = ["fgdesk.cli", "fgdesk.gui.app"]
BOOTSTRAP = ("pyiboot01_bootstrap", "/pyinstaller/loader/pyiboot01_bootstrap.py", "PYSOURCE")


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


# ---------------------------------------------------------------------------------------
# The spec, executed with recording stand-ins for PyInstaller's build objects.

class Recorded(types.SimpleNamespace):
    pass


def run_spec(monkeypatch, platform: str | None = None) -> Recorded:
    record = Recorded(analyses=[], pyzs=[], exes=[], collects=[], metadata_calls=[],
                      submodule_calls=[])

    class Analysis:
        def __init__(self, scripts, **kwargs):
            self.inputs = list(scripts)
            self.kwargs = kwargs
            # PyInstaller puts its bootstrap first, then one entry per analysed script.
            self.scripts = [BOOTSTRAP] + [(Path(s).stem, s, "PYSOURCE") for s in scripts]
            self.pure = [("fgdesk", "/src/fgdesk/__init__.py", "PYMODULE")]
            self.binaries = [("libfake.so", "/lib/libfake.so", "BINARY")]
            self.datas = list(kwargs.get("datas", []))
            self.zipfiles = []
            record.analyses.append(self)

    def PYZ(*args, **kwargs):
        pyz = Recorded(args=args, kwargs=kwargs)
        record.pyzs.append(pyz)
        return pyz

    def EXE(*args, **kwargs):
        exe = Recorded(args=args, kwargs=kwargs, name=kwargs.get("name"))
        record.exes.append(exe)
        return exe

    def COLLECT(*args, **kwargs):
        coll = Recorded(args=args, kwargs=kwargs)
        record.collects.append(coll)
        return coll

    def copy_metadata(name, *args, **kwargs):
        record.metadata_calls.append(name)
        return [FAKE_METADATA]

    def collect_submodules(name, *args, **kwargs):
        record.submodule_calls.append((name, kwargs))
        names = FAKE_SUBMODULES + [f"{name}.__main__"]
        keep = kwargs.get("filter") or (lambda _name: True)
        return [n for n in names if keep(n)]

    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.copy_metadata = copy_metadata
    hooks.collect_submodules = collect_submodules
    utils = types.ModuleType("PyInstaller.utils")
    utils.hooks = hooks
    package = types.ModuleType("PyInstaller")
    package.utils = utils
    monkeypatch.setitem(sys.modules, "PyInstaller", package)
    monkeypatch.setitem(sys.modules, "PyInstaller.utils", utils)
    monkeypatch.setitem(sys.modules, "PyInstaller.utils.hooks", hooks)

    namespace = {
        "__name__": "__main__", "__file__": str(SPEC_FILE),
        "SPEC": str(SPEC_FILE), "SPECPATH": str(PACKAGING),
        "DISTPATH": str(ROOT / "dist"), "workpath": str(ROOT / "build"),
        "Analysis": Analysis, "PYZ": PYZ, "EXE": EXE, "COLLECT": COLLECT,
    }
    code = compile(SPEC_FILE.read_text(encoding="utf-8"), str(SPEC_FILE), "exec")
    if platform is not None:
        monkeypatch.setattr(sys, "platform", platform)
    try:
        exec(code, namespace)
    finally:
        if platform is not None:
            monkeypatch.undo()
    record.namespace = namespace
    return record


@pytest.fixture
def spec(monkeypatch) -> Recorded:
    return run_spec(monkeypatch)


def exe_named(record: Recorded, name: str) -> Recorded:
    found = [exe for exe in record.exes if exe.name == name]
    assert len(found) == 1, f"expected one EXE named {name!r}, got {[e.name for e in record.exes]}"
    return found[0]


def exe_scripts(exe: Recorded) -> list:
    scripts = exe.args[1] if len(exe.args) > 1 else exe.kwargs.get("scripts")
    assert isinstance(scripts, list), "EXE's second argument should be the script list"
    return scripts


def test_spec_builds_two_executables_into_one_folder(spec):
    assert len(spec.analyses) >= 1
    assert len(spec.collects) == 1, "both executables must share one COLLECT"
    assert sorted(exe.name for exe in spec.exes) == ["fgdesk", "fgdesk-app"]
    cli, app = exe_named(spec, "fgdesk"), exe_named(spec, "fgdesk-app")
    assert cli.kwargs.get("console") is True
    assert app.kwargs.get("console") is False
    for exe in (cli, app):
        # one-folder: the executables leave the libraries to COLLECT
        assert exe.kwargs.get("exclude_binaries") is True
        assert exe.args[0] in spec.pyzs
    coll = spec.collects[0]
    assert coll.kwargs.get("name") == "fgdesk"
    assert cli in coll.args and app in coll.args
    for analysis in spec.analyses:
        assert analysis.binaries in coll.args and analysis.datas in coll.args


def test_each_executable_runs_only_its_own_entry_script(spec):
    expected = {"fgdesk": PACKAGING / "entry_cli.py", "fgdesk-app": PACKAGING / "entry_app.py"}
    for name, entry in expected.items():
        scripts = exe_scripts(exe_named(spec, name))
        user_scripts = [Path(s[1]).resolve() for s in scripts if s is not BOOTSTRAP]
        assert user_scripts == [entry.resolve()], f"{name} would run {user_scripts}"
        assert scripts[0] == BOOTSTRAP, f"{name} lost PyInstaller's bootstrap script"


def test_spec_paths_point_into_this_repository(spec):
    for analysis in spec.analyses:
        for script in analysis.inputs:
            assert Path(script).is_file(), f"entry script {script} does not exist"
        assert str(ROOT) in [str(Path(p).resolve()) for p in analysis.kwargs.get("pathex", [])]


def test_entry_scripts_import_the_right_functions():
    scripts = pyproject()["project"]
    targets = {
        "entry_cli.py": scripts["scripts"]["fgdesk"],
        "entry_app.py": scripts["gui-scripts"]["fgdesk-app"],
    }
    assert targets == {"entry_cli.py": "fgdesk.cli:main", "entry_app.py": "fgdesk.gui.app:main"}
    for filename, target in targets.items():
        module, _, function = target.partition(":")
        tree = ast.parse((PACKAGING / filename).read_text(encoding="utf-8"), filename)
        imports = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert any(node.module == module and [a.name for a in node.names] == [function]
                   for node in imports), f"{filename} does not import {function} from {module}"
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
        exits = [c for c in calls if ast.unparse(c.func) == "sys.exit"]
        assert any(ast.unparse(c.args[0]) == f"{function}()" for c in exits if c.args), (
            f"{filename} must call sys.exit({function}()) so the exit status reaches the shell")
        assert any(ast.unparse(c.func) == "multiprocessing.freeze_support" for c in calls), (
            f"{filename} must call multiprocessing.freeze_support() for data-loader workers")


def test_spec_bundles_resources_and_version_metadata(spec):
    datas = spec.analyses[0].kwargs["datas"]
    resolved = {(str(Path(src).resolve()), dest.replace("\\", "/")) for src, dest in datas}
    assert (str(RESOURCES.resolve()), "fgdesk/resources") in resolved
    assert "fgdesk" in spec.metadata_calls, "fgdesk --version needs the dist-info in the bundle"
    assert FAKE_METADATA in datas
    assert (RESOURCES / "fgdesk.svg").is_file()


def test_spec_hidden_imports(spec):
    hidden = spec.analyses[0].kwargs.get("hiddenimports", [])
    assert ("fgdesk", ) == tuple(name for name, _ in spec.submodule_calls)
    for name in FAKE_SUBMODULES:
        assert name in hidden
    assert "fgdesk.__main__" not in hidden, "fgdesk.__main__ runs the CLI when imported"
    # pyqtgraph reaches these through importlib.import_module, invisible to PyInstaller
    assert "PySide6.QtOpenGL" in hidden and "PySide6.QtOpenGLWidgets" in hidden


@pytest.mark.parametrize("platform", ["linux", "win32", "darwin"])
def test_spec_icons_exist_on_every_platform(monkeypatch, platform):
    record = run_spec(monkeypatch, platform)
    for exe in record.exes:
        icon = exe.kwargs.get("icon")
        if platform == "linux":
            assert icon is None
            continue
        icons = [icon] if isinstance(icon, str) else list(icon or [])
        assert icons, f"{exe.name} has no icon on {platform}"
        for path in icons:
            assert Path(path).is_file(), f"icon {path} does not exist"
            assert Path(path).resolve().is_relative_to(RESOURCES.resolve())


def test_unused_qt_modules_and_dev_tools_are_excluded(spec):
    excludes = set(spec.analyses[0].kwargs["excludes"])
    missing = [m for m in QT_UNUSED if f"PySide6.{m}" not in excludes]
    assert not missing, f"not excluded: {missing}"
    missing = [m for m in PY_UNUSED if m not in excludes]
    assert not missing, f"not excluded: {missing}"


def test_nothing_the_app_needs_is_excluded(spec):
    excludes = spec.analyses[0].kwargs["excludes"]
    needed = [f"PySide6.{m}" for m in QT_NEEDED] + list(RUNTIME_PACKAGES)
    for module in needed:
        for excluded in excludes:
            # PyInstaller's excludes also drop every submodule of an excluded name.
            assert not (module == excluded or module.startswith(excluded + ".")), (
                f"{excluded!r} in excludes would drop {module}")


# ---------------------------------------------------------------------------------------
# Desktop entry and AppStream metainfo.

def read_desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(DESKTOP_FILE.read_text(encoding="utf-8"))
    assert parser.sections()[0] == "Desktop Entry"
    return parser["Desktop Entry"]


def test_desktop_entry_has_the_required_keys(spec):
    entry = read_desktop_entry()
    assert entry["Type"] == "Application"
    assert entry["Name"] == "fgdesk"
    assert entry["GenericName"] == "Fine-grained image recognition"
    assert entry["Terminal"] == "false"
    assert entry["StartupWMClass"] == "fgdesk"
    categories = entry["Categories"]
    assert categories.endswith(";")
    assert {"Science", "ImageProcessing", "Qt"} <= set(filter(None, categories.split(";")))
    command = entry["Exec"].split()[0]
    assert command in {exe.name for exe in spec.exes}, f"Exec runs {command!r}, not a bundle program"
    assert command in pyproject()["project"]["scripts"], "Exec must also work after pip install"
    assert entry.get("TryExec", command) == command


def test_desktop_icon_name_matches_the_installed_icons():
    icon = read_desktop_entry()["Icon"]
    # An icon-theme name, not a path or a file name with an extension.
    assert icon == "fgdesk" and "/" not in icon and "." not in icon
    assert (RESOURCES / f"{icon}.svg").is_file()
    for size in ICON_SIZES:
        assert (RESOURCES / "icons" / f"{icon}-{size}.png").is_file()


def test_desktop_entry_passes_desktop_file_validate():
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        pytest.skip("desktop-file-validate is not installed (desktop-file-utils)")
    result = subprocess.run([tool, str(DESKTOP_FILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error:" not in result.stdout + result.stderr


def test_metainfo_matches_the_desktop_entry_and_project(spec):
    root = ET.parse(METAINFO_FILE).getroot()
    assert root.tag == "component" and root.get("type") == "desktop-application"
    assert root.findtext("id") == APP_ID
    assert METAINFO_FILE.name == f"{root.findtext('id')}.metainfo.xml"
    for tag in ("name", "summary", "metadata_license", "project_license"):
        assert (root.findtext(tag) or "").strip(), f"<{tag}> is empty"
    assert root.findtext("project_license") == pyproject()["project"]["license"]["text"]
    assert root.find("description/p") is not None
    launchable = root.find("launchable")
    assert launchable is not None and launchable.get("type") == "desktop-id"
    assert launchable.text == DESKTOP_FILE.name
    binaries = [b.text for b in root.findall("provides/binary")]
    assert binaries == ["fgdesk"]
    assert binaries[0] in {exe.name for exe in spec.exes}
    assert binaries[0] == read_desktop_entry()["Exec"].split()[0]
    assert root.find("content_rating") is not None
    releases = root.findall("releases/release")
    assert releases and releases[0].get("version") == pyproject()["project"]["version"]
    assert releases[0].get("date") == "2026-11-30"
    assert root.findall(".//url") == [], "no URLs: the project has no public home page yet"


def test_metainfo_passes_appstreamcli_validate():
    tool = shutil.which("appstreamcli")
    if tool is None:
        pytest.skip("appstreamcli is not installed (appstream)")
    result = subprocess.run([tool, "validate", "--no-net", str(METAINFO_FILE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------
# Icons and the resource helper.

@pytest.mark.parametrize("size", ICON_SIZES)
def test_png_icon_has_the_right_size_and_shape(size):
    path = RESOURCES / "icons" / f"fgdesk-{size}.png"
    assert path.is_file(), f"{path.name} is missing; run packaging/make_icons.py"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (size, size)
        rgba = image.convert("RGBA")
    # A rounded tile: transparent corners, an opaque middle.
    assert rgba.getpixel((0, 0))[3] == 0
    assert rgba.getpixel((size // 2, size // 2))[3] == 255


def test_svg_icon_is_square_and_renders_with_qtsvg():
    root = ET.parse(RESOURCES / "fgdesk.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    _, _, width, height = (float(v) for v in root.get("viewBox").split())
    assert width == height
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(RESOURCES / "fgdesk.svg"))
    assert renderer.isValid()


def test_committed_pngs_match_the_svg(tmp_path):
    """Catches an SVG edit that was not followed by packaging/make_icons.py."""
    spec = importlib.util.spec_from_file_location("fgdesk_make_icons", PACKAGING / "make_icons.py")
    make_icons = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_icons)
    assert tuple(make_icons.SIZES) == ICON_SIZES
    assert make_icons.main(["--out", str(tmp_path), "--sizes", "32", "128"]) == 0
    for size in (32, 128):
        with Image.open(tmp_path / f"fgdesk-{size}.png") as fresh, \
                Image.open(RESOURCES / "icons" / f"fgdesk-{size}.png") as committed:
            a = fresh.convert("RGBA").tobytes()
            b = committed.convert("RGBA").tobytes()
        assert len(a) == len(b)
        mean_difference = sum(abs(x - y) for x, y in zip(a, b)) / len(a)
        assert mean_difference < 4, f"fgdesk-{size}.png is out of date ({mean_difference:.1f})"


def test_resource_path_finds_the_shipped_files():
    from fgdesk.resources_path import ICON_SIZES as sizes, app_icon_paths, icon_path, resource_path

    assert sizes == ICON_SIZES
    assert resource_path("fgdesk.svg") == RESOURCES / "fgdesk.svg"
    assert resource_path("fgdesk.svg").is_file()
    assert resource_path("icons/fgdesk-64.png").is_file()
    assert app_icon_paths() == [RESOURCES / "icons" / f"fgdesk-{s}.png" for s in ICON_SIZES]
    assert icon_path(64).name == "fgdesk-64.png"
    assert icon_path(20).name == "fgdesk-16.png"
    assert icon_path(40).name == "fgdesk-48.png"  # a tie goes to the larger icon
    assert icon_path(4000).name == "fgdesk-512.png"


@pytest.mark.parametrize("name", ["../pyproject.toml", "icons/../../x", "/etc/passwd",
                                  "C:/Windows/win.ini", "..\\secret"])
def test_resource_path_refuses_names_outside_resources(name):
    from fgdesk.resources_path import resource_path

    with pytest.raises(ValueError):
        resource_path(name)


def test_resource_path_in_a_pyinstaller_bundle(tmp_path, monkeypatch):
    from fgdesk import resources_path

    bundled = tmp_path / "fgdesk" / "resources"
    (bundled / "icons").mkdir(parents=True)
    (bundled / "fgdesk.svg").write_text("<svg/>")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert resources_path.resource_path("fgdesk.svg") == bundled / "fgdesk.svg"
    assert resources_path.app_icon_paths() == []


def test_resource_helper_does_not_import_qt():
    code = ("import sys, fgdesk.resources_path as r; r.app_icon_paths(); "
            "print(sorted(m for m in sys.modules if m.startswith(('PySide6', 'torch'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_package_data_covers_every_resource_file():
    patterns = pyproject()["tool"]["setuptools"]["package-data"]["fgdesk"]
    package = ROOT / "fgdesk"
    matched = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    files = {p for p in RESOURCES.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert files, "fgdesk/resources is empty"
    assert files <= matched, f"not shipped in the wheel: {sorted(files - matched)}"


def test_wheel_contains_the_resources(tmp_path):
    """Build a wheel from a copy of the project (offline, no isolation) and look inside."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "fgdesk", source / "fgdesk",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "wheel"
    out.mkdir()
    code = ("import sys; from setuptools import build_meta; "
            "print(build_meta.build_wheel(sys.argv[1]))")
    result = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                            text=True, cwd=source, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    wheel = out / result.stdout.strip().splitlines()[-1]
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "fgdesk/resources/fgdesk.svg" in names
    assert "fgdesk/resources_path.py" in names
    for size in ICON_SIZES:
        assert f"fgdesk/resources/icons/fgdesk-{size}.png" in names


# ---------------------------------------------------------------------------------------
# build.py's checks and the Linux install script, with a stand-in bundle.

def load_build_module():
    spec = importlib.util.spec_from_file_location("fgdesk_build", PACKAGING / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_fake_bundle(bundle: Path, version_line: str) -> None:
    (bundle / "_internal" / "fgdesk" / "resources").mkdir(parents=True)
    shutil.copy2(RESOURCES / "fgdesk.svg", bundle / "_internal" / "fgdesk" / "resources")
    for name in ("fgdesk", "fgdesk-app"):
        exe = bundle / name
        exe.write_text(f"#!/bin/sh\necho '{version_line}'\n")
        exe.chmod(0o755)


posix_only = pytest.mark.skipif(os.name != "posix" or shutil.which("sh") is None,
                                reason="needs a POSIX shell")


@posix_only
def test_build_smoke_check_accepts_the_right_version(tmp_path, monkeypatch):
    build = load_build_module()
    bundle = tmp_path / "dist" / "fgdesk"
    make_fake_bundle(bundle, "fgdesk 0.1.0")
    monkeypatch.setattr(build, "BUNDLE", bundle)
    build.check_bundle("0.1.0")


@posix_only
@pytest.mark.parametrize("problem", ["wrong-version", "no-app", "no-resources"])
def test_build_smoke_check_rejects_a_broken_bundle(tmp_path, monkeypatch, problem):
    build = load_build_module()
    bundle = tmp_path / "dist" / "fgdesk"
    make_fake_bundle(bundle, "fgdesk 0.0.0+source" if problem == "wrong-version" else "fgdesk 0.1.0")
    if problem == "no-app":
        (bundle / "fgdesk-app").unlink()
    if problem == "no-resources":
        shutil.rmtree(bundle / "_internal" / "fgdesk")
    monkeypatch.setattr(build, "BUNDLE", bundle)
    with pytest.raises(build.BuildError):
        build.check_bundle("0.1.0")


def test_build_refuses_a_stale_install(monkeypatch):
    build = load_build_module()
    monkeypatch.setitem(sys.modules, "PyInstaller", types.ModuleType("PyInstaller"))
    monkeypatch.setattr(build, "installed_version", lambda: "0.0.1")
    with pytest.raises(build.BuildError, match="pyproject.toml says"):
        build.check_environment()
    monkeypatch.setattr(build, "installed_version", lambda: build.project_version())
    assert build.check_environment() == pyproject()["project"]["version"]


@pytest.mark.parametrize("line, expected", [("cuda: Optional[str] = '13.0'", "13.0"),
                                            ("cuda: Optional[str] = None", None)])
def test_build_tells_a_cuda_torch_from_a_cpu_only_one(tmp_path, monkeypatch, line, expected):
    build = load_build_module()
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "version.py").write_text(f"from typing import Optional\n__version__ = '9.9'\n{line}\n")
    for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert build.torch_cuda_version() == expected


@posix_only
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux desktop install")
def test_install_kit_installs_and_uninstalls_for_one_user(tmp_path, monkeypatch):
    build = load_build_module()
    bundle = tmp_path / "dist" / "fgdesk"
    make_fake_bundle(bundle, "fgdesk 0.1.0")
    monkeypatch.setattr(build, "BUNDLE", bundle)
    monkeypatch.setattr(build, "ROOT", tmp_path)
    build.write_linux_install_kit()

    home = tmp_path / "home"
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run(["sh", str(bundle / "install.sh")], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    local = home / ".local"
    installed = local / "opt" / "fgdesk"
    assert (installed / "fgdesk").is_file() and not (installed / "install.sh").exists()
    for name in ("fgdesk", "fgdesk-app"):
        link = local / "bin" / name
        assert link.is_symlink() and link.resolve() == (installed / name).resolve()
    run = subprocess.run([str(local / "bin" / "fgdesk")], capture_output=True, text=True)
    assert run.stdout.strip() == "fgdesk 0.1.0"
    desktop = local / "share" / "applications" / "fgdesk.desktop"
    assert f'Exec="{installed}/fgdesk"' in desktop.read_text().splitlines()
    assert (local / "share" / "metainfo" / f"{APP_ID}.metainfo.xml").is_file()
    for size in ICON_SIZES:
        icon = local / "share" / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "fgdesk.png"
        with Image.open(icon) as image:
            assert image.size == (size, size)
    assert (local / "share" / "icons" / "hicolor" / "scalable" / "apps" / "fgdesk.svg").is_file()

    result = subprocess.run(["sh", str(bundle / "install.sh"), "--uninstall"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not installed.exists()
    assert not (local / "bin" / "fgdesk").exists() and not (local / "bin" / "fgdesk").is_symlink()
    assert not desktop.exists()


@posix_only
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux desktop install")
def test_install_script_desktop_only_mode_for_pip_installs(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fgdesk").write_text("#!/bin/sh\necho fgdesk 0.1.0\n")
    (bin_dir / "fgdesk").chmod(0o755)
    home = tmp_path / "home"
    env = {"HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"}
    result = subprocess.run(["sh", str(PACKAGING / "install-linux.sh"), "--desktop-only"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    share = home / ".local" / "share"
    installed = (share / "applications" / "fgdesk.desktop").read_text(encoding="utf-8")
    assert installed == DESKTOP_FILE.read_text(encoding="utf-8"), "Exec=fgdesk must stay as is"
    assert (share / "icons" / "hicolor" / "48x48" / "apps" / "fgdesk.png").is_file()
    assert not (home / ".local" / "opt").exists() and not (home / ".local" / "bin").exists()

    env["PATH"] = "/usr/bin:/bin"  # no fgdesk command: refuse rather than install a dead entry
    shutil.rmtree(home)
    result = subprocess.run(["sh", str(PACKAGING / "install-linux.sh"), "--desktop-only"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0 and not home.exists()


@posix_only
def test_install_script_refuses_a_missing_bundle(tmp_path):
    env = {"HOME": str(tmp_path / "home"), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run(["sh", str(PACKAGING / "install-linux.sh"), str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0
    assert "build the bundle first" in result.stderr
    assert not (tmp_path / "home" / ".local" / "opt").exists()


# ---------------------------------------------------------------------------------------
# The real build: minutes of CPU time and gigabytes of disk, so only on request.

@pytest.mark.skipif(os.environ.get("FGDESK_BUILD_BUNDLE") != "1",
                    reason="set FGDESK_BUILD_BUNDLE=1 to build the PyInstaller bundle")
@pytest.mark.timeout(3600)
def test_bundle_builds_and_reports_its_version():
    pytest.importorskip("PyInstaller", reason="install fgdesk[package] to build the bundle")
    result = subprocess.run([sys.executable, str(PACKAGING / "build.py")], cwd=ROOT,
                            capture_output=True, text=True, timeout=3500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    bundle = ROOT / "dist" / "fgdesk"
    suffix = ".exe" if os.name == "nt" else ""
    version = pyproject()["project"]["version"]
    run = subprocess.run([str(bundle / f"fgdesk{suffix}"), "--version"], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert run.returncode == 0, run.stderr
    assert f"fgdesk {version}" in run.stdout + run.stderr
    assert (bundle / f"fgdesk-app{suffix}").is_file()
    assert any(bundle.rglob("fgdesk/resources/icons/fgdesk-256.png"))
    # Compiled modules and libraries only (PyInstaller may still copy type stubs, *.pyi).
    bundled = [p.name for p in bundle.rglob("*") if p.is_file() and p.suffix != ".pyi"]
    for unused in ("Qt6WebEngineCore", "Qt6Quick", "Qt6Qml", "QtTest.", "QtSql."):
        assert not [n for n in bundled if unused in n], f"{unused} libraries were bundled"
