"""Checks of the parametrisation exercises, against sdelab.parametrisation and closed forms."""

import torch

from sdelab.nets import MLPScoreNet
from sdelab.parametrisation import convert, edm_denoiser, edm_loss

from ..registry import exercise

f64 = torch.float64


@exercise("parametrisations", "1")
def x0_eps_from_v(impl):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, dtype=f64, generator=g), torch.randn(
        6, 3, dtype=f64, generator=g
    )
    for alpha, sigma in ((0.8, 0.6), (1.0, 5.0), (0.3, 0.2)):
        x, v = alpha * x0 + sigma * eps, alpha * eps - sigma * x0
        out = impl(v, x, alpha, sigma)
        assert isinstance(out, tuple) and len(out) == 2, "return the tuple (x0, eps)"
        got_x0, got_eps = out
        assert torch.allclose(
            got_x0, x0, atol=1e-10
        ), f"x0 wrong at alpha={alpha}, sigma={sigma} (alpha^2 + sigma^2 = {alpha**2 + sigma**2:g})"
        assert torch.allclose(
            got_eps, eps, atol=1e-10
        ), f"eps wrong at alpha={alpha}, sigma={sigma}"
        ref = convert(v, x, alpha, sigma, source="v", target="x0")
        assert torch.allclose(got_x0, ref, atol=1e-10)


@exercise("parametrisations", "2")
def preconditioned_denoiser(impl):
    torch.manual_seed(0)
    net = MLPScoreNet(dim=2, hidden=16, num_layers=2, embed_dim=8).double()
    g = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(7, 2, dtype=f64, generator=g)
    sigma = torch.exp(torch.randn(7, dtype=f64, generator=g) * 2)
    for sd in (0.5, 1.4):
        with torch.no_grad():
            got = impl(net, x, sigma, sd)
            ref = edm_denoiser(net, sd)(x, sigma)
        assert (
            got.shape == x.shape
        ), f"D must have the shape of x {tuple(x.shape)}, got {tuple(got.shape)}"
        assert torch.allclose(
            got, ref, rtol=1e-9, atol=1e-9
        ), f"sigma_data={sd}: D differs from c_skip x + c_out F(c_in x; log(sigma)/4)"
    zero = lambda z, c: torch.zeros_like(z)  # noqa: E731
    got = impl(zero, x, sigma, 0.5)
    assert torch.allclose(
        got, 0.25 / (sigma[:, None] ** 2 + 0.25) * x
    ), "with F = 0, D must be c_skip x, the exact denoiser of N(0, sd^2) data"


@exercise("parametrisations", "3")
def edm_training_loss(impl):
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(9, 2, dtype=f64, generator=g)
    sigma = torch.exp(torch.randn(9, dtype=f64, generator=g))

    def denoiser(x, s):
        return 0.5 * x + 0.1 * s[:, None]

    for sd in (0.5, 1.0):
        noise = torch.randn(
            x0.shape, dtype=f64, generator=torch.Generator().manual_seed(3)
        )
        got = impl(denoiser, x0, sigma, noise, sd)
        ref = edm_loss(
            denoiser,
            x0,
            sigma_data=sd,
            sigma=sigma,
            generator=torch.Generator().manual_seed(3),
        )
        assert got.dim() == 0, f"return a scalar, got shape {tuple(got.shape)}"
        assert torch.allclose(
            got, ref, rtol=1e-10
        ), f"sigma_data={sd}: got {got.item():.6f}, expected {ref.item():.6f}"
