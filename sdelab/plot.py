"""Pictures for the book: image grids, 2-D samples and score fields, trajectories, animations.

Plain matplotlib; every function draws on an ``ax`` it is given (or a new one) and returns it,
so chapters compose figures freely.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation

from .utils import ScoreFn, Tensor

__all__ = ["to_image_grid", "show_images", "scatter_2d", "score_field", "trajectories_1d", "animate_2d",
           "results_vs_nfe"]


def to_image_grid(x: Tensor, nrow: int | None = None, value_range: tuple[float, float] = (-1.0, 1.0), pad: int = 1) -> np.ndarray:
    """Tile images ``(B, C, H, W)`` into one ``(H', W')`` or ``(H', W', 3)`` array in [0, 1].

    Values are mapped from ``value_range`` to [0, 1] and clipped; ``nrow`` images per row
    (default: a square-ish grid).
    """
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"x must have 1 or 3 channels, got {c}")
    nrow = nrow or math.ceil(math.sqrt(b))
    ncol = math.ceil(b / nrow)
    lo, hi = value_range
    imgs = ((x.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1).numpy()
    grid = np.ones((c, ncol * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.float32)
    for i in range(b):
        r, q = divmod(i, nrow)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = imgs[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def show_images(x: Tensor, ax=None, nrow: int | None = None, title: str | None = None, value_range=(-1.0, 1.0)):
    """Show a batch of images as one grid on ``ax``."""
    ax = ax or plt.gca()
    grid = to_image_grid(x, nrow=nrow, value_range=value_range)
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def scatter_2d(x: Tensor, ax=None, lim: float = 4.0, title: str | None = None, **kwargs):
    """Scatter 2-D points ``(B, 2)`` in a square window ``[-lim, lim]^2``."""
    ax = ax or plt.gca()
    pts = x.detach().cpu()
    ax.scatter(pts[:, 0], pts[:, 1], s=kwargs.pop("s", 2), alpha=kwargs.pop("alpha", 0.5), **kwargs)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    if title:
        ax.set_title(title)
    return ax


def score_field(score_fn: ScoreFn, t: float, ax=None, lim: float = 4.0, n: int = 21, normalize: bool = True, dtype=torch.float64, device=None, **kwargs):
    """Quiver plot of a 2-D score ``score_fn(x, t)`` on an ``n x n`` grid.

    With ``normalize`` the arrows show direction only (scores span orders of magnitude).
    """
    ax = ax or plt.gca()
    u = torch.linspace(-lim, lim, n, dtype=dtype, device=device)
    gx, gy = torch.meshgrid(u, u, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    with torch.no_grad():
        s = score_fn(pts, torch.full((pts.shape[0],), float(t), dtype=dtype, device=device)).to(dtype)
    if normalize:
        s = s / s.norm(dim=1, keepdim=True).clamp(min=1e-12)
    pts, s = pts.cpu(), s.cpu()
    ax.quiver(pts[:, 0], pts[:, 1], s[:, 0], s[:, 1], angles="xy", **kwargs)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    return ax


def trajectories_1d(times: Tensor, trajectory: Tensor, ax=None, n: int = 50, **kwargs):
    """Plot the first coordinate of ``n`` paths; ``trajectory`` is ``(S, B, ...)`` at ``times`` ``(S,)``."""
    ax = ax or plt.gca()
    tr = trajectory.detach().cpu().flatten(2)[:, :n, 0]
    ax.plot(times.detach().cpu(), tr, lw=kwargs.pop("lw", 0.6), alpha=kwargs.pop("alpha", 0.6), **kwargs)
    ax.set_xlabel("t")
    return ax


def animate_2d(times: Tensor, trajectory: Tensor, lim: float = 4.0, frames: int = 40, interval: int = 80, figsize=(4, 4)) -> animation.FuncAnimation:
    """An animation of 2-D points moving along ``trajectory`` ``(S, B, 2)`` at ``times`` ``(S,)``.

    Display it in a notebook with ``IPython.display.HTML(anim.to_jshtml())``.
    """
    traj = trajectory.detach().cpu()
    idx = np.unique(np.linspace(0, traj.shape[0] - 1, frames).round().astype(int))
    fig, ax = plt.subplots(figsize=figsize)
    sc = ax.scatter(traj[idx[0], :, 0], traj[idx[0], :, 1], s=2, alpha=0.5)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    title = ax.set_title("")

    def update(k):
        sc.set_offsets(traj[idx[k]].numpy())
        title.set_text(f"t = {float(times[idx[k]]):.3f}")
        return sc, title

    anim = animation.FuncAnimation(fig, update, frames=len(idx), interval=interval, blit=False)
    plt.close(fig)
    return anim


def results_vs_nfe(results: dict, metrics: tuple[str, ...] = ("fd", "fid"), reference: dict | None = None,
                   figsize=None):
    """Sample quality against cost per SDE, plus bits/dim: the evaluation chapter's summary figure.

    ``results``: ``{sde name: results}`` as written by ``tools/evaluate_checkpoints.py``
    (``{"samplers": {name: {"nfe", "fd", ...}}, "bpd": {"bpd", "se"}}``). One panel per metric
    present (log-log, quality against NFE: DPM-Solver-2 settings, integrated to eps,
    joined by a solid line; UniPC settings, stopped at the measured end time, by a dashed line;
    the other samplers as single markers), and a last panel of bits/dim with one standard error.
    ``reference``: the same metrics for real images (e.g. ``{"fd": ..., "fid": ...}``), drawn as a
    dashed line: the value a perfect model would get at that sample size.
    """
    present = [m for m in metrics if any(m in r for res in results.values() for r in res["samplers"].values())]
    if not present:
        raise ValueError(f"no sampler entry has any of the metrics {metrics}")
    n = len(present) + 1
    fig, axes = plt.subplots(1, n, figsize=figsize or (4.2 * n, 3.6))
    markers = {"ode-rk45": "s", "em-1000": "^", "pc-500": "v", "2m-sde-20": "D", "3m-sde-20": "P"}
    lines = {"dpm2": "o-", "unipc": "x--"}
    for i, (sde, res) in enumerate(results.items()):
        color = f"C{i}"
        ent = res["samplers"]
        for ax, m in zip(axes, present):
            for prefix, style in lines.items():
                pts = sorted((r["nfe"], r[m]) for k, r in ent.items() if k.startswith(prefix) and m in r)
                if pts:
                    ax.plot(*zip(*pts), style, color=color, label=sde if prefix == "dpm2" else None)
            for k, mk in markers.items():
                if k in ent and m in ent[k]:
                    ax.plot(ent[k]["nfe"], ent[k][m], mk, color=color, mfc="none", ms=8)
        if "bpd" in res:
            axes[-1].errorbar([i], [res["bpd"]["bpd"]], yerr=[res["bpd"]["se"]], fmt="o", color=color, capsize=4)
    for ax, m in zip(axes, present):
        ax.set(xscale="log", yscale="log", xlabel="NFE per image", ylabel=m.upper())
        if reference and m in reference:
            ax.axhline(reference[m], color="k", ls="--", lw=0.8, label="real images")
    for k, mk in markers.items():
        axes[0].plot([], [], mk, color="gray", mfc="none", label=k)
    axes[0].plot([], [], "x--", color="gray", label="UniPC, end time")
    axes[0].legend(fontsize=7, loc="lower left", ncol=2)
    axes[0].set_title("DPM-Solver-2 to eps (line), UniPC stopped early (dashed)", fontsize=9)
    axes[-1].set_xticks(range(len(results)), list(results), rotation=30)
    axes[-1].set(ylabel="bits/dim (test)", title="likelihood (+- 1 SE)")
    fig.tight_layout()
    return fig


def table(header, rows, align: str | None = None):
    """A result table for a notebook, shown as a real table (Markdown) in Jupyter and on the site.

    ``header`` is a sequence of column titles and ``rows`` a sequence of rows of the same
    length; cells are written with ``str()`` (format numbers first, e.g. ``f"{x:.3f}"``).
    ``align`` has one character per column, ``"l"``, ``"r"`` or ``"c"`` (default: the first
    column left, the others right, as for a column of numbers). Returns an
    ``IPython.display.Markdown`` object, or the Markdown text when IPython is missing.
    """
    header = [str(h) for h in header]
    rows = [[str(c) for c in row] for row in rows]
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"table: row {i} has {len(row)} cells, the header has {len(header)}")
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - set("lrc"):
        raise ValueError(f"table: align must have one of 'l', 'r', 'c' per column "
                         f"({len(header)}), got {align!r}")
    rule = {"l": ":---", "r": "---:", "c": ":---:"}

    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    text = "\n".join([line(header), line([rule[a] for a in align])] + [line(r) for r in rows])
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        return text
    return Markdown(text)
__all__ += ["table"]
