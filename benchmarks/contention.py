"""Speed beside a busy process: training and sampling, idle and with one core taken.

    python benchmarks/contention.py [--train-steps 30] [--sampler-steps 50] \
        [--policies default,PASSIVE,spin=1e3] [--csv checkpoints/results/contention.csv]

Why: torch's CPU kernels run on an OpenMP thread pool (libgomp), one thread per core.
Between parallel regions libgomp's threads spin-wait for the next one (``GOMP_SPINCOUNT``
iterations, 300 000 by default) before they sleep. When another process holds one of the
cores, a spinning thread burns the time slice its partner needs, and every barrier waits
for a thread that is not scheduled: the job slows by far more than the 2x that losing
half the machine explains. Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) fixes that but
costs a wake-up per parallel region on an idle machine; a bounded spin (sdelab's
``GOMP_SPINCOUNT=1000``) aims at both.

What: each measurement runs in a fresh Python process (libgomp reads its settings once,
when torch loads), for each workload x setting x {idle, busy}. "busy" starts one
CPU-bound process (a Python spin loop) beside the workload and stops it afterwards. The
settings (``--policies``, see ``POLICIES``) are libgomp's default (nothing set), PASSIVE,
and bounded spin counts; the workers import torch before sdelab, so sdelab's own setting
does not hide the difference. Workloads, timed after a warm-up inside the worker
(median of ``--repeats``):

* train: ``sdelab.train.train`` on Fashion-MNIST, the shipped-size ScoreNet (1.07 M
  parameters), batch 64, ``--train-steps`` steps;
* sample: Euler-Maruyama with ``--sampler-steps`` steps from the shipped
  ``fashion-vp-linear`` model, batch 64.

Prints one line per measurement (with the load average: "idle" only means that this
script adds no load), a table of busy/idle per setting, and the first setting's time over
each other's per case.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

#: name -> the variables a worker gets (everything else about OpenMP is removed).
POLICIES = {
    "default": {},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin=1e2": {"GOMP_SPINCOUNT": "100"},
    "spin=1e3": {"GOMP_SPINCOUNT": "1000"},
    "spin=3e3": {"GOMP_SPINCOUNT": "3000"},
    "spin=1e4": {"GOMP_SPINCOUNT": "10000"},
    "spin=1e5": {"GOMP_SPINCOUNT": "100000"},
}


def worker(kind: str, steps: int, repeats: int) -> dict:
    """Runs in the child: torch is imported before sdelab, so the given policy holds."""
    import torch

    import sdelab  # noqa: F401  (after torch on purpose, see above)
    from sdelab import checkpoints, make_sde, samplers
    from sdelab.data import load_fashion_mnist, to_model_range
    from sdelab.losses import DSMObjective
    from sdelab.nets import ScoreNet
    from sdelab.train import TrainConfig, train

    times = []
    if kind == "train":
        x = to_model_range(load_fashion_mnist("train").images[:6400])
        sde = make_sde("vp-linear")
        torch.manual_seed(0)
        net = ScoreNet()

        def run(n):
            cfg = TrainConfig(
                steps=n, batch_size=64, warmup=1, progress=False, log_every=10_000
            )
            train(net, DSMObjective(sde), x, cfg)
    else:
        model = checkpoints.load("fashion-vp-linear", kind="score")
        score_fn = model.score_fn()
        x_T = model.sde.prior_sample(
            (64, 1, 28, 28), generator=torch.Generator().manual_seed(0)
        )

        def run(n):
            with torch.no_grad():
                samplers.euler_maruyama(
                    score_fn,
                    model.sde,
                    x_T,
                    steps=n,
                    generator=torch.Generator().manual_seed(1),
                )

    run(3)  # warm-up: oneDNN picks its kernels, the allocator fills
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(steps)
        times.append(time.perf_counter() - t0)
    return {
        "seconds": statistics.median(times),
        "all": [round(t, 3) for t in times],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def measure(kind: str, policy: str, busy: bool, args) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    }
    env.update(POLICIES[policy])
    if args.threads is None:  # torch's own default: one thread per core
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(k, None)
    else:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    steps = args.train_steps if kind == "train" else args.sampler_steps
    spinner = None
    if busy:
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env)
        time.sleep(0.5)
    cmd = [sys.executable, __file__, "--worker", kind, "--steps", str(steps)]
    cmd += ["--repeats", str(args.repeats)]
    try:
        out = subprocess.run(
            cmd,
            env=env,
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
    except subprocess.TimeoutExpired:  # the 20-40x case: report it rather than wait
        return {
            "seconds": math.inf,
            "all": [f"> {args.timeout:.0f} s"],
            "threads": "?",
            "torch": "?",
        }
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if out.returncode != 0:
        raise RuntimeError(
            f"{kind}/{policy}/{'busy' if busy else 'idle'} failed:\n"
            f"{out.stderr[-3000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument("--sampler-steps", type=int, default=50)
    p.add_argument(
        "--repeats", type=int, default=2, help="timed runs per worker (median)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: torch's)"
    )
    p.add_argument(
        "--timeout", type=float, default=900, help="seconds per worker before giving up"
    )
    p.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help=f"comma-separated subset of {', '.join(POLICIES)}",
    )
    p.add_argument(
        "--csv",
        metavar="PATH",
        help="also write workload,policy,idle_s,busy_s rows (chapter 9 reads "
        "checkpoints/results/contention.csv)",
    )
    p.add_argument("--worker", choices=("train", "sample"), help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.repeats)), flush=True)
        return
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs,"
        f" load average before: {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    policies = args.policies.split(",")
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        p.error(f"--policies: unknown {unknown}; allowed: {', '.join(POLICIES)}")
    res = {}
    for kind in ("train", "sample"):
        for policy in policies:
            for busy in (False, True):
                r = measure(kind, policy, busy, args)
                res[kind, policy, busy] = r["seconds"]
                torch_version = r["torch"]
                print(
                    f"{kind:6s} policy={policy:8s} {'busy' if busy else 'idle'}: "
                    f"{r['seconds']:7.2f} s (runs {r['all']}, {r['threads']} threads, "
                    f"torch {r['torch']}; load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )

    def fmt(s: float) -> str:
        return f"{s:.2f}" if math.isfinite(s) else f"> {args.timeout:.0f}"

    def ratio(a: float, b: float) -> str:
        if math.isfinite(a) and math.isfinite(b):
            return f"{a / b:.2f}x"
        return (
            "timed out" if not math.isfinite(b) else "> " + f"{args.timeout / b:.0f}x"
        )

    print("\n| workload | wait policy | idle s | one core busy s | busy / idle |")
    print("|---|---|---|---|---|")
    for (kind, policy, busy), s in res.items():
        if not busy:
            b = res[kind, policy, True]
            print(f"| {kind} | {policy} | {fmt(s)} | {fmt(b)} | {ratio(b, s)} |")
    for kind in ("train", "sample"):
        for busy in (False, True):
            state = "busy" if busy else "idle"
            for policy in policies[1:]:
                r = ratio(res[kind, policies[0], busy], res[kind, policy, busy])
                print(f"{kind}, {state}: {policies[0]} / {policy} = {r}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["workload", "policy", "idle_s", "busy_s", "machine", "torch"])
            for (kind, policy, busy), s in res.items():
                if not busy:
                    w.writerow([kind, policy, f"{s:.3f}", f"{res[kind, policy, True]:.3f}",
                                f"{os.cpu_count()} CPUs", torch_version])
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
