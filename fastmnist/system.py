"""What this machine gives fastmnist: the BLAS library and its threads, CuPy, CUDA and the GPUs.

Only describes (for ``fastmnist info``, benchmark records and ``fastmnist doctor``); whether the
numbers come out right is the doctor's business. CuPy is reached through
:func:`fastmnist.backend.import_cupy`, never imported here.
"""
from __future__ import annotations

from .backend import cuda_devices, import_cupy


def blas_libraries() -> list[dict]:
    """threadpoolctl's record of each BLAS library NumPy uses (empty without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [i for i in threadpool_info() if i.get("user_api") == "blas"]


def blas_info() -> list[str]:
    """One line per BLAS library: name, version, threads, CPU kernels."""
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return ["(install threadpoolctl to see the BLAS library)"]
    return [f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads, "
            f"{i.get('architecture')})" for i in blas_libraries()]


def cuda_version(number: int) -> str:
    """CUDA's version integers (12040) as people write them (12.4)."""
    return f"{number // 1000}.{number % 1000 // 10}"


def gpu_properties(cupy, index: int) -> dict:
    """Name, memory and compute capability of GPU ``index``."""
    props = cupy.cuda.runtime.getDeviceProperties(index)
    name = props["name"]
    return {"name": name.decode() if isinstance(name, bytes) else str(name),
            "memory_bytes": int(props["totalGlobalMem"]),
            "compute_capability": f"{props['major']}.{props['minor']}"}


def cuda_report() -> dict:
    """CuPy's and CUDA's versions and the usable GPUs, or why there are none (``reason``).

    Never raises: a broken install is described, not thrown.
    """
    cupy, reason = import_cupy()
    if cupy is None:
        return {"cupy": None, "reason": reason, "devices": []}
    report = {"cupy": cupy.__version__, "reason": None, "devices": []}
    for key, getter in (("runtime", "runtimeGetVersion"), ("driver", "driverGetVersion")):
        try:
            number = int(getattr(cupy.cuda.runtime, getter)())
            report[key] = cuda_version(number) if number else "none"
        except Exception as exc:  # no driver, or a driver too old for the runtime
            report[key] = f"unknown ({type(exc).__name__})"
    count, report["reason"] = cuda_devices(cupy)
    for i in range(count):
        try:
            report["devices"].append({"index": i, **gpu_properties(cupy, i)})
        except Exception as exc:
            report["devices"].append({"index": i, "error": f"{type(exc).__name__}: {exc}"})
    return report


def cuda_lines(report: dict) -> list[str]:
    """``cuda_report()`` as lines for people."""
    if report["cupy"] is None:
        return [f"CuPy: not available: {report['reason']}"]
    head = (f"CuPy {report['cupy']} (CUDA runtime {report['runtime']}, driver "
            f"{report['driver']}): {len(report['devices'])} CUDA device(s)")
    lines = [head + (f"; {report['reason']}" if report["reason"] else "")]
    for d in report["devices"]:
        if "error" in d:
            lines.append(f"  cuda:{d['index']}: {d['error']}")
        else:
            lines.append(f"  cuda:{d['index']}: {d['name']} ({d['memory_bytes'] / 2**30:.1f} GiB, "
                         f"compute capability {d['compute_capability']})")
    return lines
