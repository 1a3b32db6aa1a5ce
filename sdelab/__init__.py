"""sdelab: score-based generative modelling with SDEs (Song et al., ICLR 2021), small and tested.

``score_fn(x, t)`` is the seam between learning and everything downstream: a trained network and
a toy distribution's exact score (:mod:`sdelab.toy`) are interchangeable.
"""

import os as _os

# Before torch loads (sdelab imports it just below): OpenMP threads that sleep when idle
# instead of spin-waiting. libgomp reads this once, when torch is imported; with the default,
# one other busy process on a 2-core machine made torch jobs 20-40x slower, with PASSIVE about
# 2x (benchmarks/contention.py). It changes nothing when torch was imported first, and an
# explicit setting (e.g. OMP_WAIT_POLICY=ACTIVE) is kept. See the README, "A busy machine".
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .sde import SDE, SDE_NAMES, SubVPSDE, VESDE, VPSDE, make_sde, sde_from_config
from .utils import default_device

__version__ = "0.1.0"

__all__ = ["SDE", "SDE_NAMES", "VESDE", "VPSDE", "SubVPSDE", "make_sde", "sde_from_config", "default_device"]
