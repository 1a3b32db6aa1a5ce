"""Every chapter's first code cell is the same install cell; this writes or checks it.

    python tools/install_cell.py          # rewrite each book/*.ipynb's first code cell
    python tools/install_cell.py --check  # exit 1 naming each chapter that differs

The cell makes a chapter run as-is in Colab or Binder: it imports sdelab before
anything imports torch (sdelab bounds OpenMP's spin-wait before torch loads, so a busy
machine slows a chapter about 2x instead of 3-40x; see README, "A busy machine"), and
installs sdelab with the ``[chapters]`` extra from the repository when it is not
importable. The repository URL is read from ``_config.yml``
(``repository.url``), the one place it is set. Only the cell's source is written; its
outputs (none) and metadata stay, and the rest of the notebook is untouched, so nbval's
stored outputs remain valid. ``tests/test_packaging.py`` runs the check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXTRA = "chapters"

TEMPLATE = """\
# Runs as-is in Colab or Binder: installs sdelab there (a checkout already has it).
# sdelab comes before torch: it bounds OpenMP's spin-wait, so a busy machine slows a
# chapter ~2x, not 3-40x (README: "A busy machine").
try:
    import sdelab
except ImportError:
    import subprocess, sys

    spec = "sdelab[{extra}] @ git+{url}"
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", spec])
    import sdelab"""


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def install_cell_source() -> str:
    """The install cell's source, with the URL from ``_config.yml``."""
    return TEMPLATE.format(extra=EXTRA, url=repository_url())


def pip_command() -> str:
    """What the cell runs when sdelab is missing, as a shell command."""
    return f'pip install -q "sdelab[{EXTRA}] @ git+{repository_url()}"'


def first_code_cell(nb: dict) -> dict:
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            return cell
    raise ValueError("the notebook has no code cell")


def chapters() -> list[Path]:
    return sorted((ROOT / "book").glob("*.ipynb"))


def main(argv: list[str]) -> int:
    check = "--check" in argv
    want = install_cell_source()
    bad = []
    for path in chapters():
        text = path.read_text()
        nb = json.loads(text)
        cell = first_code_cell(nb)
        if "".join(cell["source"]) == want:
            continue
        bad.append(path.name)
        if not check:
            cell["source"] = want.splitlines(keepends=True)
            # the layout nbformat writes (indent 1, UTF-8 kept), so the diff is the cell
            # alone
            path.write_text(
                json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
            )
    if check and bad:
        print(
            "install cell differs from tools/install_cell.py in: "
            + ", ".join(bad)
            + "\nfix: python tools/install_cell.py",
            file=sys.stderr,
        )
        return 1
    print(
        ("rewrote: " + ", ".join(bad))
        if bad and not check
        else "all install cells are current"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
