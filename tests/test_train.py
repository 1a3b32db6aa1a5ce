"""Trainer: resume gives the identical loss trajectory, DDP equals the single-process step, EMA, schedule."""

import math
import os

import pytest
import torch
import torch.multiprocessing as mp

from sdelab import make_sde
from sdelab.losses import ClassifierObjective, DSMObjective
from sdelab.nets import FeatureClassifier, ScoreNet
from sdelab.train import TrainConfig, _lr_lambda, ema_update, train


@pytest.fixture(autouse=True)
def _one_thread():
    # These networks are tiny: one thread is faster than two and immune to a busy second core.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _tiny_setup(dropout=0.1, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    net = ScoreNet(channels=4, image_size=8, ch_mult=(1, 2), dropout=dropout).to(dtype)
    data = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=dtype) * 2 - 1
    return net, data


def _cfg(**kw):
    base = dict(steps=12, batch_size=8, lr=1e-2, warmup=3, lr_schedule="cosine", ema_decay=0.9, ckpt_every=4,
                log_every=1, progress=False, seed=5)
    base.update(kw)
    return TrainConfig(**base)


class _Crash(RuntimeError):
    pass


def test_killed_run_resumes_with_identical_loss_trajectory(tmp_path):
    sde = make_sde("vp-linear")
    net, data = _tiny_setup()
    straight = train(net, DSMObjective(sde), data, _cfg())

    # Crash at step 6: the last checkpoint is step 4, so steps 5-6 are lost and redone. Epochs of
    # 40 samples in batches of 8 also cross a data-order boundary (step 5) inside the lost part.
    def crash(step, loss, _):
        if step == 6:
            raise _Crash

    net, data = _tiny_setup()
    with pytest.raises(_Crash):
        train(net, DSMObjective(sde), data, _cfg(), run_dir=tmp_path, callback=crash)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]  # atomic saves leave no temporary files
    net, data = _tiny_setup(seed=123)  # different initial weights: the state file must override them
    resumed = train(net, DSMObjective(sde), data, _cfg(), run_dir=tmp_path)
    assert resumed.step == 12 and len(resumed.losses) == 12
    # same operations in the same order on the same machine: bit-for-bit equal, no tolerance
    assert resumed.losses == straight.losses
    for a, b in zip(resumed.net.state_dict().values(), straight.net.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(resumed.ema.state_dict().values(), straight.ema.state_dict().values()):
        assert torch.equal(a, b)


def test_stop_at_then_resume_equals_one_run(tmp_path):
    sde = make_sde("ve")
    net, data = _tiny_setup(dropout=0.0)
    straight = train(net, DSMObjective(sde), data, _cfg(steps=8))
    net, data = _tiny_setup(dropout=0.0)
    first = train(net, DSMObjective(sde), data, _cfg(steps=8), run_dir=tmp_path, stop_at=3)
    assert first.step == 3
    net, data = _tiny_setup(dropout=0.0)
    second = train(net, DSMObjective(sde), data, _cfg(steps=8), run_dir=tmp_path)
    assert second.losses == straight.losses
    assert (tmp_path / "log.txt").read_text().count("step ") == 8
    assert second.wall_time >= first.wall_time


def test_a_run_folder_with_another_configuration_is_refused(tmp_path):
    sde = make_sde("vp-linear")
    net, data = _tiny_setup()
    train(net, DSMObjective(sde), data, _cfg(steps=2), run_dir=tmp_path)
    with pytest.raises(ValueError, match="different configuration"):
        train(net, DSMObjective(sde), data, _cfg(steps=2, lr=5e-3), run_dir=tmp_path)
    train(net, DSMObjective(sde), data, _cfg(steps=2, lr=5e-3), run_dir=tmp_path, resume=False)  # explicit restart


def test_bf16_autocast_trains_and_classifier_objective_runs():
    sde = make_sde("subvp-cosine")
    net, data = _tiny_setup()
    r = train(net, DSMObjective(sde), data, _cfg(steps=3, bf16=True))
    assert all(math.isfinite(v) for v in r.losses)
    torch.manual_seed(0)
    clf = FeatureClassifier(in_channels=1, num_classes=3, width=1, depth=1)
    labels = torch.arange(40) % 3
    r = train(clf, ClassifierObjective(None), (data, labels), _cfg(steps=3))
    assert len(r.losses) == 3 and r.losses[0] == pytest.approx(math.log(3), abs=0.5)


def test_ema_update_and_learning_rate_schedule():
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    a0 = a.weight.detach().clone()
    ema_update(a, b, 0.75)
    torch.testing.assert_close(a.weight, 0.75 * a0 + 0.25 * b.weight.detach())
    f = _lr_lambda(TrainConfig(steps=100, warmup=10, lr_schedule="cosine"))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(math.cos(math.pi * 9 / 100) * 0.5 + 0.5)
    assert f(100) == pytest.approx(0.0, abs=1e-12)
    g = _lr_lambda(TrainConfig(steps=100, warmup=0, lr_schedule="constant"))
    assert g(0) == g(99) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"stepz": 3})


def test_bad_data_is_refused():
    sde = make_sde("vp-linear")
    net, data = _tiny_setup()
    with pytest.raises(TypeError, match="floating point"):
        train(net, DSMObjective(sde), (data * 100).to(torch.uint8), _cfg(steps=1))
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(net, DSMObjective(sde), data[:4], _cfg(steps=1))


# --- DDP: two gloo processes vs one process on the concatenated batch ---------------------------
def _ddp_worker(rank, world, init_file, out_file):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        net, data = _tiny_setup(dropout=0.0, dtype=torch.float64)
        r = train(net, DSMObjective(make_sde("vp-linear")), data, _cfg(steps=2, batch_size=8, grad_clip=0.05))
        if rank == 0:
            torch.save({"state": r.net.state_dict(), "losses": r.losses}, out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_step_equals_single_process_step_on_the_concatenated_batch(tmp_path):
    """Each of 2 processes gets 4 of the 8 samples of a global batch (and the matching noise).

    DDP averages the two per-process mean gradients, which is the gradient of the mean over all 8;
    gradient clipping (active here: grad_clip=0.05) and AdamW then see identical gradients. In
    float64 the only differences are summation orders, ~1e-16 relative per operation; two Adam
    steps divide by sqrt(v) ~ |g| and so keep relative errors at that level: 1e-9 is generous.
    """
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path / "ddp.pt")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    net, data = _tiny_setup(dropout=0.0, dtype=torch.float64)
    single = train(net, DSMObjective(make_sde("vp-linear")), data, _cfg(steps=2, batch_size=8, grad_clip=0.05))
    assert ddp["losses"] == pytest.approx(single.losses, rel=1e-12)
    moved = 0
    for k, v in single.net.state_dict().items():
        torch.testing.assert_close(ddp["state"][k], v, rtol=1e-9, atol=1e-12, msg=k)
        moved += int(not torch.equal(v, _tiny_setup(dropout=0.0, dtype=torch.float64)[0].state_dict()[k]))
    assert moved > 10  # the step really changed the weights


# ---------------------------------------------------------------------------------------------
# Nothing silent, nothing lost (issue 18)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, exc, match", [
    ({"grad_clip": -1.0}, ValueError, "grad_clip must be a finite number >= 0"),
    ({"grad_clip": float("nan")}, ValueError, "grad_clip must be"),
    ({"log_every": 0}, ValueError, "log_every must be an integer >= 1"),
    ({"ckpt_every": 0}, ValueError, "ckpt_every must be an integer >= 1"),
    ({"steps": 0}, ValueError, "steps must be an integer >= 1"),
    ({"steps": "100"}, TypeError, "steps must be an integer"),
    ({"lr": "1e-3"}, TypeError, "lr must be a real number"),
    ({"lr": 0.0}, ValueError, "lr must be a finite number > 0"),
    ({"lr": float("inf")}, ValueError, "lr must be"),
    ({"warmup": -1}, ValueError, "warmup must be an integer >= 0"),
    ({"ema_decay": 1.0}, ValueError, "ema_decay must be"),
    ({"seed": 1.5}, TypeError, "seed must be an integer"),
    ({"bf16": "yes"}, TypeError, "bf16 must be True or False"),
    ({"betas": (0.9,)}, TypeError, "betas must be a pair"),
])
def test_bad_training_options_are_refused_on_construction(kw, exc, match):
    with pytest.raises(exc, match=match):
        _cfg(**kw)


def test_grad_clip_zero_or_none_switches_clipping_off():
    assert _cfg(grad_clip=0).grad_clip is None and _cfg(grad_clip=None).grad_clip is None


class _NanAt:
    """A DSM objective whose loss is NaN from a given step on (a diverging run)."""

    def __init__(self, sde, step):
        self.inner, self.step, self.calls = DSMObjective(sde), step, 0

    def config(self):
        return self.inner.config()

    def draw(self, *a):
        return self.inner.draw(*a)

    def __call__(self, *a):
        self.calls += 1
        loss = self.inner(*a)
        return loss * float("nan") if self.calls >= self.step else loss


def test_a_diverging_run_stops_keeps_the_last_good_state_and_never_saves_nan(tmp_path):
    from sdelab.train import TrainingDiverged

    sde = make_sde("vp-linear")
    net, data = _tiny_setup()
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 7; .*weights of step 6") as info:
        train(net, _NanAt(sde, 7), data, _cfg(), run_dir=tmp_path)
    res = info.value.result
    assert res.step == 6 and len(res.losses) == 6 and all(math.isfinite(v) for v in res.losses)
    assert all(torch.isfinite(v).all() for v in res.net.state_dict().values())
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["step"] == 4  # the last periodic save, untouched
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_ctrl_c_saves_a_resumable_state_and_returns_cleanly(tmp_path):
    import signal

    sde = make_sde("vp-linear")
    net, data = _tiny_setup()
    straight = train(net, DSMObjective(sde), data, _cfg())
    # the handler in force before training (the default one, or SIG_IGN in a background job)
    before = signal.getsignal(signal.SIGINT)

    def interrupt(step, loss, _):
        if step == 6:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would

    net, data = _tiny_setup()
    res = train(net, DSMObjective(sde), data, _cfg(), run_dir=tmp_path, callback=interrupt)
    assert res.interrupted and res.step == 6  # signalled during step 6: it finishes, then stops
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == 6
    assert signal.getsignal(signal.SIGINT) == before  # handler restored
    net, data = _tiny_setup(seed=3)
    resumed = train(net, DSMObjective(sde), data, _cfg(), run_dir=tmp_path)
    assert not resumed.interrupted and resumed.losses == straight.losses


def test_stale_temporaries_in_the_run_folder_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".state.pt.tmp{dead}").write_bytes(b"half")
    net, data = _tiny_setup()
    train(net, DSMObjective(make_sde("ve")), data, _cfg(steps=2), run_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "meta.json", "state.pt"]
