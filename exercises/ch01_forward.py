"""Chapter 1 exercises: forward SDEs. Fill in each function, then run

    pytest exercises --impl=starter -k ch01

or call ``exercises.check(fn)`` in the chapter. Reference solutions: exercises/solutions/.
"""

import torch


def vp_kernel(t: torch.Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(alpha(t), sigma(t))`` of the VP SDE with the linear schedule.

    Hint: B(t) = beta_min t + t^2 (beta_max - beta_min) / 2, alpha = exp(-B/2),
    sigma^2 = 1 - exp(-B); compute 1 - exp(-B) with torch.expm1 so small t keeps its digits.
    """
    raise NotImplementedError("exercise vp_kernel: not implemented yet")


def euler_maruyama_forward_step(sde, x: torch.Tensor, t: float, h: float, z: torch.Tensor) -> torch.Tensor:
    """One Euler-Maruyama step of the forward SDE from time t to t + h.

    ``z`` is the standard normal noise to use (same shape as x). Use ``sde.drift(x, t)`` and
    ``sde.diffusion(t)``. Hint: x + f h + g sqrt(h) z.
    """
    raise NotImplementedError("exercise euler_maruyama_forward_step: not implemented yet")


def mixture_score_1d(x: torch.Tensor, alpha: float, sigma: float, weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
    """Score of a 1-D Gaussian mixture perturbed by a kernel N(alpha x0, sigma^2).

    ``x`` has shape (B,); ``weights``, ``means``, ``variances`` have shape (K,). Return the score
    d/dx log p_t(x), shape (B,). Hint: component k becomes N(alpha mu_k, alpha^2 v_k + sigma^2);
    weight the component scores by the responsibilities (a softmax of the log weighted densities).
    """
    raise NotImplementedError("exercise mixture_score_1d: not implemented yet")
