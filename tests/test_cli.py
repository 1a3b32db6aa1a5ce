"""The `sdelab` command: help texts, a tiny train + export + resume, and sampling to a PNG."""

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from sdelab import checkpoints, make_sde
from sdelab.cli import TRAIN_DEFAULTS, build_parser, main


def _subparser(name):
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[name]


@pytest.mark.parametrize("name", ["train", "sample"])
def test_every_option_is_explained(name):
    sub = _subparser(name)
    for action in sub._actions:
        if action.dest == "help":
            continue
        assert action.help and len(action.help) > 10, action.dest
    text = sub.format_help()
    for action in sub._actions:
        for opt in action.option_strings:
            assert opt in text


def test_every_train_option_is_settable_from_a_config_file():
    flags = {a.dest for a in _subparser("train")._actions} - {"help", "config"}
    assert flags <= set(TRAIN_DEFAULTS), flags - set(TRAIN_DEFAULTS)


def test_console_script_help():
    exe = Path(sys.executable).with_name("sdelab")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sdelab.cli"]
    out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "train" in out.stdout and "sample" in out.stdout


def _train_args(tmp_path, *extra):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"data": "synthetic", "limit": 32, "net": "scorenet", "channels": 4, "ch_mult": "1,2",
                               "steps": 4, "batch_size": 8, "progress": False, "threads": 1}))
    return ["train", "--config", str(cfg), "--sde", "ve", "--run-dir", str(tmp_path / "run"),
            "--export", str(tmp_path / "ck"), *extra]


def test_tiny_train_exports_a_loadable_checkpoint_and_resumes(tmp_path, capsys):
    assert main(_train_args(tmp_path)) == 0
    ck = checkpoints.load(tmp_path / "ck.json", kind="score", sde="ve")
    card = ck.card
    assert card["steps"] == 4 and card["training"]["batch_size"] == 8 and card["data"]["name"] == "synthetic"
    assert card["net"]["in_channels"] == 3 and card["net"]["image_size"] == 32
    assert card["command"].startswith("sdelab train --config")
    # the same command again finds the finished state and does not train again
    before = (tmp_path / "run" / "log.txt").read_text()
    assert main(_train_args(tmp_path)) == 0
    assert (tmp_path / "run" / "log.txt").read_text() == before
    assert checkpoints.load(tmp_path / "ck.json").card["final_loss"] == card["final_loss"]
    # changing the run's configuration (here the length, which shapes the cosine schedule) is refused
    with pytest.raises(SystemExit, match="sdelab train: error: .*different configuration"):
        main(_train_args(tmp_path, "--steps", "6"))


def test_config_file_with_unknown_keys_is_refused(tmp_path):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(SystemExit, match="stepz"):
        main(["train", "--config", str(cfg)])


def test_sample_writes_a_png_grid(tmp_path, monkeypatch):
    from sdelab import samplers

    main(_train_args(tmp_path))
    calls = {}

    def fake_em(score_fn, sde, x_T, *, steps, generator=None, final_denoise=False, t_end=None):
        calls["steps"], calls["denoise"], calls["t_end"] = steps, final_denoise, t_end
        with torch.no_grad():
            s = score_fn(x_T, sde.T)
        return types.SimpleNamespace(x=(x_T + s).clamp(-1, 1), nfe=1)

    monkeypatch.setitem(samplers.SAMPLERS, "euler_maruyama", fake_em)
    out = tmp_path / "grid.png"
    assert main(["sample", str(tmp_path / "ck.json"), "--out", str(out), "--n", "5", "--batch", "2",
                 "--steps", "3"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and calls == {"steps": 3, "denoise": True, "t_end": make_sde("ve").eps}
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    with pytest.raises(SystemExit, match="class-conditional"):
        main(["sample", str(tmp_path / "ck.json"), "--out", str(out), "--label", "1"])


def test_sample_with_the_real_samplers(tmp_path):
    main(_train_args(tmp_path))
    out = tmp_path / "grid.png"
    assert main(["sample", str(tmp_path / "ck.json"), "--out", str(out), "--n", "4", "--steps", "5"]) == 0
    assert out.exists()


def test_learned_end_time_comes_with_its_grid(tmp_path, monkeypatch):
    # sample_from_checkpoint stops at the measured end on the grid it was measured on
    # (LEARNED_GRID), unless a grid is given; an explicit t_end keeps the sampler's own grid
    from sdelab import samplers
    from sdelab.generate import LEARNED_GRID, learned_grid, learned_t_end, sample_from_checkpoint

    main(_train_args(tmp_path))
    seen = []

    def fake_unipc(score_fn, sde, x_T, *, steps, generator=None, final_denoise=False, t_end=None,
                   **kw):
        seen.append((t_end, kw.get("grid"), kw.get("final_jump")))
        return types.SimpleNamespace(x=x_T.clamp(-1, 1), nfe=steps + 1)

    monkeypatch.setitem(samplers.SAMPLERS, "unipc", fake_unipc)
    ck = str(tmp_path / "ck.json")
    sample_from_checkpoint(ck, 2, sampler="unipc", steps=4)
    sample_from_checkpoint(ck, 2, sampler="unipc", steps=4, grid="log_snr", final_jump="auto")
    sample_from_checkpoint(ck, 2, sampler="unipc", steps=4, t_end=0.2)
    t = learned_t_end(make_sde("ve"), "unipc")
    # the learned end comes with its grid and, for UniPC, its final-jump rule (LEARNED_FINAL_JUMP)
    assert seen == [(t, learned_grid(make_sde("ve"), "unipc"), "grid"), (t, "log_snr", "auto"),
                    (0.2, None, None)]
    # measured pairs give their grid, the others the time-uniform grid the end times used
    assert learned_grid(make_sde("vp-cosine"), "dpmpp_2m_sde") == "log_snr"
    assert learned_grid(make_sde("vp-cosine"), "dpmpp_3m_sde") == "log_snr"
    assert learned_grid(make_sde("ve"), "unipc") == "uniform"
    assert learned_grid(make_sde("vp-linear"), "heun") is None  # keeps its own default
    assert {s for s, _ in LEARNED_GRID} <= set(samplers.SAMPLERS)
    assert set(LEARNED_GRID.values()) <= set(samplers.GRIDS)


def test_learned_end_times_are_the_measured_noise_levels():
    # sigma(t)/alpha(t) at the default end time equals END_NOISE's level (half log-SNR inverted);
    # samplers not measured with an early end keep sde.eps
    from sdelab.generate import END_NOISE, learned_t_end

    for (kind, name), level in END_NOISE.items():
        sde = make_sde(name)
        sampler = "dpmpp_2m" if kind == "deterministic" else "dpmpp_2m_sde"
        t = learned_t_end(sde, sampler)
        alpha, sigma = sde.marginal_coeffs(torch.tensor([t], dtype=torch.float64))
        assert abs(float(sigma / alpha) - level) < 1e-6 * level, (kind, name)
    assert learned_t_end(make_sde("vp-linear"), "euler_maruyama") == make_sde("vp-linear").eps
    assert abs(learned_t_end(make_sde("vp-linear"), "dpmpp_2m") - 0.1) < 1e-3  # the measured t
    for name in ("vp-linear", "vp-cosine", "ve"):  # the 3M SDE takes the 2M SDE's end
        sde = make_sde(name)
        assert learned_t_end(sde, "dpmpp_3m_sde") == learned_t_end(sde, "dpmpp_2m_sde") > sde.eps
