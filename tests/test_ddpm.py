"""The discrete DDPM / NCSN chains against closed forms and the library's SDEs.

Tolerances: float64 identities to 1e-10 (rounding); Monte Carlo moments within 5
    standard errors;
discretisation errors checked by their rate (error x N roughly constant for a
first-order scheme).
"""

from __future__ import annotations

import math

import pytest
import torch

from sdelab import losses, make_sde, samplers, toy
from sdelab import ddpm

f64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_exact_betas_reproduce_the_vp_kernels_and_euler_betas_converge_at_first_order():
    sde = make_sde("vp-linear")
    for N in (10, 1000):
        t = torch.arange(1, N + 1, dtype=f64) / N
        alpha, sigma = sde.marginal_coeffs(t)
        abar = ddpm.alphas_bar(ddpm.vp_betas(sde, N, "exact"))
        assert torch.allclose(abar.sqrt(), alpha, rtol=1e-10)
    errs = []
    for N in (100, 1000, 10000):
        t = torch.arange(1, N + 1, dtype=f64) / N
        alpha, sigma = sde.marginal_coeffs(t)
        a, G = ddpm.ddpm_coeffs(ddpm.vp_betas(sde, N, "euler"))
        abar, sbar = ddpm.chain_marginal_coeffs(a, G)
        errs.append(
            max((abar - alpha).abs().max().item(), (sbar - sigma).abs().max().item())
        )
    # first order: ten times more steps, ten times smaller error (8x to 12x)
    assert 8 < errs[0] / errs[1] < 12 and 8 < errs[1] / errs[2] < 12


def test_ho_schedule_is_the_vp_sde_at_n_1000():
    betas = ddpm.linear_betas(1000)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(
        0.02
    )
    euler = ddpm.vp_betas(make_sde("vp-linear"), 1000, "euler")
    # beta(i/N)/N vs Ho's linspace(1e-4, 0.02): the grids differ by one step, (20 -
    # 0.1)/N^2 = 2e-5
    assert (betas - euler).abs().max() < 2e-5


def test_chain_marginals_closed_form_and_monte_carlo():
    betas = ddpm.linear_betas(50, 1e-3, 0.1)
    a, G = ddpm.ddpm_coeffs(betas)
    abar, sbar = ddpm.chain_marginal_coeffs(a, G)
    assert torch.allclose(abar**2, ddpm.alphas_bar(betas), rtol=1e-12)
    assert torch.allclose(sbar**2, 1 - ddpm.alphas_bar(betas), rtol=1e-12)
    n, x0 = 100_000, 2.0
    traj = ddpm.forward_chain(
        torch.full((n, 1), x0, dtype=f64),
        a,
        G,
        generator=_gen(0),
        return_trajectory=True,
    )
    for i in (1, 10, 50):
        m, v = (abar[i - 1] * x0).item(), (sbar[i - 1] ** 2).item()
        assert abs(traj[i].mean().item() - m) < 5 * math.sqrt(v / n)
        assert abs(traj[i].var().item() - v) < 5 * v * math.sqrt(2 / n)


def test_ncsn_chain_is_the_ve_sde_on_the_grid():
    sde = make_sde("ve", sigma_min=0.01, sigma_max=50.0)
    N = 20
    t = torch.arange(1, N + 1, dtype=f64) / N
    _, sigma = sde.marginal_coeffs(t)
    abar, sbar = ddpm.chain_marginal_coeffs(*ddpm.ncsn_coeffs(sigma))
    assert torch.equal(abar, torch.ones_like(abar))
    assert torch.allclose(sbar, sigma, rtol=1e-12)


def test_posterior_is_bayes_rule():
    betas = ddpm.linear_betas(30, 1e-3, 0.2)
    abar = ddpm.alphas_bar(betas)
    g = _gen(1)
    x0, xi = torch.randn(5, 3, generator=g, dtype=f64), torch.randn(
        5, 3, generator=g, dtype=f64
    )
    i = torch.tensor([1, 2, 7, 29, 30])
    mean, var = ddpm.posterior(x0, xi, i, betas)
    # product of q(x_i | x_{i-1}) = N(a x_{i-1}, beta) and q(x_{i-1} | x0) =
    # N(sqrt(abar') x0, 1 - abar')
    b = betas[i - 1]
    ab_prev = torch.where(i > 1, abar[(i - 2).clamp(min=0)], torch.ones_like(b))
    prec = (1 - b) / b + 1 / (1 - ab_prev)
    ref_mean = (
        (1 - b).sqrt()[:, None] * xi / b[:, None]
        + ab_prev.sqrt()[:, None] * x0 / (1 - ab_prev)[:, None]
    ) / prec[:, None]
    # at i = 1, abar_0 = 1: the posterior is the point x0 (variance 0, mean x0)
    assert torch.allclose(var[1:], 1 / prec[1:], rtol=1e-10) and var[0].abs() < 1e-15
    assert torch.allclose(mean[1:], ref_mean[1:], rtol=1e-10) and torch.allclose(
        mean[0], x0[0]
    )


def test_reverse_mean_with_the_true_noise_is_the_posterior_mean():
    betas = ddpm.linear_betas(40, 1e-3, 0.1)
    g = _gen(2)
    x0, z = torch.randn(6, 2, generator=g, dtype=f64), torch.randn(
        6, 2, generator=g, dtype=f64
    )
    i = torch.tensor([2, 5, 10, 20, 39, 40])
    xi = ddpm.q_sample(x0, i, ddpm.alphas_bar(betas), z)
    assert torch.allclose(
        ddpm.reverse_mean(z, xi, i, betas),
        ddpm.posterior(x0, xi, i, betas)[0],
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_elbo_term_is_the_weighted_noise_error(variance):
    """Ho et al. eq. 12: L_{i-1} = w_i ||eps - eps_theta||^2 + (KL of the variances)."""
    betas = ddpm.linear_betas(100)
    g = _gen(3)
    x0, z = torch.randn(8, 3, generator=g, dtype=f64), torch.randn(
        8, 3, generator=g, dtype=f64
    )
    i = torch.randint(2, 101, (8,), generator=g)
    eps_fn = lambda x, t: torch.tanh(x) * (
        1 + t[:, None]
    )  # noqa: E731  any predictor will do
    kl = ddpm.elbo_term(eps_fn, x0, i, betas, z, variance=variance)
    xi = ddpm.q_sample(x0, i, ddpm.alphas_bar(betas), z)
    err = (z - eps_fn(xi, i.to(f64) / 100)).pow(2).sum(1)
    w = ddpm.elbo_weight(i, betas, variance, like=x0)
    s2 = ddpm.reverse_variance(i, betas, variance, like=x0)
    r = ddpm.posterior(x0, xi, i, betas)[1] / s2
    const = 0.5 * 3 * (r - 1 - torch.log(r))
    assert torch.allclose(kl, w * err + const, rtol=1e-10)
    if variance == "posterior":
        assert const.abs().max() < 1e-12


def test_ddpm_loss_is_dsm_at_the_grid_times():
    sde = make_sde("vp-linear")
    N = 1000
    betas = ddpm.vp_betas(sde, N, "exact")
    g = _gen(4)
    x0, z = torch.randn(16, 2, generator=g, dtype=f64), torch.randn(
        16, 2, generator=g, dtype=f64
    )
    i = torch.randint(1, N + 1, (16,), generator=g)
    eps_fn = lambda x, t: torch.sin(x) * t[:, None]  # noqa: E731
    ours = ddpm.ddpm_loss(eps_fn, x0, betas, i=i, z=z, reduction="none")
    ref = losses.dsm_loss(eps_fn, sde, x0, t=i.to(f64) / N, z=z, reduction="none").to(
        f64
    )
    # dsm_loss squares in float32: relative 1e-6
    assert torch.allclose(ours, ref, rtol=1e-5)
    # drawn: the same generator state gives the same loss
    assert ddpm.ddpm_loss(eps_fn, x0, betas, generator=_gen(5)) == ddpm.ddpm_loss(
        eps_fn, x0, betas, generator=_gen(5)
    )


def _ancestral_moments(sde, m, s2, betas, variance="beta"):
    """Exact mean and variance of DDPM ancestral sampling for data N(m, s2) and its "
    "exact score."""
    N = betas.numel()
    t = torch.arange(1, N + 1, dtype=f64) / N
    alpha, sigma = sde.marginal_coeffs(t)
    mu_t, V_t = alpha * m, alpha**2 * s2 + sigma**2  # p_t = N(mu_t, V_t)
    var_rev = ddpm.reverse_variance(
        torch.arange(1, N + 1), betas, variance, like=torch.zeros(N, dtype=f64)
    )
    mean, var = mu_t[-1].item(), V_t[-1].item()  # started from the exact p_T
    for k in range(N - 1, -1, -1):
        b, V, mu = betas[k].item(), V_t[k].item(), mu_t[k].item()
        c = (1 - b / V) / math.sqrt(1 - b)
        mean = c * mean + b * mu / (V * math.sqrt(1 - b))
        var = c * c * var + (var_rev[k].item() if k > 0 else 0.0)
    return mean, var


def test_ancestral_sampling_on_gaussian_data_matches_its_exact_law_and_converges():
    sde, m, s2 = make_sde("vp-linear"), 1.5, 0.25
    data = toy.gaussian([m], [[s2]])
    errs = []
    for N in (100, 1000, 10000):
        mean, var = _ancestral_moments(sde, m, s2, ddpm.vp_betas(sde, N, "exact"))
        errs.append(abs(mean - m) + abs(var - s2))
    assert errs[-1] < 1e-3
    assert (
        6 < errs[0] / errs[1] < 14 and 6 < errs[1] / errs[2] < 14
    )  # first order in 1/N
    # the sampler follows that law: 200 steps, 40k samples, moments within 5 s.e.
    N, n = 200, 40_000
    betas = ddpm.vp_betas(sde, N, "exact")
    mean, var = _ancestral_moments(sde, m, s2, betas)
    a1, s1 = (c.item() for c in sde.marginal_coeffs(torch.tensor([1.0], dtype=f64)))
    x_N = a1 * m + math.sqrt(a1**2 * s2 + s1**2) * torch.randn(
        n, 1, generator=_gen(6), dtype=f64
    )
    res = ddpm.ancestral_sampling(data.score_fn(sde), betas, x_N, generator=_gen(7))
    assert res.nfe == N
    assert abs(res.x.mean().item() - mean) < 5 * math.sqrt(var / n)
    assert abs(res.x.var().item() - var) < 5 * var * math.sqrt(2 / n)


def test_ancestral_sampling_and_reverse_diffusion_agree_to_first_order():
    """Same noise, same score: the two VP samplers differ by O(beta^2) per step."""
    sde = make_sde("vp-linear")
    data = toy.gaussian([0.5, -1.0], [[0.3, 0.1], [0.1, 0.2]])
    gaps = []
    for N in (50, 500):
        betas = ddpm.vp_betas(sde, N, "exact")
        x_N = torch.randn(2000, 2, generator=_gen(8), dtype=f64)
        # the N - 1 steps from t_N = 1 down to t_1 = 1/N (>= sde.eps): same grid, same
        # noise
        grid = [k / N for k in range(N, 0, -1)]
        a = ddpm.ancestral_sampling(
            data.score_fn(sde),
            betas,
            x_N,
            final_noise=True,
            generator=_gen(9),
            return_trajectory=True,
        ).trajectory[N - 1]
        b = samplers.reverse_diffusion(
            data.score_fn(sde), sde, x_N, grid=grid, generator=_gen(9)
        ).x
        gaps.append((a - b).abs().max().item())
    assert gaps[1] < gaps[0] / 5


def test_bad_input():
    with pytest.raises(ValueError, match="betas"):
        ddpm.alphas_bar(torch.tensor([0.1, 1.5]))
    with pytest.raises(ValueError, match="i must lie"):
        ddpm.q_sample(
            torch.zeros(2, 2),
            0,
            ddpm.alphas_bar(ddpm.linear_betas(10)),
            torch.zeros(2, 2),
        )
    with pytest.raises(TypeError, match="VPSDE"):
        ddpm.vp_betas(make_sde("ve"), 10)
    with pytest.raises(ValueError, match="method"):
        ddpm.vp_betas(make_sde("vp"), 10, "midpoint")
    with pytest.raises(ValueError, match="variance"):
        ddpm.ancestral_sampling(
            lambda x, t: x, ddpm.linear_betas(5), torch.zeros(2, 1), variance="x"
        )
    with pytest.raises(ValueError, match="increasing"):
        ddpm.ncsn_coeffs(torch.tensor([2.0, 1.0]))
