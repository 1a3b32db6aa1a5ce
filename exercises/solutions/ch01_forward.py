"""Reference solutions, chapter 1."""

import math

import torch


def vp_kernel(t, beta_min=0.1, beta_max=20.0):
    b = beta_min * t + 0.5 * t**2 * (beta_max - beta_min)
    return torch.exp(-0.5 * b), torch.sqrt(-torch.expm1(-b))


def euler_maruyama_forward_step(sde, x, t, h, z):
    return x + sde.drift(x, t) * h + sde.diffusion(t) * math.sqrt(h) * z


def mixture_score_1d(x, alpha, sigma, weights, means, variances):
    var = alpha**2 * variances + sigma**2  # (K,)
    diff = x[:, None] - alpha * means  # (B, K)
    log_n = -0.5 * diff**2 / var - 0.5 * torch.log(2 * math.pi * var)
    r = torch.softmax(torch.log(weights) + log_n, dim=1)
    return (r * (-diff / var)).sum(1)
