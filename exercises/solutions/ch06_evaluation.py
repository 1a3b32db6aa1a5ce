"""Reference solutions, chapter 6."""

import numpy as np
from scipy.special import rel_entr


def psd_sqrt(a):
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_gaussians(mu1, sigma1, mu2, sigma2):
    r1 = psd_sqrt(sigma1)
    w = np.linalg.eigvalsh(r1 @ sigma2 @ r1)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(np.clip(w, 0, None)).sum())


def inception_score_from_probs(probs):
    marginal = probs.mean(0, keepdims=True)
    return float(np.exp(rel_entr(probs, marginal).sum(1).mean()))
