"""Checks of the chapter 5 exercises, against sdelab.likelihood / sdelab.sde and closed forms."""

import math

import torch

from sdelab import make_sde
from sdelab.likelihood import bpd_from_logp, draw_probes, exact_divergence, hutchinson_divergence

from ..registry import exercise

f64 = torch.float64


@exercise("ch05", "5.1")
def hutchinson_divergence_estimate(impl):
    a = torch.randn(3, 3, dtype=f64, generator=torch.Generator().manual_seed(0))

    def fn(x):  # F(x) = tanh(x) A^T, an x-dependent, non-symmetric Jacobian
        return torch.tanh(x) @ a.T

    x = torch.randn(4, 3, dtype=f64, generator=torch.Generator().manual_seed(1))
    probes = draw_probes(3, x, "rademacher", torch.Generator().manual_seed(2))
    out = impl(fn, x, probes)
    assert out.shape == (4,), f"one value per sample expected, shape (4,); got {tuple(out.shape)}"
    ref = hutchinson_divergence(fn, x, probes)
    assert torch.allclose(out.to(f64), ref, rtol=1e-10, atol=1e-12), \
        f"estimates {out.tolist()} differ from (1/n) sum eps^T J eps = {ref.tolist()}"
    # with the full basis of e_i e_i^T as "probes" the estimate is the exact trace
    basis = torch.eye(3, dtype=f64)[:, None, :].expand(3, 4, 3).contiguous() * math.sqrt(3)
    assert torch.allclose(impl(fn, x, basis).to(f64), exact_divergence(fn, x), rtol=1e-10, atol=1e-12), \
        "probes sqrt(3) e_i (i = 1..3) must give the exact divergence: average over probes, do not sum"


@exercise("ch05", "5.2")
def bits_per_dim_from_nll(impl):
    d = 784
    uniform = torch.tensor([d * math.log(2)], dtype=f64)  # uniform density on [-1, 1]^D
    got = float(impl(uniform, d))
    assert abs(got - 8.0) < 1e-9, f"a uniform model on [-1, 1]^D must cost exactly 8 bits/dim, got {got}"
    nll = torch.tensor([-1500.0, 0.0, 2500.0], dtype=f64)
    ref = bpd_from_logp(-nll, d)
    out = torch.as_tensor(impl(nll, d), dtype=f64)
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12), f"got {out.tolist()}, expected {ref.tolist()}"


@exercise("ch05", "5.3")
def gaussian_prior_logp(impl):
    z = torch.randn(5, 1, 4, 4, dtype=f64, generator=torch.Generator().manual_seed(3)) * 3
    for name in ("ve", "vp-linear", "subvp-cosine"):
        sde = make_sde(name)
        out = impl(z, sde.prior_std)
        assert out.shape == (5,), f"one log-density per sample expected, shape (5,); got {tuple(out.shape)}"
        ref = sde.prior_logp(z)
        assert torch.allclose(out.to(f64), ref, rtol=1e-10, atol=1e-10), \
            f"{name} (sigma_T = {sde.prior_std:g}): got {out[:2].tolist()}..., expected {ref[:2].tolist()}..."
