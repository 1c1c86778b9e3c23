r"""Dask path of :func:`arraygen.gibbs.gibbs_sweeps`: halo exchange every S sweeps.

The lattice (B, C, H, W) is chunked along the chains B and the rows and columns H, W (the
channels C stay in one chunk). Every ``S = sweeps_per_exchange`` sweeps each chunk is extended
by a halo of

.. math:: \text{depth} = S \cdot n_\text{colours} \cdot r

sites on each side of H (and W), ``r`` the stencil's largest row (column) offset, rounded up to
a multiple of the colouring's period; one colour phase can only spoil the sites within ``r``
of a spoiled one, so after S sweeps the chunk's own sites are exact. Chunk origins are aligned
to the colouring's period (the chunking is adjusted when not), so a haloed chunk carries the
global colouring, and every site draws the Philox uniform of its global flat index (the
launchers' ``origin``): the result is bitwise equal to the in-memory call, whatever the
chunking and S. Couplings and bias are haloed once and reused by every exchange.

The graph has one task per chunk and exchange, plus one per chunk for the haloed couplings
(and bias): O(chunks x exchanges), never O(sites).
"""

from __future__ import annotations

import math

import numpy as np

from . import random as _random
from ._validation import check_fits_dtype, check_int, check_scalar

__all__ = ["gibbs_sweeps"]


def _period(model, axis: int, n: int) -> int:
    """Smallest period of the model's colouring along grid axis 1 (rows) or 2 (columns)."""
    pattern = model.color_pattern
    if pattern is not None:
        coef = pattern[2] if axis == 1 else pattern[3]
        return pattern[0] // math.gcd(coef, pattern[0]) if coef % pattern[0] else 1
    colors = model._colors_np
    for p in range(1, n + 1):
        if n % p == 0 and np.array_equal(np.roll(colors, p, axis=axis), colors):
            return p
    return n  # pragma: no cover - p = n always matches


def _radius(model, axis: int) -> int:
    return max((abs(o[axis]) for o in model.offsets), default=0)


def _aligned(chunks, period: int, depth: int) -> tuple[int, ...]:
    """Chunk sizes whose boundaries are multiples of ``period`` and whose chunks hold at least
    ``depth`` sites (neighbours are only one chunk away); boundaries are moved or dropped."""
    total = sum(chunks)
    least = max(depth, 1)
    bounds, prev, acc = [], 0, 0
    for c in chunks[:-1]:
        acc += c
        b = int(round(acc / period)) * period
        if b - prev >= least and total - b >= least:
            bounds.append(b)
            prev = b
    edges = [0] + bounds + [total]
    return tuple(e - s for s, e in zip(edges, edges[1:]))


def _default_sweeps(n_sweeps: int, n_colors: int, radii, chunks) -> int:
    """The most sweeps per exchange that keep the halo within a quarter of the smallest
    chunk of every split axis (at least 1; all of them when no axis is split)."""
    best = n_sweeps
    for r, ch in zip(radii, chunks):
        if len(ch) > 1 and r:
            best = min(best, min(ch) // (4 * n_colors * r))
    return max(1, best)


# --------------------------------------------------------------------------------------------
# Tasks (module level: pickled to the workers)


def _assemble(tiles, dy: int, dx: int):
    """One array from a 3 x 3 neighbourhood of blocks (None: no neighbour): the centre with
    ``dy`` rows and ``dx`` columns of its neighbours around it (axes -2, -1)."""
    import array_api_compat

    xp = array_api_compat.array_namespace(tiles[1][1])
    ys = (slice(-dy, None) if dy else None, slice(None), slice(None, dy) if dy else None)
    xs = (slice(-dx, None) if dx else None, slice(None), slice(None, dx) if dx else None)
    rows = []
    for a in range(3):
        if ys[a] is None or tiles[a][1] is None:
            continue
        row = [tiles[a][b][..., ys[a], xs[b]] for b in range(3)
               if xs[b] is not None and tiles[a][b] is not None]
        rows.append(row[0] if len(row) == 1 else xp.concat(row, axis=-1))
    return rows[0] if len(rows) == 1 else xp.concat(rows, axis=-2)


def _halo_task(tiles, dy, dx):
    return _assemble(tiles, dy, dx)


def _colours(spec, Y0: int, X0: int, h: int, w: int):
    """int8 colours (C, h, w) of the window at global (Y0, X0) and its linear pattern or None."""
    C, H, W = spec["shape"]
    ys = np.arange(Y0, Y0 + h, dtype=np.int64) % H
    xs = np.arange(X0, X0 + w, dtype=np.int64) % W
    pattern = spec["pattern"]
    if pattern is not None:
        n, a, b, d = pattern
        # (a c + b y + d x) mod n from per-axis residues (small integers, no int64 grid)
        cy = ((a * np.arange(C)[:, None] + b * ys[None, :]) % n).astype(np.int16)
        colors = ((cy[:, :, None] + ((d * xs) % n).astype(np.int16)[None, None, :]) % n)
        # the kernels' pattern applies to the window when it is aligned with the period
        aligned = (np.array_equal((b * np.arange(h)) % n, (b * ys) % n)
                   and np.array_equal((d * np.arange(w)) % n, (d * xs) % n))
        return colors.astype(np.int8), (pattern if aligned else None)
    tile = spec["tile"]
    colors = tile[:, ys % tile.shape[1]][:, :, xs % tile.shape[2]]
    return np.ascontiguousarray(colors, dtype=np.int8), None


def _open_window(xp, j, offsets, device):
    """Couplings (K, C, h, w) with the edges (i, i + o_k) that leave the window set to 0."""
    K, C, h, w = (int(v) for v in j.shape)
    rows = []
    for k, (dc, dy, dx) in enumerate(offsets):
        keep = np.zeros((C, h, w), dtype=bool)
        keep[max(0, -dc):C - max(0, dc), max(0, -dy):h - max(0, dy),
             max(0, -dx):w - max(0, dx)] = True
        zero = xp.zeros((), dtype=j.dtype, device=device)
        rows.append(xp.where(xp.asarray(keep, device=device), j[k, ...], zero))
    return xp.stack(rows) if rows else j


def _chunk_model(spec, j, h, Y0: int, X0: int):
    """A StencilIsing on the haloed window: the global couplings and colouring there."""
    import array_api_compat

    from . import _array_api as aa
    from . import gibbs

    xp = array_api_compat.array_namespace(j)
    C, hh, ww = (int(v) for v in j.shape[1:])
    periodic = spec["periodic"]
    m = object.__new__(gibbs.StencilIsing)
    m.offsets, m.periodic = spec["offsets"], periodic
    m.boundary = "periodic" if periodic else "open"
    m.shape = (C, hh, ww)
    m.couplings, m.bias, m.dtype = j, h, j.dtype
    m._xp, m._device = xp, aa.device(j)
    m._colors_np, m.color_pattern = _colours(spec, Y0, X0, hh, ww)
    m.n_colors = spec["n_colors"]
    if periodic:  # a periodic window: wrong only at its edges, which the halo absorbs
        m._couplings_eff = j
    else:  # the kernels want zero couplings on the edges that leave the window
        m._couplings_eff = _open_window(xp, j, m.offsets, m._device)
    m._colors_dev, m._moved = None, {}
    m._pm_couplings = m._msc = None  # the multi-spin kernels take no stream origin
    return m


def _wrapped_elements(shape4, spec, b0: int, Y0: int, X0: int):
    """int64 (B, C, h, w): global flat index of every site of a window of the torus."""
    C, H, W = spec["shape"]
    B, _, h, w = shape4
    b = (b0 + np.arange(B, dtype=np.int64))[:, None, None, None] * (C * H * W)
    c = np.arange(C, dtype=np.int64)[None, :, None, None] * (H * W)
    y = ((Y0 + np.arange(h, dtype=np.int64)) % H)[None, None, :, None] * W
    x = ((X0 + np.arange(w, dtype=np.int64)) % W)[None, None, None, :]
    return b + c + y + x


def _periodic_sweeps(xp, spec, model, s, b0, Y0, X0):
    """Sweeps of a periodic window, one at a time with the uniforms of its wrapped sites."""
    from . import _array_api as aa
    from . import gibbs
    from .backends._philox_xp import uniform_f32_at

    e = xp.asarray(_wrapped_elements(tuple(s.shape), spec, b0, Y0, X0), device=aa.device(s))
    key = spec["key"]
    for t in range(spec["n_sweeps"]):
        k = key.advance(t)
        u = xp.astype(uniform_f32_at(xp, e, *k.counter_words, *k.key_words), model.dtype)
        s = gibbs._sweeps(xp, model, s, n_sweeps=1, beta=spec["beta"], gen=None,
                          uniforms=u[None, ...], backend=spec["backend"])
    return s


def _sweep_task(spec, block, tiles, j, h):
    """``spec["n_sweeps"]`` sweeps of one chunk with its halo; returns the chunk's sites."""
    import array_api_compat

    from . import gibbs

    centre = tiles[1][1]
    xp = array_api_compat.array_namespace(centre)
    if spec["check"]:
        gibbs._check_spin_values(xp, centre, "spins")
    dy, dx = spec["depth"]
    s = _assemble(tiles, dy, dx)
    # per-block geometry: (b0, Y0, X0) of the haloed window and the trims
    b0, Y0, X0, top, left = block
    if not array_api_compat.array_namespace(j) is xp:  # e.g. NumPy couplings, CuPy spins
        j, h = gibbs._move(xp, j, None), gibbs._move(xp, h, None)
    model = _chunk_model(spec, j, h, Y0, X0)
    C, H, W = spec["shape"]
    if not spec["periodic"]:  # the window lies inside the grid: an affine stream origin
        origin = (((b0 * C) * H + Y0) * W + X0, C * H * W, H * W, W)
        out = gibbs._sweeps(xp, model, s, n_sweeps=spec["n_sweeps"], beta=spec["beta"],
                            gen=spec["key"], uniforms=None, backend=spec["backend"],
                            origin=origin)
    else:  # halos wrap around the torus: each site draws the uniform of its wrapped index
        out = _periodic_sweeps(xp, spec, model, s, b0, Y0, X0)
    return out[..., top:top + centre.shape[-2], left:left + centre.shape[-1]]


# --------------------------------------------------------------------------------------------
# Graph


def _neighbours(name, nblocks, ib, iy, ix, halo, periodic, lead=None):
    """3 x 3 nested list of block keys around (iy, ix) (None where there is no neighbour)."""
    ny, nx = nblocks
    out = []
    for a in (-1, 0, 1):
        row = []
        for b in (-1, 0, 1):
            y, x = iy + a, ix + b
            if (a and not halo[0]) or (b and not halo[1]):
                row.append(None)
                continue
            if periodic:
                y, x = y % ny, x % nx
            elif not (0 <= y < ny and 0 <= x < nx):
                row.append(None)
                continue
            row.append((name,) + (lead if lead is not None else (ib,)) + (y, x))
        out.append(row)
    return out


def _haloed(arr, depth, halo, periodic, token: str):
    """``arr`` (L0, L1, H, W) with every block extended by its halo: a dict layer keyed like
    ``arr``'s blocks (the couplings and bias, haloed once for every exchange)."""
    from dask.base import tokenize

    name = f"gibbs-halo-{token}-" + tokenize(arr.name, depth, halo, periodic)
    ny, nx = arr.numblocks[-2:]
    lead = arr.numblocks[:-2]
    dsk = {}
    for idx in np.ndindex(*lead):
        for iy in range(ny):
            for ix in range(nx):
                tiles = _neighbours(arr.name, (ny, nx), None, iy, ix, halo, periodic,
                                    lead=tuple(idx))
                dsk[(name,) + tuple(idx) + (iy, ix)] = (_halo_task, tiles, depth[0], depth[1])
    return name, dsk


def _lattice_array(a: np.ndarray, chunks):
    """The model's NumPy array ``a`` as a dask array of ``chunks``: scattered to the cluster
    once when a distributed client is running (not embedded in the graph), else wrapped."""
    import dask
    import dask.array as da

    a = np.ascontiguousarray(a)
    client = None
    if a.nbytes >= 1 << 20:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
    if client is None:  # name=False: no hash of the whole array per call
        return da.from_array(a, chunks=chunks, name=False)
    whole = da.from_delayed(dask.delayed(client.scatter(a)), shape=a.shape, dtype=a.dtype,
                            meta=a[(slice(0, 0),) * a.ndim])
    return whole.rechunk(chunks)


def gibbs_sweeps(model, spins, *, n_sweeps=1, beta=1.0, rng=None, uniforms=None,
                 sweeps_per_exchange=None, backend=None):
    """Dask path of :func:`arraygen.gibbs.gibbs_sweeps` (see the module docstring)."""
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    from . import gibbs

    shape = model.shape
    if spins.ndim < 3 or tuple(spins.shape[-3:]) != shape:
        raise ValueError(f"`spins` must have shape (..., C, H, W) with (C, H, W) = {shape}; "
                         f"got {tuple(spins.shape)}")
    if model.bias.ndim == 4 and tuple(spins.shape) != tuple(model.bias.shape):
        raise ValueError(f"`spins` must have the shape of the per-chain `bias` "
                         f"{tuple(model.bias.shape)}; got {tuple(spins.shape)}")
    n_sweeps = check_int(n_sweeps, "n_sweeps", minimum=0)
    beta = check_scalar(beta, "beta", nonnegative=True)
    check_fits_dtype(model._xp, 2.0 * beta, model.dtype, "beta", what="2 * beta")
    if uniforms is not None:
        raise TypeError("`uniforms` cannot be given with dask `spins`: every chunk draws its "
                        "part of the Philox stream of `rng` (pass an int seed or Key)")
    key = _random.as_key(rng)
    if isinstance(key, np.random.Generator):
        raise TypeError("`rng` must be an int seed or arraygen.random.Key for dask `spins` (a "
                        "NumPy Generator cannot give every chunk its part of one stream)")
    if sweeps_per_exchange is not None:
        sweeps_per_exchange = check_int(sweeps_per_exchange, "sweeps_per_exchange", minimum=1)
    if n_sweeps == 0:
        return spins.copy()
    C, H, W = shape
    B = math.prod(spins.shape[:-3])
    s = spins.reshape((B,) + shape) if spins.ndim != 4 else spins
    s = s.rechunk({1: -1})
    n_col = model.n_colors
    radii = (_radius(model, 1), _radius(model, 2))
    periods = (_period(model, 1, H), _period(model, 2, W))
    S = sweeps_per_exchange or _default_sweeps(n_sweeps, n_col, radii, s.chunks[2:])
    S = min(S, n_sweeps)
    depth, chunks = [], []
    for ax, (r, p) in enumerate(zip(radii, periods)):
        d = -(-S * n_col * r // p) * p  # rounded up to the colouring's period
        ch = _aligned(s.chunks[2 + ax], p, d)
        if len(ch) == 1:  # one chunk: the window is the whole axis (wrapped if periodic)
            d = 0
        depth.append(d)
        chunks.append(ch)
    s = s.rechunk({2: chunks[0], 3: chunks[1]})
    halo = (depth[0] > 0, depth[1] > 0)
    periodic = model.periodic

    # couplings and bias: chunked like the lattice, haloed once
    j = _lattice_array(gibbs.aa.to_numpy(model._couplings_eff),
                       (-1, -1, chunks[0], chunks[1]))
    hb = gibbs.aa.to_numpy(model.bias)
    if hb.ndim == 3:
        h = _lattice_array(hb[None], (1, -1, chunks[0], chunks[1]))
    else:
        h = _lattice_array(hb.reshape((B,) + shape), (s.chunks[0], -1, chunks[0], chunks[1]))
    jname, jdsk = _haloed(j, depth, halo, periodic, "couplings")
    hname, hdsk = _haloed(h, depth, halo, periodic, "bias")
    layers = {jname: jdsk, hname: hdsk}
    deps = {jname: {j.name}, hname: {h.name}}
    nb, ny, nx = s.numblocks[0], s.numblocks[2], s.numblocks[3]
    b_starts = np.cumsum((0,) + s.chunks[0])
    y_starts = np.cumsum((0,) + s.chunks[2])
    x_starts = np.cumsum((0,) + s.chunks[3])
    spec_base = {"offsets": model.offsets, "periodic": periodic, "shape": shape,
                 "n_colors": n_col, "depth": tuple(depth), "beta": beta, "backend": backend,
                 "pattern": model.color_pattern,
                 "tile": None if model.color_pattern is not None else np.ascontiguousarray(
                     model._colors_np[:, :periods[0], :periods[1]])}
    prev = s.name
    t0 = 0
    while t0 < n_sweeps:
        k = min(S, n_sweeps - t0)
        spec = dict(spec_base, n_sweeps=k, key=key.advance(t0), check=t0 == 0)
        name = "gibbs-sweeps-" + tokenize(prev, jname, hname, spec)
        dsk = {}
        for ib in range(nb):
            for iy in range(ny):
                for ix in range(nx):
                    top = depth[0] if halo[0] and (periodic or iy > 0) else 0
                    left = depth[1] if halo[1] and (periodic or ix > 0) else 0
                    block = (int(b_starts[ib]), int(y_starts[iy]) - top,
                             int(x_starts[ix]) - left, top, left)
                    tiles = _neighbours(prev, (ny, nx), None, iy, ix, halo, periodic,
                                        lead=(ib, 0))
                    hkey = (hname, ib if hb.ndim == 4 else 0, 0, iy, ix)
                    dsk[(name, ib, 0, iy, ix)] = (_sweep_task, spec, block, tiles,
                                                  (jname, 0, 0, iy, ix), hkey)
        layers[name] = dsk
        deps[name] = {prev, jname, hname}
        prev = name
        t0 += k
    for coll in (s, j, h):
        layers.update(coll.__dask_graph__().layers)
        deps.update(coll.__dask_graph__().dependencies)
    graph = HighLevelGraph(layers, deps)
    out = da.Array(graph, prev, chunks=s.chunks, dtype=s.dtype, meta=s._meta)
    return out.reshape(spins.shape) if spins.ndim != 4 else out
