"""Time every chapter, idle and with one core busy; write the table into the repository.

    python tools/time_chapters.py                  # every book/*.ipynb, both columns
    python tools/time_chapters.py book/03_*.ipynb --only idle
    python tools/time_chapters.py --check-budget        # exit 1 if a budget is exceeded

Each chapter runs as nbval runs it (a fresh kernel of this Python, in its own folder)
and is not saved. "idle" is whatever the machine is doing (the load average before each
run is recorded: run it on a quiet machine); "one core busy" starts one CPU-bound
process (a Python spin loop) for the chapter's duration, as a browser tab or a second
notebook would. Thread settings such as ``OMP_NUM_THREADS`` are removed from the
kernel's environment (a reader's laptop has none), and OpenMP's wait settings are left
to the chapter's first cell (``import sdelab`` bounds the spin-wait).

Rows are kept per (chapter, machine): a run on another machine (a GPU, a laptop) adds
rows, a rerun replaces its own. The results go to

* ``checkpoints/results/chapter-times.csv``: the data (shipped with the package, so a
  chapter can read it through ``sdelab.checkpoints.registry_dir() / "results"``);
* ``book/runtimes.md``: the same as a Markdown table, for the book and the README.

Budgets (issue 13): each chapter <= 3 minutes and the whole book <= 20 minutes on an
idle 2-core CPU; ``--check-budget`` turns a miss on this machine into exit status 1.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "checkpoints" / "results" / "chapter-times.csv"
MD = ROOT / "book" / "runtimes.md"
FIELDS = [
    "chapter",
    "idle_s",
    "busy_s",
    "slowest_cell_s",
    "machine",
    "idle_load",
    "measured",
    "openmp",
]
# what OpenMP waited with: sdelab's bound since issue 19's second measurement; the first
# rows (no column yet) were measured with OMP_WAIT_POLICY=PASSIVE
OLD_OPENMP = "OMP_WAIT_POLICY=PASSIVE"
CHAPTER_BUDGET_S, BOOK_BUDGET_S = 180, 1200


def machine() -> str:
    """CPU model, cores, torch threads and GPU (if any): what a reader compares with."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f", {torch.cuda.get_device_name(0)}"
        desc += f", torch {torch.__version__.split('+')[0]}"
    except ImportError:
        pass
    return desc


def run_chapter(path: Path, timeout: int) -> tuple[float, float]:
    """Execute a chapter without saving it; returns (wall s, slowest cell's s)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - start
    slowest = 0.0
    for cell in nb.cells:
        ex = cell.get("metadata", {}).get("execution", {})
        a, b = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
        if a and b:
            dt = datetime.datetime.fromisoformat(
                b.replace("Z", "+00:00")
            ) - datetime.datetime.fromisoformat(a.replace("Z", "+00:00"))
            slowest = max(slowest, dt.total_seconds())
    return wall, slowest


class BusyCore:
    """One CPU-bound process for the duration of a ``with`` block."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def read_rows() -> list[dict]:
    if not CSV.exists():
        return []
    with CSV.open(newline="") as f:
        return [{**r, "openmp": r.get("openmp") or OLD_OPENMP} for r in csv.DictReader(f)]


def write(rows: list[dict]) -> None:
    rows.sort(key=lambda r: (r["machine"], r["chapter"]))
    CSV.parent.mkdir(parents=True, exist_ok=True)
    tmp = CSV.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, CSV)
    lines = [
        "# Chapter run times",
        "",
        "Written by `tools/time_chapters.py` (do not edit by hand): wall time of",
        "each chapter, executed top to bottom in a fresh kernel, on an idle machine",
        "and with one other CPU-bound process running. Budget: 3 minutes a chapter,",
        '20 minutes the book, on an idle 2-core CPU. "load before" is the 1-minute',
        "load average when the idle run started: near 0 on a quiet machine; higher",
        'means it was not idle. "OpenMP" is how torch\'s idle threads waited (chapter',
        "9, \"A busy machine\"): sdelab's bounded spin, or sleeping at once (PASSIVE).",
        "",
    ]
    for m in sorted({r["machine"] for r in rows}):
        mine = [r for r in rows if r["machine"] == m]
        lines += [
            f"**{m}**",
            "",
            "| chapter | idle (s) | one core busy (s) | slowest cell (s) "
            "| load before | OpenMP |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in mine:
            lines.append(
                f"| {r['chapter']} | {r['idle_s'] or '-'} | {r['busy_s'] or '-'} "
                f"| {r['slowest_cell_s'] or '-'} | {r['idle_load'] or '-'} "
                f"| {r['openmp']} |"
            )
        tot = [
            sum(float(r[k]) for r in mine if r[k]) if all(r[k] for r in mine) else None
            for k in ("idle_s", "busy_s")
        ]
        lines.append(
            f"| **book** | {f'{tot[0]:.0f}' if tot[0] is not None else '-'} "
            f"| {f'{tot[1]:.0f}' if tot[1] is not None else '-'} | | | |"
        )
        lines.append("")
    MD.write_text("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "chapters", nargs="*", help="notebooks (default: every book/*.ipynb)"
    )
    p.add_argument("--only", choices=("idle", "busy"), help="measure one column only")
    p.add_argument(
        "--timeout", type=int, default=1800, help="seconds per cell before failing"
    )
    p.add_argument(
        "--check-budget", action="store_true", help="exit 1 if a budget is exceeded"
    )
    args = p.parse_args(argv)
    paths = [Path(c).resolve() for c in args.chapters] or sorted(
        (ROOT / "book").glob("*.ipynb")
    )
    sys.path.insert(0, str(ROOT))
    import sdelab  # the kernels' setting (read before the variables are cleared)

    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        os.environ.pop(k, None)  # inherited by the kernels: measure what a reader gets
    here = machine()
    rows = read_rows()
    over = []
    for path in paths:
        name = path.stem
        row = next(
            (r for r in rows if r["chapter"] == name and r["machine"] == here), None
        )
        if row is None:
            row = dict.fromkeys(FIELDS, "") | {"chapter": name, "machine": here}
            rows.append(row)
        if args.only != "busy":
            row["idle_load"] = f"{os.getloadavg()[0]:.2f}"
            wall, slowest = run_chapter(path, args.timeout)
            row["idle_s"], row["slowest_cell_s"] = f"{wall:.1f}", f"{slowest:.1f}"
            print(
                f"{name}: idle {wall:.1f} s (slowest cell {slowest:.1f} s, load before "
                f"{row['idle_load']})",
                flush=True,
            )
            if wall > CHAPTER_BUDGET_S:
                over.append(f"{name} idle {wall:.0f} s > {CHAPTER_BUDGET_S} s")
        if args.only != "idle":
            with BusyCore():
                wall, _ = run_chapter(path, args.timeout)
            row["busy_s"] = f"{wall:.1f}"
            print(f"{name}: one core busy {wall:.1f} s", flush=True)
        row["measured"] = datetime.date.today().isoformat()
        row["openmp"] = f"GOMP_SPINCOUNT={sdelab.SPINCOUNT}"
        write(rows)  # after every chapter: a stopped run keeps what it measured
    mine = [r for r in rows if r["machine"] == here and r["idle_s"]]
    total = sum(float(r["idle_s"]) for r in mine)
    print(
        f"book, idle: {total:.0f} s over {len(mine)} chapters; written to "
        f"{CSV.relative_to(ROOT)} and {MD.relative_to(ROOT)}"
    )
    if (
        len(mine) == len(list((ROOT / "book").glob("*.ipynb")))
        and total > BOOK_BUDGET_S
    ):
        over.append(f"book idle {total:.0f} s > {BOOK_BUDGET_S} s")
    if over:
        print("over budget: " + "; ".join(over), file=sys.stderr)
        return 1 if args.check_budget else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
