r"""Flow matching and stochastic interpolants, and their exact link to the score.

**Interpolants.** A Gaussian probability path joins data :math:`x_0 \sim p_0` at
:math:`t = 0` to noise :math:`x_1 \sim \mathcal N(0, I)` at :math:`t = 1`:

.. math:: x_t = \alpha(t)\,x_0 + \sigma(t)\,x_1, \qquad
          u_t(x_t \mid x_0, x_1) = \dot\alpha(t)\,x_0 + \dot\sigma(t)\,x_1 ,

with the *conditional velocity* :math:`u_t` (Lipman et al. 2023; Albergo &
Vanden-Eijnden 2023; Liu et al. 2023 -- those papers put data at :math:`t = 1`; here
time runs as in the SDEs, data at 0). The linear path :math:`\alpha = 1 - t, \sigma = t`
is rectified flow / the conditional OT path (:func:`linear_interpolant`); :math:`\alpha
= \cos\frac{\pi t}2, \sigma = \sin\frac{\pi t}2` is the trigonometric one
(:func:`trig_interpolant`); every sdelab SDE is one too (:func:`interpolant_from_sde`).

**Flow matching.** The *marginal* velocity :math:`v(x, t) = \mathbb E[u_t \mid x_t = x]`
moves :math:`p_t` along the path (it satisfies the continuity equation), and the
regression :math:`\mathbb E\,\|v_\theta(x_t, t) - u_t\|^2` (:func:`flow_matching_loss`)
has it as its minimiser.

**Velocity and score.** By Tweedie, :math:`\mathbb E[x_0 \mid x] = (x + \sigma^2
s)/\alpha` and :math:`\mathbb E[x_1 \mid x] = -\sigma s` with :math:`s = \nabla\log
p_t(x)`, hence

.. math:: v(x, t) = \frac{\dot\alpha}{\alpha}\,x + \sigma^2\,\dot\lambda(t)\,s(x, t),
          \qquad \lambda = \log\frac{\alpha}{\sigma}, \quad
          \dot\lambda = \frac{\dot\alpha}{\alpha} - \frac{\dot\sigma}{\sigma} < 0 .

This is exactly the probability-flow drift :math:`f x - \tfrac12 g^2 s` of the SDE with
:math:`f = \dot\alpha/\alpha` and :math:`g^2 = \frac{d\sigma^2}{dt} - 2f\sigma^2 =
-2\sigma^2\dot\lambda` (:class:`InterpolantSDE`), the SDE whose transition kernel is the
path. So a trained velocity :math:`v_\theta` gives a score :math:`s_\theta = (v_\theta -
\frac{\dot\alpha}{\alpha}x)/(\sigma^2\dot\lambda)` (:func:`score_fn_from_velocity`), and
every sdelab sampler and :func:`sdelab.likelihood.log_likelihood` runs on a
flow-matching model unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .sde import SDE
from .utils import ScoreFn, Tensor, TimeLike, batch_time, check_finite, expand

__all__ = [
    "Interpolant",
    "InterpolantSDE",
    "conditional_velocity",
    "flow_matching_loss",
    "interpolant_from_sde",
    "interpolate",
    "linear_interpolant",
    "mixture_velocity",
    "score_fn_from_velocity",
    "trig_interpolant",
    "velocity_fn_from_score",
]

VelocityFn = Callable[[Tensor, Tensor], Tensor]
Coeff = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Interpolant:
    r"""A Gaussian path :math:`x_t = \alpha(t)x_0 + \sigma(t)x_1`: the four functions of
    ``t`` it needs.

    ``alpha``, ``sigma``, ``d_alpha``, ``d_sigma`` map a tensor of times to a tensor of
    the same shape; :math:`\alpha` decreases from 1 and :math:`\sigma` increases from 0
    (or from a small value).
    """

    name: str
    alpha: Coeff
    sigma: Coeff
    d_alpha: Coeff
    d_sigma: Coeff

    def coeffs(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""``(alpha, sigma, d_alpha, d_sigma)`` at ``t``."""
        return self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t)

    def d_half_log_snr(self, t: Tensor) -> Tensor:
        r""":math:`\dot\lambda = \dot\alpha/\alpha - \dot\sigma/\sigma`, the rate of
        :math:`\lambda = \log(\alpha/\sigma)`.
        """
        a, s, da, ds = self.coeffs(t)
        return da / a - ds / s


def linear_interpolant() -> Interpolant:
    r"""The linear path :math:`\alpha = 1 - t`, :math:`\sigma = t`.

    Rectified flow (Liu et al. 2023), the conditional OT path of Lipman et al. (2023).
    """
    return Interpolant(
        "linear",
        lambda t: 1 - t,
        lambda t: t,
        lambda t: -torch.ones_like(t),
        lambda t: torch.ones_like(t),
    )


def trig_interpolant() -> Interpolant:
    r"""Trigonometric path,
    :math:`\alpha = \cos\frac{\pi t}2`, :math:`\sigma = \sin\frac{\pi t}2`.

    Albergo & Vanden-Eijnden (2023); :math:`\alpha^2 + \sigma^2 = 1`, like VP.
    """
    h = 0.5 * math.pi
    return Interpolant(
        "trig",
        lambda t: torch.cos(h * t),
        lambda t: torch.sin(h * t),
        lambda t: -h * torch.sin(h * t),
        lambda t: h * torch.cos(h * t),
    )


def interpolant_from_sde(sde: SDE) -> Interpolant:
    r"""The path of an sdelab SDE: :math:`(\alpha, \sigma)` from its kernel.

    The rates follow from :math:`f, g`.

    :math:`\dot\alpha = f\alpha` and, from :math:`\frac{d\sigma^2}{dt} = 2f\sigma^2 +
    g^2`, :math:`\dot\sigma = (f\sigma^2 + \tfrac12 g^2)/\sigma` (valid for :math:`t >
    0`).
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdelab SDE, got {type(sde).__name__}")

    def d_alpha(t):
        return sde.drift_coeff(t) * sde.marginal_coeffs(t)[0]

    def d_sigma(t):
        s = sde.marginal_coeffs(t)[1]
        return (sde.drift_coeff(t) * s**2 + 0.5 * sde.diffusion_coeff(t) ** 2) / s

    return Interpolant(
        sde.name,
        lambda t: sde.marginal_coeffs(t)[0],
        lambda t: sde.marginal_coeffs(t)[1],
        d_alpha,
        d_sigma,
    )


def _check_path(path) -> None:
    if not isinstance(path, Interpolant):
        raise TypeError(
            f"path must be an sdelab.flow.Interpolant, got {type(path).__name__}"
        )


def _t(t: TimeLike, x: Tensor) -> Tensor:
    t = batch_time(t, x)
    if torch.isnan(t).any() or (t < 0).any() or (t > 1).any():
        raise ValueError("t must lie in [0, 1]")
    return t


def interpolate(path: Interpolant, x0: Tensor, x1: Tensor, t: TimeLike) -> Tensor:
    r""":math:`x_t = \alpha(t)x_0 + \sigma(t)x_1`, for data ``x0`` and noise ``x1``.

    Both have the same shape; ``t`` is a float or a ``(B,)`` tensor in [0, 1].
    """
    _check_path(path)
    if x0.shape != x1.shape:
        raise ValueError(
            f"x1 must have the shape of x0 {tuple(x0.shape)}, got {tuple(x1.shape)}"
        )
    t = _t(t, x0)
    return expand(path.alpha(t), x0) * x0 + expand(path.sigma(t), x0) * x1


def conditional_velocity(
    path: Interpolant, x0: Tensor, x1: Tensor, t: TimeLike
) -> Tensor:
    r"""Conditional velocity :math:`u_t = \dot\alpha x_0 + \dot\sigma x_1 = \dot x_t`.

    It is the regression target of flow matching.
    """
    _check_path(path)
    if x0.shape != x1.shape:
        raise ValueError(
            f"x1 must have the shape of x0 {tuple(x0.shape)}, got {tuple(x1.shape)}"
        )
    t = _t(t, x0)
    return expand(path.d_alpha(t), x0) * x0 + expand(path.d_sigma(t), x0) * x1


def flow_matching_loss(
    velocity_fn: VelocityFn,
    path: Interpolant,
    x0: Tensor,
    *,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    x1: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Conditional flow matching (Lipman et al. 2023, eq. 9; Liu et al. 2023, eq. 1).

    .. math:: L(\theta) = \mathbb E_{t\sim\mathcal U[0,1],\,x_0,\,x_1}\ \tfrac1D
              \big\|v_\theta(x_t, t) - \dot\alpha(t)x_0 - \dot\sigma(t)x_1\big\|^2,
              \qquad x_t = \alpha(t)x_0 + \sigma(t)x_1,\ x_1 \sim \mathcal N(0, I).

    Its gradient equals that of the regression onto the marginal velocity :math:`v`,
    which it therefore learns. ``t`` (``(B,)``) and ``x1`` override the draws from
    ``generator``; ``reduction`` is ``"mean"`` or ``"none"`` (per-sample values).
    """
    _check_path(path)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    check_finite(x0, "x0")
    if t is None:
        t = torch.rand(
            x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype
        )
    t = _t(t, x0)
    if x1 is None:
        x1 = torch.randn(
            x0.shape, generator=generator, device=x0.device, dtype=x0.dtype
        )
    target = conditional_velocity(path, x0, x1, t)
    err = (
        (velocity_fn(interpolate(path, x0, x1, t), t) - target)
        .flatten(1)
        .pow(2)
        .mean(1)
    )
    return err.mean() if reduction == "mean" else err


def velocity_fn_from_score(score_fn: ScoreFn, path: Interpolant) -> VelocityFn:
    r"""The marginal velocity implied by a score of the path's marginals:

    .. math:: v(x, t) = \frac{\dot\alpha}{\alpha}x + \sigma^2\dot\lambda\,s(x, t),
              \qquad
              \dot\lambda = \frac{\dot\alpha}{\alpha} - \frac{\dot\sigma}{\sigma}.
    """
    _check_path(path)

    def velocity_fn(x: Tensor, t: TimeLike) -> Tensor:
        t = batch_time(t, x)
        a, s, da, ds = path.coeffs(t)
        c = expand(s**2 * (da / a - ds / s), x)
        return expand(da / a, x) * x + c * score_fn(x, t)

    return velocity_fn


def score_fn_from_velocity(velocity_fn: VelocityFn, path: Interpolant) -> ScoreFn:
    r"""The score implied by a velocity field of the path.

    The inverse of :func:`velocity_fn_from_score`:

    .. math::
        s(x, t) = \frac{v(x, t) - \frac{\dot\alpha}{\alpha}x}{\sigma^2\dot\lambda}.

    Pass it with :class:`InterpolantSDE` ``(path)`` to any sdelab sampler or to
    :func:`sdelab.likelihood.log_likelihood`; their probability-flow drift is then
    exactly ``v``.
    """
    _check_path(path)
    if not callable(velocity_fn):
        raise TypeError(
            f"velocity_fn must be callable as v(x, t), got {type(velocity_fn).__name__}"
        )

    def score_fn(x: Tensor, t: TimeLike) -> Tensor:
        t = batch_time(t, x)
        a, s, da, ds = path.coeffs(t)
        c = expand(s**2 * (da / a - ds / s), x)
        return (velocity_fn(x, t) - expand(da / a, x) * x) / c

    return score_fn


class InterpolantSDE(SDE):
    r"""The linear SDE whose transition kernel is the path.

    The kernel is :math:`\mathcal N(\alpha(t)x_0, \sigma(t)^2 I)` when

    .. math:: f(t) = \frac{\dot\alpha}{\alpha}, \qquad
              g(t)^2 = \frac{d\sigma^2}{dt} - 2f\sigma^2 = -2\sigma^2\dot\lambda .

    Its probability-flow drift :math:`f x - \frac12 g^2 s` is the flow-matching
    velocity. For the linear path :math:`\alpha(1) = 0` makes :math:`f` infinite at
    :math:`t = 1`, so the SDE stops at ``T < 1`` (default 0.999) with the prior
    :math:`\mathcal N(0, \sigma(T)^2 I)`; the prior mismatch is the data scaled by
    :math:`\alpha(T)` (0.001 for the linear path).
    """

    def __init__(self, path: Interpolant, T: float = 0.999, eps: float = 1e-3):
        _check_path(path)
        if not (0 < eps < T <= 1):
            raise ValueError(f"need 0 < eps < T <= 1, got eps={eps}, T={T}")
        self.path, self.T, self.eps = path, float(T), float(eps)
        self.name = f"interpolant-{path.name}"

    def drift_coeff(self, t):
        return self.path.d_alpha(t) / self.path.alpha(t)

    def diffusion_coeff(self, t):
        # -2 sigma^2 dlambda = 2 (sigma sigma' - f sigma^2): finite at t = 0 (sigma = 0)
        a, s, da, ds = self.path.coeffs(t)
        return torch.sqrt((2 * (s * ds - da / a * s**2)).clamp(min=0))

    def marginal_coeffs(self, t):
        t = self._time(t)
        return self.path.alpha(t), self.path.sigma(t)

    def t_from_half_log_snr(self, lam):
        r"""The time with :math:`\log(\alpha/\sigma) = \lambda`, by bisection
        (:math:`\lambda` decreases in t).
        """
        lam = torch.as_tensor(lam, dtype=torch.float64)
        lo, hi = torch.zeros_like(lam), torch.full_like(lam, self.T)
        for _ in range(60):  # 2^-60 of [0, T]: below float64 resolution
            mid = 0.5 * (lo + hi)
            above = (
                torch.log(self.path.alpha(mid)) - torch.log(self.path.sigma(mid)) > lam
            )
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    @property
    def prior_std(self):
        return float(self.path.sigma(torch.tensor(self.T, dtype=torch.float64)))

    def config(self):
        return {"name": self.name, "T": self.T, "eps": self.eps}


def mixture_velocity(mixture, path: Interpolant) -> VelocityFn:
    r"""The exact marginal velocity of a :class:`~sdelab.toy.GaussianMixture` along
    ``path``, by conditioning.

    For a component :math:`\mathcal N(\mu_k, \Sigma_k)`, :math:`x_t \mid k \sim \mathcal
    N(\alpha\mu_k, C_k)` with :math:`C_k = \alpha^2\Sigma_k + \sigma^2 I`, and Gaussian
    conditioning gives :math:`\mathbb E[x_0 \mid x, k] = \mu_k + \alpha\Sigma_k
    C_k^{-1}(x - \alpha\mu_k)`, :math:`\mathbb E[x_1 \mid x, k] = \sigma C_k^{-1}(x -
    \alpha\mu_k)`. Averaging :math:`\dot\alpha\,\mathbb E[x_0 \mid x, k] +
    \dot\sigma\,\mathbb E[x_1 \mid x, k]` over the responsibilities :math:`p_t(k \mid
    x)` gives :math:`v`. No score enters: this is an independent check of
    :func:`velocity_fn_from_score`.
    """
    _check_path(path)

    def velocity_fn(x: Tensor, t: TimeLike) -> Tensor:
        t = batch_time(t, x).to(mixture.means.dtype)
        xf = x.reshape(x.shape[0], -1).to(mixture.means.dtype)
        a, s, da, ds = path.coeffs(t)
        eye = torch.eye(mixture.dim, dtype=xf.dtype, device=xf.device)
        cov = (
            a[:, None, None, None] ** 2 * mixture.covs
            + (s**2)[:, None, None, None] * eye
        )
        diff = xf[:, None, :] - a[:, None, None] * mixture.means  # (B, K, d)
        sol = torch.linalg.solve(cov, diff.unsqueeze(-1)).squeeze(
            -1
        )  # C_k^{-1}(x - a mu_k)
        e_x0 = mixture.means + a[:, None, None] * torch.einsum(
            "kij,bkj->bki", mixture.covs, sol
        )
        e_x1 = s[:, None, None] * sol
        u = da[:, None, None] * e_x0 + ds[:, None, None] * e_x1
        log_n = -0.5 * (diff * sol).sum(-1) - 0.5 * torch.linalg.slogdet(cov)[1]
        r = torch.softmax(torch.log(mixture.weights) + log_n, dim=-1)  # p_t(k | x)
        return (r[..., None] * u).sum(1).reshape(x.shape).to(x.dtype)

    return velocity_fn
