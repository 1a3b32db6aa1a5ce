"""The ``sdelab`` command: ``sdelab train``, ``sample``, ``likelihood`` and ``evaluate``.

Examples::

    sdelab train --data fashion-mnist --sde vp-linear --steps 6000 --run-dir runs/vp --export checkpoints/fashion-vp-linear
    sdelab train --config tools/configs/fashion-ve.json --steps 100      # flags override the file
    torchrun --standalone --nproc_per_node=2 -m sdelab.cli train --config cfg.json   # data-parallel
    sdelab train --kind classifier --width 1 --steps 4000 --export checkpoints/my-classifier   # clean classifier
    sdelab train --kind noisy_classifier --sde ve --width 1 --steps 1500 --export checkpoints/my-tdc-ve
    sdelab sample fashion-vp-linear --out samples.png --n 64 --steps 500
    sdelab likelihood fashion-vp-linear --n 1000 --batch 200              # bits/dim on test images
    sdelab evaluate fashion-vp-linear --classifier fashion-classifier --n 10000   # FD and IS

A config file is JSON whose keys are the long option names with ``_`` for ``-`` (``"batch_size": 128``),
plus an optional ``"net"`` dict passed to :func:`sdelab.nets.build_net` as a whole.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

__all__ = ["TRAIN_DEFAULTS", "build_parser", "main"]

TRAIN_DEFAULTS = {
    "kind": "score", "data": "fashion-mnist", "limit": None, "class_conditional": False, "p_uncond": 0.1,
    "sde": "vp-linear", "sigma_min": None, "sigma_max": None, "beta_min": None, "beta_max": None, "eps": None,
    "net": None, "channels": None, "ch_mult": None, "num_res_blocks": None, "dropout": None,
    "width": None, "depth": None, "eval_n": None,
    "weighting": "sigma2", "importance_sampling": False,
    "steps": 6000, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "warmup": 200, "lr_schedule": "cosine",
    "grad_clip": 1.0, "ema_decay": 0.999, "bf16": False, "seed": 0, "ckpt_every": 500, "log_every": 100,
    "progress": True, "run_dir": None, "resume": True, "export": None, "threads": None, "device": None,
}


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train a score network or a classifier (or resume an interrupted run)",
        description="Train a score network by denoising score matching (--kind score), a noisy classifier "
                    "p_t(y | x_t) for classifier guidance (--kind noisy_classifier, on data perturbed by --sde) "
                    "or a clean classifier (--kind classifier, the feature extractor of sdelab evaluate), and "
                    "optionally export a checkpoint; classifiers are scored on the test split for its card. "
                    "Every option can also come from --config (JSON, keys = option names with '_'); "
                    "flags given on the command line override the file. Re-running the same command "
                    "with the same --run-dir resumes from the last saved step with the same loss trajectory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, argument_default=argparse.SUPPRESS)
    a = p.add_argument
    a("--config", help="JSON file of options (keys as below, with '_'); a 'net' entry may be a full build_net dict")
    a("--kind", help="score (a ScoreNet, by denoising score matching) | noisy_classifier (a time-dependent "
      "classifier on x_t of --sde) | classifier (a clean classifier) "
      f"[default {TRAIN_DEFAULTS['kind']}]")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="fashion-mnist | mnist | cifar10 | synthetic (random 3x32x32, for smoke tests) "
                   f"[default {TRAIN_DEFAULTS['data']}]")
    g.add_argument("--limit", type=int, help="use only the first N training images [default: all]")
    g.add_argument("--class-conditional", action="store_true",
                   help="train a class-conditional network on the labels (for classifier-free guidance)")
    g.add_argument("--p-uncond", type=float, help="with --class-conditional: probability of dropping a label to "
                   f"the null label [default {TRAIN_DEFAULTS['p_uncond']}]")
    g = p.add_argument_group("SDE")
    g.add_argument("--sde", help="ve | vp-linear | vp-cosine | subvp-linear | subvp-cosine "
                   f"[default {TRAIN_DEFAULTS['sde']}]")
    g.add_argument("--sigma-min", type=float, help="VE: smallest noise level [default 0.01]")
    g.add_argument("--sigma-max", type=float, help="VE: largest noise level [default 50]")
    g.add_argument("--beta-min", type=float, help="VP/sub-VP linear schedule: beta(0) [default 0.1]")
    g.add_argument("--beta-max", type=float, help="VP/sub-VP linear schedule: beta(1) [default 20]")
    g.add_argument("--eps", type=float, help="smallest training time [default 1e-5 VE, 1e-3 VP/sub-VP]")
    g = p.add_argument_group("network")
    g.add_argument("--net", help="scorenet (CPU size, ~1.1 M) | ncsnpp (GPU size) | unet for --kind score; "
                   "classifiers use the Wide-ResNet of their kind [default: scorenet, or the classifier's kind]")
    g.add_argument("--channels", type=int, help="base width [default: the network's, 12 for scorenet]")
    g.add_argument("--ch-mult", help="width multipliers per resolution, comma-separated, e.g. 1,2,4,8")
    g.add_argument("--num-res-blocks", type=int, help="residual blocks per level")
    g.add_argument("--dropout", type=float, help="dropout in the residual blocks")
    g.add_argument("--width", type=int, help="classifiers: Wide-ResNet width factor k (widths 16k, 32k, 64k) [default 2]")
    g.add_argument("--depth", type=int, help="classifiers: Wide-ResNet blocks per resolution [default 2]")
    g = p.add_argument_group("objective")
    g.add_argument("--weighting", help="sigma2 (lambda = sigma^2, the noise-prediction error) | likelihood "
                   f"(lambda = g^2) [default {TRAIN_DEFAULTS['weighting']}]")
    g.add_argument("--importance-sampling", action="store_true",
                   help="with --weighting likelihood: draw t with density proportional to g^2/sigma^2")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help=f"optimizer steps [default {TRAIN_DEFAULTS['steps']}]")
    g.add_argument("--batch-size", type=int, help="global batch size (split over processes) "
                   f"[default {TRAIN_DEFAULTS['batch_size']}]")
    g.add_argument("--lr", type=float, help=f"AdamW learning rate [default {TRAIN_DEFAULTS['lr']}]")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay [default 0]")
    g.add_argument("--warmup", type=int, help=f"linear warm-up steps [default {TRAIN_DEFAULTS['warmup']}]")
    g.add_argument("--lr-schedule", help=f"constant | cosine (to zero at --steps) [default {TRAIN_DEFAULTS['lr_schedule']}]")
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm to this (0 = off) [default 1]")
    g.add_argument("--ema-decay", type=float, help=f"EMA decay of the weights [default {TRAIN_DEFAULTS['ema_decay']}]")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (about 1.5x faster on CPUs with avx512_bf16)")
    g.add_argument("--seed", type=int, help="seed of the data order, noise and initialisation [default 0]")
    g = p.add_argument_group("run")
    g.add_argument("--run-dir", help="folder for state.pt (resume), meta.json and log.txt [default: none, no resume]")
    g.add_argument("--no-resume", dest="resume", action="store_false", help="start afresh even if --run-dir has a state")
    g.add_argument("--ckpt-every", type=int, help=f"save the resumable state every N steps [default {TRAIN_DEFAULTS['ckpt_every']}]")
    g.add_argument("--log-every", type=int, help=f"log the mean loss every N steps [default {TRAIN_DEFAULTS['log_every']}]")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("--export", help="when done, write the EMA weights as checkpoint <STEM>.safetensors + <STEM>.json")
    g.add_argument("--eval-n", type=int, help="classifiers: score the exported EMA weights on the first N test "
                   "images (accuracy; for noisy classifiers accuracy against t) [default: the whole test split]")
    g.add_argument("--threads", type=int, help="torch CPU threads [default: torch's choice]")
    g.add_argument("--device", help="cpu | cuda | cuda:N [default: CUDA when present; cuda:LOCAL_RANK under torchrun]")
    p.set_defaults(func=cmd_train)


def _add_sample(sub) -> None:
    p = sub.add_parser(
        "sample", help="draw samples from a checkpoint into a PNG grid",
        description="Sample from a score checkpoint (a shipped name such as fashion-vp-linear, or a path to "
                    "<stem>.json) with one of sdelab.samplers, and save the images as a PNG grid.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("checkpoint", help="registry name (see sdelab.checkpoints.available()) or path to a card .json")
    a("--out", default="samples.png", help="output PNG file")
    a("--n", type=int, default=64, help="number of images")
    a("--sampler", default="euler_maruyama",
      help="euler_maruyama | predictor_corrector | heun | dpm_solver | probability_flow_rk45")
    a("--steps", type=int, default=500, help="number of steps (ignored by probability_flow_rk45, which is adaptive)")
    a("--seed", type=int, default=0, help="seed of the prior draw and the sampler's noise")
    a("--label", type=int, default=None, help="class label for a class-conditional checkpoint (default: unconditional)")
    a("--nrow", type=int, default=None, help="images per row of the grid (default: about sqrt(n))")
    a("--batch", type=int, default=64, help="sample in chunks of this many images (CPU cost grows faster than linearly)")
    a("--threads", type=int, default=None, help="torch CPU threads")
    a("--device", default=None, help="cpu | cuda [default: CUDA when present]")
    p.set_defaults(func=cmd_sample)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdelab", description="sdelab: score-based generative modelling with SDEs. "
        "Run `sdelab COMMAND --help` for each command's options.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_sample(sub)
    _add_likelihood(sub)
    _add_evaluate(sub)
    return parser


# ----------------------------------------------------------------------------------------------
def _train_options(ns: argparse.Namespace) -> dict:
    opts = dict(TRAIN_DEFAULTS)
    given = {k: v for k, v in vars(ns).items() if k not in ("func", "command", "config", "argv")}
    if getattr(ns, "config", None):
        file_opts = json.loads(Path(ns.config).read_text())
        unknown = set(file_opts) - set(TRAIN_DEFAULTS)
        if unknown:
            raise SystemExit(f"sdelab train: unknown key(s) {sorted(unknown)} in {ns.config}; "
                             f"known: {sorted(TRAIN_DEFAULTS)}")
        opts.update(file_opts)
    opts.update(given)
    return opts


def _data_tensors(opts: dict, split: str = "train"):
    import torch

    from . import data as D

    if opts["data"] == "synthetic":
        n = opts["limit"] or 512
        seed = 0 if split == "train" else 1
        ds = D.synthetic_images(n, (3, 32, 32), generator=torch.Generator().manual_seed(seed))
        ds = D.ImageData(ds.images, ds.labels, ds.name, split, ds.source, ds.subset, ds.classes)
    else:
        ds = D.load_dataset(opts["data"], split)
    images, labels = ds.images, ds.labels
    if opts["limit"] and split == "train":
        images, labels = images[: opts["limit"]], labels[: opts["limit"]]
    info = {"name": ds.name, "split": ds.split, "n": int(images.shape[0]), "source": ds.source,
            "subset": bool(ds.subset or (opts["limit"] and split == "train")),
            "range": "[-1, 1] via sdelab.data.to_model_range (2k/255 - 1)"}
    return D.to_model_range(images), labels, info


def _make_sde(opts: dict):
    from .sde import make_sde

    kw = {k: opts[k] for k in ("sigma_min", "sigma_max", "beta_min", "beta_max", "eps") if opts.get(k) is not None}
    return make_sde(opts["sde"], **kw)


TRAIN_KINDS = ("score", "noisy_classifier", "classifier")


def _net_config(opts: dict, x, num_classes) -> dict:
    kind = opts["kind"]
    if isinstance(opts["net"], dict):
        cfg = dict(opts["net"])
    elif kind == "score":
        cfg = {"kind": opts["net"] or "scorenet", "in_channels": int(x.shape[1]), "image_size": int(x.shape[-1])}
        for k in ("channels", "num_res_blocks", "dropout"):
            if opts.get(k) is not None:
                cfg[k] = opts[k]
        if opts.get("ch_mult"):
            cm = opts["ch_mult"]
            cfg["ch_mult"] = [int(c) for c in (cm.split(",") if isinstance(cm, str) else cm)]
    else:
        if opts["net"] not in (None, kind):
            raise SystemExit(f"sdelab train: --kind {kind} trains the {kind!r} network, not --net {opts['net']!r}")
        cfg = {"kind": kind, "in_channels": int(x.shape[1])}
        for k in ("width", "depth", "dropout"):
            if opts.get(k) is not None:
                cfg[k] = opts[k]
    if num_classes:
        cfg["num_classes"] = num_classes
    return cfg


def _classifier_metrics(net, sde, opts: dict, device) -> dict:
    """Test-split accuracy of a trained classifier (against t for a noisy one), for its card."""
    import torch

    from .guidance import classifier_accuracy, noisy_classifier_accuracy
    from .nets import logits_fn_from_net

    x, y, info = _data_tensors(opts, "test")
    if opts.get("eval_n"):
        x, y = x[: opts["eval_n"]], y[: opts["eval_n"]]
    x, y = x.to(device), y.to(device)
    net.eval()
    if sde is None:
        return {"test_accuracy": round(classifier_accuracy(net, x, y), 4), "test_images": int(x.shape[0]),
                "test_split": f"{info['name']} {info['split']}"}
    times = [sde.eps] + [round(0.1 * k, 1) for k in range(1, 11)]
    gen = torch.Generator(device=device).manual_seed(opts["seed"] + 12345)
    acc = noisy_classifier_accuracy(logits_fn_from_net(net, sde), sde, x, y, times, generator=gen)
    return {"test_accuracy_vs_t": {"t": times, "accuracy": [round(a, 4) for a in acc]},
            "test_images": int(x.shape[0]), "test_split": f"{info['name']} {info['split']}",
            "note": "accuracy on x_t = alpha(t) x_0 + sigma(t) z, one fresh z per image and time"}


def cmd_train(ns: argparse.Namespace) -> int:
    import torch

    from . import checkpoints
    from .losses import ClassifierObjective, DSMObjective
    from .nets import build_net, count_params
    from .train import TrainConfig, init_distributed, train

    opts = _train_options(ns)
    kind = opts["kind"]
    if kind not in TRAIN_KINDS:
        raise SystemExit(f"sdelab train: --kind must be one of {', '.join(TRAIN_KINDS)}, got {kind!r}")
    if kind != "score" and opts["class_conditional"]:
        raise SystemExit("sdelab train: --class-conditional applies to --kind score only")
    if opts["threads"]:
        torch.set_num_threads(int(opts["threads"]))
    rank, world = init_distributed()
    if opts["device"]:
        device = torch.device(opts["device"])
    elif torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        device = torch.device("cpu")
    x, labels, data_info = _data_tensors(opts)
    num_classes = int(labels.max()) + 1 if (opts["class_conditional"] or kind != "score") else None
    sde = _make_sde(opts) if kind != "classifier" else None
    torch.manual_seed(opts["seed"])  # initial weights
    net = build_net(_net_config(opts, x, num_classes)).to(device)
    if kind == "score":
        objective = DSMObjective(sde, opts["weighting"], opts["importance_sampling"],
                                 opts["p_uncond"] if num_classes else 0.0)
    else:
        objective = ClassifierObjective(sde)
    config = TrainConfig(**{k: opts[k] for k in ("steps", "batch_size", "lr", "weight_decay", "warmup", "lr_schedule",
                                                 "grad_clip", "ema_decay", "bf16", "seed", "ckpt_every",
                                                 "log_every", "progress")})
    if rank == 0:
        print(f"sdelab train: {data_info['name']} ({data_info['n']} images), SDE {sde!r}, "
              f"{net.config['kind']} {count_params(net) / 1e6:.2f} M params, {config.steps} steps of "
              f"{config.batch_size}, {world} process(es) on {device}", flush=True)
    meta = {"sde": sde.config() if sde is not None else None, "net": net.config, "data": data_info}
    data = (x, labels) if num_classes else x
    result = train(net, objective, data, config, run_dir=opts["run_dir"], resume=opts["resume"], meta=meta)
    tail = result.losses[-min(500, len(result.losses)):]
    final = sum(tail) / len(tail)
    if rank == 0:
        print(f"done: step {result.step}, mean loss over the last {len(tail)} steps {final:.4f}, "
              f"wall time {result.wall_time:.0f} s, {result.images_per_sec:.0f} img/s this session", flush=True)
        if opts["export"]:
            command = "sdelab " + " ".join(shlex.quote(a) for a in ns.argv)
            metrics = _classifier_metrics(result.ema, sde, opts, device) if kind != "score" else {}
            if metrics:
                print(f"test metrics: {json.dumps(metrics)}", flush=True)
            loss_note = ("mean DSM training loss (per dimension)" if kind == "score"
                         else "mean training cross-entropy (nats)") + f" over the last {len(tail)} steps"
            card = checkpoints.save(
                opts["export"], result.ema, kind=kind, sde=sde, data=data_info,
                training={**{k: v for k, v in config.to_dict().items() if k != "progress"}, **objective.config(),
                          "ema": True, "processes": world},
                steps=result.step, wall_time_s=round(result.wall_time, 1), final_loss=round(final, 5),
                final_loss_note=loss_note, metrics=metrics, command=command)
            print(f"exported {card['name']} ({card['weights']['bytes'] / 1e6:.1f} MB, sha256 {card['weights']['sha256'][:12]}...)")
    return 0


def cmd_sample(ns: argparse.Namespace) -> int:
    import math

    import torch

    from .data import from_model_range

    try:
        from . import samplers
    except ImportError as e:
        raise SystemExit(f"sdelab sample needs sdelab.samplers, which is not available: {e}") from None
    if ns.n < 1 or ns.batch < 1 or ns.steps < 1:
        raise SystemExit("sdelab sample: --n, --batch and --steps must be >= 1")
    ckpt, device = _score_checkpoint(ns)
    sampler = getattr(samplers, ns.sampler, None)
    if sampler is None or not callable(sampler):
        raise SystemExit(f"sdelab sample: unknown sampler {ns.sampler!r}")
    cond = {}
    if ns.label is not None:
        if not ckpt.net.config.get("num_classes"):
            raise SystemExit("sdelab sample: --label needs a class-conditional checkpoint")
        cond["y"] = ns.label
    cfg = ckpt.net.config
    shape = (cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    gen = torch.Generator(device=device).manual_seed(ns.seed)
    out, nfe, t0 = [], 0, time.perf_counter()
    with torch.no_grad():
        for start in range(0, ns.n, ns.batch):
            b = min(ns.batch, ns.n - start)
            c = {k: torch.full((b,), v, device=device, dtype=torch.long) for k, v in cond.items()}
            score_fn = ckpt.score_fn(**c)
            x_T = ckpt.sde.prior_sample((b, *shape), generator=gen, device=device)
            kwargs = {"generator": gen}
            if ns.sampler != "probability_flow_rk45":
                kwargs["steps"] = ns.steps
            res = sampler(score_fn, ckpt.sde, x_T, **kwargs)
            out.append(res.x.float().cpu())
            nfe = getattr(res, "nfe", nfe)
    images = from_model_range(torch.cat(out))
    from torchvision.utils import save_image

    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    save_image(images, ns.out, nrow=ns.nrow or max(1, int(math.ceil(math.sqrt(ns.n)))), padding=2, pad_value=1.0)
    print(f"wrote {ns.n} samples to {ns.out} ({ns.sampler}, {nfe} score evaluations per chunk, "
          f"{time.perf_counter() - t0:.1f} s)")
    return 0


# ----------------------------------------------------------------------------------------------
# sdelab likelihood / sdelab evaluate
# ----------------------------------------------------------------------------------------------
def _add_likelihood(sub) -> None:
    p = sub.add_parser(
        "likelihood", help="bits/dim of a score checkpoint on test images (probability-flow ODE)",
        description="Bits per dimension of the first --n test images under a score checkpoint: uniform "
                    "dequantization, the probability-flow ODE with the instantaneous change of variables "
                    "(sdelab.likelihood.bits_per_dim), and the change of variables from [0, 255] to the model "
                    "range. Prints the mean with its standard error over images and the NFE of each batch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("checkpoint", help="registry name (e.g. fashion-vp-linear) or path to a score checkpoint's card .json")
    a("--n", type=int, default=100, help="number of test images (the first N of the split)")
    a("--data", default=None, help="data set (default: the one the checkpoint was trained on, from its card)")
    a("--split", default="test", help="split of the data set to evaluate (test | train)")
    a("--batch", type=int, default=100, help="images per ODE solve (its adaptive steps follow the worst image)")
    a("--divergence", default="hutchinson", choices=("hutchinson", "exact"),
      help="divergence of the score: Hutchinson's estimator, or the exact trace (one backward pass per pixel)")
    a("--probes", type=int, default=1, help="Hutchinson probes per image, drawn once and fixed for the solve")
    a("--rtol", type=float, default=1e-5, help="relative tolerance of the RK45 solve")
    a("--atol", type=float, default=1e-5, help="absolute tolerance of the RK45 solve")
    a("--t0", type=float, default=None, help="start time of the ODE (default: the SDE's eps, the smallest training time)")
    a("--seed", type=int, default=0, help="seed of the dequantization noise and the Hutchinson probes")
    a("--json", default=None, help="also write the summary as JSON to this file")
    a("--threads", type=int, default=None, help="torch CPU threads [default: torch's choice]")
    a("--device", default=None, help="cpu | cuda [default: CUDA when present]")
    p.set_defaults(func=cmd_likelihood)


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="Fréchet distance and Inception Score of samples, with the project classifier",
        description="Draw --n samples from a score checkpoint (or read them from --samples) and score them "
                    "with a clean classifier checkpoint: Fréchet distance (FD) of its penultimate features "
                    "against the first --n-real images of the test split, and the Inception Score (IS) of its "
                    "class probabilities over --splits parts. --features inception uses NVIDIA's FID "
                    "Inception network instead (FID; needs pip install \"sdelab[fid]\"). Both numbers depend "
                    "on the sample size: compare runs only at the same --n (10000 on Fashion-MNIST).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("checkpoint", help="score checkpoint (registry name or card path) to sample from")
    a("--classifier", default="fashion-classifier", help="clean classifier checkpoint (kind 'classifier')")
    a("--features", default="classifier", choices=("classifier", "inception"),
      help="feature extractor for the Fréchet distance: the classifier's penultimate layer, or FID Inception")
    a("--n", type=int, default=1000, help="number of generated images")
    a("--n-real", type=int, default=None, help="number of real test images for the reference statistics [default: --n]")
    a("--real-stats", default=None, help="cached reference statistics (.npz from sdelab.metrics.save_statistics) "
      "instead of --n-real test images; they must come from the same extractor")
    a("--data", default=None, help="data set of the real images (default: the checkpoint's, from its card)")
    a("--samples", default=None, help="evaluate these images (a .pt tensor (N, C, H, W) in [-1, 1] or uint8) "
      "instead of sampling")
    a("--save-samples", default=None, help="save the generated images to this .pt file")
    a("--sampler", default="dpm_solver", help="sampler of sdelab.samplers (euler_maruyama | predictor_corrector | "
      "heun | dpm_solver | probability_flow_rk45)")
    a("--steps", type=int, default=25, help="sampler steps (ignored by probability_flow_rk45)")
    a("--splits", type=int, default=10, help="Inception Score splits (mean and standard deviation over them)")
    a("--batch", type=int, default=64, help="sample in chunks of this many images")
    a("--seed", type=int, default=0, help="seed of the prior draw and the sampler's noise")
    a("--json", default=None, help="also write the summary as JSON to this file")
    a("--threads", type=int, default=None, help="torch CPU threads [default: torch's choice]")
    a("--device", default=None, help="cpu | cuda [default: CUDA when present]")
    p.set_defaults(func=cmd_evaluate)


def _device(name):
    import torch

    from .utils import default_device

    return torch.device(name) if name else default_device()


def _score_checkpoint(ns: argparse.Namespace):
    """What sample / likelihood / evaluate share: ``--threads``, ``--device``, the score checkpoint."""
    import torch

    from . import checkpoints

    if ns.threads:
        torch.set_num_threads(ns.threads)
    device = _device(ns.device)
    return checkpoints.load(ns.checkpoint, kind="score", device=device), device


def _eval_images(data_name: str | None, split: str, n: int, shape, seed: int = 0):
    """The first ``n`` uint8 images of a data set's split (``synthetic``: seeded random stand-ins)."""
    import torch

    from . import data as D

    if not data_name:
        raise SystemExit("the checkpoint's card names no data set; pass --data")
    if data_name == "synthetic":
        return D.synthetic_images(n, tuple(shape), generator=torch.Generator().manual_seed(seed + 1)).images
    ds = D.load_dataset(data_name, split)
    if len(ds.images) < n:
        raise SystemExit(f"--n {n} but {ds.name}/{split} has only {len(ds.images)} images")
    return ds.images[:n]


def _write_summary(summary: dict, path: str | None) -> None:
    print(json.dumps(summary))
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(summary, indent=2) + "\n")


def cmd_likelihood(ns: argparse.Namespace) -> int:
    import math

    import torch

    from .likelihood import bits_per_dim

    if ns.n < 1 or ns.batch < 1 or ns.probes < 1:
        raise SystemExit("sdelab likelihood: --n, --batch and --probes must be >= 1")
    ckpt, device = _score_checkpoint(ns)
    ckpt.net.requires_grad_(False)  # the divergence needs d/dx only, not d/dtheta
    cfg = ckpt.net.config
    if cfg.get("num_classes"):
        raise SystemExit("sdelab likelihood: the checkpoint is class-conditional; evaluate an unconditional one")
    data_name = ns.data or ckpt.card.get("data", {}).get("name")
    images = _eval_images(data_name, ns.split, ns.n, (cfg["in_channels"], cfg["image_size"], cfg["image_size"]),
                          ns.seed).to(device)
    gen = torch.Generator(device=device).manual_seed(ns.seed)
    score_fn = ckpt.score_fn()
    t0 = ns.t0 if ns.t0 is not None else ckpt.sde.eps
    print(f"sdelab likelihood: {ckpt.card.get('name')} ({ckpt.sde.name}) on {len(images)} {data_name}/{ns.split} "
          f"images | {ns.divergence}" + (f" ({ns.probes} probe(s))" if ns.divergence == "hutchinson" else "")
          + f" | RK45 rtol={ns.rtol:g} atol={ns.atol:g} | t0={t0:g} | {device}", flush=True)
    bpds, nfes, start = [], [], time.perf_counter()
    for i in range(0, len(images), ns.batch):
        t = time.perf_counter()
        res = bits_per_dim(score_fn, ckpt.sde, images[i:i + ns.batch], generator=gen, divergence=ns.divergence,
                           probes=ns.probes, rtol=ns.rtol, atol=ns.atol, t0=ns.t0)
        bpds.append(res.bpd.cpu())
        nfes.append(res.nfe)
        print(f"  images {i}-{i + len(res.bpd) - 1}: bits/dim {res.mean:.4f}, NFE {res.nfe}, "
              f"{time.perf_counter() - t:.1f} s", flush=True)
    bpd = torch.cat(bpds)
    se = bpd.std().item() / math.sqrt(len(bpd)) if len(bpd) > 1 else float("nan")
    summary = {"checkpoint": ckpt.card.get("name"), "sde": ckpt.sde.name, "data": data_name, "split": ns.split,
               "images": len(bpd), "bpd_mean": bpd.mean().item(), "bpd_se": se, "divergence": ns.divergence,
               "probes": ns.probes, "rtol": ns.rtol, "atol": ns.atol, "t0": t0, "seed": ns.seed,
               "nfe_per_batch": nfes, "wall_s": round(time.perf_counter() - start, 1)}
    print(f"bits/dim {summary['bpd_mean']:.4f} +- {se:.4f} (standard error over {len(bpd)} images; one "
          "dequantization draw each)")
    _write_summary(summary, ns.json)
    return 0


def _generate(ckpt, sampler_name: str, n: int, steps: int, batch: int, seed: int, device):
    import torch

    try:
        from . import samplers
    except ImportError as e:
        raise SystemExit(f"sampling needs sdelab.samplers, which is not available: {e}") from None
    sampler = getattr(samplers, sampler_name, None)
    if sampler is None or not callable(sampler):
        raise SystemExit(f"unknown sampler {sampler_name!r}")
    cfg = ckpt.net.config
    shape = (cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    gen = torch.Generator(device=device).manual_seed(seed)
    out, nfe = [], 0
    with torch.no_grad():
        for start in range(0, n, batch):
            b = min(batch, n - start)
            x_T = ckpt.sde.prior_sample((b, *shape), generator=gen, device=device)
            kwargs = {"generator": gen}
            if sampler_name != "probability_flow_rk45":
                kwargs["steps"] = steps
            res = sampler(ckpt.score_fn(), ckpt.sde, x_T, **kwargs)
            out.append(res.x.float().clamp(-1, 1).cpu())
            nfe = getattr(res, "nfe", nfe)
    return torch.cat(out), nfe


def cmd_evaluate(ns: argparse.Namespace) -> int:
    import torch

    from . import checkpoints, metrics

    if ns.n < 2 or ns.batch < 1 or ns.steps < 1:
        raise SystemExit("sdelab evaluate: --n must be >= 2, --batch and --steps >= 1")
    start = time.perf_counter()
    ckpt, device = _score_checkpoint(ns)
    clf = checkpoints.load(ns.classifier, kind="classifier", device=device)
    features_fn, probs_fn = metrics.classifier_functions(clf.net)
    if ns.features == "inception":
        try:
            features_fn = metrics.inception_features(device)
        except metrics.ExtractorUnavailable as e:
            raise SystemExit(f"sdelab evaluate --features inception: {e}") from None
    data_name = ns.data or ckpt.card.get("data", {}).get("name")
    clf_data = clf.card.get("data", {}).get("name")
    if clf_data and data_name and clf_data != data_name:
        print(f"warning: the classifier was trained on {clf_data}, the images are {data_name}", flush=True)
    if ns.samples:
        images = torch.load(ns.samples, weights_only=True)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) < ns.n:
            raise SystemExit(f"--samples {ns.samples} must hold a tensor (N >= {ns.n}, C, H, W)")
        images, nfe, how = images[:ns.n], None, f"images from {ns.samples}"
    else:
        images, nfe = _generate(ckpt, ns.sampler, ns.n, ns.steps, ns.batch, ns.seed, device)
        how = f"{ns.sampler} ({ns.steps} steps, NFE {nfe})" if ns.sampler != "probability_flow_rk45" else ns.sampler
        if ns.save_samples:
            Path(ns.save_samples).parent.mkdir(parents=True, exist_ok=True)
            torch.save(images, ns.save_samples)
    if ns.real_stats:
        real = ns.real_stats
        n_real = None
    else:
        n_real = ns.n_real or ns.n
        cfg = ckpt.net.config
        real = _eval_images(data_name, "test", n_real, (cfg["in_channels"], cfg["image_size"], cfg["image_size"]),
                            ns.seed)
    fd = metrics.compute_fd(features_fn, real, images, num_samples=ns.n, num_real=n_real, device=device)
    is_ = metrics.compute_is(probs_fn, images, num_samples=ns.n, splits=ns.splits, device=device)
    summary = {"checkpoint": ckpt.card.get("name"), "sde": ckpt.sde.name, "classifier": clf.card.get("name"),
               "features": ns.features, "samples": how, "nfe": nfe, "seed": ns.seed,
               "fd": fd.fd, "num_real": fd.num_real, "num_generated": fd.num_generated,
               "is_mean": is_.mean, "is_std": is_.std, "is_splits": is_.splits,
               "wall_s": round(time.perf_counter() - start, 1)}
    label = "FID" if ns.features == "inception" else "FD (classifier features)"
    print(f"{label} {fd.fd:.3f} ({fd.num_generated} generated vs {fd.num_real} real) | IS {is_.mean:.3f} +- "
          f"{is_.std:.3f} ({is_.splits} splits) | {how}")
    _write_summary(summary, ns.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    ns = parser.parse_args(argv)
    ns.argv = argv
    return ns.func(ns)


if __name__ == "__main__":
    sys.exit(main())
