"""Checks of the chapter 4 exercises: against sdelab.samplers and against properties."""

import math

import torch

from sdelab import SDE_NAMES, make_sde
from sdelab import samplers as smp
from sdelab.toy import gaussian, ring_mixture

from ..registry import exercise

f64 = torch.float64


def _tvec(x, t):
    return torch.full((x.shape[0],), t, dtype=x.dtype)


@exercise("ch04", "4.1")
def langevin_step_size(impl):
    # 1) the library's corrector step x' = x + eps s + sqrt(2 eps) z, with eps recovered from its output
    for name in ("ve", "vp-linear", "subvp-cosine"):
        sde = make_sde(name)
        gm = ring_mixture()
        score_fn = gm.score_fn(sde)
        x = gm.sample(40, torch.Generator().manual_seed(0))
        t, t_prev, r = 0.3, 0.32, 0.16
        out = smp.langevin_step(score_fn, sde, x, t, snr=r, t_prev=t_prev, generator=torch.Generator().manual_seed(1))
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=f64)
        s = score_fn(x, _tvec(x, t))
        a = sde.marginal_coeffs(torch.tensor([t, t_prev], dtype=f64))[0]
        alpha_i = (a[1] / a[0]).item() ** 2
        eps = impl(s, z, r, alpha_i)
        assert isinstance(eps, float), f"return a Python float, got {type(eps).__name__}"
        assert torch.allclose(x + eps * s + math.sqrt(2 * eps) * z, out, rtol=1e-10, atol=1e-12), \
            f"{name}: eps = {eps:.6g} does not reproduce sdelab's corrector step (batch-mean norms?)"
    # 2) the defining property, for one sample and alpha_i = 1: |drift| / |noise| = snr
    s, z = torch.randn(1, 3, 4, dtype=f64), torch.randn(1, 3, 4, dtype=f64)
    eps = impl(s, z, 0.2)
    ratio = (eps * s).norm() / (math.sqrt(2 * eps) * z).norm()
    assert abs(ratio.item() - 0.2) < 1e-12, f"the drift should be snr times the noise in norm, got ratio {ratio.item():.6g}"


@exercise("ch04", "4.2")
def dpm_solver_1_step(impl):
    gm = gaussian([0.5, -1.0], [[0.6, 0.1], [0.1, 0.3]])
    for name in SDE_NAMES:
        sde = make_sde(name)
        score_fn = gm.score_fn(sde)
        x = 1.5 * torch.randn(6, 2, generator=torch.Generator().manual_seed(2), dtype=f64)
        for s_time, t_time in ((0.8, 0.6), (0.2, 0.5)):  # decoding and encoding
            (a_s, a_t), (sg_s, sg_t) = (c.tolist() for c in sde.marginal_coeffs(torch.tensor([s_time, t_time], dtype=f64)))
            eps_hat = -sg_s * score_fn(x, _tvec(x, s_time))
            out = impl(x, eps_hat, a_s, sg_s, a_t, sg_t)
            ref = smp.dpm_solver_step(score_fn, sde, x, s_time, t_time, order=1)
            assert out.shape == x.shape, f"output shape {tuple(out.shape)} should be {tuple(x.shape)}"
            assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12), f"{name}: step {s_time} -> {t_time} differs from DPM-Solver-1"
    # DDIM form: x_t = alpha_t x0_hat + sigma_t eps_hat with x0_hat = (x_s - sigma_s eps_hat) / alpha_s
    x, e = torch.randn(3, 5, dtype=f64), torch.randn(3, 5, dtype=f64)
    out = impl(x, e, 0.9, 0.4, 0.7, 0.7)
    assert torch.allclose(out, 0.7 * (x - 0.4 * e) / 0.9 + 0.7 * e, rtol=1e-12, atol=1e-12), "not the DDIM update"


@exercise("ch04", "4.3")
def heun_ode_step(impl):
    # 1) the library's Heun step on the probability-flow ODE
    sde = make_sde("vp-cosine")
    gm = ring_mixture()
    score_fn = gm.score_fn(sde)
    x = gm.sample(8, torch.Generator().manual_seed(3))
    calls = []

    def pf_drift(x, t):
        calls.append(t)
        f = sde.drift_coeff(torch.tensor([t], dtype=f64)).item()
        g2 = sde.diffusion_coeff(torch.tensor([t], dtype=f64)).item() ** 2
        return f * x - 0.5 * g2 * score_fn(x, _tvec(x, t))

    out = impl(pf_drift, x, 0.5, 0.45)
    assert len(calls) == 2, f"Heun evaluates the drift exactly twice per step, got {len(calls)} calls"
    assert torch.allclose(out, smp.heun_t_step(score_fn, sde, x, 0.5, 0.45), rtol=1e-10, atol=1e-12), \
        "differs from sdelab.samplers.heun_t_step"
    # 2) second order: on dx/dt = a x it reproduces 1 + ah + (ah)^2/2 exactly, in both directions
    for h in (-0.1, 0.2):
        x = torch.tensor([1.0, -2.0], dtype=f64)
        out = impl(lambda x, t: -1.5 * x, x, 0.3, 0.3 + h)
        ah = -1.5 * h
        assert torch.allclose(out, (1 + ah + ah**2 / 2) * x, rtol=1e-13), f"h = {h}: not the second-order Heun update"


@exercise("ch04", "4.4")
def tweedie_denoise(impl):
    # the exact posterior mean of Gaussian data: mu + a S (a^2 S + s^2 I)^(-1) (x_t - a mu)
    mu, S = torch.tensor([1.0, -0.5], dtype=f64), torch.tensor([[1.0, 0.2], [0.2, 0.6]], dtype=f64)
    gm = gaussian(mu, S)
    x = 2 * torch.randn(10, 2, generator=torch.Generator().manual_seed(4), dtype=f64)
    for name in SDE_NAMES:
        sde = make_sde(name)
        for t in (0.05, 0.5):
            a, s = (c.item() for c in sde.marginal_coeffs(torch.tensor([t], dtype=f64)))
            out = impl(x, gm.score_t(x, t, sde), a, s)
            post = mu + (x - a * mu) @ torch.linalg.solve(a**2 * S + s**2 * torch.eye(2, dtype=f64), a * S).T
            assert torch.allclose(out, post, rtol=1e-9, atol=1e-10), f"{name}, t = {t}: not the posterior mean E[x0 | x_t]"
