"""sdelab: score-based generative modelling with SDEs (Song et al., ICLR 2021), small and tested.

``score_fn(x, t)`` is the seam between learning and everything downstream: a trained network and
a toy distribution's exact score (:mod:`sdelab.toy`) are interchangeable.
"""

import os as _os

# Before torch loads (sdelab imports it just below): OpenMP's idle threads spin-wait at most
# SPINCOUNT iterations (~10 µs) before they sleep, instead of libgomp's 300 000 (~3 ms). libgomp
# reads this once, when torch is imported. With the default, one other busy process on a
# 2-core machine made torch jobs 3-40x slower; bounded, about 2x, while an idle machine keeps
# its speed (sleeping at once, OMP_WAIT_POLICY=PASSIVE, costs 1.2-1.7x there):
# benchmarks/contention.py. It changes nothing when torch was imported first, and an explicit
# OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept. See the README, "A busy machine".
SPINCOUNT = "1000"
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", SPINCOUNT)

from .sde import SDE, SDE_NAMES, SubVPSDE, VESDE, VPSDE, make_sde, sde_from_config  # noqa: E402
from .utils import default_device  # noqa: E402

__version__ = "0.1.0"

# The submodules load on first use (``sdelab.samplers.euler_maruyama`` works after a plain
# ``import sdelab``), so ``import sdelab`` stays light: no scipy, matplotlib or torchvision
# until a module that needs them is touched.
SUBMODULES = ("checks", "checkpoints", "cli", "data", "ddpm", "flow", "generate", "guidance", "inpainting",
              "langevin", "likelihood", "parametrisation",
              "losses", "metrics", "nets", "plot", "samplers", "schedules", "sde", "toy", "train", "utils")


def __getattr__(name: str):
    if name in SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'sdelab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(SUBMODULES))

__all__ = ["SDE", "SDE_NAMES", "VESDE", "VPSDE", "SubVPSDE", "make_sde", "sde_from_config", "default_device"]
