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

Every command checks its arguments (and that its output files can be written) before any long
work starts; a bad value ends the command with a one-line message naming the option. Progress
bars go to stderr when it is a terminal (``--no-progress`` turns them off).

A config file is JSON whose keys are the long option names with ``_`` for ``-`` (``"batch_size": 128``),
plus an optional ``"net"`` dict passed to :func:`sdelab.nets.build_net` as a whole.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from pathlib import Path

from . import checks

__all__ = ["TRAIN_DEFAULTS", "TRAIN_KINDS", "build_parser", "main"]

TRAIN_KINDS = ("score", "noisy_classifier", "classifier")
_TRAIN_DATA = ("fashion-mnist", "mnist", "cifar10", "synthetic")


def _train_defaults() -> dict:
    """The defaults of ``sdelab train``: the optimisation ones come from :class:`sdelab.train.TrainConfig`."""
    from dataclasses import fields

    from .train import TrainConfig

    optim = {f.name: f.default for f in fields(TrainConfig) if f.name != "betas"}
    return {
        "kind": "score", "data": "fashion-mnist", "limit": None, "class_conditional": False, "p_uncond": 0.1,
        "sde": "vp-linear", "sigma_min": None, "sigma_max": None, "beta_min": None, "beta_max": None, "eps": None,
        "net": None, "channels": None, "ch_mult": None, "num_res_blocks": None, "dropout": None,
        "width": None, "depth": None, "eval_n": None,
        "weighting": "sigma2", "importance_sampling": False,
        **optim,
        "run_dir": None, "resume": True, "export": None, "threads": None, "device": None,
    }


TRAIN_DEFAULTS = _train_defaults()


def _d(key: str) -> str:
    return f" [default {TRAIN_DEFAULTS[key]}]"


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train a score network or a classifier (or resume an interrupted run)",
        description="Train a score network by denoising score matching (--kind score), a noisy classifier "
                    "p_t(y | x_t) for classifier guidance (--kind noisy_classifier, on data perturbed by --sde) "
                    "or a clean classifier (--kind classifier, the feature extractor of sdelab evaluate), and "
                    "optionally export a checkpoint; classifiers are scored on the test split for its card. "
                    "Every option can also come from --config (JSON, keys = option names with '_'); "
                    "flags given on the command line override the file. Re-running the same command "
                    "with the same --run-dir resumes from the last saved step with the same loss trajectory. "
                    "Without --run-dir the resumable state goes to runs/train-<hash of the options>/ "
                    "(printed at the start). Ctrl-C saves the state and stops; a diverging loss stops "
                    "the run without exporting.",
        argument_default=argparse.SUPPRESS)
    a = p.add_argument
    a("--config", help="JSON file of options (keys as below, with '_'); a 'net' entry may be a full build_net dict")
    a("--kind", choices=TRAIN_KINDS, help="score (a ScoreNet, by denoising score matching) | noisy_classifier "
      "(a time-dependent classifier on x_t of --sde) | classifier (a clean classifier)" + _d("kind"))
    g = p.add_argument_group("data")
    g.add_argument("--data", choices=_TRAIN_DATA, help="data set; synthetic = random 3x32x32 images for smoke "
                   "tests" + _d("data"))
    g.add_argument("--limit", type=int, help="use only the first N >= 1 training images [default: all]")
    g.add_argument("--class-conditional", action="store_true",
                   help="train a class-conditional network on the labels (for classifier-free guidance)")
    g.add_argument("--p-uncond", type=float, help="with --class-conditional: probability of dropping a label to "
                   "the null label" + _d("p_uncond"))
    g = p.add_argument_group("SDE")
    g.add_argument("--sde", help="ve | vp-linear | vp-cosine | subvp-linear | subvp-cosine" + _d("sde"))
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
    g.add_argument("--weighting", choices=("sigma2", "likelihood"), help="sigma2 (lambda = sigma^2, the "
                   "noise-prediction error) | likelihood (lambda = g^2)" + _d("weighting"))
    g.add_argument("--importance-sampling", action="store_true",
                   help="with --weighting likelihood: draw t with density proportional to g^2/sigma^2")
    g = p.add_argument_group("optimisation (defaults: sdelab.train.TrainConfig)")
    g.add_argument("--steps", type=int, help="optimizer steps" + _d("steps"))
    g.add_argument("--batch-size", type=int, help="global batch size (split over processes)" + _d("batch_size"))
    g.add_argument("--lr", type=float, help="AdamW learning rate" + _d("lr"))
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay" + _d("weight_decay"))
    g.add_argument("--warmup", type=int, help="linear warm-up steps" + _d("warmup"))
    g.add_argument("--lr-schedule", choices=("constant", "cosine"), help="learning-rate schedule after the "
                   "warm-up (cosine: to zero at --steps)" + _d("lr_schedule"))
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm to this (0 = off)" + _d("grad_clip"))
    g.add_argument("--ema-decay", type=float, help="EMA decay of the weights" + _d("ema_decay"))
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (about 1.5x faster on CPUs with avx512_bf16)")
    g.add_argument("--seed", type=int, help="seed of the data order, noise and initialisation" + _d("seed"))
    g = p.add_argument_group("run")
    g.add_argument("--run-dir", help="folder for state.pt (resume), meta.json and log.txt "
                   "[default: runs/train-<hash of the options>]")
    g.add_argument("--no-resume", dest="resume", action="store_false", help="start afresh even if --run-dir has a state")
    g.add_argument("--ckpt-every", type=int, help="save the resumable state every N steps" + _d("ckpt_every"))
    g.add_argument("--log-every", type=int, help="log the mean loss every N steps" + _d("log_every"))
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("--export", help="when done, write the EMA weights as checkpoint <STEM>.safetensors + <STEM>.json")
    g.add_argument("--eval-n", type=int, help="classifiers: score the exported EMA weights on the first N test "
                   "images (accuracy; for noisy classifiers accuracy against t) [default: the whole test split]")
    g.add_argument("--threads", type=int, help="torch CPU threads [default: torch's choice]")
    g.add_argument("--device", help="cpu | cuda | cuda:N [default: CUDA when present; cuda:LOCAL_RANK under torchrun]")
    p.set_defaults(func=cmd_train)


def _machine_options() -> argparse.ArgumentParser:
    """``--threads``, ``--device``, ``--no-progress``: shared by sample / likelihood / evaluate."""
    machine = argparse.ArgumentParser(add_help=False)
    g = machine.add_argument_group("machine")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's choice]")
    g.add_argument("--device", default=None, help="cpu | cuda | cuda:N [default: CUDA when present]")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (it is also off when stderr is not a terminal)")
    return machine


def _sampling_options(sampler: str, steps: int) -> argparse.ArgumentParser:
    """The sampling options of sample / evaluate (built per command: argparse shares parents' defaults)."""
    from .generate import sampler_names

    sampling = argparse.ArgumentParser(add_help=False)
    g = sampling.add_argument_group("sampling (sdelab.generate.sample_from_checkpoint)")
    g.add_argument("--sampler", default=sampler, choices=sampler_names(),
                   help="a sampler of sdelab.samplers.SAMPLERS")
    g.add_argument("--steps", type=int, default=steps, help="sampler steps (probability_flow_rk45 is adaptive and "
                   "ignores it)")
    g.add_argument("--batch", type=int, default=64, help="sample in chunks of this many images (the CPU cost of "
                   "a batch grows faster than its size)")
    g.add_argument("--seed", type=int, default=0, help="seed: chunk i draws its prior sample and noise from "
                   "seed + i")
    g.add_argument("--t-end", type=float, default=None,
                   help="where the sampler stops before the Tweedie step (default: the end time measured "
                   "for this sampler and SDE, sdelab.generate.learned_t_end)")
    g.add_argument("--no-denoise", dest="denoise", action="store_false",
                   help="skip the final Tweedie denoising step (one NFE) that every sampler ends with by default")
    return sampling


def _add_sample(sub) -> None:
    p = sub.add_parser(
        "sample", help="draw samples from a checkpoint into a PNG grid",
        parents=[_sampling_options("euler_maruyama", 500), _machine_options()],
        description="Sample from a score checkpoint (a shipped name such as fashion-vp-linear, or a path to "
                    "<stem>.json) with one of sdelab.samplers, and save the images as a PNG grid.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("checkpoint", help="registry name (see sdelab.checkpoints.available()) or path to a card .json")
    a("--out", default="samples.png", help="output image file (.png or .jpg)")
    a("--n", type=int, default=64, help="number of images")
    a("--label", type=int, default=None, help="class label for a class-conditional checkpoint, in [0, classes - 1] "
      "(default: unconditional)")
    a("--nrow", type=int, default=None, help="images per row of the grid (default: about sqrt(n))")
    p.set_defaults(func=cmd_sample)


def _add_likelihood(sub) -> None:
    p = sub.add_parser(
        "likelihood", help="bits/dim of a score checkpoint on test images (probability-flow ODE)",
        parents=[_machine_options()],
        description="Bits per dimension of the first --n test images under a score checkpoint: uniform "
                    "dequantization, the probability-flow ODE with the instantaneous change of variables "
                    "(sdelab.likelihood.bits_per_dim), and the change of variables from [0, 255] to the model "
                    "range. Prints the mean with its standard error over images and the NFE of each batch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("checkpoint", help="registry name (e.g. fashion-vp-linear) or path to a score checkpoint's card .json")
    a("--n", type=int, default=100, help="number of test images (the first N of the split)")
    a("--data", default=None, help="data set (default: the one the checkpoint was trained on, from its card)")
    a("--split", default="test", choices=("test", "train"), help="split of the data set to evaluate")
    a("--batch", type=int, default=100, help="images per ODE solve (its adaptive steps follow the worst image)")
    a("--divergence", default="hutchinson", choices=("hutchinson", "exact"),
      help="divergence of the score: Hutchinson's estimator, or the exact trace (one backward pass per pixel)")
    a("--probes", type=int, default=1, help="Hutchinson probes per image, drawn once and fixed for the solve")
    a("--rtol", type=float, default=1e-5, help="relative tolerance of the RK45 solve")
    a("--atol", type=float, default=1e-5, help="absolute tolerance of the RK45 solve")
    a("--t0", type=float, default=None, help="start time of the ODE (default: the SDE's eps, the smallest "
      "training time)")
    a("--seed", type=int, default=0, help="seed of the dequantization noise and the Hutchinson probes")
    a("--json", default=None, help="also write the summary as JSON to this file")
    p.set_defaults(func=cmd_likelihood)


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="Fréchet distance and Inception Score of samples, with the project classifier",
        parents=[_sampling_options("dpm_solver", 25), _machine_options()],
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
    a("--n-real", type=int, default=None, help="number of real test images for the reference statistics "
      "(default: --n)")
    a("--real-stats", default=None, help="cached reference statistics (.npz from sdelab.metrics.save_statistics) "
      "instead of --n-real test images; they must come from the same extractor")
    a("--data", default=None, help="data set of the real images (default: the checkpoint's, from its card)")
    a("--samples", default=None, help="evaluate these images (a .pt tensor (N, C, H, W), float in [-1, 1] or "
      "uint8) instead of sampling")
    a("--save-samples", default=None, help="save the generated images to this .pt file")
    a("--splits", type=int, default=10, help="Inception Score splits (mean and standard deviation over them)")
    a("--json", default=None, help="also write the summary as JSON to this file")
    p.set_defaults(func=cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sdelab`` command (subcommands train, sample, likelihood, evaluate)."""
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
# sdelab train
# ----------------------------------------------------------------------------------------------
def _train_options(ns: argparse.Namespace) -> dict:
    opts = dict(TRAIN_DEFAULTS)
    given = {k: v for k, v in vars(ns).items() if k not in ("func", "command", "config", "argv")}
    if getattr(ns, "config", None):
        path = checks.input_file(ns.config, "--config")
        try:
            file_opts = json.loads(Path(path).read_text())
        except ValueError as e:
            raise SystemExit(f"sdelab train: --config {path} is not valid JSON: {e}") from None
        if not isinstance(file_opts, dict):
            raise SystemExit(f"sdelab train: --config {path} must hold a JSON object of options, "
                             f"got {type(file_opts).__name__}")
        unknown = set(file_opts) - set(TRAIN_DEFAULTS)
        if unknown:
            raise SystemExit(f"sdelab train: unknown key(s) {sorted(unknown)} in {path}; "
                             f"known: {sorted(TRAIN_DEFAULTS)}")
        opts.update(file_opts)
    opts.update(given)
    return opts


def _train_config(opts: dict):
    from .train import TrainConfig

    return TrainConfig(**{k: opts[k] for k in ("steps", "batch_size", "lr", "weight_decay", "warmup", "lr_schedule",
                                               "grad_clip", "ema_decay", "bf16", "seed", "ckpt_every",
                                               "log_every", "progress")})


def _check_train_options(opts: dict) -> None:
    """Everything that can be checked before data, network or optimizer exist."""
    checks.choice(opts["kind"], "--kind", TRAIN_KINDS)
    checks.choice(opts["data"], "--data", _TRAIN_DATA)
    for key in ("limit", "eval_n", "channels", "num_res_blocks", "width", "depth", "threads"):
        if opts.get(key) is not None:
            checks.integer(opts[key], "--" + key.replace("_", "-"), minimum=1)
    checks.real(opts["p_uncond"], "--p-uncond", lo=0.0, hi=1.0)
    if opts.get("dropout") is not None:
        checks.real(opts["dropout"], "--dropout", lo=0.0, hi=1.0, hi_open=True)
    checks.choice(opts["weighting"], "--weighting", ("sigma2", "likelihood"))
    if opts.get("ch_mult"):
        _ch_mult(opts["ch_mult"])
    if opts["kind"] != "score" and opts["class_conditional"]:
        raise ValueError("--class-conditional applies to --kind score only")
    if opts["export"] is not None:
        checks.output_path(str(opts["export"]) + ".json", "--export")
    if opts["run_dir"] is not None:
        checks.output_path(os.path.join(str(opts["run_dir"]), "state.pt"), "--run-dir")


def _default_run_dir(opts: dict) -> str:
    """``runs/train-<hash>``: one folder per set of options, so the same command resumes."""
    keep = {k: v for k, v in opts.items() if k not in ("progress", "threads", "device", "export", "resume")}
    digest = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return os.path.join("runs", f"train-{digest}")


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


def _ch_mult(cm) -> list[int]:
    try:
        mult = [int(c) for c in (cm.split(",") if isinstance(cm, str) else cm)]
    except (TypeError, ValueError):
        mult = []
    if not mult or min(mult) < 1:
        raise ValueError(f"--ch-mult must be comma-separated integers >= 1 such as 1,2,4,8, got {cm!r}")
    return mult


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
            cfg["ch_mult"] = _ch_mult(opts["ch_mult"])
    else:
        if opts["net"] not in (None, kind):
            raise ValueError(f"--kind {kind} trains the {kind!r} network, not --net {opts['net']!r}")
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
    """``sdelab train``: check every option, build, train (resumably), export."""
    import torch

    from . import checkpoints
    from .losses import ClassifierObjective, DSMObjective
    from .nets import build_net, count_params
    from .train import init_distributed, train

    opts = _train_options(ns)
    _check_train_options(opts)
    config = _train_config(opts)  # checks the optimisation options
    kind = opts["kind"]
    sde = _make_sde(opts) if kind != "classifier" else None
    if opts["run_dir"] is None:
        opts["run_dir"] = _default_run_dir(opts)
        checks.output_path(os.path.join(opts["run_dir"], "state.pt"), "--run-dir")
        print(f"sdelab train: no --run-dir given; the resumable state goes to {opts['run_dir']}/ "
              "(re-run the same command to resume)", file=sys.stderr, flush=True)
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
    torch.manual_seed(opts["seed"])  # initial weights
    net = build_net(_net_config(opts, x, num_classes)).to(device)
    if kind == "score":
        objective = DSMObjective(sde, opts["weighting"], opts["importance_sampling"],
                                 opts["p_uncond"] if num_classes else 0.0)
    else:
        objective = ClassifierObjective(sde)
    if rank == 0:
        print(f"sdelab train: {data_info['name']} ({data_info['n']} images), SDE {sde!r}, "
              f"{net.config['kind']} {count_params(net) / 1e6:.2f} M params, {config.steps} steps of "
              f"{config.batch_size}, {world} process(es) on {device}", flush=True)
    meta = {"sde": sde.config() if sde is not None else None, "net": net.config, "data": data_info}
    data = (x, labels) if num_classes else x
    result = train(net, objective, data, config, run_dir=opts["run_dir"], resume=opts["resume"], meta=meta)
    if result.interrupted:
        if rank == 0:
            print(f"interrupted at step {result.step}; the state is saved in {opts['run_dir']}/state.pt: run the "
                  "same command to resume", file=sys.stderr, flush=True)
        return 130
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
            print(f"exported {card['name']} ({card['weights']['bytes'] / 1e6:.1f} MB, sha256 "
                  f"{card['weights']['sha256'][:12]}...)")
    return 0


# ----------------------------------------------------------------------------------------------
# sdelab sample / likelihood / evaluate
# ----------------------------------------------------------------------------------------------
def _progress(ns) -> bool | None:
    """``None`` (tqdm decides: on when stderr is a terminal) unless ``--no-progress`` was given."""
    return None if getattr(ns, "progress", True) else False


def _machine(ns: argparse.Namespace):
    """``--threads`` and ``--device`` (checked) -> the torch device."""
    import torch

    from .utils import default_device

    if ns.threads is not None:
        torch.set_num_threads(checks.integer(ns.threads, "--threads", minimum=1))
    if not ns.device:
        return default_device()
    try:
        return torch.device(ns.device)
    except RuntimeError as e:
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {ns.device!r} ({e})") from None


def _check_sampling(ns: argparse.Namespace) -> None:
    from .generate import MAX_STEPS

    checks.integer(ns.n, "--n", minimum=1)
    checks.integer(ns.batch, "--batch", minimum=1)
    checks.integer(ns.steps, "--steps", minimum=1, maximum=MAX_STEPS)
    checks.integer(ns.seed, "--seed", minimum=0)


def _eval_images(data_name: str | None, split: str, n: int, shape, seed: int = 0):
    """The first ``n`` uint8 images of a data set's split (``synthetic``: seeded random stand-ins)."""
    import torch

    from . import data as D

    if not data_name:
        raise ValueError("the checkpoint's card names no data set; pass --data")
    if data_name == "synthetic":
        return D.synthetic_images(n, tuple(shape), generator=torch.Generator().manual_seed(seed + 1)).images
    ds = D.load_dataset(data_name, split)
    if len(ds.images) < n:
        raise ValueError(f"--n {n} but {ds.name}/{split} has only {len(ds.images)} images; pass --n <= "
                         f"{len(ds.images)}")
    return ds.images[:n]


def _write_summary(summary: dict, path: str | None) -> None:
    from .utils import atomic_write_text

    print(json.dumps(summary))
    if path:
        atomic_write_text(path, json.dumps(summary, indent=2) + "\n")


def _image_shape(ckpt) -> tuple[int, int, int]:
    cfg = ckpt.net.config
    return cfg["in_channels"], cfg["image_size"], cfg["image_size"]


def cmd_sample(ns: argparse.Namespace) -> int:
    """``sdelab sample``: :func:`sdelab.generate.sample_from_checkpoint`, saved as an image grid."""
    import math

    from . import checkpoints
    from .data import from_model_range
    from .generate import sample_from_checkpoint
    from .utils import atomic_write

    _check_sampling(ns)
    out = checks.output_path(ns.out, "--out", suffixes=(".png", ".jpg", ".jpeg"))
    if ns.nrow is not None:
        checks.integer(ns.nrow, "--nrow", minimum=1)
    device = _machine(ns)
    ckpt = checkpoints.load(ns.checkpoint, kind="score", device=device)
    res = sample_from_checkpoint(ckpt, ns.n, sampler=ns.sampler, steps=ns.steps, seed=ns.seed, batch=ns.batch,
                                 label=ns.label, denoise=ns.denoise, t_end=ns.t_end, progress=_progress(ns))
    from torchvision.utils import save_image

    fmt = "jpeg" if out.lower().endswith((".jpg", ".jpeg")) else "png"
    atomic_write(out, lambda tmp: save_image(from_model_range(res.images), tmp, format=fmt,
                                             nrow=ns.nrow or max(1, int(math.ceil(math.sqrt(ns.n)))),
                                             padding=2, pad_value=1.0))
    print(f"wrote {ns.n} samples to {out} ({ns.sampler}, {res.nfe} score evaluations per chunk, "
          f"{res.seconds:.1f} s)")
    return 0


def cmd_likelihood(ns: argparse.Namespace) -> int:
    """``sdelab likelihood``: bits/dim of test images, batch by batch, with a progress bar."""
    import math

    import torch
    from tqdm.auto import tqdm

    from . import checkpoints
    from .likelihood import bits_per_dim

    checks.integer(ns.n, "--n", minimum=1)
    checks.integer(ns.batch, "--batch", minimum=1)
    checks.integer(ns.probes, "--probes", minimum=1)
    checks.integer(ns.seed, "--seed", minimum=0)
    checks.real(ns.rtol, "--rtol", positive=True)
    checks.real(ns.atol, "--atol", positive=True)
    if ns.json:
        checks.output_path(ns.json, "--json", suffixes=(".json",))
    device = _machine(ns)
    ckpt = checkpoints.load(ns.checkpoint, kind="score", device=device)
    if ns.t0 is not None:
        checks.real(ns.t0, "--t0", lo=0.0, hi=ckpt.sde.T, hi_open=True)
    ckpt.net.requires_grad_(False)  # the divergence needs d/dx only, not d/dtheta
    if ckpt.net.config.get("num_classes"):
        raise ValueError("the checkpoint is class-conditional; evaluate an unconditional one")
    data_name = ns.data or ckpt.card.get("data", {}).get("name")
    images = _eval_images(data_name, ns.split, ns.n, _image_shape(ckpt), ns.seed).to(device)
    gen = torch.Generator(device=device).manual_seed(ns.seed)
    score_fn = ckpt.score_fn()
    t0 = ns.t0 if ns.t0 is not None else ckpt.sde.eps
    print(f"sdelab likelihood: {ckpt.card.get('name')} ({ckpt.sde.name}) on {len(images)} {data_name}/{ns.split} "
          f"images | {ns.divergence}" + (f" ({ns.probes} probe(s))" if ns.divergence == "hutchinson" else "")
          + f" | RK45 rtol={ns.rtol:g} atol={ns.atol:g} | t0={t0:g} | {device}", flush=True)
    bpds, nfes, start = [], [], time.perf_counter()
    bar = tqdm(total=len(images), unit="img", desc="likelihood", disable=None if ns.progress else True,
               dynamic_ncols=True, leave=False)
    try:
        for i in range(0, len(images), ns.batch):
            t = time.perf_counter()
            res = bits_per_dim(score_fn, ckpt.sde, images[i:i + ns.batch], generator=gen, divergence=ns.divergence,
                               probes=ns.probes, rtol=ns.rtol, atol=ns.atol, t0=ns.t0)
            bpds.append(res.bpd.cpu())
            nfes.append(res.nfe)
            bar.update(len(res.bpd))
            bar.write(f"  images {i}-{i + len(res.bpd) - 1}: bits/dim {res.mean:.4f}, NFE {res.nfe}, "
                      f"{time.perf_counter() - t:.1f} s", file=sys.stdout)
    finally:
        bar.close()
    bpd = torch.cat(bpds)
    se = bpd.std().item() / math.sqrt(len(bpd)) if len(bpd) > 1 else None
    summary = {"checkpoint": ckpt.card.get("name"), "sde": ckpt.sde.name, "data": data_name, "split": ns.split,
               "images": len(bpd), "bpd_mean": bpd.mean().item(), "bpd_se": se, "divergence": ns.divergence,
               "probes": ns.probes, "rtol": ns.rtol, "atol": ns.atol, "t0": t0, "seed": ns.seed,
               "nfe_per_batch": nfes, "wall_s": round(time.perf_counter() - start, 1)}
    se_text = f"{se:.4f}" if se is not None else "n/a"
    print(f"bits/dim {summary['bpd_mean']:.4f} +- {se_text} (standard error over {len(bpd)} images; one "
          "dequantization draw each)")
    _write_summary(summary, ns.json)
    return 0


def _load_samples(path: str, n: int):
    """Images from a ``.pt`` file, as float in [-1, 1]: uint8 pixels are rescaled, floats range-checked."""
    import torch

    from .data import to_model_range

    path = checks.input_file(path, "--samples")
    try:
        images = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # a pickle of anything but tensors, or not a torch file at all
        raise ValueError(f"--samples {path} is not a tensor file readable without executing code ({e})") from None
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) < n:
        raise ValueError(f"--samples {path} must hold a tensor (N >= {n}, C, H, W)")
    images = images[:n]
    if images.dtype == torch.uint8:
        return to_model_range(images)
    checks.in_range(images.float(), "--samples", -1.0, 1.0, hint="save float images in the model range [-1, 1] or "
                    "uint8 pixels")
    if float(images.min()) >= 0:
        raise ValueError(f"--samples {path}: every value lies in [0, 1], the range of images saved with "
                         "from_model_range; the metrics expect [-1, 1] (x * 2 - 1) or uint8 pixels")
    return images.float()


def cmd_evaluate(ns: argparse.Namespace) -> int:
    """``sdelab evaluate``: FD and IS of samples with the project classifier (or FID Inception)."""
    from . import checkpoints, metrics
    from .generate import sample_from_checkpoint

    _check_sampling(ns)
    checks.integer(ns.n, "--n", minimum=2)
    checks.integer(ns.splits, "--splits", minimum=1, maximum=ns.n)
    if ns.n_real is not None:
        checks.integer(ns.n_real, "--n-real", minimum=2)
    if ns.real_stats:
        checks.input_file(ns.real_stats, "--real-stats")
    for flag, path, suffix in (("--json", ns.json, ".json"), ("--save-samples", ns.save_samples, ".pt")):
        if path:
            checks.output_path(path, flag, suffixes=(suffix,))
    start = time.perf_counter()
    device = _machine(ns)
    ckpt = checkpoints.load(ns.checkpoint, kind="score", device=device)
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
    # the reference side first: a missing or short data set fails before any sampling
    if ns.real_stats:
        real, n_real = metrics.load_statistics(ns.real_stats), None
    else:
        n_real = ns.n_real or ns.n
        real = _eval_images(data_name, "test", n_real, _image_shape(ckpt), ns.seed)
    if ns.samples:
        images, nfe, how = _load_samples(ns.samples, ns.n), None, f"images from {ns.samples}"
    else:
        res = sample_from_checkpoint(ckpt, ns.n, sampler=ns.sampler, steps=ns.steps, seed=ns.seed, batch=ns.batch,
                                     denoise=ns.denoise, t_end=ns.t_end, progress=_progress(ns))
        images, nfe = res.images, res.nfe
        how = f"{ns.sampler} ({ns.steps} steps, NFE {nfe})" if ns.sampler != "probability_flow_rk45" else ns.sampler
        if ns.save_samples:
            from .utils import atomic_torch_save

            atomic_torch_save(images, ns.save_samples)
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
    """Run the ``sdelab`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    A bad argument, a refused checkpoint, a missing data set, a write that fails or a diverging
    training ends the command with ``SystemExit("sdelab COMMAND: message")`` (no traceback; set
    ``SDELAB_DEBUG=1`` to see one). Ctrl-C outside training (which saves and returns 130) exits
    with status 130.
    """
    from .checkpoints import CheckpointError  # noqa: F401  (a ValueError)
    from .data import DataUnavailable
    from .train import TrainingDiverged

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    ns = parser.parse_args(argv)
    ns.argv = argv
    try:
        return ns.func(ns)
    except (ValueError, TypeError, OSError, DataUnavailable, TrainingDiverged) as e:
        if os.environ.get("SDELAB_DEBUG"):
            raise
        raise SystemExit(f"sdelab {ns.command}: error: {e}") from e
    except KeyboardInterrupt:
        print(f"sdelab {ns.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
