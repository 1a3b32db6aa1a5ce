"""Bits/dim of Fashion-MNIST test images by the probability-flow ODE: wall time and NFE.

    python benchmarks/likelihood.py [--n 1000] [--batch-size 200] [--checkpoint NAME_OR_PATH]
                                    [--model toy-gaussian|scorenet-random] [--sde vp-linear]
                                    [--divergence hutchinson] [--probes 1] [--rtol 1e-5] [--atol 1e-5]
                                    [--t0 T0] [--seed 0] [--threads 2] [--device cpu|cuda]

Uses the first ``--n`` test images, dequantized uniformly (one draw each), in batches of
``--batch-size`` (each batch is one ODE solve whose steps all its images share), Hutchinson with
``--probes`` Rademacher probes by default, RK45 at ``--rtol``/``--atol``.

The score model:

* ``--checkpoint NAME_OR_PATH``: a trained score checkpoint (``sdelab.checkpoints.load``); the
  SDE comes from its card. This is the real benchmark.
* ``--model toy-gaussian`` (the default without a checkpoint): a Gaussian fitted to the 60 000
  training images (mean and full 784x784 covariance, in the model range), whose score is exact
  under every SDE (``sdelab.toy``). Its exact bits/dim on the same dequantized points are printed
  beside the ODE's (the mean difference must be within a few standard errors of 0 plus the
  eps bias and prior mismatch), so the run checks the pipeline end to end; its NFE is that of a
  smooth, simple score, not of a network.
* ``--model scorenet-random``: an untrained ScoreNet (1.07 M parameters): the cost per score
  evaluation of the book's network; its bits/dim and NFE mean nothing.

Prints one line per batch and a JSON summary line (mean bpd and its standard error over images,
NFE per batch, wall time, images/s).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from sdelab import make_sde
from sdelab.data import load_fashion_mnist, to_model_range
from sdelab.likelihood import bits_per_dim, bpd_from_logp


def toy_gaussian(floor: float = 1e-3):
    """Gaussian fitted to the training images (model range); variances floored so it is proper.

    Border pixels of Fashion-MNIST are almost always 0, so the sample covariance is nearly
    singular; ``floor`` (variance 1e-3, std 0.03 in [-1, 1], about 4 grey levels) keeps every
    direction's density finite for dequantized test images.
    """
    from sdelab.toy import gaussian

    x = to_model_range(load_fashion_mnist("train").images).double().flatten(1)
    mean = x.mean(0)
    cov = torch.cov(x.T) + floor * torch.eye(x.shape[1], dtype=torch.float64)
    return gaussian(mean, cov, event_shape=(1, 28, 28))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="number of test images (default 1000)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--checkpoint", default=None, help="score checkpoint name or path (sdelab.checkpoints)")
    p.add_argument("--model", choices=("toy-gaussian", "scorenet-random"), default="toy-gaussian",
                   help="score model when no --checkpoint is given")
    p.add_argument("--sde", default="vp-linear", help="SDE for --model (a checkpoint brings its own)")
    p.add_argument("--divergence", choices=("hutchinson", "exact"), default="hutchinson")
    p.add_argument("--probes", type=int, default=1)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--t0", type=float, default=None, help="start time of the ODE (default: the SDE's eps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when present)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")

    exact_model = None
    dtype = torch.float32
    if args.checkpoint:
        from sdelab import checkpoints  # lazily: only this mode needs networks

        ck = checkpoints.load(args.checkpoint, kind="score", device=device)
        ck.net.requires_grad_(False)  # the divergence needs d/dx only
        sde, score_fn, what = ck.sde, ck.score_fn(), f"checkpoint {ck.card.get('name', args.checkpoint)}"
    elif args.model == "toy-gaussian":
        sde = make_sde(args.sde)
        exact_model = toy_gaussian().to(device)
        score_fn = exact_model.score_fn(sde)
        dtype, what = torch.float64, "toy Gaussian fitted to the training set (exact score)"
    else:
        from sdelab.nets import ScoreNet, count_params, score_fn_from_net

        sde = make_sde(args.sde)
        torch.manual_seed(args.seed)
        net = ScoreNet().to(device).eval().requires_grad_(False)
        score_fn = score_fn_from_net(net, sde)
        what = f"untrained ScoreNet ({count_params(net) / 1e6:.2f} M parameters; timing only)"

    images = load_fashion_mnist("test").images[: args.n].to(device)
    d = images[0].numel()
    gen = torch.Generator(device=device).manual_seed(args.seed)
    print(f"bits/dim of {len(images)} Fashion-MNIST test images | {what} | SDE {sde.name} | "
          f"{args.divergence} ({args.probes} probe(s)) | RK45 rtol={args.rtol:g} atol={args.atol:g} | "
          f"t0={args.t0 if args.t0 is not None else sde.eps:g} | batch {args.batch_size} | "
          f"{torch.get_num_threads()} threads | {device}", flush=True)

    bpds, exact_bpds, nfes = [], [], []
    start = time.perf_counter()
    for i in range(0, len(images), args.batch_size):
        t = time.perf_counter()
        res = bits_per_dim(score_fn, sde, images[i:i + args.batch_size], generator=gen, dtype=dtype,
                           divergence=args.divergence, probes=args.probes, rtol=args.rtol, atol=args.atol, t0=args.t0)
        bpds.append(res.bpd.cpu())
        nfes.append(res.nfe)
        line = (f"  images {i:5d}-{i + len(res.bpd) - 1:5d}: bpd {res.mean:.4f}  nfe {res.nfe:4d}  "
                f"{time.perf_counter() - t:7.1f} s")
        if exact_model is not None:
            ex = bpd_from_logp(exact_model.log_prob(res.x), d).cpu()
            exact_bpds.append(ex)
            line += f"  | exact bpd {ex.mean().item():.4f}"
        print(line, flush=True)
    wall = time.perf_counter() - start

    bpd = torch.cat(bpds)
    summary = {
        "images": len(bpd), "model": what, "sde": sde.name, "divergence": args.divergence, "probes": args.probes,
        "rtol": args.rtol, "atol": args.atol, "batch_size": args.batch_size,
        "bpd_mean": round(bpd.mean().item(), 4), "bpd_se": float(f"{bpd.std().item() / math.sqrt(len(bpd)):.3g}"),
        "nfe_per_batch": nfes, "wall_s": round(wall, 1), "images_per_s": round(len(bpd) / wall, 2),
        "threads": torch.get_num_threads(), "device": str(device),
    }
    if exact_bpds:
        ex = torch.cat(exact_bpds)
        summary["exact_bpd_mean"] = round(ex.mean().item(), 4)
        # per image, ODE - exact = Hutchinson noise (zero mean) + ODE/eps/prior errors: compare means
        diff = bpd - ex
        summary["mean_ode_minus_exact"] = float(f"{diff.mean().item():.3g}")
        summary["se_ode_minus_exact"] = float(f"{diff.std().item() / math.sqrt(len(diff)):.3g}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
