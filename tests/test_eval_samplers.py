"""``python -m arraygen eval-samplers``: end to end on a tiny run, settings from flags and
environment, the CHECKPOINT contract (``module:function`` and torch files, including a small
network TRAINED here and saved with torch), equal evaluations on one grid, the PSNR and MMD
metrics, one-line errors naming CHECKPOINT, and bad values."""

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
    assert nfe["ddim"] == nfe["fastsbot:draft"] == 6 and 4 <= nfe["heun"] <= 6
    assert all(r[5] == "n/a" for r in rows if r[0] == "8")      # SSIM needs >= 11 px
    assert all(0.0 <= float(r[5]) <= 1.0 for r in rows if r[0] == "12")
    for name in ("multiscale_comparison.png", "metrics_bars.png"):
        img = mpimg.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    captured = capsys.readouterr().out
    assert "wrote" in captured
    # the samplers' grids are printed; the single-evaluation sampler uses the shared grid
    assert "time grids" in text and "  8 ddim: sigma" in text and "heun: sigma" in text


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
    assert d.reference is None and d.prediction is None


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
    ("reference", "/no/such/file.npz", "`REFERENCE` must be an existing"),
    ("prediction", "noise", "`PREDICTION` must be one of"),
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
        from arraygen.scores import EmpiricalScore
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


# -- a small trained network saved to a file ------------------------------------------------

TRAINED_SRC = '''
import torch


class TinyEps(torch.nn.Module):
    """An epsilon-prediction MLP on 1 x 4 x 4 images (float32 parameters)."""

    def __init__(self, label: str = "epsilon"):
        super().__init__()
        self.prediction = label
        self.sample_shape = (1, 4, 4)
        self.net = torch.nn.Sequential(torch.nn.Linear(19, 128), torch.nn.SiLU(),
                                       torch.nn.Linear(128, 128), torch.nn.SiLU(),
                                       torch.nn.Linear(128, 16))

    def forward(self, x, t):
        feats = torch.stack([t, torch.sin(3.14159 * t), torch.cos(3.14159 * t)], dim=1)
        h = torch.cat([x.reshape(x.shape[0], 16), feats], dim=1)
        return self.net(h).reshape(x.shape)
'''


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small torch work on a shared 2-core machine: one thread avoids oversubscription."""
    torch = pytest.importorskip("torch")
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_torch_thread):
    """Train TinyEps for 400 steps on the 4 x 4 digits; save scripted (and unlabelled) copies."""
    torch = pytest.importorskip("torch")
    import importlib
    import sys

    from arraygen.schedules import make_schedule

    folder = tmp_path_factory.mktemp("trained")
    (folder / "tiny_eps_mod.py").write_text(TRAINED_SRC)
    sys.path.insert(0, str(folder))
    try:
        mod = importlib.import_module("tiny_eps_mod")
    finally:
        sys.path.remove(str(folder))
    torch.manual_seed(0)
    data = torch.from_numpy(E.builtin_data(4)).float()
    sch = make_schedule("linear")
    net = mod.TinyEps()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(400):
        idx = torch.randint(0, data.shape[0], (128,))
        x0 = data[idx]
        t = torch.rand(128) * 0.999 + 0.001
        ab = torch.as_tensor(sch.alpha_bar(t.double().numpy()), dtype=torch.float32)
        z = torch.randn_like(x0)
        xt = ab.sqrt()[:, None, None, None] * x0 + (1 - ab).sqrt()[:, None, None, None] * z
        loss = ((net(xt, t) - z) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    paths = {"trained": folder / "trained.pt", "untrained": folder / "untrained.pt",
             "unlabelled": folder / "unlabelled.pt", "pickled": folder / "pickled.pt"}
    import warnings

    class NoLabel(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.sample_shape = (1, 4, 4)

        def forward(self, x, t):
            return self.inner(x, t)

    with warnings.catch_warnings():                   # torch.jit is deprecated, still the format
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), str(paths["trained"]))
        torch.manual_seed(1)
        torch.jit.save(torch.jit.script(mod.TinyEps()), str(paths["untrained"]))
        torch.jit.save(torch.jit.script(NoLabel(net)), str(paths["unlabelled"]))
    torch.save(net, str(paths["pickled"]))           # pickled class of tiny_eps_mod
    ref = folder / "reference.npz"
    np.savez(ref, images=E.builtin_data(4)[:, 0])     # (N, H, W): a channel axis is added
    paths["reference"] = ref
    return paths


def _cli(args, tmp_path, capsys):
    rc = main(["eval-samplers", "--save-dir", str(tmp_path / "out"), *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _mmd_rows(text):
    rows = [line.split() for line in text.splitlines() if line[:4].strip().isdigit()]
    return {r[1]: float(r[8]) for r in rows if r[8] != "n/a"}


def test_trained_float32_checkpoint_on_cpu_with_reference(trained, tmp_path, capsys):
    """A trained float32 torch file works under the default --device cpu (inputs in float32),
    and the MMD to the reference ranks the trained network far above an untrained one."""
    common = ["--device", "cpu", "--resolutions", "4", "--samplers", "ddim,dpmpp_2m",
              "--num-samples", "200", "--num-steps", "10", "--reference",
              str(trained["reference"])]
    rc, out, err = _cli(["--checkpoint", str(trained["trained"]), *common], tmp_path, capsys)
    assert rc == 0, err
    good = _mmd_rows(out)
    assert set(good) == {"ddim", "dpmpp_2m"}
    assert "reference data:" in out and "MMD2" in out
    rc, out, err = _cli(["--checkpoint", str(trained["untrained"]), *common], tmp_path, capsys)
    assert rc == 0, err
    bad = _mmd_rows(out)
    for name in good:
        assert good[name] < 0.5 * bad[name], (good, bad)
    # the same file read with a wrong label gives samples far from the data
    rc, out, err = _cli(["--checkpoint", str(trained["trained"]), "--prediction", "x0",
                         *common], tmp_path, capsys)
    assert rc == 0 and all(v > good[k] for k, v in _mmd_rows(out).items())


def test_without_reference_the_table_says_what_is_measured(trained, tmp_path, capsys):
    rc, out, err = _cli(["--checkpoint", str(trained["trained"]), "--resolutions", "4",
                         "--samplers", "ddim", "--num-samples", "4", "--num-steps", "3"],
                        tmp_path, capsys)
    assert rc == 0, err
    assert "no reference data" in out and "only time, model evaluations" in out


def _one_error_line(err):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert "`CHECKPOINT`" in lines[0] and "contract" in lines[0]
    return lines[0]


def test_unlabelled_model_is_refused_not_run(trained, tmp_path, capsys):
    rc, out, err = _cli(["--checkpoint", str(trained["unlabelled"]), "--resolutions", "4",
                         "--samplers", "ddim", "--num-samples", "2", "--num-steps", "2"],
                        tmp_path, capsys)
    assert rc == 2
    assert "no prediction label" in _one_error_line(err)
    assert not (tmp_path / "out" / "metrics_comparison.txt").exists()


def test_bad_checkpoints_give_one_line_naming_checkpoint(tmp_path, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    (tmp_path / "bad_factories.py").write_text(textwrap.dedent("""
        def no_args():
            return None

        def one_arg_model(resolution, device):
            return (lambda x: x), "epsilon"

        def raises(resolution, device):
            raise RuntimeError("weights missing")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    small = ["--resolutions", "4", "--samplers", "ddim", "--num-samples", "2",
             "--num-steps", "2"]
    cases = [(str(junk), "is not a torch checkpoint"),
             ("bad_factories:no_args", "calling it as function(resolution=4"),
             ("bad_factories:one_arg_model", "model(x, t) raised TypeError"),
             ("bad_factories:raises", "the factory raised RuntimeError"),
             ("bad_factories:missing", "cannot load 'missing'"),
             ("no_such_module_xyz:build", "cannot load 'build'")]
    for ckpt, match in cases:
        rc, out, err = _cli(["--checkpoint", ckpt, *small], tmp_path, capsys)
        assert rc == 2, (ckpt, err)
        assert match in _one_error_line(err), (ckpt, err)
    # --debug shows the traceback instead
    with pytest.raises(E.CheckpointError):
        main(["eval-samplers", "--debug", "--save-dir", str(tmp_path / "o"), "--checkpoint",
              str(junk), *small])
    del torch


def test_unimportable_pickled_class(trained, tmp_path, capsys):
    import sys

    sys.modules.pop("tiny_eps_mod", None)
    rc, out, err = _cli(["--checkpoint", str(trained["pickled"]), "--resolutions", "4",
                         "--samplers", "ddim", "--num-samples", "2", "--num-steps", "2"],
                        tmp_path, capsys)
    assert rc == 2
    assert "cannot be imported here" in _one_error_line(err)


def test_console_script_finds_modules_in_the_current_folder(tmp_path, monkeypatch, capsys):
    """The console script has no '' on sys.path; the command adds the current folder as
    `python -m` does."""
    import sys

    (tmp_path / "cwd_ckpt_mod.py").write_text(textwrap.dedent("""
        from arraygen.scores import EmpiricalScore
        from arraygen.commands.eval_samplers import builtin_data
        from arraygen.schedules import make_schedule

        def build(resolution, device):
            data = builtin_data(resolution)[:20]
            return EmpiricalScore(data, make_schedule("linear")), "score", {"data": data}
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    rc, out, err = _cli(["--checkpoint", "cwd_ckpt_mod:build", "--resolutions", "4",
                         "--samplers", "ddim", "--num-samples", "2", "--num-steps", "4"],
                        tmp_path, capsys)
    assert rc == 0, err


def test_equal_evaluations_on_one_grid(tmp_path):
    s = E.parse_settings(_args(resolutions="8", samplers="ddim,euler,dpmpp_2m,heun",
                               num_samples="2", num_steps="8", save_dir=str(tmp_path)), {})
    rows = {r["sampler"]: r for r in E.evaluate(s)["rows"]}
    assert rows["ddim"]["grid"] == rows["euler"]["grid"] == rows["dpmpp_2m"]["grid"]
    assert len(rows["ddim"]["grid"]) == 9 and rows["ddim"]["nfe"] == 8
    assert rows["heun"]["nfe"] <= 8 and len(rows["heun"]["grid"]) == 5
