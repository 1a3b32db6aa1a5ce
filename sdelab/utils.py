"""Small helpers shared by every module: time broadcasting, input checks, device choice.

Data ``x`` is ``(B, ...)`` with any trailing shape; time ``t`` is a ``(B,)`` tensor or a float.
:func:`batch_time` turns a float into a ``(B,)`` tensor and :func:`expand` broadcasts a ``(B,)``
tensor against ``x``; nothing else in sdelab writes ``[:, None, None, None]``.
"""

from __future__ import annotations

import errno
import math
import os
import re
from pathlib import Path
from typing import Callable, Union

import torch

Tensor = torch.Tensor
TimeLike = Union[float, int, Tensor]
ScoreFn = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "Tensor",
    "TimeLike",
    "ScoreFn",
    "default_device",
    "expand",
    "batch_time",
    "check_finite",
    "check_time_range",
    "atomic_write",
    "atomic_write_many",
    "atomic_write_text",
    "atomic_torch_save",
    "remove_stale_temporaries",
]


def default_device() -> torch.device:
    """CUDA when present (readers on Colab or a workstation), otherwise the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def expand(v: Tensor, x: Tensor) -> Tensor:
    """View a per-sample ``(B,)`` tensor ``v`` so that it broadcasts against ``x`` of shape ``(B, ...)``."""
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))


def batch_time(t: TimeLike, x: Tensor, name: str = "t") -> Tensor:
    """Return time as a ``(B,)`` tensor on ``x``'s device and dtype.

    A float (or 0-d tensor) is broadcast to every sample; a 1-d tensor must have one entry per
    sample of ``x``.
    """
    if isinstance(t, bool) or not isinstance(t, (int, float, Tensor)):
        raise TypeError(f"{name} must be a float or a tensor of shape (B,), got {type(t).__name__}")
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    t = torch.as_tensor(t, dtype=dtype, device=x.device)
    if t.dim() == 0:
        return t.expand(x.shape[0])
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} must be a float or have shape (B,) = ({x.shape[0]},) to match x of shape "
            f"{tuple(x.shape)}; got shape {tuple(t.shape)}"
        )
    return t


def check_finite(x: Tensor, name: str = "x") -> Tensor:
    """Raise ``ValueError`` if ``x`` holds NaN or infinite values (see also :func:`sdelab.checks.finite`)."""
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); expected finite values")
    return x


def check_time_range(t: Tensor, lo: float, hi: float, name: str = "t") -> Tensor:
    """Raise ``ValueError`` unless every entry of ``t`` lies in ``[lo, hi]`` (a 1e-6 slack for rounding)."""
    slack = 1e-6 * max(1.0, abs(hi))
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN; expected values in [{lo:g}, {hi:g}]")
    t_min, t_max = t.min().item(), t.max().item()
    if t_min < lo - slack or t_max > hi + slack:
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}]; got values in [{t_min:g}, {t_max:g}]")
    return t


def log_normal_const(d: int) -> float:
    """``d/2 * log(2 pi)``, the constant of a ``d``-dimensional Gaussian log-density."""
    return 0.5 * d * math.log(2 * math.pi)


# ----------------------------------------------------------------------------------------------
# Atomic writes: the one place that writes a file other code may read while it is being replaced
# ----------------------------------------------------------------------------------------------
_TMP = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers are stale by definition: we write one at a time
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete ``.<name>.tmp<PID>`` files in ``folder`` left by a killed writer; returns what went.

    A temporary file whose writing process is still alive is kept (it may be mid-save). With
    ``name``, only temporaries of that file name are considered.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP.match(p.name)
        if m and (name is None or m["name"] == name) and not _pid_alive(int(m["pid"])):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], mode: int = 0o644) -> Path:
    """Write a file atomically: ``write(tmp)`` fills a temporary file beside ``path``, then rename.

    Readers see either the old file or the complete new one, never a half-written file (POSIX
    ``rename`` within one folder is atomic). Stale temporaries of earlier killed writers are
    removed first (on a full disk they would keep it full); a failed write removes its own
    temporary, leaves the old file in place and raises ``OSError`` naming ``path`` (``torch.save``
    reports a full disk as an obscure ``RuntimeError``; it is translated here).
    """
    return atomic_write_many({path: write}, mode)[0]


def atomic_write_many(writers: dict, mode: int = 0o644) -> list[Path]:
    """:func:`atomic_write` of several files that belong together (weights and their card).

    Every temporary is written and synced first; only when all succeeded are they renamed, one
    right after the other. A failure while writing leaves every old file untouched.
    """
    tmps = []
    try:
        for path, write in writers.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path.parent, path.name)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmps.append((tmp, path))
            write(tmp)
            with open(tmp, "rb+") as f:  # on disk before the rename: a crash cannot leave an empty file
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
        for tmp, path in tmps:
            os.replace(tmp, path)
    except BaseException as e:
        for tmp, _ in tmps:
            try:
                tmp.unlink()
            except OSError:
                pass
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, NotImplementedError):
            text = str(e)
            full = getattr(e, "errno", None) == errno.ENOSPC or "enforce fail" in text or "No space" in text
            why = "the disk is full (or the file too large)" if full else f"{type(e).__name__}: {e}"
            where = tmps[-1][1] if tmps else "?"
            raise OSError(getattr(e, "errno", None) or errno.EIO, f"could not write {where}: {why}") from e
        raise
    return [path for _, path in tmps]


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a text file (UTF-8)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` through :func:`atomic_write` (never a half file, a clear error on a full disk)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
