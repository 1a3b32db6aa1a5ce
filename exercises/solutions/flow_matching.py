"""Reference solutions, chapter on flow matching."""

import torch


def linear_flow_matching_loss(velocity_fn, x0, x1, t):
    tt = t[:, None]
    x_t = (1 - tt) * x0 + tt * x1
    return (velocity_fn(x_t, t) - (x1 - x0)).pow(2).mean(1).mean()


def linear_velocity_from_score(score, x, t):
    return -(x + t * score) / (1 - t)


def euler_flow_sample(velocity_fn, x1, steps):
    x, h = x1, 1.0 / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), 1.0 - i * h, dtype=x.dtype, device=x.device)
        x = x - h * velocity_fn(x, t)
    return x
