"""Distances between two samples, for tests and benchmarks of samplers (not part of the library).

``energy_distance``: re-exported from :func:`sdelab.metrics.energy_distance` (one definition
for the book, the tests and the benchmarks). Between two samples of the *same* law its mean is 0
and its spread, O(1/n), is the Monte Carlo floor that a test must measure before it can call a
sampler's distance small; between different laws the spread is O(1/sqrt(n)).

``sliced_wasserstein``: the sliced 2-Wasserstein distance, the root mean over random unit
directions of the squared 1-D W2 distance between the projected samples (equal sizes: sorted
projections matched in order).
"""

from __future__ import annotations

import torch

from sdelab.metrics import energy_distance  # noqa: F401 (one definition, in the library)


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
