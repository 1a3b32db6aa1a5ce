r"""What the network predicts (:math:`\epsilon, x_0, v`, the score), and EDM scalings.

Every SDE of sdelab has the Gaussian transition kernel :math:`x_t = \alpha(t)x_0 +
\sigma(t)\epsilon`, :math:`\epsilon \sim \mathcal N(0, I)`
(:meth:`sdelab.sde.SDE.marginal_coeffs`). A network may be trained to predict any of
four quantities, and each is an affine function of each other one (given :math:`x_t`):

.. math::
    s = -\frac{\hat\epsilon}{\sigma}, \qquad
    \hat x_0 = \frac{x_t - \sigma\hat\epsilon}{\alpha}
             = \frac{x_t + \sigma^2 s}{\alpha}, \qquad
    \hat v = \alpha\hat\epsilon - \sigma\hat x_0 .

The middle identity is Tweedie's formula (Efron 2011): the posterior mean :math:`\mathbb
E[x_0 \mid x_t]` is an affine function of the score :math:`\nabla\log p_t(x_t)`, so the
optimal predictor of *every* target is the same function of the exact score. :math:`v`
is the "velocity" of Salimans & Ho (2022); its inverse for general :math:`(\alpha,
\sigma)` is :math:`\hat x_0 = (\alpha x_t - \sigma\hat v)/(\alpha^2 + \sigma^2)`,
:math:`\hat\epsilon = (\sigma x_t + \alpha\hat v)/(\alpha^2 + \sigma^2)`.

**Loss weights.** A squared error in one target is a weighted error in :math:`x_0`:
:math:`\|\hat y - y\|^2 = w_y(t)\,\|\hat x_0 - x_0\|^2` with (:func:`x0_loss_weight`)

.. math::
    w_{x_0} = 1, \quad w_\epsilon = \frac{\alpha^2}{\sigma^2} = \mathrm{SNR}, \quad
    w_v = \frac{(\alpha^2 + \sigma^2)^2}{\sigma^2}, \quad
    w_s = \frac{\alpha^2}{\sigma^4}.

**EDM preconditioning** (Karras et al. 2022, Table 1 and eq. 7). In the variables of the
VE form, :math:`\hat x = x_t/\alpha`, :math:`\hat\sigma = \sigma/\alpha` (so :math:`\hat
x = x_0 + \hat\sigma\epsilon`), the denoiser is a raw network :math:`F_\theta` wrapped
as

.. math::
    D_\theta(\hat x; \hat\sigma) = c_{\rm skip}(\hat\sigma)\,\hat x
        + c_{\rm out}(\hat\sigma)\,
          F_\theta\big(c_{\rm in}(\hat\sigma)\,\hat x;\ c_{\rm noise}(\hat\sigma)\big),

    c_{\rm skip} = \frac{\sigma_d^2}{\hat\sigma^2 + \sigma_d^2}, \quad
    c_{\rm out} = \frac{\hat\sigma\sigma_d}{\sqrt{\hat\sigma^2 + \sigma_d^2}}, \quad
    c_{\rm in} = \frac{1}{\sqrt{\hat\sigma^2 + \sigma_d^2}}, \quad
    c_{\rm noise} = \tfrac14\ln\hat\sigma,

trained with :math:`\ln\hat\sigma \sim \mathcal N(P_{\rm mean}, P_{\rm std}^2)` and the
weight :math:`\lambda(\hat\sigma) = 1/c_{\rm out}^2 = (\hat\sigma^2 +
\sigma_d^2)/(\hat\sigma\sigma_d)^2`, which makes the network's own target :math:`(x_0 -
c_{\rm skip}\hat x)/c_{\rm out}` have unit variance at every noise level. The score of
any sdelab SDE follows from a denoiser by Tweedie: :math:`s(x_t, t) = (\alpha
D(x_t/\alpha; \sigma/\alpha) - x_t)/\sigma^2` (:func:`score_fn_from_denoiser`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .utils import ScoreFn, Tensor, TimeLike, batch_time, check_finite, expand

__all__ = [
    "TARGETS",
    "convert",
    "denoiser_from_score_fn",
    "edm_denoiser",
    "edm_loss",
    "edm_loss_weight",
    "edm_scalings",
    "prediction_fn",
    "score_fn_from_denoiser",
    "score_fn_from_prediction",
    "x0_loss_weight",
]

TARGETS = ("eps", "x0", "v", "score")
Denoiser = Callable[[Tensor, Tensor], Tensor]


def _check_target(name: str, arg: str) -> None:
    if name not in TARGETS:
        raise ValueError(f"{arg} must be one of {TARGETS}, got {name!r}")


def _as_batch(v, x: Tensor, name: str) -> Tensor:
    """A float or ``(B,)`` coefficient as a tensor broadcastable against ``x``."""
    if isinstance(v, Tensor) and v.dim() == 1:
        if v.shape[0] != x.shape[0]:
            raise ValueError(
                f"{name} must be a float or have shape ({x.shape[0]},), "
                f"got {tuple(v.shape)}"
            )
        return expand(v.to(x.dtype), x)
    if isinstance(v, Tensor) and v.dim() != 0:
        raise ValueError(
            f"{name} must be a float or a (B,) tensor, got shape {tuple(v.shape)}"
        )
    return torch.as_tensor(v, dtype=x.dtype, device=x.device)


def _to_eps(pred: Tensor, x: Tensor, a: Tensor, s: Tensor, source: str) -> Tensor:
    if source == "eps":
        return pred
    if source == "score":
        return -s * pred
    if source == "x0":
        return (x - a * pred) / s
    return (s * x + a * pred) / (a**2 + s**2)  # v


def _from_eps(eps: Tensor, x: Tensor, a: Tensor, s: Tensor, target: str) -> Tensor:
    if target == "eps":
        return eps
    if target == "score":
        return -eps / s
    x0 = (x - s * eps) / a
    return x0 if target == "x0" else a * eps - s * x0


def convert(
    pred: Tensor, x: Tensor, alpha, sigma, *, source: str, target: str
) -> Tensor:
    r"""Turn a prediction of ``source`` at :math:`x_t` into the equivalent prediction of
    ``target``.

    ``source`` and ``target`` are names in :data:`TARGETS` (``"eps"``, ``"x0"``,
    ``"v"``, ``"score"``); ``alpha``, ``sigma`` are floats or ``(B,)`` tensors, the
    kernel coefficients at the time of ``x`` (module docstring for the formulas).
    ``sigma`` must be positive, and ``alpha`` too when ``target`` is ``"x0"`` or
    ``"v"``.
    """
    _check_target(source, "source")
    _check_target(target, "target")
    if pred.shape != x.shape:
        raise ValueError(
            f"pred must have the shape of x {tuple(x.shape)}, got {tuple(pred.shape)}"
        )
    a, s = _as_batch(alpha, x, "alpha"), _as_batch(sigma, x, "sigma")
    return _from_eps(_to_eps(pred, x, a, s, source), x, a, s, target)


def _coeffs(sde, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor, Tensor]:
    t = batch_time(t, x)
    alpha, sigma = sde.marginal_coeffs(t)
    return t, expand(alpha.to(x.dtype), x), expand(sigma.to(x.dtype), x)


def prediction_fn(
    score_fn: ScoreFn, sde, target: str
) -> Callable[[Tensor, TimeLike], Tensor]:
    r"""``fn(x, t)``: the ``target`` prediction (``eps``, ``x0``, ``v``) of a score.

    For the exact score of a distribution this is the exact minimiser of the
    squared-error loss for that target: :math:`\mathbb E[\epsilon \mid x_t]`,
    :math:`\mathbb E[x_0 \mid x_t]` (Tweedie) or :math:`\mathbb E[v \mid x_t]`.
    """
    _check_target(target, "target")
    if not callable(score_fn):
        raise TypeError(
            "score_fn must be callable as score_fn(x, t), "
            f"got {type(score_fn).__name__}"
        )

    def fn(x: Tensor, t: TimeLike) -> Tensor:
        t, a, s = _coeffs(sde, x, t)
        return _from_eps(_to_eps(score_fn(x, t), x, a, s, "score"), x, a, s, target)

    return fn


def score_fn_from_prediction(
    pred_fn: Callable[[Tensor, Tensor], Tensor], sde, source: str
) -> ScoreFn:
    r"""``score_fn(x, t)`` from a network that predicts ``source`` (``"eps"``, ``"x0"``,
    ``"v"``).

    The returned function is what every sampler and
    :func:`sdelab.likelihood.log_likelihood` take.
    """
    _check_target(source, "source")
    if not callable(pred_fn):
        raise TypeError(
            f"pred_fn must be callable as pred_fn(x, t), got {type(pred_fn).__name__}"
        )

    def score_fn(x: Tensor, t: TimeLike) -> Tensor:
        t, a, s = _coeffs(sde, x, t)
        return _from_eps(_to_eps(pred_fn(x, t), x, a, s, source), x, a, s, "score")

    return score_fn


def x0_loss_weight(target: str, alpha, sigma):
    r"""The factor :math:`w_y` in :math:`\|\hat y - y\|^2 = w_y\|\hat x_0 - x_0\|^2`.

    :math:`w_{x_0} = 1`, :math:`w_\epsilon = \alpha^2/\sigma^2`, :math:`w_v =
    (\alpha^2+\sigma^2)^2/\sigma^2`, :math:`w_s = \alpha^2/\sigma^4`: how much a squared
    error in ``target`` weighs the denoising error at each noise level (Salimans & Ho
    2022, Sec. 4; Kingma et al. 2021). Works on floats, arrays and tensors alike.
    """
    _check_target(target, "target")
    if target == "x0":
        return alpha * 0 + 1
    if target == "eps":
        return alpha**2 / sigma**2
    if target == "v":
        return (alpha**2 + sigma**2) ** 2 / sigma**2
    return alpha**2 / sigma**4


# --------------------------------------------------------------------------------------
# EDM preconditioning (Karras et al. 2022)
# --------------------------------------------------------------------------------------
def _check_sigma_data(sigma_data) -> float:
    if (
        isinstance(sigma_data, bool)
        or not isinstance(sigma_data, (int, float))
        or not sigma_data > 0
    ):
        raise ValueError(f"sigma_data must be a positive number, got {sigma_data!r}")
    return float(sigma_data)


def edm_scalings(
    sigma: Tensor, sigma_data: float = 0.5
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""``(c_skip, c_out, c_in, c_noise)`` of Karras et al. (2022), Table 1.

    .. math::
        c_{\rm skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2},\quad
        c_{\rm out} = \frac{\sigma\sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}},\quad
        c_{\rm in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}},\quad
        c_{\rm noise} = \tfrac14\ln\sigma .

    ``sigma`` is the noise level of the VE form (:math:`\hat\sigma =
    \sigma(t)/\alpha(t)` for a VP-type SDE); ``sigma_data`` the standard deviation of
    the data.
    """
    sd = _check_sigma_data(sigma_data)
    sigma = torch.as_tensor(sigma)
    r = torch.rsqrt(sigma**2 + sd**2)
    return sd**2 * r**2, sigma * sd * r, r, 0.25 * torch.log(sigma)


def edm_loss_weight(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    r""":math:`\lambda(\sigma) = (\sigma^2 + \sigma_d^2)/(\sigma\sigma_d)^2 = 1/c_{\rm
    out}^2` (Karras et al. Table 1).
    """
    sd = _check_sigma_data(sigma_data)
    sigma = torch.as_tensor(sigma)
    return (sigma**2 + sd**2) / (sigma * sd) ** 2


def edm_denoiser(
    net: Callable[[Tensor, Tensor], Tensor], sigma_data: float = 0.5
) -> Denoiser:
    r"""Wrap a raw network ``net(x, c_noise)`` as the EDM denoiser.

    .. math:: D_\theta(\hat x; \hat\sigma) = c_{\rm skip}\hat x
              + c_{\rm out}F_\theta(c_{\rm in}\hat x;\ c_{\rm noise})

    (Karras et al. 2022, eq. 7). ``net`` gets the scaled input and the ``(B,)`` tensor
    :math:`c_{\rm noise} = \frac14\ln\hat\sigma` as its time argument (an
    :class:`~sdelab.nets.MLPScoreNet` or :class:`~sdelab.nets.ScoreNet` fits as is). The
    returned ``denoiser(x, sigma)`` takes a float or ``(B,)`` noise level and estimates
    :math:`\mathbb E[x_0 \mid \hat x]`.
    """
    if not callable(net):
        raise TypeError(
            f"net must be callable as net(x, c_noise), got {type(net).__name__}"
        )
    sd = _check_sigma_data(sigma_data)

    def denoiser(x: Tensor, sigma: TimeLike) -> Tensor:
        sigma = batch_time(sigma, x, "sigma")
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma, sd)
        return expand(c_skip, x) * x + expand(c_out, x) * net(
            expand(c_in, x) * x, c_noise
        )

    return denoiser


def edm_loss(
    denoiser: Denoiser,
    x0: Tensor,
    *,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    generator: torch.Generator | None = None,
    sigma: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""The EDM training loss (Karras et al. 2022, eq. 2 with Table 1's choices).

    .. math:: \mathbb E_{\ln\sigma\sim\mathcal N(P_{\rm mean}, P_{\rm std}^2)}\,
              \mathbb E_{x_0, n}\,\lambda(\sigma)\,
              \tfrac1D\big\|D_\theta(x_0 + \sigma n;\ \sigma) - x_0\big\|^2,
              \qquad \lambda = \frac{\sigma^2 + \sigma_d^2}{(\sigma\sigma_d)^2}.

    ``denoiser(x, sigma)`` is any denoiser (wrapped by :func:`edm_denoiser` or not: the
    weight is the same, so two parametrisations compare on one objective). ``sigma`` (a
    ``(B,)`` tensor) overrides the log-normal draw. ``reduction`` is ``"mean"`` or
    ``"none"`` (per sample).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    check_finite(x0, "x0")
    sd = _check_sigma_data(sigma_data)
    if sigma is None:
        n = torch.randn(
            x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype
        )
        sigma = torch.exp(p_mean + p_std * n)
    sigma = batch_time(sigma, x0, "sigma")
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    err = (
        (denoiser(x0 + expand(sigma, x0) * noise, sigma) - x0).flatten(1).pow(2).mean(1)
    )
    loss = edm_loss_weight(sigma, sd) * err
    return loss.mean() if reduction == "mean" else loss


def score_fn_from_denoiser(denoiser: Denoiser, sde) -> ScoreFn:
    r"""The score of ``sde`` from a VE-form denoiser :math:`D(\hat x; \hat\sigma)`.

    With :math:`\hat x = x/\alpha(t)` and :math:`\hat\sigma = \sigma(t)/\alpha(t)`,
    Tweedie's formula gives

    .. math:: s(x, t) = \frac{\alpha\,D(x/\alpha;\ \sigma/\alpha) - x}{\sigma^2},
              \qquad \alpha = \alpha(t),\ \sigma = \sigma(t).

    This is how an EDM-trained denoiser runs in every sdelab sampler, for any SDE whose
    :math:`\hat\sigma(t)` covers the noise levels it was trained on.
    """
    if not callable(denoiser):
        raise TypeError(
            "denoiser must be callable as denoiser(x, sigma), "
            f"got {type(denoiser).__name__}"
        )

    def score_fn(x: Tensor, t: TimeLike) -> Tensor:
        t = batch_time(t, x)
        alpha, sigma = sde.marginal_coeffs(t)
        alpha, sigma = alpha.to(x.dtype), sigma.to(x.dtype)
        a, s = expand(alpha, x), expand(sigma, x)
        return (a * denoiser(x / a, sigma / alpha) - x) / s**2

    return score_fn


def denoiser_from_score_fn(score_fn: ScoreFn, sde) -> Denoiser:
    r"""The VE-form denoiser :math:`D(\hat x; \hat\sigma) = \mathbb E[x_0 \mid \hat x]`
    implied by a score of ``sde``.

    The time with :math:`\sigma(t)/\alpha(t) = \hat\sigma` is
    :meth:`~sdelab.sde.SDE.t_from_half_log_snr` at :math:`\lambda = -\ln\hat\sigma`;
    then :math:`D = (x_t + \sigma^2 s(x_t, t))/\alpha` with :math:`x_t = \alpha\hat x`
    (Tweedie). Noise levels beyond :math:`\hat\sigma(T)` map to times outside :math:`[0,
    T]` and raise ``ValueError``.
    """
    if not callable(score_fn):
        raise TypeError(
            "score_fn must be callable as score_fn(x, t), "
            f"got {type(score_fn).__name__}"
        )

    def denoiser(x: Tensor, sigma: TimeLike) -> Tensor:
        sigma = batch_time(sigma, x, "sigma")
        lam = -torch.log(sigma.to(torch.float64))
        t = sde.t_from_half_log_snr(lam).to(x.dtype)
        alpha, sig = sde.marginal_coeffs(t)
        a, s = expand(alpha.to(x.dtype), x), expand(sig.to(x.dtype), x)
        x_t = a * x
        return (x_t + s**2 * score_fn(x_t, t)) / a

    return denoiser
