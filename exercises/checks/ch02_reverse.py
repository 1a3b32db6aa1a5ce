"""Checks of the chapter 2 exercises."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdelab import SDE_NAMES, make_sde
from sdelab.toy import gaussian

from ..registry import exercise

f64 = torch.float64


@exercise("ch02", "2.1")
def reverse_drift(impl):
    for name in SDE_NAMES:
        sde = make_sde(name)
        x = torch.randn(4, 3, dtype=f64, generator=torch.Generator().manual_seed(0))
        score = -x / 2
        out = impl(sde, score, x, 0.4)
        expected = sde.reverse(lambda x, t: -x / 2).drift(x, 0.4)
        # sde.diffusion of a float t is float32 (relative precision 6e-8), hence rtol 1e-5
        assert torch.allclose(out.to(f64), expected, rtol=1e-5, atol=1e-6), f"{name}: drift differs from f - g^2 s"


@exercise("ch02", "2.2")
def reverse_em_step(impl):
    for name in ("ve", "vp-linear", "subvp-cosine"):
        sde = make_sde(name)
        g = torch.Generator().manual_seed(1)
        x, z = torch.randn(5, 2, generator=g, dtype=f64), torch.randn(5, 2, generator=g, dtype=f64)
        score_fn = lambda x, t: -x / (1 + t[:, None])  # noqa: E731  (any smooth score will do)
        t, delta = 0.5, 0.01
        out = impl(sde, score_fn, x, t, delta, z)
        tt = torch.full((5,), t, dtype=f64)
        expected = x - sde.reverse(score_fn).drift(x, tt) * delta + sde.diffusion(torch.tensor(t, dtype=f64)) * delta**0.5 * z
        assert out.shape == x.shape, f"output shape {tuple(out.shape)} should be {tuple(x.shape)}"
        assert torch.allclose(out, expected, rtol=1e-5, atol=1e-6), f"{name}: the step differs from the reverse Euler-Maruyama update"


@exercise("ch02", "2.3")
def gaussian_score(impl):
    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(m=st.floats(-3, 3), s2=st.floats(0.01, 4), t=st.floats(0, 1), name=st.sampled_from(SDE_NAMES))
    def prop(m, s2, t, name):
        sde = make_sde(name)
        x = torch.linspace(-5, 5, 11, dtype=f64)
        alpha, sigma = (c.item() for c in sde.marginal_coeffs(torch.tensor([t], dtype=f64)))
        ref = gaussian([m], [[s2]]).score_t(x[:, None], t, sde)[:, 0]
        out = impl(x, alpha, sigma, m, s2)
        assert torch.allclose(out, ref, rtol=1e-8, atol=1e-10), f"score at x=-5..5 is {out[:3].tolist()}..., expected {ref[:3].tolist()}..."

    prop()
