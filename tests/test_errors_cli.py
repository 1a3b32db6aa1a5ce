"""Issue 18, the command line: every bad argument fails with one clear line naming the option,
BEFORE any sampling, solving or training starts (the expensive parts are replaced by tripwires)."""

import json
import os

import pytest
import torch

from sdelab import checkpoints, make_sde
from sdelab import data as D
from sdelab.cli import main
from sdelab.nets import FeatureClassifier, ScoreNet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    torch.manual_seed(0)
    data = {"name": "synthetic", "split": "train"}
    checkpoints.save(d / "score", ScoreNet(in_channels=1, image_size=8, channels=4, ch_mult=(1, 2)), kind="score",
                     sde=make_sde("vp-linear"), data=data)
    checkpoints.save(d / "cond", ScoreNet(in_channels=1, image_size=8, channels=4, ch_mult=(1, 2), num_classes=3),
                     kind="score", sde=make_sde("vp-linear"), data=data)
    checkpoints.save(d / "clf", FeatureClassifier(in_channels=1, num_classes=4, width=1, depth=1),
                     kind="classifier", data=data)
    return d


@pytest.fixture
def tripwires(monkeypatch):
    """Fail the test if sampling, a likelihood solve, the metrics or training start."""
    from sdelab import generate, likelihood, metrics, train

    def boom(*a, **k):
        raise AssertionError("expensive work started before the arguments were checked")

    for mod, name in ((generate, "sample_from_checkpoint"), (likelihood, "bits_per_dim"),
                      (metrics, "compute_fd"), (train, "train")):
        monkeypatch.setattr(mod, name, boom)


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder the checks see as read-only (patched os.access: root ignores permission bits)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(ro)) else real(p, mode))
    return ro


def _sample(ckpts, *args):
    return ["sample", str(ckpts / "score.json"), "--n", "2", "--steps", "2", *args]


def _evaluate(ckpts, *args):
    return ["evaluate", str(ckpts / "score.json"), "--classifier", str(ckpts / "clf.json"), "--n", "4",
            "--splits", "2", "--steps", "2", *args]


@pytest.mark.parametrize("make_args, match", [
    (lambda c, t, ro: _sample(c, "--out", str(t / "noext")), "--out must end in .png or .jpg or .jpeg"),
    (lambda c, t, ro: _sample(c, "--out", str(t) + "/"), "--out must name a file"),
    (lambda c, t, ro: _sample(c, "--out", str(ro / "a.png")), "--out: cannot write .* not writable"),
    (lambda c, t, ro: _sample(c, "--out", str(t / "a.png"), "--n", "0"), "--n must be an integer >= 1, got 0"),
    (lambda c, t, ro: _sample(c, "--out", str(t / "a.png"), "--batch", "-1"), "--batch must be an integer >= 1"),
    (lambda c, t, ro: _sample(c, "--out", str(t / "a.png"), "--steps", "1000000000"),
     "--steps must be an integer >= 1 and <= 100000, got 1000000000"),
    (lambda c, t, ro: _sample(c, "--out", str(t / "a.png"), "--nrow", "0"), "--nrow must be an integer >= 1"),
    (lambda c, t, ro: _evaluate(c, "--splits", "0"), "--splits must be an integer >= 1 and <= 4, got 0"),
    (lambda c, t, ro: _evaluate(c, "--n", "1"), "--n must be an integer >= 2"),
    (lambda c, t, ro: _evaluate(c, "--real-stats", str(t / "missing.npz")), "--real-stats: no such file"),
    (lambda c, t, ro: _evaluate(c, "--json", str(ro / "ev.json")), "--json: cannot write"),
    (lambda c, t, ro: _evaluate(c, "--save-samples", str(t / "gen.png")), "--save-samples must end in .pt"),
    (lambda c, t, ro: ["likelihood", str(c / "score.json"), "--n", "0"], "--n must be an integer >= 1"),
    (lambda c, t, ro: ["likelihood", str(c / "score.json"), "--rtol", "0"], "--rtol must be a finite number > 0"),
    (lambda c, t, ro: ["likelihood", str(c / "score.json"), "--rtol", "nan"], "--rtol must be a finite number"),
    (lambda c, t, ro: ["likelihood", str(c / "score.json"), "--t0", "1.5"], "--t0 must be a finite number"),
    (lambda c, t, ro: ["likelihood", str(c / "score.json"), "--json", str(ro / "b.json")], "--json: cannot write"),
    (lambda c, t, ro: ["likelihood", str(c / "score.json"), "--threads", "0"], "--threads must be an integer >= 1"),
])
def test_bad_arguments_fail_before_any_work(ckpts, tmp_path, read_only, tripwires, make_args, match):
    with pytest.raises(SystemExit, match=match):
        main(make_args(ckpts, tmp_path, read_only))


def test_unknown_sampler_is_refused_by_the_parser(ckpts, capsys):
    with pytest.raises(SystemExit) as info:
        main(_sample(ckpts, "--sampler", "time_grid"))
    assert info.value.code == 2 and "invalid choice: 'time_grid'" in capsys.readouterr().err


@pytest.mark.parametrize("label, match", [
    ("3", "label must be an integer >= 0 and <= 2, got 3"),
    ("-1", "label must be an integer >= 0 and <= 2, got -1"),
])
def test_label_out_of_range_is_refused(ckpts, tmp_path, label, match, monkeypatch):
    from sdelab import samplers

    def never(*a, **k):
        raise AssertionError("sampled")

    monkeypatch.setitem(samplers.SAMPLERS, "euler_maruyama", never)
    with pytest.raises(SystemExit, match=match):
        main(["sample", str(ckpts / "cond.json"), "--out", str(tmp_path / "a.png"), "--n", "2", "--label", label])
    with pytest.raises(SystemExit, match="needs a class-conditional checkpoint"):
        main(_sample(ckpts, "--out", str(tmp_path / "a.png"), "--label", "1"))


def test_evaluate_n_beyond_the_data_set_fails_before_sampling(ckpts, tripwires, monkeypatch):
    small = D.ImageData(torch.zeros(10, 1, 8, 8, dtype=torch.uint8), torch.zeros(10, dtype=torch.long),
                        "fashion-mnist", "test", "unit test", False, None)
    monkeypatch.setattr(D, "load_dataset", lambda name, split: small)
    with pytest.raises(SystemExit, match="--n 11 but fashion-mnist/test has only 10 images"):
        main(_evaluate(ckpts, "--n", "11", "--data", "fashion-mnist"))


@pytest.mark.parametrize("samples, match", [
    (torch.rand(4, 1, 8, 8), r"every value lies in \[0, 1\]"),
    (torch.rand(4, 1, 8, 8) * 255, r"--samples must lie in \[-1, 1\], got values in"),
    (torch.full((4, 1, 8, 8), float("nan")), "NaN"),
    ({"not": "a tensor"}, "must hold a tensor"),
])
def test_evaluate_refuses_samples_in_the_wrong_range(ckpts, tmp_path, samples, match):
    torch.save(samples, tmp_path / "s.pt")
    with pytest.raises(SystemExit, match=match):
        main(_evaluate(ckpts, "--samples", str(tmp_path / "s.pt")))


def _train(tmp_path, *extra, cfg=None):
    base = {"data": "synthetic", "limit": 16, "channels": 4, "ch_mult": "1,2", "steps": 2, "batch_size": 8,
            "progress": False, "threads": 1}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({**base, **(cfg or {})}))
    return ["train", "--config", str(path), "--run-dir", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize("extra, cfg, match", [
    (["--grad-clip", "-1"], None, "grad_clip must be a finite number >= 0, got -1"),
    (["--limit", "-5"], None, "--limit must be an integer >= 1, got -5"),
    (["--limit", "0"], None, "--limit must be an integer >= 1, got 0"),
    (["--eval-n", "0"], None, "--eval-n must be an integer >= 1, got 0"),
    (["--log-every", "0"], None, "log_every must be an integer >= 1, got 0"),
    (["--lr", "nan"], None, "lr must be a finite number > 0"),
    (["--p-uncond", "1.5"], None, "--p-uncond must be a finite number >= 0 and <= 1"),
    (["--sde", "vp-linear", "--beta-max", "nan"], None, "beta_max must be a finite number > 0, got nan"),
    (["--sde", "vpp"], None, "unknown SDE name 'vpp'"),
    (["--ch-mult", "1,x"], None, "--ch-mult must be comma-separated integers"),
    ([], {"steps": "100"}, r"steps must be an integer >= 1, got '100' \(str\)"),
    ([], {"lr": "1e-3"}, r"lr must be a real number, got '1e-3' \(str\)"),
    ([], {"limit": 2.5}, "--limit must be an integer"),
])
def test_bad_training_options_fail_before_building_anything(tmp_path, tripwires, monkeypatch, extra, cfg, match):
    def no_data(*a, **k):
        raise AssertionError("data loaded before the options were checked")

    monkeypatch.setattr("sdelab.cli._data_tensors", no_data)
    with pytest.raises(SystemExit, match=match):
        main(_train(tmp_path, *extra, cfg=cfg))


def test_train_export_to_a_read_only_place_fails_before_training(tmp_path, read_only, tripwires):
    with pytest.raises(SystemExit, match="--export: cannot write .* not writable"):
        main(_train(tmp_path, "--export", str(read_only / "ck")))


def test_invalid_config_json_names_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"steps": 3,')
    with pytest.raises(SystemExit, match=r"--config .*broken\.json is not valid JSON"):
        main(["train", "--config", str(bad)])
    with pytest.raises(SystemExit, match="--config: no such file"):
        main(["train", "--config", str(tmp_path / "nope.json")])


def test_train_without_run_dir_says_where_it_saves(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [a for a in _train(tmp_path) if a not in ("--run-dir", str(tmp_path / "run"))]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "no --run-dir given; the resumable state goes to runs/train-" in err
    run = next((tmp_path / "runs").iterdir())
    assert (run / "state.pt").exists() and run.name in err


def test_a_diverging_training_exits_non_zero_and_exports_nothing(tmp_path, monkeypatch):
    from sdelab import losses

    real_call = losses.DSMObjective.__call__
    monkeypatch.setattr(losses.DSMObjective, "__call__", lambda self, *a: real_call(self, *a) * float("nan"))
    with pytest.raises(SystemExit, match="sdelab train: error: the loss became nan at step 1"):
        main(_train(tmp_path, "--export", str(tmp_path / "ck")))
    assert not (tmp_path / "ck.json").exists() and not (tmp_path / "ck.safetensors").exists()


def test_a_score_of_the_wrong_shape_is_caught_by_one_probe(ckpts, tmp_path, monkeypatch):
    from sdelab import samplers
    from sdelab.checkpoints import Checkpoint

    calls = []
    monkeypatch.setitem(samplers.SAMPLERS, "euler_maruyama", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(Checkpoint, "score_fn", lambda self, **c: (lambda x, t: x[:, :1, :4]))
    with pytest.raises(SystemExit, match=r"the checkpoint's score\(x, t\) must return a tensor shaped like x, "
                                         r"\(2, 1, 8, 8\); got \(2, 1, 4, 8\)"):
        main(_sample(ckpts, "--out", str(tmp_path / "a.png")))
    assert not calls
