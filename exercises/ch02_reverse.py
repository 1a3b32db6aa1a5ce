"""Chapter 2 exercises: the reverse-time SDE. Fill in each function, then run

    pytest exercises --impl=starter -k ch02
"""

import torch


def reverse_drift(sde, score: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
    """The reverse-SDE drift f(x, t) - g(t)^2 score, for a score evaluated at (x, t).

    Hint: sde.drift(x, t) and sde.diffusion(t).
    """
    raise NotImplementedError("exercise reverse_drift: not implemented yet")


def reverse_em_step(sde, score_fn, x: torch.Tensor, t: float, delta: float, z: torch.Tensor) -> torch.Tensor:
    """One reverse Euler-Maruyama step from t to t - delta with noise z.

    x_next = x - [f(x, t) - g(t)^2 s(x, t)] delta + g(t) sqrt(delta) z; call score_fn(x, t) with t as
    a (B,) tensor.
    """
    raise NotImplementedError("exercise reverse_em_step: not implemented yet")


def gaussian_score(x: torch.Tensor, alpha: float, sigma: float, m: float, s2: float) -> torch.Tensor:
    """Score of p_t for data N(m, s2) under the kernel N(alpha x0, sigma^2)."""
    raise NotImplementedError("exercise gaussian_score: not implemented yet")
