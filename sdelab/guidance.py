r"""Conditional generation with an unconditional sampler: classifier guidance and classifier-free guidance.

**Bayes' rule for scores.** For a class label :math:`y`, :math:`p_t(x \mid y) = p_t(y \mid x)\,p_t(x)/p(y)`,
and :math:`p(y)` does not depend on :math:`x`, so (Song et al. 2021, eq. 14 / App. I.1)

.. math:: \nabla_x\log p_t(x \mid y) = \nabla_x\log p_t(x) + \nabla_x\log p_t(y \mid x).

A *noisy* classifier :math:`p_t(y \mid x)` (trained on perturbed data :math:`x_t`, one for each
SDE) supplies the second term by automatic differentiation. With a **guidance scale** :math:`w`
the sampled law is :math:`\propto p_t(x)\,p_t(y \mid x)^w` (Dhariwal & Nichol 2021):

.. math:: s_w(x, t) = s(x, t) + w\,\nabla_x\log p_t(y \mid x) \qquad (\text{:func:`classifier_guidance`}).

:math:`w = 1` is the exact conditional score; :math:`w > 1` sharpens towards the classifier's
modes (higher fidelity, lower diversity); :math:`w = 0` is unconditional sampling.

**Classifier-free guidance** (Ho & Salimans 2022) needs no classifier: one network trained with
label dropout gives a conditional :math:`s(x, t, y)` and an unconditional :math:`s(x, t)`
(the null label), and since :math:`\nabla\log p_t(y \mid x) = s(x, t, y) - s(x, t)`,

.. math:: \tilde s_w = (1 + w)\,s(x, t, y) - w\,s(x, t) = s(x, t) + (1 + w)\big[s(x, t, y) - s(x, t)\big]
          \qquad (\text{:func:`classifier_free_guidance`}),

i.e. classifier guidance at scale :math:`1 + w` with the *implicit* classifier of the network.

Both return a plain ``score_fn(x, t)``, so every sampler of :mod:`sdelab.samplers` (Euler--Maruyama,
predictor-corrector, the ODE solvers) and every SDE works unchanged. The samplers run under
``torch.no_grad()``; the guided score switches gradients on for the classifier only.

For tests and pictures, :meth:`sdelab.toy.GaussianMixture.logits_fn` is the *exact* noisy
classifier of a Gaussian mixture (the component posterior :math:`p_t(k \mid x)` in closed form).
"""

from __future__ import annotations

import numbers
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from . import checks
from .sde import SDE
from .utils import ScoreFn, Tensor, TimeLike, batch_time, expand

__all__ = [
    "LogitsFn",
    "classifier_log_prob_grad",
    "classifier_guidance",
    "classifier_free_guidance",
    "classifier_accuracy",
    "noisy_classifier_accuracy",
]

LogitsFn = Callable[[Tensor, Tensor], Tensor]


def _labels(y, x: Tensor, num_classes: int | None = None) -> Tensor:
    """``y`` (an int or a ``(B,)`` integer tensor) as a ``(B,)`` long tensor on ``x``'s device."""
    if isinstance(y, bool) or not isinstance(y, (numbers.Integral, Tensor)):
        raise TypeError(f"y must be an int class label or a (B,) integer tensor, got {type(y).__name__}")
    y = torch.as_tensor(y, device=x.device)
    if y.is_floating_point() or y.is_complex():
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if y.dim() == 0:
        y = y.expand(x.shape[0])
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must be an int or have shape (B,) = ({x.shape[0]},), got shape {tuple(y.shape)}")
    if num_classes is not None and ((y < 0).any() or (y >= num_classes).any()):
        raise ValueError(f"y must lie in [0, {num_classes - 1}], got labels {y.unique().tolist()}")
    return y.long()


def classifier_log_prob_grad(logits_fn: LogitsFn, x: Tensor, t: TimeLike, y) -> Tensor:
    r""":math:`\nabla_x\log p_t(y \mid x)` with :math:`\log p_t(y \mid x) = \mathrm{log\_softmax}(\ell(x, t))_y`.

    ``logits_fn(x, t) -> (B, K)`` is the noisy classifier (e.g. :func:`sdelab.nets.logits_fn_from_net`
    or :meth:`sdelab.toy.GaussianMixture.logits_fn`); ``y`` an int or ``(B,)`` labels. Gradients are
    enabled here even under ``torch.no_grad()``; the result is detached, shaped and typed like ``x``.
    Samples are independent, so the gradient of the batch *sum* is each sample's own gradient.
    """
    checks.callable_(logits_fn, "logits_fn", "logits_fn(x, t) -> (B, num_classes) logits")
    checks.tensor(x, "x", min_ndim=1, floating=True, finite=False)
    return _log_prob_grad(logits_fn, x, t, _labels(y, x), check_range=True)


def _log_prob_grad(logits_fn: LogitsFn, x: Tensor, t: TimeLike, y: Tensor, check_range: bool) -> Tensor:
    """The maths of :func:`classifier_log_prob_grad`; the label range (a host read) only if asked."""
    t = batch_time(t, x)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = logits_fn(xg, t)
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"logits_fn must return (B, num_classes) = ({x.shape[0]}, K) logits, got "
                             f"shape {tuple(logits.shape)}")
        if check_range and ((y >= logits.shape[1]).any() or (y < 0).any()):
            raise ValueError(f"y must lie in [0, {logits.shape[1] - 1}], got labels {y.unique().tolist()}")
        log_p = F.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=-1)
        (grad,) = torch.autograd.grad(log_p.gather(1, y[:, None]).sum(), xg)
    return grad.detach().to(x.dtype)


def classifier_guidance(score_fn: ScoreFn, logits_fn: LogitsFn, y, scale: float = 1.0) -> ScoreFn:
    r"""Classifier-guided score :math:`s(x, t) + w\,\nabla_x\log p_t(y \mid x)` (Song et al. eq. 14).

    Args:
        score_fn: the unconditional score ``score_fn(x, t)``.
        logits_fn: the noisy classifier ``logits_fn(x, t) -> (B, K)`` for the *same* SDE (it must
            have seen data perturbed as :math:`x_t`).
        y: the target class, an int or a ``(B,)`` tensor of labels (one per sample).
        scale: the guidance scale :math:`w` (1 = the conditional score; 0 = unconditional), a
            finite real number (negative values push away from the class).

    Returns a ``score_fn(x, t)`` for any sampler. Each call costs one score evaluation and one
    classifier forward and backward pass. The labels are checked against the classifier's
    number of classes at the first call only (a host read), not at every evaluation.
    """
    checks.callable_(score_fn, "score_fn", "score_fn(x, t)")
    checks.callable_(logits_fn, "logits_fn", "logits_fn(x, t) -> (B, num_classes) logits")
    w = checks.real(scale, "scale")
    if isinstance(y, bool) or not isinstance(y, (numbers.Integral, Tensor)):
        raise TypeError(f"y must be an int class label or a (B,) integer tensor, got {type(y).__name__}")
    first = [True]

    def guided(x: Tensor, t: TimeLike) -> Tensor:
        labels = _labels(y, x)
        grad = _log_prob_grad(logits_fn, x, t, labels, check_range=first[0])
        first[0] = False
        return score_fn(x, t) + w * grad

    return guided


def classifier_free_guidance(cond_score_fn: ScoreFn, uncond_score_fn: ScoreFn, scale: float) -> ScoreFn:
    r"""Classifier-free guided score :math:`(1 + w)\,s(x, t, y) - w\,s(x, t)` (Ho & Salimans 2022, eq. 6).

    Args:
        cond_score_fn: the conditional score for the target label(s), e.g.
            ``score_fn_from_net(net, sde, y=labels)`` of a class-conditional network.
        uncond_score_fn: the unconditional score of the same network (its null label, e.g.
            ``score_fn_from_net(net, sde)``).
        scale: :math:`w \ge 0` in Ho & Salimans' convention: 0 = the conditional model, and
            :math:`w` corresponds to classifier guidance at scale :math:`1 + w`. A negative
            :math:`w` is refused: below 0 the formula stops being a guided score and extrapolates
            away from the condition (:math:`w = -1` is the unconditional model itself).

    Each call evaluates both scores (two network evaluations).
    """
    checks.callable_(cond_score_fn, "cond_score_fn", "cond_score_fn(x, t)")
    checks.callable_(uncond_score_fn, "uncond_score_fn", "uncond_score_fn(x, t)")
    w = checks.real(scale, "scale", nonnegative=True)

    def guided(x: Tensor, t: TimeLike) -> Tensor:
        return (1 + w) * cond_score_fn(x, t) - w * uncond_score_fn(x, t)

    return guided


# ----------------------------------------------------------------------------------------------
# Measuring classifiers (the noisy classifier's accuracy against t; a clean classifier's accuracy)
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def classifier_accuracy(logits_fn: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, *, batch_size: int = 500) -> float:
    """Fraction of ``x`` whose arg-max class under ``logits_fn(x)`` equals ``y`` (in batches)."""
    checks.callable_(logits_fn, "logits_fn", "logits_fn(x) -> (B, num_classes) logits")
    y = _labels(y, x)
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        correct += (logits_fn(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum().item()
    return correct / x.shape[0]


@torch.no_grad()
def noisy_classifier_accuracy(logits_fn: LogitsFn, sde: SDE, x0: Tensor, y: Tensor, times: Sequence[float], *,
                              generator: torch.Generator | None = None, batch_size: int = 500) -> list[float]:
    r"""Accuracy of a noisy classifier on :math:`x_t = \alpha(t)x_0 + \sigma(t)z` at each time in ``times``.

    One fresh :math:`z` per image and time, drawn from ``generator``. The curve falls from the
    clean accuracy at :math:`t \approx 0` to chance (:math:`1/K`) where the noise drowns the signal.
    """
    checks.callable_(logits_fn, "logits_fn", "logits_fn(x, t) -> (B, num_classes) logits")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdelab.sde.SDE, got {type(sde).__name__}")
    y = _labels(y, x0)
    out = []
    for t in times:
        correct = 0
        for i in range(0, x0.shape[0], batch_size):
            xb = x0[i:i + batch_size]
            tt = batch_time(float(t), xb)
            alpha, sigma = sde.marginal_coeffs(tt)
            z = torch.randn(xb.shape, generator=generator, device=xb.device, dtype=xb.dtype)
            x_t = expand(alpha, xb) * xb + expand(sigma, xb) * z
            correct += (logits_fn(x_t, tt).argmax(-1) == y[i:i + batch_size]).sum().item()
        out.append(correct / x0.shape[0])
    return out
