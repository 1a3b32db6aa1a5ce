"""Exercises of the chapter on flow matching. Fill in each function, then run

pytest exercises --impl=starter -k flow_matching
"""

import torch


def linear_flow_matching_loss(
    velocity_fn, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The conditional flow-matching loss of the linear path, for given (x0, x1, t).

    x_t = (1 - t) x0 + t x1 with t of shape (B,); the target is the conditional velocity
    u = x1 - x0. Return the mean over the batch of the mean over entries of
    (velocity_fn(x_t, t) - u)^2, a scalar tensor. x0, x1 have shape (B, d).
    """
    raise NotImplementedError(
        "exercise linear_flow_matching_loss: not implemented yet"
    )


def linear_velocity_from_score(
    score: torch.Tensor, x: torch.Tensor, t: float
) -> torch.Tensor:
    """The marginal velocity of the linear path from the score s = grad log p_t(x).

    Use Tweedie: E[x0 | x] = (x + sigma^2 s)/alpha and E[x1 | x] = -sigma s with alpha = 1 - t,
    sigma = t, and v = E[x1 - x0 | x]. Simplify: the answer is short. 0 < t < 1 is a float.
    """
    raise NotImplementedError(
        "exercise linear_velocity_from_score: not implemented yet"
    )


def euler_flow_sample(velocity_fn, x1: torch.Tensor, steps: int) -> torch.Tensor:
    """Integrate dx/dt = velocity_fn(x, t) from t = 1 (noise x1) to t = 0 (data).

    Use `steps` equal Euler steps: x <- x - h v(x, t) with h = 1/steps, t = 1, 1 - h, ..., h
    (velocity_fn takes a (B,) tensor of times). Return x at t = 0.
    """
    raise NotImplementedError("exercise euler_flow_sample: not implemented yet")
