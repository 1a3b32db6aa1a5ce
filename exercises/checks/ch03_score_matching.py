"""Checks of the chapter 3 exercises, against sdelab (the reference) and exact properties."""

import torch

from sdelab import SDE_NAMES, make_sde
from sdelab.losses import dsm_loss
from sdelab.losses import likelihood_weight as ref_likelihood_weight
from sdelab.nets import GaussianFourierProjection, MLPScoreNet, net_eps, score_fn_from_net

from ..registry import exercise

f64 = torch.float64


def _times(n, sde, seed):
    g = torch.Generator().manual_seed(seed)
    return sde.eps + (sde.T - sde.eps) * torch.rand(n, generator=g, dtype=f64)


@exercise("ch03", "3.1")
def dsm_eps_loss(impl):
    for name in SDE_NAMES:
        sde = make_sde(name)
        for shape in ((6, 2), (6, 1, 4, 4)):
            g = torch.Generator().manual_seed(1)
            x0, z = torch.randn(shape, generator=g, dtype=f64), torch.randn(shape, generator=g, dtype=f64)
            t = _times(shape[0], sde, 2)
            # any smooth predictor that depends on x_t and t will do
            eps_fn = lambda x, t: torch.tanh(x) * (1 + t.reshape(-1, *([1] * (x.dim() - 1))))  # noqa: E731
            out = impl(eps_fn, sde, x0, t, z)
            assert out.shape == (shape[0],), f"{name}, x0 {shape}: the loss must be per sample, shape ({shape[0]},), got {tuple(out.shape)}"
            # sdelab.losses.dsm_loss squares in float32 (relative precision 6e-8), hence rtol 1e-5
            ref = dsm_loss(eps_fn, sde, x0, t=t, z=z, reduction="none").to(f64)
            assert torch.allclose(out.to(f64), ref, rtol=1e-5, atol=1e-7), (
                f"{name}, x0 {shape}: loss {out[:3].tolist()}... differs from sdelab.losses.dsm_loss {ref[:3].tolist()}...; "
                "is it the mean (not the sum) over entries, evaluated at x_t = alpha x0 + sigma z?")
            # predicting zero noise costs exactly mean(z^2); an oracle that recovers z costs nothing
            zero = impl(lambda x, t: torch.zeros_like(x), sde, x0, t, z)
            assert torch.allclose(zero, z.flatten(1).pow(2).mean(1), rtol=1e-12), f"{name}: eps_fn = 0 should give mean(z^2) per sample"
            alpha, sigma = sde.marginal_coeffs(t)
            ex = lambda v: v.reshape(-1, *([1] * (x0.dim() - 1)))  # noqa: E731
            oracle = impl(lambda x, t: (x - ex(alpha) * x0) / ex(sigma), sde, x0, t, z)
            # float64 rounding of (x_t - alpha x0) / sigma: |error| < 1e-13 even at sigma(eps) ~ 0.003, squared < 1e-24
            assert oracle.abs().max() < 1e-20, f"{name}: the exact noise should give zero loss, got {oracle.max().item():.3g}"


@exercise("ch03", "3.2")
def fourier_features(impl):
    for embed_dim, scale in ((16, 4.0), (128, 16.0)):
        proj = GaussianFourierProjection(embed_dim, scale, seed=3)
        t = torch.linspace(0, 1, 9)
        out = impl(t, proj.W)
        assert out.shape == (9, embed_dim), f"expected shape (9, {embed_dim}), got {tuple(out.shape)}"
        # float32 sin/cos of arguments up to 2 pi |W| ~ 400: the argument carries an absolute
        # rounding error of ~400 * 6e-8 = 2.4e-5, hence atol 1e-4
        assert torch.allclose(out, proj(t), atol=1e-4), "differs from sdelab.nets.GaussianFourierProjection: sines first, then cosines, of 2 pi W t"
        norms = out.pow(2).sum(1)
        assert torch.allclose(norms, torch.full_like(norms, embed_dim / 2), rtol=1e-5), "each feature vector must have squared norm K (sin^2 + cos^2 = 1)"


@exercise("ch03", "3.3")
def score_from_eps(impl):
    # data x0 = 0: x_t = sigma z, so the true noise is x / sigma and the score of N(0, sigma^2) is -x / sigma^2
    g = torch.Generator().manual_seed(4)
    for shape in ((5, 2), (5, 1, 4, 4)):
        x = torch.randn(shape, generator=g, dtype=f64)
        sigma = torch.rand(5, generator=g, dtype=f64) + 0.1
        ex = sigma.reshape(-1, *([1] * (len(shape) - 1)))
        out = impl(x / ex, sigma)
        assert out.shape == x.shape, f"the score has the shape of x, {tuple(x.shape)}; got {tuple(out.shape)}"
        assert torch.allclose(out, -x / ex**2, rtol=1e-12), "for x0 = 0 the score is -x / sigma^2: divide by sigma per sample, with a minus sign"
    # the library's parametrisation: score_fn_from_net(net)(x, t) = -net_eps(net, x, t) / sigma(t)
    torch.manual_seed(0)
    net = MLPScoreNet(dim=2, hidden=16, num_layers=1).double()
    for name in ("ve", "vp-linear", "subvp-cosine"):
        sde = make_sde(name)
        x, t = torch.randn(7, 2, generator=g, dtype=f64), _times(7, sde, 5)
        with torch.no_grad():
            out = impl(net_eps(net, sde, x, t), sde.marginal_coeffs(t)[1])
            ref = score_fn_from_net(net, sde)(x, t)
        assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12), f"{name}: differs from sdelab.nets.score_fn_from_net"


@exercise("ch03", "3.4")
def likelihood_weight(impl):
    for name in SDE_NAMES:
        sde = make_sde(name)
        t = _times(50, sde, 6)
        out = impl(sde, t)
        ref = ref_likelihood_weight(sde, t)
        assert out.shape == t.shape, f"{name}: expected shape {tuple(t.shape)}, got {tuple(out.shape)}"
        assert torch.allclose(out, ref, rtol=1e-10), f"{name}: w(t) = g^2 / sigma^2 differs from sdelab.losses.likelihood_weight"
        # the identity behind importance sampling: w(t) = -2 d/dt log(alpha / sigma), checked by autograd
        tt = t.clone().requires_grad_(True)
        (dlam,) = torch.autograd.grad(sde.half_log_snr(tt).sum(), tt)
        assert torch.allclose(out, -2 * dlam, rtol=1e-8), f"{name}: w(t) should equal -2 d(log SNR^(1/2))/dt"
