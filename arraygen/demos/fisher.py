"""Demo: Fisher-preconditioned Langevin (pSGLD) vs plain Langevin on an ill-conditioned Gaussian."""

from __future__ import annotations

import time

import numpy as np

TITLE = "Fisher-preconditioned Langevin sampling"
ORDER = 40


def _run_chains(step, x0, sigma2, n_steps, burn_in):
    """Run ``step(x, score, k) -> x`` and return per-dimension variance over chains and time."""
    x = x0
    acc = np.zeros(x0.shape[1])
    count = 0
    for k in range(n_steps):
        x = step(x, -x / sigma2, k)
        if k >= burn_in:
            acc += (x * x).mean(axis=0)
            count += 1
    return acc / count


def run(ctx) -> str:
    import matplotlib.pyplot as plt

    import arraygen
    from arraygen import _dispatch
    from arraygen.random import Key, normal

    n_chains, dim = 256, 64
    n_steps = 600 if ctx.quick else 3000
    burn_in = n_steps // 2
    sigma = np.geomspace(0.1, 10.0, dim)  # condition number 1e4
    sigma2 = sigma**2
    x0 = np.zeros((n_chains, dim))
    h_plain = 0.5 * sigma2.min()  # plain Langevin is stable only for h below ~sigma_min^2
    h_fisher = 0.05
    key = Key(2026)

    def plain(x, s, k):
        return x + h_plain * s + np.sqrt(2 * h_plain) * normal(key.advance(k), x.shape, like=x)

    state = {"v": np.ones_like(x0)}

    def fisher(x, s, k):
        x_new, state["v"] = arraygen.fisher_langevin_step(
            x, s, state["v"], 1.0, step_size=h_fisher, momentum=0.99, rng=key.advance(k))
        return x_new

    backend = _dispatch.select("fisher_langevin_step", x0)
    t0 = time.perf_counter()
    var_plain = _run_chains(plain, x0, sigma2, n_steps, burn_in)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    var_fisher = _run_chains(fisher, x0, sigma2, n_steps, burn_in)
    t_fisher = time.perf_counter() - t0

    err_plain = np.abs(np.sqrt(var_plain) / sigma - 1)
    err_fisher = np.abs(np.sqrt(var_fisher) / sigma - 1)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    ax[0].loglog(sigma, sigma, "k--", label="true std")
    ax[0].loglog(sigma, np.sqrt(var_plain), "o", ms=3, label=f"plain Langevin, h={h_plain:g}")
    ax[0].loglog(sigma, np.sqrt(var_fisher), "s", ms=3,
                 label=f"Fisher-preconditioned, h={h_fisher:g}")
    ax[0].set_xlabel("true std of the coordinate")
    ax[0].set_ylabel("sampled std (second half of the chains)")
    ax[0].legend(fontsize=8)
    ax[1].semilogx(sigma, err_plain, "o", ms=3, label="plain")
    ax[1].semilogx(sigma, err_fisher, "s", ms=3, label="Fisher")
    ax[1].set_xlabel("true std")
    ax[1].set_ylabel("|sampled std / true std - 1|")
    ax[1].legend(fontsize=8)
    fig.suptitle(f"{n_chains} chains x {n_steps} steps, N(0, diag(sigma^2)), sigma in [0.1, 10]")
    figure = ctx.savefig(fig, "fisher_langevin")
    return "\n".join([
        f"Target: a {dim}-dimensional Gaussian with standard deviations from 0.1 to 10 (exact "
        f"score -x/sigma^2), {n_chains} chains from 0, {n_steps} steps, statistics over the "
        f"second half. Plain Langevin must use h = {h_plain:g} (about sigma_min^2) to stay "
        f"stable, so its wide coordinates barely move; `fisher_langevin_step` (v = running "
        f"mean of score^2 + eps, P = v^-1/2 normalised to mean 1 per sample, noise drawn from "
        f"the Philox stream in-kernel) runs at h = {h_fisher:g}.",
        "",
        f"* fused step backend chosen automatically for NumPy input: **{backend}**",
        f"* median relative error of the sampled std: plain {np.median(err_plain):.3f}, "
        f"Fisher-preconditioned {np.median(err_fisher):.3f}; widest coordinate (sigma = 10): "
        f"plain {err_plain[-1]:.3f}, Fisher {err_fisher[-1]:.3f}",
        f"* wall time: plain {t_plain:.2f} s, Fisher {t_fisher:.2f} s",
        "* caveat: pSGLD with a state-dependent preconditioner omits the divergence "
        "correction term, so it is approximate; with momentum 0.99 the preconditioner is "
        "nearly constant and the bias is small here.",
        "",
        figure,
    ])
