"""Write BENCHMARKS.md from asv result JSON (and GPU suite JSON): nothing typed by hand.

Usage (from the repository root)::

    python tools/bench_tables.py [--results asv_benchmarks/results]
        [--compare-results asv_benchmarks/results-compare] [--gpu-json bench.json ...]
        [--out BENCHMARKS.md] [--no-discover]

For every machine in each results folder the newest run of every benchmark is read (asv stores
one JSON file per machine, commit and environment). Each module of a suite becomes one section
(one hot path or algorithm), each benchmark one table whose rows name the parameters, the value,
the machine, the date of the run and the command that reproduces it. Comparison tables add the
ratio of every peer's time to arraygen's in the same run; rows where a peer is faster are
collected under "Where arraygen loses". Values measured with ``asv run --quick`` (one sample)
are marked "quick: 1 sample" and are not measurements.

Benchmarks defined in a suite's folder (``asv_benchmarks/benchmarks``, ``asv_benchmarks/compare``;
found by importing its ``bench_*`` modules, as asv does) that have no stored result on any
machine are listed per section as "not yet measured", with the command that measures them.

``--gpu-json`` takes the ``bench.json`` that ``tools/gpu_suite.py`` writes to ``$OUT`` (rows of
``tools/gpu_common.row``), or the log of a benchmark stopped by its time limit (its ``[row]``
lines); its machine is the GPU named in the file's folder ``machine.txt`` when
present, else "GPU", and its date the file's modification time.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import importlib
import inspect
import itertools
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TITLES = {
    "bench_fisher": "Fisher (`fisher_diagonal`, `fisher_langevin_step`)",
    "bench_tiled": "Tiled diffusion kernel (`kernel_matvec`, `kernel_logsumexp`, "
                   "`kernel_softmax_matvec`)",
    "bench_gaussian": "Gaussian filter (`gaussian_filter`)",
    "bench_gibbs": "Gibbs sweeps (`gibbs_sweeps`)",
    "bench_dmap": "Diffusion maps (`DiffusionMap.fit`)",
    "bench_ot": "Entropic OT (`sinkhorn`)",
    "bench_samplers": "Diffusion samplers",
    "bench_metrics": "Metrics (`ssim`, `psnr`, `frechet_distance`, `mmd`)",
    "bench_fastsbot": "FastSB-OT",
    "bench_blocksparse": "Block-sparse tiled kernel (`truncate=` of `kernel_logsumexp`, "
                         "`kernel_matvec`)",
    "bench_multiscale": "Multiscale Sinkhorn (`sinkhorn(method=\"multiscale\")`) and "
                        "`DiffusionMap(truncate=)`",
    "bench_ot_multiscale": "Multiscale Sinkhorn (`sinkhorn(method=\"multiscale\")`)",
    "bench_gibbs_msc": "+-J multi-spin Gibbs (`gibbs_sweeps(multispin=)`)",
}
SUITES = {"tracking": ("asv.conf.json", "Tracking suite (arraygen only)"),
          "compare": ("asv-compare.conf.json", "Comparison suite (arraygen beside the peers)")}
#: each suite's benchmark folder (the ``benchmark_dir`` of its configuration)
SUITE_DIRS = {"tracking": "benchmarks", "compare": "compare"}
#: asv's benchmark method prefixes and the unit asv records for each kind
PREFIXES = ("time_", "timeraw_", "peakmem_", "mem_", "track_")
KIND_UNITS = {"time_": "seconds", "timeraw_": "seconds", "peakmem_": "bytes", "mem_": "bytes"}


# -- reading ------------------------------------------------------------------------------

def _load(path: Path) -> dict:
    with open(path) as fh:
        return json.load(fh)


def gpu_rows(path: Path) -> list[dict]:
    """Rows of a GPU run: its ``bench.json``, or the ``[row]`` lines of its log (what a run
    stopped by its time limit printed before the table; see ``tools/gpu_common.row``)."""
    if path.suffix == ".json":
        return _load(path)
    rows = []
    for line in path.read_text().splitlines():
        if not line.startswith("[row] "):
            continue
        op, backend, size, ms, rest, *tail = line[6:].split(" | ")
        words = rest.split()
        frac = float(words.pop()[:-1]) / 100 if words[-1].endswith("%") else None
        err = float(tail[0].removeprefix("err ")) if tail else None
        rows.append({"op": op, "backend": backend, "size": size,
                     "ms": float(ms.removesuffix(" ms")), "value": float(words[0]),
                     "metric": " ".join(words[1:]), "frac_ceiling": frac, "peer": None,
                     "vs_peer": None, "rel_err": err})
    return rows


def latest_results(results_dir: Path) -> dict:
    """``{machine: {benchmark: record}}``: the newest run of each benchmark per machine.

    A record holds ``params`` (list of value lists), ``values`` (flat over their product),
    ``started`` (datetime), ``repeat`` (samples per value or None) and ``commit``.
    """
    out: dict = {}
    if not results_dir.is_dir():
        return out
    for machine_dir in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        for path in sorted(machine_dir.glob("*.json")):
            if path.name == "machine.json":
                continue
            data = _load(path)
            machine = data.get("params", {}).get("machine", machine_dir.name)
            columns = data["result_columns"]
            for name, row in data["results"].items():
                rec = dict(zip(columns, row))
                started = rec.get("started_at") or data.get("date") or 0
                have = out.setdefault(machine, {}).get(name)
                if have is not None and have["started_ms"] >= started:
                    continue
                out[machine][name] = {
                    "params": rec.get("params") or [],
                    "values": rec.get("result") or [],
                    "started_ms": started,
                    "started": dt.datetime.fromtimestamp(started / 1000, dt.timezone.utc),
                    "repeat": rec.get("stats_repeat"),
                    "commit": data.get("commit_hash", "")[:8],
                    "cpu": data.get("params", {}).get("cpu", ""),
                    "num_cpu": data.get("params", {}).get("num_cpu", ""),
                }
    return out


def discover(suite: str) -> dict:
    """``{name: meta}`` of the benchmarks defined in a suite's folder, named as asv names them
    (``module.Class.method``); ``meta`` holds ``param_names`` and ``unit``. Modules that fail to
    import are reported on stderr and left out."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    folder = ROOT / "asv_benchmarks" / SUITE_DIRS[suite]
    found: dict = {}
    for path in sorted(folder.glob("bench_*.py")):
        try:
            module = importlib.import_module(f"asv_benchmarks.{SUITE_DIRS[suite]}.{path.stem}")
        except Exception as exc:  # a broken module must not stop the tables
            print(f"bench_tables: cannot import {path}: {exc}", file=sys.stderr)
            continue
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls_name.startswith("_") or cls.__module__ != module.__name__:
                continue
            for attr in dir(cls):
                method = getattr(cls, attr)
                if not attr.startswith(PREFIXES) or not callable(method):
                    continue
                kind = next(p for p in PREFIXES if attr.startswith(p))
                unit = KIND_UNITS.get(kind) or getattr(method, "unit", "unit")
                found[f"{path.stem}.{cls_name}.{attr}"] = {
                    "param_names": list(getattr(cls, "param_names", []) or []), "unit": unit}
    return found


def _unquote(v: str):
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


# -- formatting ---------------------------------------------------------------------------

def fmt_value(v, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "skipped"
    if unit == "seconds":
        for scale, name in ((1, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
            if v >= scale:
                return f"{v / scale:.3g} {name}"
        return f"{v:.3g} s"
    if unit == "bytes":
        return f"{v / 2**20:.1f} MiB"
    return f"{v:.3g} {unit}".strip()


def _command(suite: str, name: str, machine: str) -> str:
    bench = "^" + name.replace(".", r"\.") + "$"
    if machine.startswith("gpu-"):
        extra = " --compare" if suite == "compare" else ""
        return f"`bash tools/gpu_run.sh --asv{extra} -b '{bench}'`"
    config = "" if suite == "tracking" else f" --config {SUITES[suite][0]}"
    return (f"`asv run{config} --python=same --set-commit-hash $(git rev-parse HEAD) "
            f"-b '{bench}'`")


def _reference_index(combos, backend_axis):
    """For each combination, the index of arraygen's row to compare a peer with: the first
    non-peer backend with the same namespace (else the first non-peer backend), same other
    parameters."""
    ref = {}
    for i, combo in enumerate(combos):
        backend = str(combo[backend_axis])
        if not backend.startswith("peer:"):
            continue
        ns = backend.partition("@")[2]
        best = None
        for j, other in enumerate(combos):
            ob = str(other[backend_axis])
            same_rest = all(a == b for k, (a, b) in enumerate(zip(combo, other))
                            if k != backend_axis)
            if ob.startswith("peer:") or not same_rest:
                continue
            if ob.partition("@")[2] == ns:
                best = j
                break
            if best is None:
                best = j
        if best is not None:
            ref[i] = best
    return ref


def benchmark_table(suite, name, meta, per_machine, losses):
    """Markdown lines of one benchmark's table over every machine."""
    unit = meta.get("unit", "")
    param_names = meta.get("param_names", [])
    header = ["case"] if param_names else []
    header += ["value", "machine", "date", "command"]
    rows = []
    # ratios where lower is better: times, and tracked times per unit of work
    compare = suite == "compare" and "backend" in param_names and (
        name.split(".")[-1].startswith("time_") or unit in ("ms", "seconds"))
    if compare:
        header.insert(2, "x arraygen")
    for machine, rec in sorted(per_machine.items()):
        params = [[_unquote(v) for v in axis] for axis in rec["params"]]
        combos = list(itertools.product(*params)) if params else [()]
        values = rec["values"]
        if not isinstance(values, list):
            values = [values]
        ref = _reference_index(combos, param_names.index("backend")) if compare else {}
        quick = rec["repeat"] is not None and all(r in (None, 1) for r in rec["repeat"])
        when = rec["started"].strftime("%Y-%m-%d")
        for i, combo in enumerate(combos):
            v = values[i] if i < len(values) else None
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue  # skipped here (asv run -e prints why)
            case = ", ".join(f"{n}={c}" for n, c in zip(param_names, combo))
            cells = [case] if param_names else []
            cells.append(fmt_value(v, unit) + (" (quick: 1 sample)" if quick else ""))
            if compare:
                j = ref.get(i)
                base = values[j] if j is not None and j < len(values) else None
                if base and v and not (isinstance(base, float) and math.isnan(base)):
                    ratio = v / base
                    cells.append(f"{ratio:.2f}")
                    if ratio < 1:
                        losses.append(f"- {name} ({case}; {machine}, {when}): the peer takes "
                                      f"{fmt_value(v, unit)}, arraygen ({combos[j][0]}) "
                                      f"{fmt_value(base, unit)}: arraygen is {1 / ratio:.2f}x "
                                      "slower.")
                else:
                    cells.append("")
            cells += [f"{machine} ({rec['num_cpu']} cores)" if rec["num_cpu"] else machine,
                      f"{when} ({rec['commit']})", _command(suite, name, machine)]
            rows.append(cells)
    if not rows:
        return []
    lines = [f"#### `{name}` ({unit or 'value'})", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines + [""]


def unmeasured_table(suite: str, names: list[str], benchmarks: dict) -> list[str]:
    """Markdown lines listing benchmarks that have no stored result on any machine."""
    if not names:
        return []
    lines = ["#### Not yet measured", "", "| benchmark | parameters | value | command |",
             "|---|---|---|---|"]
    for name in names:
        params = ", ".join(benchmarks[name].get("param_names", [])) or "-"
        lines.append(f"| `{name}` | {params} | not yet measured (no result JSON on any "
                     f"machine) | {_command(suite, name, '')} |")
    return lines + [""]


def suite_sections(suite: str, results_dir: Path, losses: list,
                   defined: dict | None = None) -> list[str]:
    """The suite's sections: one per module, a table per benchmark with results, then the
    benchmarks of ``defined`` (:func:`discover`) that have none."""
    bench_file = results_dir / "benchmarks.json"
    benchmarks = dict(defined or {})
    if bench_file.is_file():
        benchmarks.update({k: v for k, v in _load(bench_file).items() if k != "version"})
    if not benchmarks:
        return []
    results = latest_results(results_dir)
    lines = [f"## {SUITES[suite][1]}", ""]
    by_module = defaultdict(list)
    for name in sorted(benchmarks):
        by_module[name.split(".")[0]].append(name)
    for module, names in by_module.items():
        section, missing = [], []
        for name in names:
            per_machine = {m: r[name] for m, r in results.items() if name in r}
            table = benchmark_table(suite, name, benchmarks[name], per_machine, losses)
            if table:
                section += table
            elif defined is not None and name in defined:
                missing.append(name)
        section += unmeasured_table(suite, missing, benchmarks)
        if section:
            lines += [f"### {TITLES.get(module, module)}", ""] + section
    return lines if len(lines) > 2 else []


def _gpu_module(op: str, folder: str = "") -> str:
    """The ``tools/gpu_bench_<name>.py`` that produced a GPU row (for its command): the JSON's
    folder when it is named after one (``<out>/<name>/bench.json``), else guessed from ``op``."""
    names = sorted(p.stem.removeprefix("gpu_bench_") for p in (ROOT / "tools").glob(
        "gpu_bench_*.py"))
    if folder in names:
        return folder
    low = op.lower()
    named = next((n for n in names if n in low), None)
    if named is not None:
        return named
    aliases = {"kernel": "tiled", "sinkhorn": "ot", "diffusion": "dmap", "sample": "samplers",
               "score": "samplers"}
    return next((name for key, name in aliases.items() if key in low and name in names),
                "NAME")


def gpu_section(paths: list[Path]) -> list[str]:
    lines = []
    for path in paths:
        rows = gpu_rows(path)
        meta = path.parent / "machine.txt"
        machine = meta.read_text().strip() if meta.is_file() else "GPU"
        when = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).strftime(
            "%Y-%m-%d")
        lines += [f"### GPU suite: {machine}", "",
                  "| op | backend | size | ms | value | fraction of ceiling | x peer (peer) | "
                  "rel err | machine | date | command |", "|" + "---|" * 11]
        for r in rows:
            frac = "" if r.get("frac_ceiling") is None else f"{r['frac_ceiling']:.1%}"
            peer = "" if r.get("vs_peer") is None else f"{r['vs_peer']:.2f} ({r.get('peer')})"
            err = "" if r.get("rel_err") is None else f"{r['rel_err']:.1e}"
            module = _gpu_module(r["op"], path.parent.name)
            lines.append(f"| {r['op']} | {r['backend']} | {r['size']} | {r['ms']:.3f} | "
                         f"{r['value']:.4g} {r.get('metric', '')} | {frac} | {peer} | {err} | "
                         f"{machine} | {when} | `bash tools/gpu_run.sh --only {module}` |")
        lines.append("")
    return (["## GPU suite (tools/gpu_suite.py)", ""] + lines) if lines else []


HEADER = """# Benchmarks

Generated by `python tools/bench_tables.py` from the asv result JSON in
`asv_benchmarks/results` (tracking suite), `asv_benchmarks/results-compare` (comparison suite)
and the GPU suite's JSON; do not edit by hand. How to run the suites: README, section
"Benchmarks". Each row names the machine (asv machine name and core count), the date of the run
(with the commit) and the command that reproduces it. "quick: 1 sample" marks values from
`asv run --quick`: one sample, not a measurement. Cases without a value were skipped on that
machine (`asv run -e` prints why: a GPU-only size, or a peer that is not installed, with its pip
command). Benchmarks defined in a suite but without any stored result are listed under "Not
yet measured" in their section, with the command that measures them. Notes on how the kernels
were tuned: `BENCHMARK_NOTES.md`.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "asv_benchmarks" / "results")
    parser.add_argument("--compare-results", type=Path,
                        default=ROOT / "asv_benchmarks" / "results-compare")
    parser.add_argument("--gpu-json", type=Path, nargs="*", default=[])
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--no-discover", action="store_true",
                        help="list only benchmarks with results (do not import the suites to "
                             "find the ones not yet measured)")
    args = parser.parse_args(argv)
    for path in args.gpu_json:
        if not path.is_file():
            parser.error(f"argument --gpu-json: no such file: {str(path)!r}")
    losses: list[str] = []
    body = suite_sections("tracking", args.results, losses,
                          None if args.no_discover else discover("tracking"))
    body += suite_sections("compare", args.compare_results, losses,
                           None if args.no_discover else discover("compare"))
    body += gpu_section(args.gpu_json)
    if not body:
        parser.error("no results found: run the asv suites first (README, 'Benchmarks')")
    text = [HEADER]
    text += ["## Where arraygen loses", ""]
    text += losses or ["No comparison results where a peer is faster (run the comparison "
                       "suite to check)."]
    text += [""] + body
    args.out.write_text("\n".join(text).rstrip() + "\n")
    print(f"wrote {args.out} ({len(losses)} rows where a peer is faster)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
