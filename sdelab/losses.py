r"""Denoising score matching and the noisy-classifier loss.

**Denoising score matching** (Vincent 2011; Song et al. 2021, eq. 7). With the Gaussian kernel
:math:`p_{0t}(x_t \mid x_0) = \mathcal N(\alpha x_0, \sigma^2 I)`, i.e. :math:`x_t = \alpha x_0 + \sigma z`,
its score is :math:`\nabla_{x_t}\log p_{0t} = -z/\sigma`, and the objective

.. math:: J(\theta) = \mathbb E_{t\sim\mathcal U[\epsilon, T]}\,\lambda(t)\,
          \mathbb E_{x_0, z}\big\|s_\theta(x_t, t) + z/\sigma(t)\big\|_2^2

has the same minimiser as explicit score matching against :math:`\nabla\log p_t`. With the
:math:`\epsilon`-parametrisation :math:`s_\theta = -\epsilon_\theta/\sigma` of :mod:`sdelab.nets`,

.. math:: \lambda(t)\,\|s_\theta + z/\sigma\|^2 = \frac{\lambda(t)}{\sigma(t)^2}\,\|\epsilon_\theta(x_t, t) - z\|^2 ,

so the default weighting :math:`\lambda = \sigma^2` (Song et al.'s choice, :math:`\propto 1/\mathbb E\|\nabla\log p_{0t}\|^2`)
is the plain noise-prediction error (Ho et al. 2020), and the *likelihood weighting*
:math:`\lambda = g(t)^2` (Song, Durkan et al. 2021, Thm. 1) multiplies it by :math:`w(t) = g^2/\sigma^2`.

**Importance sampling.** For every SDE here :math:`g(t)^2/\sigma(t)^2 = -2\,\frac{d}{dt}\log\mathrm{SNR}^{1/2}(t)`
with :math:`\log\mathrm{SNR}^{1/2} = \log\alpha - \log\sigma` (:meth:`sdelab.sde.SDE.half_log_snr`); e.g. for VP,
:math:`\frac{d}{dt}[\log\alpha - \log\sigma] = -\frac{\beta}{2} - \frac{\beta e^{-B}}{2(1 - e^{-B})} = -\frac{\beta}{2\sigma^2}`.
So drawing :math:`t` with density :math:`q(t) = w(t)/Z` is drawing :math:`\lambda_{\rm snr}` uniformly
on :math:`[\lambda_{\rm snr}(T), \lambda_{\rm snr}(\epsilon)]` and mapping back with
:meth:`~sdelab.sde.SDE.t_from_half_log_snr`, with :math:`Z = 2[\lambda_{\rm snr}(\epsilon) - \lambda_{\rm snr}(T)]`;
the per-sample weight becomes the constant :math:`Z/(T-\epsilon)` and the estimator stays unbiased
for the same :math:`J`.

**Units.** Every loss here is per sample :math:`\frac1D w(t)\|\epsilon_\theta - z\|^2` with :math:`D`
the number of entries of one sample (so image sizes compare), averaged over the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .nets import logits_fn_from_net, net_eps
from .utils import Tensor, batch_time, check_finite, expand

__all__ = [
    "WEIGHTINGS",
    "ClassifierObjective",
    "DSMObjective",
    "drop_labels",
    "dsm_loss",
    "likelihood_weight",
    "noisy_classifier_loss",
    "sample_time",
]

WEIGHTINGS = ("sigma2", "likelihood")


def _check_weighting(weighting: str) -> None:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def sample_time(n: int, sde, *, importance_sampling: bool = False, generator: torch.Generator | None = None,
                device=None, dtype=None) -> Tensor:
    r"""Draw ``n`` times: :math:`t \sim \mathcal U[\epsilon, T]`, or :math:`q(t) \propto g^2/\sigma^2` (module docstring)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if device is None and generator is not None:
        device = generator.device
    dtype = dtype or torch.get_default_dtype()
    u = torch.rand(n, generator=generator, device=device, dtype=dtype)
    if not importance_sampling:
        return sde.eps + (sde.T - sde.eps) * u
    lam_hi, lam_lo = sde.half_log_snr(sde.eps), sde.half_log_snr(sde.T)
    lam = lam_lo.to(device=u.device, dtype=dtype) + (lam_hi - lam_lo).to(device=u.device, dtype=dtype) * u
    return sde.t_from_half_log_snr(lam).clamp(sde.eps, sde.T)


def likelihood_weight(sde, t: Tensor) -> Tensor:
    r""":math:`w(t) = g(t)^2/\sigma(t)^2`, the factor that turns the :math:`\epsilon`-error into :math:`\lambda = g^2` weighting."""
    _, sigma = sde.marginal_coeffs(t)
    return sde.diffusion(t) ** 2 / sigma**2


def _importance_constant(sde) -> float:
    r""":math:`Z/(T-\epsilon)` with :math:`Z = \int_\epsilon^T g^2/\sigma^2\,dt = 2[\lambda(\epsilon) - \lambda(T)]`."""
    z = 2 * (sde.half_log_snr(sde.eps) - sde.half_log_snr(sde.T)).item()
    return z / (sde.T - sde.eps)


def dsm_loss(eps_fn: Callable[[Tensor, Tensor], Tensor], sde, x0: Tensor, *, weighting: str = "sigma2",
             importance_sampling: bool = False, generator: torch.Generator | None = None,
             t: Tensor | None = None, z: Tensor | None = None, reduction: str = "mean") -> Tensor:
    r"""Denoising score matching (Song et al. eq. 7) in :math:`\epsilon` form; see the module docstring.

    Per sample :math:`\ell = \frac1D w(t)\,\|\epsilon_\theta(x_t, t) - z\|^2` with
    :math:`x_t = \alpha(t)x_0 + \sigma(t)z`, and :math:`w = 1` (``weighting="sigma2"``, i.e.
    :math:`\lambda = \sigma^2`), :math:`w = g^2/\sigma^2` (``"likelihood"``, :math:`\lambda = g^2`), or
    the constant :math:`Z/(T-\epsilon)` for likelihood weighting with ``importance_sampling``.

    Args:
        eps_fn: the noise predictor ``eps_fn(x_t, t)`` (for a network: ``lambda x, t: nets.net_eps(net, sde, x, t)``).
        x0: clean data ``(B, ...)``.
        t, z: optional pre-drawn times ``(B,)`` and noise (shaped like ``x0``); drawn from
            ``generator`` otherwise (``t`` from :func:`sample_time` with ``importance_sampling``).
        reduction: ``"mean"`` over the batch or ``"none"`` for the ``(B,)`` per-sample values.
    """
    _check_weighting(weighting)
    if importance_sampling and weighting != "likelihood":
        raise ValueError("importance_sampling applies to weighting='likelihood' only")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    check_finite(x0, "x0")
    B = x0.shape[0]
    if t is None:
        t = sample_time(B, sde, importance_sampling=importance_sampling, generator=generator,
                        device=x0.device, dtype=x0.dtype)
    t = batch_time(t, x0)
    if z is None:
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    elif z.shape != x0.shape:
        raise ValueError(f"z must have the shape of x0 {tuple(x0.shape)}, got {tuple(z.shape)}")
    alpha, sigma = sde.marginal_coeffs(t)
    x_t = expand(alpha, x0) * x0 + expand(sigma, x0) * z
    err = (eps_fn(x_t, t) - z).float().flatten(1).pow(2).mean(1)
    if weighting == "likelihood":
        err = err * (_importance_constant(sde) if importance_sampling else likelihood_weight(sde, t).float())
    return err.mean() if reduction == "mean" else err


def drop_labels(y: Tensor, p: float, null_label: int, generator: torch.Generator | None = None,
                u: Tensor | None = None) -> Tensor:
    """Replace each label by ``null_label`` with probability ``p`` (classifier-free guidance training).

    ``u`` (uniforms, shape ``(B,)``) may be pre-drawn; label ``i`` is dropped where ``u[i] < p``.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    if u is None:
        u = torch.rand(y.shape[0], generator=generator, device=y.device)
    return torch.where(u < p, torch.full_like(y, null_label), y)


def noisy_classifier_loss(classifier, sde, x0: Tensor, y: Tensor, *, generator: torch.Generator | None = None,
                          t: Tensor | None = None, z: Tensor | None = None, reduction: str = "mean") -> Tensor:
    r"""Cross-entropy of a time-dependent classifier on perturbed data (Song et al. App. I.1).

    :math:`\mathbb E_{t\sim\mathcal U[\epsilon,T]}\mathbb E_{x_0, y, z}\big[-\log p_\phi(y \mid x_t, t)\big]`
    with :math:`x_t = \alpha x_0 + \sigma z`; the classifier sees :math:`c_{\rm in}(t)x_t`
    (:func:`sdelab.nets.logits_fn_from_net`), as the score network does. With ``sde=None`` it is
    the ordinary cross-entropy of a clean classifier ``classifier(x0)``.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    check_finite(x0, "x0")
    if sde is None:
        logits = classifier(x0)
    else:
        if t is None:
            t = sample_time(x0.shape[0], sde, generator=generator, device=x0.device, dtype=x0.dtype)
        t = batch_time(t, x0)
        if z is None:
            z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        alpha, sigma = sde.marginal_coeffs(t)
        x_t = expand(alpha, x0) * x0 + expand(sigma, x0) * z
        logits = logits_fn_from_net(classifier, sde)(x_t, t)
    return F.cross_entropy(logits.float(), y.long(), reduction=reduction)


# ----------------------------------------------------------------------------------------------
# Objectives for the trainer. The trainer draws the randomness of a *global* batch from one
# generator (``draw``) and hands each process its slice, so a run's result does not depend on
# how many processes share the batch (``sdelab.train``).
# ----------------------------------------------------------------------------------------------
class DSMObjective:
    """Denoising score matching of a score network (``net_eps`` parametrisation) for :func:`sdelab.train.train`.

    Args:
        sde: the forward SDE.
        weighting, importance_sampling: as in :func:`dsm_loss`.
        p_uncond: for a class-conditional network, the probability of replacing a label by the
            null label (classifier-free guidance training; Ho & Salimans 2022 use 0.1-0.2).
    """

    def __init__(self, sde, weighting: str = "sigma2", importance_sampling: bool = False, p_uncond: float = 0.0):
        _check_weighting(weighting)
        if importance_sampling and weighting != "likelihood":
            raise ValueError("importance_sampling applies to weighting='likelihood' only")
        if not 0 <= p_uncond <= 1:
            raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond}")
        self.sde, self.weighting, self.importance_sampling, self.p_uncond = sde, weighting, importance_sampling, p_uncond

    def config(self) -> dict:
        """The objective's settings as a JSON-able dict (stored in run folders and cards)."""
        return {"objective": "dsm", "weighting": self.weighting, "importance_sampling": self.importance_sampling,
                "p_uncond": self.p_uncond}

    def draw(self, n: int, sample_shape, generator, device, dtype) -> dict:
        """The randomness of one global batch of ``n``: times ``t``, noise ``z``, label-drop uniforms ``u``."""
        t = sample_time(n, self.sde, importance_sampling=self.importance_sampling, generator=generator,
                        device=device, dtype=dtype)
        z = torch.randn((n, *sample_shape), generator=generator, device=device, dtype=dtype)
        u = torch.rand(n, generator=generator, device=device)
        return {"t": t, "z": z, "u": u}

    def __call__(self, net, x0: Tensor, y: Tensor | None, noise: dict) -> Tensor:
        cond = {}
        if y is not None:
            null = _unwrap(net).num_classes
            if null is None:
                raise TypeError("labels were given but the network is unconditional (num_classes=None)")
            cond["y"] = drop_labels(y, self.p_uncond, null, u=noise["u"]) if self.p_uncond > 0 else y
        return dsm_loss(lambda x, t: net_eps(net, self.sde, x, t, **cond), self.sde, x0, weighting=self.weighting,
                        importance_sampling=self.importance_sampling, t=noise["t"], z=noise["z"])


class ClassifierObjective:
    """Cross-entropy of a noisy (``sde`` given) or clean (``sde=None``) classifier for the trainer."""

    def __init__(self, sde=None):
        self.sde = sde

    def config(self) -> dict:
        """The objective's settings as a JSON-able dict (stored in run folders and cards)."""
        return {"objective": "noisy_classifier" if self.sde is not None else "classifier"}

    def draw(self, n: int, sample_shape, generator, device, dtype) -> dict:
        """Times ``t`` and noise ``z`` of one global batch of ``n`` for a noisy classifier (nothing for a clean one)."""
        if self.sde is None:
            return {}
        t = sample_time(n, self.sde, generator=generator, device=device, dtype=dtype)
        return {"t": t, "z": torch.randn((n, *sample_shape), generator=generator, device=device, dtype=dtype)}

    def __call__(self, net, x0: Tensor, y: Tensor | None, noise: dict) -> Tensor:
        if y is None:
            raise ValueError("a classifier objective needs labels: pass data as (images, labels)")
        return noisy_classifier_loss(net, self.sde, x0, y, t=noise.get("t"), z=noise.get("z"))


def _unwrap(net):
    return getattr(net, "module", net)
