"""Chapter 9 exercises: scaling up. Fill in each function, then run

    pytest exercises --impl=starter -k ch09
"""

import torch


def conv2d_flops(c_in: int, c_out: int, k: int, h: int, w: int) -> int:
    """Floating-point operations of a k x k convolution with an h x w output.

    Each of the c_out * h * w outputs is a sum of c_in * k * k products: that many multiply-adds,
    two operations each (bias ignored), the convention of torch.utils.flop_counter.
    """
    raise NotImplementedError("exercise conv2d_flops: not implemented yet")


def allreduce_mean(grads: list[torch.Tensor]) -> torch.Tensor:
    """What DDP's all-reduce gives every process: the mean of the P shard gradients.

    Hint: torch.stack.
    """
    raise NotImplementedError("exercise allreduce_mean: not implemented yet")


def ema_update(ema_params: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    """In place, for each pair: ema <- decay * ema + (1 - decay) * param.

    Hint: do it under torch.no_grad() with mul_ and add_(..., alpha=...).
    """
    raise NotImplementedError("exercise ema_update: not implemented yet")
