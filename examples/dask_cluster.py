"""arraygen on Dask: a dask array in, a dask array out, the ordinary kernels on every chunk.

On a laptop (NumPy chunks, numba_cpu kernels in each worker)::

    python examples/dask_cluster.py

On a GPU node, one worker per GPU with CuPy chunks (needs ``pip install dask-cuda cupy-cuda13x``;
the cupy/triton kernels run inside every task)::

    python examples/dask_cluster.py --cuda

Multi-node: start a scheduler and workers with any Dask deployment (``dask scheduler`` /
``dask worker`` or ``dask-cuda-worker``, dask-jobqueue, dask-kubernetes) and pass its address
with ``--scheduler tcp://host:8786``; nothing else changes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="arraygen on a Dask cluster")
    parser.add_argument("--cuda", action="store_true",
                        help="dask_cuda.LocalCUDACluster with CuPy chunks")
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler")
    parser.add_argument("-n", type=int, default=200_000, help="points (rows of x)")
    parser.add_argument("--chunks", type=int, default=4)
    args = parser.parse_args(argv)

    import dask.array as da
    import distributed

    import arraygen as ag

    if args.scheduler:
        client = distributed.Client(args.scheduler)
    elif args.cuda:
        from dask_cuda import LocalCUDACluster

        client = distributed.Client(LocalCUDACluster())
    else:
        client = distributed.Client(distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                                             dashboard_address=None))
    print(client)

    gen = np.random.default_rng(0)
    x = gen.random((args.n, 3), dtype=np.float32)
    y = gen.random((2000, 3), dtype=np.float32)
    v = gen.random(2000, dtype=np.float32)
    xd = da.from_array(x, chunks=(-(-args.n // args.chunks), 3))
    if args.cuda:
        import cupy as cp

        xd = xd.map_blocks(cp.asarray)
        y, v = cp.asarray(y), cp.asarray(v)
    xd = xd.persist()

    # the Gaussian-kernel matvec: one task per row chunk, y and v broadcast once
    t0 = time.perf_counter()
    out = ag.kernel_matvec(xd, y, v, beta=10.0)
    print(f"kernel_matvec: {type(out).__name__} of {out.shape}, "
          f"{len(out.__dask_graph__())} tasks")
    result = out.compute()
    print(f"  computed in {time.perf_counter() - t0:.2f} s; first values {result[:3]}")

    # a Gaussian filter on a chunked image stack: halo exchange of the filter radius
    images = da.random.random((8, 3, 512, 512), chunks=(2, 3, 256, 256)).astype(np.float32)
    if args.cuda:
        images = images.map_blocks(cp.asarray)
    smooth = ag.gaussian_filter(images, 2.0)
    print(f"gaussian_filter: {smooth.shape}, mean {float(smooth.mean().compute()):.4f}")

    # Gibbs sweeps of a chunked lattice: halo exchange every few sweeps, the same spins as
    # the in-memory call (each site draws the Philox uniform of its global index)
    from arraygen.gibbs import StencilIsing

    L = 1024
    model = StencilIsing.nearest_neighbour((L, L), coupling=0.44)
    spins = da.ones((1, 1, L, L), dtype=np.int8, chunks=(1, 1, L // 2, L // 2))
    if args.cuda:
        spins = spins.map_blocks(cp.asarray)
    spins = ag.gibbs_sweeps(model, spins, n_sweeps=20, beta=1.0, rng=0,
                            sweeps_per_exchange=5)
    print(f"gibbs_sweeps: {spins.shape}, {len(spins.__dask_graph__())} tasks, "
          f"magnetisation {float(spins.astype(np.float32).mean().compute()):.4f}")
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
