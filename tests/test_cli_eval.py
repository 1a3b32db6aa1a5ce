"""`sdelab likelihood` and `sdelab evaluate` on tiny untrained checkpoints: the plumbing, checked
against direct calls of sdelab.likelihood and sdelab.metrics on the same images."""

import json

import pytest
import torch

from sdelab import checkpoints, make_sde, metrics
from sdelab.cli import build_parser, main
from sdelab.data import synthetic_images
from sdelab.likelihood import bits_per_dim
from sdelab.nets import FeatureClassifier, ScoreNet

SHAPE = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    torch.manual_seed(0)
    net = ScoreNet(in_channels=1, image_size=8, channels=4, ch_mult=(1, 2))
    data = {"name": "synthetic", "split": "train"}
    checkpoints.save(d / "score", net, kind="score", sde=make_sde("vp-linear"), data=data)
    clf = FeatureClassifier(in_channels=1, num_classes=4, width=1, depth=1)
    checkpoints.save(d / "clf", clf, kind="classifier", data=data)
    return d


@pytest.mark.parametrize("name", ["likelihood", "evaluate"])
def test_every_option_is_explained(name):
    action = next(a for a in build_parser()._actions if a.dest == "command")
    sub = action.choices[name]
    for a in sub._actions:
        if a.dest != "help":
            assert a.help and len(a.help) > 10, a.dest


def test_likelihood_matches_a_direct_call(ckpts, tmp_path, capsys):
    out = tmp_path / "bpd.json"
    args = ["likelihood", str(ckpts / "score.json"), "--n", "4", "--batch", "2", "--rtol", "1e-3", "--atol", "1e-3", "--t0", "0.05",
            "--seed", "5", "--threads", "1", "--json", str(out)]
    assert main(args) == 0
    summary = json.loads(out.read_text())
    assert summary["images"] == 4 and len(summary["nfe_per_batch"]) == 2 and summary["sde"] == "vp-linear"
    assert "bits/dim" in capsys.readouterr().out
    # the same images (synthetic stand-ins seeded by --seed), the same generator, the same solves
    ck = checkpoints.load(ckpts / "score.json")
    ck.net.requires_grad_(False)
    images = synthetic_images(4, SHAPE, generator=torch.Generator().manual_seed(6)).images
    gen = torch.Generator().manual_seed(5)
    bpd = torch.cat([bits_per_dim(ck.score_fn(), ck.sde, images[i:i + 2], generator=gen, divergence="hutchinson", t0=0.05,
                                  rtol=1e-3, atol=1e-3).bpd for i in (0, 2)])
    assert summary["bpd_mean"] == pytest.approx(bpd.mean().item(), rel=1e-12)
    assert summary["bpd_se"] == pytest.approx(bpd.std().item() / 4**0.5, rel=1e-9)


def test_likelihood_refuses_a_classifier(ckpts):
    with pytest.raises(SystemExit, match="sdelab likelihood: error: .*classifier"):
        main(["likelihood", str(ckpts / "clf.json"), "--n", "2"])


def test_evaluate_saved_samples_matches_the_metrics(ckpts, tmp_path):
    samples = torch.rand(20, *SHAPE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.save(samples, tmp_path / "s.pt")
    out = tmp_path / "ev.json"
    assert main(["evaluate", str(ckpts / "score.json"), "--classifier", str(ckpts / "clf.json"),
                 "--samples", str(tmp_path / "s.pt"), "--n", "20", "--n-real", "30", "--splits", "2",
                 "--seed", "3", "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert (s["num_generated"], s["num_real"], s["is_splits"]) == (20, 30, 2)
    clf = checkpoints.load(ckpts / "clf.json", kind="classifier")
    feats, probs = metrics.classifier_functions(clf.net)
    real = synthetic_images(30, SHAPE, generator=torch.Generator().manual_seed(4)).images
    fd = metrics.compute_fd(feats, real, samples, num_samples=20, num_real=30)
    is_ = metrics.compute_is(probs, samples, num_samples=20, splits=2)
    assert s["fd"] == pytest.approx(fd.fd, rel=1e-9) and s["is_mean"] == pytest.approx(is_.mean, rel=1e-9)
    assert 1 <= s["is_mean"] <= 4  # IS lies between 1 and the number of classes


def test_evaluate_generates_with_a_sampler(ckpts, tmp_path):
    assert main(["evaluate", str(ckpts / "score.json"), "--classifier", str(ckpts / "clf.json"),
                 "--sampler", "euler_maruyama", "--steps", "3", "--n", "6", "--batch", "4", "--splits", "2",
                 "--save-samples", str(tmp_path / "gen.pt"), "--json", str(tmp_path / "ev.json")]) == 0
    gen = torch.load(tmp_path / "gen.pt", weights_only=True)
    assert gen.shape == (6, *SHAPE) and gen.abs().max() <= 1
    s = json.loads((tmp_path / "ev.json").read_text())
    assert s["fd"] >= 0 and s["nfe"] == 4  # 3 steps and the final Tweedie step


def test_evaluate_with_inception_features_is_clear_when_unavailable(ckpts, monkeypatch):
    def unavailable(device=None):
        raise metrics.ExtractorUnavailable("pip install \"sdelab[fid]\"")

    monkeypatch.setattr(metrics, "inception_features", unavailable)
    with pytest.raises(SystemExit, match=r"sdelab\[fid\]"):
        main(["evaluate", str(ckpts / "score.json"), "--classifier", str(ckpts / "clf.json"), "--features",
              "inception", "--n", "4", "--splits", "2"])
