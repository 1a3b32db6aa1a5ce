"""Plot helpers: shapes and value mapping of image grids; every function draws without error."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from sdelab import make_sde, plot, toy


def test_image_grid_layout_and_range():
    x = torch.linspace(-1, 1, 6 * 2 * 3 * 4).reshape(6, 2, 3, 4)[:, :1]
    grid = plot.to_image_grid(x, nrow=3, pad=1)
    assert grid.shape == (2 * (3 + 1) + 1, 3 * (4 + 1) + 1)
    assert grid.min() >= 0 and grid.max() <= 1
    # first image's top-left pixel is -1 -> 0; padding is white
    assert grid[1, 1] == pytest.approx(0.0) and grid[0, 0] == 1.0
    rgb = plot.to_image_grid(torch.zeros(4, 3, 2, 2))
    assert rgb.shape == (7, 7, 3) and np.allclose(rgb[1, 1], 0.5)
    with pytest.raises(ValueError, match="x must have shape"):
        plot.to_image_grid(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        plot.to_image_grid(torch.zeros(2, 2, 4, 4))


def test_drawing_functions_run():
    sde = make_sde("vp-linear")
    mix = toy.ring_mixture()
    fig, axes = plt.subplots(1, 4)
    plot.show_images(torch.rand(4, 1, 8, 8) * 2 - 1, ax=axes[0], title="x")
    plot.scatter_2d(mix.sample(50), ax=axes[1])
    plot.score_field(mix.score_fn(sde), 0.5, ax=axes[2], n=5)
    traj = torch.randn(11, 7, 2)
    plot.trajectories_1d(torch.linspace(1, 0, 11), traj, ax=axes[3])
    plt.close(fig)
    anim = plot.animate_2d(torch.linspace(1, 0, 11), traj, frames=5)
    html = anim.to_jshtml()  # renders every frame (and keeps matplotlib from warning it never ran)
    assert html.count("data:image/png;base64") == 5, "one embedded image per requested frame"


def test_results_vs_nfe_draws_what_the_results_hold():
    entry = {"nfe": 11, "fd": 2.0}
    results = {"vp-linear": {"samplers": {"dpm2-10": entry, "dpm2-20": {"nfe": 21, "fd": 1.0, "fid": 30.0},
                                          "em-1000": {"nfe": 1001, "fd": 0.5, "fid": 20.0}},
                             "bpd": {"bpd": 3.5, "se": 0.1}},
               "ve": {"samplers": {"dpm2-10": entry}}}
    fig = plot.results_vs_nfe(results, reference={"fd": 0.03, "fid": 4.0})
    fd_ax, fid_ax, bpd_ax = fig.axes  # one panel per metric present, then bits/dim
    assert fd_ax.get_ylabel() == "FD" and fid_ax.get_ylabel() == "FID"
    xs = sorted(x for line in fd_ax.lines for x in np.atleast_1d(line.get_xdata()) if x > 1)
    assert xs == [11, 11, 21, 1001]  # two DPM-2 lines (one per SDE) and the EM marker
    assert [t.get_text() for t in bpd_ax.get_xticklabels()] == ["vp-linear", "ve"]
    plt.close(fig)
    early = {"unipc-10": {"nfe": 11, "fd": 0.4}, "unipc-20": {"nfe": 21, "fd": 0.35},
             "2m-sde-20": {"nfe": 21, "fd": 0.3}, "dpm2-10": entry}
    fig = plot.results_vs_nfe({"ve": {"samplers": early}})
    drawn = sorted((tuple(np.atleast_1d(ln.get_xdata())), tuple(np.atleast_1d(ln.get_ydata())))
                   for ln in fig.axes[0].lines if len(np.atleast_1d(ln.get_xdata())))
    # the UniPC settings as one line, DPM-2 and the 2M SDE marker as points
    assert drawn == [((11,), (2.0,)), ((11, 21), (0.4, 0.35)), ((21,), (0.3,))]
    plt.close(fig)
    only_fd = plot.results_vs_nfe({"ve": {"samplers": {"dpm2-10": entry}}})
    assert len(only_fd.axes) == 2  # no FID anywhere: no FID panel
    plt.close(only_fd)
    with pytest.raises(ValueError, match="no sampler entry"):
        plot.results_vs_nfe({"ve": {"samplers": {"dpm2-10": {"nfe": 11}}}})
