"""``python -m arraygen eval-samplers``: compare diffusion samplers at several resolutions.

Writes into ``SAVE_DIR``: ``metrics_comparison.txt`` (per resolution and sampler: model
evaluations, seconds, median PSNR and mean SSIM of each sample to its nearest training image,
RMSE to it), ``multiscale_comparison.png`` (a grid of samples, samplers x resolutions) and
``metrics_bars.png`` (bar charts of PSNR, MMD and time). Every sampler gets the same number
of model evaluations on the same time grid (the samplers' default log-SNR grid, capped at VE
sigma 80; two-evaluation steps get half as many steps on the same kind of grid, and FastSB-OT
presets use their own tuned grid); the table prints each sampler's grid.

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
--reference      REFERENCE              .npz of reference images (N, C, H, W) in [-1, 1] (none)
--prediction     PREDICTION             the model's output kind if the model does not say (none)
===============  =====================  ===========================================================

Samplers (VP models): ddim, ddpm, euler, heun, dpmpp_2m, dpmpp_2m_sde, sde, sde_pc (one
Langevin corrector per step), fastsbot or fastsbot:<preset> (FastSB-OT with the training images
as its OT reference). Velocity (flow-matching) models: flow_heun, flow_sde, flow_ddim. Every
sampler gets the same budget of NUM_STEPS model evaluations (two-evaluation steps get half as
many steps).

What is measured: with reference data (the built-in model's training digits, a checkpoint
factory's ``extras["data"]``, or ``--reference``), the median PSNR / mean SSIM / RMSE of each
sample to its nearest reference image (sample fidelity: an over-smoothed, mode-collapsed sampler
can score high here) and, beside them, the MMD^2 between the samples and the reference set
(Gaussian kernel, median-distance bandwidth: the distribution metric, so the ranking is not
won by collapsing onto a few images). Without reference data only the time, the model
evaluations and the samples' mean and standard deviation are measured (the quality columns read
n/a).

Models (``CHECKPOINT``):

* none: the exact score of the noised empirical distribution
  (:class:`arraygen.scores.EmpiricalScore`) of binarised scikit-learn digits
  (:func:`arraygen.datasets.binarized_digits`, 16 x 16, resampled to each resolution by
  nearest neighbour, scaled to [-1, 1]). A perfect sampler reproduces training images, so the
  PSNR/SSIM to the nearest training image measure the sampler's accuracy.
* ``"package.module:function"``: ``function(resolution=r, device=DEVICE)`` returns
  ``model`` or ``(model, prediction)`` or ``(model, prediction, extras)``. ``model(x, t)``
  takes arrays of the DEVICE's namespace of shape (B, *shape) and a float t in [0, 1]
  (t = 1 noise) and returns an array like x of kind ``prediction`` ("score", "epsilon",
  "x0", "v", or "velocity" for flow matching with t = 0 noise; without a label in the
  tuple: the model's ``prediction`` attribute, else ``--prediction``, else an error). Modules
  in the current folder are importable (the console script puts it on ``sys.path`` as
  ``python -m`` does). ``extras`` is a dict with optional ``"shape"`` (per-sample shape,
  default (1, r, r)), ``"data"`` (reference images (N, *shape) in [-1, 1], used for the
  metrics and as the FastSB-OT reference), ``"schedule"`` (a NoiseSchedule, default linear)
  and ``"dtype"`` (the model's input dtype; default float64 for NumPy, float32 otherwise).
* a file: a torch checkpoint, ``torch.jit.load`` (scripted) or ``torch.load`` (a pickled
  ``nn.Module``), called as ``module(x, t)`` with x in the module's parameter dtype (float32
  checkpoints get float32 inputs, also under ``--device cpu``) and t a (B,) tensor in [0, 1];
  its ``prediction`` attribute (else ``--prediction``, else an error) and ``sample_shape``
  attribute (default (``in_channels`` or 1, r, r)) are used.

Every failure caused by the CHECKPOINT (not importable, wrong factory signature, a model that
raises or returns the wrong shape, a file that is not a torch checkpoint or pickles a class that
cannot be imported, a missing label) is one line naming ``CHECKPOINT`` and the contract, exit
status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys
import time
from pathlib import Path

HELP = ("compare diffusion samplers at several resolutions: metrics table, sample grid and bar "
        "charts (env: CHECKPOINT, RESOLUTIONS, SAMPLERS, NUM_SAMPLES, NUM_STEPS, ...)")

CONTRACT = """\
CHECKPOINT contract (one of):
  none                  the built-in exact model (EmpiricalScore of binarised digits).
  package.module:function
                        function(resolution=r, device=DEVICE) returns model, or
                        (model, prediction), or (model, prediction, extras); modules in the
                        current folder are found (as with python -m). model(x, t): x an
                        array of the DEVICE's namespace, shape (B, *shape), in the model's
                        dtype; t a float in [0, 1] (t = 1 noise); returns an array like x of
                        kind prediction. extras: {"shape": per-sample shape (default
                        (1, r, r)), "data": reference images (N, *shape) in [-1, 1],
                        "schedule": NoiseSchedule (default linear), "dtype": input dtype}.
  FILE.pt               a torch checkpoint: torch.jit.save'd or torch.save'd nn.Module,
                        called as module(x, t) with x float in the module's parameter dtype
                        and t a (B,) tensor in [0, 1]; attributes prediction and
                        sample_shape (default (in_channels or 1, r, r)).
  prediction label      "score", "epsilon", "x0", "v" or "velocity" (flow matching, t = 0
                        noise). REQUIRED: from the factory's tuple, the model's `prediction`
                        attribute, or --prediction; a model without one is refused (an
                        epsilon network read as a score would silently write noise)."""
CONTRACT_SHORT = ("see `arraygen eval-samplers --help` for the CHECKPOINT contract: "
                  "'module:function' returning model or (model, prediction[, extras]), or a "
                  "torch file holding an nn.Module called as module(x, t), with a prediction "
                  "label")

DEFAULTS = {"CHECKPOINT": None, "RESOLUTIONS": "8,16",
            "SAMPLERS": "ddim,euler,dpmpp_2m,sde,fastsbot", "NUM_SAMPLES": "16",
            "NUM_STEPS": "20", "TEMPERATURE": None, "ETA": "0.0", "SAVE_DIR": "eval-samplers",
            "DEVICE": "cpu", "REFERENCE": None, "PREDICTION": None}
PREDICTIONS = ("score", "epsilon", "x0", "v", "velocity")
#: Optional samplers, listed when arraygen.samplers has them.
_NEW_SAMPLERS = ("unipc", "dpmpp_3m_sde", "euler_ancestral", "dpmpp_2s_ancestral")


def _vp_samplers() -> tuple:
    from .. import samplers as S

    extra = tuple(n for n in _NEW_SAMPLERS if hasattr(S, "sample_" + n))
    return ("ddim", "ddpm", "euler", "heun", "dpmpp_2m", "dpmpp_2m_sde", "sde", "sde_pc",
            "fastsbot") + extra


VP_SAMPLERS = _vp_samplers()
FLOW_SAMPLERS = ("flow_heun", "flow_sde", "flow_ddim")
DEVICES = ("cpu", "numpy", "torch", "torch:cpu", "cuda", "cupy")
#: PSNR of an exact copy is infinite; reported values are capped here.
PSNR_CAP = 100.0
TRAIN_IMAGES = 256


def add_arguments(parser) -> None:
    import argparse

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = CONTRACT
    flags = [("--checkpoint", "CHECKPOINT"), ("--resolutions", "RESOLUTIONS"),
             ("--samplers", "SAMPLERS"), ("--num-samples", "NUM_SAMPLES"),
             ("--num-steps", "NUM_STEPS"), ("--temperature", "TEMPERATURE"), ("--eta", "ETA"),
             ("--save-dir", "SAVE_DIR"), ("--device", "DEVICE"), ("--reference", "REFERENCE"),
             ("--prediction", "PREDICTION")]
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
    reference: Path | None = None
    prediction: str | None = None


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
    """``"8,16"`` -> [8, 16]; every entry a positive integer.

    Examples
    --------
    >>> parse_resolutions("8, 16")
    [8, 16]
    """
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
    """``"ddim,fastsbot:ultra"`` -> names, checked against the known samplers and presets.

    Examples
    --------
    >>> parse_samplers("ddim, fastsbot:ultra")
    ['ddim', 'fastsbot:ultra']
    """
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
    reference = pick("REFERENCE")
    if reference is not None:
        reference = Path(str(reference)).expanduser()
        if not reference.is_file():
            raise ValueError(f"`REFERENCE` must be an existing .npz file; got {str(reference)!r}")
    prediction = pick("PREDICTION")
    if prediction is not None and prediction not in PREDICTIONS:
        raise ValueError(f"`PREDICTION` must be one of {list(PREDICTIONS)}; got {prediction!r}")
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
        reference=reference,
        prediction=prediction,
    )


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class LoadedModel:
    model: object
    prediction: str
    shape: tuple
    data: object  # reference images (N, *shape) in the namespace, or None
    schedule: object
    xp: object
    device: object
    dtype: object = None  # dtype of the model's input x


class CheckpointError(ValueError):
    """A CHECKPOINT that does not follow the contract (one line naming it and the contract)."""

    def __init__(self, checkpoint, what: str):
        super().__init__(f"`CHECKPOINT` {checkpoint!r}: {what}; {CONTRACT_SHORT}")


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
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"`DEVICE` {device!r}: torch sees no CUDA device")
    return aa.namespace_for(torch), torch.device(dev)


def _to_namespace(a, xp, device, dtype=None):
    from .. import _array_api as aa

    if aa.is_torch_namespace(xp):
        import torch

        t = torch.from_numpy(a).to(device)
        return t if dtype is None else t.to(dtype)
    out = xp.asarray(a) if device is None else xp.asarray(a, device=device)
    return out if dtype is None else xp.astype(out, dtype)


def _resample(images, resolution: int):
    """Nearest-neighbour resampling of (N, C, H, W) images to ``resolution`` x ``resolution``."""
    import numpy as np

    h, w = images.shape[-2:]
    iy = (np.arange(resolution) * h) // resolution
    ix = (np.arange(resolution) * w) // resolution
    return images[..., iy, :][..., ix]


def builtin_data(resolution: int, n: int = TRAIN_IMAGES, *, split: str = "train"):
    """Binarised digits resampled to ``resolution`` (nearest neighbour) in [-1, 1], (n, 1, r, r)."""
    import numpy as np

    from ..datasets import binarized_digits

    digits = binarized_digits(16)
    images = (digits.train if split == "train" else digits.test)[:n]
    resampled = _resample(images.astype(np.float64), resolution)
    return (2.0 * resampled - 1.0)[:, None, :, :]


def load_reference(path, shape: tuple):
    """Reference images from an ``.npz`` (key ``data``, ``images`` or ``x``, or its only array)
    as a float64 NumPy array (N, *shape); (N, H, W) gains a channel axis; other sides are
    resampled to the resolution by nearest neighbour."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.keys())
            key = next((k for k in ("data", "images", "x") if k in keys),
                       keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ValueError(f"`REFERENCE` {str(path)!r} has arrays {keys}; name one "
                                 f"'data', 'images' or 'x'")
            arr = np.asarray(f[key], dtype=np.float64)
    except (OSError, ValueError) as exc:
        if "REFERENCE" in str(exc):
            raise
        raise ValueError(f"`REFERENCE` {str(path)!r} is not a readable .npz file ({exc})") \
            from None
    if arr.ndim == len(shape):                      # (N, H, W) for one-channel images
        arr = arr[:, None]
    if arr.ndim != len(shape) + 1 or arr.shape[0] < 2:
        raise ValueError(f"`REFERENCE` must hold images of shape (N, {', '.join(map(str, shape))})"
                         f"; got {arr.shape}")
    if arr.shape[-2:] != tuple(shape[-2:]):
        arr = _resample(arr, shape[-1])
    if tuple(arr.shape[1:]) != tuple(shape):
        raise ValueError(f"`REFERENCE` images have shape {arr.shape[1:]}; the model's samples "
                         f"have {tuple(shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("`REFERENCE` contains non-finite values")
    return arr


def _import_factory(checkpoint: str):
    module_name, _, attr = checkpoint.partition(":")
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)                     # as `python -m` does: the console script too
    try:
        return getattr(importlib.import_module(module_name), attr)
    except Exception as exc:                        # ImportError, AttributeError, SyntaxError...
        raise CheckpointError(checkpoint, f"cannot load {attr!r} from {module_name!r} "
                                          f"({type(exc).__name__}: {exc})") from exc


def load_model(checkpoint, resolution: int, device: str, prediction: str | None = None
               ) -> LoadedModel:
    """The model for one resolution (module docstring: the CHECKPOINT contract)."""
    from ..schedules import NoiseSchedule, make_schedule

    xp, dev = _namespace(device)
    schedule = make_schedule("linear")
    if checkpoint is None:
        from ..scores import EmpiricalScore

        data = _to_namespace(builtin_data(resolution), xp, dev)
        backend = "array_api" if device in ("cpu", "numpy", "torch", "torch:cpu") else None
        model = EmpiricalScore(data, schedule, backend=backend)
        return LoadedModel(model, "score", (1, resolution, resolution), data, schedule, xp,
                           dev, data.dtype)
    if ":" in checkpoint and not os.path.exists(checkpoint):
        fn = _import_factory(checkpoint)
        if not callable(fn):
            raise CheckpointError(checkpoint, f"{type(fn).__name__} is not a function")
        try:
            result = fn(resolution=resolution, device=device)
        except TypeError as exc:
            raise CheckpointError(checkpoint, f"calling it as function(resolution={resolution}, "
                                              f"device={device!r}) failed ({exc})") from exc
        except Exception as exc:
            raise CheckpointError(checkpoint, f"the factory raised {type(exc).__name__}: "
                                              f"{exc}") from exc
        extras = {}
        if isinstance(result, tuple):
            if len(result) == 2:
                model, label = result
            elif len(result) == 3:
                model, label, extras = result
            else:
                raise CheckpointError(checkpoint, f"returned a tuple of {len(result)}; expected "
                                                  f"(model, prediction[, extras])")
        else:
            model, label = result, getattr(result, "prediction", None)
        if not callable(model):
            raise CheckpointError(checkpoint, f"returned a non-callable model "
                                              f"({type(model).__name__})")
        if not isinstance(extras, dict):
            raise CheckpointError(checkpoint, "extras must be a dict")
        label = _label(checkpoint, label, prediction)
        shape = tuple(extras.get("shape", (1, resolution, resolution)))
        sched = extras.get("schedule", schedule)
        if not isinstance(sched, NoiseSchedule):
            raise CheckpointError(checkpoint, "extras['schedule'] must be a NoiseSchedule")
        data = extras.get("data")
        dtype = extras.get("dtype")
        if dtype is None:
            dtype = xp.float64 if device in ("cpu", "numpy") else xp.float32
        return LoadedModel(model, label, shape, data, sched, xp, dev, dtype)
    if not os.path.exists(checkpoint):
        raise CheckpointError(checkpoint, "is neither a file nor 'package.module:function'")
    return _load_torch(checkpoint, resolution, device, schedule, prediction)


def _label(checkpoint, label, override):
    if override is not None:
        return override
    if label is None:
        raise CheckpointError(checkpoint, "the model has no prediction label (an epsilon "
                                          "network read as a score writes noise): return "
                                          "(model, prediction), set model.prediction, or pass "
                                          "--prediction")
    if label not in PREDICTIONS:
        raise CheckpointError(checkpoint, f"prediction label {label!r} is not one of "
                                          f"{list(PREDICTIONS)}")
    return str(label)


def _load_torch(path: str, resolution: int, device: str, schedule, prediction) -> LoadedModel:
    import pickle
    import warnings

    import torch

    xp, dev = _namespace(device if device not in ("cpu", "numpy") else "torch:cpu")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(path, map_location=dev)
    except Exception:                                 # not TorchScript: a pickled module?
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = torch.load(path, map_location=dev, weights_only=False)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
            raise CheckpointError(path, f"is not a torch checkpoint ({type(exc).__name__}: "
                                        f"{exc})") from exc
        except (AttributeError, ImportError) as exc:
            raise CheckpointError(path, f"holds a pickled class that cannot be imported here "
                                        f"({type(exc).__name__}: {exc}); make its module "
                                        f"importable or save it with torch.jit.save") from exc
        except Exception as exc:
            raise CheckpointError(path, f"cannot be loaded ({type(exc).__name__}: {exc})") \
                from exc
    if not isinstance(module, torch.nn.Module) and not callable(module):
        raise CheckpointError(path, f"holds a {type(module).__name__}, not an nn.Module "
                                    f"(a state_dict needs its module class: use a "
                                    f"'module:function' factory)")
    module.eval()
    label = _label(path, getattr(module, "prediction", None), prediction)
    shape = tuple(getattr(module, "sample_shape", None)
                  or (int(getattr(module, "in_channels", 1)), resolution, resolution))
    params = list(module.parameters()) if hasattr(module, "parameters") else []
    dtype = params[0].dtype if params else torch.float32

    def model(x, t):
        with torch.no_grad():
            tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
            return module(x, tt)

    return LoadedModel(model, label, shape, None, schedule, xp, dev, dtype)


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------

def _grids(name, lm, nfe):
    """The explicit time grid a sampler gets for ``nfe`` evaluations (None: the sampler's own)."""
    from .. import samplers as S
    from ..schedules import timesteps

    base = name.partition(":")[0]
    kind = getattr(S, "DEFAULT_GRID", "log_snr")
    if base.startswith("flow_") or base == "fastsbot":
        return None
    steps = {"heun": max(1, (nfe + 1) // 2), "sde_pc": max(1, nfe // 2),
             "dpmpp_2s_ancestral": max(1, nfe // 2)}.get(base, nfe)
    return timesteps(steps, kind, lm.schedule)


def _run_sampler(name, lm, x, nfe, settings, key):
    """Run one sampler; returns ``(samples, grid)`` (grid: the decreasing times it used)."""
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
    grid = _grids(name, lm, nfe)
    if base == "ddim":
        out = S.sample_ddim(lm.model, x, schedule=sch, steps=grid, eta=settings.eta,
                            rng=key if settings.eta > 0 else None, **kw)
    elif base == "ddpm":
        out = S.sample_ddpm(lm.model, x, schedule=sch, steps=grid, rng=key, **kw)
    elif base == "euler":
        out = S.sample_euler(lm.model, x, schedule=sch, steps=grid, **kw)
    elif base == "heun":
        out = S.sample_heun(lm.model, x, schedule=sch, steps=grid, **kw)
    elif base == "dpmpp_2m":
        out = S.sample_dpmpp_2m(lm.model, x, schedule=sch, steps=grid, **kw)
    elif base == "dpmpp_2m_sde":
        out = S.sample_dpmpp_2m(lm.model, x, schedule=sch, steps=grid, sde=True, rng=key, **kw)
    elif base == "sde":
        out = S.sample_sde(lm.model, x, schedule=sch, steps=grid, rng=key, **kw)
    elif base == "sde_pc":
        out = S.sample_sde(lm.model, x, schedule=sch, steps=grid, corrector_steps=1, rng=key,
                           **kw)
    elif base in _NEW_SAMPLERS:
        fn = getattr(S, "sample_" + base)
        extra = {} if base == "unipc" else {"rng": key}
        out = fn(lm.model, x, schedule=sch, steps=grid, **extra, **kw)
    elif base == "fastsbot":
        import warnings

        from ..fastsbot import FastSBOTConfig, FastSBOTSolver
        from ..ot import ConvergenceWarning

        if settings.temperature is not None and settings.temperature != 1.0:
            raise ValueError("fastsbot starts from N(0, I); `TEMPERATURE` other than 1 is not "
                             "supported for it")
        cpu = settings.device in ("cpu", "numpy", "torch", "torch:cpu")
        cfg = FastSBOTConfig(quality=preset or "balanced", nfe=nfe,
                             backend="array_api" if cpu else None)
        ref = lm.data if lm.data is not None and lm.data.dtype == x.dtype else None
        solver = FastSBOTSolver(lm.model, sch, cfg, reference=ref, prediction=pred)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            out = solver.sample(noise=x, rng=key)
        grid = solver.timesteps
    elif base == "flow_heun":
        out = S.sample_flow_heun(lm.model, x, steps=max(1, nfe // 2), **kw)
    elif base == "flow_sde":
        temp = 0.5 if settings.temperature is None else settings.temperature
        out = S.sample_flow_sde(lm.model, x, steps=nfe, temperature=temp, rng=key, **kw)
    else:
        out = S.sample_flow_ddim(lm.model, x, steps=nfe, eta=settings.eta,
                                 rng=key if settings.eta > 0 else None, **kw)
    return out, grid


def _nearest_scores(samples, data):
    """Median PSNR (dB), mean SSIM (None below 11 px), mean RMSE of each sample to its nearest
    reference image, and the fraction of distinct nearest images (coverage)."""
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


def _bandwidth(data) -> float:
    """Median pairwise distance of the reference set (the MMD kernel's bandwidth)."""
    import numpy as np

    d = np.asarray(data, dtype=np.float64).reshape(data.shape[0], -1)[:512]
    sq = (d * d).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * d @ d.T, 0.0))
    med = float(np.median(dist[np.triu_indices(d.shape[0], 1)]))
    return med if med > 0 else 1.0


def _distribution_score(samples, data, bandwidth: float) -> float:
    """Unbiased MMD^2 between the samples and the reference set (flattened images)."""
    import numpy as np

    from ..metrics import mmd

    s = np.asarray(samples, dtype=np.float64).reshape(samples.shape[0], -1)
    d = np.asarray(data, dtype=np.float64).reshape(data.shape[0], -1)
    return float(mmd(s, d, bandwidth=bandwidth, check_finite=False, backend="array_api"))


def _counted(lm_model, calls, checkpoint):
    def counted(x, t):
        calls[0] += 1
        try:
            return lm_model(x, t)
        except Exception as exc:
            if checkpoint is None:
                raise
            raise CheckpointError(checkpoint, f"model(x, t) raised {type(exc).__name__}: "
                                              f"{exc} (x of shape {tuple(x.shape)}, dtype "
                                              f"{x.dtype}, t = {float(t):.4g})") from exc
    return counted


def evaluate(settings: Settings) -> dict:
    """Run every sampler at every resolution; returns ``{"rows": [...], "samples": {...}}``."""
    import numpy as np

    from .. import random as _random
    from ..testing import to_numpy

    rows, samples = [], {}
    ckpt = settings.checkpoint
    for r in settings.resolutions:
        lm = load_model(ckpt, r, settings.device, getattr(settings, "prediction", None))
        shape = (settings.num_samples,) + tuple(lm.shape)
        ref_path = getattr(settings, "reference", None)
        if ref_path is not None:
            data_host = load_reference(ref_path, tuple(lm.shape))
            lm = dataclasses.replace(lm, data=_to_namespace(data_host, lm.xp, lm.device,
                                                            lm.dtype))
        else:
            data_host = None if lm.data is None else np.asarray(to_numpy(lm.data), np.float64)
        bandwidth = None if data_host is None else _bandwidth(data_host)
        for j, name in enumerate(settings.samplers):
            calls = [0]
            run_lm = dataclasses.replace(lm, model=_counted(lm.model, calls, ckpt))
            key = _random.Key(settings.seed).advance(1000 * r + j)
            dtype = lm.dtype if lm.dtype is not None else (
                lm.xp.float32 if settings.device not in ("cpu", "numpy") else lm.xp.float64)
            x = _random.normal(_random.Key(settings.seed), shape, dtype=dtype, xp=lm.xp,
                               device=lm.device)
            scale = settings.temperature
            if scale is not None and not name.startswith(("flow_", "fastsbot")):
                x = scale * x
            start = time.perf_counter()
            try:
                out, grid = _run_sampler(name, run_lm, x, settings.num_steps, settings, key)
            except CheckpointError:
                raise
            except (ValueError, TypeError, FloatingPointError) as exc:
                if ckpt is None or "does not apply" in str(exc):
                    raise
                raise CheckpointError(ckpt, f"sampler {name!r} failed: {exc}") from exc
            host = np.asarray(to_numpy(out), dtype=np.float64)
            seconds = time.perf_counter() - start
            if not np.all(np.isfinite(host)):
                what = f"sampler {name!r} produced non-finite samples at resolution {r}"
                if ckpt is not None:
                    raise CheckpointError(ckpt, what + " (is the prediction label right?)")
                raise FloatingPointError(what)
            row = {"resolution": r, "sampler": name, "nfe": calls[0], "seconds": seconds,
                   "psnr": None, "ssim": None, "rmse": None, "distinct": None, "mmd": None,
                   "mean": float(host.mean()), "std": float(host.std()),
                   "grid": None if grid is None else [float(v) for v in grid]}
            if data_host is not None:
                row["psnr"], row["ssim"], row["rmse"], row["distinct"] = _nearest_scores(
                    host, data_host)
                row["mmd"] = _distribution_score(host, data_host, bandwidth)
            rows.append(row)
            samples[(name, r)] = host
    return {"rows": rows, "samples": samples, "has_reference": any(
        row["mmd"] is not None for row in rows)}


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------

def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def _grid_text(grid, schedule) -> str:
    """A grid as its variance-exploding noise levels sigma/alpha (t = 0 shown as 0)."""
    import numpy as np

    if grid is None:
        return "the sampler's own (flow-matching time grid)"
    t = np.asarray(grid, dtype=np.float64)
    ab = np.asarray(schedule.alpha_bar(t), dtype=np.float64)
    with np.errstate(divide="ignore"):
        ve = np.sqrt(np.maximum(1.0 - ab, 0.0) / ab)
    return "sigma " + " ".join(f"{v:.3g}" for v in ve)


def format_table(settings: Settings, rows: list, schedule=None) -> str:
    has_ref = any(row.get("mmd") is not None for row in rows)
    header = (f"{'res':>4} {'sampler':<18} {'NFE':>4} {'seconds':>8} {'PSNR':>7} {'SSIM':>6} "
              f"{'RMSE':>7} {'distinct':>8} {'MMD2':>9} {'mean':>7} {'std':>6}")
    model = settings.checkpoint or "built-in EmpiricalScore on binarised digits"
    ref = getattr(settings, "reference", None)
    lines = [
        "# eval-samplers",
        f"model: {model}",
        (f"samples per run: {settings.num_samples}; model evaluations: {settings.num_steps}; "
         f"temperature: {settings.temperature}; eta: {settings.eta}; device: {settings.device}; "
         f"seed: {settings.seed}"),
    ]
    if has_ref:
        source = (str(ref) if ref is not None else "the training digits (the built-in exact "
                  "model's own distribution)" if not settings.checkpoint
                  else "the checkpoint's extras['data']")
        lines.append(
            f"reference data: {source}. PSNR (median, dB, capped at 100) / SSIM (mean; images "
            f">= 11 px) / RMSE: each sample against its nearest reference image (fidelity; a "
            f"sampler that collapses onto a few images can score high); distinct: fraction of "
            f"different nearest images; MMD2: unbiased MMD^2 of samples vs reference set "
            f"(Gaussian kernel, median-distance bandwidth; lower = closer distributions, ~0 "
            f"within noise): the distribution metric to rank by")
    else:
        lines.append(
            "no reference data (pass --reference images.npz or extras['data']): only time, "
            "model evaluations and the samples' mean / std are measured; PSNR, SSIM, RMSE, "
            "distinct and MMD2 read n/a")
    lines += ["", header]
    for row in rows:
        lines.append(f"{row['resolution']:>4} {row['sampler']:<18} {row['nfe']:>4} "
                     f"{row['seconds']:>8.3f} {_fmt(row['psnr'], '7.2f'):>7} "
                     f"{_fmt(row['ssim'], '6.3f'):>6} {_fmt(row['rmse'], '7.4f'):>7} "
                     f"{_fmt(row['distinct'], '8.2f'):>8} {_fmt(row.get('mmd'), '9.2e'):>9} "
                     f"{_fmt(row.get('mean'), '7.3f'):>7} {_fmt(row.get('std'), '6.3f'):>6}")
    if schedule is not None:
        lines += ["", "time grids (variance-exploding noise levels visited; every single-"
                      "evaluation sampler shares one grid per resolution):"]
        seen = {}
        for row in rows:
            text = _grid_text(row.get("grid"), schedule)
            seen.setdefault((row["resolution"], text), []).append(row["sampler"])
        for (res, text), names in seen.items():
            lines.append(f"  {res:>4} {', '.join(names)}: {text}")
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

    metrics = [("psnr", "PSNR to nearest reference (dB)"),
               ("mmd", "MMD^2 to reference (lower is better)"), ("seconds", "seconds")]
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
    schedule = load_model(settings.checkpoint, settings.resolutions[0], settings.device,
                          settings.prediction).schedule
    table = format_table(settings, result["rows"], schedule)
    table_path = settings.save_dir / "metrics_comparison.txt"
    table_path.write_text(table)
    grid_path, bars_path = save_figures(settings, result)
    print(table)
    print(f"[eval-samplers] wrote {table_path}, {grid_path}, {bars_path}")
    return 0
