"""Reference solutions, chapter 3."""

import math

import torch


def dsm_eps_loss(eps_fn, sde, x0, t, z):
    alpha, sigma = sde.marginal_coeffs(t)
    shape = (-1,) + (1,) * (x0.dim() - 1)
    x_t = alpha.reshape(shape) * x0 + sigma.reshape(shape) * z
    return (eps_fn(x_t, t) - z).flatten(1).pow(2).mean(1)


def fourier_features(t, W):
    proj = 2 * math.pi * t[:, None] * W[None, :]
    return torch.cat([torch.sin(proj), torch.cos(proj)], dim=1)


def score_from_eps(eps, sigma):
    return -eps / sigma.reshape(-1, *([1] * (eps.dim() - 1)))


def likelihood_weight(sde, t):
    _, sigma = sde.marginal_coeffs(t)
    return sde.diffusion(t) ** 2 / sigma**2
