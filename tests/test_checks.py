"""The shared argument checks: right type -> value back, wrong type -> TypeError, bad value ->
ValueError, and every message names the argument and what it got."""

import math
import os

import numpy as np
import pytest
import torch

from sdelab import checks
from sdelab.sde import make_sde


@pytest.mark.parametrize("value, kwargs, expected", [
    (3, {}, 3), (np.int64(4), {"minimum": 1}, 4), (0, {"minimum": 0}, 0), (5, {"maximum": 5}, 5),
])
def test_integer_accepts(value, kwargs, expected):
    out = checks.integer(value, "steps", **kwargs)
    assert out == expected and type(out) is int


@pytest.mark.parametrize("value, kwargs, exc", [
    (2.0, {}, TypeError), ("2", {}, TypeError), (True, {}, TypeError), (None, {}, TypeError),
    (0, {"minimum": 1}, ValueError), (-5, {"minimum": 0}, ValueError), (11, {"maximum": 10}, ValueError),
])
def test_integer_refuses(value, kwargs, exc):
    with pytest.raises(exc, match="steps must be an integer") as info:
        checks.integer(value, "steps", **kwargs)
    assert repr(value) in str(info.value) or str(value) in str(info.value)


@pytest.mark.parametrize("value, kwargs, expected", [
    (0.5, {}, 0.5), (2, {"positive": True}, 2.0), (0, {"nonnegative": True}, 0.0),
    (torch.tensor(0.25), {}, 0.25), (np.float32(1.5), {"lo": 1, "hi": 2}, 1.5),
    (float("inf"), {"finite": False}, math.inf),
])
def test_real_accepts(value, kwargs, expected):
    out = checks.real(value, "snr", **kwargs)
    assert out == expected and type(out) is float


@pytest.mark.parametrize("value, kwargs, exc", [
    ("0.5", {}, TypeError), (True, {}, TypeError), ([1.0], {}, TypeError), (1j, {}, TypeError),
    (float("nan"), {}, ValueError), (float("nan"), {"finite": False}, ValueError),
    (float("inf"), {}, ValueError), (-math.inf, {}, ValueError),
    (0.0, {"positive": True}, ValueError), (-1e-9, {"nonnegative": True}, ValueError),
    (3.0, {"hi": 2.0}, ValueError), (1.0, {"lo": 1.0, "lo_open": True}, ValueError),
    (2.0, {"hi": 2.0, "hi_open": True}, ValueError),
])
def test_real_refuses(value, kwargs, exc):
    with pytest.raises(exc, match="^snr must be"):
        checks.real(value, "snr", **kwargs)


def test_real_message_says_what_is_allowed():
    with pytest.raises(ValueError, match=r"snr must be a finite number > 0, got -1"):
        checks.real(-1, "snr", positive=True)
    with pytest.raises(TypeError, match=r"got '0\.1' \(str\)"):
        checks.real("0.1", "snr")


def test_boolean():
    assert checks.boolean(True, "denoise") is True
    assert checks.boolean(np.bool_(False), "denoise") is False
    for bad in (1, "yes", None):
        with pytest.raises(TypeError, match="denoise must be True or False"):
            checks.boolean(bad, "denoise")


def test_choice():
    assert checks.choice("rk45", "sampler", ("em", "rk45")) == "rk45"
    with pytest.raises(ValueError, match=r"sampler must be one of 'em', 'rk45'; got 'time_grid'"):
        checks.choice("time_grid", "sampler", ("em", "rk45"))
    with pytest.raises(TypeError, match="sampler must be one of"):
        checks.choice(3, "sampler", ("em", "rk45"))
    assert checks.choice(2, "order", (1, 2)) == 2
    with pytest.raises(ValueError, match="order must be one of 1, 2; got 3"):
        checks.choice(3, "order", (1, 2))
    with pytest.raises(ValueError, match="order must be one of"):
        checks.choice([1], "order", (1, 2))


def test_callable():
    f = lambda x, t: x  # noqa: E731
    assert checks.callable_(f, "score_fn") is f
    with pytest.raises(TypeError, match=r"score_fn must be callable as score_fn\(x, t\), got 3"):
        checks.callable_(3, "score_fn", "score_fn(x, t)")


def test_generator_from_seed_matches_manual_seed():
    g = checks.generator(7, like=torch.zeros(2))
    assert isinstance(g, torch.Generator) and g.device.type == "cpu"
    ref = torch.Generator().manual_seed(7)
    assert torch.equal(torch.randn(5, generator=g), torch.randn(5, generator=ref))
    assert checks.generator(None) is None
    given = torch.Generator()
    assert checks.generator(given, like=torch.zeros(1)) is given
    assert checks.generator(np.int64(3)).initial_seed() == 3


@pytest.mark.parametrize("value, exc", [(-1, ValueError), (1.5, TypeError), ("0", TypeError),
                                        (True, TypeError)])
def test_generator_refuses(value, exc):
    with pytest.raises(exc, match="generator"):
        checks.generator(value)


def test_generator_on_other_device_refused():
    meta = torch.zeros(2, device="meta")
    with pytest.raises(ValueError, match="generator is on cpu but the tensors are on meta"):
        checks.generator(torch.Generator(), like=meta)


def test_tensor():
    x = torch.zeros(3, 2)
    assert checks.tensor(x, "x", ndim=2, shape=(None, 2), floating=True) is x
    cases = [
        ([1.0], {}, TypeError, "x must be a torch.Tensor, got list"),
        (torch.zeros(3, dtype=torch.long), {"floating": True}, TypeError, "floating-point"),
        (x, {"ndim": 3}, ValueError, r"3 dimension\(s\), got shape \(3, 2\)"),
        (x, {"min_ndim": 3}, ValueError, "at least 3"),
        (x, {"shape": (3, 4)}, ValueError, r"shape \(3, 4\), got \(3, 2\)"),
        (torch.zeros(0, 2), {}, ValueError, "must not be empty"),
        (torch.tensor([1.0, float("nan"), float("inf")]), {}, ValueError, "contains 2 NaN or infinite"),
    ]
    for value, kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            checks.tensor(value, "x", **kwargs)
    assert checks.tensor(torch.tensor([float("nan")]), "x", finite=False).isnan().all()


def test_finite_and_in_range():
    with pytest.raises(ValueError, match="z contains 1 NaN"):
        checks.finite(torch.tensor([0.0, float("nan")]), "z")
    checks.finite(torch.tensor([1, 2]), "z")  # integer tensors are finite
    x = torch.tensor([0.0, 255.0])
    with pytest.raises(ValueError, match=r"samples must lie in \[-1, 1\], got values in \[0, 255\]; scale"):
        checks.in_range(x, "samples", -1, 1, hint="scale images to [-1, 1]")
    assert checks.in_range(x / 255, "samples", 0, 1) is not None


def test_time():
    assert checks.time(0.5, "t", 1e-3, 1.0) == 0.5
    assert checks.time(torch.tensor([1.0 + 1e-12]), "t", 1e-3, 1.0) == 1.0  # slack, then clipped
    with pytest.raises(ValueError, match=r"t must lie in \[0.001, 1\], got 0.0"):
        checks.time(0.0, "t", 1e-3, 1.0)
    with pytest.raises(ValueError, match="one time for the whole batch"):
        checks.time(torch.ones(2), "t", 0, 1)
    with pytest.raises(TypeError, match="t must be a real number"):
        checks.time("1", "t", 0, 1)
    with pytest.raises(ValueError, match="t must be"):
        checks.time(float("nan"), "t", 0, 1)


def test_time_in_range():
    t = torch.tensor([0.1, 1.0])
    assert checks.time_in_range(t, "t", 0.0, 1.0) is t
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]; got values in \[0.1, 2\]"):
        checks.time_in_range(torch.tensor([0.1, 2.0]), "t", 0.0, 1.0)
    with pytest.raises(ValueError, match="t contains NaN"):
        checks.time_in_range(torch.tensor([float("nan")]), "t", 0.0, 1.0)


def test_same_shape_and_score_output():
    x = torch.zeros(4, 2)
    checks.same_shape(x, torch.ones(4, 2), "a", "b")
    with pytest.raises(ValueError, match=r"mask of shape \(4, 1\) must have the shape of x, \(4, 2\)"):
        checks.same_shape(torch.zeros(4, 1), x, "mask", "x")
    assert checks.score_output(torch.ones(4, 2), x) is not None
    with pytest.raises(ValueError, match=r"score_fn\(x, t\) must return a tensor shaped like x, \(4, 2\); got \(4, 1\)"):
        checks.score_output(torch.ones(4, 1), x)
    with pytest.raises(ValueError, match=r"score_fn\(x, t\) contains 8 NaN"):
        checks.score_output(torch.full((4, 2), float("nan")), x)
    with pytest.raises(TypeError, match="must return a torch.Tensor"):
        checks.score_output(np.ones((4, 2)), x)


def test_sde():
    sde = make_sde("ve")
    assert checks.sde(sde) is sde
    with pytest.raises(TypeError, match=r"sde must be an sdelab SDE .*got str"):
        checks.sde("ve")


def test_output_path(tmp_path):
    assert checks.output_path(tmp_path / "a.png", "--out", suffixes=(".png",)) == str(tmp_path / "a.png")
    assert checks.output_path(tmp_path / "new" / "deeper" / "a.pt", "--out")  # creatable folder
    with pytest.raises(ValueError, match="must end in .png or .pt"):
        checks.output_path(tmp_path / "noext", "--out", suffixes=(".png", ".pt"))
    with pytest.raises(ValueError, match="must name a file"):
        checks.output_path(str(tmp_path) + "/", "--out")
    with pytest.raises(ValueError, match="must name a file"):
        checks.output_path(tmp_path, "--out")
    with pytest.raises(TypeError, match="--out must be a file path"):
        checks.output_path(3, "--out")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        checks.output_path(blocker / "a.png", "--out")


def test_output_path_read_only(tmp_path, monkeypatch):
    # os.access is what the check asks; patched so that the test also holds when run as root
    ro = str(tmp_path / "ro")
    os.mkdir(ro)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == ro else real_access(p, mode))
    with pytest.raises(ValueError, match="not writable"):
        checks.output_path(os.path.join(ro, "a.png"), "--out")


def test_input_file(tmp_path):
    f = tmp_path / "stats.npz"
    f.write_bytes(b"x")
    assert checks.input_file(f, "--real-stats") == str(f)
    with pytest.raises(ValueError, match="--real-stats: no such file"):
        checks.input_file(tmp_path / "missing.npz", "--real-stats")
