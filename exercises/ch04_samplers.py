"""Chapter 4 exercises: samplers. Fill in each function, then run

    pytest exercises --impl=starter -k ch04
"""

import torch


def langevin_step_size(score: torch.Tensor, z: torch.Tensor, snr: float, alpha_i: float = 1.0) -> float:
    """The Langevin corrector's step size from the signal-to-noise ratio r = snr.

    eps = 2 alpha_i (r ||z|| / ||s||)^2, where ||z|| and ||s|| are the batch means of the
    per-sample norms of the noise z and the score s (both shaped (B, ...)). Return a Python float.
    Hint: flatten each sample with .reshape(B, -1) before taking .norm(dim=1).
    """
    raise NotImplementedError("exercise langevin_step_size: not implemented yet")


def dpm_solver_1_step(x: torch.Tensor, eps_hat: torch.Tensor, alpha_s: float, sigma_s: float,
                      alpha_t: float, sigma_t: float) -> torch.Tensor:
    """One DPM-Solver-1 (DDIM) step of the PF-ODE from time s to time t.

    x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) eps_hat, with h = lambda_t - lambda_s and
    lambda = log(alpha / sigma); eps_hat = -sigma_s * score(x_s, s) is the noise prediction at s.
    Hint: math.expm1 is accurate for small h.
    """
    raise NotImplementedError("exercise dpm_solver_1_step: not implemented yet")


def heun_ode_step(drift_fn, x: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """One Heun step of dx/dt = drift_fn(x, t) from t to t_next (either direction).

    Euler predictor x~ = x + h d(x, t), then the trapezoidal rule
    x' = x + h/2 [d(x, t) + d(x~, t_next)], with h = t_next - t. Exactly two calls of drift_fn.
    """
    raise NotImplementedError("exercise heun_ode_step: not implemented yet")


def tweedie_denoise(x: torch.Tensor, score: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """Tweedie's formula E[x0 | x_t] = (x_t + sigma^2 score(x_t, t)) / alpha."""
    raise NotImplementedError("exercise tweedie_denoise: not implemented yet")
