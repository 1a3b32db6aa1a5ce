"""Save and load trained networks: safetensors weights plus a JSON card, and the shipped registry.

A checkpoint is two files with one stem: ``<stem>.safetensors`` (the state dict; the format holds
tensors only, so loading executes no code) and ``<stem>.json``, the *card*::

    {"format": "sdelab-checkpoint/1", "name": ..., "kind": "score" | "noisy_classifier" | "classifier",
     "parametrisation": ..., "net": {build_net config}, "sde": {SDE.config()} or null,
     "data": {...}, "training": {...}, "steps": ..., "wall_time_s": ..., "final_loss": ...,
     "metrics": {...}, "command": "...", "weights": {"file": ..., "sha256": ..., "bytes": ...}, ...}

:func:`load` checks the weights' sha256 against the card (a tampered or truncated file is
refused), rebuilds the network from the card's config with :func:`sdelab.nets.build_net`, loads
the weights strictly (a shape or key mismatch is refused), rebuilds the SDE, and checks any
expectations the caller states (``kind=``, ``sde=``). Names without a path resolve to
:func:`registry_dir`: ``$SDELAB_CHECKPOINTS``, the repository's ``checkpoints/`` folder in a
checkout, or the copy of that folder inside an installed package: ``load("fashion-subvp-linear")``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .nets import build_net, logits_fn_from_net, score_fn_from_net
from .sde import SDE, make_sde, sde_from_config
from .utils import atomic_write_many

__all__ = ["KINDS", "Checkpoint", "CheckpointError", "available", "load", "registry_dir", "save", "sha256_file"]

FORMAT = "sdelab-checkpoint/1"
KINDS = ("score", "noisy_classifier", "classifier")
PARAMETRISATION = "eps: score(x, t) = -net(c_in(t) x, t) / sigma(t), c_in = 1/sqrt(alpha^2 + sigma^2) (sdelab.nets)"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, or not the kind / configuration the caller asked for."""


class Checkpoint(NamedTuple):
    """What :func:`load` returns; unpacks as ``net, sde, card = load(...)``."""

    net: torch.nn.Module
    sde: SDE | None
    card: dict

    def score_fn(self, **cond):
        """``score_fn(x, t)`` of a score checkpoint (``cond``, e.g. ``y=labels``, for conditional nets)."""
        if self.card["kind"] != "score":
            raise CheckpointError(f"checkpoint {self.card.get('name')!r} is a {self.card['kind']}, not a score model")
        return score_fn_from_net(self.net, self.sde, **cond)

    def logits_fn(self):
        """``logits_fn(x, t)`` of a noisy classifier, or ``logits_fn(x)`` of a clean one."""
        if self.card["kind"] == "noisy_classifier":
            return logits_fn_from_net(self.net, self.sde)
        if self.card["kind"] == "classifier":
            return self.net
        raise CheckpointError(f"checkpoint {self.card.get('name')!r} is a score model, not a classifier")


def registry_dir() -> Path:
    """Where the shipped checkpoints are: the first of these that applies.

    1. ``$SDELAB_CHECKPOINTS``, when set (a folder of your own models, or a test's);
    2. ``checkpoints/`` at the repository root, in a checkout (``pip install -e .``, or the
       repository on ``PYTHONPATH``): what ``tools/evaluate_checkpoints.py`` writes to;
    3. ``sdelab/_shipped/`` inside an installed package (``pip install sdelab @ git+...``, Colab):
       the build maps the repository's ``checkpoints/`` folder there (see ``pyproject.toml``).
    """
    env = os.environ.get("SDELAB_CHECKPOINTS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    checkout = here.parent / "checkpoints"
    if (here.parent / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    return here / "_shipped"


def _registry_origin(d: Path) -> str:
    if os.environ.get("SDELAB_CHECKPOINTS"):
        return "set by $SDELAB_CHECKPOINTS"
    if d.name == "checkpoints":
        return "the repository's checkpoints/ folder"
    return "the installed package's data"


def _reinstall_command() -> str:
    """The pip command that reinstalls sdelab with its models (URL from the package metadata)."""
    url = "<repository URL>"
    try:
        from importlib.metadata import PackageNotFoundError, metadata

        for entry in metadata("sdelab").get_all("Project-URL") or []:
            label, _, value = entry.partition(",")
            if label.strip().lower() == "repository":
                url = value.strip()
    except (ImportError, PackageNotFoundError):
        pass
    return f'pip install --force-reinstall --no-deps "sdelab @ git+{url}"'


def _missing_registry_fix(d: Path) -> str:
    if os.environ.get("SDELAB_CHECKPOINTS"):
        return ("Fix: `unset SDELAB_CHECKPOINTS` to use the shipped models (or point it at a folder "
                "holding <name>.json cards and <name>.safetensors weights).")
    if d.name == "checkpoints":
        return "Fix: `git checkout -- checkpoints` restores the shipped models in this checkout."
    return f"Fix: `{_reinstall_command()}` reinstalls sdelab with its shipped models."


def available() -> list[str]:
    """Names of the checkpoints in :func:`registry_dir` (those with a card)."""
    d = registry_dir()
    return sorted(p.stem for p in d.glob("*.json") if _is_card(p)) if d.is_dir() else []


def _is_card(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (what a card's ``weights.sha256`` records)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _nonfinite(state: dict) -> dict:
    """``{name: count}`` of the floating tensors of ``state`` holding NaN or infinite values."""
    bad = {}
    for k, v in state.items():
        if v.is_floating_point():
            n = int((~torch.isfinite(v)).sum())
            if n:
                bad[k] = n
    return bad


def _weights_metadata(kind: str, net_config: dict, sde_config: dict | None) -> dict:
    # One metadata key holding sorted JSON: safetensors writes its metadata dict in hash order,
    # so several keys would give different bytes (and sha256) for the same weights.
    what = {"format": FORMAT, "kind": kind, "net": net_config, "sde": sde_config}
    return {"sdelab": json.dumps(what, sort_keys=True, default=float)}


def save(path: str | os.PathLike, net: torch.nn.Module, *, kind: str = "score", sde: SDE | None = None,
         data: dict | None = None, training: dict | None = None, steps: int | None = None,
         wall_time_s: float | None = None, final_loss: float | None = None, metrics: dict | None = None,
         command: str | None = None, **extra) -> dict:
    """Write ``<path>.safetensors`` and ``<path>.json`` atomically; returns the card.

    ``path`` is the stem (a trailing ``.json``/``.safetensors`` is dropped); ``net`` must have a
    ``config`` dict (every sdelab network does). Score models and noisy classifiers need ``sde``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not hasattr(net, "config"):
        raise TypeError(f"net must be an sdelab network with a .config dict, got {type(net).__name__}")
    if kind in ("score", "noisy_classifier") and sde is None:
        raise ValueError(f"a {kind} checkpoint needs the sde it was trained for")
    if sde is not None and not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdelab SDE, got {type(sde).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (the checkpoint's stem), got {type(path).__name__}")
    stem = _stem(Path(path))
    weights = stem.with_suffix(".safetensors")
    state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
             for k, v in net.state_dict().items()}
    bad = _nonfinite(state)
    if bad:
        raise ValueError(f"refusing to save {stem}: the network holds non-finite values "
                         f"({sum(bad.values())} in {len(bad)} tensors, e.g. {next(iter(bad))!r})")
    sde_config = sde.config() if sde is not None else None
    blob = safetensors_bytes(state, metadata=_weights_metadata(kind, net.config, sde_config))
    card = {
        "format": FORMAT,
        "name": stem.name,
        "kind": kind,
        "parametrisation": PARAMETRISATION if kind == "score" else None,
        "net": net.config,
        "params": sum(v.numel() for k, v in state.items() if k in dict(net.named_parameters())),
        "sde": sde_config,
        "data": data or {},
        "training": training or {},
        "steps": steps,
        "wall_time_s": wall_time_s,
        "final_loss": final_loss,
        "metrics": metrics or {},
        "command": command,
        **extra,
        "weights": {"file": weights.name, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__},
    }
    # strict JSON: a NaN loss or metric becomes null (a bare NaN is not JSON)
    text = json.dumps(_json_safe(card), indent=2, default=str, allow_nan=False) + "\n"
    # both files are written before either replaces its old version: a failure (a full disk, a
    # kill) leaves the previous export whole
    atomic_write_many({weights: lambda tmp: Path(tmp).write_bytes(blob),
                       stem.with_suffix(".json"): lambda tmp: Path(tmp).write_text(text)})
    return card


def _json_safe(obj):
    """``obj`` with non-finite floats replaced by ``None`` (strict JSON has no NaN/Infinity)."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _stem(path: Path) -> Path:
    return path.with_suffix("") if path.suffix in (".json", ".safetensors") else path


def _resolve(name_or_path) -> Path:
    text = os.fspath(name_or_path)
    p = Path(text)
    is_path = p.suffix in (".json", ".safetensors") or os.sep in text or "/" in text
    if is_path:
        card = _stem(p).with_suffix(".json")
        if not card.exists():
            raise CheckpointError(
                f"no checkpoint card {card} (looked for that file). Pass an existing <stem>.json, a "
                f"registry name ({', '.join(available()) or 'none shipped'}), or make it: "
                f"`sdelab train ... --export {_stem(p)}`.")
        return card
    d = registry_dir()
    card = d / f"{p.name}.json"
    if card.exists():
        return card
    names = available()
    where = f"looked in {d} ({_registry_origin(d)})"
    if not names:
        raise CheckpointError(f"no checkpoint {p.name!r}: no shipped checkpoints at all "
                              f"({where}). " + _missing_registry_fix(d))
    raise CheckpointError(
        f"no checkpoint card {p.name}.json ({where}); the shipped checkpoints are: "
        f"{', '.join(names)}. Fix: load one of those names, or train it: "
        f"`sdelab train ... --export {d / p.name}`.")


def load(name_or_path, *, kind: str | None = None, sde: str | SDE | dict | None = None, device=None,
         verify: bool = True) -> Checkpoint:
    """Load a checkpoint by registry name or path; returns ``Checkpoint(net, sde, card)``.

    Args:
        kind: expected kind (``"score"``, ``"noisy_classifier"``, ``"classifier"``); refused if different.
        sde: expected SDE (a name such as ``"vp-linear"``, an :class:`~sdelab.sde.SDE`, or a config
            dict); refused unless the card's SDE config is the same.
        device: where to put the network (default: CPU). It is returned in ``eval()`` mode.
        verify: check the weights' sha256 against the card (on by default).

    Raises:
        CheckpointError: missing files, sha256 mismatch, wrong kind/SDE, weights that do not fit
            the stored network config.
    """
    card_path = _resolve(name_or_path)
    try:
        card = json.loads(card_path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{card_path} is not valid JSON: {e}") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise CheckpointError(f"{card_path} is not an sdelab checkpoint card (format {FORMAT!r})")
    name = card.get("name", card_path.stem)
    _check_card(card, name, card_path)
    if kind is not None and card.get("kind") != kind:
        raise CheckpointError(f"checkpoint {name!r} is a {card.get('kind')!r} model; a {kind!r} model was asked for")
    if sde is not None:
        want = make_sde(sde) if isinstance(sde, str) else sde
        want_cfg = want.config() if isinstance(want, SDE) else dict(want)
        if _sde_key(card.get("sde")) != _sde_key(want_cfg):
            raise CheckpointError(f"checkpoint {name!r} was trained for the SDE {card.get('sde')}; "
                                  f"the caller asked for {want_cfg}")
    weights = card_path.with_name(card["weights"]["file"])
    if not weights.exists():
        shipped = card_path.parent.resolve() == registry_dir().resolve()
        fix = (_missing_registry_fix(card_path.parent) if shipped else
               f"Fix: put {weights.name} beside its card (sdelab.checkpoints.save writes both).")
        raise CheckpointError(f"checkpoint {name!r}: weights file {weights} is missing (its card "
                              f"is {card_path}). {fix}")
    if verify:
        digest = sha256_file(weights)
        if digest != card["weights"]["sha256"]:
            raise CheckpointError(f"checkpoint {name!r}: sha256 of {weights} is {digest}, but its card says "
                                  f"{card['weights']['sha256']}: the file is corrupted or was modified; refusing it")
    try:
        state = load_file(str(weights))
        with safe_open(str(weights), framework="pt") as f:
            stored = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise CheckpointError(f"checkpoint {name!r}: {weights} is not a readable safetensors file ({e})") from None
    _check_weights_match_card(stored, card, name)
    bad = _nonfinite(state)
    if bad:
        raise CheckpointError(f"checkpoint {name!r}: {weights} holds non-finite weights ({sum(bad.values())} "
                              f"NaN/inf values in {len(bad)} tensors, e.g. {next(iter(bad))!r}); refusing it")
    try:
        net = build_net(card["net"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {name!r}: cannot build its network from the card: {e}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {name!r}: the weights do not fit the network config in the card "
                              f"({card['net']}):\n{e}") from None
    net.eval()
    if device is not None:
        net.to(device)
    try:
        sde_obj = sde_from_config(card["sde"]) if card.get("sde") else None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {name!r}: cannot build its SDE from the card: {e}") from None
    return Checkpoint(net, sde_obj, card)


def _check_card(card: dict, name: str, path: Path) -> None:
    """The entries :func:`load` relies on, with their types; a clear error instead of a KeyError."""
    weights = card.get("weights")
    if not isinstance(weights, dict) or not isinstance(weights.get("file"), str) or (
            not isinstance(weights.get("sha256"), str)):
        raise CheckpointError(f"checkpoint {name!r}: the card {path} has no valid 'weights' entry "
                              "({'file': ..., 'sha256': ..., 'bytes': ...})")
    if os.sep in weights["file"] or "/" in weights["file"]:
        raise CheckpointError(f"checkpoint {name!r}: weights file {weights['file']!r} must be a plain file name "
                              "beside the card")
    if card.get("kind") not in KINDS:
        raise CheckpointError(f"checkpoint {name!r}: the card's kind {card.get('kind')!r} is not one of {KINDS}")
    if not isinstance(card.get("net"), dict):
        raise CheckpointError(f"checkpoint {name!r}: the card has no network config ('net' entry)")
    if card.get("sde") is not None and not isinstance(card["sde"], dict):
        raise CheckpointError(f"checkpoint {name!r}: the card's 'sde' entry must be a dict, got {card['sde']!r}")
    if card.get("sde") is None and card["kind"] in ("score", "noisy_classifier"):
        raise CheckpointError(f"checkpoint {name!r}: a {card['kind']} card must name its SDE ('sde' entry)")


def _sde_key(cfg):
    """An SDE config in a canonical form (legacy family names such as 'vp' read as their full name)."""
    if cfg is None:
        return None
    try:
        return _norm(sde_from_config(cfg).config())
    except (TypeError, ValueError):
        return _norm(cfg)


def _check_weights_match_card(metadata: dict, card: dict, name: str) -> None:
    """Refuse a card that describes other weights than the file's own record (written by :func:`save`).

    Weights exported before this record existed carry none; for them only the strict load of the
    state dict checks the network, and nothing can check the SDE.
    """
    if "sdelab" not in metadata:
        return
    try:
        stored = json.loads(metadata["sdelab"])
    except ValueError:
        raise CheckpointError(f"checkpoint {name!r}: the weights' metadata is not valid JSON") from None
    for key, norm in (("kind", lambda v: v), ("net", _norm), ("sde", _sde_key)):
        a, b = norm(card.get(key)), norm(stored.get(key))
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):  # name the entries that differ
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                a, b = {k: a.get(k) for k in diff}, {k: b.get(k) for k in diff}
            raise CheckpointError(
                f"checkpoint {name!r}: the card says {key} {a}, but the weights were saved for {key} {b}; "
                "the card was edited or belongs to other weights; refusing it")


def _norm(cfg):
    return json.loads(json.dumps(cfg, sort_keys=True, default=float)) if cfg is not None else None
