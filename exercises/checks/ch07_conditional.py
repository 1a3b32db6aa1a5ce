"""Checks of the chapter 7 exercises, against sdelab.guidance and the exact mixture of sdelab.toy."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdelab import SDE_NAMES, make_sde
from sdelab.guidance import classifier_free_guidance, classifier_guidance
from sdelab.toy import GaussianMixture

from ..registry import exercise

f64 = torch.float64


def _mixture():
    return GaussianMixture([0.5, 0.3, 0.2], [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], [0.5, 1.0, 0.3])


@exercise("ch07", "7.1")
def guided_score(impl):
    gm = _mixture()
    x = 2 * torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=f64)
    for name in ("ve", "vp-linear", "subvp-linear"):
        sde = make_sde(name)
        t = torch.full((16,), 0.3, dtype=f64)
        for w in (0.0, 1.0, 4.0):
            with torch.no_grad():  # as inside a sampler: the gradient must still be computed
                out = impl(gm.score_fn(sde), gm.logits_fn(sde), x, t, 2, w)
            ref = classifier_guidance(gm.score_fn(sde), gm.logits_fn(sde), 2, w)(x, t)
            assert out.shape == x.shape, f"output shape {tuple(out.shape)} should be {tuple(x.shape)}"
            assert torch.allclose(out, ref, rtol=1e-8, atol=1e-10), f"{name}, w={w}: differs from s + w grad log p(y|x)"
        # Bayes' rule: at w = 1 the guided score is the class-conditional score
        out = impl(gm.score_fn(sde), gm.logits_fn(sde), x, t, 1, 1.0)
        assert torch.allclose(out, gm.score_t(x, t, sde, component=1), rtol=1e-8, atol=1e-10), \
            f"{name}: at w = 1 the guided score should equal grad log p_t(x | y)"


@exercise("ch07", "7.2")
def mixture_posterior(impl):
    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(t=st.floats(0.01, 1.0), name=st.sampled_from(SDE_NAMES), seed=st.integers(0, 1000))
    def prop(t, name, seed):
        sde = make_sde(name)
        g = torch.Generator().manual_seed(seed)
        means = 2 * torch.randn(3, 4, generator=g, dtype=f64)
        variances = 0.2 + torch.rand(3, generator=g, dtype=f64)
        weights = torch.tensor([0.2, 0.5, 0.3], dtype=f64)
        gm = GaussianMixture(weights, means, variances)
        x = 2 * torch.randn(8, 4, generator=g, dtype=f64)
        alpha, sigma = (c.item() for c in sde.marginal_coeffs(torch.tensor([t], dtype=f64)))
        out = impl(x, alpha, sigma, weights, means, variances)
        assert out.shape == (8, 3), f"shape {tuple(out.shape)} should be (B, K) = (8, 3)"
        assert torch.allclose(out.sum(-1), torch.ones(8, dtype=f64)), "each row must sum to 1"
        ref = gm.posterior_t(x, t, sde)
        assert torch.allclose(out, ref, rtol=1e-8, atol=1e-10), f"posterior {out[0].tolist()} expected {ref[0].tolist()}"

    prop()


@exercise("ch07", "7.3")
def cfg_score(impl):
    gm = _mixture()
    sde = make_sde("vp-linear")
    x = 2 * torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=f64)
    for w in (0.0, 0.5, 3.0):
        cond, uncond = gm.score_t(x, 0.2, sde, component=0), gm.score_t(x, 0.2, sde)
        out = impl(cond, uncond, w)
        ref = classifier_free_guidance(gm.score_fn(sde, component=0), gm.score_fn(sde), w)(x, 0.2)
        assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12), f"w={w}: differs from (1 + w) s(x, y) - w s(x)"
        cg = classifier_guidance(gm.score_fn(sde), gm.logits_fn(sde), 0, 1 + w)(x, 0.2)
        assert torch.allclose(out, cg, rtol=1e-8, atol=1e-10), f"w={w}: should equal classifier guidance at 1 + w"
