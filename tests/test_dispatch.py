"""Backend selection for the hot-path ops: precedence, errors, disabling, grad routing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import arraygen
from arraygen import _dispatch, backends
from arraygen.reference import fisher as ref
from arraygen.testing import assert_close

OPS = ["fisher_diagonal", "fisher_langevin_step"]


@pytest.fixture
def clean_env(monkeypatch):
    """No ARRAYGEN_BACKEND / ARRAYGEN_DISABLE_* from the outside; availability cache reset."""
    for name in ["ARRAYGEN_BACKEND"] + [f"ARRAYGEN_DISABLE_{b.upper()}" for b in backends.BACKENDS]:
        monkeypatch.delenv(name, raising=False)
    backends.reset_cache()
    yield monkeypatch
    backends.reset_cache()


def _numba_cpu_usable() -> bool:
    return backends.available()["numba_cpu"] is None


@pytest.mark.parametrize("op", OPS)
def test_keyword_beats_environment_beats_auto(clean_env, op):
    x = np.zeros((2, 3))
    auto = _dispatch.select(op, x)
    assert auto == ("numba_cpu" if _numba_cpu_usable() else "array_api")
    clean_env.setenv("ARRAYGEN_BACKEND", "array_api")
    assert _dispatch.select(op, x) == "array_api"
    if _numba_cpu_usable():
        assert _dispatch.select(op, x, backend="numba_cpu") == "numba_cpu"
        clean_env.setenv("ARRAYGEN_BACKEND", "numba_cpu")
        assert _dispatch.select(op, x, backend="array_api") == "array_api"


def test_unknown_names(clean_env):
    x = np.zeros((2, 3))
    with pytest.raises(arraygen.BackendError, match="unknown backend 'fast'.*backend="):
        arraygen.fisher_diagonal(x, 0.5, backend="fast")
    clean_env.setenv("ARRAYGEN_BACKEND", "cuda")
    with pytest.raises(arraygen.BackendError, match="unknown backend 'cuda'.*ARRAYGEN_BACKEND"):
        arraygen.fisher_diagonal(x, 0.5)
    assert issubclass(arraygen.BackendError, ValueError)


def test_explicit_backend_on_wrong_device_names_usable_options(clean_env):
    x = np.zeros((2, 3))
    with pytest.raises(arraygen.BackendError, match="'cupy'.*Usable backends.*array_api"):
        arraygen.fisher_langevin_step(x, x, x + 1, 0.5, step_size=0.1, backend="cupy")
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        g = torch.zeros(2, 3, device="cuda")
        with pytest.raises(arraygen.BackendError, match="numba_cpu runs on host"):
            arraygen.fisher_diagonal(g, 0.5, backend="numba_cpu")


def test_disable_environment_variable(clean_env):
    if not _numba_cpu_usable():
        pytest.skip("numba_cpu not usable here")
    x = np.random.default_rng(0).standard_normal((2, 3))
    clean_env.setenv("ARRAYGEN_DISABLE_NUMBA_CPU", "1")
    backends.reset_cache()
    assert "ARRAYGEN_DISABLE_NUMBA_CPU" in backends.available()["numba_cpu"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the automatic choice falls back silently
        assert _dispatch.select("fisher_diagonal", x) == "array_api"
        out = arraygen.fisher_diagonal(x, 0.5)
    assert_close(out, ref.fisher_diagonal(x, 0.5))
    with pytest.raises(arraygen.BackendError, match="disabled by ARRAYGEN_DISABLE_NUMBA_CPU"):
        arraygen.fisher_diagonal(x, 0.5, backend="numba_cpu")


def test_auto_uses_numba_cpu_for_host_arrays_and_array_api_otherwise(clean_env):
    torch = pytest.importorskip("torch")
    host = "numba_cpu" if _numba_cpu_usable() else "array_api"
    assert _dispatch.select("fisher_diagonal", torch.zeros(2, 3)) == host
    assert _dispatch.select("fisher_diagonal", np.zeros((2, 3)), torch.zeros(2)) == host
    assert _dispatch.select("fisher_diagonal", torch.zeros(2, 3, requires_grad=True)) == "array_api"
    import array_api_strict as xps

    assert _dispatch.select("fisher_diagonal", xps.zeros((2, 3))) == "array_api"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_cpu_tensors_take_the_numba_kernels_zero_copy(clean_env, dtype):
    """torch CPU input (no grad) runs the Numba kernels; the result is a torch CPU tensor of the
    input's dtype, equal to the NumPy result and to the oracle."""
    if not _numba_cpu_usable():
        pytest.skip("numba_cpu not usable here")
    torch = pytest.importorskip("torch")
    gen = np.random.default_rng(5)
    s = gen.standard_normal((3, 7)).astype(dtype)
    launcher = _dispatch.kernel("fisher_diagonal", "numba_cpu")
    seen = []

    def spy(*args, **kwargs):
        seen.append(type(args[0]))
        return launcher(*args, **kwargs)

    clean_env.setattr(_dispatch, "kernel", lambda op, name: spy)
    t = torch.from_numpy(s.copy())
    out = arraygen.fisher_diagonal(t, 0.25)
    assert seen == [torch.Tensor]
    assert isinstance(out, torch.Tensor) and out.device.type == "cpu"
    assert out.dtype == getattr(torch, dtype)
    np.testing.assert_array_equal(out.numpy(), np.asarray(arraygen.fisher_diagonal(s, 0.25)))
    assert_close(out.numpy().astype(np.float64), ref.fisher_diagonal(s.astype(np.float64), 0.25),
                 rtol=1e-6 if dtype == "float32" else 1e-12)


def test_simulated_gpu_backends_are_never_chosen_automatically(clean_env):
    from arraygen.backends import is_simulated

    torch = pytest.importorskip("torch")
    if is_simulated("triton"):
        assert _dispatch.select("fisher_langevin_step", torch.zeros(2, 3)) != "triton"


def test_requires_grad_goes_to_array_api_and_gradients_flow(clean_env):
    torch = pytest.importorskip("torch")
    s = torch.tensor([[1.0, -2.0, 0.5], [0.1, 0.2, 3.0]], dtype=torch.float64, requires_grad=True)
    assert _dispatch.select("fisher_diagonal", s) == "array_api"
    arraygen.fisher_diagonal(s, 0.5).sum().backward()
    assert torch.allclose(s.grad, 2 * s.detach())
    x = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    v = torch.ones(2, 3, dtype=torch.float64)
    z = torch.zeros(2, 3, dtype=torch.float64)
    x_new, _ = arraygen.fisher_langevin_step(x, s.detach(), v, 0.5, step_size=0.1, noise=z)
    x_new.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))  # d x' / d x = 1
    with pytest.raises(arraygen.BackendError, match="require.*grad"):
        arraygen.fisher_diagonal(s, 0.5, backend="triton")


def test_registry_lists_every_kernel_language():
    for op in OPS:
        spec = _dispatch.spec(op)
        assert set(spec.kernels) == {"numba_cpu", "numba_cuda", "cupy", "triton"}
        assert set(spec.gpu_order) <= set(spec.kernels)


def test_launch_tuning_is_a_frozen_record_with_scoped_overrides():
    """Launcher knobs are frozen records; overrides last for a ``with`` block, in one thread."""
    import dataclasses
    import threading

    from arraygen.backends._tuning import Tunable

    @dataclasses.dataclass(frozen=True)
    class Knobs:
        splits: int | None = None
        fused: bool = True

    tuning = Tunable("test", Knobs())
    with pytest.raises(dataclasses.FrozenInstanceError):
        tuning.current().splits = 3
    with pytest.raises(TypeError):
        with tuning.override(no_such_knob=1):
            pass
    seen = []
    with tuning.override(splits=3):
        with tuning.override(fused=False):
            assert tuning.current() == Knobs(3, False)
        assert tuning.current() == Knobs(3, True)
        worker = threading.Thread(target=lambda: seen.append(tuning.current()))
        worker.start()
        worker.join()
    assert seen == [Knobs()]  # another thread keeps the defaults
    assert tuning.current() is tuning.default
    with pytest.raises(TypeError):
        Tunable("bad", {"splits": 3})
