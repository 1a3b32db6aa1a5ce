r"""Forward SDEs, their transition kernels, and the reverse-time SDE / probability-flow ODE.

Every SDE here is of the form (Song et al. 2021, eq. 5)

.. math:: dx = f(t)\,x\,dt + g(t)\,dw, \qquad t \in [0, T],

with a drift *linear* in :math:`x`. Its transition kernel from a data point :math:`x(0)` is
Gaussian and known in closed form,

.. math:: p_{0t}(x(t) \mid x(0)) = \mathcal N\big(x(t);\ \alpha(t)\,x(0),\ \sigma^2(t) I\big),

so every SDE object exposes :math:`\alpha(t), \sigma(t)` (:meth:`SDE.marginal_coeffs`). The
reverse-time SDE (Anderson 1982; Song et al. eq. 6) and the probability-flow ODE (eq. 13) share
one object, :meth:`SDE.reverse`:

.. math::
    dx = \big[f(t)x - g(t)^2\,\nabla_x\log p_t(x)\big]dt + g(t)\,d\bar w, \qquad
    dx = \big[f(t)x - \tfrac12 g(t)^2\,\nabla_x\log p_t(x)\big]dt.

Three SDEs, with VP-type ones taking a linear or cosine schedule, give the five configurations
``ve``, ``vp-linear``, ``vp-cosine``, ``subvp-linear``, ``subvp-cosine`` (:func:`make_sde`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from . import checks
from .schedules import CosineBeta, GeometricSigma, LinearBeta, make_schedule
from .utils import ScoreFn, Tensor, TimeLike, batch_time, expand, log_normal_const

__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "ReverseSDE", "make_sde", "sde_from_config", "SDE_NAMES"]


class SDE:
    r"""Base class of the linear-drift SDEs. Subclasses define the coefficient functions.

    Attributes:
        T: final time (1 for every SDE here).
        eps: the paper's :math:`\epsilon`, the smallest time used when sampling or training (the
            score is singular at ``t = 0``); samplers and the likelihood stop at ``t = eps``.
        name: the configuration name, one of :data:`SDE_NAMES` (``"vp-linear"``, ...); the same
            string as ``config()["name"]`` and accepted by :func:`make_sde`.

    Cost model: the coefficient methods (:meth:`drift`, :meth:`diffusion`,
    :meth:`marginal_coeffs`, :meth:`half_log_snr`) run inside every score evaluation, so they check
    the *type* of ``t`` and the range of a Python float, but never read a tensor ``t`` back to the
    host. Range checks of tensor times belong at the door of the public function that receives
    them (:meth:`marginal`, :meth:`perturb`, the samplers).
    """

    T: float = 1.0
    eps: float
    name: str

    # --- coefficient functions, overridden by subclasses; t is a tensor in [0, T] ---
    def drift_coeff(self, t: Tensor) -> Tensor:
        r""":math:`f(t)` in :math:`f(x, t) = f(t)\,x`."""
        raise NotImplementedError

    def diffusion_coeff(self, t: Tensor) -> Tensor:
        r""":math:`g(t)`."""
        raise NotImplementedError

    def marginal_coeffs(self, t: TimeLike) -> tuple[Tensor, Tensor]:
        r"""``(alpha(t), sigma(t))``: mean coefficient and standard deviation of :math:`p_{0t}`.

        Shaped like ``t``. Runs inside every score evaluation: a float ``t`` is range-checked, a
        tensor ``t`` is not (no host read; callers check tensor times at their door).
        """
        raise NotImplementedError

    def t_from_half_log_snr(self, lam: Tensor) -> Tensor:
        r"""Inverse of :meth:`half_log_snr`: the time at which :math:`\log(\alpha/\sigma) = \lambda`."""
        raise NotImplementedError

    @property
    def prior_std(self) -> float:
        r"""Standard deviation of the prior :math:`p_T \approx \mathcal N(0, \sigma_T^2 I)`."""
        raise NotImplementedError

    def config(self) -> dict:
        """A JSON-able dict that :func:`sde_from_config` turns back into this SDE (stored in cards)."""
        raise NotImplementedError

    # --- shared machinery ---
    def _time(self, t: TimeLike, x: Tensor | None = None, lo: float = 0.0) -> Tensor:
        """``t`` as a tensor (``(B,)`` when ``x`` is given); a float is range-checked, a tensor is not.

        No host read: this runs inside every score evaluation (see the class docstring).
        """
        if isinstance(t, bool) or not isinstance(t, (int, float, Tensor)):
            raise TypeError(f"t must be a float or a tensor, got {type(t).__name__}")
        if not isinstance(t, Tensor):
            checks.time(t, "t", lo, self.T, slack=1e-6)
        if x is not None:
            return batch_time(t, x)
        if not isinstance(t, Tensor):
            t = torch.tensor(float(t), dtype=torch.get_default_dtype())
        return t

    def _door_time(self, t: TimeLike, x: Tensor, lo: float = 0.0) -> Tensor:
        """``t`` as a ``(B,)`` tensor, every entry checked to lie in ``[lo, T]`` (one host read)."""
        return checks.time_in_range(self._time(t, x, lo), "t", lo, self.T)

    def drift(self, x: Tensor, t: TimeLike) -> Tensor:
        r"""Forward drift :math:`f(x, t) = f(t)\,x`."""
        t = self._time(t, x)
        return expand(self.drift_coeff(t), x) * x

    def diffusion(self, t: TimeLike) -> Tensor:
        r"""Diffusion coefficient :math:`g(t)`, one value per entry of ``t``."""
        return self.diffusion_coeff(self._time(t))

    def marginal(self, x0: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        r"""Mean :math:`\alpha(t)x_0` and std :math:`\sigma(t)` of :math:`p_{0t}(\cdot \mid x_0)`.

        The mean is shaped like ``x0``, the std is ``(B,)``; ``t`` (a float or ``(B,)``) must lie in
        ``[0, T]`` and ``x0`` must be finite (both checked here, at the door).
        """
        checks.tensor(x0, "x0", min_ndim=1)
        alpha, sigma = self.marginal_coeffs(self._door_time(t, x0))
        return expand(alpha, x0) * x0, sigma

    def perturb(
        self, x0: Tensor, t: TimeLike, generator: torch.Generator | int | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""Draw :math:`x_t = \alpha(t)x_0 + \sigma(t) z`, :math:`z \sim \mathcal N(0, I)`.

        Returns ``(x_t, z, sigma)``; ``t`` must lie in ``[eps, T]``. ``generator`` is a
        ``torch.Generator`` on ``x0``'s device, an int seed, or ``None``.
        """
        checks.tensor(x0, "x0", min_ndim=1)
        generator = checks.generator(generator, like=x0)
        t = self._door_time(t, x0, lo=self.eps)
        alpha, sigma = self.marginal_coeffs(t)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return expand(alpha, x0) * x0 + expand(sigma, x0) * z, z, sigma

    def half_log_snr(self, t: TimeLike) -> Tensor:
        r"""Half the log signal-to-noise ratio, :math:`\lambda(t) = \log(\alpha(t)/\sigma(t))`.

        The log-SNR is :math:`\log(\alpha^2/\sigma^2) = 2\lambda(t)`; :math:`\lambda` is the variable
        DPM-Solver integrates in (Lu et al., 2022). Decreasing in t.
        """
        alpha, sigma = self.marginal_coeffs(self._time(t))
        return torch.log(alpha) - torch.log(sigma)

    def prior_sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        r"""Draw :math:`x_T \sim \mathcal N(0, \sigma_T^2 I)` of the given shape ``(B, ...)``.

        ``generator`` is a ``torch.Generator``, an int seed (a generator on ``device`` seeded with
        it), or ``None``; without ``device`` the samples go to the generator's device.
        """
        bad = not isinstance(shape, (tuple, list, torch.Size)) or len(shape) < 1 or any(
            isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape)
        if bad:
            raise (TypeError if not isinstance(shape, (tuple, list, torch.Size)) else ValueError)(
                f"shape must be (B, ...) with positive integer sizes, got {shape!r}")
        shape = tuple(int(s) for s in shape)
        generator = checks.generator(generator, device=device)
        if generator is not None and device is None:
            device = generator.device
        return self.prior_std * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_logp(self, z: Tensor) -> Tensor:
        r""":math:`\log\mathcal N(z; 0, \sigma_T^2 I)` summed over all but the batch dimension, shape ``(B,)``."""
        checks.tensor(z, "z", min_ndim=1)
        d = z[0].numel()
        s2 = self.prior_std**2
        return -0.5 * z.flatten(1).pow(2).sum(1) / s2 - log_normal_const(d) - 0.5 * d * math.log(s2)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE (``probability_flow=False``) or the probability-flow ODE for a score."""
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
        return ReverseSDE(self, score_fn, bool(probability_flow))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


@dataclass(frozen=True)
class ReverseSDE:
    r"""Reverse-time dynamics of ``sde`` for a score :math:`s(x, t) \approx \nabla_x\log p_t(x)`.

    Time runs from T down to ``eps``; with ``dt < 0``,

    .. math:: dx = \big[f(t)x - c\,g(t)^2 s(x, t)\big]dt + (1 - \mathbb 1_{\rm ODE})\,g(t)\,d\bar w,

    with :math:`c = 1` for the SDE (Song et al. eq. 6) and :math:`c = \tfrac12` for the
    probability-flow ODE (eq. 13), whose diffusion is zero.
    """

    sde: SDE
    score_fn: ScoreFn
    probability_flow: bool = False

    def drift(self, x: Tensor, t: TimeLike, score: Tensor | None = None) -> Tensor:
        """Reverse drift; pass ``score`` when it has already been evaluated at ``(x, t)``."""
        t = self.sde._time(t, x, lo=self.sde.eps)
        if score is None:
            score = self.score_fn(x, t)
        g2 = expand(self.sde.diffusion_coeff(t) ** 2, x)
        c = 0.5 if self.probability_flow else 1.0
        return expand(self.sde.drift_coeff(t), x) * x - c * g2 * score

    def diffusion(self, t: TimeLike) -> Tensor:
        g = self.sde.diffusion(t)
        return torch.zeros_like(g) if self.probability_flow else g


class VESDE(SDE):
    r"""Variance-exploding SDE (Song et al. eq. 9 in continuous time).

    .. math::
        dx = \sqrt{\frac{d\sigma^2(t)}{dt}}\,dw, \quad
        \sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t, \qquad
        p_{0t} = \mathcal N\big(x_0,\ [\sigma^2(t) - \sigma^2_{\min}]\,I\big).

    The prior is :math:`\mathcal N(0, \sigma_{\max}^2 I)` (the paper's choice: the kernel variance
    at T plus a data variance that :math:`\sigma_{\max}` is chosen to dominate).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, eps: float = 1e-5):
        self.sigmas = GeometricSigma(checks.real(sigma_min, "sigma_min", positive=True),
                                     checks.real(sigma_max, "sigma_max", positive=True))
        self.eps = _check_eps(eps)
        self.name = "ve"

    @property
    def sigma_min(self) -> float:
        r""":math:`\sigma_{\min}`, the noise level at ``t = 0``."""
        return self.sigmas.sigma_min

    @property
    def sigma_max(self) -> float:
        r""":math:`\sigma_{\max}`, the noise level at ``t = T`` (and the prior's std)."""
        return self.sigmas.sigma_max

    def drift_coeff(self, t):
        return torch.zeros_like(t)

    def diffusion_coeff(self, t):
        return torch.sqrt(self.sigmas.dsigma2_dt(t))

    def marginal_coeffs(self, t):
        t = self._time(t)
        # sigma^2(t) - sigma_min^2 = sigma_min^2 (exp(2 t log r) - 1), with expm1 for small t
        std = self.sigma_min * torch.sqrt(torch.expm1(2 * t * self.sigmas.log_ratio))
        return torch.ones_like(t), std

    def t_from_half_log_snr(self, lam):
        std = torch.exp(-lam)
        return torch.log1p((std / self.sigma_min) ** 2) / (2 * self.sigmas.log_ratio)

    @property
    def prior_std(self):
        return self.sigma_max

    def config(self):
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "eps": self.eps}


class _VPFamily(SDE):
    """Shared parts of VP and sub-VP: drift -beta/2 x, mean coefficient exp(-B(t)/2)."""

    kind: str

    def __init__(self, schedule="linear", eps: float = 1e-3, **schedule_kwargs):
        # every schedule parameter (beta_min, beta_max, s) is a positive rate or offset
        schedule_kwargs = {k: checks.real(v, k, positive=True) for k, v in schedule_kwargs.items()}
        self.schedule = make_schedule(schedule, **schedule_kwargs)
        self.eps = _check_eps(eps)
        self.name = f"{self.kind}-{self.schedule.name}"

    def drift_coeff(self, t):
        return -0.5 * self.schedule.beta(t)

    @property
    def prior_std(self):
        return 1.0

    def config(self):
        return {"name": self.name, "schedule": self.schedule.config(), "eps": self.eps}


class VPSDE(_VPFamily):
    r"""Variance-preserving SDE (Song et al. eq. 11), the continuous limit of DDPM.

    .. math::
        dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dw, \qquad
        p_{0t} = \mathcal N\big(e^{-B(t)/2}x_0,\ (1 - e^{-B(t)})\,I\big),

    with :math:`B(t) = \int_0^t\beta`. Unit-variance data keep unit variance at every t.
    """

    kind = "vp"

    def diffusion_coeff(self, t):
        return torch.sqrt(self.schedule.beta(t))

    def marginal_coeffs(self, t):
        b = self.schedule.integral(self._time(t))
        return torch.exp(-0.5 * b), torch.sqrt(-torch.expm1(-b))

    def t_from_half_log_snr(self, lam):
        # alpha^2 / sigma^2 = e^{2 lam}  <=>  B = log(1 + e^{-2 lam})
        return self.schedule.inverse_integral(torch.nn.functional.softplus(-2 * lam))


class SubVPSDE(_VPFamily):
    r"""Sub-VP SDE (Song et al. eq. 12): the VP drift with a smaller diffusion.

    .. math::
        dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)\big(1 - e^{-2B(t)}\big)}\,dw, \qquad
        p_{0t} = \mathcal N\big(e^{-B(t)/2}x_0,\ (1 - e^{-B(t)})^2 I\big).

    Its variance is bounded by the VP variance at every t (Song et al. Thm. 1 discussion).
    """

    kind = "subvp"

    def diffusion_coeff(self, t):
        b = self.schedule.integral(t)
        return torch.sqrt(self.schedule.beta(t) * -torch.expm1(-2 * b))

    def marginal_coeffs(self, t):
        b = self.schedule.integral(self._time(t))
        return torch.exp(-0.5 * b), -torch.expm1(-b)

    def t_from_half_log_snr(self, lam):
        # a / (1 - a^2) = e^lam with a = e^{-B/2}: the positive root of e^lam a^2 + a - e^lam = 0
        e = torch.exp(lam)
        a = 2 * e / (1 + torch.sqrt(1 + 4 * e**2))
        return self.schedule.inverse_integral(-2 * torch.log(a))


def _check_eps(eps: float) -> float:
    return checks.real(eps, "eps", lo=0.0, hi=1.0, lo_open=True, hi_open=True)


SDE_NAMES = ("ve", "vp-linear", "vp-cosine", "subvp-linear", "subvp-cosine")


def make_sde(name: str, **kwargs) -> SDE:
    """An SDE from one of the five configuration names ``SDE_NAMES`` (``"vp"`` means ``"vp-linear"``).

    Keyword arguments go to the constructor (``sigma_min``, ``beta_max``, ``eps``, ...).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, one of {SDE_NAMES}; got {type(name).__name__}")
    key = name.lower().replace("_", "-")
    key = {"vp": "vp-linear", "subvp": "subvp-linear", "sub-vp": "subvp-linear"}.get(key, key)
    key = key.replace("sub-vp", "subvp")
    if key == "ve":
        return VESDE(**kwargs)
    kind, _, schedule = key.partition("-")
    cls = {"vp": VPSDE, "subvp": SubVPSDE}.get(kind)
    if cls is None or schedule not in ("linear", "cosine"):
        raise ValueError(f"unknown SDE name {name!r}; expected one of {SDE_NAMES}")
    return cls(schedule=schedule, **kwargs)


def sde_from_config(config: dict) -> SDE:
    """Rebuild an SDE from :meth:`SDE.config` (as stored in a checkpoint card).

    ``config["name"]`` is one of :data:`SDE_NAMES`; the family names ``"vp"``/``"subvp"`` of
    cards written before the names were unified are read too (the schedule comes from
    ``config["schedule"]``).
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict from SDE.config(), got {type(config).__name__}")
    config = dict(config)
    name = config.pop("name", None)
    if name == "ve":
        return VESDE(**config)
    kind, _, sched_in_name = str(name).partition("-")
    if kind in ("vp", "subvp") and "schedule" in config:
        sched = dict(config.pop("schedule"))
        sched_name = sched.pop("name", None)
        if sched_in_name and sched_name != sched_in_name:
            raise ValueError(f"SDE config names {name!r} but its schedule is {sched_name!r}")
        cls = VPSDE if kind == "vp" else SubVPSDE
        return cls(schedule=sched_name, **sched, **config)
    raise ValueError(f"unknown SDE config name {name!r}; expected one of {SDE_NAMES} with a 'schedule' entry "
                     "for VP/sub-VP")
