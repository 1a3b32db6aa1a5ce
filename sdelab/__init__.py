"""sdelab: score-based generative modelling with SDEs (Song et al., ICLR 2021), small and tested.

``score_fn(x, t)`` is the seam between learning and everything downstream: a trained network and
a toy distribution's exact score (:mod:`sdelab.toy`) are interchangeable.
"""

from .sde import SDE, SDE_NAMES, SubVPSDE, VESDE, VPSDE, make_sde, sde_from_config
from .utils import default_device

__version__ = "0.1.0"

__all__ = ["SDE", "SDE_NAMES", "VESDE", "VPSDE", "SubVPSDE", "make_sde", "sde_from_config", "default_device"]
