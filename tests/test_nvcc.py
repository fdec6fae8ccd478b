"""The GPU step's CUDA C, compiled here by nvcc for the GPUs fastmnist targets (sm_80: A100,
sm_90: H100), so a syntax or type error fails without a GPU. The sources are the very objects
fastmnist.steps.kernels hands to CuPy; ElementwiseKernel bodies are wrapped the way CuPy wraps them
(T bound to the argument type, inputs as ``const T &``, outputs as ``T &``, a loop over ``i``)."""
import shutil
import subprocess
import types

import pytest

from fastmnist.steps import kernels
from fastmnist.steps.kernels import ELEMENTWISE, RAW, CudaKernels, Elementwise, Raw

NVCC = shutil.which("nvcc")
ARCHS = ("sm_80", "sm_90")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA toolkit's compiler) is not "
                                                     "on PATH; install the CUDA toolkit to compile")
C_TYPES = {"float32": "float", "float64": "double", "int32": "int", "int64": "long long",
           "uint8": "unsigned char", "bool": "bool"}


def parameters(text: str) -> list[tuple[bool, str, str]]:
    """``(raw, type, name)`` for each of an ElementwiseKernel's ``"T a, raw float32 b"``."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        *keywords, typ, name = part.split()
        out.append(("raw" in keywords, typ, name))
    return out


def elementwise_source(spec: Elementwise, ctype: str = "float") -> str:
    """The ``__global__`` function CuPy generates around ``spec.operation`` for arrays whose
    one-letter type parameters are all ``ctype`` (what CudaStep passes: float32)."""
    inputs, outputs = parameters(spec.in_params), parameters(spec.out_params)
    letters = sorted({typ for _, typ, _ in inputs + outputs if typ not in C_TYPES})
    args, binds = [], []
    for is_input, params in ((True, inputs), (False, outputs)):
        const = "const " if is_input else ""
        for raw, typ, name in params:
            c = C_TYPES.get(typ, typ)
            if raw:
                args.append(f"{const}{c}* {name}")
            else:
                args.append(f"{const}{c}* _raw_{name}")
                binds.append(f"        {const}{c} &{name} = _raw_{name}[i];")
    body = "\n".join(binds + [f"        {spec.operation};"])
    typedefs = "".join(f"typedef {ctype} {letter};\n" for letter in letters)
    return (f"{typedefs}extern \"C\" __global__ void {spec.name}({', '.join(args)}, "
            f"const long long _size) {{\n"
            f"    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < _size;"
            f" i += (long long)blockDim.x * gridDim.x) {{\n{body}\n    }}\n}}\n")


def nvcc(source: str, tmp_path) -> subprocess.CompletedProcess:
    """Compile ``source`` to device code for every target architecture (no host code)."""
    path = tmp_path / "kernel.cu"
    path.write_text(source)
    gencode = [f"-gencode=arch=compute_{a[3:]},code={a}" for a in ARCHS]
    return subprocess.run([NVCC, "-fatbin", *gencode, "-o", str(tmp_path / "kernel.fatbin"),
                           str(path)], capture_output=True, text=True, timeout=300)


def source_of(spec) -> str:
    return spec.source if isinstance(spec, Raw) else elementwise_source(spec)


@needs_nvcc
@pytest.mark.parametrize("spec", RAW + ELEMENTWISE, ids=lambda s: s.name)
def test_nvcc_compiles_kernel_for_sm80_and_sm90(spec, tmp_path):
    run = nvcc(source_of(spec), tmp_path)
    assert run.returncode == 0, f"nvcc rejected {spec.name}:\n{run.stderr}"
    assert (tmp_path / "kernel.fatbin").stat().st_size > 0


@needs_nvcc
@pytest.mark.parametrize("broken", [
    Raw(kernels.SOFTMAX_XENT.source.replace("expf(s)", "expf(s, m)"), "fastmnist_softmax_xent"),
    Raw(kernels.SOFTMAX_XENT.source.replace("logf(total)", "logf(totl)"), "fastmnist_softmax_xent"),
    kernels.BIAS_SIGMOID._replace(operation="z = 1 / (1 + exp(-(a + b.x)))"),
    kernels.SIGMOID_BACKWARD._replace(operation="dz = dz * z * (1 - z"),
], ids=["wrong-arguments", "undeclared-name", "member-of-a-float", "unbalanced"])
def test_nvcc_rejects_a_broken_kernel(broken, tmp_path):
    assert source_of(broken) not in {source_of(s) for s in RAW + ELEMENTWISE}
    run = nvcc(source_of(broken), tmp_path)
    assert run.returncode != 0 and "error" in run.stderr


def test_nvcc_wrapper_binds_parameters_the_way_cupy_does():
    src = elementwise_source(Elementwise("T x, raw float32 w", "T y", "y = x * w[i]", "k"))
    assert "typedef float T;" in src
    assert "const T* _raw_x, const float* w, T* _raw_y, const long long _size" in src
    assert "const T &x = _raw_x[i];" in src and "T &y = _raw_y[i];" in src
    assert "y = x * w[i];" in src


def test_nvcc_compiles_the_sources_cupy_is_given():
    """CudaKernels hands CuPy exactly the specs compiled above, nothing rewritten on the way."""
    made = []

    def recorder(kind):
        return lambda *args: made.append((kind, args)) or (lambda *a: None)

    fake_cupy = types.SimpleNamespace(ElementwiseKernel=recorder("elementwise"),
                                      RawKernel=recorder("raw"))
    CudaKernels(fake_cupy)
    assert sorted(made) == sorted([("elementwise", tuple(s)) for s in ELEMENTWISE]
                                  + [("raw", tuple(s)) for s in RAW])
