"""Langevin MCMC and annealed Langevin dynamics against closed forms and exactly "
"propagated laws.

Tolerances: sample means/variances/proportions of n independent chains within 5 standard
    errors
(a false alarm about once in 1.7 million per check). The reference laws are exact:
Gaussian recursions for linear scores, and for a 1-D mixture the chain's density
propagated on a grid with the ULA transition kernel N(x + (h/2) s(x), h) (quadrature
error far below the sampling error).
"""

from __future__ import annotations

import math

import pytest
import torch

from sdelab import make_sde, toy
from sdelab.langevin import (
    annealed_langevin,
    geometric_sigmas,
    langevin,
    ula_stationary_variance,
    ve_noise_conditional,
)

f64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_ula_stationary_variance_on_a_gaussian():
    # N(m, s2 I) in 2-D; the chain contracts by |1 - h/(2 s2)| = 0.75 per step: 150
    # steps leave 1e-19
    m, s2, h, n = torch.tensor([1.0, -2.0], dtype=f64), 1.5, 1.5, 100_000
    x = torch.zeros(n, 2, dtype=f64)
    res = langevin(
        lambda x: -(x - m) / s2, x, step_size=h, steps=150, generator=_gen(0)
    )
    v = ula_stationary_variance(s2, h)
    assert v == pytest.approx(s2 / (1 - h / (4 * s2)))
    # the stationary law is exactly N(m, v I): mean within 5 s.e., variance within 5
    # s.e. (v sqrt(2/n))
    assert (res.x.mean(0) - m).abs().max() < 5 * math.sqrt(v / n)
    var = res.x.var(0)
    assert (var - v).abs().max() < 5 * v * math.sqrt(2 / n)
    # and the bias is real: 14 % above s2, far outside the sampling error
    assert (var - s2).abs().min() > 20 * v * math.sqrt(2 / n)
    assert res.nfe == 150 and res.trajectory is None


def test_ula_step_size_limit_and_bad_input():
    with pytest.raises(ValueError, match="step_size"):
        ula_stationary_variance(1.0, 4.0)
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="step_size"):
        langevin(lambda x: -x, x, step_size=-0.1, steps=3)
    with pytest.raises(TypeError, match="steps"):
        langevin(lambda x: -x, x, step_size=0.1, steps=2.5)
    with pytest.raises(TypeError, match="score"):
        langevin(None, x, step_size=0.1, steps=3)
    with pytest.raises(ValueError, match="decreasing"):
        annealed_langevin(lambda x, s: -x, [0.1, 1.0], x, eps=0.1, steps_per_level=2)
    with pytest.raises(ValueError, match="sigma_min"):
        geometric_sigmas(1.0, 2.0, 5)
    with pytest.raises(TypeError, match="VESDE"):
        ve_noise_conditional(lambda x, t: x, make_sde("vp"))


def test_langevin_trajectory_and_seed():
    x = torch.zeros(4, 3)
    a = langevin(
        lambda x: -x, x, step_size=0.1, steps=5, generator=3, return_trajectory=True
    )
    b = langevin(lambda x: -x, x, step_size=0.1, steps=5, generator=_gen(3))
    assert a.trajectory.shape == (6, 4, 3) and torch.equal(a.trajectory[0], x)
    assert torch.equal(a.x, b.x) and torch.equal(a.trajectory[-1], a.x)


def test_geometric_sigmas():
    s = geometric_sigmas(20.0, 1.0, 10)
    assert s[0].item() == pytest.approx(20.0) and s[-1].item() == pytest.approx(1.0)
    ratios = s[1:] / s[:-1]
    assert torch.allclose(ratios, ratios[0].expand(9), rtol=1e-12)


def test_annealed_langevin_on_a_gaussian_follows_the_exact_recursion():
    # linear score of N(m, s2 + sigma^2): each step maps mean and variance exactly
    m, s2, n = 0.7, 0.5, 50_000
    sigmas, eps, T = (
        geometric_sigmas(5.0, 0.2, 6),
        0.05,
        150,
    )  # last level: 0.954^300 ~ 1e-6
    x = 3.0 * torch.randn(n, 1, generator=_gen(1), dtype=f64)
    res = annealed_langevin(
        lambda x, s: -(x - m) / (s2 + s[:, None] ** 2),
        sigmas,
        x,
        eps=eps,
        steps_per_level=T,
        generator=_gen(2),
    )
    mean, var = 0.0, 9.0
    for sig in sigmas.tolist():
        a = eps * sig**2 / sigmas[-1].item() ** 2
        c = 1 - a / (2 * (s2 + sig**2))
        for _ in range(T):
            mean, var = m + c * (mean - m), c * c * var + a
    assert res.nfe == len(sigmas) * T
    assert abs(res.x.mean().item() - mean) < 5 * math.sqrt(var / n)
    assert abs(res.x.var().item() - var) < 5 * var * math.sqrt(2 / n)
    # the recursion ends near the ULA law of the last level (the chain has equilibrated
    # there)
    assert var == pytest.approx(ula_stationary_variance(s2 + 0.04, eps), rel=1e-3)


def _propagate(density, grid, score, h, steps):
    """Push probability masses on a uniform grid through `steps` ULA transitions N(x "
    "+ h/2 s(x), h)."""
    dx = (grid[1] - grid[0]).item()
    mean = grid + 0.5 * h * score(grid[:, None])[:, 0]
    K = (
        torch.exp(-((grid[:, None] - mean[None, :]) ** 2) / (2 * h))
        / math.sqrt(2 * math.pi * h)
        * dx
    )
    for _ in range(steps):
        density = K @ density
    return density


MIX_1D = dict(weights=[0.2, 0.8], means=[[-5.0], [5.0]], covs=[1.0, 1.0])


def _mixture_score(mix, ve):
    return ve_noise_conditional(mix.score_fn(ve), ve)


@pytest.mark.slow
def test_annealed_langevin_recovers_the_weights_plain_langevin_does_not():
    """Song & Ermon (2019) Sec. 3.2 / Fig. 3 in 1-D: weights 0.2 / 0.8 at -5 and +5."""
    mix = toy.GaussianMixture(**MIX_1D)
    ve = make_sde("ve", sigma_min=0.01, sigma_max=50.0)
    score = _mixture_score(mix, ve)
    n = 20_000
    x = 16 * torch.rand(n, 1, generator=_gen(4), dtype=f64) - 8  # uniform on [-8, 8]
    grid = torch.linspace(
        -100, 100, 2001, dtype=f64
    )  # dx = 0.1 < 1/3 of the smallest kernel std
    inside = ((grid >= -8) & (grid <= 8)).to(f64)
    init = inside / inside.sum()  # probability masses on the grid

    # plain Langevin on the data score: every chain stays in the basin it starts in
    plain = langevin(
        lambda x: mix.score_t(x, 0.0, ve),
        x,
        step_size=0.1,
        steps=300,
        generator=_gen(5),
    )
    dens = _propagate(init.clone(), grid, lambda g: mix.score_t(g, 0.0, ve), 0.1, 300)
    w_plain = (dens[grid > 0].sum() / dens.sum()).item()
    w_hat = (plain.x > 0).double().mean().item()
    assert abs(w_hat - w_plain) < 5 * math.sqrt(w_plain * (1 - w_plain) / n)
    assert (
        abs(w_plain - 0.8) > 0.25
    )  # the exact law of the chain has the wrong weight (~0.5)

    # annealed Langevin, Song & Ermon's toy settings: sigma 20 -> 1, L = 10, T = 100,
    # eps = 0.1
    sigmas, eps, T = geometric_sigmas(20.0, 1.0, 10), 0.1, 100
    res = annealed_langevin(
        score, sigmas, x, eps=eps, steps_per_level=T, generator=_gen(6)
    )
    dens = init.clone()
    for sig in sigmas.tolist():
        a = eps * sig**2
        dens = _propagate(
            dens, grid, lambda g: score(g, torch.full((len(g),), sig, dtype=f64)), a, T
        )
    # mass lost off the grid's ends (|x| = 100 is ~4.9 std of p_sigma at sigma = 20): <
    # 1e-3
    assert abs(dens.sum().item() - 1) < 1e-3
    w_exact = (dens[grid > 0].sum() / dens.sum()).item()
    w_hat = (res.x > 0).double().mean().item()
    assert abs(w_hat - w_exact) < 5 * math.sqrt(w_exact * (1 - w_exact) / n)
    assert (
        abs(w_exact - 0.8) < 0.02
    )  # the algorithm's own law: weights recovered to 2 points
