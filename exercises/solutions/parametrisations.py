"""Reference solutions, chapter on parametrisations."""

import torch


def x0_eps_from_v(v, x, alpha, sigma):
    norm = alpha**2 + sigma**2
    return (alpha * x - sigma * v) / norm, (sigma * x + alpha * v) / norm


def preconditioned_denoiser(net, x, sigma, sigma_data):
    s = sigma[:, None]
    r = torch.rsqrt(s**2 + sigma_data**2)
    c_skip, c_out, c_in = sigma_data**2 * r**2, s * sigma_data * r, r
    return c_skip * x + c_out * net(c_in * x, 0.25 * torch.log(sigma))


def edm_training_loss(denoiser, x0, sigma, noise, sigma_data):
    s = sigma.reshape(-1, *([1] * (x0.dim() - 1)))
    err = (denoiser(x0 + s * noise, sigma) - x0).flatten(1).pow(2).mean(1)
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    return (weight * err).mean()
