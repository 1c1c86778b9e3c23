"""``python -m arraygen eval-samplers``: compare diffusion samplers at several resolutions.

Writes into ``SAVE_DIR``: ``metrics_comparison.txt`` (per resolution and sampler: model
evaluations, seconds, median PSNR and mean SSIM of each sample to its nearest training image,
RMSE to it), ``multiscale_comparison.png`` (a grid of samples, samplers x resolutions) and
``metrics_bars.png`` (bar charts of PSNR, SSIM and time).

Settings come from flags, else environment variables, else defaults:

===============  =====================  ===========================================================
flag             environment            meaning (default)
===============  =====================  ===========================================================
--checkpoint     CHECKPOINT             model (none: the built-in exact model, below)
--resolutions    RESOLUTIONS            comma-separated image sides ("8,16")
--samplers       SAMPLERS               comma-separated names ("ddim,euler,dpmpp_2m,sde,fastsbot")
--num-samples    NUM_SAMPLES            images per sampler and resolution (16)
--num-steps      NUM_STEPS              model evaluations per sample (20)
--temperature    TEMPERATURE            scale of the starting noise; flow_sde's temperature (1.0)
--eta            ETA                    DDIM / flow-DDIM stochasticity (0.0)
--save-dir       SAVE_DIR               output folder ("eval-samplers")
--device         DEVICE                 cpu (NumPy), torch, torch:cpu, cuda, cuda:N, cupy ("cpu")
===============  =====================  ===========================================================

Samplers (VP models): ddim, ddpm, euler, heun, dpmpp_2m, dpmpp_2m_sde, sde, sde_pc (one
Langevin corrector per step), fastsbot or fastsbot:<preset> (FastSB-OT with the training images
as its OT reference). Velocity (flow-matching) models: flow_heun, flow_sde, flow_ddim. Every
sampler gets the same budget of NUM_STEPS model evaluations (two-evaluation steps get half as
many steps).

Models (``CHECKPOINT``):

* none: the exact score of the noised empirical distribution
  (:class:`arraygen.bridge.EmpiricalScore`) of binarised scikit-learn digits
  (:func:`arraygen.datasets.binarized_digits`, 16 x 16, resampled to each resolution by
  nearest neighbour, scaled to [-1, 1]). A perfect sampler reproduces training images, so the
  PSNR/SSIM to the nearest training image measure the sampler's accuracy.
* ``"package.module:function"``: ``function(resolution=r, device=DEVICE)`` returns
  ``model`` or ``(model, prediction)`` or ``(model, prediction, extras)``. ``model(x, t)``
  takes arrays of the DEVICE's namespace of shape (B, *shape) and a float t in [0, 1]
  (t = 1 noise) and returns an array like x of kind ``prediction`` ("score", "epsilon",
  "x0", "v", or "velocity" for flow matching with t = 0 noise; default: the model's
  ``prediction`` attribute, else "score"). ``extras`` is a dict with optional ``"shape"``
  (per-sample shape, default (1, r, r)), ``"data"`` (training images (N, *shape) in [-1, 1],
  used for PSNR/SSIM and as the FastSB-OT reference) and ``"schedule"`` (a NoiseSchedule,
  default linear).
* a file: a torch checkpoint, ``torch.jit.load`` (scripted) or ``torch.load`` (a pickled
  ``nn.Module``), called as ``module(x, t)`` with t a (B,) float tensor in [0, 1]; its
  ``prediction`` attribute (default "epsilon") and ``sample_shape`` attribute (default
  (``in_channels`` or 1, r, r)) are used.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import time
from pathlib import Path

HELP = ("compare diffusion samplers at several resolutions: metrics table, sample grid and bar "
        "charts (env: CHECKPOINT, RESOLUTIONS, SAMPLERS, NUM_SAMPLES, NUM_STEPS, ...)")

DEFAULTS = {"CHECKPOINT": None, "RESOLUTIONS": "8,16",
            "SAMPLERS": "ddim,euler,dpmpp_2m,sde,fastsbot", "NUM_SAMPLES": "16",
            "NUM_STEPS": "20", "TEMPERATURE": None, "ETA": "0.0", "SAVE_DIR": "eval-samplers",
            "DEVICE": "cpu"}
VP_SAMPLERS = ("ddim", "ddpm", "euler", "heun", "dpmpp_2m", "dpmpp_2m_sde", "sde", "sde_pc",
               "fastsbot")
FLOW_SAMPLERS = ("flow_heun", "flow_sde", "flow_ddim")
DEVICES = ("cpu", "numpy", "torch", "torch:cpu", "cuda", "cupy")
#: PSNR of an exact copy is infinite; reported values are capped here.
PSNR_CAP = 100.0
TRAIN_IMAGES = 256


def add_arguments(parser) -> None:
    flags = [("--checkpoint", "CHECKPOINT"), ("--resolutions", "RESOLUTIONS"),
             ("--samplers", "SAMPLERS"), ("--num-samples", "NUM_SAMPLES"),
             ("--num-steps", "NUM_STEPS"), ("--temperature", "TEMPERATURE"), ("--eta", "ETA"),
             ("--save-dir", "SAVE_DIR"), ("--device", "DEVICE")]
    for flag, env in flags:
        parser.add_argument(flag, default=None, dest=env.lower(),
                            help=f"overrides ${env} (default: {DEFAULTS[env]})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")


@dataclasses.dataclass
class Settings:
    """Validated settings of one evaluation run."""

    checkpoint: str | None
    resolutions: list
    samplers: list
    num_samples: int
    num_steps: int
    temperature: float | None
    eta: float
    save_dir: Path
    device: str
    seed: int = 0


def _int(text: str, name: str, minimum: int = 1) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {text!r}") from None
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value}")
    return value


def _float(text: str, name: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError(f"`{name}` must be a number; got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be finite and >= 0; got {value}")
    return value


def parse_resolutions(text: str) -> list:
    """``"8,16"`` -> [8, 16]; every entry a positive integer."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"`RESOLUTIONS` must list at least one integer; got {text!r}")
    out = []
    for p in parts:
        if not p.isdigit() or int(p) < 1:
            raise ValueError(f"`RESOLUTIONS` must be comma-separated positive integers; got "
                             f"{p!r} in {text!r}")
        out.append(int(p))
    return out


def parse_samplers(text: str) -> list:
    """``"ddim,fastsbot:ultra"`` -> names, checked against the known samplers and presets."""
    from ..fastsbot import PRESETS

    names = [p.strip() for p in str(text).split(",") if p.strip()]
    if not names:
        raise ValueError(f"`SAMPLERS` must list at least one sampler; got {text!r}")
    valid = VP_SAMPLERS + FLOW_SAMPLERS
    for name in names:
        base, _, preset = name.partition(":")
        if base not in valid or (preset and base != "fastsbot"):
            raise ValueError(f"unknown sampler {name!r} in `SAMPLERS`; valid: {list(valid)} "
                             f"(and fastsbot:<preset>)")
        if preset and preset not in PRESETS:
            raise ValueError(f"unknown FastSB-OT preset {preset!r} in `SAMPLERS`; valid: "
                             f"{list(PRESETS)}")
    return names


def parse_settings(args, environ=None) -> Settings:
    """Flags override environment variables, which override :data:`DEFAULTS`."""
    environ = os.environ if environ is None else environ

    def pick(env):
        flag = getattr(args, env.lower(), None)
        if flag is not None:
            return flag
        value = environ.get(env)
        return value if value not in (None, "") else DEFAULTS[env]

    device = str(pick("DEVICE")).strip()
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"`DEVICE` must be one of {list(DEVICES)} or cuda:N; got {device!r}")
    temperature = pick("TEMPERATURE")
    return Settings(
        checkpoint=pick("CHECKPOINT") or None,
        resolutions=parse_resolutions(pick("RESOLUTIONS")),
        samplers=parse_samplers(pick("SAMPLERS")),
        num_samples=_int(pick("NUM_SAMPLES"), "NUM_SAMPLES"),
        num_steps=_int(pick("NUM_STEPS"), "NUM_STEPS"),
        temperature=None if temperature is None else _float(temperature, "TEMPERATURE"),
        eta=_float(pick("ETA"), "ETA"),
        save_dir=Path(pick("SAVE_DIR")),
        device=device,
        seed=int(getattr(args, "seed", 0) or 0),
    )


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class LoadedModel:
    model: object
    prediction: str
    shape: tuple
    data: object  # training images (N, *shape) in the namespace, or None
    schedule: object
    xp: object
    device: object


def _namespace(device: str):
    from .. import _array_api as aa

    if device in ("cpu", "numpy"):
        import numpy

        return aa.namespace_for(numpy), None
    if device == "cupy":
        import cupy

        return aa.namespace_for(cupy), None
    import torch

    dev = "cpu" if device in ("torch", "torch:cpu") else device
    return aa.namespace_for(torch), torch.device(dev)


def _to_namespace(a, xp, device):
    from .. import _array_api as aa

    if aa.is_torch_namespace(xp):
        import torch

        return torch.from_numpy(a).to(device)
    return xp.asarray(a) if device is None else xp.asarray(a, device=device)


def builtin_data(resolution: int, n: int = TRAIN_IMAGES):
    """Binarised digits resampled to ``resolution`` (nearest neighbour) in [-1, 1], (n, 1, r, r)."""
    import numpy as np

    from ..datasets import binarized_digits

    images = binarized_digits(16).train[:n]
    idx = (np.arange(resolution) * 16) // resolution
    resampled = images[:, idx][:, :, idx].astype(np.float64)
    return (2.0 * resampled - 1.0)[:, None, :, :]


def load_model(checkpoint, resolution: int, device: str) -> LoadedModel:
    """The model for one resolution (module docstring: the CHECKPOINT protocol)."""
    from ..schedules import NoiseSchedule, make_schedule

    xp, dev = _namespace(device)
    schedule = make_schedule("linear")
    if checkpoint is None:
        from ..bridge import EmpiricalScore

        data = _to_namespace(builtin_data(resolution), xp, dev)
        backend = "array_api" if device in ("cpu", "numpy", "torch", "torch:cpu") else None
        model = EmpiricalScore(data, schedule, backend=backend)
        return LoadedModel(model, "score", (1, resolution, resolution), data, schedule, xp, dev)
    if ":" in checkpoint and not os.path.exists(checkpoint):
        module_name, _, attr = checkpoint.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"`CHECKPOINT` {checkpoint!r}: cannot load {attr!r} from "
                             f"{module_name!r} ({exc})") from None
        result = fn(resolution=resolution, device=device)
        extras = {}
        if isinstance(result, tuple):
            if len(result) == 2:
                model, prediction = result
            elif len(result) == 3:
                model, prediction, extras = result
            else:
                raise ValueError(f"`CHECKPOINT` {checkpoint!r} returned a tuple of "
                                 f"{len(result)}; expected (model, prediction[, extras])")
        else:
            model, prediction = result, getattr(result, "prediction", "score")
        if not callable(model):
            raise TypeError(f"`CHECKPOINT` {checkpoint!r} returned a non-callable model")
        shape = tuple(extras.get("shape", (1, resolution, resolution)))
        sched = extras.get("schedule", schedule)
        if not isinstance(sched, NoiseSchedule):
            raise TypeError("the checkpoint's extras['schedule'] must be a NoiseSchedule")
        data = extras.get("data")
        return LoadedModel(model, str(prediction), shape, data, sched, xp, dev)
    if not os.path.exists(checkpoint):
        raise ValueError(f"`CHECKPOINT` {checkpoint!r} is neither a file nor "
                         f"'package.module:function'")
    return _load_torch(checkpoint, resolution, device, schedule)


def _load_torch(path: str, resolution: int, device: str, schedule) -> LoadedModel:
    import torch

    xp, dev = _namespace(device if device not in ("cpu", "numpy") else "torch:cpu")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(path, map_location=dev)
    except (RuntimeError, ValueError):
        module = torch.load(path, map_location=dev, weights_only=False)
    if not callable(module):
        raise TypeError(f"`CHECKPOINT` {path!r} holds a {type(module).__name__}, not a module")
    module.eval()
    prediction = str(getattr(module, "prediction", "epsilon"))
    shape = tuple(getattr(module, "sample_shape", None)
                  or (int(getattr(module, "in_channels", 1)), resolution, resolution))

    def model(x, t):
        with torch.no_grad():
            tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
            return module(x, tt)

    return LoadedModel(model, prediction, shape, None, schedule, xp, dev)


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------

def _run_sampler(name, lm, x, nfe, settings, key):
    from .. import samplers as S

    base, _, preset = name.partition(":")
    sch, pred = lm.schedule, lm.prediction
    flow = pred == "velocity"
    if flow != base.startswith("flow_"):
        kind = "velocity (flow-matching)" if flow else "VP diffusion"
        valid = FLOW_SAMPLERS if flow else VP_SAMPLERS
        raise ValueError(f"sampler {name!r} does not apply to a {kind} model; use one of "
                         f"{list(valid)}")
    kw = {"prediction": pred}
    if base == "ddim":
        return S.sample_ddim(lm.model, x, schedule=sch, steps=nfe, eta=settings.eta,
                             rng=key if settings.eta > 0 else None, **kw)
    if base == "ddpm":
        return S.sample_ddpm(lm.model, x, schedule=sch, steps=nfe, rng=key, **kw)
    if base == "euler":
        return S.sample_euler(lm.model, x, schedule=sch, steps=nfe, **kw)
    if base == "heun":
        return S.sample_heun(lm.model, x, schedule=sch, steps=max(1, (nfe + 1) // 2), **kw)
    if base == "dpmpp_2m":
        return S.sample_dpmpp_2m(lm.model, x, schedule=sch, steps=nfe, **kw)
    if base == "dpmpp_2m_sde":
        return S.sample_dpmpp_2m(lm.model, x, schedule=sch, steps=nfe, sde=True, rng=key, **kw)
    if base == "sde":
        return S.sample_sde(lm.model, x, schedule=sch, steps=nfe, rng=key, **kw)
    if base == "sde_pc":
        return S.sample_sde(lm.model, x, schedule=sch, steps=max(1, nfe // 2),
                            corrector_steps=1, rng=key, **kw)
    if base == "fastsbot":
        import warnings

        from ..fastsbot import FastSBOTConfig, FastSBOTSolver
        from ..ot import ConvergenceWarning

        if settings.temperature is not None and settings.temperature != 1.0:
            raise ValueError("fastsbot starts from N(0, I); `TEMPERATURE` other than 1 is not "
                             "supported for it")
        cpu = settings.device in ("cpu", "numpy", "torch", "torch:cpu")
        cfg = FastSBOTConfig(quality=preset or "balanced", nfe=nfe,
                             backend="array_api" if cpu else None)
        solver = FastSBOTSolver(lm.model, sch, cfg, reference=lm.data, prediction=pred)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            out = solver.sample(tuple(x.shape), rng=key, xp=lm.xp, device=lm.device,
                                dtype=x.dtype)
        return out
    if base == "flow_heun":
        return S.sample_flow_heun(lm.model, x, steps=max(1, nfe // 2), **kw)
    if base == "flow_sde":
        temp = 0.5 if settings.temperature is None else settings.temperature
        return S.sample_flow_sde(lm.model, x, steps=nfe, temperature=temp, rng=key, **kw)
    return S.sample_flow_ddim(lm.model, x, steps=nfe, eta=settings.eta,
                              rng=key if settings.eta > 0 else None, **kw)


def _nearest_scores(samples, data):
    """Median PSNR (dB), mean SSIM (None below 11 px), mean RMSE of each sample to its nearest
    training image, and the fraction of distinct nearest images (coverage)."""
    import numpy as np

    from ..metrics import psnr, ssim

    s = np.asarray(samples, dtype=np.float64)
    d = np.asarray(data, dtype=np.float64)
    sf, df = s.reshape(s.shape[0], -1), d.reshape(d.shape[0], -1)
    dist = (sf * sf).sum(1)[:, None] + (df * df).sum(1)[None, :] - 2.0 * sf @ df.T
    index = np.argmin(dist, axis=1)
    nearest = d[index]
    img_s = s.reshape((-1,) + s.shape[-2:])
    img_n = nearest.reshape((-1,) + nearest.shape[-2:])
    p = np.minimum(np.asarray(psnr(img_n, np.clip(img_s, -1.0, 1.0), data_range=2.0,
                                   check_finite=False)), PSNR_CAP)
    q = None
    if min(s.shape[-2:]) >= 11:
        q = float(np.mean(np.asarray(ssim(img_n, np.clip(img_s, -1.0, 1.0), data_range=2.0,
                                          check_finite=False))))
    rmse = float(np.mean(np.sqrt(((s - nearest) ** 2).reshape(s.shape[0], -1).mean(1))))
    return float(np.median(p)), q, rmse, len(set(index.tolist())) / s.shape[0]


def evaluate(settings: Settings) -> dict:
    """Run every sampler at every resolution; returns ``{"rows": [...], "samples": {...}}``."""
    import numpy as np

    from .. import random as _random
    from ..testing import to_numpy

    rows, samples = [], {}
    for r in settings.resolutions:
        lm = load_model(settings.checkpoint, r, settings.device)
        shape = (settings.num_samples,) + tuple(lm.shape)
        data_host = None if lm.data is None else to_numpy(lm.data)
        for j, name in enumerate(settings.samplers):
            calls = [0]
            inner = lm.model

            def counted(x, t, _inner=inner, _calls=calls):
                _calls[0] += 1
                return _inner(x, t)

            run_lm = dataclasses.replace(lm, model=counted)
            key = _random.Key(settings.seed).advance(1000 * r + j)
            dtype = lm.xp.float32 if settings.device not in ("cpu", "numpy") else lm.xp.float64
            x = _random.normal(_random.Key(settings.seed), shape, dtype=dtype, xp=lm.xp,
                               device=lm.device)
            scale = settings.temperature
            if scale is not None and not name.startswith(("flow_", "fastsbot")):
                x = scale * x
            start = time.perf_counter()
            out = _run_sampler(name, run_lm, x, settings.num_steps, settings, key)
            host = np.asarray(to_numpy(out), dtype=np.float64)
            seconds = time.perf_counter() - start
            if not np.all(np.isfinite(host)):
                raise FloatingPointError(f"sampler {name!r} produced non-finite samples at "
                                         f"resolution {r}")
            row = {"resolution": r, "sampler": name, "nfe": calls[0], "seconds": seconds,
                   "psnr": None, "ssim": None, "rmse": None, "distinct": None}
            if data_host is not None:
                row["psnr"], row["ssim"], row["rmse"], row["distinct"] = _nearest_scores(
                    host, data_host)
            rows.append(row)
            samples[(name, r)] = host
    return {"rows": rows, "samples": samples}


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------

def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def format_table(settings: Settings, rows: list) -> str:
    header = (f"{'res':>4} {'sampler':<18} {'NFE':>4} {'seconds':>8} {'PSNR':>7} {'SSIM':>6} "
              f"{'RMSE':>7} {'distinct':>8}")
    lines = [
        "# eval-samplers",
        f"model: {settings.checkpoint or 'built-in EmpiricalScore on binarised digits'}",
        (f"samples per run: {settings.num_samples}; model evaluations: {settings.num_steps}; "
         f"temperature: {settings.temperature}; eta: {settings.eta}; device: {settings.device}; "
         f"seed: {settings.seed}"),
        ("PSNR (median, dB, capped at 100) / SSIM (mean; images >= 11 px) / RMSE: each sample "
         "against its nearest training image (data range [-1, 1]); distinct: fraction of "
         "different nearest images (an exact sampler of the built-in model draws the training "
         "images uniformly)"),
        "",
        header,
    ]
    for row in rows:
        lines.append(f"{row['resolution']:>4} {row['sampler']:<18} {row['nfe']:>4} "
                     f"{row['seconds']:>8.3f} {_fmt(row['psnr'], '7.2f'):>7} "
                     f"{_fmt(row['ssim'], '6.3f'):>6} {_fmt(row['rmse'], '7.4f'):>7} "
                     f"{_fmt(row['distinct'], '8.2f'):>8}")
    return "\n".join(lines) + "\n"


def _mosaic(batch, per_side: int):
    import numpy as np

    imgs = batch[: per_side * per_side]
    c, h, w = imgs.shape[1], imgs.shape[-2], imgs.shape[-1]
    canvas = np.full((per_side * (h + 1), per_side * (w + 1), 3), 0.5)
    for i, img in enumerate(imgs):
        y, x = divmod(i, per_side)
        rgb = img[:3] if c >= 3 else np.repeat(img[:1], 3, axis=0)
        tile = np.clip((np.transpose(rgb, (1, 2, 0)) + 1.0) / 2.0, 0.0, 1.0)
        canvas[y * (h + 1): y * (h + 1) + h, x * (w + 1): x * (w + 1) + w] = tile
    return canvas


def save_figures(settings: Settings, result: dict) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    names, res = settings.samplers, settings.resolutions
    per_side = max(1, min(4, math.isqrt(settings.num_samples)))
    fig, axes = plt.subplots(len(names), len(res), squeeze=False,
                             figsize=(2.2 * len(res) + 1, 2.2 * len(names)))
    for i, name in enumerate(names):
        for j, r in enumerate(res):
            ax = axes[i][j]
            ax.imshow(_mosaic(result["samples"][(name, r)], per_side), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{r} x {r}", fontsize=9)
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
    grid_path = settings.save_dir / "multiscale_comparison.png"
    fig.savefig(grid_path, dpi=110, bbox_inches="tight")
    plt.close(fig)

    metrics = [("psnr", "PSNR to nearest (dB)"), ("ssim", "SSIM to nearest"),
               ("seconds", "seconds")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4), squeeze=False)
    width = 0.8 / len(names)
    for ax, (key, label) in zip(axes[0], metrics):
        for i, name in enumerate(names):
            vals = [next((row[key] for row in result["rows"]
                          if row["sampler"] == name and row["resolution"] == r), None)
                    for r in res]
            heights = [np.nan if v is None else v for v in vals]
            ax.bar(np.arange(len(res)) + i * width, heights, width, label=name)
        ax.set_xticks(np.arange(len(res)) + 0.4 - width / 2)
        ax.set_xticklabels([f"{r}px" for r in res])
        ax.set_title(label, fontsize=10)
    axes[0][0].legend(fontsize=7)
    bars_path = settings.save_dir / "metrics_bars.png"
    fig.savefig(bars_path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return grid_path, bars_path


def run(args) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    settings = parse_settings(args)
    settings.save_dir.mkdir(parents=True, exist_ok=True)
    result = evaluate(settings)
    table = format_table(settings, result["rows"])
    table_path = settings.save_dir / "metrics_comparison.txt"
    table_path.write_text(table)
    grid_path, bars_path = save_figures(settings, result)
    print(table)
    print(f"[eval-samplers] wrote {table_path}, {grid_path}, {bars_path}")
    return 0
