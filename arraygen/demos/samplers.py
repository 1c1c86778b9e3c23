"""Demo section: every sampler on a 2-D Gaussian mixture whose noised scores are exact."""

from __future__ import annotations

import time

import numpy as np

TITLE = "Diffusion and flow samplers on an 8-component Gaussian mixture (exact scores)"
ORDER = 30

BANDWIDTH = 0.5


def _mixture():
    from ..datasets import GaussianMixture

    ang = np.arange(8) * 2 * np.pi / 8
    means = np.stack([2.0 * np.cos(ang), 2.0 * np.sin(ang)], axis=1)
    return GaussianMixture(means, np.full(8, 0.3 ** 2))


def _grid(sch, steps: int):
    """The one time grid every single-evaluation VP sampler gets (the samplers' default kind)."""
    from .. import samplers as S
    from ..schedules import timesteps

    return timesteps(steps, getattr(S, "DEFAULT_GRID", "log_snr"), sch)


def _runners(gm, sch):
    """name -> function(x, nfe) -> (samples, grid used); equal model evaluations, one grid."""
    from .. import samplers as S

    score = gm.model(sch)
    kw = {"schedule": sch, "prediction": "score"}

    def vel(x, t):
        return gm.velocity(x, t)

    def flow_grid(n):
        return np.linspace(0.0, 1.0, n + 1)

    def vp(fn, half=False, **extra):
        def go(x, n):
            g = _grid(sch, max(1, n // 2) if half else n)
            return fn(score, x, steps=g, **kw, **extra), g
        return go

    out = {
        "ddpm": vp(S.sample_ddpm, rng=1),
        "ddim": vp(S.sample_ddim),
        "euler": vp(S.sample_euler),
        "heun": vp(S.sample_heun, half=True),
        "dpmpp_2m": vp(S.sample_dpmpp_2m),
        "dpmpp_2m_sde": vp(S.sample_dpmpp_2m, sde=True, rng=2),
        "sde (EM)": vp(S.sample_sde, rng=3),
        "sde + corrector": vp(S.sample_sde, half=True, corrector_steps=1, rng=4),
    }
    if hasattr(S, "sample_unipc"):
        out["unipc"] = vp(S.sample_unipc)
    for name in ("euler_ancestral", "dpmpp_3m_sde"):
        if hasattr(S, "sample_" + name):
            out[name] = vp(getattr(S, "sample_" + name), rng=6)
    out.update({
        "flow_heun": lambda x, n: (S.sample_flow_heun(vel, x, steps=flow_grid(n // 2),
                                                      prediction="velocity"),
                                   flow_grid(n // 2)),
        "flow_sde": lambda x, n: (S.sample_flow_sde(vel, x, steps=flow_grid(n), rng=5,
                                                    prediction="velocity"), flow_grid(n)),
        "flow_ddim": lambda x, n: (S.sample_flow_ddim(vel, x, steps=flow_grid(n),
                                                      prediction="velocity"), flow_grid(n)),
    })
    return out


def _grid_line(name, grid, sch, flow: bool) -> str:
    g = np.asarray(grid, dtype=np.float64)
    if flow:
        return f"{name}: flow t " + " ".join(f"{v:.3g}" for v in g)
    ab = np.asarray(sch.alpha_bar(g), dtype=np.float64)
    with np.errstate(divide="ignore"):
        ve = np.sqrt(np.maximum(1 - ab, 0) / ab)
    return f"{name}: sigma " + " ".join(f"{v:.3g}" for v in ve)


def run(ctx) -> str:
    import matplotlib.pyplot as plt

    from ..metrics import mmd
    from ..random import normal
    from ..schedules import make_schedule

    n = 1000 if ctx.quick else 4000
    budgets = (10, 20, 50) if ctx.quick else (10, 20, 50, 100)
    gm = _mixture()
    sch = make_schedule("linear")
    ref = gm.sample(n, rng=123)
    noise = normal(7, (n, 2), like=ref)
    floor = float(mmd(gm.sample(n, rng=99), ref, bandwidth=BANDWIDTH, backend="array_api"))
    runners = _runners(gm, sch)
    table, shown, seconds, grids = {}, {}, {}, {}
    for name, fn in runners.items():
        row = []
        for nfe in budgets:
            start = time.perf_counter()
            out, grid = fn(noise, nfe)
            seconds[name] = time.perf_counter() - start
            row.append(float(mmd(out, ref, bandwidth=BANDWIDTH, backend="array_api")))
            if nfe == 20:
                shown[name] = out
                grids[name] = grid
        table[name] = row

    cols = 4
    rows = -(-(len(shown) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
    panels = [("exact samples", ref)] + [(f"{k} (20 NFE)", v) for k, v in shown.items()]
    for ax, (title, pts) in zip(axes.ravel(), panels):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(-3.2, 3.2)
        ax.set_ylim(-3.2, 3.2)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    image = ctx.savefig(fig, "samplers_mixture")

    header = ("| sampler | " + " | ".join(f"NFE {b}" for b in budgets)
              + f" | seconds (NFE {budgets[-1]}) |")
    lines = [header, "|---|" + "---|" * (len(budgets) + 1)]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.2e}" for v in row)
                     + f" | {seconds[name]:.2f} |")
    intro = (f"Target: 8 Gaussians (std 0.3) on a circle of radius 2; the noised score is "
             f"exact (`GaussianMixture.score`, linear VP schedule; flow samplers use the exact "
             f"velocity). {n} samples from the same starting noise; the value is the unbiased "
             f"MMD² (Gaussian kernel, bandwidth {BANDWIDTH}) to {n} exact samples. Two exact "
             f"sample sets give {floor:.1e}, the noise floor. Every sampler gets the same number of "
             f"model evaluations on the same time grid (the samplers' default log-SNR grid, "
             f"printed below); Heun, the corrected SDE and flow Heun spend two evaluations per "
             f"step, so they take half as many steps on the same kind of grid.")
    grid_lines = {}
    for name, grid in grids.items():
        text = _grid_line("", grid, sch, name.startswith("flow_"))
        grid_lines.setdefault(text, []).append(name)
    glines = ["Time grids at 20 evaluations (variance-exploding noise levels sigma = "
              "sqrt(1 - alpha_bar) / sqrt(alpha_bar); every single-evaluation VP sampler gets "
              "the same grid):", "", "```"]
    glines += [f"{', '.join(names)}{text}" for text, names in grid_lines.items()]
    glines.append("```")
    return "\n".join([intro, "", image, "", *lines, "", *glines])
