r"""Samplers for the reverse-time SDE and the probability-flow ODE, each a short plain function.

Every sampler is called as ``sampler(score_fn, sde, x_T, *, steps, grid, t_end, generator,
final_denoise, return_trajectory, ...) -> SampleResult`` (:data:`SAMPLERS` lists them by name) and
integrates from ``x_T`` at :math:`t = T` down to ``t_end`` (default ``sde.eps``) along a
decreasing time grid :math:`T = t_0 > t_1 > \dots > t_S` (:func:`time_grid`). Write
:math:`h_i = t_{i+1} - t_i < 0`; :math:`f(t), g(t)` for the SDE's drift and diffusion
coefficients; :math:`\alpha(t), \sigma(t)` for its kernel :math:`\mathcal N(\alpha x_0, \sigma^2 I)`;
:math:`\hat\sigma = \sigma/\alpha` for the noise level of the scaled variable
:math:`\hat x = x/\alpha` (Karras et al. 2022) and :math:`\lambda = \log(\alpha/\sigma) =
-\log\hat\sigma` (Lu et al. 2022); :math:`s = s(x, t)` for the score,
:math:`\hat\epsilon = -\sigma s` for the noise prediction and
:math:`D = (x + \sigma^2 s)/\alpha` for the data prediction (Tweedie's formula, :func:`denoise`).
``steps`` is always the number of grid intervals :math:`S`; the NFE is in :attr:`SampleResult.nfe`.

==============================  ==========================================  ======  ======
sampler                         method                                      NFE     order
==============================  ==========================================  ======  ======
:func:`euler_maruyama`          Euler--Maruyama on the reverse SDE (eq. 6)  S       1 weak
:func:`reverse_diffusion`       Song et al. eq. 46, the paper's chain       S       1 weak
:func:`predictor_corrector`     predictor, then M Langevin steps (Alg. 1)   S(1+M)  --
:func:`dpmpp_2m_sde`            DPM-Solver++(2M) SDE (Lu et al. 2022b)      S       1 weak
:func:`dpmpp_3m_sde`            DPM-Solver++(3M) SDE                        S       1 weak
:func:`edm_stochastic`          EDM Alg. 2: churn, then Heun in sigma-hat   2S      --
:func:`euler`                   Euler in sigma-hat (EDM) = DDIM             S       1
:func:`heun`                    Heun in sigma-hat (Karras et al., Alg. 1)   2S      2
:func:`dpm_solver`              DPM-Solver-1/2, single step in lambda       S, 2S   1, 2
:func:`dpmpp_2m`                DPM-Solver++(2M), multistep in lambda       S       2
:func:`dpmpp_3m`                DPM-Solver++(3M)                            S       3
:func:`unipc`                   UniPC-bh2 (Zhao et al. 2023)                S       p + 1
:func:`probability_flow_euler`  Euler in t (eq. 13), for teaching           S       1
:func:`heun_t`                  trapezoidal rule in t, for teaching         2S      2
:func:`probability_flow_rk45`   adaptive Runge--Kutta (scipy)               adapt.  5(4)
==============================  ==========================================  ======  ======

``final_denoise=True`` adds one evaluation at the end: the Tweedie step :func:`denoise`.

**Grids.** :func:`time_grid` makes the named grids: ``"uniform"`` (in t),
``"log_snr"`` (in :math:`\lambda`), ``"edm"`` (Karras et al.'s :math:`\rho` spacing) and
``"mixed"`` (a weighted mean of the first two in :math:`\lambda`; the multistep
samplers' default, the most accurate on the project's toy problems at 10 and 20 steps).

**Where sampling stops.** ``t_end`` (default ``sde.eps``) is the last time of the grid; with
``final_denoise`` the result is :math:`\mathbb E[x_0 \mid x_{t_{\rm end}}]`. For exact scores
stopping later only loses: for Gaussian data :math:`\mathcal N(\mu, \Sigma)` the result has
covariance :math:`\alpha^2\Sigma(\alpha^2\Sigma + \sigma^2 I)^{-1}\Sigma` at :math:`t_{\rm end}`
(the tests check it). A learned score is least accurate at small t, so stopping earlier and
denoising can win there (issue 20 of the project measured that on the shipped networks).

**Step functions.** The one-step updates are public functions too (:func:`euler_maruyama_step`,
:func:`reverse_diffusion_step`, :func:`langevin_step`, :func:`euler_step`, :func:`heun_step`,
:func:`probability_flow_euler_step`, :func:`heun_t_step`, :func:`dpm_solver_step`), taking Python floats for the
two times. They contain the maths only: no argument checks (the samplers check at their door).

**Cost.** The SDE's coefficients are scalars computed on the host in float64 from Python-float
times; the time given to ``score_fn`` is a ``(B,)`` tensor created on the data's device. So the
loops make no host-device copies or synchronisations. The samplers check once, at the end, that
the result is finite (a NaN score gives a clear error, not NaN images). Samplers run under
``torch.no_grad()``; a ``score_fn`` that needs gradients enables them itself.

**Randomness.** Stochastic samplers draw their noise from ``generator`` (a ``torch.Generator`` on
the data's device, or an int seed). The ODE samplers accept and ignore it.

**Direction.** The ODE samplers also integrate *forwards*, from data to noise (an encoder): pass
an increasing grid (``time_grid(sde, S).flip(0)``) or ``t_span=(sde.eps, sde.T)`` to RK45.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch

from . import checks
from .sde import SDE, VESDE, VPSDE, ReverseSDE
from .utils import ScoreFn, Tensor, expand

__all__ = [
    "SAMPLERS",
    "GRIDS",
    "PREDICTORS",
    "MAX_STEPS",
    "BETA_I_MAX",
    "LOWER_ORDER_FINAL_BELOW",
    "JUMP_RATIO",
    "MIXED_WEIGHT",
    "MIXED_FULL_BELOW",
    "SampleResult",
    "time_grid",
    "denoise",
    "solve_probability_flow",
    "euler_maruyama_step",
    "reverse_diffusion_step",
    "langevin_step",
    "euler_step",
    "heun_step",
    "probability_flow_euler_step",
    "heun_t_step",
    "dpm_solver_step",
    "euler_maruyama",
    "reverse_diffusion",
    "predictor_corrector",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
    "edm_stochastic",
    "euler",
    "heun",
    "dpm_solver",
    "dpmpp_2m",
    "dpmpp_3m",
    "unipc",
    "probability_flow_euler",
    "heun_t",
    "probability_flow_rk45",
    "multistep_t_end",
]

GRIDS = ("uniform", "log_snr", "edm", "mixed")
PREDICTORS = ("reverse_diffusion", "euler_maruyama")
LOWER_ORDER_FINAL_BELOW = 25
"""Multistep samplers with ``lower_order_final`` lower their order on the last steps when S is below this.

The reference code uses 10 (dpm-solver) or 15 (diffusers). Measured on the ring mixture with exact
scores: on the time-uniform grid, whose last step is several times longer in lambda than the one
before, 3M at 20 steps had path error 0.95 (VP-linear) and 1.6 (sub-VP-linear) with 15, and
0.05 and 0.15 with 25; on the log-SNR grid the choice changed nothing at 20 steps.
"""
JUMP_RATIO = 2.0
r"""A multistep sampler's last grid step counts as the final jump when it is more than this many
times longer in :math:`\lambda` than the step before (the time-uniform and ``"mixed"`` grids
that end at ``sde.eps`` do, by 3-7x at 10-20 steps: it carries the samples from small noise to
almost none; the log-SNR grid's steps are equal). Beyond it the
two-point extrapolation weight :math:`1/(2r)`, :math:`r = h_{i-1}/h_i`, of DPM-Solver++(2M)
exceeds 1: the extrapolation would amplify the last difference of the data predictions instead
of correcting with it. With ``lower_order_final`` the jump is taken at first order; when the
last grid step is no jump and there is a final Tweedie step, the Tweedie step (itself the
first-order jump to zero noise) is the jump and the last grid step keeps its order, as in
diffusers' schedulers with ``final_sigmas_type="zero"``. This is ``final_jump="auto"``;
``final_jump="grid"`` always takes the last grid step at first order (what
:func:`sdelab.generate.sample_from_checkpoint` measured better for UniPC on learned scores).
"""
MIXED_WEIGHT = 0.625
"""The time-uniform grid's share in the ``"mixed"`` grid (up to :data:`MIXED_FULL_BELOW`
steps)."""
MIXED_FULL_BELOW = 20
"""Beyond this many steps the ``"mixed"`` grid's time-uniform share falls like ``1/S``
(:data:`MIXED_WEIGHT` ``* MIXED_FULL_BELOW / S``): it tends to the log-SNR grid
(:func:`time_grid`)."""
MAX_STEPS = 1_000_000
"""Largest ``steps`` accepted: the grid is held in memory (8 MB at this size)."""

GridLike = Union[str, Sequence[float], Tensor]
GeneratorLike = Union[torch.Generator, int, None]
Projection = Callable[[Tensor, float], Tensor]


@dataclass
class SampleResult:
    """What a sampler returns.

    Attributes:
        x: the samples, shaped like ``x_T`` (after the Tweedie step when ``final_denoise=True``).
        nfe: number of score evaluations, each on the whole batch.
        times: the time grid that was used, ``(S + 1,)`` (for RK45: the accepted step times).
        trajectory: ``(S + 1, B, ...)`` states at ``times`` (``trajectory[0]`` is ``x_T``;
            ``trajectory[-1]`` the state at the last time, before any Tweedie step), or ``None``
            unless ``return_trajectory=True``.
    """

    x: Tensor
    nfe: int
    times: Tensor
    trajectory: Tensor | None = None


# ----------------------------------------------------------------------------------------------
# Checks at the door (run once per public sampler call; the steps contain maths only)
# ----------------------------------------------------------------------------------------------
def _float_time(sde: SDE, t, name: str) -> float:
    return checks.time(t, name, sde.eps, sde.T)


def _checked_score(score_fn: ScoreFn) -> ScoreFn:
    """``score_fn`` whose first output is checked to have the input's shape (no broadcasting)."""
    first = [True]

    def score(x: Tensor, t: Tensor) -> Tensor:
        s = score_fn(x, t)
        if first[0]:
            if not isinstance(s, Tensor) or s.shape != x.shape:
                got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
                raise ValueError(
                    f"score_fn must return a tensor shaped like x {tuple(x.shape)}, got {got}"
                )
            first[0] = False
        return s

    return score


def _door(
    score_fn,
    sde,
    x_T,
    steps,
    grid,
    rho,
    t_end,
    generator,
    final_denoise,
    return_trajectory,
    backward_only: bool,
    name: str = "x_T",
):
    """All checks of a sampler call: returns ``(score_fn, times, generator)``."""
    checks.callable_(score_fn, "score_fn", "score_fn(x, t)")
    checks.sde(sde)
    if isinstance(x_T, Tensor) and x_T.dim() == 0:
        raise ValueError(
            f"{name} must have shape (B, ...) with B >= 1, got {tuple(x_T.shape)}"
        )
    checks.tensor(x_T, name, floating=True, min_ndim=1)
    checks.boolean(final_denoise, "final_denoise")
    checks.boolean(return_trajectory, "return_trajectory")
    times = (
        None
        if grid is None
        else _resolve_grid(sde, steps, grid, rho, t_end, backward_only)
    )
    return _checked_score(score_fn), times, checks.generator(generator, like=x_T)


def multistep_t_end(sde: SDE) -> float:
    r"""Where the multistep samplers (:func:`dpmpp_2m`, :func:`dpmpp_3m`, :func:`unipc`,
    :func:`dpmpp_2m_sde`, :func:`dpmpp_3m_sde`) stop by default (``t_end=None``, named grids).

    ``sde.eps``, except on VE: there the time at which the noise level is ``sigma_min``,
    :math:`t = \log 2 / (2\log(\sigma_{\max}/\sigma_{\min}))` (0.0407 for 0.01 and 50), the
    noise level at which the paper's VE stops (its kernel's std
    :math:`\sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t` never falls below
    :math:`\sigma_{\min}`; sdelab's exact VE reaches it at this t). Below it sdelab's VE goes
    on to std 1.3e-4 at ``eps``, where a Tweedie step hardly moves the samples, so a grid to
    ``eps`` spends its final evaluation there in vain. Measured with exact scores
    (``benchmarks/samplers_vs_peers.py toys``): at 11 and 21 NFE the path error of UniPC on the
    16-d Gaussian drops 2.3x and 2.7x, on the ring mixture 1.9x and 1.9x; the 2M SDE's distance
    to exact samples (n = 10000) drops in 3 of those 4 cells. On VP and sub-VP the
    grids end at ``eps`` (their std there is ~1e-3, and their last step is the jump,
    :data:`JUMP_RATIO`).
    """
    checks.sde(sde)
    if isinstance(sde, VESDE):
        lam = torch.tensor([-math.log(sde.sigma_min)], dtype=torch.float64)
        return float(sde.t_from_half_log_snr(lam)[0])
    return float(sde.eps)


def _finite(x: Tensor, what: str) -> Tensor:
    """The one host read of a fixed-step sampler, after its loop: a non-finite result is an error."""
    if not torch.isfinite(x).all():
        raise ValueError(
            f"{what} produced non-finite values: score_fn returned NaN or Inf, or the steps "
            f"diverged (try more steps)"
        )
    return x


# ----------------------------------------------------------------------------------------------
# Scalar coefficients (float64 on the host, returned as Python floats)
# ----------------------------------------------------------------------------------------------
def _alpha_sigma(sde: SDE, *ts: float) -> list[tuple[float, float]]:
    """``[(alpha(t), sigma(t)) for t in ts]`` as Python floats."""
    alpha, sigma = sde.marginal_coeffs(torch.tensor(ts, dtype=torch.float64))
    return list(zip(alpha.tolist(), sigma.tolist()))


def _t_of_sigma_hat(sde: SDE, sigma_hat: float) -> float:
    """The time at which :math:`\\sigma/\\alpha = \\hat\\sigma`, i.e. :math:`\\lambda = -\\log\\hat\\sigma`."""
    lam = torch.tensor([-math.log(sigma_hat)], dtype=torch.float64)
    return min(max(sde.t_from_half_log_snr(lam).item(), 0.0), sde.T)


def _tvec(x: Tensor, t: float) -> Tensor:
    # created on x's device: no host-to-device copy of a CPU tensor
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _data_prediction(x: Tensor, score: Tensor, alpha: float, sigma: float) -> Tensor:
    r"""Tweedie's formula :math:`D = (x + \sigma^2 s)/\alpha`: every data prediction in sdelab."""
    return (x + sigma**2 * score) / alpha


# ----------------------------------------------------------------------------------------------
# Time grids
# ----------------------------------------------------------------------------------------------
def _grid(sde: SDE, steps: int, grid: str, rho: float, t_end: float) -> list[float]:
    """The grid as Python floats, computed in float64, decreasing from T to t_end."""
    T = sde.T
    f64 = torch.float64
    if grid == "uniform":
        t = torch.linspace(T, t_end, steps + 1, dtype=f64)
    elif grid in ("log_snr", "edm", "mixed"):
        lam_T, lam_end = sde.half_log_snr(torch.tensor([T, t_end], dtype=f64)).tolist()
        if grid == "log_snr":
            lam = torch.linspace(lam_T, lam_end, steps + 1, dtype=f64)
        elif grid == "mixed":
            # a weighted mean in lambda of the log-SNR and time-uniform grids: both
            # increase strictly in lambda, so the mean does
            lam_u = sde.half_log_snr(torch.linspace(T, t_end, steps + 1, dtype=f64))
            lam_l = torch.linspace(lam_T, lam_end, steps + 1, dtype=f64)
            w = MIXED_WEIGHT * min(1.0, MIXED_FULL_BELOW / steps)
            lam = lam_l + w * (lam_u - lam_l)
        else:
            # Karras et al. (2022) eq. 5 in the noise level sigma_hat = sigma / alpha = exp(-lambda)
            inv_max, inv_min = math.exp(-lam_T / rho), math.exp(-lam_end / rho)
            sig = (
                inv_max
                + torch.linspace(0, 1, steps + 1, dtype=f64) * (inv_min - inv_max)
            ) ** rho
            lam = -torch.log(sig)
        t = sde.t_from_half_log_snr(lam)
    else:
        raise ValueError(
            f"grid must be one of {GRIDS} or a sequence of times, got {grid!r}"
        )
    t[0], t[-1] = T, t_end  # exact end points (the inverse maps round)
    t = t.tolist()
    if not all(a > b for a, b in zip(t, t[1:])):
        raise ValueError(
            f"the {grid!r} grid with steps={steps} is not strictly decreasing in float64; "
            f"use fewer steps"
        )
    return t


def time_grid(
    sde: SDE,
    steps: int,
    grid: str = "uniform",
    rho: float = 7.0,
    t_end: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""``steps + 1`` decreasing times from ``sde.T`` to ``t_end`` (default ``sde.eps``).

    * ``"uniform"``: equal steps in :math:`t`.
    * ``"log_snr"``: equal steps in :math:`\lambda(t) = \log(\alpha(t)/\sigma(t))` (Lu et al. 2022),
      mapped back with :meth:`~sdelab.sde.SDE.t_from_half_log_snr`.
    * ``"edm"``: Karras et al. (2022, eq. 5) in the noise level
      :math:`\hat\sigma = \sigma/\alpha = e^{-\lambda}`,
      :math:`\hat\sigma_i = \big(\hat\sigma_{\max}^{1/\rho} + \tfrac iS(\hat\sigma_{\min}^{1/\rho}
      - \hat\sigma_{\max}^{1/\rho})\big)^\rho` with :math:`\hat\sigma_{\max} = \hat\sigma(T)`,
      :math:`\hat\sigma_{\min} = \hat\sigma(t_{\rm end})`: large ``rho`` crowds the steps at low noise.
    * ``"mixed"``: a weighted mean in :math:`\lambda` of the log-SNR grid
      :math:`\lambda^{\ell}_i = \lambda(T)
      + \tfrac iS(\lambda(t_{\rm end}) - \lambda(T))` and the time-uniform grid
      :math:`\lambda^{u}_i = \lambda\big(T + \tfrac iS(t_{\rm end} - T)\big)`,

      .. math:: \lambda_i = \lambda^{\ell}_i + w_S\,(\lambda^{u}_i - \lambda^{\ell}_i),
                \qquad w_S = w\min(1, S_0/S),

      with :math:`w = 5/8` (:data:`MIXED_WEIGHT`) and :math:`S_0 = 20`
      (:data:`MIXED_FULL_BELOW`). The log-SNR grid spends many steps at tiny noise,
      where the data prediction hardly changes (on VE, :math:`\sigma(t) \to 0` like
      :math:`\sqrt t`, so :math:`\lambda(\epsilon)` lies far beyond the data's scale);
      the time-uniform grid ends with a few long steps in :math:`\lambda` (the last
      one :math:`\approx \tfrac12\log\frac{T}{S\epsilon}` on VP), which at few steps
      act as a cheap final jump but do not shrink like :math:`1/S`: with a constant
      share, DPM-Solver++(3M) and UniPC fell to fitted orders 2.1-2.6 on VP. The share
      :math:`\propto 1/S` beyond 20 steps makes every step :math:`O(1/S)` and the grid
      tend to the log-SNR grid. The default of :func:`dpmpp_2m`, :func:`dpmpp_3m` and
      :func:`unipc`. Chosen by measurement, not from a paper
      (``benchmarks/samplers_vs_peers.py toys``, exact scores, 10 and 20 steps; 5 and 50
      checked): among the named grids, powers of :math:`t` and shares
      :math:`w \in \{0, \tfrac14, \tfrac12, \tfrac58, \tfrac34, \tfrac78, 1\}`,
      :math:`w = 5/8` matched or beat k-diffusion's and diffusers' best in the most
      cells (8 of 12; :math:`w = 1/2`: 6, losing the ring mixture at 10 steps; the
      ring wants more of the time-uniform grid, the 16-d Gaussian more of the log-SNR
      grid).

    Computed in float64, returned on ``device`` (CPU by default) in ``dtype`` (the default dtype).
    Reverse it (``.flip(0)``) for an increasing grid that encodes with the ODE samplers.
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdelab.sde.SDE, got {type(sde).__name__}")
    t = _resolve_grid(
        sde, steps, grid if isinstance(grid, str) else _bad_grid(grid), rho, t_end, True
    )
    return torch.tensor(t, dtype=torch.float64).to(
        device=device, dtype=dtype or torch.get_default_dtype()
    )


def _bad_grid(grid):
    raise TypeError(f"grid must be one of {GRIDS}, got {type(grid).__name__}")


def _resolve_grid(
    sde: SDE, steps, grid: GridLike, rho, t_end, backward_only: bool
) -> list[float]:
    """The one place a sampler's grid is made: a named grid with ``steps`` intervals, or explicit times."""
    if isinstance(grid, str):
        if steps is None:
            raise TypeError(f"steps is required with grid={grid!r} (an integer >= 1)")
        steps = checks.integer(steps, "steps", minimum=1, maximum=MAX_STEPS)
        rho = checks.real(rho, "rho", positive=True)
        t_end = sde.eps if t_end is None else _float_time(sde, t_end, "t_end")
        if not t_end < sde.T:
            raise ValueError(
                f"t_end must lie in [eps, T) = [{sde.eps:g}, {sde.T:g}), got {t_end!r}"
            )
        return _grid(sde, steps, grid, rho, t_end)
    if t_end is not None:
        raise ValueError(
            "t_end is given by an explicit grid's last time; pass t_end=None"
        )
    if isinstance(grid, Tensor):
        if grid.dim() != 1:
            raise ValueError(
                f"grid must be a name in {GRIDS} or a 1-d sequence of times, got shape "
                f"{tuple(grid.shape)}"
            )
        ts = grid.detach().to("cpu", torch.float64).tolist()
    elif isinstance(grid, Sequence):
        ts = list(grid)
    else:
        raise TypeError(
            f"grid must be one of {GRIDS} or a sequence of times, got {type(grid).__name__}"
        )
    if not 2 <= len(ts) <= MAX_STEPS + 1:
        raise ValueError(f"grid must hold 2 to {MAX_STEPS + 1} times, got {len(ts)}")
    if steps is not None and checks.integer(steps, "steps", minimum=1) != len(ts) - 1:
        raise ValueError(
            f"steps={steps} does not match the grid of {len(ts)} times; pass steps=None or "
            f"{len(ts) - 1}"
        )
    ts = [_float_time(sde, t, "grid entry") for t in ts]
    diffs = [b - a for a, b in zip(ts, ts[1:])]
    decreasing, increasing = all(d < 0 for d in diffs), all(d > 0 for d in diffs)
    if backward_only and not decreasing:
        raise ValueError("grid must be strictly decreasing for a reverse-SDE sampler")
    if not (decreasing or increasing):
        raise ValueError(
            "grid must be strictly monotone (decreasing to sample, increasing to encode)"
        )
    return ts


# ----------------------------------------------------------------------------------------------
# Tweedie denoising
# ----------------------------------------------------------------------------------------------
def _denoise_at(score_fn: ScoreFn, sde: SDE, x: Tensor, t: float) -> Tensor:
    ((alpha, sigma),) = _alpha_sigma(sde, t)
    return _data_prediction(x, score_fn(x, _tvec(x, t)), alpha, sigma)


def denoise(score_fn: ScoreFn, sde: SDE, x: Tensor, t) -> Tensor:
    r"""Tweedie's formula: the posterior mean of the clean data given :math:`x_t`,

    .. math:: \mathbb E[x_0 \mid x_t] = \frac{x_t + \sigma(t)^2\,\nabla_x\log p_t(x_t)}{\alpha(t)}

    (Efron 2011; the exact identity for the Gaussian kernel :math:`\mathcal N(\alpha x_0, \sigma^2 I)`).
    It is the optional last step of every sampler (``final_denoise=True``): a sample of
    :math:`p_{t_{\rm end}}` carries noise of standard deviation :math:`\sigma(t_{\rm end})` (0.0105
    for VP-linear at :math:`t = 10^{-3}`), which this removes at the cost of one NFE. It returns a
    *mean*, not a sample: its spread is smaller than the data's by the posterior covariance.

    ``t`` is a float or a ``(B,)`` tensor in ``[eps, T]``.
    """
    score_fn, _, _ = _door(
        score_fn, sde, x, None, None, None, None, None, False, False, True, "x"
    )
    if isinstance(t, Tensor) and t.numel() > 1:
        t = sde._time(t, x, lo=sde.eps)
        alpha, sigma = sde.marginal_coeffs(t)
        return (x + expand(sigma**2, x) * score_fn(x, t)) / expand(alpha, x)
    return _denoise_at(score_fn, sde, x, _float_time(sde, t, "t"))


# ----------------------------------------------------------------------------------------------
# One step of each method: maths only (t, t_next are trusted Python floats)
# ----------------------------------------------------------------------------------------------
def euler_maruyama_step(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t: float,
    t_next: float,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""One Euler--Maruyama step of the reverse-time SDE (Song et al. eq. 6), ``t_next < t``:

    .. math:: x' = x + \big[f(t)x - g(t)^2 s(x, t)\big]h + g(t)\sqrt{-h}\;z, \qquad
              h = t_{\rm next} - t, \quad z \sim \mathcal N(0, I).

    One NFE. The drift is :meth:`sdelab.sde.ReverseSDE.drift_at`.
    """
    rev = ReverseSDE(sde, score_fn)
    h = t_next - t
    g = rev.coefficients(t)[2]
    return (
        x
        + h * rev.drift_at(x, t, score_fn(x, _tvec(x, t)))
        + g * math.sqrt(-h) * _noise(x, generator)
    )


BETA_I_MAX = 0.5
"""Largest DDPM step :math:`\\beta_i` for which :func:`reverse_diffusion_step` uses the paper's chain on
VP; larger steps (fewer than ``2 beta_max T`` steps on a uniform grid) use the exact kernel's
coefficients (at 40 steps of the shipped VP-linear network, beta_i <= 0.5, the paper's chain gave
images of standard deviation 0.70; at 20 steps, beta_i = 1, it diverged)."""


def _reverse_diffusion_coeffs(sde: SDE, t: float, t_next: float) -> tuple[float, float]:
    r"""``(a, G^2)`` of the paper's discrete forward step :math:`x_t = a\,x_{t_{\rm next}} + G z`."""
    if isinstance(sde, VESDE):
        # discrete sigmas of the NCSN chain: G^2 = sigma(t)^2 - sigma(t_next)^2, no drift
        (_, s_t), (_, s_n) = _alpha_sigma(sde, t, t_next)
        return 1.0, s_t**2 - s_n**2
    f, g2, _ = ReverseSDE(sde, None).coefficients(t)
    if isinstance(sde, VPSDE):
        # DDPM's discrete schedule: beta_i = beta(t_i) (t_i - t_{i+1}). It is a small-step chain:
        # as beta_i -> 1, a -> 0 and the reverse step's (2 - a) doubles x (10-20 steps of
        # VP-linear, beta_max = 20, gave images of standard deviation 5-26). Larger steps take the
        # exact kernel's coefficients, which stay bounded (BETA_I_MAX).
        beta_i = -2.0 * f * (t - t_next)
        if beta_i <= BETA_I_MAX:
            return math.sqrt(1.0 - beta_i), beta_i
        (a_t, s_t), (a_n, s_n) = _alpha_sigma(sde, t, t_next)
        a = a_t / a_n
        return a, s_t**2 - a**2 * s_n**2
    # no discrete chain in the paper: the reference code's generic one, f_i = f(t) x dt, G^2 = g^2 dt
    return 1.0 + f * (t - t_next), g2 * (t - t_next)


def reverse_diffusion_step(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t: float,
    t_next: float,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""One reverse-diffusion step from ``t`` to ``t_next < t`` (Song et al. eq. 46, App. E).

    The forward chain on the grid is :math:`x_t = a\,x_{t_{\rm next}} + G z`: drift
    :math:`f_i(x) = (a - 1)x`, diffusion :math:`G`. Eq. 46 reverses it,

    .. math:: x' = x - (a - 1)x + G^2 s(x, t) + G z = (2 - a)x + G^2 s(x, t) + G z.

    The chain is the paper's (and Song et al.'s released code's): for VE the discrete noise
    levels, :math:`a = 1`, :math:`G^2 = \sigma(t)^2 - \sigma(t_{\rm next})^2` (SMLD); for VP
    DDPM's discrete schedule :math:`\beta_i = \beta(t)(t - t_{\rm next})`, :math:`a = \sqrt{1 -
    \beta_i}`, :math:`G^2 = \beta_i` (on the uniform grid :math:`\beta(t_i)/N`, the code's
    ``discrete_betas``); steps with :math:`\beta_i >` :data:`BETA_I_MAX` (few steps) take the
    exact kernel's coefficients below, where the small-step chain would diverge. The paper has no
    sub-VP chain; the code's generic one,
    :math:`a = 1 + f(t)(t - t_{\rm next})`, :math:`G^2 = g(t)^2(t - t_{\rm next})`, makes the step
    Euler--Maruyama's, which on the ring mixture was also closer to exact. (The exact kernel's :math:`a = \alpha(t)/\alpha(t_{\rm
    next})`, :math:`G^2 = \sigma(t)^2 - a^2\sigma(t_{\rm next})^2` was sdelab's choice before; on
    the VP ring mixture it gave a within-mode variance further from the exact one at 30 and 100
    steps: ``tests/test_samplers.py``.) One NFE.
    """
    a, G2 = _reverse_diffusion_coeffs(sde, t, t_next)
    s = score_fn(x, _tvec(x, t))
    return (2 - a) * x + G2 * s + math.sqrt(G2) * _noise(x, generator)


def langevin_step(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t: float,
    *,
    snr: float,
    t_prev: float | None = None,
    norm: str = "batch",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""One Langevin corrector step at time ``t`` (Song et al. Alg. 4 for VE, Alg. 5 for VP):

    .. math:: x' = x + \delta\,s(x, t) + \sqrt{2\delta}\,z, \qquad
              \delta = 2\alpha_i\Big(r\,\frac{\|z\|}{\|s(x, t)\|}\Big)^2, \qquad z \sim \mathcal N(0, I),

    with :math:`r` = ``snr``: the step size :math:`\delta` (the paper's :math:`\epsilon_i`) is chosen
    so that the drift :math:`\delta s` is ``snr`` times the injected noise in norm. One NFE.

    **alpha_i**: with ``t_prev > t`` (the time the predictor stepped from),
    :math:`\alpha_i = (\alpha(t_{\rm prev})/\alpha(t))^2 \le 1`, DDPM's :math:`1 - \beta_i` on that
    step for VP and sub-VP and exactly 1 for VE (Alg. 4); without ``t_prev``, :math:`\alpha_i = 1`.

    **norm** says whose norms set :math:`\delta`:

    * ``"batch"`` (default): the batch means of the per-sample norms, one :math:`\delta` for the
      batch (as in Song et al.'s code). For a large batch this is the unadjusted Langevin
      algorithm, whose stationary law for :math:`\mathcal N(m, cI)` has variance :math:`c(1 + r^2)`.
    * ``"sample"``: per-sample norms. :math:`\delta` then depends on the sample's own :math:`x` and
      :math:`z`, which biases the chain even as :math:`r \to 0`: for :math:`\mathcal N(m, cI)` in
      :math:`D` dimensions the stationary :math:`\|x - m\|^2/c` is :math:`\chi^2_{D+4}`, a relative
      variance error of :math:`4/D`. Use it only for large D.

    A zero score norm gives a zero step. No argument checks (a step function): the samplers check.
    """
    alpha_i = 1.0
    if t_prev is not None:
        (a_t, _), (a_prev, _) = _alpha_sigma(sde, t, t_prev)
        alpha_i = (a_prev / a_t) ** 2
    s = score_fn(x, _tvec(x, t))
    z = _noise(x, generator)
    s_norm = s.reshape(x.shape[0], -1).norm(dim=1)
    z_norm = z.reshape(x.shape[0], -1).norm(dim=1)
    if norm == "batch":
        s_norm, z_norm = (
            s_norm.mean().expand(x.shape[0]),
            z_norm.mean().expand(x.shape[0]),
        )
    # on the device without a branch on the values (no host synchronisation)
    ratio = torch.where(s_norm > 0, z_norm / s_norm, torch.zeros_like(s_norm))
    delta = (2 * alpha_i * snr**2) * ratio**2
    return x + expand(delta, x) * s + expand(torch.sqrt(2 * delta), x) * z


def euler_step(
    score_fn: ScoreFn, sde: SDE, x: Tensor, t: float, t_next: float
) -> Tensor:
    r"""One Euler step in the noise level :math:`\hat\sigma` (Karras et al. 2022, Alg. 1 without Heun).

    In :math:`\hat x = x/\alpha` the probability-flow ODE is
    :math:`d\hat x/d\hat\sigma = (\hat x - D)/\hat\sigma = \hat\epsilon` (Karras et al. eq. 4 with
    :math:`s(t) = \alpha`), so Euler from :math:`\hat\sigma` to :math:`\hat\sigma'` is

    .. math:: x' = \alpha'\Big[\frac{x}{\alpha} + (\hat\sigma' - \hat\sigma)\,\hat\epsilon(x, t)\Big],
              \qquad \hat\epsilon = -\sigma s(x, t),

    which is DDIM (and DPM-Solver-1) exactly, on every SDE. One NFE; either direction.
    """
    (a, s), (a_n, s_n) = _alpha_sigma(sde, t, t_next)
    eps_hat = -s * score_fn(x, _tvec(x, t))
    return (a_n / a) * x + a_n * (s_n / a_n - s / a) * eps_hat


def heun_step(
    score_fn: ScoreFn, sde: SDE, x: Tensor, t: float, t_next: float
) -> Tensor:
    r"""One Heun step in the noise level :math:`\hat\sigma` (Karras et al. 2022, Alg. 1, lines 5-8).

    With :math:`\hat x = x/\alpha`, :math:`d = \hat\epsilon(x, t) = -\sigma s(x, t)` and
    :math:`\Delta = \hat\sigma' - \hat\sigma`:

    .. math:: \tilde x = \hat x + \Delta\,d, \qquad
              \hat x' = \hat x + \tfrac\Delta2\big[d + \hat\epsilon(\alpha'\tilde x, t')\big],
              \qquad x' = \alpha'\hat x'.

    Two NFE; second order in :math:`\hat\sigma`. EDM skips the correction on a last step to
    :math:`\hat\sigma = 0`; every grid here ends at ``t_end`` > 0, so it is always applied.
    """
    (a, s), (a_n, s_n) = _alpha_sigma(sde, t, t_next)
    dsig = s_n / a_n - s / a
    d = -s * score_fn(x, _tvec(x, t))
    x_hat = x / a + dsig * d
    d_next = -s_n * score_fn(a_n * x_hat, _tvec(x, t_next))
    return a_n * (x / a + (0.5 * dsig) * (d + d_next))


def probability_flow_euler_step(
    score_fn: ScoreFn, sde: SDE, x: Tensor, t: float, t_next: float
) -> Tensor:
    r"""One Euler step **in t** of the probability-flow ODE (Song et al. eq. 13):

    .. math:: x' = x + \big[f(t)x - \tfrac12 g(t)^2 s(x, t)\big](t_{\rm next} - t).

    One NFE; either direction. Several times less accurate than :func:`euler_step` at equal NFE
    (the linear part is stiff in t); kept to teach why the variable matters.
    """
    ode = ReverseSDE(sde, score_fn, probability_flow=True)
    return x + (t_next - t) * ode.drift_at(x, t, score_fn(x, _tvec(x, t)))


def heun_t_step(
    score_fn: ScoreFn, sde: SDE, x: Tensor, t: float, t_next: float
) -> Tensor:
    r"""One Heun step **in t** (explicit trapezoidal rule) of the PF-ODE :math:`dx/dt = d(x, t)`:

    .. math:: \tilde x = x + h\,d(x, t), \qquad x' = x + \tfrac h2\big[d(x, t) + d(\tilde x, t_{\rm next})\big].

    Two NFE; second order. Not EDM's Heun (:func:`heun_step` integrates in :math:`\hat\sigma`,
    1.4-1.55x more accurate on VE); kept to teach the difference.
    """
    ode = ReverseSDE(sde, score_fn, probability_flow=True)
    h = t_next - t
    d = ode.drift_at(x, t, score_fn(x, _tvec(x, t)))
    x_tilde = x + h * d
    d_next = ode.drift_at(x_tilde, t_next, score_fn(x_tilde, _tvec(x, t_next)))
    return x + (0.5 * h) * (d + d_next)


def dpm_solver_step(
    score_fn: ScoreFn, sde: SDE, x: Tensor, t: float, t_next: float, *, order: int = 1
) -> Tensor:
    r"""One DPM-Solver step (Lu et al. 2022) of the probability-flow ODE from ``t`` to ``t_next``.

    With :math:`\lambda = \log(\alpha/\sigma)` and :math:`\hat\epsilon = -\sigma s`, the PF-ODE's
    exact solution is (Lu et al. eq. 3.4)

    .. math:: x_{t'} = \frac{\alpha_{t'}}{\alpha_t}x_t - \alpha_{t'}\int_{\lambda_t}^{\lambda_{t'}}
              e^{-\lambda}\,\hat\epsilon(x_\lambda, \lambda)\,d\lambda,

    the linear part integrated exactly. With :math:`h = \lambda_{t'} - \lambda_t`:

    * order 1 (DPM-Solver-1 = DDIM = :func:`euler_step`):
      :math:`x_{t'} = \frac{\alpha_{t'}}{\alpha_t}x_t - \sigma_{t'}(e^h - 1)\hat\epsilon(x_t, t)`; one NFE.
    * order 2 (DPM-Solver-2, Lu et al. Alg. 4 with :math:`r_1 = \tfrac12`): the intermediate point
      at the **lambda-midpoint** :math:`\lambda_m = \lambda_t + h/2`,
      :math:`u = \frac{\alpha_m}{\alpha_t}x_t - \sigma_m(e^{h/2} - 1)\hat\epsilon(x_t, t)`, then
      :math:`x_{t'} = \frac{\alpha_{t'}}{\alpha_t}x_t - \sigma_{t'}(e^h - 1)\hat\epsilon(u, t_m)`; two NFE.
      The reference code takes the *time* midpoint on time-uniform grids instead (then
      :math:`r_1 = (\lambda(t_m) - \lambda_t)/h \ne \tfrac12`). Measured on the 8-Gaussian ring
      with its exact score (RMS path error against a DOP853 solve, 5/10/25 steps, 5 SDEs x 3
      grids) the lambda-midpoint was as accurate or better in 44 of 45 cases (VP-linear, uniform
      grid, 10 steps: 0.114 against 0.185), so it is the one kept.

    Valid for every SDE here (:math:`f = d\log\alpha/dt`, :math:`g^2 = d\sigma^2/dt - 2f\sigma^2`);
    for VE, :math:`\alpha = 1`. ``t_next`` may exceed ``t`` (encoding).
    """
    (a, s), (a_n, s_n) = _alpha_sigma(sde, t, t_next)
    h = (math.log(a_n) - math.log(s_n)) - (math.log(a) - math.log(s))
    if order == 2:
        lam_m = math.log(a) - math.log(s) + 0.5 * h
        t_m = min(
            max(
                sde.t_from_half_log_snr(
                    torch.tensor([lam_m], dtype=torch.float64)
                ).item(),
                sde.eps,
            ),
            sde.T,
        )
        ((a_m, s_m),) = _alpha_sigma(sde, t_m)
        # -sigma_m (e^{h/2} - 1) eps_hat(x, t) = sigma_m sigma (e^{h/2} - 1) s(x, t)
        u = (a_m / a) * x + (s_m * s * math.expm1(0.5 * h)) * score_fn(x, _tvec(x, t))
        return (a_n / a) * x + (s_n * s_m * math.expm1(h)) * score_fn(u, _tvec(u, t_m))
    return (a_n / a) * x + (s_n * s * math.expm1(h)) * score_fn(x, _tvec(x, t))


# ----------------------------------------------------------------------------------------------
# The loop every fixed-step sampler runs
# ----------------------------------------------------------------------------------------------
def _run(
    step: Callable[[Tensor, float, float], Tensor],
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    times: list[float],
    nfe_per_step: int,
    final_denoise: bool,
    return_trajectory: bool,
    what: str,
) -> SampleResult:
    x = x_T
    trajectory = [x] if return_trajectory else None
    for t, t_next in zip(times[:-1], times[1:]):
        x = step(x, t, t_next)
        if trajectory is not None:
            trajectory.append(x)
    nfe = nfe_per_step * (len(times) - 1)
    if final_denoise:
        x = _denoise_at(score_fn, sde, x, times[-1])
        nfe += 1
    return SampleResult(
        x=_finite(x, what),
        nfe=nfe,
        times=torch.tensor(times, dtype=x_T.dtype, device=x_T.device),
        trajectory=torch.stack(trajectory) if trajectory is not None else None,
    )


def _projected(step, project: Projection | None):
    if project is None:
        return step
    return lambda x, t, t_next: project(step(x, t, t_next), t_next)


# Every sampler's docstring ends with these arguments (a real docstring: help() shows it).
def _doc(extra: str = "") -> Callable:
    common = (
        """
    Args:
        score_fn: ``score_fn(x, t) -> grad log p_t(x)``, with ``t`` a ``(B,)`` tensor.
        sde: the forward SDE (any of :func:`~sdelab.sde.make_sde`'s five).
        x_T: ``(B, ...)`` state at the grid's first time (usually ``sde.prior_sample``).
        steps: number of grid intervals S (at most :data:`MAX_STEPS`; NFE as above).
        grid: ``"uniform"``, ``"log_snr"``, ``"edm"`` (with ``rho``) or ``"mixed"``
            (:func:`time_grid`), or an explicit sequence of times (then ``steps`` and
            ``t_end`` may be omitted).
        t_end: the last time of a named grid, in ``[eps, T)``; default ``sde.eps``
            (the multistep samplers, :func:`dpmpp_2m` to :func:`dpmpp_3m_sde`:
            :func:`multistep_t_end`, which differs on VE).
        generator: a ``torch.Generator`` or an int seed (used by the stochastic samplers only).
        final_denoise: finish with one Tweedie step at ``t_end`` (:func:`denoise`, one more NFE).
        return_trajectory: also return the ``(S + 1, B, ...)`` states on the grid.
"""
        + extra
        + """
    Returns:
        :class:`SampleResult` ``(x, nfe, times, trajectory)``. Raises ``ValueError`` if the result
        is not finite (a NaN/Inf score) or ``score_fn`` returns the wrong shape.
"""
    )

    def attach(fn):
        fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + common
        return fn

    return attach


_FINAL_JUMP = """        final_jump: with ``lower_order_final``, which step is the first-order final jump:
            ``"auto"`` (:data:`JUMP_RATIO`: the last grid step when it is much the longest,
            else the Tweedie step of ``final_denoise``) or ``"grid"`` (always the last grid
            step; :func:`sdelab.generate.sample_from_checkpoint` uses it for learned scores).
"""

_PROJECT = """        project: optional ``project(x, t) -> x`` applied after every update (predictor and
            corrector alike) at the update's new time: the replacement method of
            :func:`sdelab.inpainting.impute` is one.
"""


# ----------------------------------------------------------------------------------------------
# Stochastic samplers
# ----------------------------------------------------------------------------------------------
@_doc(_PROJECT)
@torch.no_grad()
def euler_maruyama(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    grid: GridLike = "uniform",
    rho: float = 7.0,
    t_end: float | None = None,
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
    project: Projection | None = None,
) -> SampleResult:
    r"""Euler--Maruyama for the reverse-time SDE (Song et al. eq. 6); S NFE, weak order 1.

    :math:`x_{i+1} = x_i + [f(t_i)x_i - g(t_i)^2 s(x_i, t_i)]h_i + g(t_i)\sqrt{-h_i}\,z_i`
    (:func:`euler_maruyama_step`).
    """
    score_fn, times, generator = _door(
        score_fn,
        sde,
        x_T,
        steps,
        grid,
        rho,
        t_end,
        generator,
        final_denoise,
        return_trajectory,
        backward_only=True,
    )

    def step(x, t, t_next):
        return euler_maruyama_step(score_fn, sde, x, t, t_next, generator=generator)

    return _run(
        _projected(step, project),
        score_fn,
        sde,
        x_T,
        times,
        1,
        final_denoise,
        return_trajectory,
        "euler_maruyama",
    )


@_doc(_PROJECT)
@torch.no_grad()
def reverse_diffusion(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    grid: GridLike = "uniform",
    rho: float = 7.0,
    t_end: float | None = None,
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
    project: Projection | None = None,
) -> SampleResult:
    r"""Reverse-diffusion (ancestral) sampling, Song et al. eq. 46; S NFE.

    :math:`x_{i+1} = (2 - a_i)x_i + G_i^2 s(x_i, t_i) + G_i z_i` with the paper's discrete chain
    (:func:`reverse_diffusion_step`). It is the predictor-corrector sampler without corrector.
    """
    score_fn, times, generator = _door(
        score_fn,
        sde,
        x_T,
        steps,
        grid,
        rho,
        t_end,
        generator,
        final_denoise,
        return_trajectory,
        backward_only=True,
    )

    def step(x, t, t_next):
        return reverse_diffusion_step(score_fn, sde, x, t, t_next, generator=generator)

    return _run(
        _projected(step, project),
        score_fn,
        sde,
        x_T,
        times,
        1,
        final_denoise,
        return_trajectory,
        "reverse_diffusion",
    )


@_doc(_PROJECT)
@torch.no_grad()
def predictor_corrector(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    predictor: str | None = "reverse_diffusion",
    corrector_steps: int = 1,
    snr: float = 0.16,
    norm: str = "batch",
    grid: GridLike = "uniform",
    rho: float = 7.0,
    t_end: float | None = None,
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
    project: Projection | None = None,
) -> SampleResult:
    r"""Predictor-corrector sampling (Song et al. Alg. 1, with the Langevin corrector of Alg. 4/5).

    For each grid step the **predictor** moves :math:`x` from :math:`t_i` to :math:`t_{i+1}`
    (``"reverse_diffusion"``: :func:`reverse_diffusion_step`; ``"euler_maruyama"``:
    :func:`euler_maruyama_step`; ``None``: corrector only), then ``corrector_steps`` = M Langevin
    steps (:func:`langevin_step`) at :math:`t_{i+1}` with signal-to-noise ratio ``snr`` and
    :math:`\alpha_i = (\alpha(t_i)/\alpha(t_{i+1}))^2`. (Song et al.'s code runs the corrector
    *before* the predictor at each time; the paper's order, used here, ends with a correction.)

    NFE = S (1 + M), or S M without predictor. ``snr`` = 0.16 is the paper's value for VE on
    CIFAR-10; ``norm`` (``"batch"`` or ``"sample"``) is :func:`langevin_step`'s. Even the exact
    Langevin step leaves a bias: its stationary variance is :math:`(1 + r^2)` times the target's.
    """
    score_fn, times, generator = _door(
        score_fn,
        sde,
        x_T,
        steps,
        grid,
        rho,
        t_end,
        generator,
        final_denoise,
        return_trajectory,
        backward_only=True,
    )
    checks.choice(predictor, "predictor", (*PREDICTORS, None))
    corrector_steps = checks.integer(corrector_steps, "corrector_steps", minimum=0)
    snr = checks.real(snr, "snr", nonnegative=True)
    checks.choice(norm, "norm", ("batch", "sample"))
    if predictor is None and corrector_steps == 0:
        raise ValueError(
            "predictor=None needs corrector_steps >= 1 (otherwise nothing moves)"
        )
    predict = {
        "reverse_diffusion": reverse_diffusion_step,
        "euler_maruyama": euler_maruyama_step,
    }.get(predictor)
    project = project or (lambda x, t: x)

    def step(x, t, t_next):
        if predict is not None:
            x = project(
                predict(score_fn, sde, x, t, t_next, generator=generator), t_next
            )
        for _ in range(corrector_steps):
            x = project(
                langevin_step(
                    score_fn,
                    sde,
                    x,
                    t_next,
                    snr=snr,
                    t_prev=t,
                    norm=norm,
                    generator=generator,
                ),
                t_next,
            )
        return x

    nfe_per_step = (predict is not None) + corrector_steps
    return _run(
        step,
        score_fn,
        sde,
        x_T,
        times,
        nfe_per_step,
        final_denoise,
        return_trajectory,
        "predictor_corrector",
    )


@_doc()
@torch.no_grad()
def edm_stochastic(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    grid: GridLike = "edm",
    rho: float = 7.0,
    t_end: float | None = None,
    s_churn: float = 30.0,
    s_tmin: float = 0.01,
    s_tmax: float = 1.0,
    s_noise: float = 1.0,
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
) -> SampleResult:
    r"""The EDM stochastic sampler (Karras et al. 2022, Alg. 2) in :math:`\hat\sigma = \sigma/\alpha`.

    At each :math:`t_i`, if :math:`\hat\sigma_i \in` [``s_tmin``, ``s_tmax``], **churn**: raise
    the noise level to :math:`\hat\sigma^+ = (1 + \gamma)\hat\sigma_i`,
    :math:`\gamma = \min(S_{\rm churn}/S, \sqrt2 - 1)` (capped at :math:`\hat\sigma(T)`), by adding
    fresh noise, :math:`\hat x^+ = \hat x_i + \sqrt{(\hat\sigma^+)^2 - \hat\sigma_i^2}\,S_{\rm
    noise}\,z`; then take a Heun step (:func:`heun_step`) from :math:`\hat\sigma^+` to
    :math:`\hat\sigma_{i+1}`. 2 S NFE. The defaults are Karras et al.'s CIFAR-10 VP values
    (Table 5: :math:`S_{\rm churn} = 30`, :math:`S_{t\min} = 0.01`, :math:`S_{t\max} = 1`) with
    ``s_noise`` = 1 (their 1.007 compensates a network's error; with an exact score it only adds
    bias). ``s_churn=0`` is :func:`heun`.
    """
    score_fn, times, generator = _door(
        score_fn,
        sde,
        x_T,
        steps,
        grid,
        rho,
        t_end,
        generator,
        final_denoise,
        return_trajectory,
        backward_only=True,
    )
    s_churn, s_tmin, s_tmax, s_noise = (
        checks.real(v, k, nonnegative=True)
        for k, v in (
            ("s_churn", s_churn),
            ("s_tmin", s_tmin),
            ("s_tmax", s_tmax),
            ("s_noise", s_noise),
        )
    )
    S = len(times) - 1
    gamma = min(s_churn / S, math.sqrt(2) - 1)
    ((a_T, s_T),) = _alpha_sigma(sde, sde.T)
    churn = {}  # t_i -> (t_hat, noise std in x at t_hat), computed on the host once
    for t in times[:-1]:
        ((a, s),) = _alpha_sigma(sde, t)
        sig = s / a
        if gamma > 0 and s_tmin <= sig <= s_tmax:
            sig_up = min(sig * (1 + gamma), s_T / a_T)
            t_up = max(_t_of_sigma_hat(sde, sig_up), t)
            ((a_up, s_up),) = _alpha_sigma(sde, t_up)
            sig_up = s_up / a_up
            churn[t] = (
                t_up,
                a_up,
                a,
                a_up * s_noise * math.sqrt(max(sig_up**2 - sig**2, 0.0)),
            )

    def step(x, t, t_next):
        if t in churn:
            t_up, a_up, a, std = churn[t]
            x = (a_up / a) * x + std * _noise(x, generator)
            t = t_up
        return heun_step(score_fn, sde, x, t, t_next)

    return _run(
        step,
        score_fn,
        sde,
        x_T,
        times,
        2,
        final_denoise,
        return_trajectory,
        "edm_stochastic",
    )


@_doc("""        order: 1 to 3, the multistep order (1: SDE-DPM-Solver++1, the DDPM posterior
            step; 3: :func:`dpmpp_3m_sde`).
        lower_order_final: take the final jump at first order when S < 25, as
            :func:`dpmpp_2m` does.
""" + _FINAL_JUMP)
@torch.no_grad()
def dpmpp_2m_sde(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    grid: GridLike = "mixed",
    rho: float = 7.0,
    t_end: float | None = None,
    order: int = 2,
    lower_order_final: bool = True,
    final_jump: str = "auto",
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
) -> SampleResult:
    r"""DPM-Solver++(2M) SDE (Lu et al. 2022b): a multistep exponential integrator of the reverse SDE.

    In data prediction :math:`D_i = D(x_i, t_i)` and :math:`h = \lambda_{i+1} - \lambda_i`, the
    reverse SDE's linear part and noise are integrated exactly,

    .. math:: x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}e^{-h}x_i + \alpha_{i+1}(1 - e^{-2h})
              \Big(D_i + \tfrac12 D^{(1)}_i\Big) + \sigma_{i+1}\sqrt{1 - e^{-2h}}\,z_i,

    with :math:`D^{(1)}_i = (D_i - D_{i-1})\,h/(\lambda_i - \lambda_{i-1})` (zero on the first
    step: SDE-DPM-Solver++1, the DDPM posterior step, warms up). S NFE. As in :func:`dpmpp_2m`,
    ``lower_order_final`` takes the final jump (:data:`JUMP_RATIO`) at first order: on a grid
    that ends with a long step to eps the extrapolation weight :math:`1/(2r)` would otherwise
    amplify the noise in :math:`D_i - D_{i-1}`. Default grid ``"mixed"`` with it: on the
    project's toys with exact scores (``benchmarks/samplers_vs_peers.py toys``, n = 10000,
    distance to exact samples at 11 and 21 NFE) closer to the target than the log-SNR grid in
    11 of 12 cells (the 16-d Gaussian on VE at 11 NFE the exception). On VE the default end is
    :func:`multistep_t_end`, as for the ODE solvers.
    """
    if t_end is None and isinstance(grid, str):
        t_end = multistep_t_end(sde)
    score_fn, times, generator = _door(
        score_fn,
        sde,
        x_T,
        steps,
        grid,
        rho,
        t_end,
        generator,
        final_denoise,
        return_trajectory,
        backward_only=True,
    )
    order = checks.integer(order, "order", minimum=1, maximum=3)
    checks.boolean(lower_order_final, "lower_order_final")
    final_jump = checks.choice(final_jump, "final_jump", ("auto", "grid"))
    step = _multistep(score_fn, sde, times, order, lower_order_final, corrector=False,
                      final_denoise=final_denoise, generator=generator, stochastic=True,
                      final_jump=final_jump)
    name = "dpmpp_2m_sde" if order == 2 else f"dpmpp_{order}m_sde"
    return _run(step, score_fn, sde, x_T, times, 1, final_denoise, return_trajectory, name)


@_doc("""        lower_order_final: take the final jump at first order when S < 25.
""" + _FINAL_JUMP)
@torch.no_grad()
def dpmpp_3m_sde(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    grid: GridLike = "mixed",
    rho: float = 7.0,
    t_end: float | None = None,
    lower_order_final: bool = True,
    final_jump: str = "auto",
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
) -> SampleResult:
    r"""DPM-Solver++(3M) SDE: :func:`dpmpp_2m_sde` with :math:`D(\lambda)` extrapolated by a quadratic.

    The Taylor expansion of :math:`D` integrated exactly against the SDE's kernel
    :math:`2e^{-2(\lambda_{i+1} - \lambda)}` is :func:`dpmpp_3m`'s with :math:`\varphi_j` taken
    at :math:`2h` (:math:`\varphi_1 = e^{-2h} - 1`, :math:`\varphi_2 = \varphi_1/(2h) + 1`,
    :math:`\varphi_3 = \varphi_2/(2h) - \tfrac12`):

    .. math:: x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}e^{-h}x_i - \alpha_{i+1}\varphi_1 D_i
              + \alpha_{i+1}\varphi_2 D^{(1)} - 2\alpha_{i+1}\varphi_3 D^{(2)}
              + \sigma_{i+1}\sqrt{-\varphi_1}\,z_i.

    k-diffusion's ``sample_dpmpp_3m_sde`` weights :math:`D^{(2)}` by :math:`\varphi_3`, half the
    Taylor coefficient. S NFE; orders 1 and 2 on the first two steps. A quadratic through three
    noisy predictions amplifies their noise more than the 2M SDE's line: on the toys it is the
    less accurate of the two at 10 steps, each wins on some problems at 20, and from about 40
    the 3M SDE is level or ahead (chapter 4). On the shipped networks, at the 2M SDE's end time
    and grid, it is ahead on the cosine schedules, level on VE and behind on the linear ones
    (chapter 6).
    """
    return dpmpp_2m_sde(
        score_fn,
        sde,
        x_T,
        steps=steps,
        grid=grid,
        rho=rho,
        t_end=t_end,
        order=3,
        lower_order_final=lower_order_final,
        final_jump=final_jump,
        generator=generator,
        final_denoise=final_denoise,
        return_trajectory=return_trajectory,
    )


# ----------------------------------------------------------------------------------------------
# Deterministic samplers (probability-flow ODE)
# ----------------------------------------------------------------------------------------------
@_doc()
@torch.no_grad()
def euler(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    grid: GridLike = "edm",
    rho: float = 7.0,
    t_end: float | None = None,
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
) -> SampleResult:
    r"""Euler's method in the noise level :math:`\hat\sigma = \sigma/\alpha` (EDM's variable); S NFE, order 1.

    Each step is :func:`euler_step`; for every SDE this is DDIM and DPM-Solver-1. An increasing
    ``grid`` encodes.
    """
    score_fn, times, _ = _door(
        score_fn,
        sde,
        x_T,
        steps,
        grid,
        rho,
        t_end,
        generator,
        final_denoise,
        return_trajectory,
        backward_only=False,
    )
    return _run(
        lambda x, t, u: euler_step(score_fn, sde, x, t, u),
        score_fn,
        sde,
        x_T,
        times,
        1,
        final_denoise,
        return_trajectory,
        "euler",
    )


@_doc()
@torch.no_grad()
def heun(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    grid: GridLike = "edm",
    rho: float = 7.0,
    t_end: float | None = None,
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
) -> SampleResult:
    r"""Heun's method in :math:`\hat\sigma = \sigma/\alpha` (Karras et al. 2022, Alg. 1); 2 S NFE, order 2.

    Each step is :func:`heun_step`; the default grid is EDM's :math:`\rho = 7` spacing. Karras
    et al.'s Alg. 1 for VE, and its generalisation (their eq. 4 with :math:`s(t) = \alpha(t)`) to
    VP and sub-VP. An increasing ``grid`` encodes.
    """
    score_fn, times, _ = _door(
        score_fn,
        sde,
        x_T,
        steps,
        grid,
        rho,
        t_end,
        generator,
        final_denoise,
        return_trajectory,
        backward_only=False,
    )
    return _run(
        lambda x, t, u: heun_step(score_fn, sde, x, t, u),
        score_fn,
        sde,
        x_T,
        times,
        2,
        final_denoise,
        return_trajectory,
        "heun",
    )


@_doc()
@torch.no_grad()
def probability_flow_euler(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    grid: GridLike = "uniform",
    rho: float = 7.0,
    t_end: float | None = None,
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
) -> SampleResult:
    r"""Euler's method **in t** on the probability-flow ODE (Song et al. eq. 13); S NFE, order 1.

    :math:`x_{i+1} = x_i + [f(t_i)x_i - \tfrac12 g(t_i)^2 s(x_i, t_i)]h_i` (:func:`probability_flow_euler_step`).
    For teaching: :func:`euler` (the same method in :math:`\hat\sigma`) is several times more
    accurate at equal NFE. An increasing ``grid`` encodes.
    """
    score_fn, times, _ = _door(
        score_fn,
        sde,
        x_T,
        steps,
        grid,
        rho,
        t_end,
        generator,
        final_denoise,
        return_trajectory,
        backward_only=False,
    )
    return _run(
        lambda x, t, u: probability_flow_euler_step(score_fn, sde, x, t, u),
        score_fn,
        sde,
        x_T,
        times,
        1,
        final_denoise,
        return_trajectory,
        "probability_flow_euler",
    )


@_doc()
@torch.no_grad()
def heun_t(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    grid: GridLike = "edm",
    rho: float = 7.0,
    t_end: float | None = None,
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
) -> SampleResult:
    r"""The explicit trapezoidal rule **in t** on the probability-flow ODE; 2 S NFE, order 2.

    Each step is :func:`heun_t_step`. For teaching: EDM's :func:`heun` integrates in
    :math:`\hat\sigma` and is more accurate at equal NFE. An increasing ``grid`` encodes.
    """
    score_fn, times, _ = _door(
        score_fn,
        sde,
        x_T,
        steps,
        grid,
        rho,
        t_end,
        generator,
        final_denoise,
        return_trajectory,
        backward_only=False,
    )
    return _run(
        lambda x, t, u: heun_t_step(score_fn, sde, x, t, u),
        score_fn,
        sde,
        x_T,
        times,
        2,
        final_denoise,
        return_trajectory,
        "heun_t",
    )


@_doc()
@torch.no_grad()
def dpm_solver(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    order: int = 2,
    grid: GridLike = "log_snr",
    rho: float = 7.0,
    t_end: float | None = None,
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
) -> SampleResult:
    r"""DPM-Solver-1 (= DDIM) or DPM-Solver-2 (Lu et al. 2022), single-step, in :math:`\lambda`.

    ``steps`` is the number of steps S, **not** the NFE budget: ``order=1`` costs S NFE,
    ``order=2`` costs 2 S. The default grid is uniform in :math:`\lambda` (Lu et al. Sec. 3.3).
    See :func:`dpm_solver_step`. An increasing ``grid`` encodes.
    """
    score_fn, times, _ = _door(
        score_fn,
        sde,
        x_T,
        steps,
        grid,
        rho,
        t_end,
        generator,
        final_denoise,
        return_trajectory,
        backward_only=False,
    )
    order = checks.choice(checks.integer(order, "order"), "order", (1, 2))
    return _run(
        lambda x, t, u: dpm_solver_step(score_fn, sde, x, t, u, order=order),
        score_fn,
        sde,
        x_T,
        times,
        order,
        final_denoise,
        return_trajectory,
        "dpm_solver",
    )


def _multistep(
    score_fn: ScoreFn,
    sde: SDE,
    times: list[float],
    order: int,
    lower_order_final: bool,
    corrector: bool,
    final_denoise: bool = False,
    generator: torch.Generator | None = None,
    stochastic: bool = False,
    final_jump: str = "auto",
) -> Callable[[Tensor, float, float], Tensor]:
    r"""The step of DPM-Solver++(kM) (``corrector=False``), UniPC-bh2 (``corrector=True``) or,
    with ``stochastic``, SDE-DPM-Solver++(kM).

    Both keep the data predictions :math:`D_j` at earlier grid points and extrapolate
    :math:`D(\lambda)` by a polynomial through the last k of them inside the exact integral

    .. math:: x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}x_i + \sigma_{i+1}\int_{\lambda_i}^{\lambda_{i+1}}
              e^{\lambda}D(\lambda)\,d\lambda

    (Lu et al. 2022b eq. 9); the SDE version integrates the reverse SDE's linear part and its
    noise exactly and :math:`D` against the kernel :math:`2e^{-2(\lambda_{i+1} - \lambda)}`
    (:func:`dpmpp_2m_sde`). Warm start: the order is at most the number of predictions held
    (1 on the first step, 2 on the second), and with ``lower_order_final`` and fewer than
    :data:`LOWER_ORDER_FINAL_BELOW` steps it also falls to the number of steps left.
    """
    coef = _alpha_sigma(sde, *times)
    lam = [math.log(a) - math.log(s) for a, s in coef]
    index = {t: i for i, t in enumerate(times)}
    S = len(times) - 1
    # the final jump, taken at first order with lower_order_final: the last grid step when it
    # is more than JUMP_RATIO times longer in lambda than the one before, else the Tweedie step
    # (index S) when there is one, else the last grid step; final_jump="grid": the last grid step
    jump = S - 1
    long_last = S >= 2 and lam[S] - lam[S - 1] > JUMP_RATIO * (lam[S - 1] - lam[S - 2])
    if final_denoise and final_jump == "auto" and not long_last:
        jump = S
    hist: list[Tensor] = []  # D at the previous grid points, newest last
    pending: list[
        Tensor
    ] = []  # UniPC: D at the current point, from the last corrector evaluation

    def D_at(x, i):
        a, s = coef[i]
        return _data_prediction(x, score_fn(x, _tvec(x, times[i])), a, s)

    def step(x, t, t_next):
        i = index[t]
        D = pending.pop() if pending else D_at(x, i)
        hist.append(D)
        del hist[:-order]
        k = min(order, len(hist))
        if lower_order_final and S < LOWER_ORDER_FINAL_BELOW:
            k = min(k, jump - i + 1)
        (_, s), (a_n, s_n) = coef[i], coef[i + 1]
        h = lam[i + 1] - lam[i]
        if stochastic:
            phi1 = math.expm1(-2 * h)
            base = (s_n / s * math.exp(-h)) * x - (a_n * phi1) * D
            noise = (s_n * math.sqrt(-phi1)) * _noise(x, generator)
            return base + _dpmpp_terms(hist, lam, i, h, k, a_n, phi1, 2 * h) + noise
        phi1 = math.expm1(-h)
        base = (s_n / s) * x - (a_n * phi1) * D
        if not corrector:
            return base + _dpmpp_terms(hist, lam, i, h, k, a_n, phi1)
        x_pred = base + _unipc_terms(
            hist, lam, i, h, k, a_n, phi1, None, predictor=True
        )
        if i + 1 == S:  # no corrector on the last step: its evaluation would be wasted
            return x_pred
        D_next = D_at(x_pred, i + 1)
        pending.append(D_next)
        return base + _unipc_terms(
            hist, lam, i, h, k, a_n, phi1, D_next, predictor=False
        )

    return step


def _dpmpp_terms(hist, lam, i, h, k, a_n, phi1, H=None):
    r"""DPM-Solver++'s higher-order terms: :math:`\alpha\varphi_2 D^{(1)} - 2\alpha\varphi_3 D^{(2)}`.

    :math:`\varphi_j` are taken at ``H`` (``phi1`` = :math:`e^{-H} - 1`): ``H = h`` for the ODE,
    ``H = 2h`` for the SDE, whose kernel :math:`2e^{-2(h - u)}` gives
    :math:`\int_0^h 2e^{-2(h-u)}u^k\,du = 2^{-k}\int_0^H e^{-(H-w)}w^k\,dw`: the ODE's
    coefficients at :math:`H`, with the divided differences still in units of :math:`h`.
    """
    H = h if H is None else H
    if k == 1:
        return 0.0
    D0, D1 = hist[-1], hist[-2]
    r0 = (lam[i] - lam[i - 1]) / h
    d1_0 = (D0 - D1) / r0
    if k == 2:
        return (-0.5 * a_n * phi1) * d1_0
    r1 = (lam[i - 1] - lam[i - 2]) / h
    d1_1 = (D1 - hist[-3]) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)  # h D'(lambda_i)
    d2 = (d1_0 - d1_1) / (r0 + r1)  # h^2 D''/2
    phi2 = phi1 / H + 1
    phi3 = phi2 / H - 0.5
    return (a_n * phi2) * d1 - (2 * a_n * phi3) * d2


def _unipc_terms(hist, lam, i, h, k, a_n, phi1, D_next, predictor: bool):
    r"""UniPC-bh2 (Zhao et al. 2023, data prediction): :math:`-\alpha B(h)\sum_m \rho_m D^{(1)}_m`.

    :math:`r_m = (\lambda_{i-m} - \lambda_i)/h`, :math:`D^{(1)}_m = (D_{i-m} - D_i)/r_m`,
    :math:`B(h) = e^{-h} - 1`, and the :math:`\rho` solve :math:`\sum_m \rho_m r_m^{j-1} = b_j`
    with :math:`b_j = j!\,\varphi_{j+1}(-h)/B(h)` (Zhao et al. Thm. 3.1); the predictor uses the
    k - 1 earlier points (order k), the corrector adds the new evaluation at :math:`r = 1`
    (order k + 1).
    """
    D0 = hist[-1]
    rs = [(lam[i - m] - lam[i]) / h for m in range(1, k)]
    d1s = [(hist[-1 - m] - D0) / r for m, r in zip(range(1, k), rs)]
    if not predictor:
        rs.append(1.0)
        d1s.append(D_next - D0)
    if not d1s:
        return 0.0
    n = len(rs)
    hh = -h
    B = math.expm1(hh)
    h_phi = math.expm1(hh) / hh - 1
    fact, b = 1, []
    for j in range(1, n + 1):
        b.append(h_phi * fact / B)
        fact *= j + 1
        h_phi = h_phi / hh - 1 / fact
    if n == 1:
        rhos = [0.5]  # the reference's simplified choice for one term
    else:
        R = torch.tensor(
            [[r ** (j - 1) for r in rs] for j in range(1, n + 1)], dtype=torch.float64
        )
        rhos = torch.linalg.solve(R, torch.tensor(b, dtype=torch.float64)).tolist()
    total = rhos[0] * d1s[0]
    for rho_m, d in zip(rhos[1:], d1s[1:]):
        total = total + rho_m * d
    return (-a_n * B) * total


@_doc("""        order: 2 or 3, the multistep order.
        lower_order_final: lower the order on the last steps when S < 25 (stabler at few steps).
""" + _FINAL_JUMP)
@torch.no_grad()
def dpmpp_2m(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    grid: GridLike = "mixed",
    rho: float = 7.0,
    t_end: float | None = None,
    order: int = 2,
    lower_order_final: bool = True,
    final_jump: str = "auto",
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
) -> SampleResult:
    r"""DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2): multistep, data prediction, in :math:`\lambda`; S NFE.

    With :math:`h = \lambda_{i+1} - \lambda_i`, :math:`r = (\lambda_i - \lambda_{i-1})/h` and
    :math:`D_i = D(x_i, t_i)` (Tweedie's data prediction),

    .. math:: x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}x_i - \alpha_{i+1}(e^{-h} - 1)
              \Big[\Big(1 + \frac1{2r}\Big)D_i - \frac1{2r}D_{i-1}\Big]:

    the exact integral of the linear part, with :math:`D(\lambda)` extrapolated linearly through
    the last two predictions (a Lagrange polynomial in :math:`\lambda`). One evaluation per step;
    the first step is DPM-Solver++1 (= DDIM). Data prediction (not noise prediction) keeps the
    extrapolated quantity bounded, which matters at few steps and with guidance. ``order=3`` is
    :func:`dpmpp_3m`. Default grid ``"mixed"`` (:func:`time_grid`: measured best on the
    toys). With ``lower_order_final`` the final jump (:data:`JUMP_RATIO`: the last grid step
    when it is one, else the Tweedie step of ``final_denoise``) is taken at first order.
    """
    if t_end is None and isinstance(grid, str):
        t_end = multistep_t_end(sde)
    score_fn, times, _ = _door(
        score_fn,
        sde,
        x_T,
        steps,
        grid,
        rho,
        t_end,
        generator,
        final_denoise,
        return_trajectory,
        backward_only=False,
    )
    order = checks.integer(order, "order", minimum=1, maximum=3)
    checks.boolean(lower_order_final, "lower_order_final")
    final_jump = checks.choice(final_jump, "final_jump", ("auto", "grid"))
    step = _multistep(score_fn, sde, times, order, lower_order_final, corrector=False,
                      final_denoise=final_denoise, final_jump=final_jump)
    return _run(
        step,
        score_fn,
        sde,
        x_T,
        times,
        1,
        final_denoise,
        return_trajectory,
        f"dpmpp_{order}m",
    )


@_doc("""        lower_order_final: lower the order on the last steps when S < 25 (stabler at few steps).
""" + _FINAL_JUMP)
@torch.no_grad()
def dpmpp_3m(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    grid: GridLike = "mixed",
    rho: float = 7.0,
    t_end: float | None = None,
    lower_order_final: bool = True,
    final_jump: str = "auto",
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
) -> SampleResult:
    r"""DPM-Solver++(3M): :func:`dpmpp_2m` with :math:`D(\lambda)` extrapolated by a quadratic; S NFE, order 3.

    With :math:`D^{(1)} \approx hD'` and :math:`D^{(2)} \approx h^2D''/2` from the last three
    predictions (divided differences in :math:`\lambda`),
    :math:`\varphi_1 = e^{-h} - 1`, :math:`\varphi_2 = \varphi_1/h + 1`,
    :math:`\varphi_3 = \varphi_2/h - \tfrac12`:

    .. math:: x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}x_i - \alpha_{i+1}\varphi_1 D_i
              + \alpha_{i+1}\varphi_2 D^{(1)} - 2\alpha_{i+1}\varphi_3 D^{(2)},

    the Taylor expansion of :math:`D` integrated exactly against :math:`e^\lambda`. Warm start:
    orders 1 and 2 on the first two steps. Default grid ``"mixed"`` (:func:`time_grid`).
    """
    return dpmpp_2m(
        score_fn,
        sde,
        x_T,
        steps=steps,
        grid=grid,
        rho=rho,
        t_end=t_end,
        order=3,
        lower_order_final=lower_order_final,
        final_jump=final_jump,
        generator=generator,
        final_denoise=final_denoise,
        return_trajectory=return_trajectory,
    )


@_doc("""        order: the predictor's order p (1 to 3, default 3); with the corrector
            the method has order p + 1.
        lower_order_final: lower the order on the last steps when S < 25 (stabler at few steps).
""" + _FINAL_JUMP)
@torch.no_grad()
def unipc(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int | None = None,
    grid: GridLike = "mixed",
    rho: float = 7.0,
    t_end: float | None = None,
    order: int = 3,
    lower_order_final: bool = True,
    final_jump: str = "auto",
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
) -> SampleResult:
    r"""UniPC-bh2 (Zhao et al. 2023): a multistep predictor (UniP) and corrector (UniC); S NFE.

    Data prediction in :math:`\lambda` like :func:`dpmpp_2m`. The predictor extrapolates
    :math:`D` through the last ``order`` predictions; the corrector then evaluates
    :math:`D_{i+1}` at the predicted point and re-solves the step with it included, raising the
    order by one. That evaluation is the next step's :math:`D_{i+1}`, so the corrector is free:
    one NFE per step (no corrector on the last step). :math:`B(h) = e^{-h} - 1` ("bh2").
    ``order=2`` gives order 3 (diffusers' default); ``order=3`` (sdelab's default)
    order 4. Default grid ``"mixed"`` (:func:`time_grid`). Both defaults were chosen by
    measurement (``benchmarks/samplers_vs_peers.py toys``, exact scores): order 3 on the
    ``"mixed"`` grid had the lowest error over the toy problems at 10 and 20 steps, and
    order 3 also the lower FD on the shipped networks at 10 steps.
    """
    if t_end is None and isinstance(grid, str):
        t_end = multistep_t_end(sde)
    score_fn, times, _ = _door(
        score_fn,
        sde,
        x_T,
        steps,
        grid,
        rho,
        t_end,
        generator,
        final_denoise,
        return_trajectory,
        backward_only=False,
    )
    order = checks.integer(order, "order", minimum=1, maximum=3)
    checks.boolean(lower_order_final, "lower_order_final")
    final_jump = checks.choice(final_jump, "final_jump", ("auto", "grid"))
    step = _multistep(score_fn, sde, times, order, lower_order_final, corrector=True,
                      final_denoise=final_denoise, final_jump=final_jump)
    return _run(
        step, score_fn, sde, x_T, times, 1, final_denoise, return_trajectory, "unipc"
    )


# ----------------------------------------------------------------------------------------------
# Adaptive solves of the probability-flow ODE (shared with sdelab.likelihood)
# ----------------------------------------------------------------------------------------------
def solve_probability_flow(
    fun: Callable[[float, np.ndarray], np.ndarray],
    sde: SDE,
    y0: np.ndarray,
    t0: float,
    t1: float,
    *,
    method: str = "RK45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    dense: bool = False,
):
    r"""Solve :math:`dy/dt = ` ``fun(t, y)`` from ``t0`` to ``t1`` with scipy's ``solve_ivp``, piecewise.

    The solve is split at the schedule's kinks (the clipped cosine schedule's :math:`t_c`, where
    :math:`d\beta/dt` jumps): an embedded error estimate assumes a smooth right-hand side, and a
    step across the kink is only first-order accurate (the error was non-monotone in ``rtol``,
    10x larger at 1e-5 on the test mixture). A non-finite ``fun`` value raises ``ValueError``
    at once (scipy would otherwise shrink the step forever). Used by
    :func:`probability_flow_rk45` and :func:`sdelab.likelihood.log_likelihood`.

    Returns ``(y1, nfe, ts, ys)``: the end state, the evaluations over all pieces, and (with
    ``dense``) the accepted times ``(n,)`` and states ``(len(y0), n)``, else ``None``.
    """
    from scipy.integrate import solve_ivp

    def checked(t, y):
        out = fun(t, y)
        if not np.isfinite(out).all():
            raise ValueError(
                f"score_fn returned NaN or Inf at t = {t:.6g} during the ODE solve"
            )
        return out

    t_c = getattr(getattr(sde, "schedule", None), "t_c", None)
    lo, hi = min(t0, t1), max(t0, t1)
    cuts = [float(t_c)] if t_c is not None and lo < t_c < hi else []
    knots = [t0, *cuts, t1]
    y, nfe, ts, ys = y0, 0, [np.array([t0])], [y0[:, None]]
    for a, b in zip(knots[:-1], knots[1:]):
        sol = solve_ivp(checked, (a, b), y, method=method, rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(
                f"solve_ivp ({method}) failed on t in [{a:g}, {b:g}]: {sol.message}"
            )
        nfe += int(sol.nfev)
        y = sol.y[:, -1]
        if dense:
            ts.append(sol.t[1:])
            ys.append(sol.y[:, 1:])
    if not dense:
        return y, nfe, None, None
    return y, nfe, np.concatenate(ts), np.concatenate(ys, axis=1)


@torch.no_grad()
def probability_flow_rk45(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "RK45",
    t_end: float | None = None,
    t_span: tuple[float, float] | None = None,
    generator: GeneratorLike = None,
    final_denoise: bool = False,
    return_trajectory: bool = False,
) -> SampleResult:
    r"""The probability-flow ODE (Song et al. eq. 13) solved by scipy's adaptive ``solve_ivp``.

    :math:`dx/dt = f(t)x - \tfrac12 g(t)^2 s(x, t)` (:meth:`sdelab.sde.ReverseSDE.drift_at`) from
    :math:`T` to ``t_end`` (default ``sde.eps``), or over ``t_span`` = ``(t_start, t_stop)``
    (``(sde.eps, sde.T)`` encodes data into noise). The whole batch is one flattened float64
    state on the host (NumPy), so the step-size control follows the worst sample; the score is
    evaluated in torch on ``x_T``'s device and dtype. ``method`` is any explicit ``solve_ivp``
    method (``"RK45"``: Dormand--Prince 5(4); ``"DOP853"`` for tight reference solves), with
    ``rtol``/``atol`` its local error tolerances. Solved piecewise between the schedule's kinks
    (:func:`solve_probability_flow`). NFE = the evaluations (+1 with ``final_denoise``, the
    Tweedie step at the last time). ``times``/``trajectory`` hold the accepted steps.
    A NaN/Inf score raises ``ValueError`` (no hang).

    Args:
        score_fn, sde, x_T: as for every sampler (:data:`SAMPLERS`).
        rtol, atol: the solver's local error tolerances.
        method: ``"RK45"``, ``"RK23"`` or ``"DOP853"``.
        t_end: where decoding stops, in ``[eps, T)``; default ``sde.eps``.
        t_span: ``(t_start, t_stop)`` instead of ``(T, t_end)``, in either direction.
        generator: unused (a uniform interface).
        final_denoise: finish with one Tweedie step at the last time (:func:`denoise`).
        return_trajectory: also return the states at the accepted steps.
    """
    score_fn, _, _ = _door(
        score_fn,
        sde,
        x_T,
        None,
        None,
        None,
        None,
        generator,
        final_denoise,
        return_trajectory,
        backward_only=False,
    )
    if t_span is not None and (
        not isinstance(t_span, (tuple, list)) or len(t_span) != 2
    ):
        raise ValueError(f"t_span must be a pair (t_start, t_end), got {t_span!r}")
    rtol, atol = (
        checks.real(rtol, "rtol", positive=True),
        checks.real(atol, "atol", positive=True),
    )
    checks.choice(method, "method", ("RK45", "RK23", "DOP853"))
    if t_span is None:
        t0 = sde.T
        t1 = sde.eps if t_end is None else _float_time(sde, t_end, "t_end")
    else:
        if t_end is not None:
            raise ValueError("give either t_end or t_span, not both")
        t0, t1 = (
            _float_time(sde, t_span[0], "t_span[0]"),
            _float_time(sde, t_span[1], "t_span[1]"),
        )
    if t0 == t1:
        raise ValueError(f"t_span must have t_start != t_end, got ({t0}, {t1})")
    shape, device, dtype = x_T.shape, x_T.device, x_T.dtype
    ode = ReverseSDE(sde, score_fn, probability_flow=True)

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)
        s = score_fn(x, _tvec(x, float(t))).to("cpu", torch.float64)
        return ode.drift_at(torch.from_numpy(y), float(t), s.reshape(-1)).numpy()

    y0 = x_T.detach().to("cpu", torch.float64).numpy().reshape(-1)
    y, nfe, ts, ys = solve_probability_flow(
        fun,
        sde,
        y0,
        t0,
        t1,
        method=method,
        rtol=rtol,
        atol=atol,
        dense=return_trajectory,
    )
    x = torch.from_numpy(y.copy()).reshape(shape).to(device=device, dtype=dtype)
    if final_denoise:
        x = _finite(_denoise_at(score_fn, sde, x, t1), "probability_flow_rk45")
        nfe += 1
    if return_trajectory:
        trajectory = (
            torch.from_numpy(ys.T.copy())
            .reshape(len(ts), *shape)
            .to(device=device, dtype=dtype)
        )
        times = torch.tensor(ts, dtype=dtype, device=device)
    else:
        trajectory, times = None, torch.tensor([t0, t1], dtype=dtype, device=device)
    return SampleResult(x=x, nfe=nfe, times=times, trajectory=trajectory)


SAMPLERS: dict[str, Callable[..., SampleResult]] = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "predictor_corrector": predictor_corrector,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "dpmpp_3m_sde": dpmpp_3m_sde,
    "edm_stochastic": edm_stochastic,
    "euler": euler,
    "heun": heun,
    "dpm_solver": dpm_solver,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_3m": dpmpp_3m,
    "unipc": unipc,
    "probability_flow_euler": probability_flow_euler,
    "heun_t": heun_t,
    "probability_flow_rk45": probability_flow_rk45,
}
"""Every sampler by name (the CLI's ``--sampler`` choices, ``sample_from_checkpoint``).

Each is called as ``sampler(score_fn, sde, x_T, *, steps, grid=..., t_end=None, generator=None,
final_denoise=False, return_trajectory=False, ...)`` and returns a :class:`SampleResult`
(``probability_flow_rk45`` takes ``rtol``/``atol`` instead of ``steps``/``grid``).
"""
