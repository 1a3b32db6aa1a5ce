"""Networks: shapes, configs, the epsilon parametrisation against exact scores, conditioning."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdelab import SDE_NAMES, make_sde
from sdelab.nets import (
    NET_KINDS,
    FeatureClassifier,
    GaussianFourierProjection,
    MLPScoreNet,
    NCSNpp,
    ScoreNet,
    TimeDependentClassifier,
    build_net,
    count_params,
    input_scale,
    logits_fn_from_net,
    net_eps,
    score_fn_from_net,
)
from sdelab.toy import gaussian
from sdelab.utils import expand


def test_fourier_features_are_unit_circle_pairs_and_reproducible():
    f = GaussianFourierProjection(16, scale=8.0, seed=3)
    t = torch.rand(5)
    out = f(t)
    assert out.shape == (5, 16)
    # [sin, cos] pairs: sin^2 + cos^2 = 1 to float rounding
    torch.testing.assert_close(out[:, :8] ** 2 + out[:, 8:] ** 2, torch.ones(5, 8))
    torch.testing.assert_close(GaussianFourierProjection(16, 8.0, seed=3)(t), out)
    assert "W" in f.state_dict() and not list(f.parameters())
    with pytest.raises(ValueError, match="embed_dim"):
        GaussianFourierProjection(7)


def test_scorenet_size_matches_the_cpu_budget():
    net = ScoreNet()
    assert 1.0e6 <= count_params(net) <= 1.2e6  # the ~1.1 M network the book's timings assume
    assert 4 * count_params(net) < 10e6  # float32 weights fit the 10 MB limit of shipped files


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 16, 16)])
@pytest.mark.parametrize("kind", ["scorenet", "unet"])
def test_unet_maps_images_to_images(kind, shape):
    net = build_net({"kind": kind, "in_channels": shape[0], "image_size": shape[1], "channels": 8})
    x = torch.randn(3, *shape)
    assert net(x, torch.rand(3)).shape == x.shape
    assert net(x, 0.5).shape == x.shape  # a float time is broadcast


def test_ncsnpp_has_attention_and_same_interface():
    net = NCSNpp(in_channels=1, image_size=28, channels=16, ch_mult=(1, 2, 2), num_res_blocks=1, num_classes=3)
    kinds = {type(m).__name__ for m in net.modules()}
    assert "AttnBlock" in kinds
    x = torch.randn(2, 1, 28, 28)
    assert net(x, torch.rand(2), y=torch.tensor([0, 2])).shape == x.shape
    assert build_net(net.config).config == net.config


@pytest.mark.parametrize("kind", sorted(NET_KINDS))
def test_build_net_roundtrips_every_kind_through_json(kind):
    import json

    cfg = {"kind": kind}
    if kind in ("unet", "scorenet", "ncsnpp"):
        cfg.update(channels=8, image_size=16, in_channels=1)
    net = build_net(cfg)
    again = build_net(json.loads(json.dumps(net.config)))
    assert again.config == net.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


def test_build_net_refuses_bad_configs():
    with pytest.raises(ValueError, match="unknown network kind"):
        build_net({"kind": "resnet"})
    with pytest.raises(ValueError, match="bad config"):
        build_net({"kind": "scorenet", "widht": 3})
    with pytest.raises(TypeError, match="dict"):
        build_net("scorenet")


def test_samples_are_processed_independently():
    # GroupNorm normalises per sample, so chunked sampling gives the same answer as one batch.
    torch.manual_seed(0)
    net = ScoreNet(channels=8, image_size=16)
    for p in net.parameters():  # move the zero-initialised output layers off zero
        p.data.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(6, 1, 16, 16), torch.rand(6)
    with torch.no_grad():
        full = net(x, t)
        parts = torch.cat([net(x[:2], t[:2]), net(x[2:], t[2:])])
    torch.testing.assert_close(parts, full, rtol=1e-4, atol=1e-5)  # float32 conv algorithms may differ by batch


def test_class_conditioning_and_null_label():
    torch.manual_seed(0)
    net = ScoreNet(channels=8, image_size=16, num_classes=4)
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(2, 1, 16, 16), torch.rand(2)
    with torch.no_grad():
        null = net(x, t)
        torch.testing.assert_close(null, net(x, t, y=torch.tensor([4, 4])))  # omitted y = null label 4
        assert not torch.allclose(null, net(x, t, y=torch.tensor([0, 1])))
    # the label range is checked at the door of score_fn_from_net, not inside forward (a host
    # read per evaluation); the network itself still refuses an out-of-range label
    with pytest.raises(ValueError, match=r"y must lie in \[0, 3\] \(or 4, the null label\), got labels in \[0, 5\]"):
        score_fn_from_net(net, make_sde("vp-linear"), y=torch.tensor([5, 0]))
    with pytest.raises(ValueError, match="y must be an integer >= 0 and <= 4"):
        score_fn_from_net(net, make_sde("vp-linear"), y=10)
    with pytest.raises(TypeError, match="integer class labels"):
        score_fn_from_net(net, make_sde("vp-linear"), y=torch.tensor([0.5]))
    with pytest.raises(IndexError):
        net(x, t, y=torch.tensor([5, 0]))
    with pytest.raises(TypeError, match="unconditional"):
        ScoreNet(channels=8, image_size=16)(x, t, y=torch.tensor([0, 1]))


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="x must have shape"):
        ScoreNet(channels=8)(torch.randn(2, 3, 28, 28), 0.5)
    with pytest.raises(ValueError, match="x must have shape"):
        MLPScoreNet(2)(torch.randn(2, 3), 0.5)
    with pytest.raises(ValueError, match="t must"):
        MLPScoreNet(2)(torch.randn(2, 2), torch.rand(3))


class _ExactEps(torch.nn.Module):
    """eps*(x_in, t) of Gaussian data, written as a network: undoes c_in, then eps* = -sigma * score."""

    def __init__(self, g, sde):
        super().__init__()
        self.g, self.sde = g, sde

    def forward(self, x_in, t):
        x = x_in / expand(input_scale(self.sde, t), x_in)
        return -expand(self.sde.marginal_coeffs(t)[1], x) * self.g.score_t(x, t, self.sde)


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(SDE_NAMES), t=st.floats(0.0, 1.0))
def test_score_fn_from_net_inverts_the_parametrisation(name, t):
    # A "network" that outputs the exact eps* must give back the exact score: this pins down the
    # c_in input scaling and the -1/sigma(t) of score_fn_from_net to float64 rounding.
    sde = make_sde(name)
    t = sde.eps + (sde.T - sde.eps) * t
    g = gaussian(torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64))
    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    score = score_fn_from_net(_ExactEps(g, sde), sde)(x, t)
    torch.testing.assert_close(score, g.score_t(x, t, sde), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", SDE_NAMES)
def test_input_scale_keeps_perturbed_data_near_unit_variance(name):
    # Var(c_in x_t) = (alpha^2 v + sigma^2) / (alpha^2 + sigma^2) for per-coordinate data variance v:
    # between min(v, 1) and max(v, 1) at every t (a convex combination of v and 1).
    sde = make_sde(name)
    t = torch.linspace(sde.eps, 1, 101, dtype=torch.float64)
    alpha, sigma = sde.marginal_coeffs(t)
    v = 0.5
    var = (alpha**2 * v + sigma**2) * input_scale(sde, t) ** 2
    assert (var >= v - 1e-12).all() and (var <= 1 + 1e-12).all()


def test_net_eps_and_logits_fn_pass_scaled_inputs():
    sde = make_sde("ve")
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x, t, **cond):
            seen["x"], seen["cond"] = x, cond
            return torch.zeros_like(x)

    x = torch.randn(3, 2) * 50
    net_eps(Spy(), sde, x, 1.0, y=torch.tensor([1, 2, 3]))
    torch.testing.assert_close(seen["x"], x * input_scale(sde, torch.ones(3))[:, None])
    assert "y" in seen["cond"]
    clf = TimeDependentClassifier(in_channels=1, num_classes=5, width=1, depth=1)
    assert logits_fn_from_net(clf, sde)(torch.randn(4, 1, 12, 12), 0.3).shape == (4, 5)


def test_feature_classifier_returns_logits_and_penultimate_features():
    clf = FeatureClassifier(in_channels=1, num_classes=10, width=1, depth=1)
    x = torch.randn(3, 1, 28, 28)
    logits, feats = clf.forward_with_features(x)
    assert logits.shape == (3, 10) and feats.shape == (3, clf.net.feature_dim)
    torch.testing.assert_close(clf(x), logits)
    torch.testing.assert_close(clf.net.head(feats), logits)
    torch.testing.assert_close(clf.features(x), feats)


# ---------------------------------------------------------------------------------------------
# No host reads in the per-evaluation path: a score function built from a network must run on
# the meta device, where every .item() / bool(tensor) / .tolist() raises (meta tensors hold no
# data). Checks belong at the door (score_fn_from_net), not inside each evaluation.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("net_config", [
    {"kind": "mlp", "dim": 2, "hidden": 16, "num_layers": 2, "embed_dim": 8},
    {"kind": "scorenet", "channels": 8, "image_size": 8, "ch_mult": [1, 2], "num_classes": 3},
])
def test_score_fn_from_net_has_no_host_reads(name, net_config):
    sde = make_sde(name)
    net = build_net(net_config).to("meta")
    shape = (4, 2) if net_config["kind"] == "mlp" else (4, 1, 8, 8)
    x = torch.empty(shape, device="meta")
    with pytest.raises((RuntimeError, NotImplementedError)):  # the premise: a host read fails here
        torch.empty(2, device="meta").sum().item()
    # labels are checked once at the door, where they are read: give them on the CPU (moved to
    # the meta device inside the network, which reads nothing)
    cond = {"y": torch.tensor([0, 1, 2, 3])} if "num_classes" in net_config else {}
    score_fn = score_fn_from_net(net, sde, **cond)
    for t in (0.5, torch.empty(4, device="meta")):
        out = score_fn(x, t)
        assert out.shape == x.shape and out.device.type == "meta"
