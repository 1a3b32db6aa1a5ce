"""Checks of the chapter 8 exercises, against sdelab.inpainting and exact Gaussian formulas."""

import math

import torch

from sdelab import make_sde
from sdelab.inpainting import COLOR_TRANSFORM, from_decoupled, to_decoupled
from sdelab.samplers import euler_maruyama_step
from sdelab.toy import gaussian

from ..registry import exercise

f64 = torch.float64


@exercise("ch08", "8.1")
def replacement_step(impl):
    g = torch.Generator().manual_seed(0)
    gm = gaussian([0.5, -0.3, 1.0], [[1.0, 0.6, 0.2], [0.6, 1.0, 0.1], [0.2, 0.1, 0.8]])
    mask = torch.tensor([True, False, True])
    for name in ("ve", "vp-linear", "subvp-linear"):
        sde = make_sde(name)
        x, y = torch.randn(6, 3, generator=g, dtype=f64), torch.randn(6, 3, generator=g, dtype=f64)
        z, z_obs = torch.randn(6, 3, generator=g, dtype=f64), torch.randn(6, 3, generator=g, dtype=f64)
        out = impl(gm.score_fn(sde), sde, x, y, mask, 0.5, 0.45, z, z_obs)
        assert out.shape == x.shape, f"output shape {tuple(out.shape)} should be {tuple(x.shape)}"
        # the library's Euler-Maruyama step draws its noise from a generator: replay the same z
        gen = torch.Generator().manual_seed(1)
        state = gen.get_state()
        z_lib = torch.randn(6, 3, generator=gen, dtype=f64)
        gen.set_state(state)
        step = euler_maruyama_step(gm.score_fn(sde), sde, x, 0.5, 0.45, generator=gen)
        step = step + math.sqrt(0.05) * sde.diffusion(torch.tensor([0.5], dtype=f64)).item() * (z - z_lib)
        assert torch.allclose(out[:, ~mask], step[:, ~mask], rtol=1e-7, atol=1e-8), \
            f"{name}: unobserved entries differ from the Euler-Maruyama step"
        alpha, sigma = (c.item() for c in sde.marginal_coeffs(torch.tensor([0.45], dtype=f64)))
        assert torch.allclose(out[:, mask], (alpha * y + sigma * z_obs)[:, mask], rtol=1e-7, atol=1e-8), \
            f"{name}: observed entries must be alpha(t_next) y + sigma(t_next) z_obs"


@exercise("ch08", "8.2")
def gaussian_conditional(impl):
    g = torch.Generator().manual_seed(2)
    A = torch.randn(5, 5, generator=g, dtype=f64)
    cov = A @ A.T + 0.5 * torch.eye(5, dtype=f64)
    mean = torch.randn(5, generator=g, dtype=f64)
    obs = torch.tensor([True, False, False, True, True])
    y = torch.randn(3, generator=g, dtype=f64)
    mu_c, S_c = impl(mean, cov, obs, y)
    assert mu_c.shape == (2,) and S_c.shape == (2, 2), "mu_c should be (d_u,) and Sigma_c (d_u, d_u)"
    # through the precision matrix P = cov^-1: Sigma_c = P_uu^-1, mu_c = m_u - P_uu^-1 P_uo (y - m_o)
    P = torch.linalg.inv(cov)
    u = ~obs
    P_uu, P_uo = P[u][:, u], P[u][:, obs]
    assert torch.allclose(S_c, torch.linalg.inv(P_uu), rtol=1e-8, atol=1e-10), "Sigma_c differs from (P_uu)^-1"
    ref_mu = mean[u] - torch.linalg.solve(P_uu, P_uo @ (y - mean[obs]))
    assert torch.allclose(mu_c, ref_mu, rtol=1e-8, atol=1e-10), "mu_c differs from the conditional mean"
    # independent blocks: conditioning changes nothing
    cov_ind = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=f64))
    mu_i, S_i = impl(mean, cov_ind, obs, y)
    assert torch.allclose(mu_i, mean[u]) and torch.allclose(S_i, cov_ind[u][:, u]), \
        "with independent blocks the conditional is the marginal"


@exercise("ch08", "8.3")
def decoupled_score(impl):
    sde = make_sde("vp-linear")
    gm = gaussian(torch.linspace(-1, 1, 12, dtype=f64), torch.eye(12, dtype=f64) * 0.5 + 0.1, event_shape=(3, 2, 2))
    u = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(3), dtype=f64)
    t = torch.full((4,), 0.3, dtype=f64)
    out = impl(gm.score_fn(sde), COLOR_TRANSFORM)(u, t)
    ref = to_decoupled(gm.score_t(from_decoupled(u), t, sde))
    assert out.shape == u.shape, f"output shape {tuple(out.shape)} should be {tuple(u.shape)}"
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12), "differs from M^T s(M u, t)"
