"""Pictures and quality tables of binary image samples (host-side NumPy, float64; matplotlib).

Used by ``python -m arraygen train-dtm`` and the demo: :func:`pca_frechet_table` (held-out
Frechet distance on PCA features) and :func:`format_quality_table` (its Markdown table),
:func:`image_grid` (images tiled into one array), :func:`sample_grid_figure` and
:func:`save_sample_grid` (matplotlib figures of such grids). matplotlib is imported only by the
two figure functions (``pip install "arraygen[plot]"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _array_api as aa
from . import random as _random
from ._validation import check_int
from .metrics import frechet_distance

__all__ = ["format_quality_table", "image_grid", "pca_frechet_table", "sample_grid_figure",
           "save_sample_grid"]


def _host_bits(images: Any, name: str) -> np.ndarray:
    """``images`` as a host array holding only 0 and 1 (``ValueError`` naming ``name``)."""
    x = aa.to_numpy(images) if aa.is_array(images) else np.asarray(images)
    if x.dtype != np.bool_ and not bool(np.all((x == 0) | (x == 1))):
        n_bad = int(np.sum((x != 0) & (x != 1)))
        raise ValueError(f"`{name}` must be binary (values 0 and 1 only); found {n_bad} other "
                         f"values")
    return x


def _flat_images(images: Any, name: str) -> np.ndarray:
    x = aa.to_numpy(images) if aa.is_array(images) else np.asarray(images)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"`{name}` must be a stack of at least 2 images; got shape {x.shape}")
    x = _host_bits(x, name)
    return x.reshape(x.shape[0], -1).astype(np.float64)


def pca_frechet_table(train: Any, test: Any, samples: Any, *, n_components: int = 16,
                      rng: Any = 0) -> dict[str, Any]:
    """Held-out quality of binary image samples: Frechet distance on PCA features.

    PCA (``n_components`` leading principal directions) is fitted on ``train`` (flattened
    images as 0/1 floats, centred by the training mean). Each candidate set is projected and
    compared with the projected held-out ``test`` images by the Frechet distance between
    fitted Gaussians (:func:`arraygen.metrics.frechet_distance`: ``|mu_a - mu_b|^2 +
    tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)``, covariances with ddof=1, float64). The
    candidate sets all have ``n = len(samples)`` images:

    * ``"model"``: ``samples``;
    * ``"bernoulli"``: ``n`` draws of independent pixels with the training means (the
      product-of-Bernoullis baseline);
    * ``"train (floor)"``: ``n`` training images drawn without replacement (``n`` must not
      exceed ``len(train)``): the distance between two finite samples of the data itself.

    Parameters
    ----------
    train, test, samples : arrays, shape (N, ...)
        Stacks of at least 2 images in {0, 1}, all with one image size.
    n_components : int
        PCA features, in ``[1, min(pixels, len(train) - 1)]``.
    rng : int, Key or numpy.random.Generator
        Seed of the baseline draws.

    Returns
    -------
    dict
        ``{"model": float, "bernoulli": float, "train (floor)": float, "n_components": int,
        "n_samples": int, "n_test": int}``.

    Examples
    --------
    >>> import numpy as np
    >>> gen = np.random.default_rng(0)
    >>> train, test = (gen.random((n, 4, 4)) < 0.5 for n in (60, 20))
    >>> table = pca_frechet_table(train, test, train[:10], n_components=3, rng=0)
    >>> sorted(table)[:3], table["n_samples"]
    (['bernoulli', 'model', 'n_components'], 10)
    """
    a_train = _flat_images(train, "train")
    a_test = _flat_images(test, "test")
    a_samples = _flat_images(samples, "samples")
    d = a_train.shape[1]
    if a_test.shape[1] != d or a_samples.shape[1] != d:
        raise ValueError(f"`train`, `test` and `samples` must hold images of one size; got "
                         f"{a_train.shape[1]}, {a_test.shape[1]} and {a_samples.shape[1]} pixels")
    n_components = check_int(n_components, "n_components", minimum=1,
                             maximum=min(d, a_train.shape[0] - 1))
    n = a_samples.shape[0]
    if n > a_train.shape[0]:
        raise ValueError(f"`samples` must not outnumber `train` ({a_train.shape[0]} images) "
                         f"so that the floor uses as many images; got {n}")
    gen = np.random.default_rng(rng if not isinstance(rng, _random.Key) else rng.seed)
    mean = a_train.mean(axis=0)
    _, vecs = np.linalg.eigh(np.atleast_2d(np.cov(a_train, rowvar=False)))
    basis = vecs[:, ::-1][:, :n_components]

    def features(a):
        return (a - mean) @ basis

    bernoulli = (gen.random((n, d)) < mean).astype(np.float64)
    floor = a_train[gen.choice(a_train.shape[0], size=n, replace=False)]
    f_test = features(a_test)

    def distance(a):
        return float(frechet_distance(features(a), f_test))

    return {"model": distance(a_samples), "bernoulli": distance(bernoulli),
            "train (floor)": distance(floor),
            "n_components": int(n_components), "n_samples": int(n), "n_test": a_test.shape[0]}


def format_quality_table(table: dict[str, Any]) -> str:
    """The result of :func:`pca_frechet_table` as a Markdown table.

    Examples
    --------
    >>> table = {"model": 1.5, "bernoulli": 3.0, "train (floor)": 0.5, "n_components": 16,
    ...          "n_samples": 100, "n_test": 360}
    >>> print(format_quality_table(table).splitlines()[-3])
    | DTM samples | 1.500 |
    """
    header = (f"Frechet distance on {table['n_components']} PCA features (fitted on the training "
              f"set) to {table['n_test']} held-out images; {table['n_samples']} images per row; "
              f"lower is better.")
    lines = [header, "", "| candidate set | Frechet distance |", "|---|---|"]
    labels = {"model": "DTM samples", "bernoulli": "independent pixels (data means)",
              "train (floor)": "training images (floor)"}
    for name, label in labels.items():
        lines.append(f"| {label} | {table[name]:.3f} |")
    return "\n".join(lines)


def image_grid(images: Any, *, ncols: int = 10, pad: int = 1) -> np.ndarray:
    """Tile images (N, H, W) or (N, 1, H, W) into one float64 array, gaps of value 0.5.

    Examples
    --------
    >>> import numpy as np
    >>> image_grid(np.ones((3, 2, 2)), ncols=2).shape
    (7, 7)
    """
    x = aa.to_numpy(images) if aa.is_array(images) else np.asarray(images)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[0] < 1:
        raise ValueError(f"`images` must have shape (N, H, W) or (N, 1, H, W); got {x.shape}")
    ncols = check_int(ncols, "ncols", minimum=1)
    pad = check_int(pad, "pad", minimum=0)
    n, h, w = x.shape
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad), 0.5)
    for i in range(n):
        r, c = divmod(i, ncols)
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        grid[y0:y0 + h, x0:x0 + w] = x[i]
    return grid


def sample_grid_figure(panels: dict[str, Any], *, ncols: int = 10):
    """A matplotlib figure with one image grid (:func:`image_grid`) per entry of ``panels``
    (title -> images)."""
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("`panels` must hold at least one title -> images entry")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (title, images) in zip(axes[0], panels.items()):
        ax.imshow(image_grid(images, ncols=ncols), cmap="gray", vmin=0.0, vmax=1.0,
                  interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    return fig


def save_sample_grid(images: Any, path: Any, *, ncols: int = 10, title: str | None = None) -> None:
    """Save a grid of binary images as a PNG (matplotlib)."""
    import matplotlib.pyplot as plt

    fig = sample_grid_figure({title or "": images}, ncols=ncols)
    try:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
