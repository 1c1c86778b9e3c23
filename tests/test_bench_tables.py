"""tools/bench_tables.py: tables come from asv result JSON only; benchmarks defined in a suite
without any stored result are listed as "not yet measured" (never given a value)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    path = ROOT / "tools" / "bench_tables.py"
    spec = importlib.util.spec_from_file_location("bench_tables", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _results(tmp_path: Path) -> Path:
    """A results folder with one measured benchmark (asv 0.6 layout), value 0.125 s."""
    res = tmp_path / "results"
    (res / "box").mkdir(parents=True)
    name = "bench_blocksparse.BlockSparseMatvec.time_matvec"
    meta = {name: {"param_names": ["backend", "size", "truncate"], "unit": "seconds"},
            "version": 2}
    (res / "benchmarks.json").write_text(json.dumps(meta))
    run = {"commit_hash": "abcdef0123456789", "params": {"machine": "box", "num_cpu": "2"},
           "result_columns": ["result", "params", "started_at", "stats_repeat"],
           "results": {name: [[0.125, None], [["'numba_cpu@numpy'"], ["2000", "50000"],
                                              ["3.0"]], 1_780_000_000_000, [3, None]]}}
    (res / "box" / "abcdef01-existing.json").write_text(json.dumps(run))
    return res


def test_measured_rows_come_from_json_and_the_rest_is_not_yet_measured(tmp_path):
    tool = _tool()
    defined = tool.discover("tracking")
    assert "bench_blocksparse.BlockSparseMatvec.time_matvec" in defined
    assert defined["bench_blocksparse.BlockSparseLogsumexp.track_fraction"]["unit"] == \
        "fraction of pairs"
    assert defined["bench_gibbs_msc.GibbsMultispin.time_sweeps"]["unit"] == "seconds"
    lines = tool.suite_sections("tracking", _results(tmp_path), [], defined)
    text = "\n".join(lines)
    row = next(x for x in lines if "numba_cpu@numpy, size=2000" in x)
    assert "125 ms" in row and "box (2 cores)" in row and "(abcdef01)" in row
    assert "size=50000" not in text            # a skipped case gets no row
    waiting = [x for x in lines if "not yet measured" in x]
    names = {x.split("`")[1] for x in waiting}
    assert "bench_blocksparse.BlockSparseMatvec.time_matvec" not in names
    assert {"bench_blocksparse.BlockSparseMatvec.track_rel_err",
            "bench_multiscale.MultiscaleSinkhorn.track_marginal_error",
            "bench_gibbs_msc.GibbsMultispin.track_updates_per_s"} <= names
    assert all("asv run --python=same" in x for x in waiting)


def test_without_discovery_only_measured_benchmarks_appear(tmp_path):
    lines = _tool().suite_sections("tracking", _results(tmp_path), [], None)
    assert not any("not yet measured" in x for x in lines)
    assert any("125 ms" in x for x in lines)


def test_gpu_rows_from_a_stopped_runs_log(tmp_path, capsys):
    """A GPU benchmark stopped by its time limit leaves only its ``[row]`` lines: they give
    back the rows ``gpu_common.row`` made (value, metric, fraction, error), nothing else."""
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from gpu_common import row
    finally:
        sys.path.remove(str(ROOT / "tools"))
    made = [row("fisher_langevin_step", "cupy", "2^28 f32", 2.026, "GB/s", 2650.0, 3000.0,
                err=7.7e-08),
            row("sinkhorn multiscale", "arraygen", "N=M=1000000,d=3", 1549.0, "s to tol", 1.549)]
    log = tmp_path / "log"
    log.write_text("[multiscale] piece sinkhorn: 9.3 s\n" + capsys.readouterr().out
                   + "Traceback (most recent call last):\n")
    got = _tool().gpu_rows(log)
    assert len(got) == 2
    for g, m in zip(got, made):
        assert (g["op"], g["backend"], g["size"], g["metric"]) == (
            m["op"], m["backend"], m["size"], m["metric"])
        assert abs(g["value"] - m["value"]) <= 1e-3 * m["value"]
        assert abs(g["ms"] - m["ms"]) <= 1e-3
    assert abs(got[0]["frac_ceiling"] - 2650.0 / 3000.0) < 1e-3 and got[1]["frac_ceiling"] is None
    assert got[0]["rel_err"] == float(f"{7.7e-08:.2e}") and got[1]["rel_err"] is None
