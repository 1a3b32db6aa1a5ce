"""sdelab's samplers beside k-diffusion's and diffusers', with the same score and the same noise.

The peers are a benchmark-only extra, never a runtime dependency of sdelab. Install them
beside the project's venv (torch comes from the venv)::

    pip install --target /work/scratch/peers --no-deps k-diffusion diffusers torchsde \\
        torchdiffeq trampoline huggingface_hub regex importlib_metadata zipp filelock \\
        requests safetensors
    PYTHONPATH=$PWD:/work/scratch/peers python benchmarks/samplers_vs_peers.py toys

or ``pip install -e ".[bench]"`` (the ``bench`` extra: k-diffusion with all its own dependencies,
wandb and kornia included, which the benchmark does not need; the ``--no-deps`` route above is the
light one). Subcommands, each resumable and writing to
``benchmarks/results/peers/`` (csv + png):

* ``toys``: problems with exact scores (``sdelab.toy``) under VP-linear, VP-cosine and VE.
  Deterministic samplers: RMS distance of the final (denoised) samples to a tight reference
  solve of the same prior draws (DOP853, rtol = atol = 1e-10, then the exact Tweedie step).
  Stochastic samplers: energy distance to exact samples of the data, with its Monte-Carlo
  floor (two exact samples of the same size); on the ring mixture also the within-mode W2
  (``Toy.mode_w2``: each mode's fitted Gaussian against its exact law), which sees the modes'
  shape and place where the energy distance, at the ring's scale, does not.
* ``nets``: the shipped fashion-vp-linear / fashion-vp-cosine networks, N = 1000 images drawn
  from identical prior noise (chunks of 100, chunk i seeded with i, as
  ``tools/evaluate_checkpoints.py`` does), scored by the project's classifier FD against the
  10 k test set.
* ``tend``: where sampling stops (issue 20): the PF-ODE solved by RK45 from T down to each
  t_end in a list (one solve, dense output), then one Tweedie step; and the few-step samplers
  with the same end times.
* ``baselines``: EM-1000 and PC-500 on the networks at the same N (long: run it with nohup; more
  processes with ``PEERS_HELPER=1`` take chunks from the end).
* ``defaults``: per toy cell, the best peer against sdelab's best sampler on its default
  grid and end time (``--kind deterministic`` or ``stochastic``; ``--csv`` picks the results
  file: the stochastic cells are also run with ``toys --n 10000 --kinds stochastic --csv
  toys-n10000-<problem>.csv``, whose Monte-Carlo floor is 5x lower than at the default n = 2000;
  ``--peers native`` keeps the peers on their own schedules only, what their documentation runs).
* ``seeds`` / ``defaults --seeds``: one noise draw cannot judge a stochastic cell (on the ring
  the same sampler's energy distance varies by several floors between draws). ``seeds`` runs
  each cell's candidates (sdelab's defaults, each peer library's two best by the first draw,
  by each metric) on five fresh draws; ``defaults --seeds`` compares the means per metric
  (better or behind only beyond two standard errors of the difference and above the floor)
  and calls a cell behind when one metric says so and none says better.
* ``nets --which target`` / ``nets-target``: issue 14's side by side on the networks at 5, 10,
  20 and 50 NFE (sdelab as ``sample_from_checkpoint`` runs it, the peers' best configurations),
  and its table.
* ``report`` / ``plot``: markdown tables and figures from the csv files; ``publish`` copies the
  network results to ``checkpoints/results/samplers-n1000-*.csv``, where the book reads them.

``SDELAB_UNDER_TEST=/path/to/checkout`` measures that checkout's ``sdelab`` (a branch before it
lands) instead of this one's.

**What is matched.** Every sampler sees one ``score_fn(x, t)``. k-diffusion works in the
VE-equivalent variable :math:`y = x/\\alpha` with noise level :math:`\\hat\\sigma =
\\sigma/\\alpha`; its denoiser is Tweedie's formula :math:`D(y, \\hat\\sigma) = (x + \\sigma^2
s(x, t))/\\alpha` at :math:`t = \\lambda^{-1}(-\\log\\hat\\sigma)`. diffusers' schedulers work in
the variance-preserving variable :math:`x' = y/\\sqrt{1 + \\hat\\sigma^2}` on a discrete schedule:
it is given ``trained_betas`` such that its ``alphas_cumprod[i]`` is exactly
:math:`1/(1 + \\hat\\sigma(t_i)^2)` at :math:`t_i = \\epsilon + i (T - \\epsilon)/999`, and the model
wrapper maps the discrete timestep back to :math:`t_i` (interpolated for fractional ones) and
returns :math:`\\hat\\epsilon = -\\sigma s`. So all three integrate the same probability-flow ODE
between the same end points :math:`T` and :math:`\\epsilon`, and finish with a denoising step to
:math:`\\hat\\sigma = 0` (sdelab: ``denoise=True``; k-diffusion: a final sigma of 0; diffusers:
``final_sigmas_type="zero"``). NFE is counted by the wrapper, not taken from the docs.
Times are not compared (a ratio would need an idle machine); NFE is the cost.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# $SDELAB_UNDER_TEST: measure another checkout's sdelab (e.g. a branch before it lands)
sys.path.insert(0, os.environ.get("SDELAB_UNDER_TEST", str(ROOT)))

from sdelab import checkpoints, metrics, samplers as smp  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "peers"
CACHE = ROOT / "runs" / "peers"
f64 = torch.float64


# ----------------------------------------------------------------------------------------------
# score wrappers shared by the peers
# ----------------------------------------------------------------------------------------------
class Counter:
    """Wraps ``score_fn`` and counts batch evaluations (the NFE)."""

    def __init__(self, score_fn):
        self.score_fn, self.nfe = score_fn, 0

    def __call__(self, x, t):
        self.nfe += 1
        return self.score_fn(x, t)


def _lam_to_t(sde, lam: torch.Tensor) -> torch.Tensor:
    t = sde.t_from_half_log_snr(lam.to(f64))
    return t.clamp(sde.eps, sde.T)


def kdiff_denoiser(score_fn, sde):
    """k-diffusion's ``model(y, sigma_hat)``: Tweedie's E[x0 | x] in the VE variable y = x/alpha."""

    def model(y, sigma_hat, **kw):
        sh = sigma_hat.to(f64).reshape(-1)
        t = _lam_to_t(sde, -torch.log(sh))
        alpha, sigma = sde.marginal_coeffs(t)
        alpha, sigma = alpha.to(y.dtype), sigma.to(y.dtype)
        shape = (-1,) + (1,) * (y.dim() - 1)
        if alpha.numel() == 1:
            alpha, sigma, t = (v.expand(y.shape[0]) for v in (alpha, sigma, t))
        x = y * alpha.reshape(shape)
        s = score_fn(x, t.to(y.dtype))
        return (x + sigma.reshape(shape) ** 2 * s) / alpha.reshape(shape)

    return model


def sigma_hat(sde, t) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=f64)
    return torch.exp(-sde.half_log_snr(t))


def sdelab_times_to_sigmas(sde, times, device, dtype):
    """k-diffusion's sigma schedule for sdelab's time grid, with the final 0 (a Tweedie step)."""
    s = sigma_hat(sde, torch.tensor(times, dtype=f64))
    return torch.cat([s, s.new_zeros(1)]).to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# the peers, each wrapped around the same score_fn
# ----------------------------------------------------------------------------------------------
def import_kdiffusion():
    """k-diffusion's sampling module without its package __init__ (which imports training code)."""
    import importlib.util
    import types

    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise ImportError("k-diffusion is not installed (see the pip line at the top of this file)")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = pkg
    import k_diffusion.sampling as K

    return K


def sdelab_grid(sde, steps: int, grid: str, t_end: float | None = None) -> list[float]:
    """sdelab's named grid with ``steps`` intervals from T to ``t_end`` (default ``sde.eps``)."""
    if t_end is None or t_end == sde.eps:
        return smp.time_grid(sde, steps, grid, dtype=f64).tolist()
    if grid == "mixed":  # new with issue 14: time_grid takes t_end since then
        return smp.time_grid(sde, steps, grid, t_end=t_end, dtype=f64).tolist()
    T = sde.T
    if grid == "uniform":
        return torch.linspace(T, t_end, steps + 1, dtype=f64).tolist()
    lam_T, lam_e = sde.half_log_snr(torch.tensor([T, t_end], dtype=f64)).tolist()
    if grid == "log_snr":
        lam = torch.linspace(lam_T, lam_e, steps + 1, dtype=f64)
    else:
        rho = 7.0
        a, b = math.exp(-lam_T / rho), math.exp(-lam_e / rho)
        lam = -rho * torch.log(a + torch.linspace(0, 1, steps + 1, dtype=f64) * (b - a))
    t = sde.t_from_half_log_snr(lam)
    t[0], t[-1] = T, t_end
    return t.tolist()


def run_kdiff(name: str, sde, score_fn, x_T, times, gen, **kw):
    """k-diffusion's ``sample_<name>`` on sdelab's grid ``times`` (then sigma = 0): samples in x."""
    K = import_kdiffusion()
    sig = sdelab_times_to_sigmas(sde, times, x_T.device, x_T.dtype)
    alpha_T = sde.marginal_coeffs(torch.tensor([times[0]], dtype=f64))[0].item()
    y = x_T / alpha_T
    extra = dict(kw)
    if name in ("euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_2s_ancestral"):
        extra["noise_sampler"] = lambda s, s_next: torch.randn(y.shape, generator=gen, dtype=y.dtype)
    fn = getattr(K, f"sample_{name}")
    return fn(kdiff_denoiser(score_fn, sde), y, sig, disable=True, **extra)


DIFFUSERS_TRAIN_STEPS = 1000


def diffusers_table(sde):
    """(t_i, sigma_hat_i) of the discrete schedule handed to diffusers: t_i = eps + i (T - eps)/999."""
    t = torch.linspace(sde.eps, sde.T, DIFFUSERS_TRAIN_STEPS, dtype=f64)
    return t, sigma_hat(sde, t)


def diffusers_scheduler(cls_name: str, sde, **config):
    import diffusers

    _, sh = diffusers_table(sde)
    abar = 1.0 / (1.0 + sh**2)
    betas = 1.0 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
    cls = getattr(diffusers, cls_name)
    return cls(num_train_timesteps=DIFFUSERS_TRAIN_STEPS, trained_betas=betas.numpy(), **config)


def run_diffusers(cls_name: str, sde, score_fn, x_T, steps: int, gen, timesteps=None, **config):
    """A diffusers scheduler's own loop, epsilon prediction from ``score_fn``; samples in x.

    The discrete (possibly fractional) timestep k maps to the noise level the scheduler itself
    uses there (sigma_hat interpolated in k, as diffusers does) and from it to t.
    """
    sched = diffusers_scheduler(cls_name, sde, **config)
    if timesteps is not None:
        sched.set_timesteps(timesteps=list(timesteps))
    else:
        sched.set_timesteps(steps)
    t_tab, sh_tab = diffusers_table(sde)
    sh_T = sh_tab[-1].item()
    alpha_T = sde.marginal_coeffs(torch.tensor([sde.T], dtype=f64))[0].item()
    sample = (x_T / alpha_T) / math.sqrt(1 + sh_T**2) * float(sched.init_noise_sigma)

    def eps_model(x_vp, k):
        k = float(k)
        i0 = min(int(math.floor(k)), DIFFUSERS_TRAIN_STEPS - 2)
        w = k - i0
        sh = (1 - w) * sh_tab[i0] + w * sh_tab[i0 + 1]
        t = _lam_to_t(sde, -torch.log(sh.reshape(1)))
        alpha, sigma = (v.item() for v in sde.marginal_coeffs(t))
        x = x_vp * math.sqrt(1 + sh.item() ** 2) * alpha
        tv = torch.full((x.shape[0],), t.item(), dtype=x.dtype)
        return -sigma * score_fn(x, tv)

    import inspect

    kw = {"generator": gen} if "generator" in inspect.signature(sched.step).parameters else {}
    for k in sched.timesteps:
        model_in = sched.scale_model_input(sample, k)
        eps = eps_model(model_in, k)
        sample = sched.step(eps, k, sample, **kw).prev_sample
    return sample


# ----------------------------------------------------------------------------------------------
# the catalogue: every sampler at an NFE budget B (B grid intervals + the final denoising step)
# ----------------------------------------------------------------------------------------------
class Entry:
    def __init__(self, library, sampler, grid, kind, steps, run, t_end=None):
        self.library, self.sampler, self.grid, self.kind, self.steps, self.run = (
            library, sampler, grid, kind, steps, run)
        self.t_end = t_end

    @property
    def label(self):
        return f"{self.library}:{self.sampler}[{self.grid}]"


# sdelab samplers: name -> (function name, NFE per step, kwargs, kind); the new ones are picked
# up from sdelab.samplers when they exist there
SDELAB = {
    "pf_euler": ("probability_flow_euler", 1, {}, "deterministic"),
    "heun": ("heun", 2, {}, "deterministic"),
    "dpm_solver-1": ("dpm_solver", 1, {"order": 1}, "deterministic"),
    "dpm_solver-2": ("dpm_solver", 2, {"order": 2}, "deterministic"),
    "euler_maruyama": ("euler_maruyama", 1, {}, "stochastic"),
    "reverse_diffusion": ("reverse_diffusion", 1, {}, "stochastic"),
}
NEW_SDELAB = {
    "dpmpp_2m": ("dpmpp_2m", 1, {}, "deterministic"),
    "dpmpp_3m": ("dpmpp_3m", 1, {}, "deterministic"),
    "unipc": ("unipc", 1, {}, "deterministic"),  # its default order (3 since issue 14)
    "unipc-2": ("unipc", 1, {"order": 2}, "deterministic"),
    # UniPC as sample_from_checkpoint runs it at the measured end (generate.LEARNED_FINAL_JUMP)
    "unipc-gridjump": ("unipc", 1, {"final_jump": "grid"}, "deterministic"),
    "euler": ("euler", 1, {}, "deterministic"),
    "heun_sigma": ("heun", 2, {}, "deterministic"),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", 1, {}, "stochastic"),
    "dpmpp_3m_sde": ("dpmpp_3m_sde", 1, {}, "stochastic"),
    "edm_stochastic": ("edm_stochastic", 2, {}, "stochastic"),
}
KDIFF = {  # name -> (NFE per step, kind); the last interval (to sigma = 0) costs one NFE
    "euler": (1, "deterministic"),
    "heun": (2, "deterministic"),
    "lms": (1, "deterministic"),
    "dpmpp_2m": (1, "deterministic"),
    "euler_ancestral": (1, "stochastic"),
    "dpmpp_2m_sde": (1, "stochastic"),
    "dpmpp_3m_sde": (1, "stochastic"),
}
DIFFUSERS = {  # name -> (scheduler, config, kind)
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                 "deterministic"),
    "dpmpp_3m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3},
                 "deterministic"),
    "unipc-2": ("UniPCMultistepScheduler", {"solver_order": 2}, "deterministic"),
    "unipc-3": ("UniPCMultistepScheduler", {"solver_order": 3}, "deterministic"),
    "ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": True}, "deterministic"),
    "euler": ("EulerDiscreteScheduler", {}, "deterministic"),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
                     "stochastic"),
}


def sdelab_function(name):
    """The sdelab sampler behind benchmark entry ``name`` (None if this sdelab lacks it)."""
    fn_name = {**SDELAB, **NEW_SDELAB}[name][0]
    # after the samplers rework, the trapezoidal rule and Euler in t are heun_t / euler_t
    renamed = {"heun": "heun_t", "probability_flow_euler": "euler_t"}
    if name in SDELAB and hasattr(smp, renamed.get(fn_name, "-")):
        fn_name = renamed[fn_name]
    return getattr(smp, fn_name, None)


def sdelab_entry(name, budget, grid, t_end=None):
    _, per, kw, kind = {**SDELAB, **NEW_SDELAB}[name]
    fn = sdelab_function(name)
    if fn is None:
        return None
    steps = budget // per
    if steps < 1:
        return None

    def run(sf, sde, x_T, gen):
        extra = {"generator": gen} if kind == "stochastic" else {}
        import inspect

        flag = "final_denoise" if "final_denoise" in inspect.signature(fn).parameters else "denoise"
        extra[flag] = True
        if t_end is None:  # the sampler's own end time (sdelab.samplers.multistep_t_end on VE)
            return fn(sf, sde, x_T, steps=steps, grid=grid, **kw, **extra).x
        return fn(sf, sde, x_T, grid=sdelab_grid(sde, steps, grid, t_end), **kw, **extra).x

    return Entry("sdelab", name, grid, kind, steps, run, t_end)


def kdiff_entry(name, budget, grid, t_end=None):
    per, kind = KDIFF[name]
    steps = budget // per  # intervals on the sdelab grid; + one (one NFE) to sigma = 0
    if steps < 1:
        return None

    def run(sf, sde, x_T, gen):
        return run_kdiff(name, sde, sf, x_T, sdelab_grid(sde, steps, grid, t_end), gen)

    return Entry("k-diffusion", name, grid, kind, steps, run, t_end)


TIMESTEPS_OK = ("DPMSolverMultistepScheduler", "EulerDiscreteScheduler")  # set_timesteps(timesteps=)


def diffusers_entry(name, budget, spacing="linspace"):
    cls_name, config, kind = DIFFUSERS[name]
    steps = budget + 1 if name != "heun" else budget // 2 + 1

    def run(sf, sde, x_T, gen):
        if spacing == "to_eps":  # integer timesteps from 999 down to 0 (= sdelab's eps)
            ts = np.linspace(DIFFUSERS_TRAIN_STEPS - 1, 0, steps).round().astype(int).tolist()
            return run_diffusers(cls_name, sde, sf, x_T, steps, gen, timesteps=ts, **config)
        return run_diffusers(cls_name, sde, sf, x_T, steps, gen, timestep_spacing=spacing, **config)

    return Entry("diffusers", name, spacing, kind, steps, run)


# ----------------------------------------------------------------------------------------------
# toys with exact scores
# ----------------------------------------------------------------------------------------------
def energy_distance(x, y) -> float:
    """Unbiased energy distance (Szekely & Rizzo) between samples x (n, d) and y (m, d)."""
    x, y = x.reshape(len(x), -1).double(), y.reshape(len(y), -1).double()
    n, m = len(x), len(y)
    return (2 * torch.cdist(x, y).mean() - torch.cdist(x, x).sum() / (n * (n - 1))
            - torch.cdist(y, y).sum() / (m * (m - 1))).item()


def gaussian_w2(x, mean, cov) -> float:
    """W2 between the Gaussian fitted to x and N(mean, cov) (Bures form)."""
    m, c = x.mean(0), torch.cov(x.T)
    e, u = torch.linalg.eigh(cov)
    r = u @ torch.diag(e.clamp(min=0).sqrt()) @ u.T
    cross = torch.linalg.eigvalsh(r @ c @ r).clamp(min=0).sqrt().sum()
    return (((m - mean) ** 2).sum() + torch.trace(c) + torch.trace(cov) - 2 * cross).clamp(min=0).sqrt().item()


def gauss_16d():
    from sdelab.toy import gaussian

    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=f64))
    evals = torch.logspace(math.log10(0.05), math.log10(2.0), 16, dtype=f64)
    return gaussian(torch.randn(16, generator=g, dtype=f64), q @ torch.diag(evals) @ q.T)


def toy_problem(name: str):
    """The benchmark's toy problems by name: 8 Gaussians on a ring, or the 16-d Gaussian."""
    from sdelab.toy import ring_mixture

    return {"ring-2d": lambda: ring_mixture(8, 4.0, 0.5), "gauss-16d": gauss_16d}[name]()


class Toy:
    """A mixture with exact score, its reference flow and its exact target (both Tweedie-denoised)."""

    def __init__(self, name, gm, sde, n=2000, seed=0):
        self.name, self.gm, self.sde, self.n = name, gm, sde, n
        g = torch.Generator().manual_seed(seed)
        self.score_fn = gm.score_fn(sde)
        self.x_T = sde.perturb(gm.sample(n, g), sde.T, generator=g)[0]
        self.target = self.exact(n, g)
        self.gaussian = gm.num_components == 1
        if self.gaussian:  # its denoiser is linear: the target's law in closed form
            self.mean, self.cov = self.mode_laws[0]
        draws = [self.exact(n, g) for _ in range(10)]
        fl = [self.distance(x) for x in draws]
        self.floor = float(np.median(fl)), float(np.quantile(fl, 0.9))
        self.mode_floor = math.nan
        if not self.gaussian:
            self.mode_floor = float(np.quantile([self.mode_w2(x) for x in draws], 0.9))

    @functools.cached_property
    def mode_laws(self):
        """Each component's law after the exact flow to eps and the Tweedie step:
        N(mu_k, M S_k M^T / a^2), S_k = a^2 Sigma_k + s^2 I, M = I - s^2 S_k^-1, from the
        component's own denoiser D(x) = mu_k + M (x - a mu_k) / a (exact for a single Gaussian;
        within a mode of a mixture whose neighbours are many stds away, exact to round-off)."""
        gm, sde = self.gm, self.sde
        a, s = (v.item() for v in sde.marginal_coeffs(torch.tensor([sde.eps], dtype=f64)))
        eye = torch.eye(gm.dim, dtype=f64)
        laws = []
        for mu, cov in zip(gm.means, gm.covs):
            S = a**2 * cov + s**2 * eye
            M = eye - s**2 * torch.linalg.inv(S)
            laws.append((mu, M @ S @ M.T / a**2))
        return laws

    def mode_w2(self, x) -> float:
        """Within-mode W2 of a mixture: each sample goes to its nearest component mean, and
        :math:`\\sqrt{\\sum_k w_k W_2^2(\\hat g_k, g_k)}` compares the Gaussian fitted to each
        mode's samples with that mode's exact law (:attr:`mode_laws`). The energy distance at
        the ring's scale hardly sees a mode's shape (an early stop with a Tweedie step shrinks the
        modes by 5-10 % in variance and leaves it at the floor); this sees shape and position,
        while the mode weights stay the energy distance's to judge."""
        k = torch.cdist(x.double(), self.gm.means).argmin(1)
        total = sum(w.item() * gaussian_w2(x[k == j].double(), mu, cov) ** 2
                    for j, (w, (mu, cov)) in enumerate(zip(self.gm.weights, self.mode_laws)))
        return math.sqrt(total)

    @functools.cached_property
    def reference(self):
        """The tight reference solve of the same prior draws (computed on first use)."""
        sde = self.sde
        ref = smp.probability_flow_rk45(self.score_fn, sde, self.x_T, rtol=1e-10, atol=1e-10,
                                        method="DOP853")
        return smp.denoise(self.score_fn, sde, ref.x, sde.eps)

    def exact(self, n, g):
        x = self.sde.perturb(self.gm.sample(n, g), self.sde.eps, generator=g)[0]
        return smp.denoise(self.score_fn, self.sde, x, self.sde.eps)

    def distance(self, x) -> float:
        if self.gm.num_components == 1:
            return gaussian_w2(x, self.mean, self.cov)
        return energy_distance(x, self.target)

    @property
    def metric(self):
        return "W2 (Gaussian fit)" if self.gm.num_components == 1 else "energy distance"


TOY_FIELDS = ["problem", "sde", "library", "sampler", "grid", "kind", "steps", "nfe", "t_end", "path_rms",
              "distance", "metric", "floor_median", "floor_q90", "mode_w2", "mode_floor_q90"]


def toy_entries(budget, grids, t_end=None):
    out = []
    for name in [*SDELAB, *NEW_SDELAB]:
        for grid in grids:
            e = sdelab_entry(name, budget, grid, t_end)
            if e is not None:
                out.append(e)
    for name in KDIFF:
        for grid in grids:
            e = kdiff_entry(name, budget, grid, t_end)
            if e is not None:
                out.append(e)
    if t_end is None:
        for name in DIFFUSERS:
            spacings = ("linspace", "to_eps") if DIFFUSERS[name][0] in TIMESTEPS_OK else ("linspace",)
            for spacing in spacings:
                out.append(diffusers_entry(name, budget, spacing))
    return out


def cmd_toys(args) -> None:
    from sdelab import make_sde

    path = OUT / args.csv
    done = {(r["problem"], r["sde"], r["library"], r["sampler"], r["grid"], r["steps"], r["t_end"])
            for r in read_rows(path)}
    for pname in args.problems:
        for sde_name in args.sdes:
            sde = make_sde(sde_name)
            toy = None
            for t_end in [None, *args.t_ends]:
                for budget in args.budgets:
                    for e in toy_entries(budget, args.grids, t_end):
                        te = "" if t_end is None else f"{t_end:g}"
                        if (pname, sde_name, e.library, e.sampler, e.grid, str(e.steps), te) in done:
                            continue
                        if args.only and not any(o in e.label for o in args.only):
                            continue
                        if e.kind not in args.kinds:
                            continue
                        if toy is None:
                            toy = Toy(pname, toy_problem(pname), sde, n=args.n)
                        counter = Counter(toy.score_fn)
                        gen = torch.Generator().manual_seed(budget)
                        try:
                            with torch.no_grad():
                                x = e.run(counter, sde, toy.x_T, gen)
                        except Exception as exc:  # a peer that cannot run this SDE: say so, go on
                            print(f"{pname} {sde_name} {e.label} {budget}: {type(exc).__name__}: {exc}")
                            continue
                        try:
                            dist = f"{toy.distance(x):.3e}"
                        except (RuntimeError, ValueError):  # a diverged run: no finite moments
                            dist = "nan"
                        mode = ""
                        if e.kind == "stochastic" and not toy.gaussian:
                            try:
                                mode = f"{toy.mode_w2(x):.4e}"
                            except (RuntimeError, ValueError):
                                mode = "nan"
                        row = dict(problem=pname, sde=sde_name, library=e.library, sampler=e.sampler,
                                   grid=e.grid, kind=e.kind, steps=e.steps, nfe=counter.nfe, t_end=te,
                                   path_rms="" if e.kind == "stochastic" else
                                   f"{((x - toy.reference) ** 2).sum(1).mean().sqrt().item():.3e}",
                                   distance=dist, metric=toy.metric,
                                   floor_median=f"{toy.floor[0]:.3e}", floor_q90=f"{toy.floor[1]:.3e}",
                                   mode_w2=mode, mode_floor_q90="" if toy.gaussian else f"{toy.mode_floor:.4e}")
                        append_row(path, TOY_FIELDS, row)
            print(f"{pname} {sde_name} done", flush=True)


SEED_METRICS = ("distance", "mode_w2")  # the second only on a mixture (empty on the Gaussian)
SEED_FIELDS = ["problem", "sde", "library", "sampler", "grid", "steps", "nfe", "seed", "distance", "mode_w2"]


def seed_candidates(rows, nfe: int, problem: str, sde: str, top: int = 2) -> list[tuple[str, str, str]]:
    """The entries of one stochastic toy cell worth re-measuring: sdelab's samplers on their
    default grids and end, and each peer library's ``top`` configurations by the first draw (by
    each metric the cell has: the energy distance and, on a mixture, the within-mode W2)."""
    default = sdelab_defaults("stochastic")
    cell = [r for r in rows if r["kind"] == "stochastic" and not r["t_end"] and int(r["nfe"]) == nfe
            and r["problem"] == problem and r["sde"] == sde and r["distance"] not in ("", "nan")]
    out = [(r["library"], r["sampler"], r["grid"]) for r in cell
           if r["library"] == "sdelab" and default.get(r["sampler"]) == r["grid"]]
    for lib in ("k-diffusion", "diffusers"):
        for metric in SEED_METRICS:
            ranked = sorted((r for r in cell if r["library"] == lib and r.get(metric) not in (None, "", "nan")),
                            key=lambda r: float(r[metric]))
            out += [k for k in ((r["library"], r["sampler"], r["grid"]) for r in ranked[:top]) if k not in out]
    return out


def cmd_seeds(args) -> None:
    """Stochastic toy cells on fresh noise: every candidate (:func:`seed_candidates`, chosen on
    the first draw, ``toys-n10000-<problem>.csv``) again with ``--seeds`` new noise draws (seed
    ``budget + 1000 k``, k = 1..seeds), same prior draws x_T. One row per draw in
    ``toys-seeds-<problem>.csv``; ``defaults --seeds`` turns them into means with standard errors.
    Choosing on one draw and judging on others also removes the selection bias of a best-of-many."""
    from sdelab import make_sde

    for pname in args.problems:
        rows = read_rows(OUT / f"toys-n10000-{pname}.csv")
        path = OUT / f"toys-seeds-{pname}.csv"
        done = {(r["sde"], r["library"], r["sampler"], r["grid"], r["nfe"], r["seed"]) for r in read_rows(path)}
        for sde_name in args.sdes:
            sde, toy = make_sde(sde_name), None
            for budget in args.budgets:
                entries = {e.label: e for e in toy_entries(budget, smp.GRIDS)
                           if e.kind == "stochastic"}
                for lib, sampler, grid in seed_candidates(rows, budget + 1, pname, sde_name):
                    e = entries.get(f"{lib}:{sampler}[{grid}]")
                    if e is None:
                        continue
                    for k in range(1, args.seeds + 1):
                        if (sde_name, lib, sampler, grid, str(budget + 1), str(k)) in done:
                            continue
                        if toy is None:
                            toy = Toy(pname, toy_problem(pname), sde, n=args.n)
                        counter = Counter(toy.score_fn)
                        with torch.no_grad():
                            x = e.run(counter, sde, toy.x_T, torch.Generator().manual_seed(budget + 1000 * k))
                        append_row(path, SEED_FIELDS, dict(
                            problem=pname, sde=sde_name, library=lib, sampler=sampler, grid=grid,
                            steps=e.steps, nfe=counter.nfe, seed=k, distance=f"{toy.distance(x):.4e}",
                            mode_w2="" if toy.gaussian else f"{toy.mode_w2(x):.4e}"))
            print(f"{pname} {sde_name} done", flush=True)


# ----------------------------------------------------------------------------------------------
# shipped networks: N images from identical prior noise, FD with the project's classifier
# ----------------------------------------------------------------------------------------------
NET_N, NET_BATCH = 1000, 100
_NET_STATE: dict = {}


def net_state(name: str):
    if name not in _NET_STATE:
        ckpt = checkpoints.load(f"fashion-{name}", kind="score")
        _NET_STATE[name] = ckpt
    return _NET_STATE[name]


def classifier_state():
    if "clf" not in _NET_STATE:
        clf = checkpoints.load("fashion-classifier", kind="classifier").net
        feats, _ = metrics.classifier_functions(clf)
        stats = metrics.load_statistics(ROOT / "checkpoints/results/fashion-test-10000-classifier-stats.npz")
        _NET_STATE["clf"] = (feats, stats)
    return _NET_STATE["clf"]


def draw_net(net: str, key: str, run, n: int = NET_N, batch: int = NET_BATCH):
    """Images of ``run(score_fn, sde, x_T, generator) -> (x, nfe)`` on the first n prior draws.

    Chunks are cached under runs/peers/<net>/<key>/ so that a stopped run resumes.
    """
    ckpt = net_state(net)
    cache = CACHE / net / key
    cache.mkdir(parents=True, exist_ok=True)
    # $PEERS_HELPER=1: a helper process for a long run: it takes the chunks from the last one
    # backwards, skipping those done or claimed (a .lock file), and leaves the scoring to the
    # main process, which goes forwards
    helper = os.environ.get("PEERS_HELPER") == "1"
    starts = list(enumerate(range(0, n, batch)))
    results = {}
    for i, start in (reversed(starts) if helper else starts):
        path = cache / f"chunk{i:03d}.pt"
        if path.exists():
            saved = torch.load(path, weights_only=True)
            results[i] = saved["x"]
            nfe = int(saved["nfe"])
            continue
        lock = path.with_suffix(".lock")
        if helper:
            try:
                os.close(os.open(lock, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                continue
        b = min(batch, n - start)
        gen = torch.Generator().manual_seed(i)
        x_T = ckpt.sde.prior_sample((b, 1, 28, 28), generator=gen)
        counter = Counter(ckpt.score_fn())
        with torch.no_grad():
            x = run(counter, ckpt.sde, x_T, gen)
        x = x.clamp(-1, 1).float()
        nfe = counter.nfe
        tmp = path.with_suffix(".tmp")
        torch.save({"x": x, "nfe": nfe}, tmp)
        os.replace(tmp, path)
        lock.unlink(missing_ok=True)
        results[i] = x
    if helper:
        raise SystemExit(f"helper: no chunk of {net} {key} left to claim")
    out = [results[i] for i, _ in starts]
    return torch.cat(out), nfe


def fd_of(images) -> float:
    feats_fn, stats = classifier_state()
    f = metrics.feature_statistics(metrics.extract_features(feats_fn, images, num_samples=len(images)))
    return metrics.frechet_distance(stats.mu, stats.sigma, f.mu, f.sigma)


NET_FIELDS = ["net", "library", "sampler", "grid", "kind", "steps", "nfe", "t_end", "denoise", "n", "fd",
              "wall_s"]


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh))


def append_row(path: Path, fields: list[str], row: dict) -> None:
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow(row)


def net_entry(path: Path, net: str, library: str, sampler: str, grid: str, kind: str, steps, run,
              t_end=None, denoise=True) -> dict:
    """Compute (or read back) one row of ``path``: FD of ``run`` on net at N = 1000."""
    key = f"{library}-{sampler}-{grid}-{steps}" + (f"-te{t_end:g}" if t_end is not None else "")
    key += "" if denoise else "-nodenoise"
    for r in read_rows(path):
        if r["net"] == net and r["library"] == library and r["sampler"] == sampler and r["grid"] == grid \
                and r["steps"] == str(steps) and r["t_end"] == ("" if t_end is None else f"{t_end:g}") \
                and r["denoise"] == str(denoise):
            return r
    start = time.time()
    images, nfe = draw_net(net, key, run)
    row = dict(net=net, library=library, sampler=sampler, grid=grid, kind=kind, steps=steps, nfe=nfe,
               t_end="" if t_end is None else f"{t_end:g}", denoise=denoise, n=len(images),
               fd=f"{fd_of(images):.4f}", wall_s=f"{time.time() - start:.0f}")
    append_row(path, NET_FIELDS, row)
    print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def baseline_runs():
    """The long stochastic baselines of chapter 6 / issue 20 (same settings as the evaluation tool)."""
    return {
        "em-1000": ("stochastic", 1000, lambda sf, sde, x, g: smp.euler_maruyama(
            sf, sde, x, steps=1000, generator=g, t_end=sde.eps, final_denoise=True).x),
        "pc-500": ("stochastic", 500, lambda sf, sde, x, g: smp.predictor_corrector(
            sf, sde, x, steps=500, snr=0.16, corrector_steps=1, generator=g, t_end=sde.eps,
            final_denoise=True).x),
        # the same with the exact transition kernel's coefficients at every step (the
        # predictor before it took the paper's DDPM chain; chapter 6's N = 5000 PC-500 rows)
        "pc-500-exact-kernel": ("stochastic", 500, _exact_kernel_pc500),
    }


def _exact_kernel_pc500(sf, sde, x, g):
    saved, smp.BETA_I_MAX = smp.BETA_I_MAX, 0.0  # every beta_i > 0: the exact kernel throughout
    try:
        return smp.predictor_corrector(sf, sde, x, steps=500, snr=0.16, corrector_steps=1, generator=g,
                                       t_end=sde.eps, final_denoise=True).x
    finally:
        smp.BETA_I_MAX = saved


def cmd_baselines(args) -> None:
    path = OUT / "nets_baselines.csv"
    runs = baseline_runs()
    for net in args.nets:
        for name in args.which:
            kind, steps, run = runs[name]
            net_entry(path, net, "sdelab", name, "uniform", kind, steps, run)


TARGET_NETS_ALL = (10, 20)  # budgets at which every entry of "target" runs; the others: the few


def net_entries(budget: int, which: str, net: str | None = None):
    """The few-step samplers run on the networks (``which``: "main", "new" or "target").

    "target" (issue 14's side by side): sdelab's UniPC and DPM-Solver++(2M) and (3M) SDE as
    :func:`sdelab.generate.sample_from_checkpoint` runs them (the measured end time
    ``learned_t_end`` on the grid ``learned_grid``), diffusers' multistep schedulers on their
    own linspace timesteps (last evaluation at t ~ T/S, then the jump to sigma = 0), and
    k-diffusion's 2M / 2M SDE given sdelab's measured end time, on the time-uniform grid (their
    best configuration in nets_tend.csv), and its 2M and 3M SDE also on sdelab's grid (the 2M
    SDE is the same algorithm: it ties). At 10 and 20 NFE also sdelab's samplers on their own default grids.
    """
    if which == "target":
        from sdelab.generate import learned_grid, learned_t_end

        sde = net_state(net).sde
        te_det, te_sto = learned_t_end(sde, "unipc"), learned_t_end(sde, "dpmpp_2m_sde")
        grid_sto = learned_grid(sde, "dpmpp_2m_sde")
        te_3, grid_3 = learned_t_end(sde, "dpmpp_3m_sde"), learned_grid(sde, "dpmpp_3m_sde")
        out = [sdelab_entry("unipc-gridjump", budget, learned_grid(sde, "unipc"), te_det),
               sdelab_entry("dpmpp_2m_sde", budget, grid_sto, te_sto),
               sdelab_entry("dpmpp_3m_sde", budget, grid_3, te_3),
               diffusers_entry("unipc-2", budget), diffusers_entry("dpmpp_2m_sde", budget),
               kdiff_entry("dpmpp_2m_sde", budget, "uniform", te_sto),
               kdiff_entry("dpmpp_2m_sde", budget, grid_sto, te_sto),
               kdiff_entry("dpmpp_3m_sde", budget, grid_3, te_3)]
        if budget in TARGET_NETS_ALL:  # + the samplers' own default grids (chosen on the toys)
            default = {**sdelab_defaults(), **sdelab_defaults("stochastic")}
            out += [diffusers_entry("unipc-3", budget), diffusers_entry("dpmpp_2m", budget),
                    kdiff_entry("dpmpp_2m", budget, "uniform", te_det),
                    sdelab_entry("unipc", budget, learned_grid(sde, "unipc"), te_det),
                    sdelab_entry("unipc", budget, default["unipc"], te_det),
                    sdelab_entry("unipc-2", budget, "uniform", te_det),
                    sdelab_entry("dpmpp_2m_sde", budget, default["dpmpp_2m_sde"], te_sto)]
        return [e for e in out if e is not None]
    if which == "new":  # sdelab's multistep samplers, once sdelab.samplers has them
        out = []
        for name in NEW_SDELAB:
            for grid in ("uniform", "log_snr", "edm", "mixed"):
                e = sdelab_entry(name, budget, grid)
                if e is not None:
                    out.append(e)
        return out
    out = [sdelab_entry("dpm_solver-1", budget, "log_snr"), sdelab_entry("dpm_solver-2", budget, "log_snr"),
           diffusers_entry("dpmpp_2m", budget), diffusers_entry("unipc-2", budget),
           kdiff_entry("dpmpp_2m", budget, "uniform"), kdiff_entry("dpmpp_2m", budget, "edm"),
           sdelab_entry("euler_maruyama", budget, "uniform"), kdiff_entry("dpmpp_2m_sde", budget, "edm"),
           diffusers_entry("dpmpp_2m_sde", budget), sdelab_entry("dpm_solver-2", budget, "uniform"),
           diffusers_entry("unipc-3", budget), diffusers_entry("dpmpp_3m", budget),
           kdiff_entry("dpmpp_3m_sde", budget, "edm"), kdiff_entry("heun", budget, "edm"),
           sdelab_entry("heun", budget, "edm"), kdiff_entry("lms", budget, "edm"),
           kdiff_entry("euler_ancestral", budget, "edm")]
    return [e for e in out if e is not None]


def cmd_nets(args) -> None:
    path = OUT / "nets.csv"
    for budget in args.budgets:
        for net in args.nets:
            for e in net_entries(budget, args.which, net):
                if args.only and not any(o in e.label for o in args.only):
                    continue
                net_entry(path, net, e.library, e.sampler, e.grid, e.kind, e.steps, e.run, t_end=e.t_end)


TEND_DEFAULT = (1e-3, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2)


def rk45_tend(net: str, t_ends, rtol=1e-5, atol=1e-5, n: int = NET_N, batch: int = NET_BATCH):
    """One RK45 PF-ODE solve per chunk from T, read out at every t_end (scipy's dense t_eval), each
    finished by a Tweedie step. Returns {t_end: (images, nfe)}; nfe counts the evaluations at
    times >= t_end (what a solve stopped there needs, up to the one straddling step) + 1."""
    from scipy.integrate import solve_ivp

    ckpt = net_state(net)
    sde = ckpt.sde
    t_ends = sorted(t_ends, reverse=True)
    cache = CACHE / net / f"rk45-tend-{rtol:g}"
    cache.mkdir(parents=True, exist_ok=True)
    out = {te: [] for te in t_ends}
    nfes = {te: 0 for te in t_ends}
    for i, start in enumerate(range(0, n, batch)):
        path = cache / f"chunk{i:03d}.pt"
        if path.exists():
            saved = torch.load(path, weights_only=True)
        else:
            b = min(batch, n - start)
            gen = torch.Generator().manual_seed(i)
            x_T = sde.prior_sample((b, 1, 28, 28), generator=gen)
            shape = x_T.shape
            score_fn = ckpt.score_fn()
            calls = []

            def fun(t, y):
                calls.append(float(t))
                x = torch.from_numpy(y).reshape(shape).float()
                f, g2 = smp._f_g2(sde, float(t))
                with torch.no_grad():
                    sc = score_fn(x, torch.full((shape[0],), float(t))).double().numpy().reshape(-1)
                return f * y - 0.5 * g2 * sc

            knots = [sde.T, *sorted([c for c in smp._kinks(sde) if t_ends[-1] < c < sde.T], reverse=True),
                     t_ends[-1]]
            y = x_T.double().numpy().reshape(-1)
            states = {}
            for a, bnd in zip(knots[:-1], knots[1:]):
                te_in = [te for te in t_ends if bnd <= te <= a]
                sol = solve_ivp(fun, (a, bnd), y, method="RK45", rtol=rtol, atol=atol,
                                t_eval=sorted(set(te_in + [bnd]), reverse=True))
                for j, tt in enumerate(sol.t):
                    states[float(tt)] = sol.y[:, j].copy()
                y = sol.y[:, -1]
            saved = {"x": {}, "nfe": {}}
            for te in t_ends:
                xt = torch.from_numpy(states[min(states, key=lambda k: abs(k - te))]).reshape(shape).float()
                with torch.no_grad():
                    x0 = smp.denoise(score_fn, sde, xt, te).clamp(-1, 1)
                saved["x"][str(te)] = x0
                saved["nfe"][str(te)] = sum(c >= te for c in calls) + 1
            tmp = path.with_suffix(".tmp")
            torch.save(saved, tmp)
            os.replace(tmp, path)
        for te in t_ends:
            out[te].append(saved["x"][str(te)])
            nfes[te] = max(nfes[te], int(saved["nfe"][str(te)]))
    return {te: (torch.cat(out[te]), nfes[te]) for te in t_ends}


def cmd_tend(args) -> None:
    path = OUT / "nets_tend.csv"
    for net in args.nets:
        if "rk45" in args.parts:
            have = {r["t_end"] for r in read_rows(path) if r["net"] == net and r["sampler"] == "rk45"}
            if not all(f"{te:g}" in have for te in args.t_ends):
                start = time.time()
                res = rk45_tend(net, args.t_ends)
                for te, (images, nfe) in res.items():
                    if f"{te:g}" in have:
                        continue
                    row = dict(net=net, library="sdelab", sampler="rk45", grid="adaptive", kind="deterministic",
                               steps="", nfe=nfe, t_end=f"{te:g}", denoise=True, n=len(images),
                               fd=f"{fd_of(images):.4f}", wall_s=f"{time.time() - start:.0f}")
                    append_row(path, NET_FIELDS, row)
                    print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        if "few" in args.parts:
            for budget in args.budgets:
                for te in args.few_t_ends:
                    for lib, name, grid in args.few:
                        if lib == "k-diffusion":
                            e = kdiff_entry(name, budget, grid, te)
                        else:
                            e = sdelab_entry(name, budget, grid, te)
                        if e is None:
                            continue
                        net_entry(path, net, e.library, e.sampler, e.grid, e.kind, e.steps, e.run, t_end=te)


def _budget(nfe: int) -> int:
    """The NFE budget a row belongs to: 5/10/20/50 intervals (+1 for the final denoising step)."""
    return min((5, 10, 20, 50), key=lambda b: abs(b + 1 - nfe))


def best_by_library(rows, value: str, keys=("problem", "sde", "kind")):
    """{(keys..., budget): {library: (value, label, nfe)}}: the best row of each library."""
    best: dict = {}
    for r in rows:
        if r.get("t_end"):
            continue
        k = tuple(r[c] for c in keys) + (_budget(int(r["nfe"])),)
        v = float(r[value])
        v = abs(v) if value != "distance" else v
        lib = best.setdefault(k, {})
        if r["library"] not in lib or v < lib[r["library"]][0]:
            lib[r["library"]] = (v, f"{r['sampler']}[{r['grid']}]", int(r["nfe"]))
    return best


def cmd_report(args) -> None:
    """Markdown tables from the csv files (the numbers quoted in the book and the issues)."""
    toys = read_rows(OUT / "toys.csv")
    if toys:
        for kind, value in (("deterministic", "path_rms"), ("stochastic", "distance")):
            print(f"\n### Toys, {kind}: best {value} per library (NFE budget incl. the final denoise)\n")
            print("| problem | SDE | NFE | sdelab | k-diffusion | diffusers | floor (median) |")
            print("|---|---|---|---|---|---|---|")
            floors = {(r["problem"], r["sde"]): r["floor_median"] for r in toys}
            for (pb, sde, kd, b), libs in sorted(best_by_library(toys, value).items()):
                if kd != kind:
                    continue
                cells = [f"{libs[lib][0]:.3g} {libs[lib][1]}" if lib in libs else "-"
                         for lib in ("sdelab", "k-diffusion", "diffusers")]
                print(f"| {pb} | {sde} | {b + 1} | " + " | ".join(cells) + f" | {float(floors[(pb, sde)]):.2g} |")
    nets = read_rows(OUT / "nets.csv")
    if nets:
        print("\n### Shipped networks: classifier FD vs the 10k test set, N = 1000, same prior noise\n")
        labels = sorted({(r["net"], r["kind"], r["library"], r["sampler"], r["grid"]) for r in nets})
        budgets = sorted({_budget(int(r["nfe"])) for r in nets})
        print("| net | kind | sampler | " + " | ".join(f"~{b + 1} NFE" for b in budgets) + " |")
        print("|---|---|---|" + "---|" * len(budgets))
        for lab in labels:
            cells = []
            for b in budgets:
                m = [r for r in nets if (r["net"], r["kind"], r["library"], r["sampler"], r["grid"]) == lab
                     and _budget(int(r["nfe"])) == b]
                cells.append(f"{float(m[0]['fd']):.3f} ({m[0]['nfe']})" if m else "-")
            print(f"| {lab[0]} | {lab[1]} | {lab[2]}:{lab[3]}[{lab[4]}] | " + " | ".join(cells) + " |")
    tend = read_rows(OUT / "nets_tend.csv")
    base = {(r["net"], r["sampler"]): float(r["fd"]) for r in read_rows(OUT / "nets_baselines.csv")}
    if tend or base:
        print("\n### Where sampling stops: FD at N = 1000 (same prior noise) relative to EM-1000\n")
        print("| net | sampler | NFE | t_end | FD | FD / EM-1000 |")
        print("|---|---|---|---|---|---|")
        for r in read_rows(OUT / "nets_baselines.csv") + tend + [r for r in nets if r["library"] == "diffusers"]:
            em = base.get((r["net"], "em-1000"))
            ratio = f"{float(r['fd']) / em:.2f}" if em else "-"
            te = r["t_end"] or ("~1/S" if r["library"] == "diffusers" else "eps")
            print(f"| {r['net']} | {r['library']}:{r['sampler']}[{r['grid']}] | {r['nfe']} | "
                  f"{te} | {float(r['fd']):.3f} | {ratio} |")


def sdelab_defaults(kind: str = "deterministic") -> dict:
    """``{benchmark name: default grid}`` of sdelab's samplers of ``kind``, for the entries that
    run a sampler in its default configuration (no keyword differs from the signature)."""
    import inspect

    out = {}
    for name, (_, _, kw, k) in {**SDELAB, **NEW_SDELAB}.items():
        fn = sdelab_function(name)
        if k != kind or fn is None:
            continue
        sig = inspect.signature(fn).parameters
        if all(p in sig and sig[p].default == v for p, v in kw.items()):
            out[name] = sig["grid"].default
    return out


def seed_means(problem: str, metric: str = "distance") -> dict:
    """``{(sde, nfe, library, sampler, grid): (mean, standard error, draws)}`` of one metric of
    toys-seeds-<problem>.csv."""
    vals: dict = {}
    for r in read_rows(OUT / f"toys-seeds-{problem}.csv"):
        if r.get(metric) in (None, "", "nan"):
            continue
        vals.setdefault((r["sde"], int(r["nfe"]), r["library"], r["sampler"], r["grid"]), []).append(
            float(r[metric]))
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.inf,
                len(v)) for k, v in vals.items()}


def seed_verdict(mine: dict, peers: dict, floor: float) -> tuple:
    """One metric's verdict in one cell: the best of each side by mean; ``better`` or ``behind``
    only beyond two standard errors of the difference and with the worse one above the
    Monte-Carlo floor, else ``level``. Returns (verdict, peer key, sdelab key, z)."""
    pk = min(peers, key=lambda k: peers[k][0])
    sk = min(mine, key=lambda k: mine[k][0])
    (pm, pse, _), (sm, sse, _) = peers[pk], mine[sk]
    z = (sm - pm) / math.hypot(pse, sse)
    verdict = ("behind" if z > 2 and sm > floor else "better" if z < -2 and pm > floor else "level")
    return verdict, pk, sk, z


def cmd_defaults_seeds(args) -> None:
    """The stochastic verdict on fresh draws: per cell and metric the best peer and sdelab's best
    default by their mean over the re-measured draws, with standard errors
    (:func:`seed_verdict`). On the ring two metrics: the energy distance (the mode weights and
    the ring's shape) and the within-mode W2 (:meth:`Toy.mode_w2`: each mode's shape and place).
    A cell is behind when one metric says so and none says better, better the other way round,
    else level (the two disagree, or neither can tell)."""
    floors = {}
    for p in args.problems:
        for r in read_rows(OUT / f"toys-n10000-{p}.csv"):
            floors[(p, r["sde"], "distance")] = float(r["floor_q90"])
            if r.get("mode_floor_q90"):
                floors[(p, r["sde"], "mode_w2")] = float(r["mode_floor_q90"])
    print("| problem | SDE | NFE | metric | best peer | mean ± SE (draws) | sdelab, default grid "
          "| mean ± SE (draws) | difference / SE | verdict | cell |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    count = {"better": 0, "level": 0, "behind": 0}
    for problem in args.problems:
        means = {m: seed_means(problem, m) for m in SEED_METRICS}
        cells = sorted({k[:2] for v in means.values() for k in v}, key=lambda c: (c[1], c[0]))
        for sde, nfe in cells:
            if nfe not in args.nfe:
                continue
            lines, verdicts = [], []
            for metric, ms in means.items():
                cell = {k[2:]: v for k, v in ms.items() if k[:2] == (sde, nfe)}
                peers = {k: v for k, v in cell.items() if k[0] != "sdelab"}
                mine = {k: v for k, v in cell.items() if k[0] == "sdelab"}
                if not peers or not mine:
                    continue
                verdict, pk, sk, z = seed_verdict(mine, peers, floors.get((problem, sde, metric), math.inf))
                verdicts.append(verdict)
                (pm, pse, pn), (sm, sse, sn) = peers[pk], mine[sk]
                lines.append(f"| {problem} | {sde} | {nfe} | {metric} | {pk[0]}:{pk[1]}[{pk[2]}] "
                             f"| {pm:.3g} ± {pse:.1g} ({pn}) | {sk[1]}[{sk[2]}] | {sm:.3g} ± {sse:.1g} ({sn}) "
                             f"| {z:+.1f} | {verdict} |")
            if not verdicts:
                continue
            cell_verdict = ("behind" if "behind" in verdicts and "better" not in verdicts else
                            "better" if "better" in verdicts and "behind" not in verdicts else "level")
            count[cell_verdict] += 1
            for line in lines:
                print(line + f" {cell_verdict} |")
    print(f"\nsdelab better in {count['better']}, level in {count['level']} (within two standard errors, "
          f"at the floor, or the metrics disagree), behind in {count['behind']} cells")


NATIVE_GRID = {"k-diffusion": "edm", "diffusers": "linspace"}
"""Each peer's own schedule, as its documentation runs it: k-diffusion's ``get_sigmas_karras``
(EDM's rho = 7) to the SDE's end, diffusers' default ``timestep_spacing="linspace"``."""


def cmd_defaults(args) -> None:
    """Per toy cell: the best peer vs sdelab's best sampler of ``--kind`` on its default grid
    and end time (issue 14's target), in markdown, with the ratio of their errors. The peers run
    on every grid (``--peers all``: sdelab's grids handed to them, and their own) or only on
    their own schedule (``--peers native``, :data:`NATIVE_GRID`: what a reader of their
    documentation gets).

    Deterministic: path RMS to the reference solve. Stochastic: the distance to exact samples
    (energy distance or the Gaussian W2), whose Monte-Carlo floor (90 % quantile of two exact
    samples' distance) is given: below it two samplers cannot be told apart."""
    value = "path_rms" if args.kind == "deterministic" else "distance"
    default = sdelab_defaults(args.kind)
    best: dict = {}
    floor: dict = {}
    for r in read_rows(OUT / args.csv):
        if r["kind"] != args.kind or r["t_end"] or r[value] in ("", "nan"):
            continue
        floor[(r["problem"], r["sde"])] = float(r["floor_q90"])
        side = "peer" if r["library"] != "sdelab" else "sdelab"
        if side == "sdelab" and default.get(r["sampler"]) != r["grid"]:
            continue
        if side == "peer" and args.peers == "native" and r["grid"] != NATIVE_GRID[r["library"]]:
            continue
        key = (int(r["nfe"]), r["problem"], r["sde"], side)
        if key not in best or float(r[value]) < best[key][0]:
            label = f"{r['library']}:{r['sampler']}[{r['grid']}]"
            best[key] = (float(r[value]), label)
    print(f"sdelab's default grids ({args.kind}): {default}\n")
    print(f"| problem | SDE | NFE | best peer | {value} | sdelab, default grid "
          f"| {value} | peer / sdelab |" + (" floor (q90) |" if args.kind == "stochastic" else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if args.kind == "stochastic" else ""))
    ratios: dict = {}
    ties = 0
    for nfe, pb, sde, side in sorted(best):
        if side != "peer" or (nfe, pb, sde, "sdelab") not in best or nfe not in args.nfe:
            continue
        (pr, pl) = best[(nfe, pb, sde, "peer")]
        (sr, sl) = best[(nfe, pb, sde, "sdelab")]
        # the unbiased energy distance can be negative (below the floor): no ratio then
        ratio = pr / sr if pr > 0 and sr > 0 else math.nan
        ratios[(nfe, pb, sde)] = (pr, sr, ratio)
        tie = args.kind == "stochastic" and max(pr, sr) <= floor[(pb, sde)]
        ties += tie and pr < sr
        verdict = " (within the floor)" if tie else ("" if pr >= sr else " (behind)")
        print(f"| {pb} | {sde} | {nfe} | {pl} | {pr:.3g} | {sl} | {sr:.3g} | {ratio:.2f}{verdict} |"
              + (f" {floor[(pb, sde)]:.2g} |" if args.kind == "stochastic" else ""))
    if ratios:
        vals = list(ratios.values())
        r = [x for _, _, x in vals if x == x]
        geo = math.exp(sum(math.log(x) for x in r) / len(r)) if r else math.nan
        print(f"\nsdelab at least as good in {sum(pr >= sr for pr, sr, _ in vals)}/{len(vals)} cells"
              + (f" (+{ties} behind within the Monte-Carlo floor)" if ties else "")
              + f", 2x better in {sum(x >= 2 for x in r)}; geometric mean ratio {geo:.2f}")


def cmd_nets_target(args) -> None:
    """Per network, kind and NFE: the best peer vs sdelab as ``sample_from_checkpoint`` runs it
    (UniPC / the better of the 2M and 3M SDE, at the measured end time on ``learned_grid``),
    classifier FD at N = 1000 from the same prior noise; and sdelab's 21-NFE FD against the
    converged ODE's (RK45)."""
    from sdelab import make_sde
    from sdelab.generate import learned_grid

    def mine(net):  # sdelab's samplers as sample_from_checkpoint runs them on this network
        sde = make_sde(net)
        return {"deterministic": [("unipc-gridjump", learned_grid(sde, "unipc"))],
                "stochastic": [(s, learned_grid(sde, s)) for s in ("dpmpp_2m_sde", "dpmpp_3m_sde")]}

    rows = [r for r in read_rows(OUT / "nets.csv") if r["net"] in args.nets]
    print("| net | kind | NFE | best peer | FD | sdelab (sample_from_checkpoint) | FD "
          "| peer / sdelab |")
    print("|---|---|---|---|---|---|---|---|")
    ratios = []
    for net in args.nets:
        for kind in ("deterministic", "stochastic"):
            for nfe in sorted({int(r["nfe"]) for r in rows if r["net"] == net}):
                cell = [r for r in rows if r["net"] == net and r["kind"] == kind and int(r["nfe"]) == nfe]
                peers = [r for r in cell if r["library"] != "sdelab"]
                own = [r for r in cell if r["library"] == "sdelab" and r["t_end"]
                       and (r["sampler"], r["grid"]) in mine(net)[kind]]
                if not peers or not own:
                    continue
                p = min(peers, key=lambda r: float(r["fd"]))
                o = min(own, key=lambda r: float(r["fd"]))  # the best of sdelab's samplers
                ratio = float(p["fd"]) / float(o["fd"])
                if nfe in (11, 21):
                    ratios.append(ratio)
                print(f"| {net} | {kind} | {nfe} | {p['library']}:{p['sampler']}[{p['grid']}]"
                      f"{' t_end ' + p['t_end'] if p['t_end'] else ''} | {float(p['fd']):.3f} "
                      f"| {o['sampler']}[{o['grid']}] t_end {o['t_end']} | {float(o['fd']):.3f} "
                      f"| {ratio:.2f}" + ("" if ratio >= 1 else " (behind)") + " |")
    if ratios:
        print(f"\nat 11 and 21 NFE sdelab at least as good in {sum(r >= 1 for r in ratios)}/"
              f"{len(ratios)} cells")
    tend = read_rows(OUT / "nets_tend.csv")
    for net in args.nets:
        rk = {r["t_end"]: float(r["fd"]) for r in tend if r["net"] == net and r["sampler"] == "rk45"}
        own = [r for r in rows if r["net"] == net and r["library"] == "sdelab" and r["nfe"] == "21"
               and (r["sampler"], r["grid"]) in mine(net)["deterministic"] and r["t_end"]]
        if rk and own:
            fd21 = float(own[0]["fd"])
            print(f"{net}: sdelab UniPC 21 NFE FD {fd21:.3f}; converged RK45 to eps {rk[min(rk, key=float)]:.3f}"
                  f" (ratio {fd21 / rk[min(rk, key=float)]:.2f}), RK45 stopped near t_end "
                  + ", ".join(f"{te}: {v:.3f}" for te, v in sorted(rk.items(), key=lambda kv: float(kv[0]))))


def cmd_plot(args) -> None:
    """toys.png (path error / distance vs NFE, best grid per sampler) and nets.png (FD vs NFE)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"sdelab": "-", "k-diffusion": "--", "diffusers": ":"}
    toys = [r for r in read_rows(OUT / "toys.csv") if not r["t_end"]]
    if toys:
        panels = sorted({(r["problem"], r["sde"]) for r in toys})
        fig, axes = plt.subplots(2, len(panels), figsize=(3.4 * len(panels), 6.4), squeeze=False)
        for j, (pb, sde) in enumerate(panels):
            for i, (kind, value) in enumerate((("deterministic", "path_rms"), ("stochastic", "distance"))):
                ax = axes[i, j]
                rows = [r for r in toys if (r["problem"], r["sde"], r["kind"]) == (pb, sde, kind)]
                for lib, smp_name in sorted({(r["library"], r["sampler"]) for r in rows}):
                    pts = {}
                    for r in rows:
                        if (r["library"], r["sampler"]) == (lib, smp_name):
                            v = float(r[value])
                            if math.isfinite(v):
                                n = int(r["nfe"])
                                pts[n] = min(pts.get(n, math.inf), max(v, 1e-5))
                    if pts:
                        xs = sorted(pts)
                        ax.plot(xs, [pts[x] for x in xs], style[lib], marker=".", label=f"{lib}:{smp_name}")
                if kind == "stochastic" and rows:
                    ax.axhline(float(rows[0]["floor_q90"]), color="k", lw=0.8)
                ax.set(xscale="log", yscale="log", title=f"{pb}, {sde}", xlabel="NFE",
                       ylabel="path RMS" if i == 0 else rows[0]["metric"] if rows else "")
        axes[0, -1].legend(fontsize=5, loc="upper right", ncol=2)
        axes[1, -1].legend(fontsize=5, loc="upper right", ncol=2)
        fig.tight_layout()
        fig.savefig(OUT / "toys.png", dpi=110)
    nets = [dict(r, grid=f"{r['grid']}, t_end {float(r['t_end']):.3g}") if r["t_end"] else r
            for r in read_rows(OUT / "nets.csv")]
    for r in read_rows(OUT / "nets_tend.csv"):  # the end-time runs, labelled by t_end
        if r["sampler"] != "rk45":
            nets.append(dict(r, grid=f"{r['grid']}, t_end {r['t_end']}"))
    if nets:
        base = read_rows(OUT / "nets_baselines.csv")
        panels = sorted({(r["net"], r["kind"]) for r in nets})
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
        for ax, (net, kind) in zip(axes[0], panels):
            rows = [r for r in nets if (r["net"], r["kind"]) == (net, kind)]
            for lab in sorted({(r["library"], r["sampler"], r["grid"]) for r in rows}):
                pts = sorted((int(r["nfe"]), float(r["fd"])) for r in rows
                             if (r["library"], r["sampler"], r["grid"]) == lab)
                ax.plot(*zip(*pts), style[lab[0]], marker=".", label=f"{lab[0]}:{lab[1]}[{lab[2]}]")
            for r in base:
                if r["net"] == net:
                    ax.axhline(float(r["fd"]), color="k", lw=0.8, ls="-" if r["sampler"] == "em-1000" else "--")
                    ax.text(0.01, float(r["fd"]), f"{r['sampler']} ({r['library']})", fontsize=6,
                            va="bottom", transform=ax.get_yaxis_transform())
            ax.set(xscale="log", yscale="log", title=f"{net}, {kind} (N = 1000)", xlabel="NFE",
                   ylabel="classifier FD")
            ax.legend(fontsize=5)
        fig.tight_layout()
        fig.savefig(OUT / "nets.png", dpi=110)


def cmd_publish(args) -> None:
    import shutil

    dest = ROOT / "checkpoints" / "results"  # shipped with the package (results/*)
    for name in ("nets.csv", "nets_tend.csv", "nets_baselines.csv"):
        if (OUT / name).exists():
            shutil.copyfile(OUT / name, dest / f"samplers-n1000-{name}")
            print(dest / f"samplers-n1000-{name}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("baselines", help="EM-1000 / PC-500 on the shipped nets (long; resumable)")
    b.add_argument("--nets", nargs="+", default=["vp-linear"])
    b.add_argument("--which", nargs="+", default=["em-1000", "pc-500"], choices=list(baseline_runs()))
    t = sub.add_parser("toys", help="exact-score problems: error vs NFE")
    t.add_argument("--problems", nargs="+", default=["ring-2d", "gauss-16d"])
    t.add_argument("--sdes", nargs="+", default=["vp-linear", "vp-cosine", "ve"])
    t.add_argument("--budgets", nargs="+", type=int, default=[5, 10, 20, 50])
    t.add_argument("--grids", nargs="+", default=["uniform", "log_snr", "edm", "mixed"])
    t.add_argument("--t-ends", nargs="*", type=float, default=[])
    t.add_argument("--only", nargs="*", default=[], help="labels containing one of these")
    t.add_argument("--n", type=int, default=2000)
    t.add_argument("--kinds", nargs="+", default=["deterministic", "stochastic"])
    t.add_argument("--csv", default="toys.csv", help="file in benchmarks/results/peers/ (one per --n)")
    n = sub.add_parser("nets", help="shipped networks: FD at N = 1000 per sampler and budget")
    n.add_argument("--nets", nargs="+", default=["vp-linear", "vp-cosine"])
    n.add_argument("--budgets", nargs="+", type=int, default=[10, 20])
    n.add_argument("--which", default="main", choices=["main", "new", "target"])
    n.add_argument("--only", nargs="*", default=[])
    e = sub.add_parser("tend", help="shipped networks: where sampling stops (issue 20)")
    e.add_argument("--nets", nargs="+", default=["vp-linear"])
    e.add_argument("--parts", nargs="+", default=["rk45", "few"])
    e.add_argument("--t-ends", nargs="+", type=float, default=list(TEND_DEFAULT))
    e.add_argument("--budgets", nargs="+", type=int, default=[10, 20])
    e.add_argument("--few-t-ends", nargs="+", type=float, default=[0.01, 0.03, 0.05, 0.1])
    e.add_argument("--few", nargs="+", type=lambda s: tuple(s.split(":")),
                   default=[("k-diffusion", "dpmpp_2m", "uniform")],
                   help="library:sampler:grid entries run with each --few-t-ends")
    sub.add_parser("report", help="markdown tables from the csv files")
    dfl = sub.add_parser("defaults", help="toys: best peer vs sdelab, default grids")
    dfl.add_argument("--nfe", nargs="+", type=int, default=[11, 21])
    dfl.add_argument("--kind", default="deterministic", choices=["deterministic", "stochastic"])
    dfl.add_argument("--csv", default="toys.csv")
    dfl.add_argument("--seeds", action="store_true",
                     help="stochastic cells judged on the re-measured draws of `seeds` (toys-seeds-*.csv)")
    dfl.add_argument("--problems", nargs="+", default=["gauss-16d", "ring-2d"])
    dfl.add_argument("--peers", default="all", choices=["all", "native"],
                     help="the peers on every grid, or only on their own schedule (NATIVE_GRID)")
    sd = sub.add_parser("seeds", help="stochastic toy cells: the candidates again on fresh noise draws")
    sd.add_argument("--problems", nargs="+", default=["ring-2d", "gauss-16d"])
    sd.add_argument("--sdes", nargs="+", default=["vp-linear", "vp-cosine", "ve"])
    sd.add_argument("--budgets", nargs="+", type=int, default=[10, 20])
    sd.add_argument("--seeds", type=int, default=5)
    sd.add_argument("--n", type=int, default=10000)
    nt = sub.add_parser("nets-target", help="networks: best peer vs sdelab's default, per NFE")
    nt.add_argument("--nets", nargs="+", default=["vp-linear", "vp-cosine"])
    sub.add_parser("plot", help="toys.png and nets.png from the csv files")
    sub.add_parser("publish", help="copy the network results where the book reads them")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    commands = {"baselines": cmd_baselines, "toys": cmd_toys, "nets": cmd_nets, "tend": cmd_tend,
                "report": cmd_report, "plot": cmd_plot, "publish": cmd_publish,
                "defaults": cmd_defaults, "nets-target": cmd_nets_target, "seeds": cmd_seeds}
    if args.cmd == "defaults" and args.seeds:
        commands["defaults"] = cmd_defaults_seeds
    commands[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
