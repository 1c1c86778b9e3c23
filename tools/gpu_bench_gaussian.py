"""GPU benchmark of gaussian_filter: sigma = 2, float32, last two axes of (16, 3, 1024, 1024) and
(16, 3, 256, 256).

Floor: one read + one write, 8 bytes per element (50.3 M elements -> 403 MB at 1024^2); at the
measured copy bandwidth (~3.0 TB/s on an H100) about 0.13 ms. Every GPU backend of arraygen is
timed, with each launch variant of its ``TUNING`` record (old and new kernels side by side, so
the measured winner can be made the default), against torch conv2d separable (two conv2d, the
same 17 taps, scipy-'reflect' padding by an index gather), cupyx.scipy.ndimage.gaussian_filter,
and, where their wheels are installed, NVIDIA NPP (``nppiFilterGaussAdvancedBorder_32f_C1R_Ctx``
through ctypes, one call per plane) and CV-CUDA (``cvcuda.gaussian``, NHWC batch), both with
their 'mirror' border (scipy 'mirror'; NPP and CV-CUDA have no scipy-'reflect'), in the same run.
NPP and CV-CUDA run in a child process each (a crash there cannot take the table down); a
missing one gives a row whose peer column says why.

Values are GB/s counted as 8 bytes/element; ``ceil`` is the fraction of copy bandwidth; ``x peer``
the ratio to cupyx.scipy.ndimage. ``rel err`` is max |y - scipy float64| / max |scipy| on the
first image (for the mirror-border peers against scipy 'mirror'). Rows "(kernel)" call the
launcher directly (no argument checks, no taps computed): the difference to the public op is the
Python overhead, which dominates at 256^2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import bench_ms, copy_bandwidth_gbs, row

SIGMA = 2.0

#: (label, backend, TUNING overrides): the defaults first, then the other variants.
VARIANTS = [
    ("cupy", "cupy", {}),
    ("cupy tile(old)", "cupy", {"fused": "tile"}),
    ("cupy strip32", "cupy", {"fused": "strip", "strip_threads": 32}),
    ("cupy strip64", "cupy", {"fused": "strip", "strip_threads": 64}),
    ("cupy strip seg64", "cupy", {"fused": "strip", "strip_rows": 64}),
    ("cupy strip seg128", "cupy", {"fused": "strip", "strip_rows": 128}),
    ("triton", "triton", {}),
    ("triton 2pass(old)", "triton", {"fused": False}),
    ("triton tf32x3", "triton", {"precision": "tf32x3"}),
    ("triton steps1", "triton", {"steps": 1}),
    ("triton steps16", "triton", {"steps": 16}),
    ("triton ow32", "triton", {"out_w": 32}),
    ("triton w8", "triton", {"num_warps": 8}),
    ("triton w2", "triton", {"num_warps": 2}),
    ("triton tf32x3 ow32", "triton", {"precision": "tf32x3", "out_w": 32}),
    ("triton wide48", "triton", {"out_w": 32, "wide": True}),
    ("triton tf32x3 wide48", "triton", {"precision": "tf32x3", "out_w": 32, "wide": True}),
    ("numba_cuda", "numba_cuda", {}),
    ("numba 2pass(old)", "numba_cuda", {"fused": False}),
    ("numba tile16", "numba_cuda", {"tile_h": 16}),
    ("numba tile128w", "numba_cuda", {"tile_w": 128, "tile_h": 16}),
    ("numba vrows4", "numba_cuda", {"vertical_rows": 4}),
    ("numba vrows8", "numba_cuda", {"vertical_rows": 8}),
]


def _rel_err(y, want) -> float:
    from arraygen import _array_api as aa

    got = aa.to_numpy(y).reshape((-1,) + want.shape)[0].astype(np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def _tuning(backend: str):
    import importlib

    return importlib.import_module(f"arraygen.backends.{backend}.gaussian").TUNING


def _peer_subprocess(name: str, shape) -> dict:
    """Run ``_peer_<name>`` in a child process; {"ms", "err"} or {"why"}."""
    cmd = [sys.executable, __file__, "--peer", name, "x".join(map(str, shape))]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"why": "timed out"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"why": f"exit {proc.returncode}: {tail[:80]}"}


def _npp_lib():
    """libnppif + libnppc from the nvidia-npp (cu13) or nvidia-npp-cu12 wheel, or a reason."""
    import ctypes
    import importlib.util

    for pkg, sub, ver in (("nvidia", "cu13/lib", "13"), ("nvidia", "npp/lib", "12")):
        spec = importlib.util.find_spec(pkg)
        for root in (spec.submodule_search_locations or []) if spec else []:
            lib = Path(root) / sub
            if (lib / f"libnppif.so.{ver}").exists():
                ctypes.CDLL(str(lib / f"libnppc.so.{ver}"), mode=ctypes.RTLD_GLOBAL)
                return ctypes.CDLL(str(lib / f"libnppif.so.{ver}"))
    for ver in ("13", "12"):
        try:
            ctypes.CDLL(f"libnppc.so.{ver}", mode=ctypes.RTLD_GLOBAL)
            return ctypes.CDLL(f"libnppif.so.{ver}")
        except OSError:
            pass
    raise ImportError("NPP not installed (pip install nvidia-npp: libnppif is ~105 MiB)")


def _peer_npp(shape) -> dict:
    import ctypes

    import torch

    from arraygen.gaussian import gaussian_kernel1d

    lib = _npp_lib()

    class Size(ctypes.Structure):
        _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int)]

    class Point(ctypes.Structure):
        _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int)]

    class Ctx(ctypes.Structure):
        _fields_ = [("hStream", ctypes.c_void_p), ("nCudaDeviceId", ctypes.c_int),
                    ("nMultiProcessorCount", ctypes.c_int),
                    ("nMaxThreadsPerMultiProcessor", ctypes.c_int),
                    ("nMaxThreadsPerBlock", ctypes.c_int), ("nSharedMemPerBlock", ctypes.c_size_t),
                    ("nCudaDevAttrComputeCapabilityMajor", ctypes.c_int),
                    ("nCudaDevAttrComputeCapabilityMinor", ctypes.c_int),
                    ("nStreamFlags", ctypes.c_uint), ("nReserved0", ctypes.c_uint)]

    fn = lib.nppiFilterGaussAdvancedBorder_32f_C1R_Ctx
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, Size, Point, ctypes.c_void_p, ctypes.c_int,
                   Size, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, Ctx]
    props = torch.cuda.get_device_properties(0)
    ctx = Ctx(ctypes.c_void_p(torch.cuda.current_stream().cuda_stream), 0,
              props.multi_processor_count, props.max_threads_per_multi_processor, 1024,
              49152, props.major, props.minor, 0, 0)
    torch.manual_seed(0)
    x = torch.randn(shape, device="cuda", dtype=torch.float32)
    y = torch.empty_like(x)
    taps = torch.tensor(gaussian_kernel1d(SIGMA), dtype=torch.float32, device="cuda")
    h, w = shape[-2], shape[-1]
    planes = x.numel() // (h * w)
    size, step, plane = Size(w, h), 4 * w, h * w * 4
    xp, yp = x.data_ptr(), y.data_ptr()
    mirror = 4  # NPP_BORDER_MIRROR (scipy 'mirror')

    def call():
        for p in range(planes):
            st = fn(xp + p * plane, step, size, Point(0, 0), yp + p * plane, step, size,
                    taps.numel(), taps.data_ptr(), mirror, ctx)
            if st < 0:
                raise RuntimeError(f"NPP status {st}")

    call()
    torch.cuda.synchronize()
    return {"ms": bench_ms(call), "y": y, "x": x, "mode": "mirror"}


def _peer_cvcuda(shape) -> dict:
    import cvcuda
    import torch

    torch.manual_seed(0)
    x = torch.randn(shape, device="cuda", dtype=torch.float32)
    h, w = shape[-2], shape[-1]
    src = cvcuda.as_tensor(x.reshape(-1, h, w, 1), "NHWC")
    r = int(4.0 * SIGMA + 0.5)
    fn = lambda: cvcuda.gaussian(src, (2 * r + 1, 2 * r + 1), (SIGMA, SIGMA),
                                 cvcuda.Border.REFLECT101)
    out = fn()
    torch.cuda.synchronize()
    y = torch.as_tensor(out.cuda(), device="cuda").reshape(shape)
    return {"ms": bench_ms(fn), "y": y, "x": x, "mode": "mirror"}


def _peer_main(name: str, size: str) -> None:
    """Child process: time one peer, print one JSON line."""
    import scipy.ndimage as ndi

    shape = tuple(int(v) for v in size.split("x"))
    try:
        res = {"npp": _peer_npp, "cvcuda": _peer_cvcuda}[name](shape)
    except Exception as exc:  # noqa: BLE001 (any failure is a row saying why)
        print(json.dumps({"why": f"{type(exc).__name__}: {str(exc)[:100]}"}))
        return
    x0 = res["x"].reshape((-1,) + shape[-2:])[0].double().cpu().numpy()
    want = ndi.gaussian_filter(x0, SIGMA, mode=res["mode"])
    print(json.dumps({"ms": res["ms"], "err": _rel_err(res["y"], want)}))


def _bench_shape(shape, quick, rows):
    import cupy
    import cupyx.scipy.ndimage as cndi
    import scipy.ndimage as ndi
    import torch

    from arraygen import _dispatch
    from arraygen.backends import available
    from arraygen.gaussian import gaussian_filter, gaussian_filter_fft, gaussian_kernel1d
    from asv_benchmarks.compare.bench_gaussian import torch_separable

    size = "x".join(map(str, shape))
    n = int(np.prod(shape))
    torch.manual_seed(0)
    xt = torch.randn(shape, device="cuda", dtype=torch.float32)
    xc = cupy.from_dlpack(xt)
    want = ndi.gaussian_filter(xt[0, 0].double().cpu().numpy(), SIGMA)
    gbs = lambda ms: 8.0 * n / (ms * 1e-3) / 1e9
    ceiling = copy_bandwidth_gbs()
    rep = 60 if quick else 200

    peer_fn = lambda: cndi.gaussian_filter(xc, (0, 0, SIGMA, SIGMA))
    peer_ms = bench_ms(peer_fn, rep_ms=rep)
    peer = gbs(peer_ms)
    usable = {b for b, why in available().items() if why is None}
    taps = gaussian_kernel1d(SIGMA)[::-1].copy()
    for label, backend, tuning in VARIANTS:
        if backend not in usable:
            continue
        x_in = xt if backend == "triton" else xc
        with _tuning(backend).override(**tuning):
            fn = lambda x_in=x_in, backend=backend: gaussian_filter(
                x_in, SIGMA, backend=backend)
            try:
                err = _rel_err(fn(), want)
                ms = bench_ms(fn, rep_ms=rep)
            except Exception as exc:  # noqa: BLE001 (a failing variant is reported)
                print(f"gaussian_filter {label} {size}: {type(exc).__name__}: {exc}")
                continue
            rows.append(row("gaussian_filter", label, size, ms, "GB/s", gbs(ms), ceiling,
                            "cupyx.ndimage", peer, err))
            if not tuning:  # the launcher alone: the public op's Python overhead apart
                launcher = _dispatch.kernel("gaussian_filter", backend)
                kfn = lambda x_in=x_in, launcher=launcher: launcher(
                    x_in, (taps, taps), axes=(2, 3), mode="reflect", cval=0.0)
                ms = bench_ms(kfn, rep_ms=rep)
                rows.append(row("gaussian_filter (kernel)", label, size, ms, "GB/s", gbs(ms),
                                ceiling, "cupyx.ndimage", peer, _rel_err(kfn(), want)))
    torch_fn = lambda: torch_separable(xt, SIGMA)
    ms = bench_ms(torch_fn, rep_ms=rep)
    rows.append(row("gaussian_filter", "peer:torch", size, ms, "GB/s", gbs(ms), ceiling,
                    "cupyx.ndimage", peer, _rel_err(torch_fn(), want)))
    rows.append(row("gaussian_filter", "peer:cupyx", size, peer_ms, "GB/s", peer, ceiling,
                    None, None, _rel_err(peer_fn(), want)))
    for name in ("npp", "cvcuda"):
        res = _peer_subprocess(name, shape)
        if "why" in res:
            print(f"peer {name} {size}: not measured ({res['why']})")
            rows.append(row("gaussian_filter", f"peer:{name}", size, float("nan"), "GB/s",
                            float("nan"), ceiling, f"n/a: {res['why']}"))
        else:
            rows.append(row("gaussian_filter mirror", f"peer:{name}", size, res["ms"], "GB/s",
                            gbs(res["ms"]), ceiling, "cupyx.ndimage", peer, res["err"]))
    fft_fn = lambda: gaussian_filter_fft(xt, SIGMA)
    ms = bench_ms(fft_fn, rep_ms=rep)
    rows.append(row("gaussian_filter_fft", "torch.fft", size, ms, "GB/s", gbs(ms), ceiling,
                    "cupyx.ndimage", peer, None))
    xt = xc = None  # free the inputs before the next size
    torch.cuda.empty_cache()


def run(quick: bool = False) -> list[dict]:
    rows: list[dict] = []
    _bench_shape((16, 3, 1024, 1024), quick, rows)
    if not quick:
        _bench_shape((16, 3, 256, 256), quick, rows)
    return rows


if __name__ == "__main__":
    if "--peer" in sys.argv:
        i = sys.argv.index("--peer")
        _peer_main(sys.argv[i + 1], sys.argv[i + 2])
    else:
        for r in run(quick="--quick" in sys.argv):
            print(r)
