"""arraygen: Array-API numerics for generative sampling.

Every algorithm is written once against the Python Array API, so NumPy, CuPy and PyTorch
arrays all work and results come back in the caller's namespace and on the caller's device.
Hot paths (Fisher, Gaussian, Gibbs, tiled diffusion kernel) have hand-written kernels (Numba
CPU and CUDA, CuPy RawKernel, Triton) chosen by :mod:`arraygen._dispatch`;
``arraygen.backends.available()`` says which can run here.

Importing arraygen imports none of cupy, torch, triton or numba.
"""

from __future__ import annotations

import logging

from . import (backends, bridge, cache, datasets, discrete, dmap, fastsbot, fisher, gaussian, gibbs,
               linalg, metrics, ot, random, samplers, schedules, scores, sliced,
               testing, tiled)
from ._dispatch import BackendError
from .cache import PersistentKernelCache
from .datasets import GaussianMixture, binarized_digits, load_binary_images, swiss_roll, two_moons
from .discrete import BitflipDTM
from .fastsbot import FastSBOTConfig, FastSBOTSolver
from .dmap import DiffusionMap
from .fisher import fisher_diagonal, fisher_langevin_step
from .gaussian import gaussian_filter, gaussian_filter1d, gaussian_filter_fft, gaussian_kernel_fft
from .gibbs import StencilIsing, energy, exact_distribution, gibbs_sweeps, moments
from .linalg import eigsh
from .metrics import energy_distance, frechet_distance, mae, mmd, mse, nrmse, psnr, ssim
from .ot import (ConvergenceWarning, SchrodingerBridge, SinkhornResult, max_sliced_wasserstein,
                 sinkhorn, sinkhorn_divergence, sliced_ot_map, sliced_wasserstein)
from .scores import EmpiricalScore
from .samplers import (ddim_invert, discrete_time_model, sample_ddim, sample_ddpm,
                       sample_dpmpp_2m, sample_dpmpp_2s_ancestral, sample_dpmpp_3m_sde,
                       sample_euler, sample_euler_ancestral, sample_flow_ddim, sample_flow_heun,
                       sample_flow_sde, sample_heun, sample_sde, sample_unipc)
from .schedules import NoiseSchedule, bitflip_schedule, flow_timesteps, make_schedule, timesteps
from .tiled import kernel_logsumexp, kernel_matvec, kernel_softmax_matvec
from .blocksparse import BlockPairs, Clusters, TruncationReport, block_pairs, cluster_points
from . import blocksparse

__version__ = "0.1.0"

logging.getLogger("arraygen").addHandler(logging.NullHandler())

__all__ = [
    "BackendError", "BitflipDTM", "ConvergenceWarning", "max_sliced_wasserstein",
    "sinkhorn_divergence", "DiffusionMap", "EmpiricalScore", "FastSBOTConfig",
    "FastSBOTSolver", "GaussianMixture",
    "NoiseSchedule", "PersistentKernelCache", "SchrodingerBridge", "SinkhornResult",
    "StencilIsing", "__version__", "backends", "binarized_digits", "bitflip_schedule", "bridge",
    "cache", "datasets", "ddim_invert", "discrete", "dmap", "eigsh", "energy",
    "energy_distance", "exact_distribution", "fastsbot", "fisher", "fisher_diagonal", "fisher_langevin_step",
    "frechet_distance", "gaussian", "gaussian_filter", "gaussian_filter1d", "gaussian_filter_fft",
    "gaussian_kernel_fft", "gibbs", "gibbs_sweeps", "kernel_logsumexp", "kernel_matvec",
    "kernel_softmax_matvec", "linalg", "load_binary_images", "mae", "make_schedule", "metrics",
    "mmd", "moments", "mse", "nrmse", "ot", "psnr", "random", "sample_ddim", "sample_ddpm",
    "sample_dpmpp_2m", "sample_euler", "sample_flow_ddim", "sample_flow_heun", "sample_flow_sde",
    "sample_heun", "sample_sde", "samplers", "sample_unipc", "sample_dpmpp_3m_sde",
    "sample_euler_ancestral", "sample_dpmpp_2s_ancestral", "discrete_time_model",
    "flow_timesteps", "schedules", "scores", "sinkhorn", "sliced", "sliced_ot_map",
    "sliced_wasserstein", "ssim", "swiss_roll", "testing", "tiled", "timesteps", "two_moons",
    "BlockPairs", "Clusters", "TruncationReport", "block_pairs", "blocksparse", "cluster_points",
]
