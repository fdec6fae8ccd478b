"""Where arrays live: the one place that decides between NumPy, CuPy and other array-API modules.

Everything else in fastmnist receives a :class:`Backend` and calls ``backend.xp`` functions, so
one implementation serves the CPU, the GPU and strict array-API namespaces used in tests.
"""
from __future__ import annotations

import importlib
import os
import sys
import types
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

ENV_DEVICE = "FASTMNIST_DEVICE"
CUDA_HINT = (
    "Install the GPU extra with `pip install 'fastmnist[cuda]'` on a machine with an NVIDIA GPU "
    "and driver, or pass device='cpu' (CLI: --device cpu)."
)
GPU_HINT = "CuPy is installed; CUDA also needs an NVIDIA GPU and its driver. Or pass " \
           "device='cpu' (CLI: --device cpu)."
NO_DRIVER = "no NVIDIA GPU or driver found"


class DeviceError(RuntimeError):
    """The requested device cannot be used; the message says why, then what to do (``hint``)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(f"{message} {hint}".strip())
        self.problem, self.hint = message, hint


@dataclass(frozen=True)
class Backend:
    """An array namespace bound to one device.

    ``xp`` is the module (numpy, cupy or an array-API namespace), ``device`` a readable name such
    as ``"cpu"`` or ``"cuda:0"``, ``reason`` why CUDA is not in use when ``"auto"`` fell back.
    """

    xp: types.ModuleType
    device: str
    reason: str | None = None
    cuda_index: int | None = None

    @property
    def is_cuda(self) -> bool:
        return self.cuda_index is not None

    @property
    def has_ufuncs(self) -> bool:
        """True for NumPy and CuPy, whose functions take ``out=`` buffers (the fast path)."""
        return self.xp is np or self.is_cuda

    def dtype(self, name) -> object:
        """The namespace's dtype object for a name such as ``"float32"``."""
        name = np.dtype(name).name if not isinstance(name, str) else name
        if name not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {name!r}")
        return getattr(self.xp, name)

    def asarray(self, a, dtype=None):
        """Copy host (NumPy) data to this backend's device; arrays already there pass through."""
        if dtype is not None and isinstance(dtype, str):
            dtype = self.dtype(dtype)
        if self.is_cuda:
            with self.xp.cuda.Device(self.cuda_index):
                return self.xp.asarray(a, dtype=dtype)
        return self.xp.asarray(a, dtype=dtype)

    def use(self):
        """A context manager that makes this backend's GPU current (a no-op elsewhere)."""
        if self.is_cuda:
            return self.xp.cuda.Device(self.cuda_index)
        return nullcontext()

    def synchronize(self) -> None:
        """Wait for queued device work (only meaningful on CUDA)."""
        if self.is_cuda:
            self.xp.cuda.get_current_stream().synchronize()

    def available_memory(self) -> int | None:
        """Bytes that new arrays can still take on this device (None when unknown): the
        GPU's free memory plus what CuPy's pool holds unused, or the host's available memory."""
        if self.is_cuda:
            with self.use():
                free = int(self.xp.cuda.runtime.memGetInfo()[0])
                return free + int(self.xp.get_default_memory_pool().free_bytes())
        return host_available_memory()

    def gpu_seconds(self, fn, repeat: int, warmup: int) -> float:
        """Best device time of ``fn()`` from CUDA events (``cupyx.profiler.benchmark``)."""
        from cupyx.profiler import benchmark

        with self.use():
            result = benchmark(fn, n_repeat=repeat, n_warmup=max(warmup, 1))
        return float(result.gpu_times.min())


def host_available_memory() -> int | None:
    """The host memory new allocations can take without swapping (Linux's MemAvailable), or
    the free physical memory elsewhere; None when the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def to_numpy(a) -> np.ndarray:
    """Copy any backend's array (or scalar) to a NumPy array on the host.

    This is a host synchronisation point on the GPU; call it only where results are needed.
    """
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    if hasattr(a, "__dlpack__") and not isinstance(a, (int, float)):
        try:
            return np.from_dlpack(a)
        except (TypeError, RuntimeError, BufferError):
            pass
    return np.asarray(a)


def array_namespace(a) -> types.ModuleType:
    """The namespace module an array belongs to (numpy for plain Python/NumPy input)."""
    if hasattr(a, "__array_namespace__"):
        return a.__array_namespace__()
    module = type(a).__module__.split(".")[0]
    if module == "cupy":
        return sys.modules["cupy"]
    return np


def import_cupy():
    """Import CuPy, or return ``(None, reason)``: never raises, whatever is broken."""
    try:
        return importlib.import_module("cupy"), None
    except ImportError as exc:
        if getattr(exc, "name", None) == "cupy":
            return None, "CuPy is not installed"
        return None, f"CuPy failed to import ({exc})"
    except Exception as exc:  # OSError for a missing libcuda, anything a broken install raises
        return None, f"CuPy failed to import ({type(exc).__name__}: {exc})"


def cuda_devices(cupy) -> tuple[int, str | None]:
    """How many CUDA devices CuPy can use, and why none when the answer is 0."""
    try:
        if not cupy.cuda.is_available():
            if no_driver(cupy):
                return 0, NO_DRIVER
            try:
                cupy.cuda.runtime.getDeviceCount()
            except Exception as exc:
                return 0, f"CUDA is not usable ({exc})"
            return 0, "CUDA is not usable (no GPU or driver found)"
        return int(cupy.cuda.runtime.getDeviceCount()), None
    except Exception as exc:  # CUDARuntimeError and friends
        return 0, f"CUDA is not usable ({type(exc).__name__}: {exc})"


def no_driver(cupy) -> bool:
    """True when CUDA finds no driver at all (``cudaDriverGetVersion`` gives 0: no libcuda),
    rather than one too old or a GPU it cannot use."""
    try:
        return cupy.cuda.runtime.driverGetVersion() == 0
    except Exception:
        return False


def probe_cuda(index: int = 0) -> tuple[object | None, str | None]:
    """``(cupy, None)`` when GPU ``index`` is usable, else ``(None, reason)``."""
    cupy, reason = import_cupy()
    if cupy is None:
        return None, reason
    count, reason = cuda_devices(cupy)
    if count == 0:
        return None, reason
    if index >= count:
        return None, f"GPU cuda:{index} does not exist (found {count} device(s))"
    return cupy, None


def _parse_cuda(device: str, source: str) -> int:
    if device == "cuda":
        return 0
    head, _, tail = device.partition(":")
    if head == "cuda" and tail.isdigit():
        return int(tail)
    raise ValueError(f"unknown device {device!r}{source}: use 'auto', 'cpu', 'cuda' or 'cuda:N'"
                     + ("" if source else f" (or set {ENV_DEVICE})"))


def get_backend(device=None) -> Backend:
    """Choose where arrays live.

    ``device`` is ``"auto"`` (a GPU when one is usable, else the CPU with the reason recorded),
    ``"cpu"``, ``"cuda"``/``"cuda:N"`` (raises :class:`DeviceError` when unusable), an array-API
    namespace module such as ``array_api_strict``, or a :class:`Backend` (returned as is).
    ``None`` reads ``FASTMNIST_DEVICE`` and defaults to ``"auto"``.
    """
    if isinstance(device, Backend):
        return device
    if isinstance(device, types.ModuleType):
        if device is np:
            return Backend(np, "cpu")
        if device.__name__ == "cupy":
            return get_backend("cuda")
        return Backend(device, device.__name__)
    source = ""  # where the setting came from, when not from the caller
    if device is None:
        device = os.environ.get(ENV_DEVICE) or "auto"
        source = f" (from {ENV_DEVICE}={device})" if os.environ.get(ENV_DEVICE) else ""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string or an array namespace, got {type(device).__name__}")
    device = device.strip().lower()
    if device == "cpu":
        return Backend(np, "cpu")
    if device == "auto":
        cupy, reason = probe_cuda(0)
        if cupy is None:
            return Backend(np, "cpu", reason=reason)
        return Backend(cupy, "cuda:0", cuda_index=0)
    index = _parse_cuda(device, source)
    cupy, reason = probe_cuda(index)
    if cupy is None:
        hint = CUDA_HINT if "CuPy" in reason else GPU_HINT
        if source:
            hint = hint.removesuffix(".") + f", or unset {ENV_DEVICE}."
        raise DeviceError(f"device {device!r} was requested{source} but {reason}.", hint)
    return Backend(cupy, f"cuda:{index}", cuda_index=index)
