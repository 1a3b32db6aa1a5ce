"""Chapter 3 exercises: score matching. Fill in each function, then run

    pytest exercises --impl=starter -k ch03

or call ``exercises.check(fn)`` in the chapter. Reference solutions: exercises/solutions/.
"""

import torch


def dsm_eps_loss(eps_fn, sde, x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Denoising score matching in epsilon form, with lambda(t) = sigma(t)^2, per sample.

    x_t = alpha(t) x0 + sigma(t) z, and the loss of sample i is the mean over its D entries of
    (eps_fn(x_t, t) - z)^2; return a (B,) tensor. ``t`` is a (B,) tensor of times and ``x0`` has
    any shape (B, ...). Hint: ``alpha, sigma = sde.marginal_coeffs(t)`` are (B,) tensors;
    reshape them to (B, 1, ..., 1) to broadcast against x0.
    """
    raise NotImplementedError("exercise dsm_eps_loss: not implemented yet")


def fourier_features(t: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Gaussian Fourier features of time: [sin(2 pi W t), cos(2 pi W t)].

    ``t`` is (B,), ``W`` is (K,) fixed frequencies; return (B, 2K) with the K sines first.
    """
    raise NotImplementedError("exercise fourier_features: not implemented yet")


def score_from_eps(eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Turn a noise prediction into a score: s = -eps / sigma(t).

    ``eps`` is (B, ...) of any trailing shape, ``sigma`` is (B,), one noise level per sample.
    """
    raise NotImplementedError("exercise score_from_eps: not implemented yet")


def likelihood_weight(sde, t: torch.Tensor) -> torch.Tensor:
    """The factor w(t) = g(t)^2 / sigma(t)^2 that turns the epsilon loss into lambda = g^2 weighting.

    ``t`` is a (B,) tensor; return (B,). Hint: ``sde.diffusion(t)`` and ``sde.marginal_coeffs(t)``.
    """
    raise NotImplementedError("exercise likelihood_weight: not implemented yet")
