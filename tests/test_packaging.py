"""Packaging: the wheel carries every module and every shipped weights file, and setuptools has nothing to ignore.

setuptools treats each folder under ``sora_nb/`` (with or without ``__init__.py``) as an importable package. One
that ``pyproject.toml``'s ``packages`` leaves out makes it warn that the package "would be ignored", and its files
are shipped as package data only until setuptools stops doing that: the embedded model would then be missing from
a user's ``pip install``.
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sora_nb"


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folders() -> set[str]:
    """The dotted name of every folder under sora_nb/ that holds a file (caches aside)."""
    names = set()
    for path in PACKAGE.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            names.add(".".join(path.parent.relative_to(ROOT).parts))
    return names


def _shipped_files() -> list[str]:
    """Every file of the embedded model's weights folder, as a path inside the wheel."""
    return sorted(str(p.relative_to(ROOT)) for p in (PACKAGE / "weights").rglob("*") if p.is_file())


def test_every_folder_under_the_package_is_listed():
    config = _config()
    listed = set(config["packages"])
    missing = sorted(_folders() - listed)
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"
    # and every listed package exists (a renamed folder is not left behind in the list)
    dirs = config.get("package-dir", {})
    for name in listed:
        folder = ROOT / dirs[name] if name in dirs else ROOT.joinpath(*name.split("."))
        assert folder.is_dir(), f"pyproject.toml lists {name}, but {folder} is not a folder"


def test_the_weights_globs_cover_every_shipped_file():
    globs = _config()["package-data"]["sora_nb"]
    covered = {str(p.relative_to(ROOT)) for g in globs for p in PACKAGE.glob(g) if p.is_file()}
    files = _shipped_files()
    assert len(files) >= 10 and any(f.endswith("manifest.json") for f in files)
    assert sorted(set(files) - covered) == []


def test_the_wheel_ships_the_model_and_setuptools_ignores_nothing(tmp_path):
    # the source tree is copied without build outputs, so the wheel is built from what git would give a user
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    paths = [p for p in tracked.decode().split("\0") if p and (ROOT / p).is_file()]
    if not paths:
        pytest.skip("not a git checkout")
    for rel in paths:
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((ROOT / rel).read_bytes())
    out = tmp_path / "wheel"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(out)], capture_output=True, text=True, timeout=300)
    log = build.stdout + build.stderr
    assert build.returncode == 0, log[-3000:]
    assert "would be ignored" not in log and "BuildBackendWarning" not in log, log[-3000:]
    (wheel,) = out.glob("sora_nb-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        shipped = sorted(set(_shipped_files()) & set(paths))
        assert shipped and sorted(set(shipped) - names) == []
        for f in shipped:  # byte for byte: the manifest's sha256 checks them at load
            assert z.read(f) == (ROOT / f).read_bytes(), f
    assert {"sora_nb/__init__.py", "sora_nb/models/__init__.py", "sora_nb/_frontend/README.md"} <= names
    # every front-end module of widgets/ ships as sora_nb/_frontend/<name>
    modules = sorted(p.name for p in (ROOT / "widgets").iterdir() if p.suffix in (".js", ".css"))
    assert "_common.js" in modules and sorted(f"sora_nb/_frontend/{m}" for m in modules if
                                              f"sora_nb/_frontend/{m}" not in names) == []
    # installed from the wheel alone (no source tree beside it), the package imports, finds its widget modules
    # and its weights, and declares its console script
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
                              str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, (install.stdout + install.stderr)[-3000:]
    probe = ("import sys, sora_nb\n"
             "from sora_nb.frontend import read_module\n"
             f"assert sora_nb.__file__.startswith({str(site)!r}), sora_nb.__file__\n"
             f"for m in {[m for m in modules if m.endswith('.js') and m != '_common.js']!r}:\n"
             "    assert 'export default' in read_module(m), m\n"
             "gen = sora_nb.load('shapes')\n"
             "print(gen.backend.describe()['weights_sha256'])\n")
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    from sora_nb.backends.embedded import weights_digest

    assert run.stdout.split()[-1] == weights_digest(json.loads((PACKAGE / "weights" / "shapes" / "manifest.json").read_text()))
    (entry_points,) = site.glob("sora_nb-*.dist-info/entry_points.txt")
    assert "sora-nb = sora_nb.cli:main" in entry_points.read_text()


def test_import_is_light_and_every_public_name_resolves():
    """`import sora_nb` loads no torch (the console answers --help and --version at once); every public name
    resolves on use, `controls` as the function even after its submodule was imported (it was a module then:
    'module' object is not callable), and every dataset has `.sora` after `import sora_nb` alone."""
    code = """
import sys
import sora_nb
assert "torch" not in sys.modules and "ipywidgets" not in sys.modules, sorted(m for m in sys.modules if "torch" in m)[:3]
import xarray as xr, numpy as np
assert xr.Dataset({"a": ("x", np.zeros(2))}).sora.megabytes > 0
from sora_nb.controls import Controls
assert callable(sora_nb.controls) and sora_nb.controls.__module__ == "sora_nb.controls"
assert all(hasattr(sora_nb, name) for name in sora_nb.__all__) and set(sora_nb.__all__) <= set(dir(sora_nb))
assert sora_nb.media.__name__ == "sora_nb.media" and sora_nb.world.parse
try:
    sora_nb.no_such_name
except AttributeError as err:
    assert "no attribute 'no_such_name'" in str(err)
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
