"""The measuring parts of ``benchmarks/samplers_vs_peers.py`` that its verdicts rest on.

The benchmark itself needs the peer libraries; these checks need only sdelab: the ring's
within-mode W2 (``Toy.mode_w2``) against what it must give on exact samples and on samples
with a known error, and the rule that turns means with standard errors into a verdict.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from sdelab import make_sde

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("samplers_vs_peers", ROOT / "benchmarks" / "samplers_vs_peers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ring(bench):
    return bench.Toy("ring-2d", bench.toy_problem("ring-2d"), make_sde("vp-cosine"), n=4000)


def test_mode_w2_of_exact_samples_is_at_its_floor(ring):
    """Exact samples differ from the exact per-mode laws only by the fit's sampling error:
    with n/8 = 500 points per mode of std 0.5, the fitted mean is off by about
    0.5 sqrt(2/500) = 0.032 and each fitted std by about 0.5/sqrt(1000) = 0.016, so W2 is a few
    hundredths; its 90 % quantile over ten exact draws (the floor) is of that size too."""
    x = ring.exact(4000, torch.Generator().manual_seed(7))
    w = ring.mode_w2(x)
    assert 0.0 < w < 0.08
    assert 0.01 < ring.mode_floor < 0.08


def test_mode_w2_sees_a_shift_exactly(ring):
    """Per mode, W2^2 of Gaussians is |mean difference|^2 plus a covariance term that a shift
    leaves alone, so shifting every sample by v changes the sum over modes by exactly
    |v|^2 + 2 v . sum_k w_k (m_k - mu_k), as long as no sample changes mode (v is small, and
    the modes are 3 stds from the boundary between them: a few samples may cross, hence 1e-3)."""
    x = ring.exact(4000, torch.Generator().manual_seed(8))
    v = torch.tensor([0.05, -0.03], dtype=torch.float64)
    k = torch.cdist(x.double(), ring.gm.means).argmin(1)
    bias = sum(w * (x[k == j].mean(0) - mu) for j, (w, (mu, _)) in
               enumerate(zip(ring.gm.weights, ring.mode_laws)))
    predicted = ring.mode_w2(x) ** 2 + (v @ v).item() + 2 * (v @ bias).item()
    assert ring.mode_w2(x + v) ** 2 == pytest.approx(predicted, abs=1e-3)


def test_mode_w2_sees_a_shrink_the_energy_distance_misses(bench, ring):
    """Shrinking every mode to 0.9 of its spread about its own centre (the effect of an early
    stop with a Tweedie step) moves W2 by about 0.1 * 0.5 * sqrt(2) = 0.07 per mode, twice the
    floor, while the energy distance moves by less than three times its own spread over exact
    draws (measured here on five of them)."""
    g = torch.Generator().manual_seed(9)
    x = ring.exact(4000, g)
    k = torch.cdist(x.double(), ring.gm.means).argmin(1)
    shrunk = ring.gm.means[k] + 0.9 * (x - ring.gm.means[k])
    assert ring.mode_w2(shrunk) > ring.mode_w2(x) + 0.04
    assert ring.mode_w2(shrunk) > 1.5 * ring.mode_floor
    spread = torch.tensor([ring.distance(ring.exact(4000, g)) for _ in range(5)]).std().item()
    assert abs(ring.distance(shrunk) - ring.distance(x)) < 3 * spread


def test_mode_w2_has_no_meaning_on_a_single_gaussian(bench):
    toy = bench.Toy("gauss-16d", bench.toy_problem("gauss-16d"), make_sde("ve"), n=500)
    assert toy.gaussian and math.isnan(toy.mode_floor)


@pytest.mark.parametrize(
    "mine, peer, floor, expected",
    [
        ((1.0, 0.1, 5), (0.5, 0.1, 5), 0.0, "behind"),  # 3.5 standard errors worse
        ((0.5, 0.1, 5), (1.0, 0.1, 5), 0.0, "better"),
        ((1.0, 0.3, 5), (0.5, 0.3, 5), 0.0, "level"),  # 1.2 standard errors: cannot tell
        ((1.0, 0.1, 5), (0.5, 0.1, 5), 2.0, "level"),  # both below the Monte-Carlo floor
        ((0.5, 0.1, 5), (1.0, 0.1, 5), 2.0, "level"),
    ],
)
def test_seed_verdict(bench, mine, peer, floor, expected):
    verdict, pk, sk, z = bench.seed_verdict({("sdelab", "a", "g"): mine}, {("peer", "b", "g"): peer}, floor)
    assert verdict == expected
    assert (pk, sk) == (("peer", "b", "g"), ("sdelab", "a", "g"))
    assert z == pytest.approx((mine[0] - peer[0]) / math.hypot(mine[1], peer[1]))
