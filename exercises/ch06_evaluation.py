"""Chapter 6 exercises: evaluating generative models. Fill in each function, then run

    pytest exercises --impl=starter -k ch06
"""

import numpy as np


def frechet_distance_gaussians(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2).
    Hint: the matrix in the last trace is symmetric PSD; its square roots' trace is the sum of
    the square roots of its eigenvalues (np.linalg.eigvalsh; clip tiny negatives to 0).
    """
    raise NotImplementedError("exercise frechet_distance_gaussians: not implemented yet")


def inception_score_from_probs(probs: np.ndarray) -> float:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) of (N, K) class probabilities, one split.

    p(y) is the mean of the rows. Use the convention 0 log 0 = 0 (scipy.special.rel_entr does).
    """
    raise NotImplementedError("exercise inception_score_from_probs: not implemented yet")


def psd_sqrt(a: np.ndarray) -> np.ndarray:
    """The symmetric square root R (R @ R = A, R symmetric PSD) of a symmetric PSD matrix A.

    A = V diag(w) V^T (np.linalg.eigh) gives R = V diag(sqrt(w)) V^T; eigenvalues that rounding
    made slightly negative must become 0, not NaN.
    """
    raise NotImplementedError("exercise psd_sqrt: not implemented yet")
