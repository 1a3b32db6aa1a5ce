"""Checks of the Langevin / NCSN exercises, against sdelab (the reference) and exact "
"properties."""

import math

import torch

from sdelab import make_sde, toy
from sdelab.langevin import annealed_langevin as ref_annealed_langevin
from sdelab.langevin import (
    geometric_sigmas,
    ula_stationary_variance,
    ve_noise_conditional,
)

from ..registry import exercise

f64 = torch.float64


@exercise("langevin", "1")
def ula_variance(impl):
    for s2, h in ((1.0, 0.1), (0.3, 0.5), (2.0, 7.9)):
        out = impl(s2, h)
        assert math.isclose(
            float(out), ula_stationary_variance(s2, h), rel_tol=1e-10
        ), (
            f"s2={s2}, h={h}: got {out}, expected "
            f"{ula_stationary_variance(s2, h):.6g}; "
            "solve v = (1 - h/(2 s2))^2 v + h"
        )
    # the variance recursion of the chain, iterated to convergence, lands on the answer
    s2, h, v = 0.7, 0.4, 0.0
    for _ in range(2000):
        v = (1 - h / (2 * s2)) ** 2 * v + h
    assert math.isclose(
        float(impl(s2, h)), v, rel_tol=1e-9
    ), "does not match the chain's own recursion"


@exercise("langevin", "2")
def perturbed_mixture_score(impl):
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=f64)
    means = torch.tensor([[-3.0, 0.0], [2.0, 1.0], [0.0, -4.0]], dtype=f64)
    var = 0.5
    mix = toy.GaussianMixture(weights, means, torch.full((3,), var, dtype=f64))
    ve = make_sde("ve", sigma_min=0.01, sigma_max=50.0)
    exact = ve_noise_conditional(mix.score_fn(ve), ve)
    x = 4 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=f64)
    for sigma in (0.05, 1.0, 10.0):
        out = impl(weights, means, var, x, sigma)
        assert (
            out.shape == x.shape
        ), f"expected shape {tuple(x.shape)}, got {tuple(out.shape)}"
        ref = exact(x, torch.full((64,), sigma, dtype=f64))
        # float64 throughout; the time round trip sigma -> t -> sigma is exact to ~1e-13
        assert torch.allclose(out, ref, rtol=1e-8, atol=1e-10), (
            f"sigma={sigma}: differs from the exact score of sdelab.toy; are the "
            f"component "
            "variances var + sigma^2, and the responsibilities normalised over k?"
        )
    far = impl(weights, means, var, torch.tensor([[100.0, 0.0]], dtype=f64), 0.1)
    assert torch.isfinite(
        far
    ).all(), "far from every mode the score must stay finite: use softmax/logsumexp"


@exercise("langevin", "3")
def annealed_langevin(impl):
    sigmas = geometric_sigmas(5.0, 0.5, 4)
    score = lambda x, s: -(x - 1.0) / (
        0.3 + s[:, None] ** 2
    )  # noqa: E731  N(1, 0.3) perturbed
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=f64)
    out = impl(score, sigmas, x, 0.05, 7, torch.Generator().manual_seed(2))
    ref = ref_annealed_langevin(
        score,
        sigmas,
        x,
        eps=0.05,
        steps_per_level=7,
        generator=torch.Generator().manual_seed(2),
    ).x
    assert (
        out.shape == x.shape
    ), f"expected shape {tuple(x.shape)}, got {tuple(out.shape)}"
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12), (
        "differs from sdelab.langevin.annealed_langevin with the same noise: alpha_i "
        "= eps "
        "sigma_i^2 / sigma_L^2, the drift alpha_i / 2 * score, the noise "
        "sqrt(alpha_i) z, one "
        "randn per step"
    )
