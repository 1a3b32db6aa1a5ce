"""Chapter 5 exercises: likelihood through the probability-flow ODE. Fill in each function, then run

    pytest exercises --impl=starter -k ch05
"""

import torch


def hutchinson_divergence_estimate(fn, x: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    """Hutchinson's estimate of the divergence of fn at x, one value per sample.

    div F(x) ~ (1/n) sum_k eps_k^T (dF/dx) eps_k for probes eps_k of shape (n, *x.shape) with
    E[eps eps^T] = I. fn maps (B, ...) to the same shape, samples independently.
    Hint: eps^T J = grad_x (eps . F(x)), one torch.autograd.grad call per probe (retain_graph).
    """
    raise NotImplementedError("exercise hutchinson_divergence_estimate: not implemented yet")


def bits_per_dim_from_nll(nll: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Bits/dim of 8-bit images from the model's NLL (nats) of dequantized images in [-1, 1].

    bpd = (nll - D log 2 + D log 256) / (D log 2): the D log 2 is the change of variables from
    [0, 1) to [-1, 1) (y = 2u - 1), the D log 256 the cell volume 1/256 of each pixel level.
    """
    raise NotImplementedError("exercise bits_per_dim_from_nll: not implemented yet")


def gaussian_prior_logp(z: torch.Tensor, sigma_T: float) -> torch.Tensor:
    """log N(z; 0, sigma_T^2 I) per sample, z of shape (B, ...): the prior term of the ODE likelihood.

    log pi(z) = -D/2 log(2 pi sigma_T^2) - |z|^2 / (2 sigma_T^2), D = number of entries per sample.
    sigma_T = sigma_max for VE, 1 for VP and sub-VP.
    """
    raise NotImplementedError("exercise gaussian_prior_logp: not implemented yet")
