"""Checks of the chapter 6 exercises, against sdelab.metrics and closed forms."""

import numpy as np

from sdelab.metrics import frechet_distance, inception_score

from ..registry import exercise


def _spd(rng, f, rank=None):
    a = rng.standard_normal((f, rank or f))
    return a @ a.T / (rank or f)


@exercise("ch06", "6.1")
def frechet_distance_gaussians(impl):
    rng = np.random.default_rng(0)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    mu1, mu2, a, b = rng.standard_normal(6), rng.standard_normal(6), rng.uniform(0.1, 2, 6), rng.uniform(0.1, 2, 6)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    got = float(impl(mu1, np.diag(a), mu2, np.diag(b)))
    assert abs(got - expected) < 1e-9 * max(1, expected), f"diagonal case: got {got:.6g}, expected {expected:.6g}"
    # full and rank-deficient covariances, against sdelab.metrics
    for f, rank in ((8, None), (20, 5)):
        s1, s2 = _spd(rng, f, rank), _spd(rng, f, rank)
        m1, m2 = rng.standard_normal(f), rng.standard_normal(f)
        ref = frechet_distance(m1, s1, m2, s2)
        got = float(impl(m1, s1, m2, s2))
        assert np.isfinite(got), f"{f}x{f} covariances of rank {rank or f}: got {got} (clip negative eigenvalues to 0)"
        assert abs(got - ref) < 1e-6 * max(1, ref), f"{f}x{f} covariances of rank {rank or f}: got {got:.6g}, expected {ref:.6g}"
    same = float(impl(m1, s1, m1, s1))
    assert abs(same) < 1e-6, f"the distance of a Gaussian to itself must be 0, got {same:.3g}"


@exercise("ch06", "6.2")
def inception_score_from_probs(impl):
    k = 10
    uniform = float(impl(np.full((50, k), 1 / k)))
    assert abs(uniform - 1) < 1e-12, f"uniform predictions must give IS = 1, got {uniform}"
    onehot = np.eye(k)[np.tile(np.arange(k), 5)]
    got = float(impl(onehot))
    assert abs(got - k) < 1e-9, f"confident predictions spread evenly over {k} classes must give IS = {k}, got {got}"
    probs = np.random.default_rng(1).dirichlet(np.full(k, 0.3), size=200)
    ref = inception_score(probs, splits=1)[0]
    got = float(impl(probs))
    assert abs(got - ref) < 1e-9 * ref, f"random predictions: got {got:.8g}, expected {ref:.8g}"


@exercise("ch06", "6.3")
def psd_sqrt(impl):
    rng = np.random.default_rng(2)
    for f, rank in ((6, None), (12, 3)):
        a = _spd(rng, f, rank)
        r = np.asarray(impl(a))
        assert r.shape == a.shape, f"shape {r.shape}, expected {a.shape}"
        assert np.isfinite(r).all(), f"rank-{rank or f} matrix: non-finite entries (clip negative eigenvalues to 0)"
        assert np.allclose(r, r.T, atol=1e-10), "the square root must be symmetric"
        assert np.allclose(r @ r, a, atol=1e-8), f"R @ R differs from A by {np.abs(r @ r - a).max():.3g}"
        assert np.linalg.eigvalsh(0.5 * (r + r.T)).min() > -1e-8, "the square root must be positive semi-definite"
