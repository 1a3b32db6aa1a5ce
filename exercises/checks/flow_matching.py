"""Checks of the flow-matching exercises, against sdelab.flow and exact answers."""

import torch

from sdelab.flow import (
    InterpolantSDE,
    flow_matching_loss,
    linear_interpolant,
    mixture_velocity,
)
from sdelab.toy import ring_mixture

from ..registry import exercise

f64 = torch.float64


@exercise("flow_matching", "1")
def linear_flow_matching_loss(impl):
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(11, 2, dtype=f64, generator=g), torch.randn(
        11, 2, dtype=f64, generator=g
    )
    t = torch.rand(11, dtype=f64, generator=g)

    def v(x, tt):
        return torch.tanh(x) * (1 + tt[:, None])

    got = impl(v, x0, x1, t)
    ref = flow_matching_loss(v, linear_interpolant(), x0, t=t, x1=x1)
    assert got.dim() == 0, f"return a scalar, got shape {tuple(got.shape)}"
    assert torch.allclose(
        got, ref, rtol=1e-10
    ), f"got {got.item():.6f}, expected {ref.item():.6f}"
    exact = impl(lambda x, tt: x1 - x0, x0, x1, t)
    assert (
        exact.abs() < 1e-12
    ), "the conditional velocity x1 - x0 itself must have zero loss"


@exercise("flow_matching", "2")
def linear_velocity_from_score(impl):
    mix = ring_mixture(4, radius=1.5, std=0.4)
    path = linear_interpolant()
    sde = InterpolantSDE(path)
    x = 2 * torch.randn(20, 2, dtype=f64, generator=torch.Generator().manual_seed(1))
    for t in (0.05, 0.5, 0.95):
        got = impl(mix.score_fn(sde)(x, t), x, t)
        ref = mixture_velocity(mix, path)(x, t)
        assert torch.allclose(
            got, ref, rtol=1e-9, atol=1e-9
        ), f"t={t}: not the exact marginal velocity of a Gaussian mixture"


@exercise("flow_matching", "3")
def euler_flow_sample(impl):
    m = torch.tensor([[1.0, -2.0]], dtype=f64)
    x1 = torch.randn(5, 2, dtype=f64, generator=torch.Generator().manual_seed(2))
    # a point mass at m: v(x, t) = (x - m)/t, and Euler lands exactly on m for any step count
    for steps in (1, 3, 10):
        got = impl(lambda x, t: (x - m) / t[:, None], x1, steps)
        assert torch.allclose(
            got, m.expand(5, 2), atol=1e-12
        ), f"steps={steps}: a point mass must be reached exactly (check the times t = 1, ..., h)"
    mix = ring_mixture(4, radius=1.5, std=0.4)
    v = mixture_velocity(mix, linear_interpolant())
    x, h = x1.clone(), 1 / 7
    for i in range(7):
        x = x - h * v(x, torch.full((5,), 1 - i * h, dtype=f64))
    got = impl(v, x1, 7)
    assert torch.allclose(
        got, x, rtol=1e-10, atol=1e-10
    ), "7 Euler steps on a mixture differ"
