"""Error vs NFE of every sampler under every SDE, with exact scores; optionally, sampler overhead.

    python benchmarks/samplers.py [--quick] [--n 2000] [--nfe 5 10 20 50 100 200 500 1000]
                                  [--sdes ve vp-linear ...] [--out runs/benchmarks/samplers]
                                  [--overhead] [--threads 1]

Two problems with exact scores (``sdelab.toy``), so every error is the sampler's own:

* **mixture-2d**: the 8-Gaussian ring (radius 4, std 0.5). Metric: the unbiased energy distance
  (Szekely & Rizzo; ``tests/sample_distances.py``) between the ``--n`` samples and as many exact
  samples of :math:`p_\\epsilon`. Its Monte Carlo floor (the same statistic between two exact
  samples; mean 0, heavy right tail) is printed: values inside it mean "as good as exact".
* **gauss-16d**: a 16-D Gaussian with a random mean and covariance eigenvalues from 0.05 to 2.
  Metric: the 2-Wasserstein distance between the Gaussian fitted to the samples and the exact
  :math:`p_\\epsilon` (Frechet/Bures form), with its floor measured the same way.

Both start from exact samples of :math:`p_T` (not the prior), so that the prior mismatch of an
SDE (VP-cosine keeps 5.7 % of the data mean at T) is not charged to the sampler. For the
deterministic samplers a second table gives the *path error*: the RMS distance to the exact
flow of the same ``x_T`` (a DOP853 solve at rtol = atol = 1e-10 for the mixture, the closed-form
linear flow for the Gaussian), free of Monte Carlo noise. A sampler with k NFE per step gets
``budget // k`` steps; the NFE actually used is stored with each row. RK45 has its own table:
one row per tolerance (1e-1 ... 1e-6), its NFE and errors.

Writes ``errors.csv`` (dataset, sde, sampler, steps, nfe, metric, value) and ``errors.png`` (one
panel per dataset and SDE) under ``--out``. ``--quick`` (n = 1000, budgets 5, 20, 100, 1000) runs
in a few minutes on one CPU core; the default in about three times that.

``--overhead`` times instead a ScoreNet-size network (untrained; only its cost matters) on a batch
of 256 images 1x28x28 (``--overhead-batch``): for each sampler, wall time / (NFE x the median time
of one score evaluation measured in the same run), and wall time / the summed time of the
evaluations (less sensitive to a busy machine). The samplers add scalar arithmetic and a few
tensor operations per step, so both should be close to 1 (target <= 1.05); RK45 (rtol = atol =
1e-3) also copies the state to NumPy and back at every evaluation.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # sample_distances
from sample_distances import energy_distance  # noqa: E402

from sdelab import SDE_NAMES, make_sde  # noqa: E402
from sdelab import samplers as smp  # noqa: E402
from sdelab.toy import gaussian, ring_mixture  # noqa: E402

f64 = torch.float64

# name -> (function, NFE per step, keyword arguments, deterministic)
SAMPLERS = {
    "euler_maruyama": (smp.euler_maruyama, 1, {}, False),
    "reverse_diffusion": (smp.reverse_diffusion, 1, {}, False),
    "pc (rd + 1 langevin)": (smp.predictor_corrector, 2, {}, False),
    "pf_euler": (smp.probability_flow_euler, 1, {}, True),
    "heun (edm grid)": (smp.heun, 2, {}, True),
    "dpm_solver-1": (smp.dpm_solver, 1, {"order": 1}, True),
    "dpm_solver-2": (smp.dpm_solver, 2, {"order": 2}, True),
}
RK45_TOLS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


# ---------------------------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------------------------
def gauss_16d():
    g = torch.Generator().manual_seed(1)
    d = 16
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=f64))
    evals = torch.logspace(math.log10(0.05), math.log10(2.0), d, dtype=f64)
    cov = q @ torch.diag(evals) @ q.T
    mean = torch.randn(d, generator=g, dtype=f64)
    return gaussian(mean, cov)


def gaussian_w2(x, mean, cov):
    """W2 between N(mean(x), cov(x)) and N(mean, cov) (Bures form)."""
    m, c = x.mean(0), torch.cov(x.T)
    e, u = torch.linalg.eigh(cov)
    r = u @ torch.diag(e.clamp(min=0).sqrt()) @ u.T
    cross = torch.linalg.eigvalsh(r @ c @ r).clamp(min=0).sqrt().sum()
    w2 = ((m - mean) ** 2).sum() + torch.trace(c) + torch.trace(cov) - 2 * cross
    return w2.clamp(min=0).sqrt().item()


def gaussian_flow(gm, sde, x, t_from, t_to):
    """The PF-ODE flow of Gaussian data in closed form (all C_t share C_0's eigenvectors)."""
    m_f, c_f = gm.moments_t(t_from, sde)
    m_t, c_t = gm.moments_t(t_to, sde)
    e_f, u = torch.linalg.eigh(c_f)
    e_t = torch.diagonal(u.T @ c_t @ u)
    return m_t + (x - m_f) @ (u @ torch.diag((e_t / e_f).sqrt()) @ u.T).T


def rms(a, b):
    return ((a - b) ** 2).reshape(len(a), -1).sum(1).mean().sqrt().item()


class Problem:
    def __init__(self, name, gm, n, seed):
        self.name, self.gm, self.n, self.seed = name, gm, n, seed

    def setup(self, sde):
        g = torch.Generator().manual_seed(self.seed)
        self.sde = sde
        self.score_fn = self.gm.score_fn(sde)
        self.x_T = sde.perturb(self.gm.sample(self.n, g), sde.T, generator=g)[0]
        self.target = sde.perturb(self.gm.sample(self.n, g), sde.eps, generator=g)[0]
        self.mean, self.cov = self.gm.moments_t(sde.eps, sde) if self.gm.num_components == 1 else (None, None)
        if self.gm.num_components == 1:
            self.exact_path = gaussian_flow(self.gm, sde, self.x_T, sde.T, sde.eps)
        else:
            self.exact_path = smp.probability_flow_rk45(self.score_fn, sde, self.x_T, rtol=1e-10, atol=1e-10,
                                                        method="DOP853").x

    def distance(self, x):
        if self.gm.num_components == 1:
            return gaussian_w2(x, self.mean, self.cov)
        return energy_distance(x, self.target)

    @property
    def metric(self):
        return "gaussian W2" if self.gm.num_components == 1 else "energy distance"

    def floor(self, sde, pairs=20):
        """Median and 95th percentile of the metric between exact samples (the Monte Carlo floor)."""
        g = torch.Generator().manual_seed(self.seed + 1000)
        vals = []
        for _ in range(pairs):
            x = sde.perturb(self.gm.sample(self.n, g), sde.eps, generator=g)[0]
            if self.gm.num_components == 1:
                vals.append(gaussian_w2(x, self.mean, self.cov))
            else:
                vals.append(energy_distance(x, sde.perturb(self.gm.sample(self.n, g), sde.eps, generator=g)[0]))
        v = torch.tensor(vals)
        return v.median().item(), torch.quantile(v, 0.95).item()


# ---------------------------------------------------------------------------------------------
# Error vs NFE
# ---------------------------------------------------------------------------------------------
def fmt(v):
    return f"{v:9.2e}" if v == v else f"{'-':>9}"


def run_errors(args):
    problems = [Problem("mixture-2d", ring_mixture(8, 4.0, 0.5), args.n, 0), Problem("gauss-16d", gauss_16d(), args.n, 0)]
    rows = []
    budgets = args.nfe
    for prob in problems:
        for sde_name in args.sdes:
            sde = make_sde(sde_name)
            t0 = time.perf_counter()
            prob.setup(sde)
            med, q95 = prob.floor(sde)
            print(f"\n## {prob.name} | {sde_name} | n = {prob.n} | {prob.metric} "
                  f"(Monte Carlo floor: median {med:.2e}, 95% {q95:.2e})")
            rows.append((prob.name, sde_name, "exact (floor, median)", "", "", prob.metric, med))
            rows.append((prob.name, sde_name, "exact (floor, 95%)", "", "", prob.metric, q95))
            head = f"{'sampler':22s}" + "".join(f"{b:>10d}" for b in budgets)
            dist, path = [head], [head]
            for name, (fn, per, kw, det) in SAMPLERS.items():
                dl, pl = f"{name:22s}", f"{name:22s}"
                for b in budgets:
                    steps = b // per
                    if steps < 1:
                        dl, pl = dl + f"{'-':>10}", pl + f"{'-':>10}"
                        continue
                    res = fn(prob.score_fn, sde, prob.x_T, steps=steps, generator=torch.Generator().manual_seed(b), **kw)
                    d = prob.distance(res.x)
                    rows.append((prob.name, sde_name, name, steps, res.nfe, prob.metric, d))
                    dl += " " + fmt(d)
                    if det:
                        p = rms(res.x, prob.exact_path)
                        rows.append((prob.name, sde_name, name, steps, res.nfe, "path rms", p))
                        pl += " " + fmt(p)
                dist.append(dl)
                if det:
                    path.append(pl)
            print(f"{prob.metric} by NFE budget (steps = budget // NFE per step):")
            print("\n".join(dist))
            print("path error (RMS to the exact flow of the same x_T) by NFE budget:")
            print("\n".join(path))
            vals = []
            for tol in RK45_TOLS:
                res = smp.probability_flow_rk45(prob.score_fn, sde, prob.x_T, rtol=tol, atol=tol)
                d, p = prob.distance(res.x), rms(res.x, prob.exact_path)
                rows.append((prob.name, sde_name, f"rk45 tol={tol:.0e}", "", res.nfe, prob.metric, d))
                rows.append((prob.name, sde_name, f"rk45 tol={tol:.0e}", "", res.nfe, "path rms", p))
                vals.append(f"{tol:.0e}: nfe {res.nfe:4d}  {d:8.2e}  path {p:8.2e}")
            print("rk45 (tolerance: NFE, " + prob.metric + ", path error)")
            print("\n".join("  " + v for v in vals))
            print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def save(rows, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "errors.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "sde", "sampler", "steps", "nfe", "metric", "value"])
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r[0] for r in rows))
    sdes = list(dict.fromkeys(r[1] for r in rows))
    panels = [(ds, m) for ds in datasets for m in ("distance", "path rms")]
    fig, axes = plt.subplots(len(panels), len(sdes), figsize=(3.2 * len(sdes), 2.8 * len(panels)),
                             squeeze=False, sharex=True)
    for i, (ds, kind) in enumerate(panels):
        for j, sde in enumerate(sdes):
            ax = axes[i][j]
            sel = [r for r in rows if r[0] == ds and r[1] == sde]
            metric = next(r[5] for r in sel if r[5] != "path rms") if kind == "distance" else "path rms"
            for k, name in enumerate(SAMPLERS):
                pts = [(r[4], r[6]) for r in sel if r[2] == name and r[5] == metric]
                if pts:
                    ax.plot(*zip(*pts), "o-", ms=3, color=f"C{k}", label=name)
            pts = sorted((r[4], r[6]) for r in sel if r[2].startswith("rk45") and r[5] == metric)
            ax.plot(*zip(*pts), "k^--", ms=3, label="rk45")
            ax.set_xscale("log")
            if kind == "distance":
                # the unbiased energy distance can be negative: linear scale inside the floor
                floor = next(r[6] for r in sel if r[2] == "exact (floor, 95%)")
                ax.axhline(floor, color="grey", lw=0.8, ls=":", label="MC floor (95%)")
                ax.set_yscale("symlog", linthresh=floor)
            else:
                ax.set_yscale("log")
            ax.set_title(f"{ds} | {sde}", fontsize=9)
            if j == 0:
                ax.set_ylabel(metric)
            if i == len(panels) - 1:
                ax.set_xlabel("NFE")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "errors.png", dpi=120)
    print(f"\nwrote {out / 'errors.csv'} and {out / 'errors.png'}")


# ---------------------------------------------------------------------------------------------
# Overhead with a network
# ---------------------------------------------------------------------------------------------
def run_overhead(args):
    from sdelab.nets import ScoreNet, count_params, score_fn_from_net

    torch.manual_seed(0)
    sde = make_sde("vp-linear")
    net = ScoreNet().eval().requires_grad_(False)
    score_fn = score_fn_from_net(net, sde)
    x_T = sde.prior_sample((args.overhead_batch, 1, 28, 28), torch.Generator().manual_seed(0))
    calls = []

    def timed(x, t):
        t0 = time.perf_counter()
        out = score_fn(x, t)
        calls.append(time.perf_counter() - t0)
        return out

    with torch.no_grad():
        for _ in range(2):  # warm-up
            score_fn(x_T, torch.full((len(x_T),), 0.5))
    print(f"overhead: ScoreNet ({count_params(net) / 1e6:.2f} M parameters), batch {tuple(x_T.shape)}, "
          f"{torch.get_num_threads()} threads, {args.overhead_steps} steps")
    print(f"{'sampler':22s} {'nfe':>5s} {'wall s':>8s} {'eval s (median)':>16s} {'ratio':>7s}")
    runs = {name: (lambda fn=fn, kw=kw: fn(timed, sde, x_T, steps=args.overhead_steps,
                                            generator=torch.Generator().manual_seed(0), **kw))
            for name, (fn, per, kw, _) in SAMPLERS.items()}
    # RK45 moves the state to NumPy (float64) and back at every evaluation: its overhead is that copy
    runs["rk45 (tol 1e-3)"] = lambda: smp.probability_flow_rk45(timed, sde, x_T, rtol=1e-3, atol=1e-3)
    for name, call in runs.items():
        calls.clear()
        t0 = time.perf_counter()
        res = call()
        wall = time.perf_counter() - t0
        med = sorted(calls)[len(calls) // 2]
        # the ratio against the evaluations' own summed time isolates the sampler's work from
        # the machine's noise; against NFE x median it is the definition
        print(f"{name:22s} {res.nfe:5d} {wall:8.2f} {med:16.4f} {wall / (res.nfe * med):7.3f}"
              f"   (wall / sum of evaluation times: {wall / sum(calls):.3f})", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="n = 1000, NFE budgets 5, 20, 100, 1000")
    p.add_argument("--n", type=int, default=None, help="samples per run (default 2000; 1000 with --quick)")
    p.add_argument("--nfe", type=int, nargs="+", default=None, help="NFE budgets (default 5 10 20 50 100 200 500 1000)")
    p.add_argument("--sdes", nargs="+", default=list(SDE_NAMES), choices=SDE_NAMES)
    p.add_argument("--out", default="benchmarks/results/samplers", help="folder for errors.csv and errors.png")
    p.add_argument("--overhead", action="store_true", help="time the samplers' overhead with a ScoreNet instead")
    p.add_argument("--overhead-batch", type=int, default=256)
    p.add_argument("--overhead-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: 1 for the toy problems, torch's choice for --overhead)")
    args = p.parse_args(argv)
    if args.overhead:
        if args.threads:
            torch.set_num_threads(args.threads)
        run_overhead(args)
        return
    # toy tensors are small: extra intra-op threads only add synchronisation
    torch.set_num_threads(args.threads or 1)
    args.n = args.n or (1000 if args.quick else 2000)
    args.nfe = args.nfe or ([5, 20, 100, 1000] if args.quick else [5, 10, 20, 50, 100, 200, 500, 1000])
    t0 = time.perf_counter()
    rows = run_errors(args)
    save(rows, Path(args.out))
    print(f"total {time.perf_counter() - t0:.0f} s on {os.cpu_count()} CPUs ({torch.get_num_threads()} torch thread(s))")


if __name__ == "__main__":
    main()
