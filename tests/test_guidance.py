"""Classifier and classifier-free guidance against the exact answers of a Gaussian mixture.

A mixture's noisy classifier is known in closed form (``GaussianMixture.logits_fn``: the component
posterior p_t(k | x)), and so is each component's score. Bayes' rule for scores says the guided
score at w = 1 *is* the component score, so guided sampling must produce that component's law:
checked exactly (the scores), and statistically (proportions and moments of guided samples from
Euler-Maruyama, predictor-corrector and an ODE solver under VE, VP and sub-VP). Then: w = 0 is
unconditional sampling bit for bit; the measuring helpers; the networks and the CLI that train
the classifiers.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from sdelab import SDE_NAMES, make_sde
from sdelab import samplers as smp
from sdelab.guidance import (
    classifier_accuracy,
    classifier_free_guidance,
    classifier_guidance,
    classifier_log_prob_grad,
    noisy_classifier_accuracy,
)
from sdelab.toy import GaussianMixture

f64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def mixture(event_shape=None) -> GaussianMixture:
    """Three unequal components in 2-D; class 2 is the 10 % minority that guidance must find."""
    covs = torch.tensor([[[0.8, 0.0], [0.0, 0.8]], [[1.0, 0.0], [0.0, 0.4]], [[0.6, 0.3], [0.3, 0.9]]], dtype=f64)
    return GaussianMixture([0.6, 0.3, 0.1], [[-2.5, 0.0], [2.5, 0.0], [0.0, 3.0]], covs, event_shape=event_shape)


TARGET = 2


# ---------------------------------------------------------------------------------------------
# Exact identities
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_guided_score_at_scale_one_is_the_class_conditional_score(sde_name):
    # grad log p_t(x) + grad log p_t(y | x) = grad log p_t(x | y): equal up to float64 rounding
    # (logsumexp and a few matrix products of O(1) numbers: 1e-9 is generous)
    sde = make_sde(sde_name)
    gm = mixture()
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(64, 2, generator=g, dtype=f64)
    labels = torch.randint(0, 3, (64,), generator=g)
    for t in (sde.eps, 0.05, 0.3, 0.7, 1.0):
        guided = classifier_guidance(gm.score_fn(sde), gm.logits_fn(sde), labels, scale=1.0)
        torch.testing.assert_close(guided(x, t), gm.score_t(x, t, sde, component=labels), rtol=1e-9, atol=1e-9)
        one = classifier_guidance(gm.score_fn(sde), gm.logits_fn(sde), TARGET)  # an int label for the batch
        torch.testing.assert_close(one(x, t), gm.score_t(x, t, sde, component=TARGET), rtol=1e-9, atol=1e-9)


def test_guidance_on_image_shaped_data_and_far_from_every_component():
    # any trailing shape; and 60 standard deviations out, where softmax posteriors underflow to 0
    # and log(posterior) would give -inf and NaN gradients, the logits stay finite
    sde = make_sde("ve")
    gm = mixture(event_shape=(1, 1, 2))
    x = torch.tensor([[[[60.0, -60.0]]], [[[0.5, 2.0]]]], dtype=f64)
    guided = classifier_guidance(gm.score_fn(sde), gm.logits_fn(sde), TARGET, scale=1.0)(x, 0.01)
    assert guided.shape == x.shape and torch.isfinite(guided).all()
    torch.testing.assert_close(guided, gm.score_t(x, 0.01, sde, component=TARGET), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("w", [0.0, 0.5, 3.0])
def test_classifier_free_guidance_is_classifier_guidance_at_one_plus_w(w):
    # (1 + w) s(x, y) - w s(x) = s(x) + (1 + w) [s(x, y) - s(x)] = s(x) + (1 + w) grad log p(y | x)
    sde = make_sde("vp-linear")
    gm = mixture()
    x = 2 * torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=f64)
    cfg = classifier_free_guidance(gm.score_fn(sde, component=TARGET), gm.score_fn(sde), scale=w)
    cg = classifier_guidance(gm.score_fn(sde), gm.logits_fn(sde), TARGET, scale=1.0 + w)
    for t in (0.01, 0.4):
        torch.testing.assert_close(cfg(x, t), cg(x, t), rtol=1e-9, atol=1e-9)


def test_log_prob_grad_matches_finite_differences_and_ignores_no_grad():
    # central differences of log softmax(logits)[y] with h = 1e-5: error O(h^2 f''') ~ 1e-10
    sde = make_sde("subvp-linear")
    gm = mixture()
    x = torch.tensor([[0.3, 1.2], [-1.0, 2.0]], dtype=f64)
    with torch.no_grad():  # the samplers' context: the gradient must still be computed
        grad = classifier_log_prob_grad(gm.logits_fn(sde), x, 0.2, TARGET)
    h = 1e-5
    for j in range(2):
        e = torch.zeros_like(x)
        e[:, j] = h
        lp = lambda z: torch.log_softmax(gm.logits_t(z, 0.2, sde), -1)[:, TARGET]  # noqa: E731
        torch.testing.assert_close(grad[:, j], (lp(x + e) - lp(x - e)) / (2 * h), rtol=1e-7, atol=1e-8)
    assert not grad.requires_grad


# ---------------------------------------------------------------------------------------------
# w = 0 is unconditional sampling, bit for bit, for the same generator
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["euler_maruyama", "predictor_corrector", "probability_flow_euler", "dpm_solver",
                                  "probability_flow_rk45"])
def test_zero_scale_is_unconditional_sampling(name):
    sde = make_sde("vp-linear")
    gm = mixture()
    x_T = sde.prior_sample((200, 2), generator=torch.Generator().manual_seed(3), dtype=f64)
    sampler = getattr(smp, name)
    kw = {"rtol": 1e-5, "atol": 1e-5} if name == "probability_flow_rk45" else {"steps": 20}
    out = []
    for score_fn in (gm.score_fn(sde), classifier_guidance(gm.score_fn(sde), gm.logits_fn(sde), TARGET, scale=0.0)):
        out.append(sampler(score_fn, sde, x_T, generator=torch.Generator().manual_seed(4), **kw).x)
    assert torch.equal(out[0], out[1])


# ---------------------------------------------------------------------------------------------
# Guided sampling at w = 1 samples the chosen component.
#
# Target: x_eps ~ N(a mu_y, a^2 Sigma_y + s^2 I) with (a, s) = (alpha, sigma)(eps). Chains start
# from the exact p_T(x | y) (the component perturbed to T), so the prior mismatch of the SDE does
# not enter. Tolerances, as in tests/test_samplers.py:
# * moments: whiten with the target; sqrt(n) mean ~ N(0, I); the sample covariance's entries have
#   z = (S_jj - 1) sqrt((n-1)/2), S_jk sqrt(n-1) ~ N(0, 1) (Wishart, CLT at n = 3000).
# * proportion: the fraction q_hat of samples that the exact Bayes classifier at eps assigns to y;
#   its target q is the same fraction for exact component samples, estimated from m = 400 000
#   draws, so z = (q_hat - q) / sqrt(q (1 - q) (1/n + 1/m)) ~ N(0, 1).
# * Z = 5 bounds each z-score (two-sided 6e-7; 6 z-scores x 9 cases: 3e-5 for the test).
# * discretisation bias b(S) ~ c S^-p (p = 1 for EM and PC, 2 for Heun) is bounded from a coarse
#   run with S/10 steps on an independent draw: |z(S)| <= Z + (|z(S/10)| + Z) 10^-p.
# * the Langevin corrector (snr r = 0.16) moves each whitened covariance entry by at most
#   r^2 k / (1 - r^2 k), k = the condition number of Sigma_y (tests/test_samplers.py derives it);
#   that bias of the covariance also moves the Bayes classifier's fraction, bounded here by the
#   same relative amount of q (1 - q) (a variance change of d shifts a class boundary by O(d)).
# Without guidance the fraction would be about the weight of class 2 (0.1); the guided one is q.
# ---------------------------------------------------------------------------------------------
N_GUIDED, M_REF, Z, K_COARSE = 2000, 200_000, 5.0, 10
GUIDED = {"euler_maruyama": (smp.euler_maruyama, 200, 1, {}),
          "predictor_corrector": (smp.predictor_corrector, 200, 1, {"snr": 0.16}),
          "heun": (smp.heun, 60, 2, {})}


def _z_scores(x, gm, sde, q_ref, m):
    alpha, sigma = sde.marginal_coeffs(torch.tensor([sde.eps], dtype=f64))
    mean = alpha * gm.means[TARGET]
    cov = alpha**2 * gm.covs[TARGET] + sigma**2 * torch.eye(2, dtype=f64)
    n = x.shape[0]
    L = torch.linalg.cholesky(cov)
    w = torch.linalg.solve_triangular(L, (x - mean).T, upper=False).T
    S = torch.cov(w.T)
    z = [w.mean(0)[0] * math.sqrt(n), w.mean(0)[1] * math.sqrt(n), (S[0, 0] - 1) * math.sqrt((n - 1) / 2),
         (S[1, 1] - 1) * math.sqrt((n - 1) / 2), S[0, 1] * math.sqrt(n - 1)]
    q_hat = (gm.posterior_t(x, sde.eps, sde).argmax(-1) == TARGET).double().mean()
    z.append((q_hat - q_ref) / math.sqrt(q_ref * (1 - q_ref) * (1 / n + 1 / m)))
    return torch.stack([torch.as_tensor(v, dtype=f64) for v in z]).abs(), q_hat.item()


@pytest.mark.parametrize("sde_name", ["ve", "vp-linear", "subvp-linear"])
@pytest.mark.parametrize("name", list(GUIDED))
def test_guidance_at_scale_one_samples_the_chosen_component(name, sde_name):
    sde = make_sde(sde_name)
    gm = mixture()
    comp = GaussianMixture([1.0], gm.means[TARGET:TARGET + 1], gm.covs[TARGET:TARGET + 1])
    g = torch.Generator().manual_seed(5)
    ref = sde.perturb(comp.sample(M_REF, g), sde.eps, generator=g)[0]
    q_ref = (gm.posterior_t(ref, sde.eps, sde).argmax(-1) == TARGET).double().mean().item()
    x_T = sde.perturb(comp.sample(N_GUIDED, g), sde.T, generator=g)[0]
    x_T2 = sde.perturb(comp.sample(N_GUIDED, g), sde.T, generator=g)[0]
    fn, steps, order, kw = GUIDED[name]
    guided = classifier_guidance(gm.score_fn(sde), gm.logits_fn(sde), TARGET, scale=1.0)
    fine = fn(guided, sde, x_T, steps=steps, generator=torch.Generator().manual_seed(6), **kw).x
    coarse = fn(guided, sde, x_T2, steps=steps // K_COARSE, generator=torch.Generator().manual_seed(7), **kw).x
    z_fine, q_hat = _z_scores(fine, gm, sde, q_ref, M_REF)
    z_coarse, _ = _z_scores(coarse, gm, sde, q_ref, M_REF)
    allowed = Z + (z_coarse + Z) * K_COARSE ** -order
    if name == "predictor_corrector":
        r2k = 0.16**2 * torch.linalg.cond(gm.covs[TARGET]).item()
        delta = r2k / (1 - r2k)
        n = N_GUIDED
        allowed[2:4] += delta * math.sqrt((n - 1) / 2)
        allowed[4] += delta * math.sqrt(n - 1)
        allowed[5] += delta * q_ref * (1 - q_ref) / math.sqrt(q_ref * (1 - q_ref) * (1 / n + 1 / M_REF))
    assert q_ref > 0.9 and q_hat > 0.9  # guidance found the 10 % class
    assert (z_fine <= allowed).all(), f"z-scores {z_fine.tolist()} exceed {allowed.tolist()}"


# ---------------------------------------------------------------------------------------------
# Measuring classifiers
# ---------------------------------------------------------------------------------------------
def test_noisy_classifier_accuracy_of_the_exact_posterior():
    # The Bayes classifier of the mixture at time t has a known accuracy: near t = 0 the clean
    # Bayes accuracy (estimated here from 200 000 draws); at t = T the posterior is the prior
    # weights up to O(alpha(T)) = 7e-3, so it always says class 0 and is right with probability
    # 0.6. Binomial SE with n = 4000 draws: z = 5 gives 5 sqrt(0.24 / 4000) = 0.039.
    sde = make_sde("vp-linear")
    gm = mixture()
    g = torch.Generator().manual_seed(8)
    x0, y = gm.sample(4000, g, return_labels=True)
    acc = noisy_classifier_accuracy(gm.logits_fn(sde), sde, x0, y, [sde.eps, 1.0], generator=g)
    xb, yb = gm.sample(200_000, g, return_labels=True)
    bayes = classifier_accuracy(lambda z: gm.logits_t(z, sde.eps, sde), xb, yb)
    tol = 5 * math.sqrt(0.25 / 4000 + 0.25 / 200_000)
    assert abs(acc[0] - bayes) < tol and abs(acc[1] - 0.6) < tol
    assert classifier_accuracy(lambda z: gm.logits_t(z, sde.eps, sde), x0, torch.full_like(y, 9)) == 0.0


@pytest.mark.parametrize("case", [
    (TypeError, "scale", lambda gm, sde: classifier_guidance(gm.score_fn(sde), gm.logits_fn(sde), 0, scale="big")),
    (ValueError, "finite", lambda gm, sde: classifier_guidance(gm.score_fn(sde), gm.logits_fn(sde), 0, scale=math.inf)),
    (TypeError, "y must", lambda gm, sde: classifier_guidance(gm.score_fn(sde), gm.logits_fn(sde), 1.5)),
    (TypeError, "logits_fn", lambda gm, sde: classifier_guidance(gm.score_fn(sde), None, 0)),
    (TypeError, "uncond_score_fn", lambda gm, sde: classifier_free_guidance(gm.score_fn(sde), 3, 1.0)),
    (ValueError, r"y must lie in \[0, 2\]",
     lambda gm, sde: classifier_guidance(gm.score_fn(sde), gm.logits_fn(sde), 3)(torch.zeros(2, 2, dtype=f64), 0.5)),
    (ValueError, "shape", lambda gm, sde: classifier_guidance(gm.score_fn(sde), gm.logits_fn(sde),
                                                              torch.tensor([0, 1, 2]))(torch.zeros(2, 2, dtype=f64), 0.5)),
    (ValueError, "logits", lambda gm, sde: classifier_log_prob_grad(lambda x, t: x.sum(1), torch.zeros(2, 2), 0.5, 0)),
    (ValueError, r"scale must be a finite number >= 0, got -1",
     lambda gm, sde: classifier_free_guidance(gm.score_fn(sde), gm.score_fn(sde), -1.0)),
    (ValueError, "scale must be", lambda gm, sde: classifier_free_guidance(gm.score_fn(sde), gm.score_fn(sde),
                                                                             float("nan"))),
    (TypeError, "scale must be a real number", lambda gm, sde: classifier_free_guidance(gm.score_fn(sde),
                                                                                          gm.score_fn(sde), "2")),
])
def test_bad_arguments_raise_clear_errors(case):
    exc, match, call = case
    with pytest.raises(exc, match=match):
        call(mixture(), make_sde("vp-linear"))


# ---------------------------------------------------------------------------------------------
# Networks: a time-dependent classifier guides a ScoreNet through any sampler; the CLI trains both
# classifier kinds and exports checkpoints whose cards hold their test accuracy.
# ---------------------------------------------------------------------------------------------
def test_network_guidance_runs_in_the_samplers_without_touching_the_weights():
    from sdelab.nets import ScoreNet, TimeDependentClassifier, logits_fn_from_net, score_fn_from_net

    torch.manual_seed(0)
    sde = make_sde("subvp-linear")
    net = ScoreNet(in_channels=1, image_size=8, channels=4, ch_mult=(1, 2)).eval()
    clf = TimeDependentClassifier(width=1, depth=1).eval()
    guided = classifier_guidance(score_fn_from_net(net, sde), logits_fn_from_net(clf, sde), torch.arange(4) % 3, 2.0)
    x_T = sde.prior_sample((4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    res = smp.euler_maruyama(guided, sde, x_T, steps=3, generator=torch.Generator().manual_seed(1))
    assert res.x.shape == x_T.shape and torch.isfinite(res.x).all()
    assert all(p.grad is None for p in clf.parameters())  # only x was differentiated
    plain = smp.euler_maruyama(score_fn_from_net(net, sde), sde, x_T, steps=3, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(res.x, plain.x)  # the classifier's gradient did move the samples


def test_cli_trains_and_exports_both_classifier_kinds(tmp_path):
    from sdelab import checkpoints
    from sdelab.cli import main

    common = ["--data", "synthetic", "--limit", "32", "--width", "1", "--depth", "1", "--steps", "3",
              "--batch-size", "8", "--eval-n", "16", "--no-progress", "--threads", "1"]
    assert main(["train", "--kind", "noisy_classifier", "--sde", "ve", *common,
                 "--run-dir", str(tmp_path / "r1"), "--export", str(tmp_path / "tdc")]) == 0
    assert main(["train", "--kind", "classifier", *common,
                 "--run-dir", str(tmp_path / "r2"), "--export", str(tmp_path / "clf")]) == 0
    tdc = checkpoints.load(tmp_path / "tdc.json", kind="noisy_classifier", sde="ve")
    curve = tdc.card["metrics"]["test_accuracy_vs_t"]
    assert curve["t"][0] == tdc.sde.eps and curve["t"][-1] == 1.0 and len(curve["accuracy"]) == len(curve["t"])
    assert all(0 <= a <= 1 for a in curve["accuracy"]) and tdc.card["metrics"]["test_images"] == 16
    logits = tdc.logits_fn()(torch.zeros(2, 3, 32, 32), torch.full((2,), 0.5))
    assert logits.shape == (2, 10)
    clf = checkpoints.load(tmp_path / "clf.json", kind="classifier")
    assert clf.sde is None and 0 <= clf.card["metrics"]["test_accuracy"] <= 1
    assert clf.card["command"].startswith("sdelab train --kind classifier")
    assert json.loads((tmp_path / "r2" / "meta.json").read_text())["objective"] == {"objective": "classifier"}
    with pytest.raises(SystemExit, match="class-conditional"):
        main(["train", "--kind", "classifier", "--class-conditional", *common])
    with pytest.raises(SystemExit) as info:  # argparse's choices: usage error, exit status 2
        main(["train", "--kind", "regressor", *common])
    assert info.value.code == 2


def test_classifier_free_guidance_with_a_class_conditional_scorenet():
    # one network, two scores: the label's and the null label's (Ho & Salimans 2022)
    from sdelab.nets import ScoreNet, score_fn_from_net

    torch.manual_seed(0)
    sde = make_sde("vp-linear")
    net = ScoreNet(in_channels=1, image_size=8, channels=4, ch_mult=(1, 2), num_classes=3).eval()
    y = torch.tensor([0, 1, 2, 1])
    cond, uncond = score_fn_from_net(net, sde, y=y), score_fn_from_net(net, sde)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(classifier_free_guidance(cond, uncond, 0.0)(x, 0.3), cond(x, 0.3))
        s3 = classifier_free_guidance(cond, uncond, 3.0)(x, 0.3)
        torch.testing.assert_close(s3, 4 * cond(x, 0.3) - 3 * uncond(x, 0.3))
    res = smp.euler_maruyama(classifier_free_guidance(cond, uncond, 2.0), sde, x, steps=3,
                             generator=torch.Generator().manual_seed(2))
    assert res.x.shape == x.shape and torch.isfinite(res.x).all()
