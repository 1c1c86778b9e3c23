"""Many Python threads calling the Numba CPU kernels at once, under every threading layer.

Numba's ``workqueue`` layer is not thread-safe: two threads launching parallel kernels at the
same time abort the process (SIGABRT). Each case runs in a fresh interpreter (the layer is
chosen once per process), 8 threads each calling the op several times, and compares every
result with the one-thread result.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from arraygen.backends import available

pytestmark = pytest.mark.skipif(available()["numba_cpu"] is not None,
                                reason=str(available()["numba_cpu"]))

SCRIPT = textwrap.dedent("""
    import sys, threading
    import numpy as np
    import numba
    from arraygen import _dispatch, fisher, tiled  # noqa: F401  (registers the ops)
    from arraygen.random import Key

    op = sys.argv[1]
    gen = np.random.default_rng(0)
    x = gen.random((300, 2))
    y = gen.random((280, 2))
    u = gen.random((280, 3))
    s = gen.standard_normal((4, 40000))  # above the Fisher kernels' parallel threshold
    v = gen.random((4, 40000)) + 0.5
    eps = np.full(4, 1e-3)

    def call():
        if op == "matvec":
            launch = _dispatch.kernel("kernel_matvec", "numba_cpu")
            return launch(x, y, u, None, None, beta=3.0)
        if op == "logsumexp":
            launch = _dispatch.kernel("kernel_logsumexp", "numba_cpu")
            return launch(x, y, None, beta=3.0)
        launch = _dispatch.kernel("fisher_langevin_step", "numba_cpu")
        return launch(s, s, v, eps, step_size=1e-3, momentum=0.9, noise=None,
                      key=Key(7, 0))[0]

    want = call()
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(call())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 40
    for r in results:
        np.testing.assert_allclose(r, want, rtol=1e-12, atol=0)
    print("layer", numba.threading_layer())
""")


def _run(op: str, layer: str | None):
    env = dict(os.environ)
    env.pop("NUMBA_THREADING_LAYER", None)
    if layer is not None:
        env["NUMBA_THREADING_LAYER"] = layer
    env["NUMBA_NUM_THREADS"] = "2"
    return subprocess.run([sys.executable, "-c", SCRIPT, op], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("op", ["matvec", "logsumexp", "fisher"])
@pytest.mark.parametrize("layer", ["workqueue", None], ids=["workqueue", "default"])
def test_many_threads_any_threading_layer(layer, op):
    proc = _run(op, layer)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    if layer is not None:
        assert f"layer {layer}" in proc.stdout
