"""Checkpoints: round trip, card contents, refusal of tampered files and mismatched expectations."""

import json
import math
import pickle

import pytest
import torch

from sdelab import checkpoints, make_sde
from sdelab.checkpoints import CheckpointError, load, save, sha256_file
from sdelab.nets import FeatureClassifier, ScoreNet, TimeDependentClassifier

SHIPPED_MAX_BYTES = 10 * 1024 * 1024


def _net():
    torch.manual_seed(0)
    net = ScoreNet(channels=4, image_size=8, ch_mult=(1, 2))
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return net


def _save(tmp_path, name="m", sde="vp-cosine", **kw):
    kw = {"data": {"name": "unit-test"}, "steps": 7, "final_loss": 0.5, **kw}
    return save(tmp_path / name, _net(), sde=make_sde(sde), **kw)


def test_roundtrip_gives_the_same_network_sde_and_card(tmp_path):
    card = _save(tmp_path, metrics={"fd": 1.0})
    net, sde, card2 = load(tmp_path / "m.json", kind="score", sde="vp-cosine")
    assert card2 == json.loads((tmp_path / "m.json").read_text())
    assert card2["weights"]["sha256"] == sha256_file(tmp_path / "m.safetensors") == card["weights"]["sha256"]
    assert sde.config() == make_sde("vp-cosine").config() and card2["steps"] == 7 and card2["metrics"] == {"fd": 1.0}
    for a, b in zip(net.state_dict().values(), _net().state_dict().values()):
        assert torch.equal(a, b)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2) * 0.9 + 0.05
    with torch.no_grad():
        score = load(tmp_path / "m").score_fn()(x, t)
    assert score.shape == x.shape and torch.isfinite(score).all()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_a_modified_weights_file_is_refused(tmp_path):
    _save(tmp_path)
    raw = bytearray((tmp_path / "m.safetensors").read_bytes())
    raw[-3] ^= 0x01  # flip one bit of one weight
    (tmp_path / "m.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load(tmp_path / "m.json")


def test_a_pickle_is_never_executed(tmp_path):
    # A pickle that would run code on unpickling, dressed as the weights with a matching sha256:
    # safetensors reads tensors only, so loading fails cleanly and nothing runs.
    _save(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "m.safetensors").write_bytes(pickle.dumps(Evil()))
    card = json.loads((tmp_path / "m.json").read_text())
    card["weights"]["sha256"] = sha256_file(tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="safetensors"):
        load(tmp_path / "m.json")
    assert not marker.exists()


def test_mismatched_expectations_and_configs_are_refused(tmp_path):
    _save(tmp_path)
    with pytest.raises(CheckpointError, match="asked for"):
        load(tmp_path / "m.json", sde="vp-linear")
    with pytest.raises(CheckpointError, match="asked for"):
        load(tmp_path / "m.json", sde=make_sde("vp-cosine", eps=1e-4))
    with pytest.raises(CheckpointError, match="'noisy_classifier' model was asked for"):
        load(tmp_path / "m.json", kind="noisy_classifier")
    card = json.loads((tmp_path / "m.json").read_text())
    card["net"]["channels"] = 8  # the card now describes a wider network than the weights
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"card says net \{'channels': 8\}, but the weights were saved "
                       r"for net \{'channels': 4\}"):
        load(tmp_path / "m.json")
    with pytest.raises(CheckpointError, match="no checkpoint card"):
        load(tmp_path / "missing.json")
    (tmp_path / "m.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load(tmp_path / "m.json", verify=False)


def test_registry_resolves_names(tmp_path, monkeypatch):
    monkeypatch.setenv("SDELAB_CHECKPOINTS", str(tmp_path))
    _save(tmp_path, "toy-vp", sde="vp-linear")
    assert checkpoints.available() == ["toy-vp"]
    assert load("toy-vp").card["name"] == "toy-vp"
    with pytest.raises(CheckpointError, match="toy-vp"):  # the message lists what exists
        load("toy-ve")


def test_classifier_checkpoints(tmp_path):
    clf = FeatureClassifier(in_channels=1, num_classes=3, width=1, depth=1)
    save(tmp_path / "c", clf, kind="classifier")
    ck = load(tmp_path / "c.json", kind="classifier")
    assert ck.sde is None and ck.logits_fn()(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(CheckpointError, match="not a score model"):
        ck.score_fn()
    noisy = TimeDependentClassifier(in_channels=1, num_classes=3, width=1, depth=1)
    with pytest.raises(ValueError, match="needs the sde"):
        save(tmp_path / "n", noisy, kind="noisy_classifier")
    save(tmp_path / "n", noisy, kind="noisy_classifier", sde=make_sde("ve"))
    assert load(tmp_path / "n.json").logits_fn()(torch.randn(2, 1, 8, 8), 0.5).shape == (2, 3)


@pytest.mark.parametrize("name", checkpoints.available() or ["(none shipped yet)"])
def test_shipped_checkpoints_load_verify_and_fit_the_size_limit(name):
    if name == "(none shipped yet)":
        pytest.skip("no checkpoints in checkpoints/ yet")
    ck = load(name)  # verifies the sha256
    card = ck.card
    assert card["weights"]["bytes"] <= SHIPPED_MAX_BYTES
    for key in ("net", "data", "steps", "wall_time_s", "final_loss", "command"):
        assert card.get(key) is not None, key
    if card["kind"] == "score":
        c = ck.net.config
        x = ck.sde.prior_sample((2, c["in_channels"], c["image_size"], c["image_size"]),
                                generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.isfinite(ck.score_fn()(x, ck.sde.T)).all()


# ---------------------------------------------------------------------------------------------
# Nothing silent, nothing lost (issue 18)
# ---------------------------------------------------------------------------------------------
def test_exports_are_reproducible_byte_for_byte(tmp_path):
    a, b = _save(tmp_path, "a"), _save(tmp_path, "b")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert a["weights"]["sha256"] == b["weights"]["sha256"]


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(sde=make_sde("ve").config()), "card says sde"),
    (lambda c: c["sde"].update(name="subvp-cosine"), "card says sde"),
    (lambda c: c["sde"]["schedule"].update(beta_max=10.0), "card says sde"),
    (lambda c: c.update(kind="noisy_classifier"), "card says kind"),
    (lambda c: c["net"].update(num_classes=10), "card says net"),
])
def test_a_card_describing_other_weights_is_refused(tmp_path, edit, match):
    _save(tmp_path)
    card = json.loads((tmp_path / "m.json").read_text())
    edit(card)
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=match):
        load(tmp_path / "m.json")


def _write_legacy(tmp_path, state, name="m"):
    """Replace the weights by ``state`` the way the first exporter wrote them, and fix the sha."""
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / f"{name}.safetensors"), metadata={"format": checkpoints.FORMAT, "kind": "score"})
    card = json.loads((tmp_path / f"{name}.json").read_text())
    card["weights"]["sha256"] = sha256_file(tmp_path / f"{name}.safetensors")
    (tmp_path / f"{name}.json").write_text(json.dumps(card))
    return card


def test_legacy_weights_still_load_and_the_strict_load_checks_the_net(tmp_path):
    _save(tmp_path)
    card = _write_legacy(tmp_path, {k: v.contiguous() for k, v in _net().state_dict().items()})
    assert load(tmp_path / "m.json").card["name"] == "m"
    card["net"]["channels"] = 8
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not fit"):
        load(tmp_path / "m.json")


def test_non_finite_weights_are_refused_at_save_and_at_load(tmp_path):
    net = _net()
    with torch.no_grad():
        next(net.parameters())[0].fill_(float("nan"))
    with pytest.raises(ValueError, match="refusing to save .* non-finite values"):
        save(tmp_path / "bad", net, sde=make_sde("vp-linear"))
    assert not list(tmp_path.iterdir())
    _save(tmp_path)
    _write_legacy(tmp_path, {k: v.contiguous() for k, v in net.state_dict().items()})  # sha matches
    with pytest.raises(CheckpointError, match="non-finite weights"):
        load(tmp_path / "m.json")


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.pop("weights"), "no valid 'weights' entry"),
    (lambda c: c.update(weights={"file": "m.safetensors"}), "no valid 'weights' entry"),
    (lambda c: c["weights"].update(file="../../etc/passwd"), "plain file name"),
    (lambda c: c.update(kind="diffusion"), "kind 'diffusion' is not one of"),
    (lambda c: c.pop("net"), "no network config"),
    (lambda c: c.update(sde=None), "must name its SDE"),
    (lambda c: c.update(sde="vp"), "'sde' entry must be a dict"),
])
def test_incomplete_cards_give_a_checkpoint_error(tmp_path, edit, match):
    _save(tmp_path)
    card = json.loads((tmp_path / "m.json").read_text())
    edit(card)
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=match):
        load(tmp_path / "m.json")


def test_card_json_is_strict_when_a_loss_is_nan(tmp_path):
    card = _save(tmp_path, final_loss=float("nan"), metrics={"fd": float("inf")})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in the card"))
    assert strict["final_loss"] is None and strict["metrics"]["fd"] is None
    assert math.isnan(card["final_loss"])  # the returned card keeps the value


def test_a_failed_re_export_keeps_the_previous_one(tmp_path, monkeypatch):
    _save(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = json.dumps

    def failing_card(obj, *a, **kw):  # the card cannot be written (e.g. the disk filled up)
        if isinstance(obj, dict) and "weights" in obj:
            raise OSError(28, "No space left on device")
        return real(obj, *a, **kw)

    monkeypatch.setattr(checkpoints.json, "dumps", failing_card)
    net = _net()
    with torch.no_grad():
        next(net.parameters()).add_(1.0)  # other weights
    with pytest.raises(OSError):
        save(tmp_path / "m", net, sde=make_sde("vp-cosine"))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    load(tmp_path / "m.json")


def test_a_full_disk_mid_save_is_a_clear_error_and_leaves_no_temporary(tmp_path, monkeypatch):
    _save(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    import pathlib

    real = pathlib.Path.write_text

    def full(self, *a, **kw):
        if self.name.startswith(".m.json.tmp"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")
        return real(self, *a, **kw)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(OSError, match=r"could not write .*m\.json: the disk is full"):
        _save(tmp_path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".m.safetensors.tmp{dead}"
    stale.write_bytes(b"half a file")
    _save(tmp_path)
    assert not stale.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
