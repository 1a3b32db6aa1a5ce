"""Small helpers shared by every module: time broadcasting, input checks, device choice.

Data ``x`` is ``(B, ...)`` with any trailing shape; time ``t`` is a ``(B,)`` tensor or a float.
:func:`batch_time` turns a float into a ``(B,)`` tensor and :func:`expand` broadcasts a ``(B,)``
tensor against ``x``; nothing else in sdelab writes ``[:, None, None, None]``.
"""

from __future__ import annotations

import math
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
    """Raise ``ValueError`` if ``x`` holds NaN or infinite values."""
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
