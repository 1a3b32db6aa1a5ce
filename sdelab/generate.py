"""Sample a batch of images from a score checkpoint: chunked, seeded, any sampler by name.

One function, :func:`sample_from_checkpoint`, is what ``sdelab sample``, ``sdelab evaluate``,
``tools/evaluate_checkpoints.py`` and the chapters use, so they draw the same images for the same
arguments:

* **Chunks.** ``n`` images are drawn in chunks of ``batch`` (a forward pass at batch 256 costs
  4.5-7x batch 64 on the CPUs this is built on, so bigger batches do not pay).
* **Seeds.** With an int ``seed``, chunk ``i`` draws its prior sample and its noise from its own
  generator seeded with ``seed + i``: a chunk's images do not depend on the chunks before it.
  A ``torch.Generator`` is used for every chunk in turn instead.
* **Protocol.** Every sampler ends with one Tweedie denoising step (``denoise=True``, one more
  NFE; the samplers' own option) and the images are clamped to the model range ``[-1, 1]``.
* **Checks at the door.** The sampler name comes from :data:`sdelab.samplers.SAMPLERS`; ``n``,
  ``steps``, ``batch`` and the label are checked, and one probe evaluation of the score on two
  prior samples must return a finite tensor shaped like its input, all before the long work.
"""

from __future__ import annotations

import inspect
import math
import time
from typing import Any, NamedTuple

import torch

from . import checks

__all__ = ["END_NOISE", "LEARNED_FINAL_JUMP", "LEARNED_GRID", "MAX_STEPS", "Samples", "learned_grid", "learned_t_end", "sample_from_checkpoint", "sampler_names"]

MAX_STEPS = 100_000
"""The most sampler steps :func:`sample_from_checkpoint` accepts (1e5 steps of a 1 M-parameter
U-Net are already hours per chunk on a CPU; a typo such as 10**9 would otherwise allocate its
time grid before the first step)."""


# Where sampling a learned score stops (then one Tweedie step): the noise level
# sigma_hat = sigma(t)/alpha(t) of the end time, measured on the shipped networks at N = 1000
# (benchmarks/samplers_vs_peers.py; checkpoints/results/samplers-n1000-nets_tend.csv). A learned
# score is worst near t = 0 (chapter 3), so stopping where the data are still slightly noisy and
# letting Tweedie's formula take the last step beats integrating down to sde.eps: DPM-Solver++(2M)
# at 11 NFE on fashion-vp-linear, FD 0.81 to eps -> 0.36 at sigma_hat 0.34; 2M SDE 0.25 at 0.17.
DETERMINISTIC = ("euler", "heun", "dpm_solver", "dpmpp_2m", "dpmpp_3m", "unipc", "probability_flow_euler",
                 "heun_t", "probability_flow_rk45")
END_NOISE = {
    ("deterministic", "vp-linear"): 0.34,  # t = 0.100; flat between 0.10 and 0.15 (FD 0.356)
    ("deterministic", "vp-cosine"): 0.17,  # t = 0.103 (FD 0.77; 0.83 at sigma_hat 0.34, 1.05 at eps)
    ("deterministic", "ve"): 0.34,  # t = 0.414 (FD 0.77; 0.81 at 0.17, 1.51 at eps)
    ("stochastic", "vp-linear"): 0.17,  # dpmpp_2m_sde, t = 0.05 (FD 0.25; 0.28 at 0.34)
}
"""``(kind, SDE name) -> sigma_hat`` at which :func:`learned_t_end` stops. Pairs not measured (the
sub-VP SDEs; 2M SDE on VP-cosine and VE) take VP-linear's level of their kind (the same noise
level, not the same t); the 3M SDE takes the 2M SDE's.
Samplers not measured with an early end (Euler-Maruyama, reverse diffusion, predictor-corrector,
EDM's stochastic sampler) end at ``sde.eps``, as every stored result in checkpoints/results does."""


LEARNED_GRID = {
    ("dpmpp_2m", "vp-linear"): "uniform",
    ("unipc", "vp-linear"): "uniform",
    ("unipc", "vp-cosine"): "uniform",
    ("dpmpp_2m_sde", "vp-linear"): "uniform",
    ("dpmpp_2m_sde", "vp-cosine"): "log_snr",
    ("dpmpp_3m_sde", "vp-linear"): "uniform",
    ("dpmpp_3m_sde", "vp-cosine"): "log_snr",
}
"""``(sampler, SDE name) -> grid`` measured with the end time of :data:`END_NOISE`, which
:func:`sample_from_checkpoint` uses with the measured end time (``t_end=None``) unless ``grid=``
is given (:func:`learned_grid`). The end time and the grid are one configuration. On the shipped
networks (N = 1000, same prior noise, checkpoints/results/samplers-n1000-nets.csv), stopped at the
measured end: UniPC at 11 / 21 NFE, FD 0.326 / 0.340 on the time-uniform grid vs 0.340 / 0.340 on
its default ``"mixed"`` on VP-linear, 0.729 / 0.903 vs 0.792 / 0.942 on VP-cosine; the 2M SDE
0.253 / 0.226 (uniform) vs 0.322 / 0.254 (its default ``"log_snr"``) on VP-linear, but 0.468 /
0.369 vs 0.416 / 0.253 on VP-cosine. The 3M SDE takes the 2M SDE's end and grid (measured there
with them: FD 0.379 / 0.263 on VP-linear, behind the 2M SDE; 0.265 / 0.224 on VP-cosine, ahead
of it). For these samplers the SDEs not measured take the time-uniform grid, on which the end
times were measured; other samplers keep their own default."""


LEARNED_FINAL_JUMP = {"unipc": "grid"}
"""``sampler -> final_jump`` used with the measured end time (``t_end=None``) unless ``final_jump=``
is given. With exact scores the Tweedie step is the first-order jump and the last grid step
keeps its order (:data:`sdelab.samplers.JUMP_RATIO`); with a learned score, stopped at the measured
end, a first-order last grid step extrapolates less across the network's errors. UniPC at 11 NFE,
FD with "grid" vs "auto" (N = 1000, checkpoints/results/samplers-n1000-nets*.csv): VP-linear 0.320
vs 0.326, VP-cosine 0.717 vs 0.729, VE 0.629 vs 0.651; at 21 NFE 0.338 vs 0.340 and 0.898 vs
0.903; at 6 NFE mixed (VP-cosine 0.646 vs 0.665, VP-linear 0.497 vs 0.441); from 25 steps the same
samples. At N = 5000 on the same noise (tools/evaluate_checkpoints.py, unipc-10) lower on all five
SDEs: VE 0.628 vs 0.649, VP-linear 0.267 vs 0.286, VP-cosine 0.698 vs 0.710, sub-VP-linear 0.444
vs 0.507, sub-VP-cosine 0.962 vs 0.963."""


def learned_grid(sde, sampler: str) -> str | None:
    """The grid :func:`sample_from_checkpoint` uses for ``sampler`` with the measured end time:
    :data:`LEARNED_GRID`'s, ``"uniform"`` for an SDE not measured, ``None`` (the sampler's own
    default) for a sampler not named there."""
    if not any(name == sampler for name, _ in LEARNED_GRID):
        return None
    return LEARNED_GRID.get((sampler, sde.name), "uniform")


def learned_t_end(sde, sampler: str) -> float:
    r"""The measured end time of ``sampler`` on a shipped network trained for ``sde``.

    The time at which :math:`\hat\sigma = \sigma(t)/\alpha(t)` equals :data:`END_NOISE`'s level,
    i.e. :math:`t = \lambda^{-1}(-\log\hat\sigma)` with the half log-SNR :math:`\lambda`
    (:meth:`sdelab.sde.SDE.t_from_half_log_snr`); ``sde.eps`` for samplers not measured.
    For exact scores (the toys) ``sde.eps`` is right: stopping early only adds the closed-form
    error of the Tweedie step (chapter 6).
    """
    kind = "deterministic" if sampler in DETERMINISTIC else "stochastic"
    if kind == "stochastic" and sampler not in ("dpmpp_2m_sde", "dpmpp_3m_sde"):
        return float(sde.eps)
    level = END_NOISE.get((kind, sde.name), END_NOISE[(kind, "vp-linear")])
    lam = torch.tensor([-math.log(level)], dtype=torch.float64)
    t = float(sde.t_from_half_log_snr(lam)[0])
    return min(max(t, float(sde.eps)), float(sde.T))


class Samples(NamedTuple):
    """What :func:`sample_from_checkpoint` returns.

    Attributes:
        images: ``(n, C, H, W)`` float32 on the CPU, in the model range ``[-1, 1]``.
        nfe: score evaluations per chunk (per image) of the sampler, the Tweedie step included.
        seconds: wall time of the sampling.
    """

    images: torch.Tensor
    nfe: int
    seconds: float


def sampler_names() -> tuple[str, ...]:
    """Names of the samplers in :data:`sdelab.samplers.SAMPLERS` (the CLI's ``--sampler`` choices)."""
    from .samplers import SAMPLERS

    return tuple(SAMPLERS)


def _checkpoint(checkpoint, device):
    from . import checkpoints

    if isinstance(checkpoint, checkpoints.Checkpoint):
        if checkpoint.card.get("kind") != "score":
            raise checkpoints.CheckpointError(
                f"checkpoint {checkpoint.card.get('name')!r} is a {checkpoint.card.get('kind')}, not a score model")
        if device is not None:
            checkpoint.net.to(device)
        return checkpoint
    if not isinstance(checkpoint, (str, bytes)) and not hasattr(checkpoint, "__fspath__"):
        raise TypeError("checkpoint must be a registry name, a card path or a loaded Checkpoint, got "
                        f"{type(checkpoint).__name__}")
    return checkpoints.load(checkpoint, kind="score", device=device)


def sample_from_checkpoint(
    checkpoint,
    n: int,
    *,
    sampler: str = "euler_maruyama",
    steps: int | None = 500,
    seed: int | torch.Generator | None = 0,
    batch: int = 64,
    label: int | None = None,
    denoise: bool = True,
    t_end: float | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = False,
    **sampler_kwargs: Any,
) -> Samples:
    """Draw ``n`` images from a score checkpoint with one of :data:`sdelab.samplers.SAMPLERS`.

    Args:
        checkpoint: a registry name (``"fashion-vp-linear"``), a card path, or a loaded
            :class:`sdelab.checkpoints.Checkpoint`.
        n: number of images (>= 1).
        sampler: a name in :data:`sdelab.samplers.SAMPLERS`.
        steps: sampler steps (1 to :data:`MAX_STEPS`); ignored by samplers without a ``steps``
            argument (``probability_flow_rk45`` is adaptive).
        seed: an int (chunk ``i`` uses ``seed + i``), a ``torch.Generator`` on ``device``, or
            ``None`` (torch's global generator).
        batch: images per chunk.
        label: class label for a class-conditional checkpoint (``None``: unconditional).
        denoise: finish with the samplers' Tweedie step (one more NFE).
        t_end: where the sampler stops (before the Tweedie step); ``None``: the measured
            :func:`learned_t_end` of this sampler and the checkpoint's SDE, on the grid measured
            with it (:func:`learned_grid`) unless ``grid=`` is given, and for UniPC with the
            final-jump rule measured with it (:data:`LEARNED_FINAL_JUMP`) unless
            ``final_jump=`` is given. Pass ``sde.eps`` to integrate to the end of the time
            range (the protocol of checkpoints/results).
        device: where to sample (default: the network's device, CPU for a freshly loaded one).
        progress: a tqdm bar counting score evaluations; ``None`` shows it only when stderr is a
            terminal, ``False`` never.
        **sampler_kwargs: passed to the sampler (``order=2``, ``snr=0.16``, ``rtol=1e-5``, ...).

    Returns:
        :class:`Samples` ``(images, nfe, seconds)``.

    Raises:
        ValueError/TypeError: bad arguments, an unknown sampler, a label out of range or for an
            unconditional network, a score returning the wrong shape or non-finite values.
        sdelab.checkpoints.CheckpointError: a missing, corrupted or non-score checkpoint.
    """
    from .samplers import SAMPLERS

    n = checks.integer(n, "n", minimum=1)
    batch = checks.integer(batch, "batch", minimum=1)
    checks.choice(sampler, "sampler", SAMPLERS)
    fn = SAMPLERS[sampler]
    takes_steps = "steps" in inspect.signature(fn).parameters
    if takes_steps:
        steps = checks.integer(steps, "steps", minimum=1, maximum=MAX_STEPS)
    denoise = checks.boolean(denoise, "denoise")
    if progress is not None:
        progress = checks.boolean(progress, "progress")
    ckpt = _checkpoint(checkpoint, device)
    device = next(ckpt.net.parameters()).device
    if isinstance(seed, torch.Generator) or seed is None:
        generator = checks.generator(seed, device=device)
    else:
        seed = checks.integer(seed, "seed", minimum=0)
        generator = None
    cfg = ckpt.net.config
    num_classes = cfg.get("num_classes")
    if label is not None:
        if not num_classes:
            raise ValueError(f"label={label!r} needs a class-conditional checkpoint; "
                             f"{ckpt.card.get('name')!r} is unconditional (omit the label)")
        label = checks.integer(label, "label", minimum=0, maximum=num_classes - 1)
    if "in_channels" not in cfg or "image_size" not in cfg:
        raise ValueError(f"checkpoint {ckpt.card.get('name')!r} is not an image model (its net config has no "
                         "in_channels/image_size)")
    shape = (cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    if t_end is None:
        t_end = learned_t_end(ckpt.sde, sampler)
        grid = learned_grid(ckpt.sde, sampler)
        if grid is not None and "grid" not in sampler_kwargs:
            sampler_kwargs = dict(sampler_kwargs, grid=grid)
        if sampler in LEARNED_FINAL_JUMP and "final_jump" not in sampler_kwargs:
            sampler_kwargs = dict(sampler_kwargs, final_jump=LEARNED_FINAL_JUMP[sampler])
    t_end = checks.real(t_end, "t_end")
    if not ckpt.sde.eps <= t_end < ckpt.sde.T:
        raise ValueError(f"t_end must be in [sde.eps, sde.T) = [{ckpt.sde.eps:g}, {ckpt.sde.T:g}), got {t_end!r}")
    kwargs = dict(sampler_kwargs, final_denoise=denoise, t_end=t_end)
    if takes_steps:
        kwargs["steps"] = steps

    def score_for(b: int):
        cond = {} if label is None else {"y": torch.full((b,), label, dtype=torch.long, device=device)}
        return ckpt.score_fn(**cond)

    from tqdm.auto import tqdm

    chunks = list(range(0, n, batch))
    bar = tqdm(total=None, unit="NFE", desc=f"sample {sampler}", disable=None if progress is None else not progress,
               dynamic_ncols=True, leave=False)
    out, nfe, start = [], 0, time.perf_counter()
    try:
        with torch.no_grad():
            for i, first in enumerate(chunks):
                b = min(batch, n - first)
                gen = generator if generator is not None or seed is None else \
                    torch.Generator(device=device).manual_seed(seed + i)
                x_T = ckpt.sde.prior_sample((b, *shape), generator=gen, device=device)
                score_fn = score_for(b)
                if i == 0:  # one probe evaluation: a wrong shape or NaN fails now, not after the run
                    checks.score_output(score_for(min(b, 2))(x_T[:2], ckpt.sde.T), x_T[:2], "the checkpoint's score")
                counted = _counting(score_fn, bar)
                res = fn(counted, ckpt.sde, x_T, generator=gen, **kwargs)
                out.append(res.x.float().clamp(-1, 1).cpu())
                nfe = int(res.nfe)
                if i == 0 and bar.total is None:
                    bar.total = nfe * len(chunks)
                    bar.refresh()
    finally:
        bar.close()
    return Samples(torch.cat(out), nfe, time.perf_counter() - start)


def _counting(score_fn, bar):
    """``score_fn`` that ticks the progress bar once per evaluation (free when the bar is off)."""
    if bar.disable:
        return score_fn

    def counted(x, t):
        bar.update(1)
        return score_fn(x, t)

    return counted
