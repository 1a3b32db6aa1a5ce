"""Reference solutions, the DDPM chapter."""

import math

import torch


def posterior_mean_var(x0, x_i, i, betas):
    abar = torch.cumprod(1 - betas, 0)
    b, ab = betas[i - 1].item(), abar[i - 1].item()
    ab_prev = abar[i - 2].item() if i > 1 else 1.0
    mean = (math.sqrt(ab_prev) * b * x0 + math.sqrt(1 - b) * (1 - ab_prev) * x_i) / (
        1 - ab
    )
    return mean, (1 - ab_prev) / (1 - ab) * b


def ddpm_train_step(eps_model, opt, x0, betas, generator):
    N = betas.numel()
    i = torch.randint(1, N + 1, (x0.shape[0],), generator=generator)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    abar = torch.cumprod(1 - betas, 0).to(x0.dtype)[i - 1][:, None]
    x_i = abar.sqrt() * x0 + (1 - abar).sqrt() * z
    loss = (eps_model(x_i, i.to(x0.dtype) / N) - z).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


@torch.no_grad()
def ancestral_sample(score_fn, betas, x_N, generator):
    N, x = betas.numel(), x_N
    for i in range(N, 0, -1):
        b = betas[i - 1].item()
        t = torch.full((x.shape[0],), i / N, dtype=x.dtype)
        x = (x + b * score_fn(x, t)) / math.sqrt(1 - b)
        if i > 1:
            x = x + math.sqrt(b) * torch.randn(
                x.shape, generator=generator, dtype=x.dtype
            )
    return x
