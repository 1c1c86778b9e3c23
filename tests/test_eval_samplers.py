"""``python -m arraygen eval-samplers``: end to end on a tiny run, settings from flags and
environment, the CHECKPOINT protocols (``module:function`` and a torch checkpoint), the PSNR
metric against the built-in exact model, and bad values."""

from __future__ import annotations

import argparse
import textwrap

import numpy as np
import pytest

from arraygen.cli import main
from arraygen.commands import eval_samplers as E


def _args(**kw):
    ns = argparse.Namespace(**{env.lower(): None for env in E.DEFAULTS}, seed=0)
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_end_to_end_writes_the_three_outputs(tmp_path, capsys):
    import matplotlib.image as mpimg

    out = tmp_path / "run"
    rc = main(["eval-samplers", "--save-dir", str(out), "--resolutions", "8,12",
               "--samplers", "ddim,heun,fastsbot:draft", "--num-samples", "4",
               "--num-steps", "6"])
    assert rc == 0
    text = (out / "metrics_comparison.txt").read_text()
    rows = [line.split() for line in text.splitlines() if line[:4].strip().isdigit()]
    assert [(r[0], r[1]) for r in rows] == [(res, s) for res in ("8", "12")
                                            for s in ("ddim", "heun", "fastsbot:draft")]
    nfe = {r[1]: int(r[2]) for r in rows}
    assert nfe == {"ddim": 6, "heun": 5, "fastsbot:draft": 6}
    assert all(r[5] == "n/a" for r in rows if r[0] == "8")      # SSIM needs >= 11 px
    assert all(0.0 <= float(r[5]) <= 1.0 for r in rows if r[0] == "12")
    for name in ("multiscale_comparison.png", "metrics_bars.png"):
        img = mpimg.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert "wrote" in capsys.readouterr().out


def test_env_vars_are_read_and_flags_override_them(tmp_path):
    env = {"RESOLUTIONS": "8, 16,32", "SAMPLERS": "ddim,fastsbot:ultra", "NUM_SAMPLES": "5",
           "NUM_STEPS": "7", "TEMPERATURE": "0.8", "ETA": "0.5", "SAVE_DIR": str(tmp_path),
           "DEVICE": "torch:cpu", "CHECKPOINT": ""}
    s = E.parse_settings(_args(), env)
    assert s.resolutions == [8, 16, 32] and s.samplers == ["ddim", "fastsbot:ultra"]
    assert (s.num_samples, s.num_steps, s.temperature, s.eta) == (5, 7, 0.8, 0.5)
    assert s.device == "torch:cpu" and s.checkpoint is None and s.save_dir == tmp_path
    s = E.parse_settings(_args(resolutions="12", num_steps="3", device="cpu"), env)
    assert s.resolutions == [12] and s.num_steps == 3 and s.device == "cpu"
    d = E.parse_settings(_args(), {})
    assert d.resolutions == [8, 16] and d.num_steps == 20 and d.temperature is None
    assert d.samplers == ["ddim", "euler", "dpmpp_2m", "sde", "fastsbot"]


@pytest.mark.parametrize("field, value, match", [
    ("samplers", "ddim,warp", "unknown sampler 'warp'"),
    ("samplers", "fastsbot:turbo", "unknown FastSB-OT preset 'turbo'"),
    ("samplers", "ddim:fast", "unknown sampler 'ddim:fast'"),
    ("resolutions", "8,x", "`RESOLUTIONS` must be comma-separated positive integers"),
    ("resolutions", "8.5", "`RESOLUTIONS`"),
    ("resolutions", "0", "`RESOLUTIONS`"),
    ("num_samples", "0", "`NUM_SAMPLES`"),
    ("num_steps", "ten", "`NUM_STEPS` must be an integer"),
    ("eta", "-1", "`ETA`"),
    ("temperature", "nan", "`TEMPERATURE`"),
    ("device", "tpu", "`DEVICE`"),
])
def test_bad_values_raise(field, value, match):
    with pytest.raises(ValueError, match=match):
        E.parse_settings(_args(**{field: value}), {})


def test_bad_values_from_env_raise():
    with pytest.raises(ValueError, match="`RESOLUTIONS`"):
        E.parse_settings(_args(), {"RESOLUTIONS": "16,abc"})
    with pytest.raises(ValueError, match="unknown sampler"):
        E.parse_settings(_args(), {"SAMPLERS": "ddim,,nope"})


def test_checkpoint_module_function_protocol(tmp_path, monkeypatch):
    (tmp_path / "my_ckpt_mod.py").write_text(textwrap.dedent("""
        import numpy as np
        from arraygen.bridge import EmpiricalScore
        from arraygen.schedules import make_schedule

        CALLS = []

        def build(resolution, device):
            CALLS.append((resolution, device))
            rng = np.random.default_rng(resolution)
            data = np.sign(rng.normal(size=(12, 2, resolution, resolution)))
            sch = make_schedule("cosine")
            model = EmpiricalScore(data, sch, backend="array_api")
            return model.eps, "epsilon", {"shape": (2, resolution, resolution), "data": data,
                                          "schedule": sch}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    s = E.parse_settings(_args(checkpoint="my_ckpt_mod:build", resolutions="6,11",
                               samplers="ddim,dpmpp_2m,fastsbot", num_samples="4",
                               num_steps="20", save_dir=str(tmp_path / "o")), {})
    result = E.evaluate(s)
    import my_ckpt_mod

    assert my_ckpt_mod.CALLS == [(6, "cpu"), (11, "cpu")]
    assert result["samples"][("ddim", 11)].shape == (4, 2, 11, 11)
    # an exact model and 20 evaluations reproduce training images: high PSNR, SSIM near 1
    for row in result["rows"]:
        assert row["psnr"] > 30.0, row
        if row["resolution"] == 11:
            assert row["ssim"] > 0.9, row


def test_psnr_to_nearest_measures_sampler_accuracy(tmp_path):
    s = E.parse_settings(_args(resolutions="8", samplers="ddim", num_samples="8",
                               save_dir=str(tmp_path)), {})
    good = E.evaluate(s)["rows"][0]
    s.num_steps = 1   # one DDIM step returns the posterior mean at t = 1: the data mean
    bad = E.evaluate(s)["rows"][0]
    assert good["psnr"] > 40.0 and good["rmse"] < 0.05
    assert bad["psnr"] < 15.0 and bad["rmse"] > 0.3


def test_bad_checkpoints_and_mismatched_samplers(tmp_path):
    with pytest.raises(ValueError, match="`CHECKPOINT`"):
        E.load_model(str(tmp_path / "missing.pt"), 8, "cpu")
    with pytest.raises(ValueError, match="cannot load"):
        E.load_model("no_such_module_xyz:build", 8, "cpu")
    s = E.parse_settings(_args(resolutions="8", samplers="flow_heun", num_samples="2",
                               num_steps="2", save_dir=str(tmp_path)), {})
    with pytest.raises(ValueError, match="does not apply to a VP diffusion model"):
        E.evaluate(s)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_checkpoint(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.prediction = "score"
            self.in_channels = 3

        def forward(self, x, t):
            return -x * torch.ones_like(t)[:, None, None, None]

    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(Net()), str(path))
    lm = E.load_model(str(path), 5, "cpu")
    assert lm.prediction == "score" and lm.shape == (3, 5, 5) and lm.data is None
    s = E.parse_settings(_args(checkpoint=str(path), resolutions="5", samplers="ddim,sde",
                               num_samples="3", num_steps="4", save_dir=str(tmp_path)), {})
    rows = E.evaluate(s)["rows"]
    assert [r["nfe"] for r in rows] == [4, 4]
    assert all(r["psnr"] is None for r in rows)
    table = E.format_table(s, rows)
    assert "n/a" in table

    (tmp_path / "my_net_mod.py").write_text(textwrap.dedent("""
        import torch

        class Eps(torch.nn.Module):
            prediction = "epsilon"
            sample_shape = (1, 4, 4)

            def forward(self, x, t):
                return x * torch.sqrt(1.0 - torch.exp(-10.0 * t))[:, None, None, None]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_net_mod

    pickled = tmp_path / "eps.pt"
    torch.save(my_net_mod.Eps(), str(pickled))
    lm = E.load_model(str(pickled), 9, "cpu")
    assert lm.prediction == "epsilon" and lm.shape == (1, 4, 4)
    x = torch.ones((2, 1, 4, 4))
    assert torch.allclose(lm.model(x, 1.0), x * (1.0 - np.exp(-10.0)) ** 0.5)
