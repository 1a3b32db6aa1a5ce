r"""Samplers for the reverse-time SDE and the probability-flow ODE, each a short plain function.

Every sampler has the shape ``sampler(score_fn, sde, x_T, *, steps, grid, generator, denoise,
return_trajectory, ...) -> SampleResult`` and integrates from ``x_T`` at :math:`t = T` down to
:math:`t = \epsilon` (``sde.eps``) along a decreasing time grid
:math:`T = t_0 > t_1 > \dots > t_S = \epsilon` (:func:`time_grid`). Write :math:`h_i = t_{i+1} - t_i < 0`,
:math:`f(t), g(t)` for the SDE's drift and diffusion coefficients, :math:`\alpha(t), \sigma(t)` for
its transition kernel :math:`\mathcal N(\alpha x_0, \sigma^2 I)` and :math:`s = s(x, t)` for the
score. ``steps`` is always the number of grid intervals :math:`S`; the number of score
evaluations (NFE) it costs is reported in :attr:`SampleResult.nfe`:

=========================  ====================================================  ===========  =====
sampler                    update from :math:`t_i` to :math:`t_{i+1}`            NFE          order
=========================  ====================================================  ===========  =====
:func:`euler_maruyama`     :math:`x + [f x - g^2 s]h + g\sqrt{-h}\,z`            S            1 (weak)
:func:`reverse_diffusion`  :math:`(2 - a)x + G^2 s + G z` (Song et al. eq. 46)   S            1 (weak)
:func:`predictor_corrector`  a predictor step, then M Langevin steps (Alg. 1)    S (1 + M)    --
:func:`probability_flow_euler`  :math:`x + [f x - \tfrac12 g^2 s]h`              S            1
:func:`heun`               Euler, then the trapezoidal correction (EDM Alg. 1)   2 S          2
:func:`dpm_solver`         exponential integrator in :math:`\lambda` (Lu et al.)  S or 2 S    1 or 2
:func:`probability_flow_rk45`  adaptive Runge--Kutta (scipy ``solve_ivp``)       adaptive     5(4)
=========================  ====================================================  ===========  =====

``denoise=True`` adds one evaluation at the end (:func:`denoise`, Tweedie's formula).

**Step functions.** Each update is also a public function of one step
(:func:`euler_maruyama_step`, :func:`reverse_diffusion_step`, :func:`langevin_step`,
:func:`probability_flow_euler_step`, :func:`heun_step`, :func:`dpm_solver_step`), taking Python
floats for the two times, so that guidance and inpainting can write their own loops with the same
updates. The samplers are nothing but these steps in a loop.

**Cost.** A step evaluates the score exactly as often as the table says and nothing else that
scales with the data: the SDE's coefficients are scalars computed on the CPU in float64 from the
Python-float times and enter the update as Python numbers, and the time handed to ``score_fn`` is
a ``(B,)`` tensor created on the data's device. So the loops make no host-device copies or
synchronisations (only :func:`probability_flow_rk45` moves the state to NumPy, which scipy needs).
Samplers run under ``torch.no_grad()``: a ``score_fn`` that needs gradients (classifier guidance)
enables them itself with ``torch.enable_grad()``.

**Randomness.** Stochastic samplers draw their noise from ``generator`` (a ``torch.Generator`` on
the data's device, or an int seed); the same generator state gives the same samples on the same
machine.

**Direction.** The ODE samplers (:func:`probability_flow_euler`, :func:`heun`, :func:`dpm_solver`,
:func:`probability_flow_rk45`) also integrate *forwards*, from data to noise: pass an increasing
grid (``time_grid(sde, S).flip(0)``) or ``t_span=(sde.eps, sde.T)``. That is the PF-ODE used as a
deterministic encoder. The SDE samplers only run backwards in time.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch

from .sde import SDE
from .utils import ScoreFn, Tensor, check_finite, expand

__all__ = [
    "SAMPLERS",
    "GRIDS",
    "PREDICTORS",
    "SampleResult",
    "time_grid",
    "denoise",
    "euler_maruyama_step",
    "reverse_diffusion_step",
    "langevin_step",
    "probability_flow_euler_step",
    "heun_step",
    "dpm_solver_step",
    "euler_maruyama",
    "reverse_diffusion",
    "predictor_corrector",
    "probability_flow_euler",
    "heun",
    "dpm_solver",
    "probability_flow_rk45",
]

GRIDS = ("uniform", "log_snr", "edm")
PREDICTORS = ("reverse_diffusion", "euler_maruyama")

GridLike = Union[str, Sequence[float], Tensor]
GeneratorLike = Union[torch.Generator, int, None]


@dataclass
class SampleResult:
    """What a sampler returns.

    Attributes:
        x: the samples, shaped like ``x_T`` (after the Tweedie step when ``denoise=True``).
        nfe: number of score evaluations, each on the whole batch.
        times: the time grid that was used, ``(S + 1,)`` (for RK45: the accepted step times).
        trajectory: ``(S + 1, B, ...)`` states at ``times`` (``trajectory[0]`` is ``x_T``;
            ``trajectory[-1]`` is the state at the last time, before any Tweedie step), or
            ``None`` unless ``return_trajectory=True``.
    """

    x: Tensor
    nfe: int
    times: Tensor
    trajectory: Tensor | None = None


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------
def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _check_real(value, name: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
    return value


def _check_generator(generator, x: Tensor, allow_seed: bool = False) -> torch.Generator | None:
    if generator is None:
        return None
    if allow_seed and isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return torch.Generator(device=x.device).manual_seed(int(generator))
    if not isinstance(generator, torch.Generator):
        allowed = "a torch.Generator, an int seed or None" if allow_seed else "a torch.Generator or None"
        raise TypeError(f"generator must be {allowed}, got {type(generator).__name__}")
    if generator.device.type != x.device.type:
        raise ValueError(f"generator is on {generator.device} but the samples are on {x.device}; "
                         f"create it with torch.Generator(device={str(x.device)!r})")
    return generator


def _check_inputs(score_fn, sde, x_T, name: str = "x_T") -> None:
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdelab.sde.SDE (e.g. make_sde('vp-linear')), got {type(sde).__name__}")
    if not isinstance(x_T, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, ...), got {type(x_T).__name__}")
    if not x_T.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x_T.dtype}")
    if x_T.dim() < 1 or x_T.shape[0] < 1:
        raise ValueError(f"{name} must have shape (B, ...) with B >= 1, got {tuple(x_T.shape)}")
    check_finite(x_T, name)


def _as_float_time(t, name: str) -> float:
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"{name} must be a float (one time for the whole batch), got a tensor of shape "
                             f"{tuple(t.shape)}")
        t = t.item()
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(t).__name__}")
    return float(t)


def _check_time(sde: SDE, t, name: str) -> float:
    t = _as_float_time(t, name)
    slack = 1e-9 * sde.T
    if not (sde.eps - slack <= t <= sde.T + slack):
        raise ValueError(f"{name} must lie in [eps, T] = [{sde.eps:g}, {sde.T:g}], got {t!r}")
    return min(max(t, sde.eps), sde.T)


def _check_step(sde: SDE, t, t_next, backward_only: bool) -> tuple[float, float]:
    t, t_next = _check_time(sde, t, "t"), _check_time(sde, t_next, "t_next")
    if t_next == t or (backward_only and t_next > t):
        need = "t_next < t (the reverse SDE runs backwards in time)" if backward_only else "t_next != t"
        raise ValueError(f"need {need}, got t={t!r}, t_next={t_next!r}")
    return t, t_next


# ----------------------------------------------------------------------------------------------
# Scalar coefficients (float64 on the CPU, returned as Python floats)
# ----------------------------------------------------------------------------------------------
def _alpha_sigma(sde: SDE, *ts: float) -> list[tuple[float, float]]:
    """``[(alpha(t), sigma(t)) for t in ts]`` as Python floats."""
    alpha, sigma = sde.marginal_coeffs(torch.tensor(ts, dtype=torch.float64))
    return list(zip(alpha.tolist(), sigma.tolist()))


def _f_g2(sde: SDE, t: float) -> tuple[float, float]:
    """``(f(t), g(t)^2)`` as Python floats."""
    tt = torch.tensor([t], dtype=torch.float64)
    return sde.drift_coeff(tt).item(), sde.diffusion_coeff(tt).item() ** 2


def _tvec(x: Tensor, t: float) -> Tensor:
    # created on x's device: no host-to-device copy of a CPU tensor
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _pf_drift(score_fn: ScoreFn, sde: SDE, x: Tensor, t: float) -> Tensor:
    r"""Probability-flow drift :math:`f(t)x - \tfrac12 g(t)^2 s(x, t)` (Song et al. eq. 13); one NFE."""
    f, g2 = _f_g2(sde, t)
    return f * x - (0.5 * g2) * score_fn(x, _tvec(x, t))


def _kinks(sde: SDE) -> list[float]:
    """Times where the SDE's coefficients are continuous but not smooth.

    The clipped cosine schedule (:class:`~sdelab.schedules.CosineBeta`) switches to a constant
    rate at ``t_c`` (0.901 at the defaults): :math:`\\beta` is continuous there, its derivative is not.
    """
    t_c = getattr(getattr(sde, "schedule", None), "t_c", None)
    return [float(t_c)] if t_c is not None else []


# ----------------------------------------------------------------------------------------------
# Time grids
# ----------------------------------------------------------------------------------------------
def _grid(sde: SDE, steps: int, kind: str, rho: float) -> list[float]:
    """The grid as Python floats, computed in float64, decreasing from T to eps."""
    T, eps = sde.T, sde.eps
    f64 = torch.float64
    if kind == "uniform":
        t = torch.linspace(T, eps, steps + 1, dtype=f64)
    elif kind in ("log_snr", "edm"):
        lam_T, lam_eps = sde.half_log_snr(torch.tensor([T, eps], dtype=f64)).tolist()
        if kind == "log_snr":
            lam = torch.linspace(lam_T, lam_eps, steps + 1, dtype=f64)
        else:
            # Karras et al. (2022) eq. 5 in the noise level sigma_hat = sigma / alpha = exp(-lambda)
            inv_max, inv_min = math.exp(-lam_T / rho), math.exp(-lam_eps / rho)
            sig = (inv_max + torch.linspace(0, 1, steps + 1, dtype=f64) * (inv_min - inv_max)) ** rho
            lam = -torch.log(sig)
        t = sde.t_from_half_log_snr(lam)
    else:
        raise ValueError(f"grid must be one of {GRIDS} or a sequence of times, got {kind!r}")
    t[0], t[-1] = T, eps  # exact end points (the inverse maps round)
    t = t.tolist()
    if not all(a > b for a, b in zip(t, t[1:])):
        raise ValueError(f"the {kind!r} grid with steps={steps} is not strictly decreasing in float64; use fewer steps")
    return t


def time_grid(sde: SDE, steps: int, kind: str = "uniform", rho: float = 7.0,
              device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
    r"""``steps + 1`` decreasing times from ``sde.T`` to ``sde.eps``.

    * ``"uniform"``: equal steps in :math:`t`.
    * ``"log_snr"``: equal steps in :math:`\lambda(t) = \log(\alpha(t)/\sigma(t))` (Lu et al. 2022),
      mapped back with :meth:`~sdelab.sde.SDE.t_from_half_log_snr`.
    * ``"edm"``: Karras et al. (2022, eq. 5) in the noise level
      :math:`\hat\sigma = \sigma/\alpha = e^{-\lambda}`,
      :math:`\hat\sigma_i = \big(\hat\sigma_{\max}^{1/\rho} + \tfrac iS(\hat\sigma_{\min}^{1/\rho}
      - \hat\sigma_{\max}^{1/\rho})\big)^\rho` with :math:`\hat\sigma_{\max} = \hat\sigma(T)`,
      :math:`\hat\sigma_{\min} = \hat\sigma(\epsilon)`: large ``rho`` crowds the steps at low noise.

    Computed in float64, returned on ``device`` (CPU by default) in ``dtype`` (the default dtype).
    Reverse it (``.flip(0)``) for an increasing grid that encodes with the ODE samplers.
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdelab.sde.SDE, got {type(sde).__name__}")
    steps = _check_int(steps, "steps", 1)
    if not isinstance(kind, str):
        raise TypeError(f"kind must be one of {GRIDS}, got {type(kind).__name__}")
    rho = _check_real(rho, "rho", positive=True)
    t = _grid(sde, steps, kind, rho)
    return torch.tensor(t, dtype=torch.float64).to(device=device, dtype=dtype or torch.get_default_dtype())


def _resolve_grid(sde: SDE, steps, grid: GridLike, rho, backward_only: bool) -> list[float]:
    """The sampler's grid as Python floats: a named grid with ``steps`` intervals, or explicit times."""
    if isinstance(grid, str):
        if steps is None:
            raise TypeError(f"steps is required with grid={grid!r} (an integer >= 1)")
        steps = _check_int(steps, "steps", 1)
        rho = _check_real(rho, "rho", positive=True)
        return _grid(sde, steps, grid, rho)
    if isinstance(grid, Tensor):
        if grid.dim() != 1:
            raise ValueError(f"grid must be a name in {GRIDS} or a 1-d sequence of times, got shape {tuple(grid.shape)}")
        ts = grid.detach().to("cpu", torch.float64).tolist()
    elif isinstance(grid, Sequence):
        ts = [_as_float_time(t, "grid entry") for t in grid]
    else:
        raise TypeError(f"grid must be one of {GRIDS} or a sequence of times, got {type(grid).__name__}")
    if len(ts) < 2:
        raise ValueError(f"grid must hold at least 2 times, got {len(ts)}")
    if steps is not None and _check_int(steps, "steps", 1) != len(ts) - 1:
        raise ValueError(f"steps={steps} does not match the grid of {len(ts)} times; pass steps=None or {len(ts) - 1}")
    ts = [_check_time(sde, t, "grid entry") for t in ts]
    diffs = [b - a for a, b in zip(ts, ts[1:])]
    decreasing, increasing = all(d < 0 for d in diffs), all(d > 0 for d in diffs)
    if backward_only and not decreasing:
        raise ValueError("grid must be strictly decreasing for a reverse-SDE sampler")
    if not (decreasing or increasing):
        raise ValueError("grid must be strictly monotone (decreasing to sample, increasing to encode)")
    return ts


# ----------------------------------------------------------------------------------------------
# Tweedie denoising
# ----------------------------------------------------------------------------------------------
def _tweedie(score_fn: ScoreFn, sde: SDE, x: Tensor, t: float) -> Tensor:
    ((alpha, sigma),) = _alpha_sigma(sde, t)
    return (x + sigma**2 * score_fn(x, _tvec(x, t))) / alpha


def denoise(score_fn: ScoreFn, sde: SDE, x: Tensor, t) -> Tensor:
    r"""Tweedie's formula: the posterior mean of the clean data given :math:`x_t`,

    .. math:: \mathbb E[x_0 \mid x_t] = \frac{x_t + \sigma(t)^2\,\nabla_x\log p_t(x_t)}{\alpha(t)}

    (Efron 2011; the exact identity for the Gaussian kernel :math:`\mathcal N(\alpha x_0, \sigma^2 I)`).
    It is the optional last step of every sampler (``denoise=True``): a sample of :math:`p_\epsilon`
    carries noise of standard deviation :math:`\sigma(\epsilon)` (0.0105 for VP-linear at
    :math:`\epsilon = 10^{-3}`), which this removes at the cost of one NFE. It returns a *mean*,
    not a sample: its spread is slightly smaller than the data's (by the posterior covariance).

    ``t`` is a float or a ``(B,)`` tensor in ``[eps, T]``.
    """
    _check_inputs(score_fn, sde, x, "x")
    if isinstance(t, Tensor) and t.numel() > 1:
        t = sde._time(t, x, lo=sde.eps)
        alpha, sigma = sde.marginal_coeffs(t)
        return (x + expand(sigma**2, x) * score_fn(x, t)) / expand(alpha, x)
    return _tweedie(score_fn, sde, x, _check_time(sde, t, "t"))


# ----------------------------------------------------------------------------------------------
# One step of each method
# ----------------------------------------------------------------------------------------------
def euler_maruyama_step(score_fn: ScoreFn, sde: SDE, x: Tensor, t: float, t_next: float, *,
                        generator: torch.Generator | None = None) -> Tensor:
    r"""One Euler--Maruyama step of the reverse-time SDE (Song et al. eq. 6) from ``t`` to ``t_next < t``:

    .. math:: x' = x + \big[f(t)x - g(t)^2 s(x, t)\big]h + g(t)\sqrt{-h}\;z, \qquad h = t_{\rm next} - t,
              \quad z \sim \mathcal N(0, I).

    One NFE. ``t`` and ``t_next`` are Python floats (one time for the whole batch).
    """
    t, t_next = _check_step(sde, t, t_next, backward_only=True)
    generator = _check_generator(generator, x)
    h = t_next - t
    f, g2 = _f_g2(sde, t)
    s = score_fn(x, _tvec(x, t))
    return (1 + f * h) * x - (g2 * h) * s + math.sqrt(-g2 * h) * _noise(x, generator)


def reverse_diffusion_step(score_fn: ScoreFn, sde: SDE, x: Tensor, t: float, t_next: float, *,
                           generator: torch.Generator | None = None) -> Tensor:
    r"""One reverse-diffusion (ancestral) step from ``t`` to ``t_next < t`` (Song et al. eq. 46, App. E).

    The forward process discretised on the grid is its exact transition kernel from ``t_next`` to ``t``,

    .. math:: x_t = a\,x_{t_{\rm next}} + G z, \qquad a = \frac{\alpha(t)}{\alpha(t_{\rm next})}, \qquad
              G^2 = \sigma(t)^2 - a^2\sigma(t_{\rm next})^2 = \int_{t_{\rm next}}^{t}
              \Big(\frac{\alpha(t)}{\alpha(u)}\Big)^2 g(u)^2\,du,

    i.e. discrete drift :math:`f_i(x) = (a - 1)x` and diffusion :math:`G`. Eq. 46 reverses it:

    .. math:: x' = x - (a - 1)x + G^2 s(x, t) + G z = (2 - a)x + G^2 s(x, t) + G z.

    :math:`G^2` is the integral of :math:`g^2` over the step weighted by the drift's decay. For VE
    (:math:`a = 1`) it is exactly :math:`\int g^2 = \sigma^2(t) - \sigma^2(t_{\rm next})`, Song et
    al.'s VE step; for VP, :math:`a = \sqrt{1 - \beta_i}` and :math:`G^2 = \beta_i` with DDPM's
    :math:`\beta_i = 1 - \bar\alpha(t)/\bar\alpha(t_{\rm next})`, Song et al.'s VP step (= ancestral DDPM
    sampling to first order); sub-VP gets the same construction. One NFE.
    """
    t, t_next = _check_step(sde, t, t_next, backward_only=True)
    generator = _check_generator(generator, x)
    (a_t, s_t), (a_n, s_n) = _alpha_sigma(sde, t, t_next)
    a = a_t / a_n
    G2 = max(s_t**2 - a**2 * s_n**2, 0.0)  # >= 0 exactly; max() guards rounding
    s = score_fn(x, _tvec(x, t))
    return (2 - a) * x + G2 * s + math.sqrt(G2) * _noise(x, generator)


def langevin_step(score_fn: ScoreFn, sde: SDE, x: Tensor, t: float, *, snr: float, t_prev: float | None = None,
                  norm: str = "batch", generator: torch.Generator | None = None) -> Tensor:
    r"""One Langevin corrector step at time ``t`` (Song et al. Alg. 4 for VE, Alg. 5 for VP):

    .. math:: x' = x + \epsilon\,s(x, t) + \sqrt{2\epsilon}\,z, \qquad
              \epsilon = 2\alpha_i\Big(r\,\frac{\|z\|}{\|s(x, t)\|}\Big)^2, \qquad z \sim \mathcal N(0, I),

    with :math:`r` = ``snr``: the step is chosen so that the drift :math:`\epsilon s` is ``snr``
    times the injected noise :math:`\sqrt{2\epsilon} z` in norm. One NFE.

    **alpha_i** (the continuous-time choice): with ``t_prev > t`` (the time the predictor stepped
    from), :math:`\alpha_i = (\alpha(t_{\rm prev})/\alpha(t))^2 = \bar\alpha(t_{\rm prev})/\bar\alpha(t) \le 1`,
    which is DDPM's :math:`1 - \beta_i` on that step for VP and sub-VP (Song et al.'s VP corrector,
    whose code takes ``1 - beta_i`` of the discretised schedule) and exactly 1 for VE (their
    Alg. 4); without ``t_prev``, :math:`\alpha_i = 1`. (The inverse ratio would exceed 1 and, on a
    coarse grid, blow the step up: from T = 1 to 0.5 on VP-linear it is 1800.)

    **norm** says whose norms set :math:`\epsilon`:

    * ``"batch"`` (default): :math:`\|z\|` and :math:`\|s\|` are the batch means of the per-sample
      norms, one :math:`\epsilon` for the batch (as in Song et al.'s released code). For a large
      batch, :math:`\epsilon` is then nearly independent of any one sample, and the step is the
      unadjusted Langevin algorithm, whose stationary law for :math:`\mathcal N(m, cI)` has
      variance :math:`c(1 + r^2)` (so :math:`\epsilon = 2\alpha_i r^2 c^2/v` at variance :math:`v`).
    * ``"sample"``: per-sample norms, so each sample's step does not depend on the rest of the
      batch; but :math:`\epsilon` then depends on that sample's own :math:`x` and :math:`z`, which
      biases the chain even as :math:`r \to 0`: for :math:`\mathcal N(m, cI)` in :math:`D`
      dimensions the stationary :math:`\|x - m\|^2/c` is :math:`\chi^2_{D+4}`, a relative variance
      error of :math:`4/D` (0.5 % for 28x28 images, 25 % for D = 16). In two dimensions a sample
      near a mode (:math:`\|s\| \approx 0`) takes an enormous step. Use it only for large D.

    A zero score norm gives a zero step (the ratio is undefined).
    """
    t = _check_time(sde, t, "t")
    snr = _check_real(snr, "snr")
    generator = _check_generator(generator, x)
    if norm not in ("batch", "sample"):
        raise ValueError(f"norm must be 'batch' or 'sample', got {norm!r}")
    alpha_i = 1.0
    if t_prev is not None:
        (a_t, _), (a_p, _) = _alpha_sigma(sde, t, _check_time(sde, t_prev, "t_prev"))
        alpha_i = (a_p / a_t) ** 2
    s = score_fn(x, _tvec(x, t))
    z = _noise(x, generator)
    s_norm = s.reshape(x.shape[0], -1).norm(dim=1)
    z_norm = z.reshape(x.shape[0], -1).norm(dim=1)
    if norm == "batch":
        s_norm, z_norm = s_norm.mean().expand(x.shape[0]), z_norm.mean().expand(x.shape[0])
    # computed on the device without a branch on the values (no host synchronisation)
    ratio = torch.where(s_norm > 0, z_norm / s_norm, torch.zeros_like(s_norm))
    eps = (2 * alpha_i * snr**2) * ratio**2
    return x + expand(eps, x) * s + expand(torch.sqrt(2 * eps), x) * z


def probability_flow_euler_step(score_fn: ScoreFn, sde: SDE, x: Tensor, t: float, t_next: float) -> Tensor:
    r"""One Euler step of the probability-flow ODE (Song et al. eq. 13):

    .. math:: x' = x + \big[f(t)x - \tfrac12 g(t)^2 s(x, t)\big](t_{\rm next} - t).

    One NFE; ``t_next`` may be larger than ``t`` (encoding).
    """
    t, t_next = _check_step(sde, t, t_next, backward_only=False)
    return x + (t_next - t) * _pf_drift(score_fn, sde, x, t)


def heun_step(score_fn: ScoreFn, sde: SDE, x: Tensor, t: float, t_next: float) -> Tensor:
    r"""One Heun step (explicit trapezoidal rule) of the probability-flow ODE :math:`dx/dt = d(x, t)`:

    .. math:: \tilde x = x + h\,d(x, t), \qquad x' = x + \tfrac h2\big[d(x, t) + d(\tilde x, t_{\rm next})\big],

    Karras et al. (2022) Alg. 1 written for any :math:`\alpha, \sigma` (their general ODE, eq. 4).
    Two NFE; second order. Karras et al. skip the correction on the last step because their grid
    ends at :math:`\sigma = 0`, where the score is singular; every grid here ends at ``sde.eps`` > 0,
    where the score is finite, so the correction is always applied.
    """
    t, t_next = _check_step(sde, t, t_next, backward_only=False)
    h = t_next - t
    d = _pf_drift(score_fn, sde, x, t)
    d_next = _pf_drift(score_fn, sde, x + h * d, t_next)
    return x + (0.5 * h) * (d + d_next)


def dpm_solver_step(score_fn: ScoreFn, sde: SDE, x: Tensor, t: float, t_next: float, *, order: int = 1) -> Tensor:
    r"""One DPM-Solver step (Lu et al. 2022) of the probability-flow ODE from ``t`` to ``t_next``.

    With :math:`\lambda = \log(\alpha/\sigma)` and the noise prediction
    :math:`\hat\epsilon(x, t) = -\sigma(t)\,s(x, t)`, the PF-ODE's exact solution is (Lu et al. eq. 3.4)

    .. math:: x_{t'} = \frac{\alpha_{t'}}{\alpha_t}x_t - \alpha_{t'}\int_{\lambda_t}^{\lambda_{t'}}
              e^{-\lambda}\,\hat\epsilon(x_\lambda, \lambda)\,d\lambda:

    the linear part is integrated exactly and only :math:`\hat\epsilon` is approximated. With
    :math:`h = \lambda_{t'} - \lambda_t`:

    * order 1 (DPM-Solver-1 = DDIM): :math:`x_{t'} = \frac{\alpha_{t'}}{\alpha_t}x_t - \sigma_{t'}(e^h - 1)\hat\epsilon(x_t, t)`; one NFE.
    * order 2 (DPM-Solver-2, the midpoint variant :math:`r = \tfrac12`, Lu et al. Alg. 4): at
      :math:`\lambda_m = \lambda_t + h/2`,
      :math:`u = \frac{\alpha_m}{\alpha_t}x_t - \sigma_m(e^{h/2} - 1)\hat\epsilon(x_t, t)`, then
      :math:`x_{t'} = \frac{\alpha_{t'}}{\alpha_t}x_t - \sigma_{t'}(e^h - 1)\hat\epsilon(u, t_m)`; two NFE.

    The formulas hold for any kernel :math:`\mathcal N(\alpha x_0, \sigma^2 I)` whose SDE has
    :math:`f = d\log\alpha/dt`, :math:`g^2 = d\sigma^2/dt - 2f\sigma^2`, which all five SDEs satisfy;
    for VE, :math:`\alpha = 1` and :math:`\lambda = -\log\sigma`. ``t_next`` may exceed ``t`` (encoding).
    """
    t, t_next = _check_step(sde, t, t_next, backward_only=False)
    order = _check_int(order, "order", 1)
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    (a_s, s_s), (a_t, s_t) = _alpha_sigma(sde, t, t_next)
    h = (math.log(a_t) - math.log(s_t)) - (math.log(a_s) - math.log(s_s))
    if order == 2:
        lam_m = math.log(a_s) - math.log(s_s) + 0.5 * h
        t_m = min(max(sde.t_from_half_log_snr(torch.tensor([lam_m], dtype=torch.float64)).item(), sde.eps), sde.T)
        ((a_m, s_m),) = _alpha_sigma(sde, t_m)
        # -sigma_m (e^{h/2} - 1) eps_hat(x, t) = sigma_m sigma_t (e^{h/2} - 1) s(x, t)
        u = (a_m / a_s) * x + (s_m * s_s * math.expm1(0.5 * h)) * score_fn(x, _tvec(x, t))
        return (a_t / a_s) * x + (s_t * s_m * math.expm1(h)) * score_fn(u, _tvec(u, t_m))
    return (a_t / a_s) * x + (s_t * s_s * math.expm1(h)) * score_fn(x, _tvec(x, t))


# ----------------------------------------------------------------------------------------------
# Samplers: the steps in a loop
# ----------------------------------------------------------------------------------------------
def _prepare(score_fn, sde, x_T, steps, grid, rho, denoise, return_trajectory, backward_only) -> list[float]:
    _check_inputs(score_fn, sde, x_T)
    for name, value in (("denoise", denoise), ("return_trajectory", return_trajectory)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    return _resolve_grid(sde, steps, grid, rho, backward_only)


def _run(step: Callable[[Tensor, float, float], Tensor], score_fn: ScoreFn, sde: SDE, x_T: Tensor,
         times: list[float], nfe_per_step: int, denoise: bool, return_trajectory: bool) -> SampleResult:
    x = x_T
    trajectory = [x] if return_trajectory else None
    for t, t_next in zip(times[:-1], times[1:]):
        x = step(x, t, t_next)
        if trajectory is not None:
            trajectory.append(x)
    nfe = nfe_per_step * (len(times) - 1)
    if denoise:
        x = _tweedie(score_fn, sde, x, times[-1])
        nfe += 1
    return SampleResult(x=x, nfe=nfe, times=torch.tensor(times, dtype=x_T.dtype, device=x_T.device),
                        trajectory=torch.stack(trajectory) if trajectory is not None else None)


_COMMON_ARGS = """
    Args:
        score_fn: ``score_fn(x, t) -> grad log p_t(x)``, with ``t`` a ``(B,)`` tensor.
        sde: the forward SDE (any of :func:`~sdelab.sde.make_sde`'s five).
        x_T: ``(B, ...)`` initial state at the grid's first time (usually ``sde.prior_sample``).
        steps: number of grid intervals S (the NFE is given above).
        grid: ``"uniform"``, ``"log_snr"`` or ``"edm"`` (:func:`time_grid`, with ``rho``), or an
            explicit sequence of times (then ``steps`` may be omitted).
        denoise: finish with one Tweedie step (:func:`denoise`, one more NFE).
        return_trajectory: also return the ``(S + 1, B, ...)`` states on the grid.
"""


@torch.no_grad()
def euler_maruyama(score_fn: ScoreFn, sde: SDE, x_T: Tensor, *, steps: int | None = None, grid: GridLike = "uniform",
                   rho: float = 7.0, generator: GeneratorLike = None, denoise: bool = False,
                   return_trajectory: bool = False) -> SampleResult:
    r"""Euler--Maruyama for the reverse-time SDE (Song et al. eq. 6); S NFE, weak order 1.

    Each step is :func:`euler_maruyama_step`:
    :math:`x_{i+1} = x_i + [f(t_i)x_i - g(t_i)^2 s(x_i, t_i)]h_i + g(t_i)\sqrt{-h_i}\,z_i`.
    ``generator``: a ``torch.Generator`` (or int seed) for the noise.
    """ + _COMMON_ARGS
    times = _prepare(score_fn, sde, x_T, steps, grid, rho, denoise, return_trajectory, backward_only=True)
    generator = _check_generator(generator, x_T, allow_seed=True)

    def step(x, t, t_next):
        return euler_maruyama_step(score_fn, sde, x, t, t_next, generator=generator)

    return _run(step, score_fn, sde, x_T, times, 1, denoise, return_trajectory)


@torch.no_grad()
def reverse_diffusion(score_fn: ScoreFn, sde: SDE, x_T: Tensor, *, steps: int | None = None,
                      grid: GridLike = "uniform", rho: float = 7.0, generator: GeneratorLike = None,
                      denoise: bool = False, return_trajectory: bool = False) -> SampleResult:
    r"""Reverse-diffusion (ancestral) sampling, Song et al. eq. 46, for any of the SDEs; S NFE.

    Each step is :func:`reverse_diffusion_step`: :math:`x_{i+1} = (2 - a_i)x_i + G_i^2 s(x_i, t_i) + G_i z_i`
    with the exact forward kernel's :math:`a_i = \alpha(t_i)/\alpha(t_{i+1})` and
    :math:`G_i^2 = \sigma(t_i)^2 - a_i^2\sigma(t_{i+1})^2`. It is the predictor-corrector sampler
    without corrector.
    """ + _COMMON_ARGS
    times = _prepare(score_fn, sde, x_T, steps, grid, rho, denoise, return_trajectory, backward_only=True)
    generator = _check_generator(generator, x_T, allow_seed=True)

    def step(x, t, t_next):
        return reverse_diffusion_step(score_fn, sde, x, t, t_next, generator=generator)

    return _run(step, score_fn, sde, x_T, times, 1, denoise, return_trajectory)


@torch.no_grad()
def predictor_corrector(score_fn: ScoreFn, sde: SDE, x_T: Tensor, *, steps: int | None = None,
                        predictor: str | None = "reverse_diffusion", corrector_steps: int = 1, snr: float = 0.16,
                        norm: str = "batch", grid: GridLike = "uniform", rho: float = 7.0, generator: GeneratorLike = None,
                        denoise: bool = False, return_trajectory: bool = False) -> SampleResult:
    r"""Predictor-corrector sampling (Song et al. Alg. 1, with the Langevin corrector of Alg. 4/5).

    In the paper's order: for each grid step, first the **predictor** moves :math:`x` from
    :math:`t_i` to :math:`t_{i+1}` (``"reverse_diffusion"``: :func:`reverse_diffusion_step`;
    ``"euler_maruyama"``: :func:`euler_maruyama_step`; ``None``: no predictor, the corrector-only
    sampler), then ``corrector_steps`` = M Langevin steps (:func:`langevin_step`) at the new time
    :math:`t_{i+1}` with signal-to-noise ratio ``snr`` and :math:`\alpha_i =
    (\alpha(t_i)/\alpha(t_{i+1}))^2 \le 1`, DDPM's :math:`1 - \beta` of the step just taken. (Song et al.'s released code runs the corrector *before* the
    predictor at each time, which ends with a predictor step instead; the paper's order ends with a
    correction at :math:`\epsilon`.) The corrector never runs at :math:`T`.

    NFE = S (1 + M), or S M without predictor. ``snr`` = 0.16 is the paper's value for VE on
    CIFAR-10. ``norm`` (``"batch"`` or ``"sample"``) picks the step-size rule of :func:`langevin_step`;
    ``"sample"`` is biased by a relative 4/D in variance and unusable in two dimensions. Even the
    exact Langevin step leaves a bias: its stationary variance is :math:`(1 + r^2)` times the
    target's, which the next predictor steps do not remove.
    """ + _COMMON_ARGS
    times = _prepare(score_fn, sde, x_T, steps, grid, rho, denoise, return_trajectory, backward_only=True)
    generator = _check_generator(generator, x_T, allow_seed=True)
    if predictor is not None and predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {PREDICTORS} or None, got {predictor!r}")
    corrector_steps = _check_int(corrector_steps, "corrector_steps", 0)
    snr = _check_real(snr, "snr")
    if norm not in ("batch", "sample"):
        raise ValueError(f"norm must be 'batch' or 'sample', got {norm!r}")
    if predictor is None and corrector_steps == 0:
        raise ValueError("predictor=None needs corrector_steps >= 1 (otherwise nothing moves)")
    predict = {"reverse_diffusion": reverse_diffusion_step, "euler_maruyama": euler_maruyama_step, None: None}[predictor]

    def step(x, t, t_next):
        if predict is not None:
            x = predict(score_fn, sde, x, t, t_next, generator=generator)
        for _ in range(corrector_steps):
            x = langevin_step(score_fn, sde, x, t_next, snr=snr, t_prev=t, norm=norm, generator=generator)
        return x

    nfe_per_step = (predict is not None) + corrector_steps
    return _run(step, score_fn, sde, x_T, times, nfe_per_step, denoise, return_trajectory)


@torch.no_grad()
def probability_flow_euler(score_fn: ScoreFn, sde: SDE, x_T: Tensor, *, steps: int | None = None,
                           grid: GridLike = "uniform", rho: float = 7.0, generator: GeneratorLike = None,
                           denoise: bool = False, return_trajectory: bool = False) -> SampleResult:
    r"""Euler's method on the probability-flow ODE (Song et al. eq. 13); S NFE, order 1, deterministic.

    :math:`x_{i+1} = x_i + [f(t_i)x_i - \tfrac12 g(t_i)^2 s(x_i, t_i)]h_i` (:func:`probability_flow_euler_step`),
    in torch on the data's device. ``generator`` is accepted for a uniform interface and unused.
    An increasing ``grid`` integrates forwards (encoding).
    """ + _COMMON_ARGS
    times = _prepare(score_fn, sde, x_T, steps, grid, rho, denoise, return_trajectory, backward_only=False)
    _check_generator(generator, x_T, allow_seed=True)

    def step(x, t, t_next):
        return probability_flow_euler_step(score_fn, sde, x, t, t_next)

    return _run(step, score_fn, sde, x_T, times, 1, denoise, return_trajectory)


@torch.no_grad()
def heun(score_fn: ScoreFn, sde: SDE, x_T: Tensor, *, steps: int | None = None, grid: GridLike = "edm",
         rho: float = 7.0, generator: GeneratorLike = None, denoise: bool = False,
         return_trajectory: bool = False) -> SampleResult:
    r"""Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Alg. 1); 2 S NFE.

    Each step is :func:`heun_step` (Euler predictor, trapezoidal corrector); the default grid is
    EDM's :math:`\rho = 7` spacing. Unlike EDM, the last step is corrected too, since the grid ends
    at ``sde.eps`` > 0, not at a singular :math:`\sigma = 0`, so NFE is exactly 2 S.
    ``generator`` is accepted for a uniform interface and unused. An increasing ``grid`` encodes.
    """ + _COMMON_ARGS
    times = _prepare(score_fn, sde, x_T, steps, grid, rho, denoise, return_trajectory, backward_only=False)
    _check_generator(generator, x_T, allow_seed=True)

    def step(x, t, t_next):
        return heun_step(score_fn, sde, x, t, t_next)

    return _run(step, score_fn, sde, x_T, times, 2, denoise, return_trajectory)


@torch.no_grad()
def dpm_solver(score_fn: ScoreFn, sde: SDE, x_T: Tensor, *, steps: int | None = None, order: int = 2,
               grid: GridLike = "log_snr", rho: float = 7.0, generator: GeneratorLike = None,
               denoise: bool = False, return_trajectory: bool = False) -> SampleResult:
    r"""DPM-Solver-1 (= DDIM) or DPM-Solver-2 (Lu et al. 2022): an exponential integrator of the PF-ODE.

    ``steps`` is the number of steps S, **not** the NFE budget: ``order=1`` costs S NFE,
    ``order=2`` costs 2 S (compare samplers at equal :attr:`SampleResult.nfe`). The default grid
    is uniform in :math:`\lambda = \log(\alpha/\sigma)`, the variable the method integrates in
    (Lu et al. Sec. 3.3). Works for VE (:math:`\alpha = 1`), VP and sub-VP alike; see
    :func:`dpm_solver_step` for the update. ``generator`` is unused. An increasing ``grid`` encodes.
    """ + _COMMON_ARGS
    times = _prepare(score_fn, sde, x_T, steps, grid, rho, denoise, return_trajectory, backward_only=False)
    _check_generator(generator, x_T, allow_seed=True)
    order = _check_int(order, "order", 1)
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")

    def step(x, t, t_next):
        return dpm_solver_step(score_fn, sde, x, t, t_next, order=order)

    return _run(step, score_fn, sde, x_T, times, order, denoise, return_trajectory)


@torch.no_grad()
def probability_flow_rk45(score_fn: ScoreFn, sde: SDE, x_T: Tensor, *, rtol: float = 1e-5, atol: float = 1e-5,
                          method: str = "RK45", t_span: tuple[float, float] | None = None,
                          generator: GeneratorLike = None, denoise: bool = False,
                          return_trajectory: bool = False) -> SampleResult:
    r"""The probability-flow ODE (Song et al. eq. 13) solved by scipy's adaptive ``solve_ivp``.

    :math:`dx/dt = f(t)x - \tfrac12 g(t)^2 s(x, t)` from ``t_span[0]`` to ``t_span[1]`` (default
    :math:`(T, \epsilon)`; ``(sde.eps, sde.T)`` encodes data into noise). The whole batch is one
    flattened float64 state on the CPU (NumPy), so the step-size control follows the worst sample;
    the score is evaluated in torch on ``x_T``'s device and dtype, and each evaluation copies the
    state there and back (the one sampler that does). ``method`` is any explicit ``solve_ivp``
    method (``"RK45"``: Dormand--Prince 5(4); ``"DOP853"`` for tight reference solves), with
    ``rtol``/``atol`` its local error tolerances. NFE = ``sol.nfev`` (+1 with ``denoise``).
    ``times``/``trajectory`` hold the accepted steps. ``generator`` is unused.

    The solve is split at the schedule's kinks (the clipped cosine schedule's :math:`t_c`, where
    :math:`d\beta/dt` jumps): a step across one is only first-order accurate and the embedded
    error estimate does not notice, which made the error non-monotone in ``rtol`` (10x larger at
    1e-5 on the test mixture). The NFE is the sum over the pieces.
    """
    from scipy.integrate import solve_ivp

    _check_inputs(score_fn, sde, x_T)
    _check_generator(generator, x_T, allow_seed=True)
    for name, value in (("denoise", denoise), ("return_trajectory", return_trajectory)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    rtol, atol = _check_real(rtol, "rtol", positive=True), _check_real(atol, "atol", positive=True)
    if method not in ("RK45", "RK23", "DOP853"):
        raise ValueError(f"method must be an explicit solve_ivp method: 'RK45', 'RK23' or 'DOP853'; got {method!r}")
    if t_span is None:
        t0, t1 = sde.T, sde.eps
    else:
        if not isinstance(t_span, (tuple, list)) or len(t_span) != 2:
            raise ValueError(f"t_span must be a pair (t_start, t_end), got {t_span!r}")
        t0, t1 = _check_time(sde, t_span[0], "t_span[0]"), _check_time(sde, t_span[1], "t_span[1]")
        if t0 == t1:
            raise ValueError(f"t_span must have t_start != t_end, got {t_span!r}")
    shape, device, dtype = x_T.shape, x_T.device, x_T.dtype

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)
        f, g2 = _f_g2(sde, float(t))
        s = score_fn(x, _tvec(x, float(t))).to("cpu", torch.float64).numpy().reshape(-1)
        return f * y - 0.5 * g2 * s

    # solve piecewise between the schedule's kinks: an embedded error estimate does not see a jump
    # in the derivative of beta, and a step across one loses the method's order
    lo, hi = min(t0, t1), max(t0, t1)
    cuts = [c for c in _kinks(sde) if lo < c < hi]
    knots = [t0, *(sorted(cuts, reverse=t1 < t0)), t1]
    y = x_T.detach().to("cpu", torch.float64).numpy().reshape(-1)
    nfe, ts, ys = 0, [np.array([t0])], [y[:, None]]
    for a, b in zip(knots[:-1], knots[1:]):
        sol = solve_ivp(fun, (a, b), y, method=method, rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"solve_ivp ({method}) failed on t in [{a:g}, {b:g}]: {sol.message}")
        nfe += int(sol.nfev)
        y = sol.y[:, -1]
        ts.append(sol.t[1:])
        ys.append(sol.y[:, 1:])
    x = torch.from_numpy(y.copy()).reshape(shape).to(device=device, dtype=dtype)
    if denoise:
        x = _tweedie(score_fn, sde, x, t1)
        nfe += 1
    times = np.concatenate(ts)
    trajectory = None
    if return_trajectory:
        traj = np.concatenate(ys, axis=1).T.copy()
        trajectory = torch.from_numpy(traj).reshape(len(times), *shape).to(device=device, dtype=dtype)
    return SampleResult(x=x, nfe=nfe, times=torch.tensor(times, dtype=dtype, device=device), trajectory=trajectory)


SAMPLERS: dict[str, Callable[..., SampleResult]] = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "predictor_corrector": predictor_corrector,
    "probability_flow_euler": probability_flow_euler,
    "heun": heun,
    "dpm_solver": dpm_solver,
    "probability_flow_rk45": probability_flow_rk45,
}
"""Every sampler by name (for the CLI's ``--sampler`` choices and ``sample_from_checkpoint``).

Each is called as ``sampler(score_fn, sde, x_T, *, steps, grid=..., generator=None, ...)`` and
returns a :class:`SampleResult` ``(x, nfe, times, trajectory)``.
"""
