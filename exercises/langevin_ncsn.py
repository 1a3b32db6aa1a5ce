"""Exercises of the chapter on Langevin dynamics and NCSN. Fill in each function,
then run

    pytest exercises --impl=starter -k langevin

or call ``exercises.check(fn)`` in the chapter. Reference solutions:
exercises/solutions/.
"""

import torch


def ula_variance(s2: float, step_size: float) -> float:
    """The stationary variance of ULA, x' = x + (h/2) score(x) +
    sqrt(h) z, on N(m, s2).

    Return it as a float for 0 < h < 4 s2 (derive it: the update is linear in x for a
    Gaussian).
    """
    raise NotImplementedError("exercise ula_variance: not implemented yet")


def perturbed_mixture_score(
    weights: torch.Tensor,
    means: torch.Tensor,
    var: float,
    x: torch.Tensor,
    sigma: float,
) -> torch.Tensor:
    """The score of sum_k w_k N(mu_k, var I) perturbed by N(0, sigma^2
    I), at x.

    ``weights`` (K,), ``means`` (K, d), ``x`` (B, d); return (B, d). Hint: the perturbed
    components are N(mu_k, (var + sigma^2) I); weight their scores by the
    responsibilities (a softmax of log w_k + log N(x; mu_k, (var + sigma^2) I) over k).
    """
    raise NotImplementedError(
        "exercise perturbed_mixture_score: not implemented yet"
    )


def annealed_langevin(
    score_fn,
    sigmas,
    x: torch.Tensor,
    eps: float,
    steps_per_level: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1); return
    the final x.

    For each sigma_i in ``sigmas`` (decreasing), with alpha_i = eps * sigma_i^2 /
    sigma_L^2, take ``steps_per_level`` steps x <- x + alpha_i / 2 * score_fn(x, sigma)
    + sqrt(alpha_i) * z, where ``sigma`` is a (B,) tensor filled with sigma_i and z =
    torch.randn(x.shape, generator=generator, dtype=x.dtype) is drawn once per step.
    """
    raise NotImplementedError("exercise annealed_langevin: not implemented yet")
