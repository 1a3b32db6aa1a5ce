"""Draw the README's sample image: 64 images of fashion-vp-linear with the best few-step sampler.

    python tools/readme_samples.py [--out book/images/fashion-vp-linear-samples.png]

The sampler and its settings are the ones ``benchmarks/samplers_vs_peers.py`` measured best at
about 20 score evaluations on this model (N = 1000, classifier FD; see
``checkpoints/results/samplers-n1000-*.csv``): DPM-Solver++(2M) SDE, 20 steps, as
``sample_from_checkpoint`` runs it by default: on a grid uniform in t that stops at the measured
end time (``sdelab.generate.learned_t_end``, t = 0.049 here), then the Tweedie step (21 NFE).
Seeded (seed 0, one chunk of 64), one CPU thread: the same command gives the same PNG on the same
machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sdelab.generate import sample_from_checkpoint  # noqa: E402
from sdelab.plot import to_image_grid  # noqa: E402

SAMPLER = dict(sampler="dpmpp_2m_sde", steps=20)  # its measured end time and grid


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "book/images/fashion-vp-linear-samples.png"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    res = sample_from_checkpoint("fashion-vp-linear", 64, seed=0, batch=64, **SAMPLER)
    import matplotlib.pyplot as plt

    plt.imsave(args.out, to_image_grid(res.images, nrow=16), cmap="gray")
    print(f"wrote {args.out}: 64 images, {res.nfe} NFE each ({SAMPLER})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
