"""Classifier guidance on Fashion-MNIST: how often the clean classifier agrees with the target class.

    python benchmarks/guidance.py [--sdes vp-linear subvp-linear ve] [--scales 0 1 2 4 8]
                                  [--per-class 10] [--sampler euler_maruyama] [--steps 200]
                                  [--out runs/benchmarks/guidance.json] [--threads 1] [--cfg]

For each SDE, the shipped ScoreNet ``fashion-<sde>`` is guided by the noisy classifier
``fashion-tdc-<sde>`` (``sdelab.guidance.classifier_guidance``) towards each of the 10 classes,
``--per-class`` samples per class and guidance scale. With ``--cfg``, classifier-free guidance
instead (``sdelab.guidance.classifier_free_guidance``) with the class-conditional ScoreNet
``fashion-cond-<sde>``: scale w there is classifier guidance at 1 + w with the implicit
classifier. Reported per (method, SDE, scale):

* ``target_accuracy``: the fraction of guided samples that the clean classifier
  ``fashion-classifier`` (independent of the guiding one) assigns to the target class;
* ``fd``: the Frechet distance of the clean classifier's features between all guided samples
  (balanced over classes) and as many real test images (the first ones; the test split is nearly
  balanced). It grows when samples lose quality *or* diversity; at these sample sizes it is
  biased upwards, so compare it only across scales of one run;
* ``spread``: the diversity within a class, the mean pairwise distance of clean-classifier
  features between samples that the clean classifier puts in one class, divided by the same for
  real test images of that class, averaged over classes with at least two samples (1 = as diverse
  as the data; guidance at large scales pushes it down). Grouping by the judged class keeps it
  meaningful at small scales, where many samples are not of their target class.

Results are written after every (SDE, scale) to ``--out`` (JSON); an existing file is resumed
(finished entries are skipped when the settings match). Seeds are fixed: the same command on the
same machine gives the same numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sdelab import checkpoints, samplers
from sdelab.data import load_fashion_mnist, to_model_range
from sdelab.guidance import classifier_free_guidance, classifier_guidance
from sdelab.metrics import classifier_functions, feature_statistics, frechet_distance


def pairwise_spread(features: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Mean pairwise Euclidean distance between features of the same class, one value per class (NaN if < 2)."""
    out = []
    for k in range(num_classes):
        f = features[labels == k].double().cpu()
        n = f.shape[0]
        out.append(torch.cdist(f, f).sum() / (n * (n - 1)) if n > 1 else torch.tensor(float("nan"), dtype=torch.float64))
    return torch.stack(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sdes", nargs="+", default=["vp-linear", "subvp-linear", "ve"])
    p.add_argument("--scales", nargs="+", type=float, default=[0.0, 1.0, 2.0, 4.0, 8.0])
    p.add_argument("--per-class", type=int, default=10)
    p.add_argument("--sampler", default="euler_maruyama")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/benchmarks/guidance.json")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cfg", action="store_true", help="classifier-free guidance with fashion-cond-<sde>")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = {k: getattr(args, k) for k in ("per_class", "sampler", "steps", "seed")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    if results.get("settings") not in (None, settings):
        raise SystemExit(f"{out} holds results for other settings {results['settings']}; use another --out")
    results["settings"] = settings
    rows = results.setdefault("rows", [])
    method = "cfg" if args.cfg else "classifier"
    done = {(r.get("method", "classifier"), r["sde"], r["scale"]) for r in rows}

    clean = checkpoints.load("fashion-classifier", kind="classifier", device=device)
    features_fn, probs_fn = classifier_functions(clean.net)
    test = load_fashion_mnist("test")
    n = 10 * args.per_class
    real = to_model_range(test.images[:max(n, 1000)]).to(device)
    real_labels = test.labels[:max(n, 1000)].to(device)
    real_feats = features_fn(real)
    real_stats = feature_statistics(real_feats[:n].cpu().numpy())
    real_spread = pairwise_spread(real_feats, real_labels)
    results["clean_classifier_test_accuracy"] = clean.card["metrics"].get("test_accuracy")

    sampler = getattr(samplers, args.sampler)
    labels = torch.arange(10, device=device).repeat_interleave(args.per_class)
    for sde_name in args.sdes:
        if args.cfg:
            score = checkpoints.load(f"fashion-cond-{sde_name}", kind="score", device=device)
        else:
            score = checkpoints.load(f"fashion-{sde_name}", kind="score", device=device)
            tdc = checkpoints.load(f"fashion-tdc-{sde_name}", kind="noisy_classifier", sde=score.sde, device=device)
        for scale in args.scales:
            if (method, sde_name, scale) in done:
                continue
            start = time.perf_counter()
            gen = torch.Generator(device=device).manual_seed(args.seed)
            images = []
            for i in range(0, n, args.batch):
                y = labels[i:i + args.batch]
                if args.cfg:
                    guided = classifier_free_guidance(score.score_fn(y=y), score.score_fn(), scale)
                else:
                    guided = classifier_guidance(score.score_fn(), tdc.logits_fn(), y, scale)
                x_T = score.sde.prior_sample((y.shape[0], 1, 28, 28), generator=gen, device=device)
                images.append(sampler(guided, score.sde, x_T, steps=args.steps, generator=gen).x.clamp(-1, 1))
            images = torch.cat(images)
            feats = features_fn(images)
            pred = probs_fn(images).argmax(-1)
            stats = feature_statistics(feats.cpu().numpy())
            row = {"method": method, "sde": sde_name, "scale": scale, "n": n,
                   "target_accuracy": round((pred == labels).float().mean().item(), 4),
                   "fd": round(frechet_distance(stats.mu, stats.sigma, real_stats.mu, real_stats.sigma), 3),
                   "spread": round((pairwise_spread(feats, pred) / real_spread).nanmean().item(), 3),
                   "wall_s": round(time.perf_counter() - start, 1)}
            rows.append(row)
            out.write_text(json.dumps(results, indent=2) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
