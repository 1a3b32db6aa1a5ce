r"""Sampling with a score alone: Langevin MCMC and annealed Langevin dynamics (SMLD /
NCSN).

**Langevin dynamics.** The SDE :math:`dx = \nabla\log p(x)\,dt + \sqrt2\,dw` has
:math:`p` as its stationary law (its Fokker--Planck equation is solved by :math:`p`).
Discretised with a step :math:`\epsilon` it is the *unadjusted Langevin algorithm* (ULA;
Roberts & Tweedie 1996; Song & Ermon 2019, eq. 4):

.. math:: x_{k+1} = x_k + \frac{\epsilon}{2}\,\nabla_x\log p(x_k)
          + \sqrt{\epsilon}\,z_k, \qquad z_k \sim \mathcal N(0, I).

Without a Metropolis correction the chain's stationary law is only close to :math:`p`:
for :math:`p = \mathcal N(m, s^2 I)` the update is :math:`x' - m = (1 -
\frac{\epsilon}{2s^2})(x - m) + \sqrt\epsilon z`, whose stationary variance :math:`v`
solves :math:`v = (1 - \frac{\epsilon}{2s^2})^2 v + \epsilon`:

.. math:: v = \frac{s^2}{1 - \epsilon/(4s^2)} \qquad (0 < \epsilon < 4s^2),

a relative bias of :math:`\epsilon/(4s^2)` to first order
(:func:`ula_stationary_variance`).

**Annealed Langevin dynamics** (Song & Ermon 2019, Alg. 1). A *noise-conditional* score
:math:`s(x, \sigma) \approx \nabla_x\log p_\sigma(x)` of the data perturbed by
:math:`\mathcal N(0, \sigma^2 I)` is available for a decreasing geometric sequence
:math:`\sigma_1 > \dots > \sigma_L` (:func:`geometric_sigmas`). ULA runs
``steps_per_level`` = T steps at each level in turn, each level starting where the last
ended, with the step

.. math:: \alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2,

so that the ratio of the drift to the noise is the same at every level. Here score
functions take the noise level: ``score_fn(x, sigma)`` with ``sigma`` a ``(B,)`` tensor
(:func:`ve_noise_conditional` turns a time-conditioned score of a VE SDE into one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from . import checks
from .sde import VESDE
from .utils import ScoreFn, Tensor

__all__ = [
    "LangevinResult",
    "ula_stationary_variance",
    "langevin",
    "geometric_sigmas",
    "annealed_langevin",
    "ve_noise_conditional",
]


@dataclass
class LangevinResult:
    """What :func:`langevin` and :func:`annealed_langevin` return.

    Attributes:
        x: the final states, shaped like the initial ``x``.
        nfe: number of score evaluations (each on the whole batch).
        trajectory: ``(K + 1, B, ...)`` states after every step (``trajectory[0]`` is
            the initial ``x``), or ``None`` unless ``return_trajectory=True``.
    """

    x: Tensor
    nfe: int
    trajectory: Tensor | None = None


def _check_x(x) -> Tensor:
    return checks.tensor(x, "x", min_ndim=1, floating=True)


def ula_stationary_variance(s2: float, step_size: float) -> float:
    r"""Stationary variance of ULA with step :math:`\epsilon` on
    :math:`\mathcal N(m, s^2)`: :math:`s^2/(1 - \epsilon/(4s^2))`, for
    :math:`0 < \epsilon < 4s^2` (the chain diverges beyond).
    """
    s2 = checks.real(s2, "s2", positive=True)
    h = checks.real(step_size, "step_size", positive=True)
    if h >= 4 * s2:
        raise ValueError(
            f"step_size must be < 4 s2 = {4 * s2:g} for a stationary law, got {h:g}"
        )
    return s2 / (1 - h / (4 * s2))


@torch.no_grad()
def langevin(
    score: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    step_size: float,
    steps: int,
    generator=None,
    return_trajectory: bool = False,
) -> LangevinResult:
    r"""The unadjusted Langevin algorithm for a fixed target (module docstring; Song &
    Ermon eq. 4):

    .. math:: x_{k+1} = x_k + \tfrac{\epsilon}{2}\,s(x_k) + \sqrt\epsilon\,z_k,

    ``steps`` times, with :math:`\epsilon` = ``step_size`` and ``score(x)``
    :math:`\approx\nabla\log p(x)` (a function of ``x`` alone: the target does not
    change). Each of the B rows of ``x`` is an independent chain. ``generator``: a
    ``torch.Generator`` (or int seed) for the noise.
    """
    checks.callable_(score, "score", "score(x)")
    _check_x(x)
    h = checks.real(step_size, "step_size", positive=True)
    steps = checks.integer(steps, "steps", minimum=1)
    generator = checks.generator(generator, like=x)
    traj = [x] if return_trajectory else None
    root_h = math.sqrt(h)
    for _ in range(steps):
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + (0.5 * h) * score(x) + root_h * z
        if traj is not None:
            traj.append(x)
    return LangevinResult(x, steps, torch.stack(traj) if traj is not None else None)


def geometric_sigmas(
    sigma_max: float, sigma_min: float, levels: int, dtype=torch.float64
) -> Tensor:
    r"""NCSN's noise levels :math:`\sigma_1 = \sigma_{\max} > \dots > \sigma_L =
    \sigma_{\min}`, a
    geometric sequence (Song & Ermon 2019, Sec. 4.2): :math:`\sigma_i = \sigma_{\max}
    (\sigma_{\min}/\sigma_{\max})^{(i-1)/(L-1)}`. Shape ``(L,)``, decreasing.
    """
    hi = checks.real(sigma_max, "sigma_max", positive=True)
    lo = checks.real(sigma_min, "sigma_min", positive=True)
    levels = checks.integer(levels, "levels", minimum=2)
    if not lo < hi:
        raise ValueError(
            f"sigma_min must be < sigma_max, got sigma_min={lo:g}, sigma_max={hi:g}"
        )
    return torch.exp(
        torch.linspace(math.log(hi), math.log(lo), levels, dtype=torch.float64)
    ).to(dtype)


@torch.no_grad()
def annealed_langevin(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    sigmas,
    x: Tensor,
    *,
    eps: float,
    steps_per_level: int,
    generator=None,
    return_trajectory: bool = False,
) -> LangevinResult:
    r"""Annealed Langevin dynamics, Song & Ermon (2019) Alg. 1.

    For :math:`i = 1, \dots, L` (``sigmas`` decreasing) with :math:`\alpha_i =
    \epsilon\,\sigma_i^2/\sigma_L^2`, run T = ``steps_per_level`` ULA steps on the
    perturbed density :math:`p_{\sigma_i}`:

    .. math:: x \leftarrow x + \tfrac{\alpha_i}{2}\,s(x, \sigma_i)
              + \sqrt{\alpha_i}\,z .

    ``score_fn(x, sigma)`` takes a ``(B,)`` tensor of noise levels. ``eps`` is
    :math:`\epsilon`, the step at the smallest level. NFE = L T. Noise is drawn from
    ``generator`` in the order of the steps, one ``randn`` of x's shape per step.
    """
    checks.callable_(score_fn, "score_fn", "score_fn(x, sigma)")
    _check_x(x)
    sig = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if sig.numel() < 1 or not torch.isfinite(sig).all() or (sig <= 0).any():
        raise ValueError(
            "sigmas must be a non-empty sequence of finite positive noise levels"
        )
    if sig.numel() > 1 and not (sig[1:] < sig[:-1]).all():
        raise ValueError("sigmas must be strictly decreasing (sigma_1 > ... > sigma_L)")
    eps = checks.real(eps, "eps", positive=True)
    T = checks.integer(steps_per_level, "steps_per_level", minimum=1)
    generator = checks.generator(generator, like=x)
    levels = sig.tolist()
    traj = [x] if return_trajectory else None
    for sigma in levels:
        alpha = eps * sigma**2 / levels[-1] ** 2
        s_vec = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        for _ in range(T):
            z = torch.randn(
                x.shape, generator=generator, device=x.device, dtype=x.dtype
            )
            x = x + (0.5 * alpha) * score_fn(x, s_vec) + math.sqrt(alpha) * z
            if traj is not None:
                traj.append(x)
    return LangevinResult(
        x, len(levels) * T, torch.stack(traj) if traj is not None else None
    )


def ve_noise_conditional(
    score_fn: ScoreFn, sde: VESDE
) -> Callable[[Tensor, Tensor], Tensor]:
    r"""Turn a time-conditioned score of a VE SDE into NCSN's noise-conditional
    ``score(x, sigma)``.

    The VE kernel is :math:`\mathcal N(x_0, \sigma_t^2 I)` with :math:`\sigma_t^2 =
    \sigma^2(t) - \sigma_{\min}^2`, so the perturbed density at noise level
    :math:`\sigma` is :math:`p_t` at the time where :math:`\sigma_t = \sigma`, i.e.
    where :math:`\log(\alpha/\sigma_t) = -\log\sigma`
    (:meth:`~sdelab.sde.SDE.t_from_half_log_snr`). Noise levels must lie in :math:`(0,
    \sigma_1]` with :math:`\sigma_1^2 = \sigma_{\max}^2 - \sigma_{\min}^2` (times in
    :math:`[0, 1]`).
    """
    if not isinstance(sde, VESDE):
        raise TypeError(
            f"sde must be a VESDE (noise levels are VE kernels), got "
            f"{type(sde).__name__}"
        )
    checks.callable_(score_fn, "score_fn", "score_fn(x, t)")

    def score(x: Tensor, sigma: Tensor) -> Tensor:
        t = sde.t_from_half_log_snr(-torch.log(sigma.to(torch.float64)))
        return score_fn(x, t.to(x.dtype))

    return score
