"""The SDE core against its closed forms: transition moments, schedules, reverse dynamics, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdelab import SDE_NAMES, make_sde, sde_from_config
from sdelab.schedules import CosineBeta, GeometricSigma, LinearBeta, make_schedule
from sdelab.sde import SubVPSDE, VESDE, VPSDE

from strategies import sdes, trailing_shapes

f64 = torch.float64


def _t(v):
    return torch.tensor(v, dtype=f64)


# ---------------------------------------------------------------------------------------------
# The closed-form kernel solves the moment ODEs of the SDE. For dx = f(t) x dt + g(t) dw the
# kernel N(alpha x0, sigma^2 I) must satisfy  d alpha/dt = f alpha  and  d sigma^2/dt = 2 f sigma^2
# + g^2 with alpha(0) = 1, sigma(0) = 0. This ties drift_coeff, diffusion_coeff and marginal_coeffs
# together exactly (float64 autograd; 1e-8 relative is float64 round-off on these smooth functions).
# ---------------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(sde=sdes(), t=st.floats(0.01, 1.0))
def test_kernel_solves_moment_odes(sde, t):
    tt = _t([t]).requires_grad_(True)
    alpha, sigma = sde.marginal_coeffs(tt)
    alpha = alpha + 0 * tt  # VE's alpha = 1 is constant in t
    (da,) = torch.autograd.grad(alpha.sum(), tt, retain_graph=True)
    (dv,) = torch.autograd.grad((sigma**2).sum(), tt)
    f, g = sde.drift_coeff(tt.detach()), sde.diffusion_coeff(tt.detach())
    torch.testing.assert_close(da, f * alpha.detach(), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(dv, 2 * f * sigma.detach() ** 2 + g**2, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", SDE_NAMES)
def test_kernel_initial_condition(name):
    alpha, sigma = make_sde(name).marginal_coeffs(_t([0.0]))
    assert alpha.item() == 1.0
    assert abs(sigma.item()) < 1e-7


# ---------------------------------------------------------------------------------------------
# Simulating the forward SDE. Euler-Maruyama with step h has, for this linear SDE, exactly
# computable moments: m_{k+1} = (1 + f_k h) m_k and v_{k+1} = (1 + f_k h)^2 v_k + g_k^2 h. So:
#  (1) the scheme's own moments converge to the closed form at weak order 1 (deterministic check);
#  (2) N simulated paths match the closed form within z standard errors plus the scheme's bias
#      |EM moment - closed form| from (1). Standard errors: mean sigma/sqrt(N), variance
#      sigma^2 sqrt(2/(N-1)) (Gaussian samples); z = 5 makes a false alarm < 1e-6 per check.
# ---------------------------------------------------------------------------------------------
def _em_moments(sde, x0, t, steps):
    ts = torch.linspace(0.0, t, steps + 1, dtype=f64)
    h = t / steps
    m, v = x0.clone(), torch.zeros((), dtype=f64)
    for k in range(steps):
        f, g = sde.drift_coeff(ts[k]), sde.diffusion_coeff(ts[k])
        m, v = (1 + f * h) * m, (1 + f * h) ** 2 * v + g**2 * h
    return m, v


@pytest.mark.parametrize("name", SDE_NAMES)
def test_euler_maruyama_moments_converge_at_order_one(name):
    sde = make_sde(name)
    x0 = _t([0.7])
    alpha, sigma = sde.marginal_coeffs(_t([0.8]))
    errs = []
    for steps in (400, 800, 1600):
        m, v = _em_moments(sde, x0, 0.8, steps)
        errs.append(abs(m - alpha * x0).item() + abs(v - sigma**2).item() / sigma.item() ** 2)
    # weak order 1: halving the step halves the error (ratio 2 up to O(h) corrections)
    assert 1.8 < errs[0] / errs[1] < 2.2 and 1.8 < errs[1] / errs[2] < 2.2, errs


@settings(max_examples=15, deadline=None)
@given(sde=sdes(), t=st.floats(0.05, 1.0), shape=trailing_shapes, seed=st.integers(0, 2**31 - 1))
def test_simulated_forward_sde_matches_kernel(sde, t, shape, seed):
    n, steps = 4000, 500
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand((1, *shape), generator=gen, dtype=f64) * 2 - 1
    x = x0.expand(n, *shape).clone()
    h = t / steps
    for k in range(steps):
        tk = k * h
        x = x + sde.drift(x, tk) * h + sde.diffusion(tk) * math.sqrt(h) * torch.randn(x.shape, generator=gen, dtype=f64)
    mean, std = sde.marginal(x0, t)
    m_em, v_em = _em_moments(sde, x0[0], t, steps)
    var = std.item() ** 2
    z = 5.0
    tol_mean = z * math.sqrt(var / n) + (m_em - mean[0]).abs()
    tol_var = z * var * math.sqrt(2 / (n - 1)) + abs(v_em.item() - var)
    assert ((x.mean(0) - mean[0]).abs() <= tol_mean).all()
    assert ((x.var(0) - var).abs() <= tol_var).all()


# ---------------------------------------------------------------------------------------------
# Variance relations between the SDEs (Song et al. Sec. 3.4).
# ---------------------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(t=st.floats(0.0, 1.0), schedule=st.sampled_from(["linear", "cosine"]))
def test_vp_preserves_unit_variance_and_subvp_is_below(t, schedule):
    vp, sub = VPSDE(schedule), SubVPSDE(schedule)
    a, s = vp.marginal_coeffs(_t([t]))
    # unit-variance data: Var x_t = alpha^2 * 1 + sigma^2
    torch.testing.assert_close(a**2 + s**2, _t([1.0]), rtol=0, atol=1e-12)
    _, s_sub = sub.marginal_coeffs(_t([t]))
    assert (s_sub**2 <= s**2 + 1e-15).all()


@settings(max_examples=20, deadline=None)
@given(t=st.floats(0.0, 1.0), sigma_min=st.floats(0.001, 1.0), ratio=st.floats(1.5, 1e4))
def test_ve_variance_is_sigma_squared_difference(t, sigma_min, ratio):
    sde = VESDE(sigma_min, sigma_min * ratio)
    _, s = sde.marginal_coeffs(_t([t]))
    sig = sde.sigmas.sigma(_t([t]))
    torch.testing.assert_close(s**2, sig**2 - sigma_min**2, rtol=1e-9, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Schedules: closed-form integrals, their inverses, and the cosine endpoints.
# ---------------------------------------------------------------------------------------------
schedules = st.one_of(
    st.builds(LinearBeta, beta_min=st.floats(0.01, 2.0), beta_max=st.floats(2.0, 30.0)),
    st.builds(CosineBeta, s=st.floats(0.001, 0.05), beta_max=st.floats(5.0, 100.0)),
)


@settings(max_examples=30, deadline=None)
@given(schedule=schedules, t=st.floats(0.0, 1.0))
def test_schedule_integral_differentiates_to_beta(schedule, t):
    tt = _t([t]).requires_grad_(True)
    (d,) = torch.autograd.grad(schedule.integral(tt).sum(), tt)
    torch.testing.assert_close(d, schedule.beta(tt.detach()), rtol=1e-9, atol=1e-12)
    assert abs(schedule.integral(_t([0.0])).item()) < 1e-15


@settings(max_examples=30, deadline=None)
@given(schedule=schedules, t=st.floats(0.0, 1.0))
def test_schedule_inverse_integral(schedule, t):
    b = schedule.integral(_t([t]))
    torch.testing.assert_close(schedule.inverse_integral(b), _t([t]), rtol=1e-7, atol=1e-7)


@settings(max_examples=20, deadline=None)
@given(s=st.floats(0.001, 0.05), beta_max=st.floats(5.0, 100.0), t=st.floats(0.0, 1.0))
def test_cosine_schedule_endpoints_and_clip(s, beta_max, t):
    sched = CosineBeta(s=s, beta_max=beta_max)
    phi = lambda u: (u + s) / (1 + s) * math.pi / 2  # noqa: E731
    # beta(0) = pi/(1+s) tan(phi(0)); alpha_bar(0) = 1
    assert sched.beta(_t([0.0])).item() == pytest.approx(math.pi / (1 + s) * math.tan(phi(0)), rel=1e-12)
    # below the clip time the schedule is Nichol & Dhariwal's alpha_bar = f(t)/f(0)
    if t <= sched.t_c:
        ab = math.cos(phi(t)) ** 2 / math.cos(phi(0)) ** 2
        assert math.exp(-sched.integral(_t([t])).item()) == pytest.approx(ab, rel=1e-9)
    # the rate is continuous at the clip time and equals beta_max from there on
    eps = 1e-9
    assert sched.beta(_t([sched.t_c - eps])).item() == pytest.approx(beta_max, rel=1e-6)
    if sched.t_c < 1:
        assert sched.beta(_t([1.0])).item() == beta_max


@settings(max_examples=20, deadline=None)
@given(sigma_min=st.floats(0.001, 1.0), ratio=st.floats(1.5, 1e4), t=st.floats(0.0, 1.0))
def test_geometric_sigma(sigma_min, ratio, t):
    sig = GeometricSigma(sigma_min, sigma_min * ratio)
    assert sig.sigma(_t([0.0])).item() == pytest.approx(sigma_min)
    assert sig.sigma(_t([1.0])).item() == pytest.approx(sigma_min * ratio)
    tt = _t([t]).requires_grad_(True)
    (d,) = torch.autograd.grad((sig.sigma(tt) ** 2).sum(), tt)
    torch.testing.assert_close(d, sig.dsigma2_dt(tt.detach()), rtol=1e-10, atol=0)
    torch.testing.assert_close(sig.inverse_sigma(sig.sigma(_t([t]))), _t([t]), rtol=1e-9, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(sde=sdes(), t=st.floats(0.001, 1.0))
def test_log_snr_inverse(sde, t):
    lam = sde.half_log_snr(_t([t]))
    torch.testing.assert_close(sde.t_from_half_log_snr(lam), _t([t]), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Shapes, prior, reverse dynamics.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("shape", [(5, 2), (5, 1, 4, 4), (5, 3, 2, 2)])
def test_any_trailing_shape_and_float_or_tensor_time(name, shape):
    sde = make_sde(name)
    x = torch.randn(shape, dtype=f64)
    t_vec = torch.full((shape[0],), 0.3, dtype=f64)
    assert sde.drift(x, 0.3).shape == shape
    torch.testing.assert_close(sde.drift(x, 0.3), sde.drift(x, t_vec))
    mean, std = sde.marginal(x, t_vec)
    assert mean.shape == shape and std.shape == (shape[0],)
    xt, z, sigma = sde.perturb(x, 0.3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(xt, mean + sigma.reshape(-1, *[1] * (len(shape) - 1)) * z)


@pytest.mark.parametrize("name", SDE_NAMES)
def test_prior_sample_and_logp(name):
    sde = make_sde(name)
    gen = torch.Generator().manual_seed(0)
    z = sde.prior_sample((20000, 3), generator=gen, dtype=f64)
    # sample std within 5 standard errors (std of a sample std ~ sigma / sqrt(2n))
    assert abs(z.std().item() - sde.prior_std) < 5 * sde.prior_std / math.sqrt(2 * z.numel())
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z[:10]).sum(1)
    torch.testing.assert_close(sde.prior_logp(z[:10]), ref)


@pytest.mark.parametrize("name", SDE_NAMES)
def test_reverse_sde_and_probability_flow_drifts(name):
    sde = make_sde(name)
    x = torch.randn(4, 2, dtype=f64)
    score = lambda x, t: -x  # noqa: E731  (score of N(0, I))
    t = 0.4
    f, g = sde.drift(x, t), sde.diffusion(torch.tensor(t, dtype=f64))
    rev, ode = sde.reverse(score), sde.reverse(score, probability_flow=True)
    torch.testing.assert_close(rev.drift(x, t), f - g**2 * (-x))
    torch.testing.assert_close(ode.drift(x, t), f - 0.5 * g**2 * (-x))
    torch.testing.assert_close(rev.diffusion(t), sde.diffusion(t))
    assert ode.diffusion(t).abs().max().item() == 0.0


@pytest.mark.parametrize("name", SDE_NAMES)
def test_config_roundtrip(name):
    sde = make_sde(name)
    again = sde_from_config(sde.config())
    assert again.config() == sde.config()
    t = _t([0.1, 0.7])
    torch.testing.assert_close(again.marginal_coeffs(t), sde.marginal_coeffs(t))


@pytest.mark.parametrize("name", SDE_NAMES)
def test_no_nan_or_inf_on_the_whole_interval(name):
    sde = make_sde(name)
    t = torch.linspace(0, 1, 1001)
    x = torch.randn(1001, 3)
    a, s = sde.marginal_coeffs(t)
    vals = [a, s, sde.diffusion(t), sde.drift(x, t), sde.half_log_snr(t[1:]), sde.reverse(lambda x, t: -x).drift(x[1:], t[1:].clamp(min=sde.eps))]
    assert all(torch.isfinite(v).all() for v in vals)


# ---------------------------------------------------------------------------------------------
# Bad input gets a clear error naming the argument.
# ---------------------------------------------------------------------------------------------
def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="unknown SDE name 'vpp'"):
        make_sde("vpp")
    with pytest.raises(ValueError, match="schedule must be one of"):
        VPSDE(schedule="quadratic")
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_schedule("sigmoid")
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max"):
        VESDE(sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="beta_min must be <= beta_max"):
        VPSDE(beta_min=30.0, beta_max=20.0)
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0 and < 1, got 0"):
        VPSDE(eps=0.0)
    sde = make_sde("vp-linear")
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        sde.drift(x, 1.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        sde.marginal(x, -0.1)
    with pytest.raises(ValueError, match=r"t must lie in \[0.001, 1\]"):
        sde.reverse(lambda x, t: -x).drift(x, 0.0)
    with pytest.raises(ValueError, match=r"t must lie in \[0.001, 1\]"):
        sde.perturb(x, 1e-4)
    with pytest.raises(ValueError, match=r"t must be a float or have shape \(B,\) = \(3,\)"):
        sde.drift(x, torch.rand(4))
    with pytest.raises(ValueError, match="x0 contains 1 NaN"):
        sde.marginal(torch.tensor([[0.0, float("nan")]]), 0.5)
    with pytest.raises(ValueError, match="z contains"):
        sde.prior_logp(torch.tensor([[float("inf")]]))
    with pytest.raises(TypeError, match="score_fn must be callable"):
        sde.reverse(3.0)
    with pytest.raises(ValueError, match="shape must be"):
        sde.prior_sample((0, 2))


@pytest.mark.parametrize("make, exc, match", [
    (lambda: make_sde("vp-linear", beta_max=float("nan")), ValueError, "beta_max must be a finite number > 0, got nan"),
    (lambda: make_sde("ve", sigma_max=float("inf")), ValueError, "sigma_max must be a finite number > 0, got inf"),
    (lambda: make_sde("ve", sigma_min=-1.0), ValueError, "sigma_min must be a finite number > 0"),
    (lambda: make_sde("subvp-cosine", s=float("nan")), ValueError, "s must be a finite number > 0"),
    (lambda: make_sde("vp-linear", eps=float("nan")), ValueError, "eps must be"),
    (lambda: make_sde("vp-linear", beta_max="20"), TypeError, r"beta_max must be a real number, got '20' \(str\)"),
    (lambda: make_sde("ve", sigma_max="50"), TypeError, "sigma_max must be a real number"),
    (lambda: make_sde("vp-linear", eps="1e-3"), TypeError, "eps must be a real number"),
    (lambda: VPSDE(beta_min=True), TypeError, "beta_min must be a real number"),
    (lambda: make_sde(3), TypeError, "name must be a string"),
])
def test_bad_parameters_are_refused(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("name", SDE_NAMES)
def test_name_is_config_name_and_config_roundtrips(name):
    sde = make_sde(name)
    assert sde.config()["name"] == sde.name == name
    assert sde_from_config(sde.config()).config() == sde.config()


def test_legacy_family_config_names_still_load():
    cfg = make_sde("subvp-cosine").config()
    legacy = {**cfg, "name": "subvp"}
    assert sde_from_config(legacy).name == "subvp-cosine"
    with pytest.raises(ValueError, match="names 'vp-linear' but its schedule is 'cosine'"):
        sde_from_config({**make_sde("vp-cosine").config(), "name": "vp-linear"})


@pytest.mark.parametrize("name", SDE_NAMES)
def test_int_seeds_match_generators(name):
    sde = make_sde(name)
    a = sde.prior_sample((3, 2), generator=5)
    b = sde.prior_sample((3, 2), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    x0 = torch.randn(3, 2)
    assert torch.equal(sde.perturb(x0, 0.5, generator=7)[0],
                       sde.perturb(x0, 0.5, generator=torch.Generator().manual_seed(7))[0])
    with pytest.raises(TypeError, match="generator must be a torch.Generator, an int seed or None"):
        sde.prior_sample((3, 2), generator="5")


@pytest.mark.parametrize("name", SDE_NAMES)
def test_coefficients_have_no_host_reads(name):
    # meta tensors hold no data: any .item()/.any()/.tolist() on them raises
    sde = make_sde(name)
    t = torch.empty(5, device="meta")
    x = torch.empty(5, 3, device="meta")
    alpha, sigma = sde.marginal_coeffs(t)
    assert alpha.device.type == sigma.device.type == "meta"
    assert sde.drift(x, t).shape == x.shape
    assert sde.diffusion(t).shape == (5,)
    assert sde.half_log_snr(t).shape == (5,)


def test_door_functions_check_tensor_times():
    sde = make_sde("vp-linear")
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"t must lie in \[0.001, 1\]; got values in \[0.0001, 0.5\]"):
        sde.perturb(x, torch.tensor([1e-4, 0.5]))
    with pytest.raises(ValueError, match="t contains NaN"):
        sde.marginal(x, torch.tensor([float("nan"), 0.5]))
