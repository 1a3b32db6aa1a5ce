"""Exercises of the DDPM chapter. Fill in each function, then run

    pytest exercises --impl=starter -k ddpm

or call ``exercises.check(fn)`` in the chapter. Reference solutions:
exercises/solutions/.
"""

import torch


def posterior_mean_var(
    x0: torch.Tensor, x_i: torch.Tensor, i: int, betas: torch.Tensor
):
    """Mean and variance of q(x_{i-1} | x_i, x_0) (Ho et al. eq. 7),
    for 1 <= i <= N.

    ``betas[i - 1]`` is beta_i; alpha-bar_i is the product of (1 - beta_j) for j <= i,
    and alpha-bar_0 = 1. Return (mean shaped like x0, variance as a float).
    """
    raise NotImplementedError("exercise posterior_mean_var: not implemented yet")


def ddpm_train_step(
    eps_model, opt, x0: torch.Tensor, betas: torch.Tensor, generator: torch.Generator
) -> float:
    """One training step of DDPM (Ho et al. Alg. 1) on a batch x0 of
    shape (B, d).

    Draw i ~ U{1..N} (torch.randint(1, N + 1, (B,), generator=generator)), then z =
    torch.randn(x0.shape, generator=generator, dtype=x0.dtype), in that order; form x_i
    = sqrt(abar_i) x0 + sqrt(1 - abar_i) z; the loss is the mean over the batch and the
    d entries of (eps_model(x_i, i / N) - z)^2. Zero the gradients, backpropagate, step
    ``opt`` and return the loss as a float.
    """
    raise NotImplementedError("exercise ddpm_train_step: not implemented yet")


def ancestral_sample(
    score_fn, betas: torch.Tensor, x_N: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """DDPM ancestral sampling in score form (Ho et al. Alg. 2; Song
    et al. eq. 4).

    For i = N, ..., 1 with t_i = i / N (a (B,) tensor for score_fn): x <- (x + beta_i *
    score_fn(x, t_i)) / sqrt(1 - beta_i) + sqrt(beta_i) * z, where z =
    torch.randn(x.shape, generator=generator, dtype=x.dtype) for i > 1 and no noise at i
    = 1. Return x_0.
    """
    raise NotImplementedError("exercise ancestral_sample: not implemented yet")
