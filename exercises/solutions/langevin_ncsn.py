"""Reference solutions, the chapter on Langevin dynamics and NCSN."""

import math

import torch


def ula_variance(s2, step_size):
    # x' - m = (1 - h / (2 s2)) (x - m) + sqrt(h) z  =>  v = (1 - h / (2 s2))^2 v + h
    return s2 / (1 - step_size / (4 * s2))


def perturbed_mixture_score(weights, means, var, x, sigma):
    v = var + sigma**2
    diff = x[:, None, :] - means[None]  # (B, K, d)
    logits = torch.log(weights)[None] - 0.5 * diff.pow(2).sum(-1) / v
    r = torch.softmax(logits, dim=1)  # responsibilities; the shared constants cancel
    return -(r[..., None] * diff).sum(1) / v


def annealed_langevin(score_fn, sigmas, x, eps, steps_per_level, generator):
    sigmas = [float(s) for s in sigmas]
    for sigma in sigmas:
        alpha = eps * sigma**2 / sigmas[-1] ** 2
        s_vec = torch.full((x.shape[0],), sigma, dtype=x.dtype)
        for _ in range(steps_per_level):
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x = x + 0.5 * alpha * score_fn(x, s_vec) + math.sqrt(alpha) * z
    return x
