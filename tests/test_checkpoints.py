"""Checkpoints: round trip, card contents, refusal of tampered files and mismatched expectations."""

import json
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
    return save(tmp_path / name, _net(), sde=make_sde(sde), data={"name": "unit-test"}, steps=7, final_loss=0.5, **kw)


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
    with pytest.raises(CheckpointError, match="do not fit"):
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
