"""Exercises of the chapter on parametrisations. Fill in each function, then run

pytest exercises --impl=starter -k parametrisations
"""

import torch


def x0_eps_from_v(v: torch.Tensor, x: torch.Tensor, alpha, sigma):
    """Recover (x0, eps) from a v-prediction at x_t = alpha x0 + sigma eps.

    v = alpha eps - sigma x0 (Salimans & Ho 2022). Solve the 2x2 linear system for general
    (alpha, sigma), not only alpha^2 + sigma^2 = 1. alpha and sigma are floats.
    Returns the tuple (x0, eps), each shaped like x.
    """
    raise NotImplementedError("exercise x0_eps_from_v: not implemented yet")


def preconditioned_denoiser(
    net, x: torch.Tensor, sigma: torch.Tensor, sigma_data: float
):
    """The EDM denoiser D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).

    net(x, c_noise) is the raw network (c_noise a (B,) tensor); x is (B, d); sigma is (B,).
    c_skip = sd^2/(sigma^2 + sd^2), c_out = sigma sd/sqrt(sigma^2 + sd^2),
    c_in = 1/sqrt(sigma^2 + sd^2), c_noise = log(sigma)/4 (Karras et al. 2022, Table 1).
    """
    raise NotImplementedError(
        "exercise preconditioned_denoiser: not implemented yet"
    )


def edm_training_loss(
    denoiser,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    sigma_data: float,
) -> torch.Tensor:
    """The EDM loss for given noise levels sigma (B,) and noise (shaped like x0).

    mean over the batch of lambda(sigma) * mean over entries of (D(x0 + sigma n; sigma) - x0)^2,
    lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2. Returns a scalar tensor.
    """
    raise NotImplementedError("exercise edm_training_loss: not implemented yet")
