"""Reference solutions, chapter 4."""

import math


def langevin_step_size(score, z, snr, alpha_i=1.0):
    b = score.shape[0]
    s_norm = score.reshape(b, -1).norm(dim=1).mean()
    z_norm = z.reshape(b, -1).norm(dim=1).mean()
    return (2 * alpha_i * (snr * z_norm / s_norm) ** 2).item()


def dpm_solver_1_step(x, eps_hat, alpha_s, sigma_s, alpha_t, sigma_t):
    h = (math.log(alpha_t) - math.log(sigma_t)) - (math.log(alpha_s) - math.log(sigma_s))
    return (alpha_t / alpha_s) * x - sigma_t * math.expm1(h) * eps_hat


def heun_ode_step(drift_fn, x, t, t_next):
    h = t_next - t
    d = drift_fn(x, t)
    d_next = drift_fn(x + h * d, t_next)
    return x + 0.5 * h * (d + d_next)


def tweedie_denoise(x, score, alpha, sigma):
    return (x + sigma**2 * score) / alpha
