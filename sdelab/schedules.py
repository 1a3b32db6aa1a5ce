r"""Noise schedules, each with its integral in closed form.

A VP-type SDE is driven by a rate :math:`\beta(t)`; everything it needs downstream is the integral

.. math:: B(t) = \int_0^t \beta(s)\,ds, \qquad \bar\alpha(t) = e^{-B(t)},

and, for samplers that step in log-SNR, the inverse :math:`t = B^{-1}(b)`. Each schedule below
gives all three in closed form; nothing here integrates numerically.

The VE SDE is driven instead by a geometric noise level :math:`\sigma(t)`
(:class:`GeometricSigma`).
"""

from __future__ import annotations

import math

import torch

from .utils import Tensor

__all__ = ["LinearBeta", "CosineBeta", "GeometricSigma", "make_schedule", "SCHEDULES"]


class LinearBeta:
    r"""Linear rate of Ho et al. (2020) in continuous time (Song et al. 2021, eq. 11).

    .. math::
        \beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min}), \qquad
        B(t) = \beta_{\min} t + \tfrac12 t^2 (\beta_{\max} - \beta_{\min}).
    """

    name = "linear"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not (beta_min > 0):
            raise ValueError(f"beta_min must be > 0, got {beta_min}")
        if beta_min > beta_max:
            raise ValueError(f"beta_min must be <= beta_max, got beta_min={beta_min} > beta_max={beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t: Tensor) -> Tensor:
        r"""The rate :math:`\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})`."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral(self, t: Tensor) -> Tensor:
        r"""Its integral :math:`B(t) = \int_0^t \beta(s)\,ds` in closed form."""
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def inverse_integral(self, b: Tensor) -> Tensor:
        r"""Solve :math:`B(t) = b` for :math:`t` (the positive root of the quadratic)."""
        slope = self.beta_max - self.beta_min
        if slope == 0:
            return b / self.beta_min
        # t = (-beta_min + sqrt(beta_min^2 + 2 slope b)) / slope, written to avoid cancellation
        return 2 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * slope * b))

    def config(self) -> dict:
        """The parameters as a JSON-ready dict (stored in checkpoint cards)."""
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max}

    def __repr__(self) -> str:
        return f"LinearBeta(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})"


class CosineBeta:
    r"""Cosine schedule of Nichol & Dhariwal (2021), made continuous, with its rate clipped.

    Nichol & Dhariwal define :math:`\bar\alpha(t) = f(t)/f(0)` with
    :math:`f(t) = \cos^2\!\big(\tfrac{t + s}{1 + s}\tfrac{\pi}{2}\big)` and offset :math:`s = 0.008`.
    In continuous time the rate is

    .. math:: \beta(t) = -\frac{d}{dt}\log\bar\alpha(t)
              = \frac{\pi}{1 + s}\tan\!\Big(\frac{t + s}{1 + s}\frac{\pi}{2}\Big),

    which diverges at :math:`t = 1` (:math:`\bar\alpha(1) = 0`): an SDE with that rate has an
    infinitely stiff end and no sampler can take a finite step there. Nichol & Dhariwal clip the
    discrete betas at 0.999 for the same reason. Here the continuous rate is clipped at
    ``beta_max`` (default 20, the same maximal rate as :class:`LinearBeta`, so both schedules are
    stable at the same step sizes): beyond the time :math:`t_c` where
    :math:`\beta(t_c) = \beta_{\max}` the rate stays constant. Both pieces integrate in closed form:

    .. math::
        B(t) = \begin{cases} -\log\bar\alpha(t) & t \le t_c \\
        -\log\bar\alpha(t_c) + \beta_{\max}(t - t_c) & t > t_c. \end{cases}
    """

    name = "cosine"

    def __init__(self, s: float = 0.008, beta_max: float = 20.0):
        if not (s > 0):
            raise ValueError(f"s must be > 0, got {s}")
        beta0 = math.pi / (1 + s) * math.tan(s / (1 + s) * math.pi / 2)
        if not (beta_max > beta0):
            raise ValueError(f"beta_max must exceed beta(0) = {beta0:.4g} for s={s}, got {beta_max}")
        self.s, self.beta_max = float(s), float(beta_max)
        self._log_f0 = 2 * math.log(math.cos(s / (1 + s) * math.pi / 2))
        self._tan_phi0 = math.tan(s / (1 + s) * math.pi / 2)
        # beta(t_c) = beta_max  <=>  tan(phi_c) = beta_max (1 + s) / pi
        phi_c = math.atan(beta_max * (1 + s) / math.pi)
        self.t_c = phi_c * 2 / math.pi * (1 + s) - s
        self._b_c = self._log_f0 - 2 * math.log(math.cos(phi_c))

    def _phi(self, t: Tensor) -> Tensor:
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    def beta(self, t: Tensor) -> Tensor:
        r"""The rate :math:`\beta(t) = -\frac{d}{dt}\log\bar\alpha(t)`, constant at :math:`\beta_{\max}` beyond :math:`t_c`."""
        tc = torch.clamp(t, max=self.t_c)
        return torch.where(t <= self.t_c, math.pi / (1 + self.s) * torch.tan(self._phi(tc)), torch.full_like(t, self.beta_max))

    def integral(self, t: Tensor) -> Tensor:
        r"""Its integral :math:`B(t) = -\log(\bar\alpha(t)/\bar\alpha(0))` in closed form."""
        # -log(f(t)/f(0)) with cos(phi0 + d)/cos(phi0) = 1 - 2 sin^2(d/2) - tan(phi0) sin(d),
        # d = t/(1+s) pi/2: exactly 0 at t = 0 and no cancellation for small t in float32.
        d = torch.clamp(t, max=self.t_c) / (1 + self.s) * (math.pi / 2)
        head = -2 * torch.log1p(-2 * torch.sin(0.5 * d) ** 2 - self._tan_phi0 * torch.sin(d))
        return head + self.beta_max * torch.clamp(t - self.t_c, min=0)

    def inverse_integral(self, b: Tensor) -> Tensor:
        r"""Solve :math:`B(t) = b`: invert the cosine on :math:`[0, t_c]`, the line beyond."""
        b_head = torch.clamp(b, max=self._b_c)
        phi = torch.arccos(torch.exp(0.5 * (self._log_f0 - b_head)).clamp(max=1.0))
        t_head = phi * 2 / math.pi * (1 + self.s) - self.s
        return torch.where(b <= self._b_c, t_head, self.t_c + (b - self._b_c) / self.beta_max)

    def config(self) -> dict:
        """The parameters as a JSON-ready dict (stored in checkpoint cards)."""
        return {"name": self.name, "s": self.s, "beta_max": self.beta_max}

    def __repr__(self) -> str:
        return f"CosineBeta(s={self.s:g}, beta_max={self.beta_max:g})"


class GeometricSigma:
    r"""Geometric noise levels of the VE SDE (Song et al. 2021, eq. 9 and App. C).

    .. math::
        \sigma(t) = \sigma_{\min}\Big(\frac{\sigma_{\max}}{\sigma_{\min}}\Big)^t, \qquad
        \frac{d\sigma^2(t)}{dt} = 2\sigma^2(t)\log\frac{\sigma_{\max}}{\sigma_{\min}}.
    """

    name = "geometric"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not (sigma_min > 0):
            raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
        if not (sigma_min < sigma_max):
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min} >= sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.log_ratio = math.log(sigma_max / sigma_min)

    def sigma(self, t: Tensor) -> Tensor:
        r"""The noise level :math:`\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t`."""
        return self.sigma_min * torch.exp(t * self.log_ratio)

    def dsigma2_dt(self, t: Tensor) -> Tensor:
        r"""The VE SDE's squared diffusion :math:`g^2(t) = d\sigma^2/dt`."""
        return 2 * self.sigma(t) ** 2 * self.log_ratio

    def inverse_sigma(self, sigma: Tensor) -> Tensor:
        """Solve :math:`\\sigma(t) = \\sigma` for :math:`t`."""
        return torch.log(sigma / self.sigma_min) / self.log_ratio

    def config(self) -> dict:
        """The parameters as a JSON-ready dict (stored in checkpoint cards)."""
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def __repr__(self) -> str:
        return f"GeometricSigma(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"


SCHEDULES = {"linear": LinearBeta, "cosine": CosineBeta}


def make_schedule(schedule, **kwargs):
    """A beta schedule from its name (``"linear"`` or ``"cosine"``) or an existing schedule object."""
    if isinstance(schedule, (LinearBeta, CosineBeta)):
        if kwargs:
            raise TypeError("schedule parameters can only be given together with a schedule name")
        return schedule
    if not isinstance(schedule, str) or schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)} or a schedule object, got {schedule!r}")
    return SCHEDULES[schedule](**kwargs)
