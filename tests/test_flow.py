"""Flow matching against exact answers: the velocity-score identity, the matching SDE, the loss, the likelihood.

The exact marginal velocity of a Gaussian mixture (:func:`sdelab.flow.mixture_velocity`) is
computed by Gaussian conditioning without any score, so comparing it with the velocity built from
the exact score (:func:`sdelab.flow.velocity_fn_from_score`) checks the identity
v = (alpha'/alpha) x + sigma^2 lambda' s itself. Both are float64; the tolerance 1e-9 allows for
the division by alpha = 1e-3 near t = 1.
"""

from __future__ import annotations

import math

import pytest
import torch

from sdelab import SDE_NAMES, make_sde
from sdelab.flow import (
    Interpolant,
    InterpolantSDE,
    conditional_velocity,
    flow_matching_loss,
    interpolant_from_sde,
    interpolate,
    linear_interpolant,
    mixture_velocity,
    score_fn_from_velocity,
    trig_interpolant,
    velocity_fn_from_score,
)
from sdelab.likelihood import log_likelihood
from sdelab.samplers import probability_flow_euler_step
from sdelab.toy import ring_mixture

pytestmark = pytest.mark.usefixtures("one_thread")
f64 = torch.float64
TIMES = (0.001, 0.2, 0.5, 0.9, 0.999)


def _mix():
    return ring_mixture(4, radius=1.5, std=0.4)


def _points(n=64, seed=0):
    return 2.0 * torch.randn(
        n, 2, dtype=f64, generator=torch.Generator().manual_seed(seed)
    )


def _paths():
    paths = [linear_interpolant(), trig_interpolant()]
    return paths + [interpolant_from_sde(make_sde(name)) for name in SDE_NAMES]


@pytest.mark.parametrize("path", _paths(), ids=lambda p: p.name)
def test_velocity_from_the_exact_score_is_the_exact_marginal_velocity(path):
    mix, x = _mix(), _points()
    sde = InterpolantSDE(path)
    v_exact = mixture_velocity(mix, path)
    v_score = velocity_fn_from_score(mix.score_fn(sde), path)
    for t in TIMES[:-1] if path.name not in ("linear", "trig") else TIMES:
        assert torch.allclose(v_score(x, t), v_exact(x, t), rtol=1e-9, atol=1e-9), (
            path.name,
            t,
        )


@pytest.mark.parametrize(
    "path", [linear_interpolant(), trig_interpolant()], ids=lambda p: p.name
)
def test_the_pf_ode_drift_of_the_matching_sde_is_the_velocity(path):
    mix, x = _mix(), _points()
    sde = InterpolantSDE(path)
    for t in TIMES:
        tt = torch.full((x.shape[0],), t, dtype=f64)
        drift = sde.reverse(mix.score_fn(sde), probability_flow=True).drift(x, tt)
        assert torch.allclose(
            drift, mixture_velocity(mix, path)(x, t), rtol=1e-9, atol=1e-9
        ), t


@pytest.mark.parametrize("name", SDE_NAMES)
def test_a_library_sdes_interpolant_gives_its_own_pf_ode(name):
    sde, mix, x = make_sde(name), _mix(), _points()
    path = interpolant_from_sde(sde)
    for t in (0.05, 0.5, 0.95):
        tt = torch.full((x.shape[0],), t, dtype=f64)
        pf = sde.reverse(mix.score_fn(sde), probability_flow=True).drift(x, tt)
        assert torch.allclose(
            velocity_fn_from_score(mix.score_fn(sde), path)(x, t),
            pf,
            rtol=1e-9,
            atol=1e-9,
        )


@pytest.mark.parametrize("path", _paths(), ids=lambda p: p.name)
def test_rates_are_the_derivatives_of_the_coefficients(path):
    """Central differences with h = 1e-5 are accurate to O(h^2 |alpha'''|) ~ 1e-8 (the VE sigma,
    exponential in t with rate log(5000) = 8.5, has the largest third derivative here: 1e-6).
    """
    t = torch.tensor([0.1, 0.4, 0.8], dtype=f64)
    h = 1e-5
    for coeff, rate in ((path.alpha, path.d_alpha), (path.sigma, path.d_sigma)):
        fd = (coeff(t + h) - coeff(t - h)) / (2 * h)
        assert torch.allclose(rate(t), fd, rtol=1e-6, atol=1e-6), path.name


def test_conditional_velocity_is_the_time_derivative_of_the_interpolant():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(5, 3, dtype=f64, generator=g), torch.randn(
        5, 3, dtype=f64, generator=g
    )
    t = torch.rand(5, dtype=f64, generator=g).requires_grad_(True)
    for path in (linear_interpolant(), trig_interpolant()):
        xt = interpolate(path, x0, x1, t)
        rows = [
            torch.autograd.grad(xt[:, j].sum(), t, retain_graph=True)[0]
            for j in range(3)
        ]
        assert torch.allclose(
            torch.stack(rows, 1), conditional_velocity(path, x0, x1, t.detach())
        )


def test_score_and_velocity_conversions_invert_each_other():
    mix, x = _mix(), _points()
    path = linear_interpolant()
    sde = InterpolantSDE(path)
    score = score_fn_from_velocity(
        velocity_fn_from_score(mix.score_fn(sde), path), path
    )
    for t in TIMES:
        assert torch.allclose(
            score(x, t), mix.score_fn(sde)(x, t), rtol=1e-8, atol=1e-8
        )


def test_the_flow_matching_loss_excess_is_the_distance_to_the_marginal_velocity():
    """With common (t, x1), L(v* + c) - L(v*) = |c|^2/D + 2 c . mean(v* - u)/D; the cross term has
    mean zero (v* = E[u | x_t]), and its standard error here is below 0.01 at n = 40000, so the
    difference must equal |c|^2/D = 0.25 within 0.05."""
    mix, path = _mix(), linear_interpolant()
    n = 40000
    g = torch.Generator().manual_seed(2)
    x0 = mix.sample(n, generator=g)
    t = torch.rand(n, dtype=f64, generator=g) * 0.998 + 0.001
    x1 = torch.randn(n, 2, dtype=f64, generator=g)
    v_star = mixture_velocity(mix, path)
    c = torch.tensor([0.5, -0.5], dtype=f64)
    l_star = flow_matching_loss(v_star, path, x0, t=t, x1=x1)
    l_off = flow_matching_loss(lambda x, tt: v_star(x, tt) + c, path, x0, t=t, x1=x1)
    assert abs((l_off - l_star).item() - 0.25) < 0.05
    per = flow_matching_loss(v_star, path, x0[:7], generator=g, reduction="none")
    assert per.shape == (7,)


def test_log_likelihood_of_the_exact_flow_matches_the_exact_density():
    """sdelab's PF-ODE likelihood with the score built from the exact velocity. The remaining
    error is the prior mismatch alpha(T) = 1e-3 at T = 0.999 (the data, |x0| ~ 1.5, shifted by
    1.5e-3 against unit noise: ~1e-3 nats) and the ODE tolerance 1e-6: tolerance 1e-2 nats.
    """
    mix, path = _mix(), linear_interpolant()
    sde = InterpolantSDE(path)
    x = mix.sample(16, generator=torch.Generator().manual_seed(4))
    score = score_fn_from_velocity(mixture_velocity(mix, path), path)
    res = log_likelihood(score, sde, x, rtol=1e-6, atol=1e-6)
    exact = mix.log_prob_t(x, sde.eps, sde)
    assert (res.logp - exact).abs().max() < 1e-2


def test_an_euler_step_of_the_pf_ode_is_an_euler_step_of_the_flow():
    mix, path, x = _mix(), linear_interpolant(), _points()
    sde = InterpolantSDE(path)
    v = mixture_velocity(mix, path)
    got = probability_flow_euler_step(score_fn_from_velocity(v, path), sde, x, 0.7, 0.6)
    assert torch.allclose(got, x - 0.1 * v(x, 0.7), rtol=1e-10, atol=1e-10)


def test_interpolant_sde_half_log_snr_inverse():
    for path in (linear_interpolant(), trig_interpolant()):
        sde = InterpolantSDE(path)
        lam = torch.tensor([4.0, 0.5, -2.0, -6.0], dtype=f64)
        assert torch.allclose(
            sde.half_log_snr(sde.t_from_half_log_snr(lam)), lam, atol=1e-10
        )
    sde = InterpolantSDE(linear_interpolant())
    assert math.isclose(sde.prior_std, 0.999)
    assert torch.allclose(
        sde.t_from_half_log_snr(torch.tensor([0.0], dtype=f64)),
        torch.tensor([0.5], dtype=f64),
    )


def test_bad_arguments_are_named():
    x = torch.zeros(3, 2)
    path = linear_interpolant()
    with pytest.raises(TypeError, match="path must be an sdelab.flow.Interpolant"):
        interpolate("linear", x, x, 0.5)
    with pytest.raises(ValueError, match="x1 must have the shape of x0"):
        conditional_velocity(path, x, torch.zeros(3, 3), 0.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        flow_matching_loss(lambda x, t: x, path, x, t=torch.full((3,), 1.5))
    with pytest.raises(ValueError, match="need 0 < eps < T <= 1"):
        InterpolantSDE(path, T=1.5)
    with pytest.raises(TypeError, match="sde must be an sdelab SDE"):
        interpolant_from_sde("vp")
    assert isinstance(path, Interpolant)
