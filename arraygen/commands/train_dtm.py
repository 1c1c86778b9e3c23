"""``python -m arraygen train-dtm``: train a bit-flip diffusion model (DTM) by PCD-k.

Writes into ``--out``: ``checkpoint.npz`` (:meth:`arraygen.discrete.BitflipDTM.save`),
``samples.png`` (samples next to held-out images) and ``metrics.txt`` (the held-out Frechet
table of :func:`arraygen.plotting.pca_frechet_table`, the settings and the timings).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..cli import (UsageError, existing_file, existing_path, make_output_dir, nonnegative_int,
                   output_dir, positive_float, positive_int)

HELP = "train a bit-flip discrete diffusion model (DTM) with PCD-k on binarised digits or a .npz"
BACKENDS = ("array_api", "numba_cpu", "numba_cuda", "cupy", "triton")


def add_arguments(parser) -> None:
    parser.add_argument("--size", type=int, default=16, choices=(16, 32),
                        help="side of the binarised digits (default: %(default)s)")
    parser.add_argument("--data", default=None, type=existing_file,
                        help="a .npz of {0,1} images (N, H, W) to use instead of the digits")
    parser.add_argument("--steps", "-T", type=positive_int, default=8, dest="steps",
                        help="diffusion steps T (default: %(default)s)")
    parser.add_argument("--schedule", default="cosine", choices=("cosine", "linear"),
                        help="marginal flip schedule (default: %(default)s)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--iters", type=positive_int, default=300,
                       help="training iterations, each over all steps (default: %(default)s)")
    group.add_argument("--epochs", type=positive_float, default=None,
                       help="training length in passes over the training set (sets --iters)")
    parser.add_argument("--chains", type=positive_int, default=64,
                        help="data pairs and persistent chains per step (default: %(default)s)")
    parser.add_argument("--pcd-k", type=positive_int, default=3, dest="pcd_k",
                        help="Gibbs sweeps of the persistent chains per iteration "
                             "(default: %(default)s)")
    parser.add_argument("--sweeps", type=positive_int, default=10,
                        help="Gibbs sweeps per reverse step when sampling (default: %(default)s)")
    parser.add_argument("--coupling", default="site", choices=("site", "offset"),
                        help="couplings per site and offset, or shared per offset "
                             "(default: %(default)s)")
    parser.add_argument("--lr", type=positive_float, default=0.03,
                        help="Adam step (default: %(default)s)")
    parser.add_argument("--samples", type=positive_int, default=None,
                        help="images sampled for the metrics (default: the held-out count)")
    parser.add_argument("--seed", type=nonnegative_int, default=0,
                        help="random seed (default: %(default)s)")
    parser.add_argument("--out", default="dtm-run", type=output_dir,
                        help="output folder (default: %(default)s)")
    parser.add_argument("--backend", default=None, choices=BACKENDS,
                        help="Gibbs backend (default: automatic)")
    parser.add_argument("--resume", default=None, type=existing_path,
                        help="checkpoint (.npz, or a folder with checkpoint.npz) to continue")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def check(args) -> None:
    """Arguments argparse cannot check alone: the backend runs here, the checkpoint exists, the
    output folder can be written."""
    if args.backend is not None and args.backend != "array_api":
        from ..backends import available

        reason = available().get(args.backend)
        if reason is not None:
            usable = [k for k, v in available().items() if v is None]
            raise UsageError("--backend", f"{args.backend!r} cannot run here ({reason}); "
                                          f"usable: {usable}")
    if args.resume is not None:
        path = Path(args.resume)
        if path.is_dir() and not (path / "checkpoint.npz").is_file():
            raise UsageError("--resume", f"folder {str(path)!r} holds no checkpoint.npz")
    make_output_dir(Path(args.out), "--out")


def _load_data(args):
    import numpy as np

    from ..datasets import binarized_digits, load_binary_images

    if args.data is None:
        d = binarized_digits(args.size, seed=args.seed)
        return d.train, d.test, f"scikit-learn digits, {args.size}x{args.size}, threshold 0.4"
    try:
        images = load_binary_images(args.data)
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError("--data", f"cannot use {str(args.data)!r}: {exc}") from None
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise UsageError("--data", f"{str(args.data)!r} holds images of shape "
                                   f"{images.shape[1:]}; expected (N, H, W) or (N, 1, H, W)")
    order = np.random.default_rng(args.seed).permutation(images.shape[0])
    n_test = max(2, round(0.2 * images.shape[0]))
    if images.shape[0] - n_test < 2:
        raise UsageError("--data", f"{str(args.data)!r} holds {images.shape[0]} images; need at "
                                   "least 4")
    return images[order[n_test:]], images[order[:n_test]], f"{args.data} (80/20 split)"


def _load_checkpoint(path: Path):
    from ..discrete import BitflipDTM

    path = path / "checkpoint.npz" if path.is_dir() else path
    try:
        return BitflipDTM.load(path), path
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise UsageError("--resume", f"cannot use {str(path)!r}: {exc}") from None


def run(args) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import math

    from .. import discrete as D
    from .. import plotting
    from ..random import Key

    out = make_output_dir(Path(args.out), "--out")
    train, test, source = _load_data(args)
    if args.epochs is not None:
        args.iters = max(1, math.ceil(args.epochs * train.shape[0] / args.chains))
    if args.resume:
        model, path = _load_checkpoint(Path(args.resume))
        if tuple(model.shape) != (1, *train.shape[1:]):
            raise UsageError("--resume", f"the checkpoint's images are {tuple(model.shape)}; the "
                                         f"data's are {tuple(train.shape[1:])}")
        print(f"[train-dtm] resumed {path} at iteration {model.train_state.get('iteration', 0)}")
    else:
        model = D.BitflipDTM(train.shape[1:], T=args.steps, kind=args.schedule,
                             coupling=args.coupling)
    key = Key(args.seed)
    t0 = time.perf_counter()
    history = model.fit(train, iters=args.iters, chains=args.chains, pcd_k=args.pcd_k,
                        lr=args.lr, rng=key, progress=not args.no_progress,
                        backend=args.backend)
    t_train = time.perf_counter() - t0
    model.save(out / "checkpoint.npz")
    n = args.samples or min(test.shape[0], train.shape[0])
    t0 = time.perf_counter()
    samples = model.sample(n, sweeps=args.sweeps, rng=key.advance(2**40),
                           progress=not args.no_progress, backend=args.backend)
    t_sample = time.perf_counter() - t0
    n_components = min(16, math.prod(train.shape[1:]), train.shape[0] - 1)
    table = plotting.pca_frechet_table(train, test, samples, n_components=n_components,
                                       rng=args.seed)
    fig = plotting.sample_grid_figure({"held-out data": test[:100], "DTM samples": samples[:100]})
    fig.savefig(out / "samples.png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    settings = {k: v for k, v in vars(args).items() if k not in ("func",)}
    timing = (f"train: {model.train_state['iteration']} iterations in total "
              f"({args.iters} now, {t_train:.1f} s, {t_train / args.iters * 1e3:.1f} ms/iter); "
              f"sampling {n} images: {t_sample:.1f} s")
    grads = (f"final gradient RMS: bias {history['grad_bias_rms'][-1]:.4f}, "
             f"coupling {history['grad_coupling_rms'][-1]:.4f}")
    report = [f"# train-dtm: {source}", "", plotting.format_quality_table(table), "", timing, grads,
              f"model: T={model.T}, offsets={list(model.offsets)}, coupling={model.coupling}",
              f"settings: {json.dumps(settings, default=str)}", ""]
    (out / "metrics.txt").write_text("\n".join(report))
    print("\n".join(report))
    print(f"[train-dtm] wrote {out / 'checkpoint.npz'}, {out / 'samples.png'}, "
          f"{out / 'metrics.txt'}")
    return 0
