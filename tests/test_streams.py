"""Every hot path honours the caller's CUDA stream (GPU only; skipped without a CUDA device).

Inputs are written on a non-default stream behind a long spin kernel, then the op is called on
that stream. A launcher that ran on another stream would read the inputs before they are
written (or write its result after the caller reads it): its result would differ from the
default-stream result, which every case compares with. Run for torch tensors on a
``torch.cuda.Stream`` and for CuPy arrays on a ``cupy.cuda.Stream``, through every GPU backend
that can take them.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import arraygen as ag
from arraygen import gibbs
from arraygen.backends import available, is_simulated

torch = pytest.importorskip("torch")
if not torch.cuda.is_available() or os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
    pytest.skip("needs a CUDA device (not a simulator)", allow_module_level=True)

GPU_BACKENDS = [b for b in ("cupy", "numba_cuda", "triton")
                if available()[b] is None and not is_simulated(b)]
SPIN_CYCLES = 200_000_000  # ~0.1 s on an H100: far longer than any launch below


def _problems(gen):
    """name -> (host inputs, function(backend, *device inputs) -> result arrays)."""
    x = gen.standard_normal((1500, 3))
    y = gen.standard_normal((1300, 3))
    v = gen.standard_normal((1300, 2))
    w = np.log(gen.random(1300))
    s = gen.standard_normal((8, 4096))
    xs = gen.standard_normal((8, 4096))
    vs = gen.random((8, 4096)) + 0.5
    img = gen.standard_normal((2, 96, 130))
    spins = np.where(gen.random((2, 1, 64, 128)) < 0.5, -1, 1).astype(np.int8)
    j = 0.4 * gen.random((2, 1, 64, 128))
    h = 0.1 * gen.standard_normal((1, 64, 128))

    def model(like):
        offsets = gibbs.nearest_neighbour_offsets()
        return gibbs.StencilIsing(offsets, like(j), like(h), boundary="periodic")

    return {
        "fisher_diagonal": ((s,), lambda b, s: (ag.fisher_diagonal(s, 0.5, backend=b),)),
        "fisher_langevin_step": (
            (xs, s, vs),
            lambda b, xs, s, vs: ag.fisher_langevin_step(xs, s, vs, 0.5, step_size=0.01,
                                                         rng=ag.random.Key(3, 1), backend=b)),
        "gaussian_filter": ((img,), lambda b, im: (ag.gaussian_filter(im, 2.0, backend=b),)),
        "gibbs_sweeps": ((spins,), None),  # with the model in the inputs' library (_run)
        "kernel_matvec": ((x, y, v), lambda b, x, y, v: (ag.kernel_matvec(x, y, v, beta=0.7,
                                                                          backend=b),)),
        "kernel_logsumexp": ((x, y, w), lambda b, x, y, w: (
            ag.kernel_logsumexp(x, y, beta=0.7, log_weights=w, backend=b),)),
        "kernel_softmax_matvec": ((x, y, v, w), lambda b, x, y, v, w: ag.kernel_softmax_matvec(
            x, y, v, beta=0.7, log_weights=w, backend=b)),
    }, model


OPS = ["fisher_diagonal", "fisher_langevin_step", "gaussian_filter", "gibbs_sweeps",
       "kernel_matvec", "kernel_logsumexp", "kernel_softmax_matvec"]


class _Torch:
    name = "torch"

    def __init__(self):
        self.stream = torch.cuda.Stream()

    def to_device(self, a):
        return torch.as_tensor(a, device="cuda")

    def on_side_stream(self):
        return torch.cuda.stream(self.stream)

    def spin(self):
        torch.cuda._sleep(SPIN_CYCLES)

    def delayed_copy(self, src):
        """A copy of the device array ``src`` made on the current stream after the spin."""
        out = torch.empty_like(src)
        self.spin()
        out.copy_(src, non_blocking=True)
        return out

    def to_host(self, a):
        return a.cpu().numpy()

    def synchronize(self):
        self.stream.synchronize()


class _CuPy:
    name = "cupy"

    def __init__(self):
        import cupy

        self.cupy = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._spin = cupy.RawKernel(r"""
            extern "C" __global__ void spin(long long cycles) {
                const long long t0 = clock64();
                while (clock64() - t0 < cycles) { }
            }""", "spin")

    def to_device(self, a):
        return self.cupy.asarray(a)

    def on_side_stream(self):
        return self.stream

    def spin(self):
        self._spin((1,), (1,), (np.int64(SPIN_CYCLES),))

    def delayed_copy(self, src):
        out = self.cupy.empty_like(src)
        self.spin()
        out[...] = src  # a device-to-device copy on the current stream
        return out

    def to_host(self, a):
        return self.cupy.asnumpy(a)

    def synchronize(self):
        self.stream.synchronize()


def _libraries():
    libs = [pytest.param(_Torch, id="torch")]
    if available()["cupy"] is None:
        libs.append(pytest.param(_CuPy, id="cupy"))
    return libs


def _run(op, backend, device_inputs, gibbs_model):
    if op == "gibbs_sweeps":
        (spins,) = device_inputs
        return (gibbs.gibbs_sweeps(gibbs_model, spins, n_sweeps=3, rng=5, backend=backend),)
    problems, _ = _problems(np.random.default_rng(0))
    return tuple(problems[op][1](backend, *device_inputs))


@pytest.mark.skipif(not GPU_BACKENDS, reason="no GPU kernel backend usable here")
@pytest.mark.parametrize("lib_type", _libraries())
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_hot_path_on_a_non_default_stream(backend, op, lib_type):
    from arraygen import _dispatch

    lib = lib_type()
    problems, model = _problems(np.random.default_rng(0))
    inputs = problems[op][0]
    probe = lib.to_device(inputs[0])
    reason = _dispatch._why_not(backend, _dispatch.spec(op), (probe,))
    if reason is not None:
        pytest.skip(reason)
    sources = [lib.to_device(a) for a in inputs]
    gibbs_model = model(lib.to_device)  # made (and its copies finished) before the side stream
    want = [lib.to_host(r) for r in _run(op, backend, sources, gibbs_model)]
    torch.cuda.synchronize()
    with lib.on_side_stream():
        # the inputs are written ~0.1 s after the launch: a launcher on another stream reads
        # them unwritten; the results are read back on this stream as soon as it is done
        device_inputs = [lib.delayed_copy(a) for a in sources]
        got = [lib.to_host(r) for r in _run(op, backend, device_inputs, gibbs_model)]
    lib.synchronize()
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
