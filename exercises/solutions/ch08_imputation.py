"""Reference solutions, chapter 8."""

import math

import torch


def replacement_step(score_fn, sde, x, y, mask, t, t_next, z, z_obs):
    h = t_next - t
    tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    g = sde.diffusion(tt)[0].item()
    x_new = x + (sde.drift(x, tt) - g**2 * score_fn(x, tt)) * h + g * math.sqrt(-h) * z
    alpha, sigma = (c.item() for c in sde.marginal_coeffs(torch.tensor([t_next], dtype=torch.float64)))
    return torch.where(mask, alpha * y + sigma * z_obs, x_new)


def gaussian_conditional(mean, cov, obs, y):
    u, o = ~obs, obs
    S_uo, S_oo = cov[u][:, o], cov[o][:, o]
    mu_c = mean[u] + S_uo @ torch.linalg.solve(S_oo, y - mean[o])
    S_c = cov[u][:, u] - S_uo @ torch.linalg.solve(S_oo, S_uo.T)
    return mu_c, S_c


def decoupled_score(score_fn, M):
    def score_u(u, t):
        x = torch.einsum("bjhw,ij->bihw", u, M)
        return torch.einsum("bihw,ij->bjhw", score_fn(x, t), M)

    return score_u
