"""Reference solutions, chapter 5."""

import math

import torch


def hutchinson_divergence_estimate(fn, x, probes):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(x)
        total = torch.zeros(x.shape[0], dtype=out.dtype, device=x.device)
        for k in range(probes.shape[0]):
            (vjp,) = torch.autograd.grad(out, x, grad_outputs=probes[k], retain_graph=True)
            total = total + (vjp * probes[k]).reshape(x.shape[0], -1).sum(1)
    return (total / probes.shape[0]).detach()


def bits_per_dim_from_nll(nll, num_dims):
    d = num_dims
    return (nll - d * math.log(2) + d * math.log(256)) / (d * math.log(2))


def gaussian_prior_logp(z, sigma_T):
    d = z[0].numel()
    sq = z.reshape(z.shape[0], -1).pow(2).sum(1)
    return -0.5 * d * math.log(2 * math.pi * sigma_T**2) - sq / (2 * sigma_T**2)
