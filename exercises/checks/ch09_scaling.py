"""Checks of the chapter 9 exercises."""

import copy

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from sdelab.train import ema_update as library_ema_update

from ..registry import exercise


@exercise("ch09", "9.1")
def conv2d_flops(impl):
    @settings(max_examples=20, deadline=None)
    @given(c_in=st.integers(1, 8), c_out=st.integers(1, 8), k=st.sampled_from([1, 3, 5]), h=st.integers(1, 9),
           w=st.integers(1, 9))
    def agrees_with_pytorch(c_in, c_out, k, h, w):
        conv = torch.nn.Conv2d(c_in, c_out, k, padding=k // 2)
        with FlopCounterMode(display=False) as counter:
            conv(torch.zeros(1, c_in, h, w))
        got = impl(c_in, c_out, k, h, w)
        assert got == counter.get_total_flops(), (
            f"conv2d_flops({c_in}, {c_out}, {k}, {h}, {w}) = {got}, but PyTorch's FlopCounterMode counts "
            f"{counter.get_total_flops()} (two operations per multiply-add)")

    agrees_with_pytorch()


@exercise("ch09", "9.2")
def allreduce_mean(impl):
    # Property of DDP: the mean of shard-mean gradients of equal shards is the full-batch gradient.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)
    x = torch.randn(12, 5, dtype=torch.float64, generator=g)
    full = torch.autograd.grad(((x @ w) ** 2).mean(), w)[0]
    for shards in (1, 2, 3, 4):
        grads = [torch.autograd.grad(((xs @ w) ** 2).mean(), w)[0] for xs in x.chunk(shards)]
        out = impl(grads)
        assert isinstance(out, torch.Tensor) and out.shape == full.shape, (
            f"expected one tensor of shape {tuple(full.shape)}, got {getattr(out, 'shape', type(out))}")
        assert torch.allclose(out, full, rtol=1e-12, atol=1e-12), (
            f"with {shards} equal shards the averaged gradient should equal the full-batch gradient")


@exercise("ch09", "9.3")
def ema_update(impl):
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Linear(3, 2)
    ema = copy.deepcopy(net)
    ref = copy.deepcopy(net)
    for p in net.parameters():
        p.data.copy_(torch.randn(p.shape, generator=g))
    ema_params = list(ema.parameters())
    before = [p.data_ptr() for p in ema_params]
    out = impl(ema_params, list(net.parameters()), 0.9)
    library_ema_update(ref, net, 0.9)
    assert out is None or out is ema_params, "update the tensors in place (the function need not return anything)"
    assert [p.data_ptr() for p in ema.parameters()] == before, "update in place: the EMA tensors must stay the same objects"
    for e, r in zip(ema.parameters(), ref.parameters()):
        assert torch.allclose(e, r, rtol=1e-6, atol=1e-7), "ema should become decay * ema + (1 - decay) * param"
    # constant weights: after n updates the gap shrinks by decay ** n
    gap0 = (list(ema.parameters())[0] - list(net.parameters())[0]).detach().clone()
    for _ in range(10):
        impl(list(ema.parameters()), list(net.parameters()), 0.5)
    gap = list(ema.parameters())[0] - list(net.parameters())[0]
    assert torch.allclose(gap, gap0 * 0.5**10, atol=1e-6), "with constant weights the gap should shrink by decay**n"
