#!/usr/bin/env bash
# Entry point on the device machine (carry .whl): installs the carried wheels (numpy 2.4.4 for
# numba-cuda, array-api-compat, array-api-strict, asv...) into /tmp/site, then either
#   bash tools/gpu_run.sh [--only fisher] [--no-tests] [--gpu-only] [--quick] tools/gpu_suite.py: GPU tests
#                                                                    and the GPU benchmark table
#   bash tools/gpu_run.sh --asv [ASV RUN ARGS...]                   the asv tracking suite on the
#        GPU (its GPU namespaces join the parameter grids), results stored for this commit under
#        the machine name gpu-<card>, copied to $OUT/asv-results/ (carry .git, or set
#        ARRAYGEN_GIT_BUNDLE to a carried `git bundle create FILE main`: asv needs the commit
#        hash). Add --compare to run the comparison suite (asv-compare.conf.json) instead.
# Back here: cp -r <files_at>/asv-results/* asv_benchmarks/results/ (or results-compare/), then
# `asv publish` and `python tools/bench_tables.py` show the GPU history beside the CPU's.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader || true

if [ "${1:-}" != "--asv" ]; then
    exec python3 tools/gpu_suite.py "$@"
fi
shift
config=asv.conf.json
results=results
if [ "${1:-}" = "--compare" ]; then
    config=asv-compare.conf.json
    results=results-compare
    shift
fi
if ! python3 -c "import asv" 2>/dev/null; then
    echo "gpu_run.sh --asv: asv is not importable; carry its wheels in .whl (asv, asv_runner," \
         "json5, tabulate, pyyaml, pympler)" >&2
    exit 2
fi
# asv drops PYTHONPATH in its benchmark processes and passes ASV_PYTHONPATH in its place
export ASV_PYTHONPATH="$PYTHONPATH"
# asv stores results under the commit hash: a copy of the tree without .git gets its history
# from a bundle (git bundle create BUNDLE main, carried with the run)
if ! git rev-parse HEAD >/dev/null 2>&1 && [ -n "${ARRAYGEN_GIT_BUNDLE:-}" ]; then
    git init -q && git fetch -q "$ARRAYGEN_GIT_BUNDLE" main \
        && git update-ref refs/heads/main FETCH_HEAD && git symbolic-ref HEAD refs/heads/main
fi
commit=$(git rev-parse HEAD 2>/dev/null) || {
    echo "gpu_run.sh --asv: no git repository here; carry .git, or a bundle of it named by" \
         "ARRAYGEN_GIT_BUNDLE (asv stores results under the commit hash)" >&2
    exit 2
}
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -cs 'A-Za-z0-9' '-')
machine="gpu-${card%-}"
out="${OUT:-/tmp/arraygen-gpu-out}/asv-results"
mkdir -p "$out"
cd asv_benchmarks || exit 1
python3 -m asv machine --yes --machine "$machine" >/dev/null
start=$(date +%s)
python3 -m asv run --config "$config" --python=same --set-commit-hash "$commit" \
    --machine "$machine" --show-stderr "$@" 2>&1 | tee "$out/asv-run.log"
status=${PIPESTATUS[0]}
echo "asv run: exit $status in $(( $(date +%s) - start )) s (machine $machine, commit $commit)" \
    | tee -a "$out/asv-run.log"
cp -r "$results/$machine" "$results/benchmarks.json" "$out/" 2>/dev/null || true
exit "$status"
