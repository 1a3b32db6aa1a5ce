"""Reference solutions, chapter 7."""

import torch


def guided_score(score_fn, logits_fn, x, t, y, w):
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        log_p = torch.log_softmax(logits_fn(xg, t), dim=-1)[:, y]
        (grad,) = torch.autograd.grad(log_p.sum(), xg)
    return score_fn(x, t) + w * grad


def mixture_posterior(x, alpha, sigma, weights, means, variances):
    var = alpha**2 * variances + sigma**2  # (K,)
    d = x.shape[1]
    sq = ((x[:, None, :] - alpha * means[None]) ** 2).sum(-1)  # (B, K)
    log_joint = torch.log(weights) - 0.5 * sq / var - 0.5 * d * torch.log(var)
    return torch.softmax(log_joint, dim=-1)


def cfg_score(cond_score, uncond_score, w):
    return (1 + w) * cond_score - w * uncond_score
