import importlib.abc
import sys
import types

import numpy as np
import pytest

import fastmnist
from fastmnist.backend import Backend, DeviceError, get_backend, probe_cuda, to_numpy


def test_cpu_is_numpy():
    b = get_backend("cpu")
    assert b.xp is np and b.device == "cpu" and not b.is_cuda and b.reason is None


def test_real_cupy_without_gpu_falls_back_with_reason():
    pytest.importorskip("cupy", reason="the cuda extra is not installed")
    cupy, reason = probe_cuda(0)
    if cupy is not None:
        pytest.skip("a GPU is usable here; the no-GPU path cannot be observed")
    auto = get_backend("auto")
    assert auto.device == "cpu" and auto.xp is np
    assert auto.reason == "no NVIDIA GPU or driver found" or "CUDA" in auto.reason
    with pytest.raises(DeviceError, match="cuda.*requested.*device='cpu'"):
        get_backend("cuda")


def test_cupy_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    assert get_backend("auto").reason == "CuPy is not installed"
    with pytest.raises(DeviceError, match="CuPy is not installed.*pip install 'fastmnist\\[cuda\\]'"):
        get_backend("cuda:0")


class _Explode(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "cupy":
            raise OSError("libcuda.so.1: cannot open shared object file")
        return None


def test_cupy_import_raises_oserror(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Explode(), *sys.meta_path])
    auto = get_backend("auto")
    assert auto.device == "cpu" and "libcuda.so.1" in auto.reason
    with pytest.raises(DeviceError, match="libcuda"):
        get_backend("cuda")


def fake_cupy(count, available=True, driver=12040):
    def device_count():
        if count == 0:
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return count

    runtime = types.SimpleNamespace(getDeviceCount=device_count, driverGetVersion=lambda: driver)
    cuda = types.SimpleNamespace(is_available=lambda: available, runtime=runtime)
    return types.SimpleNamespace(__name__="cupy", cuda=cuda)


def test_driver_error_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(0, available=False))
    assert "no CUDA-capable device" in get_backend("auto").reason
    with pytest.raises(DeviceError, match="no CUDA-capable device"):
        get_backend("cuda")


def test_no_driver_is_said_plainly_and_the_variable_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(0, available=False, driver=0))
    assert get_backend("auto").reason == "no NVIDIA GPU or driver found"
    with pytest.raises(DeviceError) as exc:
        get_backend("cuda")
    assert "no NVIDIA GPU or driver found" in str(exc.value)
    assert "pip install" not in str(exc.value)  # CuPy is there already
    monkeypatch.setenv("FASTMNIST_DEVICE", "cuda:1")
    with pytest.raises(DeviceError, match=r"'cuda:1' was requested \(from FASTMNIST_DEVICE="
                                          r"cuda:1\).*unset FASTMNIST_DEVICE"):
        get_backend()


def test_auto_picks_a_usable_gpu_and_checks_its_index(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(2))
    b = get_backend("auto")
    assert b.device == "cuda:0" and b.is_cuda and b.reason is None
    assert get_backend("cuda:1").cuda_index == 1
    with pytest.raises(DeviceError, match="cuda:2 does not exist"):
        get_backend("cuda:2")


def test_environment_variable_sets_default(monkeypatch):
    monkeypatch.setenv("FASTMNIST_DEVICE", "cpu")
    assert get_backend().device == "cpu"
    monkeypatch.setenv("FASTMNIST_DEVICE", "tpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        get_backend()


def test_namespace_module_and_transfers():
    xps = pytest.importorskip("array_api_strict")
    b = get_backend(xps)
    assert b.xp is xps and not b.has_ufuncs
    a = b.asarray(np.arange(6.0).reshape(2, 3), dtype="float32")
    back = to_numpy(a)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_array_equal(back, np.arange(6.0).reshape(2, 3))
    assert get_backend(b) is b and isinstance(b, Backend)


def test_dtype_guard():
    with pytest.raises(ValueError, match="float32' or 'float64"):
        get_backend("cpu").dtype("float16")


def test_public_api_exports():
    for name in ("TwoLayerNet", "load_mnist", "train", "plot_history", "get_backend", "History"):
        assert hasattr(fastmnist, name)
