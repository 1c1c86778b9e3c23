"""``python -m arraygen info``: versions, devices, and each backend's status and why."""

from __future__ import annotations

import importlib.util
import json
import platform

HELP = "print versions, devices and every backend's status (and why one is unusable)"


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _devices() -> list[str]:
    out = []
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch

            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                out.append(f"cuda:{i} {p.name} ({p.total_memory / 2**30:.0f} GiB, "
                           f"{p.multi_processor_count} SMs, cc {p.major}.{p.minor})")
        except Exception as exc:  # pragma: no cover
            out.append(f"torch could not list CUDA devices: {exc}")
    return out or ["cpu only (no CUDA device visible)"]


def collect() -> dict:
    """Everything ``info`` prints, as a dict."""
    from .. import __version__, _dispatch, backends

    import arraygen  # noqa: F401  (registers the ops)

    return {
        "arraygen": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": backends.versions(),
        "devices": _devices(),
        "backends": {k: (v or "ok") for k, v in backends.available().items()},
        "simulated": {k: backends.is_simulated(k) for k in ("numba_cuda", "triton")},
        "ops": {name: {"kernels": sorted(op.kernels), "gpu_order": list(op.gpu_order)}
                for name, op in _dispatch.registered_ops().items()},
    }


def run(args) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"arraygen {info['arraygen']} on Python {info['python']} ({info['platform']})")
    print("\nlibraries:")
    for k, v in info["versions"].items():
        print(f"  {k:18s} {v or '-'}")
    print("\ndevices:")
    for d in info["devices"]:
        print(f"  {d}")
    print("\nbackends:")
    for k, v in info["backends"].items():
        sim = " (simulated)" if info["simulated"].get(k) and v == "ok" else ""
        print(f"  {k:11s} {v}{sim}")
    print("\nhot-path ops (kernel backends; GPU order):")
    for name, op in info["ops"].items():
        print(f"  {name:24s} {', '.join(op['kernels'])}; GPU: {' > '.join(op['gpu_order'])}")
    return 0
