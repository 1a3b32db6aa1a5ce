"""Argument checks, one call per argument at the door of a public function.

"Checks at the door, maths inside": a public function validates each argument once, through
these helpers, and the steps and per-evaluation code behind it contain the maths only (no host
reads such as ``.item()``). Every helper returns the checked, normalised value, so a door reads

    steps = checks.integer(steps, "steps", minimum=1)
    snr = checks.real(snr, "snr", positive=True)
    generator = checks.generator(generator, like=x_T)

Conventions, the same in every module:

* ``TypeError`` for a value of the wrong type (a string where a number belongs, a float where
  an integer belongs, ``True`` where a number belongs);
* ``ValueError`` for a value of the right type outside what is allowed (negative, NaN, unknown
  name, wrong shape);
* the message names the argument, what it got and what is allowed.

This module imports nothing of sdelab at import time, so every other module may use it.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, Callable, Iterable, Sequence

import torch

Tensor = torch.Tensor

__all__ = [
    "integer",
    "real",
    "boolean",
    "choice",
    "callable_",
    "generator",
    "tensor",
    "finite",
    "in_range",
    "time",
    "time_in_range",
    "same_shape",
    "score_output",
    "sde",
    "output_path",
    "input_file",
]


def _got(value: Any) -> str:
    """``value!r (type)``, shortened: what an error message says the caller passed."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _bounds_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts)


def integer(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an ``int``; it must be an integer (not a bool) in ``[minimum, maximum]``.

    Raises:
        TypeError: ``value`` is not an integer (``2.0``, ``"2"`` and ``True`` are refused).
        ValueError: it lies outside ``[minimum, maximum]``.
    """
    allowed = "an integer" + (" " + _bounds_text(minimum, maximum, False, False)
                              if minimum is not None or maximum is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {allowed}, got {_got(value)}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def real(
    value: Any,
    name: str,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    finite: bool = True,
) -> float:
    """Return ``value`` as a ``float``; it must be a real number (not a bool or a string).

    Args:
        positive: require ``value > 0``.
        nonnegative: require ``value >= 0``.
        lo, hi: bounds, closed unless ``lo_open``/``hi_open``.
        finite: refuse NaN and infinities (the default; NaN is always refused).

    A one-element tensor is accepted and read once (a host read: at the door only).

    Raises:
        TypeError: not a real number.
        ValueError: NaN, infinite (when ``finite``), or outside the bounds.
    """
    if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_got(value)}")
    value = float(value)
    if positive:
        lo, lo_open = (0.0, True) if lo is None or lo <= 0 else (lo, lo_open)
    elif nonnegative and (lo is None or lo < 0):
        lo, lo_open = 0.0, False
    rule = _bounds_text(lo, hi, lo_open, hi_open)
    allowed = "a finite number" if finite else "a number"
    allowed += f" {rule}" if rule else ""
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be {allowed}, got {value}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ValueError(f"{name} must be {allowed}, got {value:g}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ValueError(f"{name} must be {allowed}, got {value:g}")
    return value


def boolean(value: Any, name: str) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (numpy bools too); otherwise ``TypeError``."""
    if isinstance(value, bool):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool"):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {_got(value)}")


def choice(value: Any, name: str, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed`` (e.g. a sampler name); otherwise an error.

    Raises:
        TypeError: ``allowed`` holds strings and ``value`` is not a string.
        ValueError: ``value`` is not among ``allowed``.
    """
    allowed = tuple(allowed)
    text = ", ".join(repr(a) for a in allowed)
    if allowed and all(isinstance(a, str) for a in allowed) and not isinstance(value, str):
        raise TypeError(f"{name} must be one of {text}; got {_got(value)}")
    try:
        ok = value in allowed
    except TypeError:  # unhashable or incomparable
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {text}; got {value!r}")
    return value


def callable_(fn: Any, name: str, signature: str = "") -> Callable:
    """Return ``fn`` if it is callable; ``signature`` (e.g. ``"score_fn(x, t)"``) goes into the message."""
    if not callable(fn):
        how = f" as {signature}" if signature else ""
        raise TypeError(f"{name} must be callable{how}, got {_got(fn)}")
    return fn


def generator(
    value: Any,
    name: str = "generator",
    *,
    like: Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Generator | None:
    """A ``torch.Generator`` (or ``None``) from a generator, an int seed, or ``None``.

    An int seed ``s`` becomes ``torch.Generator(device).manual_seed(s)`` on the device of ``like``
    (or ``device``; the CPU when neither is given), so ``seed=0`` and
    ``torch.Generator(...).manual_seed(0)`` give the same numbers. A generator must live on the
    same device type as ``like``/``device``: torch refuses to draw CUDA numbers from a CPU one.

    Raises:
        TypeError: anything other than a generator, a non-negative int, or ``None``.
        ValueError: a negative seed, or a generator on another device.
    """
    if value is None:
        return None
    target = like.device if like is not None else (torch.device(device) if device is not None else None)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name} as a seed must be an integer >= 0, got {value}")
        return torch.Generator(device=target or "cpu").manual_seed(int(value))
    if not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator, an int seed or None; got {_got(value)}")
    if target is not None and value.device.type != target.type:
        raise ValueError(
            f"{name} is on {value.device} but the tensors are on {target}; create it with "
            f"torch.Generator(device={str(target)!r}) or pass an int seed"
        )
    return value


def tensor(
    x: Any,
    name: str,
    *,
    ndim: int | None = None,
    min_ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    floating: bool = False,
    finite: bool = True,
    nonempty: bool = True,
) -> Tensor:
    """Return ``x`` if it is a ``torch.Tensor`` meeting the requirements.

    Args:
        ndim: exact number of dimensions; ``min_ndim``: at least this many.
        shape: required shape, ``None`` entries match any size.
        floating: require a floating-point dtype.
        finite: refuse NaN and infinities (one host read of the whole tensor: at the door only).
        nonempty: refuse a batch of size 0.

    Raises:
        TypeError: not a tensor, or not floating point when required.
        ValueError: wrong shape, empty, or non-finite.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(x.shape)}")
    if min_ndim is not None and x.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(x.shape)}")
    if shape is not None:
        shape = tuple(shape)
        if len(shape) != x.dim() or any(s is not None and s != n for s, n in zip(shape, x.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if nonempty and (x.dim() >= 1 and x.shape[0] == 0 or x.numel() == 0):
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite:
        _finite(x, name)
    return x


def _finite(x: Tensor, name: str) -> None:
    if x.is_floating_point() or x.is_complex():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"{name} contains {bad} NaN or infinite value(s); expected finite values")


def finite(x: Tensor, name: str) -> Tensor:
    """Return ``x`` if every entry is finite; ``ValueError`` counting the NaN/inf entries otherwise."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    _finite(x, name)
    return x


def in_range(x: Tensor, name: str, lo: float, hi: float, hint: str = "") -> Tensor:
    """Return ``x`` if all its values lie in ``[lo, hi]`` (e.g. images in [-1, 1]); ``ValueError`` otherwise."""
    x = tensor(x, name, finite=True)
    got_lo, got_hi = float(x.min()), float(x.max())
    if got_lo < lo or got_hi > hi:
        extra = f"; {hint}" if hint else ""
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}], got values in [{got_lo:g}, {got_hi:g}]{extra}")
    return x


def time(t: Any, name: str, lo: float, hi: float, *, slack: float = 1e-9) -> float:
    """One time for the whole batch as a float in ``[lo, hi]`` (clipped after a relative ``slack``).

    Accepts a Python/numpy real or a one-element tensor (read once, at the door).

    Raises:
        TypeError: not a real number or one-element tensor.
        ValueError: NaN, or outside ``[lo, hi]`` by more than the slack.
    """
    if isinstance(t, Tensor) and t.numel() != 1:
        raise ValueError(f"{name} must be one time for the whole batch (a float), got a tensor of "
                         f"shape {tuple(t.shape)}")
    t = real(t, name)
    s = slack * max(1.0, abs(hi))
    if not (lo - s <= t <= hi + s):
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}], got {t!r}")
    return min(max(t, lo), hi)


def time_in_range(t: Tensor, name: str, lo: float, hi: float, *, slack: float = 1e-6) -> Tensor:
    """Return the time tensor ``t`` if every entry lies in ``[lo, hi]`` (a relative ``slack`` for rounding).

    One host read: call it at the door, never inside a per-evaluation function.
    """
    t = tensor(t, name, finite=False, nonempty=False)
    if t.numel() == 0:
        return t
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN; expected values in [{lo:g}, {hi:g}]")
    s = slack * max(1.0, abs(hi))
    t_min, t_max = float(t.min()), float(t.max())
    if t_min < lo - s or t_max > hi + s:
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}]; got values in [{t_min:g}, {t_max:g}]")
    return t


def same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """``ValueError`` unless tensors ``a`` and ``b`` have the same shape (no silent broadcasting)."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name_a} of shape {tuple(a.shape)} must have the shape of {name_b}, "
                         f"{tuple(b.shape)}")


def score_output(out: Any, x: Tensor, name: str = "score_fn") -> Tensor:
    """Check one evaluation of a score function: a tensor shaped like ``x``, every value finite.

    Meant for a single probe evaluation at the door (e.g. before a long sampling run), so that a
    network returning the wrong shape or NaN fails at once instead of broadcasting into garbage.
    """
    if not isinstance(out, Tensor):
        raise TypeError(f"{name}(x, t) must return a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"{name}(x, t) must return a tensor shaped like x, {tuple(x.shape)}; got "
                         f"{tuple(out.shape)}")
    _finite(out, f"{name}(x, t)")
    return out


def sde(value: Any, name: str = "sde"):
    """Return ``value`` if it is an :class:`sdelab.sde.SDE`; ``TypeError`` otherwise."""
    from .sde import SDE  # imported here: checks is a leaf module that sde itself uses

    if not isinstance(value, SDE):
        raise TypeError(f"{name} must be an sdelab SDE (e.g. sdelab.make_sde('vp-linear')), "
                        f"got {type(value).__name__}")
    return value


def output_path(path: Any, name: str, *, suffixes: Sequence[str] = ()) -> str:
    """Check, before any work, that a file can be written at ``path``; return it as a string.

    The path must name a file (not end in a separator or be a directory), carry one of
    ``suffixes`` when given, and its folder must exist or be creatable and be writable.
    Nothing is created.

    Raises:
        TypeError: ``path`` is not a string or ``os.PathLike``.
        ValueError: a directory, a wrong suffix, or a folder that cannot be written.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path, got {_got(path)}")
    text = os.fspath(path)
    if not text or text.endswith(("/", os.sep)) or os.path.isdir(text):
        raise ValueError(f"{name} must name a file, got the directory {text!r}")
    if suffixes and not text.lower().endswith(tuple(s.lower() for s in suffixes)):
        raise ValueError(f"{name} must end in {' or '.join(suffixes)}, got {text!r}")
    folder = os.path.dirname(os.path.abspath(text))
    existing = folder
    while not os.path.exists(existing):  # the first existing ancestor decides
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise ValueError(f"{name}: cannot create the folder of {text!r}; {existing!r} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: cannot write {text!r}; the folder {existing!r} is not writable")
    if os.path.exists(text) and not os.access(text, os.W_OK):
        raise ValueError(f"{name}: cannot overwrite {text!r}; the file is read-only")
    return text


def input_file(path: Any, name: str) -> str:
    """Return ``path`` as a string if it names an existing, readable file; ``ValueError`` otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path, got {_got(path)}")
    text = os.fspath(path)
    if not os.path.isfile(text):
        raise ValueError(f"{name}: no such file {text!r}")
    if not os.access(text, os.R_OK):
        raise ValueError(f"{name}: cannot read {text!r}")
    return text
