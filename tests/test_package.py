"""The package surface: lazy submodules, a light import, real docstrings on every public name."""

import importlib
import inspect
import subprocess
import sys

import pytest

import sdelab



def test_submodules_are_reachable_from_the_package():
    code = ("import sdelab, sys; "
            "heavy = [m for m in ('matplotlib', 'scipy', 'torchvision', 'sdelab.plot') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "assert callable(sdelab.samplers.euler_maruyama) and callable(sdelab.toy.gaussian); "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sdelab.nope  # noqa: B018
    assert set(sdelab.SUBMODULES) <= set(dir(sdelab))


def _documentable(obj, mod) -> bool:
    """Classes and functions defined in ``mod``; constants, aliases and re-exports are the module's."""
    return (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", None) == mod.__name__


def _missing_docstrings(mod_name: str) -> list[str]:
    mod = importlib.import_module(f"sdelab.{mod_name}")
    missing = [] if mod.__doc__ and len(mod.__doc__.strip()) > 20 else ["(module)"]
    for name in getattr(mod, "__all__", ()):
        obj = getattr(mod, name)
        if not _documentable(obj, mod):
            continue
        if len((obj.__doc__ or "").strip()) < 10:
            missing.append(name)
        if inspect.isclass(obj):  # public methods and properties defined in this class
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                    continue
                if not (inspect.getdoc(getattr(obj, attr, None)) or "").strip():
                    missing.append(f"{name}.{attr}")
    return missing


@pytest.mark.parametrize("mod_name", sdelab.SUBMODULES)
def test_every_public_name_has_a_docstring(mod_name):
    missing = _missing_docstrings(mod_name)
    assert not missing, f"sdelab.{mod_name}: no docstring for {missing}"
