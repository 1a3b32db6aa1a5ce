"""The four prediction targets and EDM preconditioning, against closed forms on Gaussian mixtures.

For a mixture every posterior moment is closed-form: given component k,
x_t ~ N(a mu_k, C_k) with C_k = a^2 Sigma_k + s^2 I, and Gaussian conditioning gives
E[x0 | x, k] = mu_k + a Sigma_k C_k^{-1} r_k and E[eps | x, k] = s C_k^{-1} r_k (r_k = x - a mu_k).
So each target's optimal prediction is computed here without any score, and the library's
conversions from the exact score must reproduce it to float64 round-off (tolerance 1e-9: the
formulas divide by sigma down to 1e-2 and by alpha down to 6e-3, costing a few digits of 1e-16).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sdelab import make_sde
from sdelab.nets import input_scale
from sdelab.parametrisation import (
    TARGETS,
    convert,
    denoiser_from_score_fn,
    edm_denoiser,
    edm_loss,
    edm_loss_weight,
    edm_scalings,
    prediction_fn,
    score_fn_from_denoiser,
    score_fn_from_prediction,
    x0_loss_weight,
)
from sdelab.toy import gaussian, ring_mixture

pytestmark = pytest.mark.usefixtures("one_thread")
f64 = torch.float64
SDES = ("ve", "vp-linear", "subvp-cosine")
TIMES = (0.01, 0.3, 0.9)


def _mixture():
    mix = ring_mixture(4, radius=1.5, std=0.4)
    return mix


def _points(n=64, seed=0):
    return 2.0 * torch.randn(
        n, 2, dtype=f64, generator=torch.Generator().manual_seed(seed)
    )


def closed_form_targets(mix, x, alpha, sigma):
    """E[eps|x], E[x0|x], E[v|x] and the score of the mixture at x_t, by Gaussian conditioning."""
    eye = torch.eye(mix.dim, dtype=f64)
    cov = alpha**2 * mix.covs + sigma**2 * eye  # (K, d, d)
    r = x[:, None, :] - alpha * mix.means  # (B, K, d)
    sol = torch.linalg.solve(cov, r.unsqueeze(-1)).squeeze(-1)
    log_n = -0.5 * (r * sol).sum(-1) - 0.5 * torch.linalg.slogdet(cov)[1]
    w = torch.softmax(torch.log(mix.weights) + log_n, -1)[..., None]
    e_x0 = (w * (mix.means + alpha * torch.einsum("kij,bkj->bki", mix.covs, sol))).sum(
        1
    )
    e_eps = (w * sigma * sol).sum(1)
    return {
        "eps": e_eps,
        "x0": e_x0,
        "v": alpha * e_eps - sigma * e_x0,
        "score": -(w * sol).sum(1),
    }


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("t", TIMES)
def test_every_target_from_the_exact_score_matches_its_closed_form(name, t):
    sde, mix, x = make_sde(name), _mixture(), _points()
    alpha, sigma = (c.item() for c in sde.marginal_coeffs(torch.tensor([t], dtype=f64)))
    ref = closed_form_targets(mix, x, alpha, sigma)
    score_fn = mix.score_fn(sde)
    assert torch.allclose(score_fn(x, t), ref["score"], rtol=1e-9, atol=1e-9)
    for target in ("eps", "x0", "v"):
        got = prediction_fn(score_fn, sde, target)(x, t)
        assert torch.allclose(got, ref[target], rtol=1e-9, atol=1e-9), (name, t, target)
        back = score_fn_from_prediction(
            prediction_fn(score_fn, sde, target), sde, target
        )(x, t)
        assert torch.allclose(back, ref["score"], rtol=1e-9, atol=1e-9), (
            name,
            t,
            target,
        )


@pytest.mark.parametrize("source,target", list(itertools.permutations(TARGETS, 2)))
def test_convert_is_consistent_for_any_alpha_sigma(source, target):
    """Build all four targets from one (x0, eps) pair: convert must map each to each, exactly."""
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(8, 3, dtype=f64, generator=g), torch.randn(
        8, 3, dtype=f64, generator=g
    )
    alpha = (
        torch.rand(8, dtype=f64, generator=g) + 0.1
    )  # not VP: alpha^2 + sigma^2 != 1
    sigma = 3 * torch.rand(8, dtype=f64, generator=g) + 0.05
    a, s = alpha[:, None], sigma[:, None]
    x = a * x0 + s * eps
    values = {"eps": eps, "x0": x0, "v": a * eps - s * x0, "score": -eps / s}
    got = convert(values[source], x, alpha, sigma, source=source, target=target)
    assert torch.allclose(got, values[target], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("target", TARGETS)
def test_x0_loss_weight_turns_each_squared_error_into_a_denoising_error(target):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 2, dtype=f64, generator=g)
    x0_true, x0_pred = torch.randn(16, 2, dtype=f64, generator=g), torch.randn(
        16, 2, dtype=f64, generator=g
    )
    for alpha, sigma in ((0.9, 0.2), (1.0, 7.0), (0.05, 0.998)):
        y_true = convert(x0_true, x, alpha, sigma, source="x0", target=target)
        y_pred = convert(x0_pred, x, alpha, sigma, source="x0", target=target)
        lhs = (y_pred - y_true).pow(2).sum(1)
        rhs = x0_loss_weight(target, alpha, sigma) * (x0_pred - x0_true).pow(2).sum(1)
        assert torch.allclose(lhs, rhs, rtol=1e-10), (target, alpha, sigma)


def test_edm_scalings_match_table_1_and_give_a_unit_variance_target():
    sd = 0.5
    sigma = torch.logspace(-3, 2, 11, dtype=f64)
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma, sd)
    assert torch.allclose(c_skip, sd**2 / (sigma**2 + sd**2))
    assert torch.allclose(c_out, sigma * sd / (sigma**2 + sd**2).sqrt())
    assert torch.allclose(c_in, 1 / (sigma**2 + sd**2).sqrt())
    assert torch.allclose(c_noise, sigma.log() / 4)
    # the network's input c_in (x0 + sigma n) and its target (x0 - c_skip x)/c_out both have unit
    # variance for data of variance sd^2 (Karras et al. App. B.6), and lambda c_out^2 = 1
    assert torch.allclose(c_in**2 * (sd**2 + sigma**2), torch.ones_like(sigma))
    target_var = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2) / c_out**2
    assert torch.allclose(target_var, torch.ones_like(sigma))
    assert torch.allclose(edm_loss_weight(sigma, sd) * c_out**2, torch.ones_like(sigma))


@pytest.mark.parametrize("name", SDES)
def test_a_zero_network_is_the_exact_edm_denoiser_of_a_gaussian(name):
    """For data N(0, sd^2 I) the optimal denoiser is c_skip x: F = 0 must give the exact score."""
    sd, sde = 0.7, make_sde(name)
    data = gaussian(torch.zeros(2, dtype=f64), sd**2 * torch.eye(2, dtype=f64))
    denoiser = edm_denoiser(lambda x, c_noise: torch.zeros_like(x), sigma_data=sd)
    score_fn = score_fn_from_denoiser(denoiser, sde)
    x = _points()
    for t in TIMES:
        assert torch.allclose(
            score_fn(x, t), data.score_fn(sde)(x, t), rtol=1e-9, atol=1e-9
        )


@pytest.mark.parametrize("name", SDES)
def test_denoiser_and_score_round_trip(name):
    sde, mix, x = make_sde(name), _mixture(), _points()
    denoiser = denoiser_from_score_fn(mix.score_fn(sde), sde)
    for t in TIMES:
        alpha, sigma = (
            c.item() for c in sde.marginal_coeffs(torch.tensor([t], dtype=f64))
        )
        ref = closed_form_targets(mix, alpha * x, alpha, sigma)["x0"]
        # float64 bisection/closed-form inverses of sigma/alpha -> t are exact to ~1e-12
        assert torch.allclose(denoiser(x, sigma / alpha), ref, rtol=1e-7, atol=1e-7)
        back = score_fn_from_denoiser(denoiser, sde)(x, t)
        assert torch.allclose(back, mix.score_fn(sde)(x, t), rtol=1e-6, atol=1e-6)


def test_edm_loss_of_the_optimal_denoiser_is_one_at_every_noise_level():
    """lambda(sigma) times the posterior variance sigma^2 sd^2/(sigma^2 + sd^2) of N(0, sd^2) data is 1.

    Per sample the loss is chi^2_D / D (D = 2), so a mean over N samples has standard deviation
    sqrt(2 / (D N)) = 0.0071 at N = 20000; the tolerance is five of those.
    """
    sd, n = 0.5, 20000
    g = torch.Generator().manual_seed(3)
    x0 = sd * torch.randn(n, 2, dtype=f64, generator=g)
    denoiser = edm_denoiser(lambda x, c_noise: torch.zeros_like(x), sigma_data=sd)
    for sigma in (0.01, 0.5, 20.0):
        loss = edm_loss(
            denoiser,
            x0,
            sigma_data=sd,
            sigma=torch.full((n,), sigma, dtype=f64),
            generator=g,
        )
        assert abs(loss.item() - 1) < 5 * math.sqrt(2 / (2 * n)), (sigma, loss.item())
    per_sample = edm_loss(
        denoiser, x0[:5], sigma_data=sd, generator=g, reduction="none"
    )
    assert per_sample.shape == (5,)


def test_the_book_networks_input_scale_is_edm_c_in_with_unit_data_scale():
    """sdelab.nets scales x_t by 1/sqrt(alpha^2 + sigma^2): EDM's c_in(sigma/alpha) at sd = 1, on x_t/alpha."""
    for name in SDES:
        sde = make_sde(name)
        t = torch.tensor(TIMES, dtype=f64)
        alpha, sigma = sde.marginal_coeffs(t)
        c_in = edm_scalings(sigma / alpha, sigma_data=1.0)[2]
        assert torch.allclose(input_scale(sde, t), c_in / alpha, rtol=1e-12)


def test_bad_arguments_are_named():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="source must be one of"):
        convert(x, x, 1.0, 1.0, source="noise", target="x0")
    with pytest.raises(ValueError, match="target must be one of"):
        prediction_fn(lambda x, t: x, make_sde("ve"), "velocity")
    with pytest.raises(ValueError, match="pred must have the shape"):
        convert(torch.zeros(3, 1), x, 1.0, 1.0, source="eps", target="x0")
    with pytest.raises(ValueError, match="sigma must be a float or have shape"):
        convert(x, x, 1.0, torch.ones(4), source="eps", target="x0")
    with pytest.raises(ValueError, match="sigma_data must be a positive number"):
        edm_scalings(torch.ones(2), sigma_data=0.0)
    with pytest.raises(TypeError, match="net must be callable"):
        edm_denoiser(3)
    with pytest.raises(ValueError, match="reduction"):
        edm_loss(lambda x, s: x, x, reduction="sum")
