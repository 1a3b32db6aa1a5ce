"""ruff on the library and the tests (configuration: ruff.toml at the repository root).

Nothing is skipped: without ruff the test fails and says how to install it.
"""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _ruff() -> list[str] | None:
    beside = Path(sys.executable).with_name("ruff")  # the test's own environment first
    if beside.exists():
        return [str(beside)]
    found = shutil.which("ruff")
    return [found] if found else None


def test_ruff_finds_nothing():
    ruff = _ruff()
    assert ruff is not None, "ruff is not installed: pip install ruff (or pip install -e '.[test]')"
    out = subprocess.run([*ruff, "check", "--no-cache", "sdelab", "tests"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
