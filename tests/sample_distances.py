"""Distances between two samples, for tests and benchmarks of samplers (not part of the library).

``energy_distance``: Szekely & Rizzo's energy distance
:math:`\\mathcal E(P, Q) = 2\\,\\mathbb E\\|X - Y\\| - \\mathbb E\\|X - X'\\| - \\mathbb E\\|Y - Y'\\|`,
zero iff P = Q. The within-sample terms exclude the diagonal (U-statistics), so the estimate is
unbiased: between two samples of the *same* law its mean is 0 and its spread, O(1/n), is the Monte
Carlo floor that a test must measure before it can call a sampler's distance small.

``sliced_wasserstein``: the sliced 2-Wasserstein distance, the root mean over random unit
directions of the squared 1-D W2 distance between the projected samples (equal sizes: sorted
projections matched in order).
"""

from __future__ import annotations

import torch


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased energy distance between samples ``x (n, d)`` and ``y (m, d)`` (n, m >= 2)."""
    x, y = x.reshape(len(x), -1).double(), y.reshape(len(y), -1).double()
    n, m = len(x), len(y)
    dxy = torch.cdist(x, y).mean()
    dxx = torch.cdist(x, x).sum() / (n * (n - 1))
    dyy = torch.cdist(y, y).sum() / (m * (m - 1))
    return (2 * dxy - dxx - dyy).item()


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced W2 between equal-size samples ``x, y (n, d)`` over ``projections`` random directions."""
    x, y = x.reshape(len(x), -1).double(), y.reshape(len(y), -1).double()
    if len(x) != len(y):
        raise ValueError(f"sliced_wasserstein needs equal sample sizes, got {len(x)} and {len(y)}")
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(x.shape[1], projections, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ u, dim=0)
    py, _ = torch.sort(y @ u, dim=0)
    return ((px - py) ** 2).mean().sqrt().item()
