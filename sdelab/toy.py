r"""Toy data with exact scores: Gaussian mixtures under every SDE, and 2-D datasets for pictures.

If :math:`p_0 = \sum_k w_k\,\mathcal N(\mu_k, \Sigma_k)` and the SDE has kernel
:math:`\mathcal N(\alpha(t)x_0, \sigma^2(t) I)`, the perturbed marginal is again a mixture,

.. math:: p_t(x) = \sum_k w_k\,\mathcal N\big(x;\ \alpha\mu_k,\ \alpha^2\Sigma_k + \sigma^2 I\big),

and its score is the responsibility-weighted sum of the component scores,

.. math:: \nabla_x\log p_t(x) = -\sum_k r_k(x, t)\,\big(\alpha^2\Sigma_k + \sigma^2 I\big)^{-1}(x - \alpha\mu_k),
          \qquad r_k = p_t(k \mid x).

With :math:`\Sigma_k = U_k\,\mathrm{diag}(\lambda_k)\,U_k^\top` every perturbed covariance is
:math:`U_k\,\mathrm{diag}(\alpha^2\lambda_k + \sigma^2)\,U_k^\top`, so one eigendecomposition at
construction serves every time and SDE. This is the ground truth that sdelab's samplers,
likelihood and guidance are tested against.
"""

from __future__ import annotations

import math

import torch

from .sde import SDE
from .utils import ScoreFn, Tensor, TimeLike, batch_time, check_finite, log_normal_const

__all__ = [
    "GaussianMixture",
    "gaussian",
    "ring_mixture",
    "grid_mixture",
    "two_moons",
    "swiss_roll",
    "checkerboard",
    "DATASETS_2D",
]


class GaussianMixture:
    r"""A Gaussian mixture in :math:`\mathbb R^d` with exact perturbed densities and scores.

    Args:
        weights: ``(K,)`` non-negative mixture weights (normalised here).
        means: ``(K, d)`` component means.
        covs: ``(K, d, d)`` full covariances, ``(K, d)`` diagonal variances, or ``(K,)`` isotropic
            variances.
        dtype: float64 by default: the exact answers are references for other code.

    Points are ``(B, d)``; an ``event_shape`` (e.g. ``(1, 4, 4)``) lets the mixture live on images,
    with points ``(B, *event_shape)`` flattened to ``d`` internally.
    """

    def __init__(self, weights, means, covs, event_shape: tuple[int, ...] | None = None, dtype=torch.float64):
        means = torch.as_tensor(means, dtype=dtype)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        K, d = means.shape
        weights = torch.as_tensor(weights, dtype=dtype)
        if weights.shape != (K,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be {K} non-negative numbers with a positive sum, got {weights.tolist()}")
        covs = torch.as_tensor(covs, dtype=dtype)
        if covs.shape == (K,):
            covs = covs[:, None, None] * torch.eye(d, dtype=dtype)
        elif covs.shape == (K, d):
            covs = torch.diag_embed(covs)
        elif covs.shape != (K, d, d):
            raise ValueError(f"covs must have shape ({K},), ({K}, {d}) or ({K}, {d}, {d}); got {tuple(covs.shape)}")
        covs = 0.5 * (covs + covs.transpose(-1, -2))
        evals, evecs = torch.linalg.eigh(covs)
        if (evals < -1e-10 * evals.abs().amax().clamp(min=1)).any():
            raise ValueError("covs must be positive semi-definite")
        self.weights = weights / weights.sum()
        self.means, self.covs = means, covs
        self.evals, self.evecs = evals.clamp(min=0), evecs
        self.dim = d
        self.event_shape = tuple(event_shape) if event_shape is not None else (d,)
        if math.prod(self.event_shape) != d:
            raise ValueError(f"event_shape {self.event_shape} does not have {d} entries")

    @property
    def num_components(self) -> int:
        """The number K of mixture components."""
        return self.means.shape[0]

    def to(self, device=None, dtype=None) -> "GaussianMixture":
        """A copy on another device / dtype."""
        new = object.__new__(GaussianMixture)
        new.__dict__.update(self.__dict__)
        for k in ("weights", "means", "covs", "evals", "evecs"):
            setattr(new, k, getattr(self, k).to(device=device, dtype=dtype))
        return new

    # --- the data distribution ---
    def mean(self) -> Tensor:
        """Mixture mean :math:`\\sum_k w_k\\mu_k`."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        r"""Mixture covariance :math:`\sum_k w_k(\Sigma_k + \mu_k\mu_k^\top) - \mu\mu^\top`."""
        m = self.mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covs + self.means[:, :, None] * self.means[:, None, :])
        return second - m[:, None] * m[None, :]

    def sample(self, n: int, generator: torch.Generator | None = None, return_labels: bool = False):
        """Draw ``n`` points ``(n, *event_shape)`` (and their component labels if asked)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        dev = self.means.device
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype, device=dev)
        x = self.means[k] + torch.einsum("nij,nj->ni", self.evecs[k], self.evals[k].sqrt() * z)
        x = x.reshape(n, *self.event_shape)
        return (x, k) if return_labels else x

    def log_prob(self, x: Tensor) -> Tensor:
        r""":math:`\log p_0(x)`, shape ``(B,)``."""
        return self._log_prob(x, None, None)

    # --- the perturbed marginals under an SDE ---
    def _coeffs(self, sde: SDE, t: TimeLike, x: Tensor) -> tuple[Tensor, Tensor]:
        t = batch_time(t, x)
        alpha, sigma = sde.marginal_coeffs(t)
        return alpha.to(self.means.dtype), sigma.to(self.means.dtype)

    def _flat(self, x: Tensor) -> Tensor:
        check_finite(x, "x")
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.dim).to(self.means.dtype)

    def _component_terms(self, x: Tensor, alpha: Tensor | None, sigma: Tensor | None):
        """Per-sample, per-component log N and the whitened residual pieces."""
        xf = self._flat(x)
        if alpha is None:  # t = 0: the data distribution itself
            alpha, sigma = xf.new_ones(xf.shape[0]), xf.new_zeros(xf.shape[0])
        var = (alpha**2)[:, None, None] * self.evals[None] + (sigma**2)[:, None, None]  # (B, K, d)
        diff = xf[:, None, :] - alpha[:, None, None] * self.means[None]  # (B, K, d)
        proj = torch.einsum("kij,bki->bkj", self.evecs, diff)  # U_k^T (x - a mu_k)
        log_n = -0.5 * (proj**2 / var).sum(-1) - 0.5 * torch.log(var).sum(-1) - log_normal_const(self.dim)
        return log_n, proj, var

    def _log_prob(self, x, alpha, sigma) -> Tensor:
        log_n, _, _ = self._component_terms(x, alpha, sigma)
        return torch.logsumexp(torch.log(self.weights) + log_n, dim=-1)

    def log_prob_t(self, x: Tensor, t: TimeLike, sde: SDE) -> Tensor:
        r""":math:`\log p_t(x)` of the mixture perturbed by ``sde`` up to time ``t``; shape ``(B,)``."""
        return self._log_prob(x, *self._coeffs(sde, t, x))

    def posterior_t(self, x: Tensor, t: TimeLike, sde: SDE) -> Tensor:
        r"""Component responsibilities :math:`p_t(k \mid x)`, shape ``(B, K)`` (the exact noisy classifier)."""
        log_n, _, _ = self._component_terms(x, *self._coeffs(sde, t, x))
        return torch.softmax(torch.log(self.weights) + log_n, dim=-1)

    def logits_t(self, x: Tensor, t: TimeLike, sde: SDE) -> Tensor:
        r"""Logits of the exact noisy classifier: :math:`\log w_k + \log\mathcal N(x; \alpha\mu_k, \alpha^2\Sigma_k + \sigma^2 I)`, ``(B, K)``.

        Their softmax is :meth:`posterior_t`; unlike ``log(posterior_t)`` they stay finite (and
        differentiable) far from every component, which classifier guidance needs.
        """
        log_n, _, _ = self._component_terms(x, *self._coeffs(sde, t, x))
        return (torch.log(self.weights) + log_n).to(x.dtype)

    def logits_fn(self, sde: SDE):
        """The exact noisy classifier as a ``logits_fn(x, t)`` (see :mod:`sdelab.guidance`)."""
        return lambda x, t: self.logits_t(x, t, sde)

    def score_t(self, x: Tensor, t: TimeLike, sde: SDE, component: int | Tensor | None = None) -> Tensor:
        r"""Exact score :math:`\nabla_x\log p_t(x)`, shaped like ``x``.

        With ``component`` (an int or a ``(B,)`` tensor of labels) it is the score of that
        component alone, :math:`\nabla_x\log p_t(x \mid k)`: the class-conditional score.
        """
        log_n, proj, var = self._component_terms(x, *self._coeffs(sde, t, x))
        comp_scores = -torch.einsum("kij,bkj->bki", self.evecs, proj / var)  # (B, K, d)
        if component is None:
            r = torch.softmax(torch.log(self.weights) + log_n, dim=-1)
            s = (r[..., None] * comp_scores).sum(1)
        else:
            k = torch.as_tensor(component, device=x.device).long().expand(x.shape[0])
            if (k < 0).any() or (k >= self.num_components).any():
                raise ValueError(f"component must lie in [0, {self.num_components - 1}], got {k.unique().tolist()}")
            s = comp_scores[torch.arange(x.shape[0], device=x.device), k]
        return s.reshape(x.shape).to(x.dtype)

    def score_fn(self, sde: SDE, component: int | None = None) -> ScoreFn:
        """The exact score as a ``score_fn(x, t)``, interchangeable with a trained network."""
        return lambda x, t: self.score_t(x, t, sde, component)

    def moments_t(self, t: float, sde: SDE) -> tuple[Tensor, Tensor]:
        r"""Mean and covariance of :math:`p_t`: :math:`\alpha\mu` and :math:`\alpha^2\Sigma + \sigma^2 I`."""
        alpha, sigma = sde.marginal_coeffs(torch.tensor([float(t)], dtype=self.means.dtype))
        a, s = alpha.item(), sigma.item()
        return a * self.mean(), a**2 * self.covariance() + s**2 * torch.eye(self.dim, dtype=self.means.dtype)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_components}, d={self.dim})"


def gaussian(mean, cov, **kwargs) -> GaussianMixture:
    """A single Gaussian :math:`\\mathcal N(\\mu, \\Sigma)` as a one-component mixture."""
    mean = torch.as_tensor(mean, dtype=kwargs.get("dtype", torch.float64))
    cov = torch.as_tensor(cov, dtype=mean.dtype)
    return GaussianMixture([1.0], mean[None], cov[None], **kwargs)


def ring_mixture(k: int = 8, radius: float = 4.0, std: float = 0.5, **kwargs) -> GaussianMixture:
    """``k`` equal isotropic Gaussians evenly spaced on a circle in 2-D."""
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture(torch.ones(k), means, torch.full((k,), std**2), **kwargs)


def grid_mixture(n: int = 3, spacing: float = 4.0, std: float = 0.5, **kwargs) -> GaussianMixture:
    """An ``n x n`` grid of equal isotropic Gaussians in 2-D, centred at the origin."""
    c = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * spacing
    means = torch.cartesian_prod(c, c)
    return GaussianMixture(torch.ones(n * n), means, torch.full((n * n,), std**2), **kwargs)


# --- 2-D datasets for pictures (samples only: their scores are not closed-form) ---
def _check_n(n):
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")


def two_moons(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """Two interleaved half circles, scaled to roughly unit variance per coordinate."""
    _check_n(n)
    upper = torch.rand(n, generator=generator) < 0.5
    theta = torch.rand(n, generator=generator) * math.pi
    x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    pts = torch.stack([x - 0.5, y - 0.25], 1) + noise * torch.randn(n, 2, generator=generator)
    return pts * 1.6


def swiss_roll(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """A 2-D spiral (the swiss roll seen from its axis), roughly unit scale."""
    _check_n(n)
    theta = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    pts = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], 1) / 7.0
    return pts + noise * torch.randn(n, 2, generator=generator)


def checkerboard(n: int, squares: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the black squares of a ``squares x squares`` board on ``[-2, 2]^2``."""
    _check_n(n)
    if squares < 2:
        raise ValueError(f"squares must be >= 2, got {squares}")
    size = 4.0 / squares
    i = torch.randint(0, squares, (n,), generator=generator)
    j = torch.randint(0, squares // 2, (n,), generator=generator) * 2 + (i % 2)
    j = j.clamp(max=squares - 1)
    u = torch.rand(n, 2, generator=generator)
    return torch.stack([i + u[:, 0], j + u[:, 1]], 1) * size - 2.0


DATASETS_2D = {"two_moons": two_moons, "swiss_roll": swiss_roll, "checkerboard": checkerboard}
