#!/usr/bin/env bash
# Entry point on the device machine (carry .whl): installs the carried wheels (numpy 2.4.4 for
# numba-cuda, array-api-compat, array-api-strict) into /tmp/site, then runs tools/gpu_suite.py
# with the given arguments. Example device command:  bash tools/gpu_run.sh --only fisher
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader || true
exec python3 tools/gpu_suite.py "$@"
