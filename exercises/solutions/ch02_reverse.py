"""Reference solutions, chapter 2."""

import math

import torch


def reverse_drift(sde, score, x, t):
    return sde.drift(x, t) - sde.diffusion(t) ** 2 * score


def reverse_em_step(sde, score_fn, x, t, delta, z):
    tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    g = sde.diffusion(t)
    drift = sde.drift(x, tt) - g**2 * score_fn(x, tt)
    return x - drift * delta + g * math.sqrt(delta) * z


def gaussian_score(x, alpha, sigma, m, s2):
    return -(x - alpha * m) / (alpha**2 * s2 + sigma**2)
