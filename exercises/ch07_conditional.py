"""Chapter 7 exercises: conditional generation. Fill in each function, then run

    pytest exercises --impl=starter -k ch07

or call ``exercises.check(fn)`` in the chapter. Reference solutions: exercises/solutions/.
"""

import torch


def guided_score(score_fn, logits_fn, x: torch.Tensor, t: torch.Tensor, y: int, w: float) -> torch.Tensor:
    """The classifier-guided score s(x, t) + w grad_x log p_t(y | x).

    log p_t(y | x) = log_softmax(logits_fn(x, t), dim=-1)[:, y]. Hint: make a copy of x that
    requires gradients (``x.detach().requires_grad_(True)``) inside ``torch.enable_grad()``, and
    take ``torch.autograd.grad`` of the *sum* over the batch (samples are independent).
    """
    raise NotImplementedError("exercise guided_score: not implemented yet")


def mixture_posterior(x: torch.Tensor, alpha: float, sigma: float, weights: torch.Tensor, means: torch.Tensor,
                      variances: torch.Tensor) -> torch.Tensor:
    """The exact noisy classifier p_t(k | x) of an isotropic Gaussian mixture.

    Data: sum_k w_k N(mu_k, v_k I) in R^d; at time t, p_t(x | k) = N(x; alpha mu_k, (alpha^2 v_k + sigma^2) I).
    x is (B, d), weights (K,), means (K, d), variances (K,); return (B, K) probabilities.
    Hint: work with log w_k + log N(x; ...) and ``torch.softmax`` over k (the constants shared by
    all k cancel, but the log-determinant d/2 log(alpha^2 v_k + sigma^2) does not).
    """
    raise NotImplementedError("exercise mixture_posterior: not implemented yet")


def cfg_score(cond_score: torch.Tensor, uncond_score: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance: combine s(x, t, y) and s(x, t) at guidance scale w.

    Ho & Salimans' convention: w = 0 gives the conditional score, and the result equals
    classifier guidance at scale 1 + w with the network's implicit classifier.
    """
    raise NotImplementedError("exercise cfg_score: not implemented yet")
