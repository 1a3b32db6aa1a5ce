"""Training throughput of ScoreNet on Fashion-MNIST: sdelab.train.train vs a bare loop, in one run.

    python benchmarks/train_throughput.py [--steps 40] [--repeats 3] [--batch-size 128] [--threads 2]

Both arms do the same maths per step (draw a batch, draw t and z, DSM loss in epsilon form,
backward, AdamW step); the trainer adds what makes it a trainer: the epoch permutation, the
global-batch noise draw, per-step reseeding for dropout, gradient clipping, the EMA update, the
learning-rate schedule and loss logging (no progress bar, no run folder, so no state files).
The arms alternate in blocks (bare, trainer, bare, trainer, ...) so that a machine shared with
other work slows both alike; the ratio of the medians is reported, for float32 and for bf16
autocast. Prints one JSON line per precision.
"""

import argparse
import json
import statistics
import time

import torch

from sdelab import make_sde
from sdelab.data import load_fashion_mnist, to_model_range
from sdelab.losses import DSMObjective
from sdelab.nets import ScoreNet, count_params, net_eps
from sdelab.train import TrainConfig, train
from sdelab.utils import expand


def bare_loop(net, sde, x, steps, batch_size, bf16, seed=0):
    """The 20-line baseline: nothing but the DSM step."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x0 = x[torch.randint(0, x.shape[0], (batch_size,), generator=g)]
        t = sde.eps + (sde.T - sde.eps) * torch.rand(batch_size, generator=g)
        z = torch.randn(x0.shape, generator=g)
        alpha, sigma = sde.marginal_coeffs(t)
        x_t = expand(alpha, x0) * x0 + expand(sigma, x0) * z
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = (net_eps(net, sde, x_t, t) - z).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return loss.item()


def trainer(net, sde, x, steps, batch_size, bf16, seed=0):
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=1e-3, warmup=10, lr_schedule="cosine", seed=seed,
                      bf16=bf16, progress=False, log_every=100)
    return train(net, DSMObjective(sde), x, cfg).losses[-1]


def timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per arm and precision")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = to_model_range(load_fashion_mnist("train").images)
    sde = make_sde("vp-linear")
    torch.manual_seed(0)
    net = ScoreNet()
    for bf16 in (False, True):
        bare_loop(net, sde, x, 5, args.batch_size, bf16)  # warm-up: oneDNN picks its kernels
        trainer(net, sde, x, 5, args.batch_size, bf16)
        times = {"bare": [], "trainer": []}
        for r in range(args.repeats):
            times["bare"].append(timed(bare_loop, net, sde, x, args.steps, args.batch_size, bf16, r))
            times["trainer"].append(timed(trainer, net, sde, x, args.steps, args.batch_size, bf16, r))
        ips = {k: args.steps * args.batch_size / statistics.median(v) for k, v in times.items()}
        print(json.dumps({
            "precision": "bf16-autocast" if bf16 else "float32", "params": count_params(net),
            "batch_size": args.batch_size, "threads": args.threads, "steps_per_block": args.steps,
            "blocks": args.repeats, "bare_img_per_s": round(ips["bare"], 1),
            "trainer_img_per_s": round(ips["trainer"], 1), "ratio": round(ips["trainer"] / ips["bare"], 3),
            "block_times_s": {k: [round(t, 2) for t in v] for k, v in times.items()},
        }), flush=True)


if __name__ == "__main__":
    main()
