r"""Imputation (inpainting) and colorization with an unconditional score: the replacement method.

Split the entries of :math:`x` into observed ones :math:`\Omega` (``mask`` True) with values
:math:`y = x(0)_\Omega` and unknown ones :math:`\bar\Omega`. The exact conditional reverse SDE
needs :math:`\nabla\log p_t(x_{\bar\Omega}(t) \mid y)`; Song et al. (2021, App. I.2) approximate it by

.. math:: \nabla_{x_{\bar\Omega}}\log p_t(x_{\bar\Omega}(t) \mid y) \approx
          \nabla_{x_{\bar\Omega}}\log p_t\big([x_{\bar\Omega}(t);\ \hat y(t)]\big), \qquad
          \hat y(t) = \alpha(t)\,y + \sigma(t)\,z \sim p_{0t}(\cdot \mid y),

that is, the *replacement method*: run any reverse-time sampler on the whole state, and after
every update overwrite the observed entries with a fresh draw of the observation noised to the
current time by the SDE's own kernel. At the end the observed entries are set to :math:`y`
exactly, so the output agrees with the input wherever it was observed.

**It is an approximation.** :math:`\hat y(t)` is a fresh draw at every step, so the unknown entries
are steered by :math:`p_t(x_{\bar\Omega} \mid \hat y(t))`, the conditional given a *noisy*
observation, not by :math:`p_t(x_{\bar\Omega} \mid y)`. For Gaussian data the limit of small steps
is a linear SDE whose moments are computable (``tests/test_inpainting.py`` checks the samplers
against them), and it differs from the exact conditional Gaussian: the conditional mean is only
partly reached (book chapter 8 shows by how much). Only at :math:`t \to 0`, where
:math:`\hat y(t) \to y`, do the two agree, which is why Langevin corrector steps
(``sampler="predictor_corrector"``) help.

**Colorization** (App. I.3) is imputation in decorrelated colour coordinates: an orthogonal
:math:`3\times3` matrix :math:`M` whose first column is :math:`(1, 1, 1)/\sqrt3` maps each pixel's
RGB to :math:`u = M^\top x`, whose first channel is the (scaled) gray value. The SDEs here are
isotropic, so the perturbed densities transform with :math:`M` and the score in :math:`u` is
:math:`M^\top s(Mu, t)`; :func:`colorize` observes channel 0 of :math:`u` and maps the result back.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from . import checks
from . import samplers as _samplers
from .samplers import SampleResult
from .sde import SDE
from .utils import ScoreFn, Tensor

__all__ = [
    "IMPUTE_SAMPLERS",
    "COLOR_TRANSFORM",
    "as_mask",
    "box_mask",
    "random_mask",
    "impute",
    "to_decoupled",
    "from_decoupled",
    "colorize",
]

IMPUTE_SAMPLERS = ("euler_maruyama", "reverse_diffusion", "predictor_corrector")
"""The samplers :func:`impute` can run (those with a ``project`` hook)."""


# ----------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------
def as_mask(mask, x: Tensor) -> Tensor:
    """A boolean tensor broadcast to ``x``'s shape ``(B, ...)``: True where ``x`` is observed.

    ``mask`` may be a NumPy array or a tensor of booleans or of 0/1 numbers, shaped like ``x``,
    like one sample (``x.shape[1:]``, shared by the batch) or anything else that broadcasts.
    """
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor or numpy array of booleans or 0/1, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("mask must hold booleans or only the values 0 and 1 (1 = observed)")
        mask = mask != 0
    mask = mask.to(x.device)
    if mask.dim() == x.dim() - 1:
        mask = mask.unsqueeze(0)
    try:
        return mask.expand(x.shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to x of shape {tuple(x.shape)}; "
                         f"give one of shape {tuple(x.shape[1:])} (shared) or {tuple(x.shape)}") from None


def box_mask(shape: Sequence[int], top: int, left: int, height: int, width: int) -> Tensor:
    """Boolean mask of an image shape ``(C, H, W)`` that is True (observed) everywhere except a box."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must end with (H, W), got {shape}")
    H, W = shape[-2:]
    if not (0 <= top < H and 0 <= left < W and height >= 1 and width >= 1):
        raise ValueError(f"box (top={top}, left={left}, height={height}, width={width}) must start inside ({H}, {W})")
    mask = torch.ones(shape, dtype=torch.bool)
    mask[..., top:top + height, left:left + width] = False
    return mask


def random_mask(shape: Sequence[int], observed: float, generator: torch.Generator | None = None,
                per_channel: bool = False) -> Tensor:
    """Boolean mask with each pixel observed independently with probability ``observed``.

    For ``(C, H, W)`` shapes a pixel's channels are observed together unless ``per_channel``.
    """
    if not 0 <= observed <= 1:
        raise ValueError(f"observed must lie in [0, 1], got {observed}")
    shape = tuple(int(s) for s in shape)
    draw = shape if (per_channel or len(shape) < 3) else (1, *shape[-2:])
    u = torch.rand(draw, generator=generator)
    return (u < observed).expand(shape).clone()


# ----------------------------------------------------------------------------------------------
# Imputation
# ----------------------------------------------------------------------------------------------
def _renoise(sde: SDE, y: Tensor, t: float, generator: torch.Generator | None) -> Tensor:
    r""":math:`\hat y(t) = \alpha(t)y + \sigma(t)z`, a draw from the SDE's kernel :math:`p_{0t}(\cdot \mid y)`."""
    alpha, sigma = sde.marginal_coeffs(torch.tensor([t], dtype=torch.float64))
    z = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    return alpha.item() * y + sigma.item() * z


@torch.no_grad()
def impute(score_fn: ScoreFn, sde: SDE, y: Tensor, mask, *, steps: int | None = None, grid="uniform",
           rho: float = 7.0, t_end: float | None = None, sampler: str = "euler_maruyama", corrector_steps: int = 1,
           snr: float = 0.16, norm: str = "batch", generator: torch.Generator | int | None = None,
           x_T: Tensor | None = None, final_denoise: bool = False, return_trajectory: bool = False) -> SampleResult:
    r"""Fill in the unobserved entries of ``y`` by the replacement method (Song et al. 2021, App. I.2).

    Runs the sampler ``sampler`` of :mod:`sdelab.samplers` with a projection: from :math:`x_T`
    (unknown entries from the prior, observed ones :math:`\hat y(T)`), after every update to a
    time :math:`t` (predictor and each corrector step alike) the observed entries are replaced by
    :math:`\hat y(t) = \alpha(t)y + \sigma(t)z`. Finally (after the optional Tweedie step
    ``final_denoise``) the observed entries are set to ``y`` exactly.

    Args:
        score_fn: the unconditional ``score_fn(x, t)`` of the data (a trained net or an exact score).
        sde: its forward SDE.
        y: ``(B, ...)`` data; only the observed entries are read (the rest may hold anything, even NaN).
        mask: True / 1 where observed (:func:`as_mask`: a tensor or NumPy array, per sample or shared).
        steps, grid, rho, t_end: the time grid (:func:`sdelab.samplers.time_grid`, or an explicit
            decreasing sequence).
        sampler: ``"euler_maruyama"``, ``"reverse_diffusion"`` or ``"predictor_corrector"``
            (reverse-diffusion predictor + ``corrector_steps`` Langevin steps with ``snr``, ``norm``).
        generator: ``torch.Generator`` (or int seed) for all the noise, prior draw included.
        x_T: optional initial state (its observed entries are replaced by :math:`\hat y(T)`).
        final_denoise: finish with one Tweedie step (one more NFE); observed entries stay ``y``.
        return_trajectory: also return the states after each grid step.

    Returns a :class:`sdelab.samplers.SampleResult` (``x``, ``nfe``, ``times``, ``trajectory``).
    """
    checks.callable_(score_fn, "score_fn", "score_fn(x, t)")
    checks.sde(sde)
    checks.tensor(y, "y", floating=True, min_ndim=1, finite=False)
    checks.choice(sampler, "sampler", IMPUTE_SAMPLERS)
    mask = as_mask(mask, y)
    checks.finite(y[mask], "y (observed entries)")
    y = torch.where(mask, y, torch.zeros((), dtype=y.dtype, device=y.device))
    generator = checks.generator(generator, like=y)
    if x_T is None:
        x_T = sde.prior_sample(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    else:
        checks.same_shape(checks.tensor(x_T, "x_T"), y, "x_T", "y")
    kwargs = {"corrector_steps": corrector_steps, "snr": snr, "norm": norm} if sampler == "predictor_corrector" else {}

    def replace(x: Tensor, t: float) -> Tensor:
        return torch.where(mask, _renoise(sde, y, t, generator), x)

    observed = bool(mask.any())  # with nothing observed this is the plain sampler, noise for noise
    x_T = replace(x_T, sde.T if isinstance(grid, str) else float(grid[0])) if observed else x_T
    res = _samplers.SAMPLERS[sampler](score_fn, sde, x_T, steps=steps, grid=grid, rho=rho, t_end=t_end,
                                      generator=generator, final_denoise=final_denoise,
                                      return_trajectory=return_trajectory, project=replace if observed else None,
                                      **kwargs)
    res.x = torch.where(mask, y, res.x)
    return res


# ----------------------------------------------------------------------------------------------
# Colorization
# ----------------------------------------------------------------------------------------------
def _color_transform() -> Tensor:
    r"""An orthogonal :math:`M` with first column :math:`(1,1,1)/\sqrt3` (Gram--Schmidt, float64)."""
    s3, s6, s2 = math.sqrt(3), math.sqrt(6), math.sqrt(2)
    return torch.tensor([[1 / s3, -2 / s6, 0.0],
                         [1 / s3, 1 / s6, 1 / s2],
                         [1 / s3, 1 / s6, -1 / s2]], dtype=torch.float64)


COLOR_TRANSFORM = _color_transform()
"""The orthogonal colour matrix :math:`M` (rows: R, G, B; column 0 the gray direction), as in Song et al.'s code."""


def _check_rgb(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[1] != 3:
        raise ValueError(f"{name} must be a (B, 3, ...) colour tensor, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")


def to_decoupled(x: Tensor) -> Tensor:
    r""":math:`u = M^\top x` per pixel: channel 0 is :math:`(r + g + b)/\sqrt3`, channels 1--2 the colour."""
    _check_rgb(x, "x")
    return torch.einsum("bi...,ij->bj...", x, COLOR_TRANSFORM.to(x.device, x.dtype))


def from_decoupled(u: Tensor) -> Tensor:
    r""":math:`x = M u` per pixel (:math:`M^{-1} = M^\top`), the inverse of :func:`to_decoupled`."""
    _check_rgb(u, "u")
    return torch.einsum("bj...,ij->bi...", u, COLOR_TRANSFORM.to(u.device, u.dtype))


@torch.no_grad()
def colorize(score_fn: ScoreFn, sde: SDE, gray: Tensor, **kwargs) -> SampleResult:
    r"""Colour images whose channel mean is ``gray`` (Song et al. 2021, App. I.3).

    ``gray`` is ``(B, 1, ...)`` (or ``(B, ...)``): the mean :math:`(r + g + b)/3` of the unknown
    colour image, in the model's range. The replacement method (:func:`impute`, which takes the
    other keyword arguments) runs in the decoupled coordinates :math:`u = M^\top x` with the score
    :math:`M^\top s(Mu, t)`, observing :math:`u_0 = \sqrt3\,\text{gray}`. The result ``x`` is the
    colour image; its channel mean equals ``gray`` up to rounding. An ``x_T`` passed on to
    :func:`impute` is in the decoupled coordinates (:func:`to_decoupled`).
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
    if not isinstance(gray, Tensor) or not gray.is_floating_point():
        raise TypeError(f"gray must be a floating-point tensor (B, 1, ...), got {type(gray).__name__}")
    if gray.dim() >= 2 and gray.shape[1] == 1:
        gray = gray[:, 0]
    u_obs = torch.zeros((gray.shape[0], 3, *gray.shape[1:]), dtype=gray.dtype, device=gray.device)
    u_obs[:, 0] = math.sqrt(3) * gray
    mask = torch.zeros(u_obs.shape[1:], dtype=torch.bool)
    mask[0] = True

    def score_u(u: Tensor, t: Tensor) -> Tensor:
        return to_decoupled(score_fn(from_decoupled(u), t))

    res = impute(score_u, sde, u_obs, mask, **kwargs)
    traj = from_decoupled(res.trajectory.flatten(0, 1)).reshape(res.trajectory.shape) if res.trajectory is not None else None
    return SampleResult(x=from_decoupled(res.x), nfe=res.nfe, times=res.times, trajectory=traj)
