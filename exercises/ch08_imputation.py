"""Chapter 8 exercises: imputation. Fill in each function, then run

    pytest exercises --impl=starter -k ch08

or call ``exercises.check(fn)`` in the chapter. Reference solutions: exercises/solutions/.
"""

import torch


def replacement_step(score_fn, sde, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, t: float, t_next: float,
                     z: torch.Tensor, z_obs: torch.Tensor) -> torch.Tensor:
    """One step of the replacement method with Euler-Maruyama, from t to t_next < t.

    First the reverse-SDE step on the whole state, x' = x + [f(t) x - g(t)^2 s(x, t)] h + g(t) sqrt(-h) z
    with h = t_next - t; then the observed entries (mask True) are replaced by the observation
    noised to t_next: alpha(t_next) y + sigma(t_next) z_obs. Call score_fn(x, t) with t as a (B,)
    tensor. Hint: sde.drift(x, t), sde.diffusion(t), sde.marginal_coeffs(t) and torch.where.
    """
    raise NotImplementedError("exercise replacement_step: not implemented yet")


def gaussian_conditional(mean: torch.Tensor, cov: torch.Tensor, obs: torch.Tensor, y: torch.Tensor):
    """The exact conditional of a Gaussian N(mean, cov) given x[obs] = y.

    Returns (mu_c, Sigma_c) of the unobserved block u = ~obs:
    mu_c = m_u + S_uo S_oo^{-1} (y - m_o), Sigma_c = S_uu - S_uo S_oo^{-1} S_ou.
    ``obs`` is a boolean (d,) tensor. Hint: torch.linalg.solve rather than an explicit inverse.
    """
    raise NotImplementedError("exercise gaussian_conditional: not implemented yet")


def decoupled_score(score_fn, M: torch.Tensor):
    """The score in decoupled colour coordinates u = M^T x (per pixel), M orthogonal 3x3.

    Return a function score_u(u, t) = M^T s(M u, t), where u and x are (B, 3, H, W) and the
    matrix acts on the channel dimension. Hint: torch.einsum("bihw,ij->bjhw", x, M) computes M^T x.
    """
    raise NotImplementedError("exercise decoupled_score: not implemented yet")
