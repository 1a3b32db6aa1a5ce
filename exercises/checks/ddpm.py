"""Checks of the DDPM exercises, against sdelab (the reference) and exact properties."""

import copy

import torch

from sdelab import ddpm, make_sde, toy

from ..registry import exercise

f64 = torch.float64


@exercise("ddpm", "1")
def posterior_mean_var(impl):
    betas = ddpm.linear_betas(20, 1e-3, 0.2)
    g = torch.Generator().manual_seed(0)
    x0, xi = torch.randn(4, 3, generator=g, dtype=f64), torch.randn(
        4, 3, generator=g, dtype=f64
    )
    for i in (2, 7, 20):
        mean, var = impl(x0, xi, i, betas)
        ref_mean, ref_var = ddpm.posterior(x0, xi, i, betas)
        assert torch.allclose(
            torch.as_tensor(mean, dtype=f64), ref_mean, rtol=1e-10
        ), f"i={i}: the mean differs from sdelab.ddpm.posterior (Ho et al. eq. 7)"
        assert (
            abs(float(var) - ref_var[0].item()) < 1e-12
        ), f"i={i}: variance {float(var)} != {ref_var[0].item()}"
    mean, var = impl(x0, xi, 1, betas)
    assert (
        torch.allclose(torch.as_tensor(mean, dtype=f64), x0) and abs(float(var)) < 1e-15
    ), "at i = 1 (alpha-bar_0 = 1) the posterior is the point x0: mean x0, variance 0"


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
    ).double()


class _EpsModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], 1))


@exercise("ddpm", "2")
def ddpm_train_step(impl):
    betas = ddpm.linear_betas(100, 1e-3, 0.1)
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=f64)
    mine, ref = _EpsModel(), _EpsModel()
    opt_m = torch.optim.SGD(mine.parameters(), lr=0.1)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.1)
    g_m, g_r = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    for step in range(2):  # two steps: forgotten zero_grad() accumulates gradients
        loss = impl(mine, opt_m, x0, betas, g_m)
        opt_r.zero_grad()
        ref_loss = ddpm.ddpm_loss(ref, x0, betas, generator=g_r)
        ref_loss.backward()
        opt_r.step()
        assert isinstance(
            loss, float
        ), f"return the loss as a float (loss.item()), got {type(loss).__name__}"
        assert abs(loss - ref_loss.item()) < 1e-10, (
            f"step {step}: loss {loss:.6g} != sdelab.ddpm.ddpm_loss "
            f"{ref_loss.item():.6g}; draw i, then z, "
            "and use t = i / N"
        )
        for p, q in zip(mine.parameters(), ref.parameters()):
            msg = f"step {step}: the parameters differ from a reference step"
            ok = torch.allclose(p, q, rtol=1e-10, atol=1e-12)
            assert ok, msg + "; zero the gradients first"


@exercise("ddpm", "3")
def ancestral_sample(impl):
    sde = make_sde("vp-linear")
    betas = ddpm.vp_betas(sde, 50, "exact")
    data = toy.gaussian([0.5, -1.0], [[0.3, 0.1], [0.1, 0.2]])
    x_N = torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=f64)
    out = impl(data.score_fn(sde), betas, x_N, torch.Generator().manual_seed(4))
    ref = ddpm.ancestral_sampling(
        data.score_fn(sde), betas, x_N, generator=torch.Generator().manual_seed(4)
    ).x
    assert (
        out.shape == x_N.shape
    ), f"expected shape {tuple(x_N.shape)}, got {tuple(out.shape)}"
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12), (
        "differs from sdelab.ddpm.ancestral_sampling with the same noise: score at "
        "t_i = i/N, "
        "(x + beta s)/sqrt(1 - beta), noise sqrt(beta) z for i > 1 only"
    )
