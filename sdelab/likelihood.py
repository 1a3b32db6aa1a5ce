r"""Exact log-likelihoods through the probability-flow ODE, and bits per dimension.

**The ODE.** Every SDE here has the probability-flow ODE (Song et al. 2021, eq. 13)

.. math:: \frac{dx}{dt} = \tilde f(x, t) = f(t)\,x - \tfrac12 g(t)^2\,s(x, t),
          \qquad s(x, t) \approx \nabla_x\log p_t(x),

whose solutions carry :math:`p_t` to :math:`p_{t'}` for all :math:`t, t'`. Along a solution the
density obeys the instantaneous change of variables (Chen et al. 2018, Thm. 1),

.. math:: \frac{d}{dt}\log p_t(x(t)) = -\nabla\!\cdot\tilde f(x(t), t),

so integrating from :math:`t_0` to :math:`T` (Song et al., App. D.2, eq. 39) gives

.. math:: \log p_{t_0}(x(t_0)) = \log p_T(x(T)) + \int_{t_0}^{T}\nabla\!\cdot\tilde f(x(t), t)\,dt,

and :math:`\log p_T` is replaced by the prior :math:`\log\pi = \log\mathcal N(0, \sigma_T^2 I)`
(:meth:`~sdelab.sde.SDE.prior_logp`: :math:`\sigma_T = \sigma_{\max}` for VE, 1 for VP and
sub-VP). Because the drift is linear in :math:`x` apart from the score, its divergence is

.. math:: \nabla\!\cdot\tilde f = D\,f(t) - \tfrac12 g(t)^2\,\nabla\!\cdot s(x, t),

with :math:`D` the number of dimensions; only :math:`\nabla\cdot s` is computed by autograd, the
:math:`D f(t)` part exactly (so it adds no Hutchinson variance).

**The divergence.** ``"exact"``: the trace of the Jacobian, one backward pass per dimension
(:func:`exact_divergence`; fine for toys, :math:`D` times a forward for images). ``"hutchinson"``:
:math:`\nabla\cdot s \approx \frac1n\sum_k \epsilon_k^\top (\partial s/\partial x)\,\epsilon_k` with
:math:`\mathbb E[\epsilon\epsilon^\top] = I` (Hutchinson 1989; Grathwohl et al. 2019), one
vector-Jacobian product per probe (:func:`hutchinson_divergence`). The probes are drawn **once**
per call and held fixed during the solve, so the adaptive solver sees one smooth ODE; the
trajectory :math:`x(t)` does not involve the probes, hence the estimate of :math:`\log p` is
unbiased (up to the solver error) with variance :math:`\propto 1/n`.

**What is computed, exactly.** The solve runs from ``t0`` (default ``sde.eps``) to ``T``: the data
point is treated as a sample of :math:`p_{t_0}`, not :math:`p_0`, because a learned score is
singular or untrained at :math:`t = 0`. The difference :math:`\log p_{t_0}(x) - \log p_0(x)` is
the *eps bias*: :math:`p_{t_0}` is :math:`p_0` scaled by :math:`\alpha(t_0)` and blurred by
noise of standard deviation :math:`\sigma(t_0)`, so the bias is of order
:math:`1 - \alpha(t_0)^2` plus :math:`\sigma(t_0)^2/s^2` per dimension, for data varying on a
length scale :math:`s`. With the default ``eps``: VE has :math:`\alpha = 1`,
:math:`\sigma(10^{-5}) = 1.3\times10^{-4}` (negligible); VP/sub-VP-linear have
:math:`1 - \alpha(10^{-3})^2 \approx B(10^{-3}) = 1.1\times10^{-4}`, and VP's
:math:`\sigma(10^{-3}) = 0.0105` exceeds the 8-bit quantisation step of images in
:math:`[-1, 1]` (:math:`2/256 = 0.0078`). For bits/dim pass a smaller ``t0`` (Song et al.
evaluate likelihoods with :math:`\epsilon = 10^{-5}`) if the network was trained down to it.
A second, separate error is the *prior mismatch* :math:`\log\pi(x_T) - \log p_T(x_T)`: :math:`p_T` is not exactly the
prior (VE adds the data variance to :math:`\sigma_{\max}^2`; VP keeps a fraction
:math:`\alpha(T)` of the data mean, 0.0066 for the linear and 0.057 for the clipped cosine
schedule). The third is the ODE solver's error, controlled by ``rtol``/``atol``. The tests in
``tests/test_likelihood.py`` separate the three against the toy mixtures' exact densities.

**Batching.** The whole batch is one ODE state (concatenated and solved in float64 by
``scipy.integrate.solve_ivp``, RK45 by default). The step size is chosen from the RMS of the
scaled error over the whole state, so every sample shares the steps; ``nfe`` is the number of
score evaluations of that shared solve (each on the whole batch).

**Bits per dimension** (:func:`bits_per_dim`, :func:`bpd_from_logp`) for 8-bit images: see
:func:`bpd_from_logp` for the complete bookkeeping from the discrete data to the model's range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import checks
from .samplers import solve_probability_flow
from .sde import SDE, ReverseSDE
from .utils import ScoreFn, Tensor

__all__ = [
    "BitsPerDimResult",
    "LikelihoodResult",
    "bits_per_dim",
    "bpd_from_logp",
    "dequantize_uniform",
    "draw_probes",
    "exact_divergence",
    "hutchinson_divergence",
    "log_likelihood",
]

DIVERGENCES = ("exact", "hutchinson")
NOISES = ("rademacher", "gaussian")


@dataclass(frozen=True)
class LikelihoodResult:
    r"""What :func:`log_likelihood` returns; every tensor is float64 of shape ``(B,)`` unless noted.

    Attributes:
        logp: :math:`\log p_{t_0}(x) \approx \log p_0(x)` in nats, ``prior_logp + delta_logp``.
        prior_logp: :math:`\log\pi(x(T))`, the prior's log-density at the ODE's endpoint.
        delta_logp: :math:`\int_{t_0}^T \nabla\cdot\tilde f(x(t), t)\,dt`.
        x_T: the endpoint :math:`x(T)`, shaped like the input (float64).
        nfe: number of score evaluations of the (batched) solve.
        t0, t1: the integration interval (``t1`` is the SDE's ``T``).
    """

    logp: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    x_T: Tensor
    nfe: int
    t0: float
    t1: float

    @property
    def nll(self) -> Tensor:
        """Negative log-likelihood in nats, ``-logp``."""
        return -self.logp

    @property
    def num_dims(self) -> int:
        """The dimension D of one data point (the product of its trailing shape)."""
        return self.x_T[0].numel()

    @property
    def nll_per_dim(self) -> Tensor:
        """Negative log-likelihood in nats per dimension."""
        return -self.logp / self.num_dims


@dataclass(frozen=True)
class BitsPerDimResult:
    r"""What :func:`bits_per_dim` returns.

    Attributes:
        bpd: bits per dimension of each image, ``(B,)`` (an upper bound on the discrete model's
            :math:`-\log_2 P(k)/D` in expectation over the dequantization noise).
        x: the dequantized images in the model range, the points whose density was computed.
        likelihood: the :class:`LikelihoodResult` of the ODE solve on ``x``.
    """

    bpd: Tensor
    x: Tensor
    likelihood: LikelihoodResult

    @property
    def nfe(self) -> int:
        """Score evaluations of the ODE solve."""
        return self.likelihood.nfe

    @property
    def mean(self) -> float:
        """The mean bits/dim over the batch."""
        return self.bpd.mean().item()


# ----------------------------------------------------------------------------------------------
# Divergence estimators
# ----------------------------------------------------------------------------------------------
def exact_divergence(fn, x: Tensor) -> Tensor:
    r""":math:`\nabla\cdot F(x) = \sum_i \partial F_i/\partial x_i` per sample, shape ``(B,)``.

    ``fn`` maps ``(B, ...)`` to the same shape and treats samples independently. One backward
    pass per dimension :math:`D` (each gives :math:`\partial F_i/\partial x_i` for every sample
    at once), so use it for small :math:`D`; :func:`hutchinson_divergence` otherwise.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(x)
        _check_same_shape(out, x)
        if not out.requires_grad:  # F does not depend on x (e.g. a zero score): divergence 0
            return x.new_zeros(x.shape[0]).detach()
        flat = out.reshape(x.shape[0], -1)
        d = flat.shape[1]
        div = x.new_zeros(x.shape[0])
        for i in range(d):
            (grad,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i < d - 1)
            div = div + grad.reshape(x.shape[0], -1)[:, i]
    return div.detach()


def hutchinson_divergence(fn, x: Tensor, probes: Tensor) -> Tensor:
    r"""Hutchinson's estimate :math:`\frac1n\sum_k \epsilon_k^\top J_F(x)\,\epsilon_k`, shape ``(B,)``.

    ``probes`` has shape ``(n, *x.shape)`` with :math:`\mathbb E[\epsilon\epsilon^\top] = I`
    (:func:`draw_probes`). Each term is one vector-Jacobian product
    :math:`\epsilon^\top J = \nabla_x(\epsilon\cdot F)`. For a symmetric Jacobian :math:`A` (a
    score's Jacobian is a Hessian) one probe has variance :math:`2\sum_{i\ne j}A_{ij}^2`
    (Rademacher) or :math:`2\lVert A\rVert_F^2` (Gaussian): Rademacher is never worse.
    """
    if probes.dim() != x.dim() + 1 or tuple(probes.shape[1:]) != tuple(x.shape):
        raise ValueError(f"probes must have shape (n, *x.shape) = (n, {', '.join(map(str, x.shape))}); "
                         f"got {tuple(probes.shape)}")
    n = probes.shape[0]
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(x)
        _check_same_shape(out, x)
        total = x.new_zeros(x.shape[0])
        if not out.requires_grad:  # F does not depend on x: every vector-Jacobian product is 0
            return total.detach()
        for k in range(n):
            v = probes[k].to(out.dtype)
            (vjp,) = torch.autograd.grad(out, x, grad_outputs=v, retain_graph=k < n - 1)
            total = total + (vjp * v).reshape(x.shape[0], -1).sum(1)
    return (total / n).detach()


def draw_probes(n: int, like: Tensor, noise: str = "rademacher", generator: torch.Generator | None = None) -> Tensor:
    r"""``n`` probe vectors shaped ``(n, *like.shape)``: Rademacher (:math:`\pm1`) or standard Gaussian."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"probes must be a positive integer, got {n!r}")
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    gen_device = generator.device if generator is not None else like.device
    shape = (n, *like.shape)
    if noise == "rademacher":
        v = torch.randint(0, 2, shape, generator=generator, device=gen_device).to(like.dtype) * 2 - 1
    else:
        v = torch.randn(shape, generator=generator, device=gen_device, dtype=like.dtype)
    return v.to(like.device)


def _check_same_shape(out: Tensor, x: Tensor) -> None:
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"score_fn must return a tensor shaped like x {tuple(x.shape)}, got {got}")


# ----------------------------------------------------------------------------------------------
# The log-likelihood
# ----------------------------------------------------------------------------------------------
def log_likelihood(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    *,
    divergence: str = "exact",
    probes: int = 1,
    noise: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t0: float | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    method: str = "RK45",
    prior_logp: Callable[[Tensor], Tensor] | None = None,
    data_range: tuple[float, float] | None = None,
) -> LikelihoodResult:
    r""":math:`\log p_{t_0}(x)` by the probability-flow ODE and the instantaneous change of variables.

    Solves, from ``t0`` (default ``sde.eps``) to :math:`T`, the joint ODE

    .. math:: \frac{d}{dt}\begin{pmatrix} x \\ \delta \end{pmatrix}
              = \begin{pmatrix} f(t)x - \tfrac12 g(t)^2 s(x, t) \\
                 D f(t) - \tfrac12 g(t)^2\,\nabla\cdot s(x, t) \end{pmatrix},
              \qquad x(t_0) = x,\ \delta(t_0) = 0,

    and returns :math:`\log p_{t_0}(x) = \log\pi(x(T)) + \delta(T)` (Song et al. 2021,
    App. D.2; module docstring for the eps bias and the prior mismatch).

    Args:
        score_fn: ``score_fn(x, t)``, differentiable in ``x``; samples must be independent.
        sde: the SDE the score belongs to (gives :math:`f, g` and the prior).
        x: ``(B, ...)`` data points, already in the model's range (see :func:`bits_per_dim`).
        divergence: ``"exact"`` (``D`` backward passes per evaluation) or ``"hutchinson"``.
        probes: Hutchinson probes per sample, drawn once and fixed for the whole solve.
        noise: Hutchinson probe distribution, ``"rademacher"`` or ``"gaussian"``.
        rtol, atol: tolerances of the adaptive solver (on ``x`` and on :math:`\delta` alike).
        t0: start time, ``0 <= t0 < sde.T``. A network is only reliable down to the smallest
            time it was trained on.
        generator: source of the Hutchinson probes (a ``torch.Generator`` or an int seed).
        dtype: dtype in which ``score_fn`` is evaluated (default: ``x``'s floating dtype, so a
            float32 network gets float32). The solver's state and :math:`\delta` are float64.
        method: any ``scipy.integrate.solve_ivp`` method (``"RK45"``, ``"DOP853"``, ...).
        prior_logp: ``prior_logp(x_T) -> (B,)`` log-density used for :math:`\log p_T` in place of
            :meth:`~sdelab.sde.SDE.prior_logp` (:math:`\mathcal N(0, \sigma_T^2 I)`), e.g. a toy's
            exact :math:`\log p_T`, which removes the prior mismatch (float64 ``x_T``).

        data_range: if given, ``(lo, hi)`` that every entry of ``x`` must lie in (the model's
            range, e.g. ``(-1, 1)``): images in [0, 255] or [0, 1] are refused before the solve.

    A NaN/Inf score stops the solve with ``ValueError`` (no hang in scipy); the ODE is solved
    piecewise between the schedule's kinks (:func:`sdelab.samplers.solve_probability_flow`).

    Returns:
        A :class:`LikelihoodResult` with ``logp``, ``prior_logp``, ``delta_logp``, ``x_T``, ``nfe``.
    """
    checks.callable_(score_fn, "score_fn", "score_fn(x, t)")
    checks.sde(sde)
    checks.tensor(x, "x", min_ndim=2)
    if data_range is not None:
        lo, hi = (checks.real(v, "data_range") for v in data_range)
        checks.in_range(x, "x", lo, hi, hint="map the data to the model's range first (e.g. [0, 255] -> [-1, 1])")
    checks.choice(divergence, "divergence", DIVERGENCES)
    if prior_logp is not None:
        checks.callable_(prior_logp, "prior_logp", "prior_logp(x_T) -> (B,)")
    rtol, atol = checks.real(rtol, "rtol", positive=True), checks.real(atol, "atol", positive=True)
    t1 = float(sde.T)
    t0 = checks.real(sde.eps if t0 is None else t0, "t0", lo=0.0, hi=t1, hi_open=True)
    generator = checks.generator(generator, like=x)
    if dtype is None:
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    x = x.detach().to(dtype)
    shape, device, batch = x.shape, x.device, x.shape[0]
    d = x[0].numel()
    n_x = x.numel()

    v = draw_probes(probes, x, noise, generator) if divergence == "hutchinson" else None
    ode = ReverseSDE(sde, score_fn, probability_flow=True)

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        f, half_g2, _ = ode.coefficients(t)
        xt = torch.from_numpy(y[:n_x]).to(device=device, dtype=dtype).reshape(shape)
        tb = torch.full((batch,), t, device=device, dtype=dtype)
        score = None

        def score_of(z):
            nonlocal score
            score = score_fn(z, tb)
            return score

        div_s = exact_divergence(score_of, xt) if v is None else hutchinson_divergence(score_of, xt, v)
        dx = ode.drift_at(xt, t, score.detach())
        ddelta = d * f - half_g2 * div_s.to(torch.float64)
        return np.concatenate([dx.reshape(-1).cpu().to(torch.float64).numpy(), ddelta.cpu().numpy()])

    y0 = np.concatenate([x.reshape(-1).cpu().to(torch.float64).numpy(), np.zeros(batch)])
    y, nfe, _, _ = solve_probability_flow(rhs, sde, y0, t0, t1, method=method, rtol=rtol, atol=atol)
    y1 = torch.from_numpy(y.copy()).to(device)
    x_T = y1[:n_x].reshape(shape)
    delta = y1[n_x:]
    prior = sde.prior_logp(x_T) if prior_logp is None else _prior(prior_logp, x_T)
    return LikelihoodResult(logp=prior + delta, prior_logp=prior, delta_logp=delta, x_T=x_T, nfe=nfe,
                            t0=t0, t1=t1)


def _prior(prior_logp, x_T: Tensor) -> Tensor:
    out = prior_logp(x_T)
    if not isinstance(out, Tensor) or out.shape != (x_T.shape[0],):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"prior_logp must return a tensor of shape (B,) = ({x_T.shape[0]},), got {got}")
    return out.to(torch.float64)


# ----------------------------------------------------------------------------------------------
# Bits per dimension
# ----------------------------------------------------------------------------------------------
def bpd_from_logp(logp: Tensor, num_dims: int, *, model_range: tuple[float, float] = (-1.0, 1.0),
                  levels: int = 256) -> Tensor:
    r"""Bits per dimension from :math:`\log p_Y(y)`, the model's density of a dequantized image.

    **Bookkeeping.** Data are integers :math:`k \in \{0, \dots, L-1\}^D` (:math:`L = 256`). A
    continuous density :math:`p_U` on :math:`[0, 1)^D` defines a discrete model
    :math:`P(k) = \int_{[0,1)^D} p_U\big((k + v)/L\big)\,L^{-D}\,dv` (the mass of the cell of
    side :math:`1/L` at :math:`k/L`). Uniform dequantization :math:`u = (k + v)/L`,
    :math:`v \sim \mathcal U[0, 1)^D`, and Jensen's inequality give (Theis et al. 2016)

    .. math:: -\log P(k) \le \mathbb E_v\big[-\log p_U(u)\big] + D\log L .

    The network models :math:`y = a + (b - a)\,u` on the model range :math:`[a, b]` (here
    :math:`[-1, 1]`, so :math:`y = 2u - 1`); the change of variables
    :math:`p_U(u) = p_Y(y)\,(b - a)^D` gives :math:`-\log p_U(u) = -\log p_Y(y) - D\log(b - a)`.
    In bits per dimension:

    .. math:: \mathrm{bpd} = \frac{-\log p_Y(y) - D\log(b - a) + D\log L}{D\log 2}
              = \frac{-\log p_Y(y)}{D\log 2} - 1 + 8 \quad\text{for } [a, b] = [-1, 1],\ L = 256,

    an unbiased estimate (over :math:`v`) of an upper bound on :math:`-\log_2 P(k)/D`. Check: a
    model uniform on :math:`[-1, 1]^D` has :math:`-\log p_Y = D\log 2`, so bpd = 8 exactly, the
    cost of 8-bit data with no model at all.
    """
    a, b = (float(v) for v in model_range)
    if not b > a:
        raise ValueError(f"model_range must be (a, b) with b > a, got {model_range}")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1:
        raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")
    logp = torch.as_tensor(logp, dtype=torch.float64)
    d = num_dims
    return (-logp - d * math.log(b - a) + d * math.log(levels)) / (d * math.log(2))


def dequantize_uniform(images: Tensor, *, levels: int = 256, model_range: tuple[float, float] = (-1.0, 1.0),
                       generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""Integer pixels :math:`k` to :math:`y = a + (b - a)(k + v)/L`, :math:`v \sim \mathcal U[0, 1)` i.i.d.

    ``images`` are integers in ``[0, levels - 1]`` (``uint8`` for 8-bit images); the result lies
    in :math:`[a, b)` (the model range, default :math:`[-1, 1)`). Same noise as
    :func:`sdelab.data.dequantize`, followed by the affine map to the model range.
    """
    if not isinstance(images, Tensor) or images.is_floating_point() or images.is_complex() or images.dtype == torch.bool:
        got = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"images must be an integer tensor (uint8 pixels in [0, {levels - 1}]), got {got}")
    lo, hi = images.min().item(), images.max().item()
    if lo < 0 or hi > levels - 1:
        raise ValueError(f"images must lie in [0, {levels - 1}], got values in [{lo}, {hi}]")
    a, b = (float(v) for v in model_range)
    gen_device = generator.device if generator is not None else images.device
    v = torch.rand(images.shape, generator=generator, device=gen_device, dtype=dtype).to(images.device)
    return a + (b - a) * (images.to(dtype) + v) / levels


def bits_per_dim(
    score_fn: ScoreFn,
    sde: SDE,
    images: Tensor,
    *,
    generator: torch.Generator | None = None,
    levels: int = 256,
    model_range: tuple[float, float] = (-1.0, 1.0),
    dtype: torch.dtype = torch.float32,
    **ode_kwargs,
) -> BitsPerDimResult:
    r"""Bits per dimension of integer images under a score model: dequantize, solve, convert.

    1. :func:`dequantize_uniform`: :math:`y = a + (b - a)(k + v)/L` in the model range;
    2. :func:`log_likelihood` of ``y`` (``ode_kwargs``: ``divergence``, ``probes``, ``rtol``,
       ``atol``, ``t0``, ...);
    3. :func:`bpd_from_logp`: :math:`(-\log p_Y(y) - D\log(b - a) + D\log L)/(D\log 2)`.

    ``generator`` draws the dequantization noise first, then the Hutchinson probes. One
    dequantization draw per image; average several calls for a lower-variance estimate.
    """
    generator = checks.generator(generator, like=images if isinstance(images, Tensor) else None)
    y = dequantize_uniform(images, levels=levels, model_range=model_range, generator=generator, dtype=dtype)
    res = log_likelihood(score_fn, sde, y, generator=generator, **ode_kwargs)
    bpd = bpd_from_logp(res.logp, y[0].numel(), model_range=model_range, levels=levels)
    return BitsPerDimResult(bpd=bpd, x=y, likelihood=res)
