r"""The discrete chains behind the SDEs: DDPM (Ho et al. 2020) and the NCSN noise chain.

Indices run :math:`i = 1, \dots, N`; a tensor ``betas`` of length N holds
:math:`\beta_i` at position ``i - 1``. Both discrete forward processes are linear
Gaussian Markov chains

.. math:: x_i = a_i\,x_{i-1} + G_i\,z_{i-1}, \qquad z_{i-1} \sim \mathcal N(0, I),

* **DDPM** (Ho et al. eq. 2; Song et al. 2021 eq. 10): :math:`a_i = \sqrt{1 - \beta_i}`,
  :math:`G_i = \sqrt{\beta_i}` (:func:`ddpm_coeffs`);
* **NCSN / SMLD** (Song et al. 2021 eq. 8): :math:`a_i = 1`, :math:`G_i =
  \sqrt{\sigma_i^2 - \sigma_{i-1}^2}`, :math:`\sigma_0 = 0` (:func:`ncsn_coeffs`).

Their marginals :math:`q(x_i \mid x_0) = \mathcal N(\bar a_i x_0, \bar s_i^2 I)` follow
from :math:`\bar a_i = a_i\bar a_{i-1}`, :math:`\bar s_i^2 = a_i^2\bar s_{i-1}^2 +
G_i^2` (:func:`chain_marginal_coeffs`): for DDPM :math:`\bar a_i = \sqrt{\bar\alpha_i}`
with :math:`\bar\alpha_i = \prod_{j \le i}(1 - \beta_j)` and :math:`\bar s_i^2 = 1 -
\bar\alpha_i` (Ho et al. eq. 4); for NCSN :math:`\bar s_i = \sigma_i`. With
:math:`\beta_i = \beta(i/N)/N` (Song et al. App. B) the DDPM chain is the
Euler--Maruyama discretisation of the VP SDE :math:`dx = -\frac12\beta(t)x\,dt +
\sqrt{\beta(t)}\,dw` (:func:`vp_betas`), and the NCSN chain with :math:`\sigma_i =
\sigma(i/N)` samples the VE SDE exactly on the grid.

The reverse chain, its ELBO terms and DDPM's training loss and ancestral sampler are
here too; score functions are the usual ``score_fn(x, t)`` with :math:`t_i = i/N` by
default, and a noise prediction is ``eps_fn(x, t)`` (:math:`\epsilon_\theta = -\sqrt{1 -
\bar\alpha_i}\,s_\theta`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from . import checks
from .sde import VPSDE
from .utils import ScoreFn, Tensor, check_finite, expand

__all__ = [
    "linear_betas",
    "vp_betas",
    "alphas_bar",
    "ddpm_coeffs",
    "ncsn_coeffs",
    "chain_marginal_coeffs",
    "forward_chain",
    "q_sample",
    "posterior",
    "reverse_mean",
    "reverse_variance",
    "gaussian_kl",
    "elbo_weight",
    "elbo_term",
    "ddpm_loss",
    "ancestral_step",
    "ancestral_sampling",
    "AncestralResult",
]

EpsFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------
def _check_betas(betas) -> Tensor:
    if not isinstance(betas, Tensor) or betas.dim() != 1 or betas.numel() < 1:
        raise TypeError(
            f"betas must be a 1-d tensor of length N >= 1, got {betas!r:.80}"
        )
    if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
        raise ValueError("betas must lie in (0, 1)")
    return betas


def _check_n(n, name: str = "N") -> int:
    return checks.integer(n, name, minimum=1)


def _check_index(i, n: int, x: Tensor) -> Tensor:
    """``i`` as a ``(B,)`` long tensor on x's device with entries in 1..N."""
    i = torch.as_tensor(i, device=x.device)
    if i.is_floating_point():
        raise TypeError(f"i must hold integer step indices 1..{n}, got dtype {i.dtype}")
    i = i.long().expand(x.shape[0]) if i.dim() == 0 else i.long()
    if i.shape != (x.shape[0],):
        raise ValueError(
            f"i must be an int or have shape ({x.shape[0]},), got {tuple(i.shape)}"
        )
    if (i < 1).any() or (i > n).any():
        raise ValueError(f"i must lie in 1..{n}")
    return i


def _like(i, betas: Tensor, like: Tensor | None) -> Tensor:
    """A tensor whose batch size, device and dtype the per-step results follow."""
    if like is not None:
        return like
    n = i.numel() if isinstance(i, Tensor) and i.dim() == 1 else 1
    return betas.new_zeros(n)


def _check_variance(variance: str) -> None:
    if variance not in ("beta", "posterior"):
        raise ValueError(f"variance must be 'beta' or 'posterior', got {variance!r}")


# --------------------------------------------------------------------------------------
# Schedules and the forward chains
# --------------------------------------------------------------------------------------
def linear_betas(
    N: int = 1000, beta_1: float = 1e-4, beta_N: float = 0.02, dtype=torch.float64
) -> Tensor:
    r"""Ho et al.'s linear schedule, :math:`\beta_i` from ``beta_1`` to ``beta_N`` in N
    steps (Sec. 4).

    At N = 1000 it is :func:`vp_betas` of the VP SDE with :math:`\beta_{\min} = N\beta_1
    = 0.1`, :math:`\beta_{\max} = N\beta_N = 20` up to the grid (Song et al. App. B).
    """
    N = _check_n(N)
    if not 0 < beta_1 <= beta_N < 1:
        raise ValueError(
            f"need 0 < beta_1 <= beta_N < 1, got beta_1={beta_1}, beta_N={beta_N}"
        )
    return torch.linspace(beta_1, beta_N, N, dtype=dtype)


def vp_betas(sde: VPSDE, N: int, method: str = "euler", dtype=torch.float64) -> Tensor:
    r"""DDPM betas for a VP SDE on the grid :math:`t_i = i/N` (T = 1).

    * ``"euler"`` (Song et al. App. B): :math:`\beta_i = \beta(t_i)/N`, so the chain
      :math:`x_i = \sqrt{1 - \beta_i}x_{i-1} + \sqrt{\beta_i}z` is the VP SDE
      discretised to first order, with :math:`\bar\alpha_N \to e^{-B(1)}` as :math:`N
      \to \infty`;
    * ``"exact"``: :math:`\beta_i = 1 - \bar\alpha(t_i)/\bar\alpha(t_{i-1})` with
      :math:`\bar\alpha(t) = e^{-B(t)}`: the chain's marginals equal the SDE's kernels
      at every :math:`t_i` for every N (the products telescope).
    """
    if not isinstance(sde, VPSDE):
        raise TypeError(
            f"sde must be a VPSDE (DDPM's continuous limit), got {type(sde).__name__}"
        )
    N = _check_n(N)
    t = torch.arange(0, N + 1, dtype=torch.float64) / N * sde.T
    if method == "euler":
        betas = sde.schedule.beta(t[1:]) * (sde.T / N)
        if betas.max() >= 1:
            raise ValueError(
                f"N = {N} is too small for Euler betas: beta(t)/N reaches "
                f"{betas.max().item():.3g} >= 1; use more steps or method='exact'"
            )
    elif method == "exact":
        B = sde.schedule.integral(t)
        betas = -torch.expm1(-(B[1:] - B[:-1]))
    else:
        raise ValueError(f"method must be 'euler' or 'exact', got {method!r}")
    return _check_betas(betas).to(dtype)


def alphas_bar(betas: Tensor) -> Tensor:
    r""":math:`\bar\alpha_i = \prod_{j=1}^i (1 - \beta_j)`, shape ``(N,)`` (Ho et al.
    eq. 4)."""
    return torch.cumprod(1 - _check_betas(betas), 0)


def ddpm_coeffs(betas: Tensor) -> tuple[Tensor, Tensor]:
    r"""DDPM's chain coefficients :math:`a_i = \sqrt{1 - \beta_i}`, :math:`G_i =
    \sqrt{\beta_i}`."""
    betas = _check_betas(betas)
    return torch.sqrt(1 - betas), torch.sqrt(betas)


def ncsn_coeffs(sigmas: Tensor) -> tuple[Tensor, Tensor]:
    r"""NCSN's chain (Song et al. 2021 eq. 8): :math:`a_i = 1`, :math:`G_i =
    \sqrt{\sigma_i^2 - \sigma_{i-1}^2}`.

    ``sigmas`` are increasing, :math:`\sigma_1 < \dots < \sigma_N`, with :math:`\sigma_0
    = 0`.
    """
    if not isinstance(sigmas, Tensor) or sigmas.dim() != 1 or sigmas.numel() < 1:
        raise TypeError("sigmas must be a 1-d tensor of increasing noise levels")
    if not (sigmas > 0).all() or not (sigmas[1:] > sigmas[:-1]).all():
        raise ValueError(
            "sigmas must be positive and strictly increasing (sigma_1 < ... < sigma_N)"
        )
    s2 = torch.cat([sigmas.new_zeros(1), sigmas**2])
    return torch.ones_like(sigmas), torch.sqrt(s2[1:] - s2[:-1])


def chain_marginal_coeffs(a: Tensor, G: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(abar, sbar)`` of :math:`q(x_i \mid x_0) = \mathcal N(\bar a_i x_0, \bar s_i^2
    I)`, each ``(N,)``.

    :math:`\bar a_i = \prod_{j \le i} a_j`, :math:`\bar s_i^2 = \sum_{j \le i} (\bar
    a_i/\bar a_j)^2 G_j^2` (the recursion :math:`\bar s_i^2 = a_i^2\bar s_{i-1}^2 +
    G_i^2` summed).
    """
    if a.shape != G.shape or a.dim() != 1:
        raise ValueError(
            f"a and G must be 1-d of the same length, got {tuple(a.shape)}, "
            f"{tuple(G.shape)}"
        )
    abar = torch.cumprod(a, 0)
    s2 = torch.cumsum(G**2 / abar**2, 0) * abar**2
    return abar, torch.sqrt(s2)


def forward_chain(
    x0: Tensor,
    a: Tensor,
    G: Tensor,
    *,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
):
    r"""Run :math:`x_i = a_i x_{i-1} + G_i z_{i-1}` for :math:`i = 1..N` from ``x0``.

    Returns :math:`x_N`, or the ``(N + 1, B, ...)`` trajectory :math:`x_0, \dots, x_N`.
    """
    check_finite(x0, "x0")
    x, traj = x0, [x0]
    for a_i, g_i in zip(a.tolist(), G.tolist()):
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = a_i * x + g_i * z
        if return_trajectory:
            traj.append(x)
    return torch.stack(traj) if return_trajectory else x


def q_sample(x0: Tensor, i, abar: Tensor, z: Tensor) -> Tensor:
    r""":math:`x_i = \sqrt{\bar\alpha_i}\,x_0 + \sqrt{1 - \bar\alpha_i}\,z` (Ho et al.
    eq. 4), ``i`` in 1..N."""
    i = _check_index(i, abar.numel(), x0)
    ab = abar.to(x0.device, x0.dtype)[i - 1]
    return expand(ab.sqrt(), x0) * x0 + expand((1 - ab).sqrt(), x0) * z


# --------------------------------------------------------------------------------------
# The reverse chain and the ELBO
# --------------------------------------------------------------------------------------
def _abar_prev(betas: Tensor, i: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(beta_i, abar_i, abar_{i-1}) per sample, with abar_0 = 1."""
    b = betas.to(x.device, x.dtype)
    ab = torch.cat([b.new_ones(1), torch.cumprod(1 - b, 0)])
    return b[i - 1], ab[i], ab[i - 1]


def posterior(x0: Tensor, x_i: Tensor, i, betas: Tensor) -> tuple[Tensor, Tensor]:
    r"""Mean and variance of :math:`q(x_{i-1} \mid x_i, x_0) = \mathcal N(\tilde\mu_i,
    \tilde\beta_i I)` (Ho et al. eq. 6-7):

    .. math:: \tilde\mu_i = \frac{\sqrt{\bar\alpha_{i-1}}\beta_i}{1 - \bar\alpha_i}x_0
              + \frac{\sqrt{1 - \beta_i}(1 - \bar\alpha_{i-1})}{1 - \bar\alpha_i}x_i,
              \qquad
              \tilde\beta_i = \frac{1 - \bar\alpha_{i-1}}{1 - \bar\alpha_i}\beta_i .

    Returns the mean shaped like ``x0`` and the variance ``(B,)``.
    """
    betas = _check_betas(betas)
    i = _check_index(i, betas.numel(), x0)
    b, ab, ab_prev = _abar_prev(betas, i, x0)
    c0 = ab_prev.sqrt() * b / (1 - ab)
    ci = (1 - b).sqrt() * (1 - ab_prev) / (1 - ab)
    return expand(c0, x0) * x0 + expand(ci, x0) * x_i, (1 - ab_prev) / (1 - ab) * b


def reverse_mean(eps: Tensor, x_i: Tensor, i, betas: Tensor) -> Tensor:
    r"""DDPM's reverse mean from a noise prediction (Ho et al. eq. 11):
    :math:`\mu_\theta = \frac{1}{\sqrt{1 - \beta_i}}\big(x_i - \frac{\beta_i}{\sqrt{1 -
    \bar\alpha_i}}\epsilon_\theta\big)`.

    It is :math:`\tilde\mu_i` with :math:`x_0` replaced by its prediction
    :math:`(x_i - \sqrt{1 - \bar\alpha_i}\epsilon_\theta)/\sqrt{\bar\alpha_i}`.
    """
    betas = _check_betas(betas)
    i = _check_index(i, betas.numel(), x_i)
    b, ab, _ = _abar_prev(betas, i, x_i)
    return (x_i - expand(b / (1 - ab).sqrt(), x_i) * eps) / expand((1 - b).sqrt(), x_i)


def reverse_variance(
    i, betas: Tensor, variance: str = "beta", like: Tensor | None = None
) -> Tensor:
    r""":math:`\sigma_i^2` of :math:`p_\theta(x_{i-1} \mid x_i)`: :math:`\beta_i`
    (``"beta"``) or :math:`\tilde\beta_i` (``"posterior"``).

    Ho et al. Sec. 3.2: the two extremes, optimal for :math:`x_0 \sim \mathcal N(0, I)`
    and for a deterministic :math:`x_0`. The result has one entry per entry of ``i`` (an
    int or a ``(B,)`` tensor), or per sample of ``like`` (shape ``(B, ...)``, whose
    device and dtype it takes).
    """
    _check_variance(variance)
    betas = _check_betas(betas)
    like = _like(i, betas, like)
    i = _check_index(i, betas.numel(), like)
    b, ab, ab_prev = _abar_prev(betas, i, like)
    return b if variance == "beta" else (1 - ab_prev) / (1 - ab) * b


def gaussian_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(\mathcal N(m_1, v_1 I)\,\|\,\mathcal N(m_2, v_2 I))` per
    sample, ``(B,)``:

    .. math:: \tfrac12\Big[D\big(\tfrac{v_1}{v_2} - 1 - \log\tfrac{v_1}{v_2}\big)
              + \tfrac{\|m_1 - m_2\|^2}{v_2}\Big],

    with ``var1``, ``var2`` of shape ``(B,)`` and D the entries of one sample.
    """
    D = mean1[0].numel()
    r = var1 / var2
    return 0.5 * (
        D * (r - 1 - torch.log(r)) + (mean1 - mean2).flatten(1).pow(2).sum(1) / var2
    )


def elbo_weight(
    i, betas: Tensor, variance: str = "beta", like: Tensor | None = None
) -> Tensor:
    r"""The weight of Ho et al. eq. 12, :math:`\frac{\beta_i^2}{2\sigma_i^2(1 -
    \beta_i)(1 - \bar\alpha_i)}`.

    :math:`L_{i-1} = \mathrm{KL}(q(x_{i-1} \mid x_i, x_0)\,\|\,p_\theta(x_{i-1} \mid
    x_i))` equals this weight times :math:`\|\epsilon - \epsilon_\theta(x_i, i)\|^2`,
    plus the KL between the variances (zero for ``variance="posterior"``).
    """
    like = _like(i, betas, like)
    s2 = reverse_variance(i, betas, variance, like)
    i = _check_index(i, betas.numel(), like)
    b, ab, _ = _abar_prev(betas, i, like)
    return b**2 / (2 * s2 * (1 - b) * (1 - ab))


def elbo_term(
    eps_fn: EpsFn,
    x0: Tensor,
    i,
    betas: Tensor,
    z: Tensor,
    *,
    variance: str = "beta",
    times: Tensor | None = None,
) -> Tensor:
    r""":math:`L_{i-1} = \mathrm{KL}\big(q(x_{i-1} \mid x_i, x_0)\,\|\,p_\theta(x_{i-1}
    \mid x_i)\big)` per sample (Ho et al. eq. 5, 8).

    :math:`x_i` = :func:`q_sample` ``(x0, i, abar, z)``; the model's mean is
    :func:`reverse_mean` of ``eps_fn(x_i, t_i)`` with :math:`t_i = i/N` (or ``times[i -
    1]``), its variance :func:`reverse_variance`. Valid for :math:`i \ge 2` (:math:`L_0`
    is the decoder's term).
    """
    betas = _check_betas(betas)
    N = betas.numel()
    i = _check_index(i, N, x0)
    x_i = q_sample(x0, i, alphas_bar(betas), z)
    t = (i.to(x0.dtype) / N) if times is None else times.to(x0.device, x0.dtype)[i - 1]
    mu_q, var_q = posterior(x0, x_i, i, betas)
    mu_p = reverse_mean(eps_fn(x_i, t), x_i, i, betas)
    return gaussian_kl(mu_q, var_q, mu_p, reverse_variance(i, betas, variance, x0))


def ddpm_loss(
    eps_fn: EpsFn,
    x0: Tensor,
    betas: Tensor,
    *,
    generator: torch.Generator | None = None,
    i: Tensor | None = None,
    z: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r""":math:`L_{\rm simple}` (Ho et al. eq. 14; Alg. 1): :math:`\|\epsilon -
    \epsilon_\theta(x_i, t_i)\|^2/D`.

    :math:`i \sim \mathcal U\{1, \dots, N\}`, :math:`\epsilon \sim \mathcal N(0, I)`
    (drawn in that order from ``generator`` unless given), :math:`x_i` =
    :func:`q_sample`, :math:`t_i = i/N`. It is the ELBO with the weights of
    :func:`elbo_weight` dropped, i.e. denoising score matching with :math:`\lambda =
    \sigma^2` at the discrete times (:func:`sdelab.losses.dsm_loss`).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    betas = _check_betas(betas)
    check_finite(x0, "x0")
    N = betas.numel()
    if i is None:
        i = torch.randint(
            1, N + 1, (x0.shape[0],), generator=generator, device=x0.device
        )
    if z is None:
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    i = _check_index(i, N, x0)
    x_i = q_sample(x0, i, alphas_bar(betas), z)
    err = (eps_fn(x_i, i.to(x0.dtype) / N) - z).flatten(1).pow(2).mean(1)
    return err.mean() if reduction == "mean" else err


# --------------------------------------------------------------------------------------
# Ancestral sampling
# --------------------------------------------------------------------------------------
@dataclass
class AncestralResult:
    """``x``: the samples :math:`x_0`; ``nfe``: score evaluations; ``trajectory``: "
    "``(N + 1, B, ...)`` or None."""

    x: Tensor
    nfe: int
    trajectory: Tensor | None = None


def ancestral_step(
    score: Tensor, x: Tensor, beta: float, sigma: float, z: Tensor | None
) -> Tensor:
    r"""One DDPM step in score form (Song et al. 2021 eq. 4; Ho et al. Alg. 2):

    .. math:: x_{i-1} = \frac{1}{\sqrt{1 - \beta_i}}
              \big(x_i + \beta_i\,s_\theta(x_i, t_i)\big) + \sigma_i z,

    Ho's :math:`\frac{1}{\sqrt{\alpha_i}}(x_i - \frac{\beta_i}{\sqrt{1 -
    \bar\alpha_i}}\epsilon_\theta)` with :math:`\epsilon_\theta = -\sqrt{1 -
    \bar\alpha_i}\,s_\theta`. ``z=None`` adds no noise.
    """
    mean = (x + beta * score) / math.sqrt(1 - beta)
    return mean if z is None else mean + sigma * z


@torch.no_grad()
def ancestral_sampling(
    score_fn: ScoreFn,
    betas: Tensor,
    x_N: Tensor,
    *,
    variance: str = "beta",
    final_noise: bool = False,
    times: Tensor | None = None,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
) -> AncestralResult:
    r"""DDPM ancestral sampling (Ho et al. Alg. 2) from :math:`x_N` down to :math:`x_0`;
    N NFE.

    Steps :func:`ancestral_step` for :math:`i = N, \dots, 1` with the score at
    :math:`t_i = i/N` (or ``times[i - 1]``) and :math:`\sigma_i^2` from
    :func:`reverse_variance`. As in Ho et al., the last step (i = 1) adds no noise
    unless ``final_noise``. For :math:`\beta_i = \beta(t_i)/N` it is a discretisation of
    the reverse VP SDE that agrees with :func:`sdelab.samplers.reverse_diffusion` to
    first order in :math:`\beta_i` (Song et al. App. E).
    """
    checks.callable_(score_fn, "score_fn", "score_fn(x, t)")
    betas = _check_betas(betas)
    _check_variance(variance)
    checks.tensor(x_N, "x_N", min_ndim=1, floating=True)
    N = betas.numel()
    ts = (
        (torch.arange(1, N + 1, dtype=torch.float64) / N)
        if times is None
        else times.to("cpu", torch.float64)
    )
    if ts.shape != (N,):
        raise ValueError(f"times must have shape ({N},), got {tuple(ts.shape)}")
    var = reverse_variance(torch.arange(1, N + 1), betas.to(torch.float64), variance)
    b_list, s_list, t_list = betas.tolist(), var.sqrt().tolist(), ts.tolist()
    x, traj = x_N, ([x_N] if return_trajectory else None)
    for k in range(N - 1, -1, -1):
        t = torch.full((x.shape[0],), t_list[k], dtype=x.dtype, device=x.device)
        noise = k > 0 or final_noise
        z = (
            torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            if noise
            else None
        )
        x = ancestral_step(score_fn(x, t), x, b_list[k], s_list[k], z)
        if traj is not None:
            traj.append(x)
    return AncestralResult(x, N, torch.stack(traj) if traj is not None else None)
