"""GPU benchmark of gibbs_sweeps: Ising models on one 4096 x 4096 periodic grid, float32.

Models: "nn" = nearest neighbour, K = 2 offsets, per-site couplings J ~ 0.4 + 0.1 N(0,1)
(2 colours); "local8" = 3x3 local stencil plus 4 skip links at distance 3, K = 8 offsets,
per-site couplings of scale 0.1 (4 colours). Bias h ~ 0.1 N(0, 1) per site.

Floor: one sweep must read every spin and write it (int8: 2 bytes per update), read every
coupling once (4 K bytes per update: each edge weight belongs to one site) and the bias
(4 bytes): 14 bytes/update for "nn" and 38 for "local8"; at the measured copy bandwidth
(~3.0 TB/s on an H100) about 2.1e11 and 7.9e10 updates/s. ``ceil`` is the fraction of that
floor rate. The peer is the roll-based colour-by-colour heat bath a torch user writes (float32
spins, torch.rand uniforms), timed in the same run. ``rel err`` is the fraction of spins that
differ from arraygen's Array-API path (torch on the GPU, the same Philox stream) after 3 sweeps
on a 512 x 512 grid: 0 means identical decisions.

+-J rows (``_bench_plus_minus_j``, issue 19 item 4): nearest-neighbour models with couplings
+-0.44 (random signs) and uniform 0.44, periodic 4096^2 and 8192^2, float32, in flips/ns: the
float-coupling CuPy kernel (``multispin=False``) beside the multi-spin-coded kernels
(``arraygen/backends/cupy/gibbs_msc.cu``: the default, the one-launch-per-colour kernel and
the band kernel with 8/16/32 rows per band), 10 sweeps per call and 100.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_common import bench_ms, copy_bandwidth_gbs, row

L = 4096
SWEEPS = 10
BACKENDS = ("cupy", "triton", "numba_cuda")
#: CuPy sweep kernels timed side by side (arraygen.backends.cupy.gibbs.Tuning.kernel)
CUPY_KERNELS = ("auto", "stream32x16", "fused", "phase")
LONG_SWEEPS = 100  # one call of this many sweeps: the per-call spin check is amortised


def _model(name, size, device="cuda"):
    import torch

    from arraygen.gibbs import StencilIsing, local_offsets, nearest_neighbour_offsets

    gen = torch.Generator(device=device).manual_seed(0)
    if name == "nn":
        offsets, j0, js = nearest_neighbour_offsets(), 0.4, 0.1
    else:
        offsets, j0, js = local_offsets(1, skip=(3,)), 0.0, 0.1
    K = len(offsets)
    j = j0 + js * torch.randn((K, 1, size, size), generator=gen, device=device)
    h = 0.1 * torch.randn((1, size, size), generator=gen, device=device)
    return StencilIsing(offsets, j, h, boundary="periodic")


def _spins(size, device="cuda"):
    import torch

    gen = torch.Generator(device=device).manual_seed(1)
    return (2 * torch.randint(0, 2, (1, 1, size, size), generator=gen, device=device)
            - 1).to(torch.int8)


def _torch_roll_sweeps(model, s, n_sweeps, beta=1.0):
    """The peer: colour-by-colour heat bath with torch.roll (float32 spins, torch.rand)."""
    import torch

    j = model.couplings
    h = model.bias
    masks = [model.colors == c for c in range(model.n_colors)]
    for _ in range(n_sweeps):
        for mask in masks:
            g = h.expand_as(s).clone()
            for k, (dc, dy, dx) in enumerate(model.offsets):
                g += j[k] * torch.roll(s, shifts=(-dc, -dy, -dx), dims=(-3, -2, -1))
                g += torch.roll(j[k] * s, shifts=(dc, dy, dx), dims=(-3, -2, -1))
            p = torch.sigmoid(2.0 * beta * g)
            new = torch.where(torch.rand_like(s) < p, 1.0, -1.0)
            s = torch.where(mask, new, s)
    return s


def _mismatch(name, backend) -> float:
    """Fraction of spins differing from the Array-API path after 3 sweeps (512 x 512)."""
    from arraygen.gibbs import gibbs_sweeps

    model = _model(name, 512)
    s = _spins(512)
    a = gibbs_sweeps(model, s, n_sweeps=3, rng=7, backend=backend)
    b = gibbs_sweeps(model, s, n_sweeps=3, rng=7, backend="array_api")
    return float((a != b).float().mean())


def _bench_model(name: str, rep: float, bw: float) -> list[dict]:
    import torch

    from arraygen.backends import available
    from arraygen.gibbs import gibbs_sweeps

    rows = []
    model = _model(name, L)
    s = _spins(L)
    floor_bytes = 2 + 4 * model.n_offsets + 4
    ceiling = bw / floor_bytes
    updates = SWEEPS * L * L
    size = f"{L}x{L} K={model.n_offsets} c={model.n_colors}"
    sf = s.to(torch.float32)
    peer_ms = bench_ms(lambda: _torch_roll_sweeps(model, sf, SWEEPS), rep_ms=rep)
    peer = updates / (peer_ms * 1e-3)
    rows.append(row("gibbs_sweeps", "peer:torch_roll", size, peer_ms, "upd/s", peer, ceiling,
                    None, None, None))
    variants = [(b, None) for b in BACKENDS if b != "cupy"]
    variants += [("cupy", k) for k in CUPY_KERNELS]
    for backend, choice in variants:
        if available()[backend] is not None:
            continue
        forced = {}
        if choice is not None:
            from arraygen.backends.cupy import gibbs as cupy_gibbs

            forced = {"kernel": choice}

        def fn(b=backend, forced=forced):
            if not forced:
                return gibbs_sweeps(model, s, n_sweeps=SWEEPS, rng=3, backend=b)
            with cupy_gibbs.TUNING.override(**forced):
                return gibbs_sweeps(model, s, n_sweeps=SWEEPS, rng=3, backend=b)

        try:
            fn()
            ms = bench_ms(fn, rep_ms=rep)
            err = _mismatch(name, backend)
        except Exception:  # noqa: BLE001 - report the failure, go on with the other backends
            traceback.print_exc()
            continue
        label = backend if choice in (None, "auto") else f"{backend}:{choice}"
        rows.append(row("gibbs_sweeps", label, size, ms, "upd/s", updates / (ms * 1e-3),
                        ceiling, "torch_roll", peer, err))
    if available()["cupy"] is None:
        ms = bench_ms(lambda: gibbs_sweeps(model, s, n_sweeps=LONG_SWEEPS, rng=3, backend="cupy"),
                      rep_ms=rep)
        rows.append(row("gibbs_sweeps", f"cupy x{LONG_SWEEPS}", size, ms, "upd/s",
                        LONG_SWEEPS * L * L / (ms * 1e-3), ceiling, "torch_roll", peer, None))
    ms = bench_ms(lambda: gibbs_sweeps(model, s, n_sweeps=2, rng=3, backend="array_api"),
                  rep_ms=rep)
    rows.append(row("gibbs_sweeps", "array_api", size, ms, "upd/s", 2 * L * L / (ms * 1e-3),
                    ceiling, "torch_roll", peer, None))
    return rows


#: +-J rows: grid sides, the ising-gpu reference rate (flips/ns per H100, multi-spin coding,
#: uniform couplings, NVIDIA/ising-gpu) used as the ceiling, band rows of the msc sweep kernel
PM_SIZES = (4096, 8192)
ISING_GPU_FLIPS_NS = 900.0
PM_BAND_ROWS = (8, 16, 32)


def _pm_model(size, signed=True, device="cuda"):
    """+-J nearest-neighbour model (random signs, |J| = 0.44, h = 0), periodic, float32."""
    import torch

    from arraygen.gibbs import StencilIsing, nearest_neighbour_offsets

    gen = torch.Generator(device=device).manual_seed(2)
    sign = torch.ones((2, 1, size, size), device=device)
    if signed:
        sign = torch.where(torch.rand((2, 1, size, size), generator=gen, device=device) < 0.5,
                           -1.0, 1.0)
    h = torch.zeros((1, size, size), device=device)
    return StencilIsing(nearest_neighbour_offsets(), 0.44 * sign, h, boundary="periodic")


def _pm_rows(size: int, signed: bool, rep: float) -> list[dict]:
    """Rows of one +-J (or uniform) model: float-coupling kernel, then the msc variants."""
    from arraygen.backends.cupy import gibbs_msc
    from arraygen.gibbs import gibbs_sweeps

    model = _pm_model(size, signed)
    assert model._msc is not None
    s = _spins(size)
    desc = f"{size}x{size} {'+-J' if signed else 'uniform J'}"

    def call(n, ms_flag=None, **tune):
        with gibbs_msc.TUNING.override(**tune):
            return gibbs_sweeps(model, s, n_sweeps=n, rng=3, multispin=ms_flag, backend="cupy")

    out = []
    base = call(SWEEPS, False)
    ms = bench_ms(lambda: call(SWEEPS, False), rep_ms=rep)
    flips_float = SWEEPS * size * size / (ms * 1e6)
    out.append(row("gibbs_sweeps", "cupy:float", desc, ms, "flips/ns", flips_float,
                   ISING_GPU_FLIPS_NS, None, None, None))
    variants = [("cupy:msc", {}), ("cupy:msc phase", {"kernel": "phase"})]
    if signed:
        variants += [(f"cupy:msc rows={r}", {"kernel": "sweep", "rows": r}) for r in PM_BAND_ROWS]
    for name, tune in variants:
        err = float((call(SWEEPS, None, **tune) != base).float().mean())
        ms = bench_ms(lambda tune=tune: call(SWEEPS, None, **tune), rep_ms=rep)
        out.append(row("gibbs_sweeps", name, desc, ms, "flips/ns",
                       SWEEPS * size * size / (ms * 1e6), ISING_GPU_FLIPS_NS, "cupy:float",
                       flips_float, err))
    ms = bench_ms(lambda: call(LONG_SWEEPS), rep_ms=rep)
    out.append(row("gibbs_sweeps", f"cupy:msc x{LONG_SWEEPS}", desc, ms, "flips/ns",
                   LONG_SWEEPS * size * size / (ms * 1e6), ISING_GPU_FLIPS_NS, "cupy:float",
                   flips_float, None))
    return out


def _bench_plus_minus_j(rep: float, quick: bool) -> list[dict]:
    """Issue 19 item 4: the multi-spin-coded +-J path (``multispin``, cupy) beside the
    float-coupling CuPy kernel (``multispin=False``) on the same model, spins and stream, in
    flips/ns (1e9 updates/s). ``frac_ceiling``: fraction of ising-gpu's ~900 flips/ns;
    ``vs_peer``: ratio to the float-coupling kernel; ``rel_err``: fraction of spins differing
    from it after the call (identical uniforms; p differs by a rounding)."""
    import torch

    from arraygen.backends import available

    if available()["cupy"] is not None:
        return []
    out = []
    for size in PM_SIZES[:1] if quick else PM_SIZES:
        for signed in (True, False):
            try:
                out += _pm_rows(size, signed, rep)
            except Exception:  # noqa: BLE001 - report the failure, go on with the other rows
                traceback.print_exc()
            torch.cuda.empty_cache()
    return out


def run(quick: bool = False) -> list[dict]:
    import torch

    rows = []
    bw = copy_bandwidth_gbs() * 1e9
    rep = 60 if quick else 200
    for name in ("nn", "local8"):
        rows += _bench_model(name, rep, bw)
        torch.cuda.empty_cache()
    rows += _bench_plus_minus_j(rep, quick)
    return rows


if __name__ == "__main__":  # pragma: no cover
    for r in run(quick="--quick" in sys.argv):
        print(r)
