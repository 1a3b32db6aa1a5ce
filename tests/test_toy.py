"""Exact Gaussian-mixture marginals and scores under every SDE: the project's ground truth."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdelab import SDE_NAMES, make_sde
from sdelab.toy import DATASETS_2D, GaussianMixture, gaussian, grid_mixture, ring_mixture

from strategies import sdes

f64 = torch.float64


@st.composite
def mixtures(draw):
    """A random mixture: K components in d dimensions, with full, diagonal or isotropic covariances."""
    k = draw(st.integers(1, 4))
    d = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["full", "diag", "iso"]))
    g = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(k, d, generator=g, dtype=f64)
    weights = torch.rand(k, generator=g, dtype=f64) + 0.1
    if kind == "full":
        a = torch.randn(k, d, d, generator=g, dtype=f64)
        covs = a @ a.transpose(1, 2) / d + 0.05 * torch.eye(d, dtype=f64)
    elif kind == "diag":
        covs = torch.rand(k, d, generator=g, dtype=f64) + 0.05
    else:
        covs = torch.rand(k, generator=g, dtype=f64) + 0.05
    return GaussianMixture(weights, means, covs)


@settings(max_examples=30, deadline=None)
@given(mix=mixtures(), sde=sdes(), t=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_exact_score_is_gradient_of_log_density(mix, sde, t, seed):
    x = mix.sample(6, torch.Generator().manual_seed(seed)) * 1.5
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob_t(x, t, sde).sum(), x)
    torch.testing.assert_close(mix.score_t(x.detach(), t, sde), grad, rtol=1e-8, atol=1e-8)


@settings(max_examples=20, deadline=None)
@given(mix=mixtures(), sde=sdes(), t=st.floats(0.0, 1.0))
def test_perturbed_density_is_the_closed_form_convolution(mix, sde, t):
    # p_t = sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I), checked with torch.distributions
    x = mix.sample(5, torch.Generator().manual_seed(1))
    a, s = (v.item() for v in sde.marginal_coeffs(torch.tensor([t], dtype=f64)))
    comps = torch.distributions.MultivariateNormal(a * mix.means, a**2 * mix.covs + s**2 * torch.eye(mix.dim, dtype=f64) + 1e-300)
    ref = torch.logsumexp(torch.log(mix.weights) + comps.log_prob(x[:, None, :]), dim=1)
    torch.testing.assert_close(mix.log_prob_t(x, t, sde), ref, rtol=1e-9, atol=1e-9)


def test_log_prob_at_time_zero_is_the_data_density():
    mix = ring_mixture()
    x = mix.sample(7, torch.Generator().manual_seed(0))
    comps = torch.distributions.MultivariateNormal(mix.means, mix.covs)
    ref = torch.logsumexp(torch.log(mix.weights) + comps.log_prob(x[:, None, :]), 1)
    torch.testing.assert_close(mix.log_prob(x), ref)
    torch.testing.assert_close(mix.log_prob_t(x, 0.0, make_sde("vp-linear")), ref)


@pytest.mark.parametrize("kind", ["full", "diag"])
def test_sample_moments(kind):
    g = torch.Generator().manual_seed(0)
    mix = GaussianMixture([0.3, 0.7], [[-2.0, 0.0, 1.0], [1.0, 1.0, -1.0]], [[1.0, 0.5, 0.2], [0.3, 0.2, 1.0]] if kind == "diag" else torch.eye(3).expand(2, 3, 3) * 0.5)
    x = mix.sample(40000, g)
    cov = mix.covariance()
    # 5 standard errors: sqrt(Var/n) for the mean
    se = torch.sqrt(torch.diagonal(cov) / x.shape[0])
    assert ((x.mean(0) - mix.mean()).abs() <= 5 * se).all()
    # covariance entries: Var(x_i x_j) <= E[x_i^2 x_j^2]; bound the s.e. by the sample fourth moments
    xc = x - x.mean(0)
    se_cov = torch.sqrt(((xc[:, :, None] * xc[:, None, :]) ** 2).mean(0) / x.shape[0])
    assert ((torch.cov(x.T) - cov).abs() <= 5 * se_cov).all()


@pytest.mark.parametrize("name", SDE_NAMES)
def test_moments_t_and_posterior(name):
    sde = make_sde(name)
    mix = GaussianMixture([0.5, 0.5], [[-3.0], [3.0]], [0.25, 0.25])
    m, c = mix.moments_t(0.5, sde)
    a, s = sde.marginal_coeffs(torch.tensor([0.5], dtype=f64))
    torch.testing.assert_close(m, torch.zeros(1, dtype=f64))
    torch.testing.assert_close(c, (a**2 * (9.0 + 0.25) + s**2).reshape(1, 1))
    post = mix.posterior_t(torch.tensor([[0.0], [5.0]], dtype=f64), 0.5, sde)
    torch.testing.assert_close(post.sum(1), torch.ones(2, dtype=f64))
    assert post[0, 0].item() == pytest.approx(0.5) and post[1, 1] > 0.5


def test_component_score_and_event_shape():
    sde = make_sde("ve")
    mix = GaussianMixture([0.5, 0.5], torch.stack([torch.zeros(4), torch.ones(4)]), [0.1, 0.2], event_shape=(1, 2, 2))
    x = mix.sample(3, torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 2, 2)
    s1 = mix.score_t(x, 0.2, sde, component=1)
    _, sig = sde.marginal_coeffs(torch.tensor([0.2], dtype=f64))
    torch.testing.assert_close(s1, -(x - 1.0) / (0.2 + sig**2))
    assert mix.score_fn(sde)(x, 0.2).shape == x.shape


def test_gaussian_helpers_and_2d_datasets():
    g = gaussian([0.0, 1.0], [[1.0, 0.2], [0.2, 2.0]])
    assert g.num_components == 1 and g.dim == 2
    assert grid_mixture(3).num_components == 9
    for name, fn in DATASETS_2D.items():
        pts = fn(500, generator=torch.Generator().manual_seed(0))
        assert pts.shape == (500, 2) and torch.isfinite(pts).all(), name
        assert 0.2 < pts.std().item() < 3.0, name


def test_mixture_errors():
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianMixture([1.0], [0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="weights must be 2 non-negative"):
        GaussianMixture([1.0, -1.0], [[0.0], [1.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="covs must have shape"):
        GaussianMixture([1.0], [[0.0, 1.0]], [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="positive semi-definite"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, -1.0]]])
    mix = ring_mixture()
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        mix.log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="x contains"):
        mix.score_t(torch.full((1, 2), math.nan), 0.5, make_sde("ve"))
    with pytest.raises(ValueError, match="component must lie in"):
        mix.score_t(torch.zeros(1, 2), 0.5, make_sde("ve"), component=8)
