"""Checks of the chapter 1 exercises, against sdelab (the reference) and closed forms."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdelab import VPSDE, make_sde
from sdelab.toy import GaussianMixture

from ..registry import exercise

f64 = torch.float64


@exercise("ch01", "1.2")
def vp_kernel(impl):
    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(t=st.floats(0.0, 1.0), beta_min=st.floats(0.01, 1.0), beta_max=st.floats(1.0, 30.0))
    def prop(t, beta_min, beta_max):
        tt = torch.tensor([t], dtype=f64)
        alpha, sigma = impl(tt, beta_min, beta_max)
        ref_a, ref_s = VPSDE(beta_min=beta_min, beta_max=beta_max).marginal_coeffs(tt)
        assert torch.allclose(alpha, ref_a, rtol=1e-9, atol=1e-12), f"alpha({t:.4g}) = {alpha.item():.6g}, expected {ref_a.item():.6g}"
        assert torch.allclose(sigma, ref_s, rtol=1e-9, atol=1e-12), f"sigma({t:.4g}) = {sigma.item():.6g}, expected {ref_s.item():.6g}"

    prop()
    # float32 at a tiny t: sigma = sqrt(1 - exp(-B)) loses its digits without expm1
    _, s = impl(torch.tensor([1e-6]), 0.1, 20.0)
    _, ref = VPSDE().marginal_coeffs(torch.tensor([1e-6], dtype=f64))
    assert abs(s.item() - ref.item()) < 1e-3 * ref.item(), (
        f"in float32, sigma(1e-6) = {s.item():.4g} but should be {ref.item():.4g}: use torch.expm1 for 1 - exp(-B)"
    )


@exercise("ch01", "1.4")
def euler_maruyama_forward_step(impl):
    for name in ("ve", "vp-linear", "subvp-cosine"):
        sde = make_sde(name)
        g = torch.Generator().manual_seed(0)
        x, z = torch.randn(5, 3, generator=g, dtype=f64), torch.randn(5, 3, generator=g, dtype=f64)
        t, h = 0.3, 1e-2
        out = impl(sde, x, t, h, z)
        f = sde.drift(x, t)
        gt = sde.diffusion(torch.tensor(t, dtype=f64))
        expected = x + f * h + gt * h**0.5 * z
        assert out.shape == x.shape, f"output shape {tuple(out.shape)} should equal x's {tuple(x.shape)}"
        assert torch.allclose(out, expected, rtol=1e-6, atol=1e-9), f"{name}: the step differs from x + f h + g sqrt(h) z"


@exercise("ch01", "1.5")
def mixture_score_1d(impl):
    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(k=st.integers(1, 4), t=st.floats(0.0, 1.0), seed=st.integers(0, 10_000), name=st.sampled_from(["ve", "vp-cosine"]))
    def prop(k, t, seed, name):
        g = torch.Generator().manual_seed(seed)
        w = torch.rand(k, generator=g, dtype=f64) + 0.1
        mu = 2 * torch.randn(k, generator=g, dtype=f64)
        v = torch.rand(k, generator=g, dtype=f64) + 0.05
        sde = make_sde(name)
        mix = GaussianMixture(w, mu[:, None], v)
        x = 3 * torch.randn(7, generator=g, dtype=f64)
        alpha, sigma = (c.item() for c in sde.marginal_coeffs(torch.tensor([t], dtype=f64)))
        out = impl(x, alpha, sigma, w / w.sum(), mu, v)
        ref = mix.score_t(x[:, None], t, sde)[:, 0]
        assert out.shape == x.shape, f"output shape {tuple(out.shape)} should be {tuple(x.shape)}"
        assert torch.allclose(out, ref, rtol=1e-7, atol=1e-9), f"score at x={x[:3].tolist()} is {out[:3].tolist()}, expected {ref[:3].tolist()}"

    prop()
