r"""Score networks: time features, an MLP for 2-D toys, U-Nets for images, noisy classifiers.

**Parametrisation (one place: :func:`net_eps`, :func:`score_fn_from_net`).** Every network here
predicts the *noise* :math:`\epsilon` that produced :math:`x_t = \alpha(t)x_0 + \sigma(t)\epsilon`
(Ho et al. 2020), not the score itself. Because
:math:`\nabla_x\log p_{0t}(x_t \mid x_0) = -\epsilon/\sigma(t)`, the score of an SDE with marginal
coefficients :math:`(\alpha, \sigma)` (:meth:`sdelab.sde.SDE.marginal_coeffs`) is

.. math:: s_\theta(x, t) = -\frac{\epsilon_\theta\big(c_{\rm in}(t)\,x,\ t\big)}{\sigma(t)}, \qquad
          c_{\rm in}(t) = \frac{1}{\sqrt{\alpha(t)^2 + \sigma(t)^2}}.

The input scaling :math:`c_{\rm in}` (Karras et al. 2022, "EDM", Table 1 with unit data scale)
keeps the network's input near unit variance under every SDE: it is exactly 1 for VP, close to
1 for sub-VP, and turns the VE SDE's inputs of standard deviation up to :math:`\sigma_{\max}`
back into unit scale, which a small network cannot learn to do by itself. The network sees the
raw time :math:`t \in [0, T]` through Gaussian Fourier features. An :math:`\epsilon` target has
unit scale at every :math:`t`, which is why the :math:`\lambda(t) = \sigma^2` weighting of
denoising score matching is the plain mean-squared error :math:`\|\epsilon_\theta - \epsilon\|^2`
(:mod:`sdelab.losses`).

Networks are built from plain config dicts (:func:`build_net`), so a checkpoint card can store
the config and rebuild the network without executing code. ``net.config`` returns that dict.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import checks
from .utils import ScoreFn, Tensor, TimeLike, batch_time, expand

__all__ = [
    "NET_KINDS",
    "FeatureClassifier",
    "GaussianFourierProjection",
    "MLPScoreNet",
    "NCSNpp",
    "ScoreNet",
    "TimeDependentClassifier",
    "UNet",
    "build_net",
    "count_params",
    "input_scale",
    "logits_fn_from_net",
    "net_eps",
    "score_fn_from_net",
]


# ----------------------------------------------------------------------------------------------
# The parametrisation: network output -> epsilon prediction -> score
# ----------------------------------------------------------------------------------------------
def input_scale(sde, t: Tensor) -> Tensor:
    r""":math:`c_{\rm in}(t) = 1/\sqrt{\alpha(t)^2 + \sigma(t)^2}`, shape ``(B,)`` (module docstring)."""
    alpha, sigma = sde.marginal_coeffs(t)
    return torch.rsqrt(alpha**2 + sigma**2)


def net_eps(net: nn.Module, sde, x: Tensor, t: TimeLike, **cond) -> Tensor:
    r"""The noise prediction :math:`\epsilon_\theta(c_{\rm in}(t)x, t)` of ``net`` at ``(x, t)``.

    ``cond`` (e.g. ``y=labels``) goes to the network. Training (:mod:`sdelab.losses`) and sampling
    (:func:`score_fn_from_net`) both go through this function, so they cannot disagree.
    """
    t = batch_time(t, x)
    return net(expand(input_scale(sde, t), x) * x, t, **cond)


def score_fn_from_net(net: nn.Module, sde, **cond) -> ScoreFn:
    r"""``score_fn(x, t)`` :math:`= -\epsilon_\theta(c_{\rm in}x, t)/\sigma(t)` for a trained network.

    ``cond`` (e.g. ``y=labels`` for a class-conditional ``ScoreNet``) is passed on every call. The
    returned function is what every sampler, likelihood and guidance routine takes. It does not
    switch the network to eval mode or disable gradients: callers decide (samplers usually run
    under ``torch.no_grad()``; guidance needs gradients of a classifier, not of this).

    Checks happen here, once: ``net`` is a module, ``sde`` an SDE, and a label ``y`` lies in
    ``[0, num_classes]`` (``num_classes`` is the null label). The returned function is a hot path
    (one call per sampler step) and reads nothing back to the host.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    checks.sde(sde)
    if "y" in cond and cond["y"] is not None:
        cond = {**cond, "y": _check_labels(cond["y"], getattr(net, "num_classes", None))}

    def score_fn(x: Tensor, t: TimeLike) -> Tensor:
        t = batch_time(t, x)
        _, sigma = sde.marginal_coeffs(t)
        return -net_eps(net, sde, x, t, **cond) / expand(sigma, x)

    return score_fn


def _check_labels(y, num_classes: int | None):
    """Labels for a class-conditional net, checked once at the door (``num_classes`` = null label)."""
    if num_classes is None:
        raise TypeError("y was given but this network is unconditional (num_classes=None)")
    if isinstance(y, Tensor):
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > num_classes):
            raise ValueError(f"y must lie in [0, {num_classes - 1}] (or {num_classes}, the null label), "
                             f"got labels in [{int(y.min())}, {int(y.max())}]")
        return y
    checks.integer(y, "y", minimum=0, maximum=num_classes)
    return y


def logits_fn_from_net(classifier: nn.Module, sde):
    r"""``logits_fn(x, t)`` of a noisy classifier, with the same input scaling as :func:`net_eps`.

    Classifier guidance (Song et al. eq. 14) needs :math:`\nabla_x\log p_t(y \mid x)`, the gradient
    of ``log_softmax(logits_fn(x, t))[y]`` with respect to ``x``.
    """

    def logits_fn(x: Tensor, t: TimeLike) -> Tensor:
        t = batch_time(t, x)
        return classifier(expand(input_scale(sde, t), x) * x, t)

    return logits_fn


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------
class GaussianFourierProjection(nn.Module):
    r"""Random Fourier features of time (Tancik et al. 2020; Song et al. 2021, App. H).

    .. math:: \gamma(t) = \big[\sin(2\pi W t),\ \cos(2\pi W t)\big], \qquad W_j \sim \mathcal N(0, s^2),

    with ``embed_dim // 2`` frequencies. ``W`` is fixed (a buffer saved in the state dict, not a
    parameter), drawn from ``seed`` so a config always rebuilds the same features.
    """

    def __init__(self, embed_dim: int = 128, scale: float = 16.0, seed: int = 0):
        r"""Draw the ``embed_dim // 2`` frequencies :math:`W_j \sim \mathcal N(0, s^2)` from ``seed``."""
        super().__init__()
        if embed_dim < 2 or embed_dim % 2:
            raise ValueError(f"embed_dim must be an even integer >= 2, got {embed_dim}")
        g = torch.Generator().manual_seed(int(seed))
        self.register_buffer("W", torch.randn(embed_dim // 2, generator=g) * float(scale))

    def forward(self, t: Tensor) -> Tensor:
        r"""``(B,)`` times -> ``(B, embed_dim)`` features :math:`\gamma(t)`."""
        proj = 2 * math.pi * t[:, None].to(self.W.dtype) * self.W[None, :]
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class TimeEmbedding(nn.Module):
    """Fourier features followed by a two-layer MLP: ``t (B,) -> (B, dim)``."""

    def __init__(self, embed_dim: int, dim: int, scale: float = 16.0):
        super().__init__()
        self.fourier = GaussianFourierProjection(embed_dim, scale)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.fourier(t))


def _groups(channels: int) -> int:
    # GroupNorm with groups of (at least) 4 channels, at most 32 groups (Wu & He 2018 use 32).
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0 and channels // g >= 4:
            return g
    return 1


def _zero(module: nn.Module) -> nn.Module:
    # Zero-initialised last layer of a residual branch: each block starts as the identity,
    # which makes deep U-Nets train stably from the first step (Goyal et al. 2017; DDPM code).
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    r"""Pre-activation residual block with an additive time (and label) embedding.

    ``h = conv(SiLU(GN(x))) + Dense(emb)``; ``h = conv(dropout(SiLU(GN(h))))``;
    output ``skip(x) + h`` (divided by :math:`\sqrt2` when ``skip_rescale``, as in NCSN++).
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0, skip_rescale: bool = False):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
        self.scale = 1 / math.sqrt(2) if skip_rescale else 1.0

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]  # per-channel bias, not a per-sample time scale
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) + h) * self.scale


class AttnBlock(nn.Module):
    """Multi-head self-attention over the ``H*W`` positions, residual (Vaswani et al. 2017; DDPM)."""

    def __init__(self, channels: int, num_heads: int = 1, skip_rescale: bool = False):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))
        self.heads = num_heads
        self.scale = 1 / math.sqrt(2) if skip_rescale else 1.0

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return (x + self.proj(h)) * self.scale


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
class MLPScoreNet(nn.Module):
    r"""A small MLP :math:`\epsilon_\theta(x, t)` for points in :math:`\mathbb R^d` (2-D toys).

    Input: ``x`` of shape ``(B, dim)`` and ``t`` of shape ``(B,)``; the Fourier time features are
    concatenated to ``x``; ``num_layers`` hidden SiLU layers of width ``hidden``.
    """

    kind = "mlp"

    def __init__(self, dim: int = 2, hidden: int = 128, num_layers: int = 3, embed_dim: int = 32,
                 fourier_scale: float = 4.0):
        super().__init__()
        if dim < 1 or hidden < 1 or num_layers < 1:
            raise ValueError(f"dim, hidden and num_layers must be >= 1, got {dim}, {hidden}, {num_layers}")
        self.config = {"kind": self.kind, "dim": dim, "hidden": hidden, "num_layers": num_layers,
                       "embed_dim": embed_dim, "fourier_scale": fourier_scale}
        self.time = GaussianFourierProjection(embed_dim, fourier_scale)
        layers, width = [], dim + embed_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: TimeLike) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.config["dim"]:
            raise ValueError(f"x must have shape (B, {self.config['dim']}), got {tuple(x.shape)}")
        t = batch_time(t, x)
        return self.mlp(torch.cat([x, self.time(t)], dim=1))


class UNet(nn.Module):
    r"""A U-Net :math:`\epsilon_\theta(x, t[, y])` for images ``(B, C, H, W)``.

    Levels ``i = 0..L-1`` have ``channels * ch_mult[i]`` channels at resolution
    :math:`H / 2^i` (stride-2 convolutions down, nearest-neighbour up, so 28x28 and 32x32 both
    work). Each level of the encoder holds ``num_res_blocks`` residual blocks; the decoder at
    each level concatenates the encoder's output at that resolution (the skip connection) and
    applies ``num_res_blocks`` blocks. Self-attention follows the blocks at every resolution in
    ``attn_resolutions`` and in the middle when ``mid_attn``. Time enters every block as an
    additive embedding of its Fourier features; with ``num_classes`` a learned label embedding is
    added too, and label ``num_classes`` is the *null* label of classifier-free guidance
    (Ho & Salimans 2022), used when ``y`` is omitted.

    :class:`ScoreNet` and :class:`NCSNpp` are this class with two sets of defaults.
    """

    kind = "unet"

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: int = 32,
                 ch_mult: tuple[int, ...] = (1, 2, 4), num_res_blocks: int = 1,
                 attn_resolutions: tuple[int, ...] = (), mid_attn: bool = False, num_heads: int = 1,
                 dropout: float = 0.0, embed_dim: int = 128, fourier_scale: float = 16.0,
                 skip_rescale: bool = False, num_classes: int | None = None):
        super().__init__()
        ch_mult, attn_resolutions = tuple(int(m) for m in ch_mult), tuple(int(r) for r in attn_resolutions)
        if in_channels < 1 or image_size < 4 or channels < 4 or num_res_blocks < 1 or not ch_mult:
            raise ValueError(
                f"need in_channels >= 1, image_size >= 4, channels >= 4, num_res_blocks >= 1 and a "
                f"non-empty ch_mult; got {in_channels}, {image_size}, {channels}, {num_res_blocks}, {ch_mult}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be None or >= 1, got {num_classes}")
        self.config = {
            "kind": self.kind, "in_channels": in_channels, "image_size": image_size, "channels": channels,
            "ch_mult": list(ch_mult), "num_res_blocks": num_res_blocks,
            "attn_resolutions": list(attn_resolutions), "mid_attn": mid_attn, "num_heads": num_heads,
            "dropout": dropout, "embed_dim": embed_dim, "fourier_scale": fourier_scale,
            "skip_rescale": skip_rescale, "num_classes": num_classes,
        }
        emb_dim = 4 * channels
        self.num_classes = num_classes
        self.time = TimeEmbedding(embed_dim, emb_dim, fourier_scale)
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        block = dict(emb_dim=emb_dim, dropout=dropout, skip_rescale=skip_rescale)

        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        res, c = image_size, channels
        enc_channels, level_res = [], []
        for i, m in enumerate(ch_mult):
            if i > 0:  # downsample into level i, changing the width with the stride-2 conv
                self.down.append(nn.Conv2d(c, channels * m, 3, stride=2, padding=1))
                res, c = (res + 1) // 2, channels * m
            level_res.append(res)
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(c, channels * m, **block))
                c = channels * m
                if res in attn_resolutions:
                    self.down.append(AttnBlock(c, num_heads, skip_rescale))
            enc_channels.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, **block)])
        if mid_attn:
            self.mid.append(AttnBlock(c, num_heads, skip_rescale))
            self.mid.append(ResBlock(c, c, **block))
        self.up = nn.ModuleList()
        for i in reversed(range(len(ch_mult))):
            level = nn.ModuleList()
            c_out = channels * ch_mult[i]
            for j in range(num_res_blocks):
                level.append(ResBlock(c + enc_channels[i] if j == 0 else c, c_out, **block))
                c = c_out
                if level_res[i] in attn_resolutions:
                    level.append(AttnBlock(c, num_heads, skip_rescale))
            self.up.append(level)
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = _zero(nn.Conv2d(c, in_channels, 3, padding=1))

    def embed(self, t: Tensor, y: Tensor | None) -> Tensor:
        """Time features plus the label embedding (``y = None`` means the null label)."""
        emb = self.time(t)
        if self.label is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.num_classes, dtype=torch.long, device=t.device)
            # no range check here (a host read in every evaluation): score_fn_from_net checks
            # labels at its door; an out-of-range label still fails in nn.Embedding
            y = torch.as_tensor(y, device=t.device).long().expand(t.shape[0])
            emb = emb + self.label(y)
        elif y is not None:
            raise TypeError("y was given but this network is unconditional (num_classes=None)")
        return emb

    def forward(self, x: Tensor, t: TimeLike, y: Tensor | None = None) -> Tensor:
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg["in_channels"]:
            raise ValueError(f"x must have shape (B, {cfg['in_channels']}, H, W), got {tuple(x.shape)}")
        t = batch_time(t, x)
        emb = self.embed(t, y)
        h = self.conv_in(x)
        skips = []
        for layer in self.down:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, AttnBlock):
                h = layer(h)
            else:  # a downsampling conv closes the level above it
                skips.append(h)
                h = layer(h)
        skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for level in self.up:
            skip = skips.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = torch.cat([h, skip], dim=1)
            for layer in level:
                h = layer(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class ScoreNet(UNet):
    """The book's CPU-sized U-Net (1.07 M parameters at the defaults, 28x28 or 32x32).

    Defaults: widths 12/24/48/96 at resolutions 28/14/7/4 (32/16/8/4 for 32x32 inputs), one
    residual block per level and side, self-attention only in the middle (16 positions, cheap).
    The width grows as the resolution falls, so the parameters sit where convolutions are cheap:
    a forward pass at batch 64 costs about 4.4 GFLOP (about 35 ms on 2 CPU cores); ``channels=16``
    gives 1.9 M parameters at 1.75x the cost. ``UNet``'s arguments all apply (e.g.
    ``in_channels=3, image_size=32`` for CIFAR-10, ``num_classes=10``).
    """

    kind = "scorenet"

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: int = 12,
                 ch_mult=(1, 2, 4, 8), num_res_blocks: int = 1, attn_resolutions=(), mid_attn: bool = True,
                 **kwargs):
        super().__init__(in_channels, image_size, channels, ch_mult, num_res_blocks, attn_resolutions,
                         mid_attn, **kwargs)


class NCSNpp(UNet):
    """A deeper NCSN++/DDPM++-style U-Net for GPUs (Song et al. 2021, App. H; Ho et al. 2020).

    Defaults (DDPM++ "cont." at 32x32, narrower): width 128 with multipliers (1, 2, 2, 2), two
    residual blocks per level, self-attention at 16x16 (14x14 for 28x28 inputs) and in the
    middle, dropout 0.1, residual outputs rescaled by 1/sqrt(2). About 25 M parameters at
    ``channels=128`` (32x32x3); ``channels=64`` gives about 6.4 M.
    """

    kind = "ncsnpp"

    def __init__(self, in_channels: int = 3, image_size: int = 32, channels: int = 128,
                 ch_mult=(1, 2, 2, 2), num_res_blocks: int = 2, attn_resolutions=None, mid_attn: bool = True,
                 num_heads: int = 1, dropout: float = 0.1, skip_rescale: bool = True, **kwargs):
        if attn_resolutions is None:
            attn_resolutions = ((image_size + 1) // 2,)
        super().__init__(in_channels, image_size, channels, ch_mult, num_res_blocks, attn_resolutions,
                         mid_attn, num_heads, dropout, skip_rescale=skip_rescale, **kwargs)


class _WideBlock(nn.Module):
    """Wide-ResNet basic block (Zagoruyko & Komodakis 2016), pre-activation, with a time embedding."""

    def __init__(self, c_in: int, c_out: int, stride: int, emb_dim: int | None, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.emb = nn.Linear(emb_dim, c_out) if emb_dim else None
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Identity() if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride=stride)

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is not None:
            h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _WideResNet(nn.Module):
    """Shared body of the two classifiers: 3 groups of ``depth`` blocks, widths ``16k, 32k, 64k``."""

    def __init__(self, in_channels, num_classes, width, depth, dropout, emb_dim):
        super().__init__()
        widths = [16 * width, 32 * width, 64 * width]
        self.conv_in = nn.Conv2d(in_channels, 16, 3, padding=1)
        blocks, c = [], 16
        for i, w in enumerate(widths):
            for j in range(depth):
                blocks.append(_WideBlock(c, w, 2 if (j == 0 and i > 0) else 1, emb_dim, dropout))
                c = w
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.GroupNorm(_groups(c), c)
        self.head = nn.Linear(c, num_classes)
        self.feature_dim = c

    def body(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.conv_in(x)
        for b in self.blocks:
            h = b(h, emb)
        return F.silu(self.norm(h)).mean(dim=(2, 3))


class TimeDependentClassifier(nn.Module):
    r"""A noisy classifier :math:`p_t(y \mid x_t)` for classifier guidance (Song et al. App. I.1).

    A small Wide-ResNet (``depth`` blocks per group, widths :math:`16k, 32k, 64k` with
    :math:`k` = ``width``) whose blocks receive Fourier time features. ``forward(x, t)`` returns
    logits ``(B, num_classes)``; feed it :math:`c_{\rm in}(t)x_t` (:func:`logits_fn_from_net`).
    """

    kind = "noisy_classifier"

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 2, depth: int = 2,
                 dropout: float = 0.0, embed_dim: int = 64, fourier_scale: float = 16.0):
        super().__init__()
        self.config = {"kind": self.kind, "in_channels": in_channels, "num_classes": num_classes,
                       "width": width, "depth": depth, "dropout": dropout, "embed_dim": embed_dim,
                       "fourier_scale": fourier_scale}
        emb_dim = 4 * embed_dim
        self.time = TimeEmbedding(embed_dim, emb_dim, fourier_scale)
        self.net = _WideResNet(in_channels, num_classes, width, depth, dropout, emb_dim)

    def forward(self, x: Tensor, t: TimeLike) -> Tensor:
        t = batch_time(t, x)
        return self.net.head(self.net.body(x, self.time(t)))


class FeatureClassifier(nn.Module):
    """A clean-image classifier that doubles as the feature extractor of the project's FD / IS.

    ``forward(x)`` returns logits; ``features(x)`` returns the penultimate (pooled) features;
    ``forward_with_features(x)`` returns both. Inputs in the model range ``[-1, 1]``.
    """

    kind = "classifier"

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 2, depth: int = 2,
                 dropout: float = 0.0):
        super().__init__()
        self.config = {"kind": self.kind, "in_channels": in_channels, "num_classes": num_classes,
                       "width": width, "depth": depth, "dropout": dropout}
        self.net = _WideResNet(in_channels, num_classes, width, depth, dropout, None)

    def features(self, x: Tensor) -> Tensor:
        return self.net.body(x, None)

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x)
        return self.net.head(f), f

    def forward(self, x: Tensor) -> Tensor:
        return self.net.head(self.features(x))


NET_KINDS = {cls.kind: cls for cls in (MLPScoreNet, UNet, ScoreNet, NCSNpp, TimeDependentClassifier, FeatureClassifier)}


def build_net(config: dict) -> nn.Module:
    """Build a network from a plain config dict ``{"kind": ..., **kwargs}`` (as ``net.config`` returns).

    Kinds: ``mlp``, ``unet``, ``scorenet``, ``ncsnpp``, ``noisy_classifier``, ``classifier``.
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict with a 'kind' key, got {type(config).__name__}")
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in NET_KINDS:
        raise ValueError(f"unknown network kind {kind!r}; expected one of {sorted(NET_KINDS)}")
    cls = NET_KINDS[kind]
    if cls in (UNet, ScoreNet, NCSNpp):
        for key in ("ch_mult", "attn_resolutions"):
            if key in config and config[key] is not None:
                config[key] = tuple(config[key])
    try:
        return cls(**config)
    except TypeError as e:
        raise ValueError(f"bad config for a {kind!r} network: {e}") from None
