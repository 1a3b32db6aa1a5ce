r"""The training loop: AdamW, warm-up, gradient clipping, EMA, checkpoint/resume, DDP.

One function, :func:`train`, runs any *objective* (``losses.DSMObjective`` for score networks,
``losses.ClassifierObjective`` for classifiers) on in-memory data. What makes it reproducible:

* **Data order and noise come from two explicit generators** seeded from ``config.seed``. Each
  step takes the next ``batch_size`` indices of a per-epoch permutation and draws the noise of the
  whole *global* batch; with ``torchrun`` every process draws the same, then keeps its slice.
  So one DDP step on ``P`` processes with ``batch_size / P`` samples each is the single-process
  step on the concatenated batch (DDP averages the gradients of per-process means).
* **Dropout** uses the global torch RNG, reseeded at every step from ``(seed, step, rank)``.
* **Nothing silent, nothing lost.** A non-finite loss or gradient stops training before the
  optimizer step with :class:`TrainingDiverged` (the run folder keeps the last good state; a
  state with non-finite weights is never written). Ctrl-C (SIGINT) finishes the current step,
  saves a resumable state and returns with ``result.interrupted = True``.
* **Resume.** Every ``ckpt_every`` steps the run folder gets ``state.pt`` (model, EMA, optimizer,
  scheduler, step, the generators' states, the current permutation and position, the loss
  history), written to a temporary file then renamed (atomic on POSIX), and read back with
  ``torch.load(weights_only=True)``, which executes no code. A killed run restarted with the
  same arguments continues with the identical loss trajectory.

EMA (Polyak averaging; Song et al. use decay 0.999-0.9999):
:math:`\bar\theta \leftarrow d_k\bar\theta + (1 - d_k)\theta` with
:math:`d_k = \min(d, (1 + k)/(10 + k))`, the usual warm-up so that short runs are not dominated by
the initial weights. The learning rate rises linearly over ``warmup`` steps, then stays
constant or follows a cosine to zero.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from . import checks
from .utils import Tensor, atomic_torch_save, atomic_write_text

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "atomic_torch_save", "ema_update",
           "init_distributed", "train"]


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train` (all JSON-serialisable, stored in run folders and cards).

    These are the one set of training defaults: ``sdelab train`` takes its defaults from here.
    Every field is checked on construction (types and ranges), before any data or network is
    built. ``grad_clip`` is the maximal global gradient norm; ``None`` or ``0`` switches clipping off.
    """

    steps: int = 6000
    batch_size: int = 128  # global: split over processes under DDP
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    warmup: int = 200
    lr_schedule: str = "cosine"  # or "constant"
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    bf16: bool = False
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 100
    progress: bool = True

    def __post_init__(self):
        self.steps = checks.integer(self.steps, "steps", minimum=1)
        self.batch_size = checks.integer(self.batch_size, "batch_size", minimum=1)
        self.lr = checks.real(self.lr, "lr", positive=True)
        self.weight_decay = checks.real(self.weight_decay, "weight_decay", nonnegative=True)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {self.betas!r}")
        self.betas = tuple(checks.real(b, "betas", lo=0.0, hi=1.0, hi_open=True) for b in self.betas)
        self.warmup = checks.integer(self.warmup, "warmup", minimum=0)
        checks.choice(self.lr_schedule, "lr_schedule", ("constant", "cosine"))
        if self.grad_clip is not None:
            self.grad_clip = checks.real(self.grad_clip, "grad_clip", nonnegative=True) or None
        self.ema_decay = checks.real(self.ema_decay, "ema_decay", lo=0.0, hi=1.0, hi_open=True)
        self.bf16 = checks.boolean(self.bf16, "bf16")
        self.seed = checks.integer(self.seed, "seed", minimum=0)
        self.ckpt_every = checks.integer(self.ckpt_every, "ckpt_every", minimum=1)
        self.log_every = checks.integer(self.log_every, "log_every", minimum=1)
        self.progress = checks.boolean(self.progress, "progress")

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict (``betas`` as a list)."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a dict of fields; unknown keys are refused (``ValueError``)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        net: the trained network (unwrapped from DDP).
        ema: its exponential moving average: use this one for sampling.
        losses: one global loss per step, from step 1.
        step: the last completed step.
        wall_time: seconds spent training, summed over resumes.
        images_per_sec: throughput of this call (all processes together).
        interrupted: the run stopped early on Ctrl-C (SIGINT) after saving its state.
    """

    net: nn.Module
    ema: nn.Module
    losses: list = field(default_factory=list)
    step: int = 0
    wall_time: float = 0.0
    images_per_sec: float = float("nan")
    interrupted: bool = False


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN/infinite; ``.result`` holds the last good weights."""

    def __init__(self, message: str, result: TrainResult | None = None):
        super().__init__(message)
        self.result = result


def init_distributed() -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment; ``(rank, world_size)``.

    Backend NCCL when CUDA is present, gloo otherwise. Without ``torchrun`` (no ``WORLD_SIZE``
    or ``WORLD_SIZE=1``) it does nothing and returns ``(0, 1)``.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _nonfinite_tensors(module: nn.Module) -> list[str]:
    return [k for k, v in module.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    r"""EMA step :math:`\bar\theta \leftarrow d\,\bar\theta + (1-d)\,\theta` for parameters; buffers are copied."""
    e_params = [p for p in ema.parameters()]
    n_params = [p.detach() for p in net.parameters()]
    torch._foreach_lerp_(e_params, n_params, 1.0 - decay)
    for eb, nb in zip(ema.buffers(), net.buffers()):
        eb.copy_(nb)


def _lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup) if config.warmup > 0 else 1.0
        if config.lr_schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))
        return warm

    return f


def _split_data(data):
    if isinstance(data, Tensor):
        return data, None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if y is not None and y.shape[0] != x.shape[0]:
            raise ValueError(f"data labels have {y.shape[0]} entries for {x.shape[0]} samples")
        return x, y
    raise TypeError("data must be a tensor x (N, ...) or a pair (x, labels) in the model range")


def train(net: nn.Module, objective, data, config: TrainConfig | dict, *, run_dir: str | os.PathLike | None = None,
          resume: bool = True, meta: dict | None = None, callback: Callable | None = None,
          stop_at: int | None = None) -> TrainResult:
    """Train ``net`` on ``objective`` (see the module docstring); returns a :class:`TrainResult`.

    Args:
        net: the network, on the device to train on (under ``torchrun`` with CUDA, put it on
            ``cuda:LOCAL_RANK``); it is trained in place.
        objective: ``losses.DSMObjective(sde, ...)`` or ``losses.ClassifierObjective(...)``.
        data: a float tensor ``(N, ...)`` in the model range, or a pair ``(x, labels)``; kept on
            the CPU, batches are moved to ``net``'s device.
        config: a :class:`TrainConfig` (or a dict of its fields).
        run_dir: folder for ``state.pt`` (resume), ``meta.json`` and ``log.txt``; ``None`` = no files.
        resume: continue from ``run_dir/state.pt`` when it exists. A run folder whose stored
            ``meta``/config differ from this call's is refused (``ValueError``).
        meta: JSON-able description stored with the run (SDE config, net config, data, ...).
        callback: called as ``callback(step, loss, result)`` after each logged step (rank 0).
        stop_at: stop after this step (< ``config.steps``) as if killed, checkpointing first:
            for tests and for splitting a long run into sessions.

    Raises:
        TrainingDiverged: the loss or gradient norm became non-finite (the optimizer step is not
            taken; ``run_dir`` keeps the last state saved with finite weights).

    Ctrl-C (SIGINT, in the main thread) ends the current step, saves the state to ``run_dir``
    and returns with ``interrupted=True``; a second Ctrl-C stops at once.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes {world}")
    x_all, y_all = _split_data(data)
    if not x_all.is_floating_point():
        raise TypeError(f"data must be floating point in the model range (see sdelab.data.to_model_range), got {x_all.dtype}")
    n, local_b = x_all.shape[0], config.batch_size // world
    if n < config.batch_size:
        raise ValueError(f"data has {n} samples, fewer than one batch of {config.batch_size}")
    device = next(net.parameters()).device
    dtype = x_all.dtype

    ema = copy.deepcopy(net).eval().requires_grad_(False)
    model = net
    if world > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config))
    data_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    step, pos, perm, losses, wall = 0, n, None, [], 0.0

    run_meta = {"train": config.to_dict(), "objective": getattr(objective, "config", dict)(), **(meta or {})}
    run_meta["train"].pop("progress")
    state_file = Path(run_dir) / "state.pt" if run_dir is not None else None
    if run_dir is not None and rank == 0:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        from .utils import remove_stale_temporaries

        remove_stale_temporaries(run_dir)  # temporaries of killed saves (on a full disk they keep it full)
        meta_file = Path(run_dir) / "meta.json"
        if meta_file.exists() and resume and state_file.exists():
            stored = json.loads(meta_file.read_text())
            if _jsonable(stored) != _jsonable(run_meta):
                raise ValueError(f"{run_dir} holds a run with a different configuration; use another run_dir or "
                                 f"resume=False.\nstored: {stored}\nnow:    {_jsonable(run_meta)}")
        atomic_write_text(meta_file, json.dumps(_jsonable(run_meta), indent=2))
    if state_file is not None and resume and state_file.exists():
        st = torch.load(state_file, map_location="cpu", weights_only=True)
        net.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        data_gen.set_state(st["data_gen"])
        noise_gen.set_state(st["noise_gen"].to(noise_gen.get_state().device))
        step, pos, perm = int(st["step"]), int(st["pos"]), st["perm"]
        losses, wall = st["losses"].tolist(), float(st["wall_time"])

    def save_state():
        if state_file is None:
            return
        bad = _nonfinite_tensors(net)
        if bad:  # never overwrite the last good state with diverged weights
            raise TrainingDiverged(
                f"the weights became non-finite by step {step} ({len(bad)} tensors, e.g. {bad[0]!r}); "
                f"{state_file} keeps the last good state. Lower the learning rate or clip gradients.")
        if rank == 0:
            atomic_torch_save({
                "model": net.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "data_gen": data_gen.get_state(),
                "noise_gen": noise_gen.get_state().cpu(), "step": step, "pos": pos, "perm": perm,
                "losses": torch.tensor(losses, dtype=torch.float64), "wall_time": wall,
            }, state_file)
        if world > 1:
            dist.barrier()

    last = config.steps if stop_at is None else min(stop_at, config.steps)
    log = open(Path(run_dir) / "log.txt", "a") if (run_dir is not None and rank == 0) else None
    bar = None
    if config.progress and rank == 0 and step < last:
        from tqdm.auto import tqdm

        bar = tqdm(total=last, initial=step, desc="train", dynamic_ncols=True)
    sample_shape = tuple(x_all.shape[1:])
    start_step, wall_at_start, t0 = step, wall, time.perf_counter()
    model.train()
    stop = _SigintFlag()
    interrupted = False
    try:
        stop.install()
        while step < last:
            if stop.requested(world, device):
                wall, t0 = wall + time.perf_counter() - t0, time.perf_counter()
                save_state()
                interrupted = True
                break
            if pos + config.batch_size > n:  # new epoch; the incomplete tail batch is dropped
                perm, pos = torch.randperm(n, generator=data_gen), 0
            idx = perm[pos:pos + config.batch_size][rank * local_b:(rank + 1) * local_b]
            pos += config.batch_size
            xb = x_all[idx].to(device, non_blocking=True)
            yb = y_all[idx].to(device, non_blocking=True) if y_all is not None else None
            noise = objective.draw(config.batch_size, sample_shape, noise_gen, device, dtype)
            noise = {k: v[rank * local_b:(rank + 1) * local_b] for k, v in noise.items()}
            torch.manual_seed(hash((config.seed, step, rank)) % (2**63))  # dropout masks
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                loss = objective(model, xb, yb, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            loss_value = loss.detach().float()
            if world > 1:
                dist.all_reduce(loss_value)
                loss_value /= world
            if config.grad_clip:
                grad_norm = nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip).float()
                loss_host, grad_host = torch.stack([loss_value, grad_norm.to(loss_value.device)]).tolist()
            else:
                loss_host, grad_host = loss_value.item(), 0.0  # one host read per step, as before
            if not (math.isfinite(loss_host) and math.isfinite(grad_host)):
                what = "loss" if not math.isfinite(loss_host) else "gradient norm"
                wall += time.perf_counter() - t0
                t0 = time.perf_counter()
                raise TrainingDiverged(
                    f"the {what} became {loss_host if what == 'loss' else grad_host} at step {step + 1}; "
                    f"training stopped before that update, with the weights of step {step}"
                    + (f"; {state_file} keeps the last saved state" if state_file is not None else "")
                    + ". Lower the learning rate (--lr), clip gradients (--grad-clip) or check the data.",
                    TrainResult(net=net, ema=ema, losses=losses, step=step, wall_time=wall))
            opt.step()
            sched.step()
            step += 1
            ema_update(ema, net, min(config.ema_decay, (1 + step) / (10 + step)))
            losses.append(loss_host)
            if bar is not None:
                bar.update(1)
            if step % config.log_every == 0 or step == last:
                recent = sum(losses[-config.log_every:]) / len(losses[-config.log_every:])
                if bar is not None:
                    bar.set_postfix(loss=f"{recent:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
                if log is not None:
                    el = wall + time.perf_counter() - t0
                    log.write(f"step {step} loss {recent:.5f} lr {sched.get_last_lr()[0]:.3e} "
                              f"img/s {(step - start_step) * config.batch_size / max(el - wall_at_start, 1e-9):.1f} "
                              f"wall {el:.1f}\n")
                    log.flush()
                if callback is not None and rank == 0:
                    callback(step, recent, None)
            if step % config.ckpt_every == 0 or step == last:
                wall, t0 = wall + time.perf_counter() - t0, time.perf_counter()
                save_state()
    finally:
        stop.uninstall()
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
    wall += time.perf_counter() - t0
    done, spent = step - start_step, wall - wall_at_start
    ips = done * config.batch_size / spent if done and spent > 0 else float("nan")
    return TrainResult(net=net, ema=ema, losses=losses, step=step, wall_time=wall, images_per_sec=ips,
                       interrupted=interrupted)


class _SigintFlag:
    """Turns the first Ctrl-C into a request to stop after the current step (a second one aborts)."""

    def __init__(self):
        self.flag = False
        self.previous = None

    def _handler(self, signum, frame):
        if self.flag:  # second Ctrl-C: the user insists
            raise KeyboardInterrupt
        self.flag = True

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)

    def uninstall(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def requested(self, world: int, device) -> bool:
        if world == 1:
            return self.flag
        # every process must stop at the same step: stop if any of them was interrupted
        flag = torch.tensor([float(self.flag)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))
