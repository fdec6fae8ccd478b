"""`fastmnist doctor`: a line per check, an exit code, JSON for bug reports; CUDA checks skipped
with the reason here, required with --device cuda; a wrong computation makes it fail."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastmnist
from fastmnist.backend import probe_cuda
from fastmnist.cli import main
from fastmnist.steps.cpu import CpuStep
from fastmnist.doctor import CPU_CHECKS, CUDA_CHECKS

ROOT = Path(__file__).resolve().parents[1]
NAMES = [name for name, _ in CPU_CHECKS + CUDA_CHECKS]
GPU, NO_GPU_REASON = probe_cuda(0)


def lines_of(out: str) -> dict:
    """{check name: (status, rest of its line)} from the doctor's output."""
    found = {}
    for line in out.splitlines():
        status, _, rest = line.partition("  ")
        if status.strip() in ("PASS", "FAIL", "SKIP"):
            name = max((n for n in NAMES if rest.startswith(n + " ")), key=len)
            found[name] = (status.strip(), rest[len(name):].strip())
    return found


def test_every_check_gets_a_line_and_the_cpu_ones_pass(capsys):
    assert main(["doctor", "--steps", "20"]) == 0
    out = capsys.readouterr().out
    found = lines_of(out)
    assert list(found) == NAMES
    for name, _ in CPU_CHECKS:
        assert found[name][0] == "PASS", (name, found[name])
    for name, _ in CUDA_CHECKS:
        if GPU is None:
            assert found[name] == ("SKIP", found[name][1]) and NO_GPU_REASON in found[name][1]
        else:
            assert found[name][0] == "PASS", (name, found[name])
    assert f"{len(CPU_CHECKS) + (len(CUDA_CHECKS) if GPU else 0)} passed, 0 failed" in out


def test_cpu_only_skips_the_cuda_checks_and_says_so(capsys):
    assert main(["doctor", "--device", "cpu", "--steps", "10"]) == 0
    found = lines_of(capsys.readouterr().out)
    assert {found[n] for n, _ in CUDA_CHECKS} == {("SKIP", found["CUDA"][1])}
    assert "not asked for (--device cpu)" in found["CUDA"][1]


@pytest.mark.skipif(GPU is not None, reason="a GPU is usable here: the CUDA checks run and pass "
                                            "(tests/test_cuda.py::test_doctor_on_the_gpu)")
def test_requiring_cuda_without_a_gpu_fails_with_the_reason_and_no_traceback():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "fastmnist.cli", "doctor", "--device", "cuda",
                          "--steps", "5"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 1
    found = lines_of(run.stdout)
    for name, _ in CUDA_CHECKS:
        assert found[name][0] == "FAIL" and NO_GPU_REASON in found[name][1]
    assert "device 'cuda' was requested" in found["CUDA"][1]
    assert "Traceback" not in run.stdout + run.stderr


def test_json_report_for_bug_reports(capsys):
    assert main(["doctor", "--json", "--device", "cpu", "--steps", "10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in report["checks"]] == NAMES
    assert report["passed"] == len(CPU_CHECKS) and report["failed"] == 0
    assert report["skipped"] == len(CUDA_CHECKS)
    assert {"fastmnist", "python", "numpy", "blas", "cuda", "device"} <= set(report)
    assert all(c["seconds"] >= 0 and c["detail"] for c in report["checks"])


def test_a_wrong_step_fails_the_doctor(monkeypatch, capsys):
    right = CpuStep.compute

    def off_by_a_little(self, batch, losses, i):
        right(self, batch, losses, i)
        self.params["W1"] *= np.float32(1.0001)  # a bug the size of a wrong constant

    monkeypatch.setattr(CpuStep, "compute", off_by_a_little)
    assert main(["doctor", "--device", "cpu", "--steps", "20"]) == 1
    found = lines_of(capsys.readouterr().out)
    assert found["fast step"][0] == "FAIL" and "W1 differs by" in found["fast step"][1]
    assert found["gradient"][0] == "PASS"


def test_a_check_that_crashes_is_one_failed_line(monkeypatch):
    import fastmnist.modelfile as modelfile

    def disk_full(*args, **kwargs):
        raise OSError("[Errno 28] No space left on device\nmore detail nobody needs")

    monkeypatch.setattr(modelfile, "atomic_open", disk_full)
    results = {r.name: r for r in fastmnist.doctor(device="cpu", steps=5, log=None)}
    assert results["model file"].status == "FAIL"
    assert results["model file"].detail == "OSError: [Errno 28] No space left on device"
    assert results["learning"].status == "PASS"


def test_a_compiled_step_that_falls_back_fails_the_doctor_with_the_reason(monkeypatch, capsys):
    """Right numbers from the NumPy fallback, but a broken kernel: the doctor says so."""
    from fastmnist.steps import compiled, tiled

    if compiled.why_unavailable() is not None:
        pytest.skip(f"the compiled step is not available here: {compiled.why_unavailable()}")
    real = tiled.grads_kernel("float32")

    def broken(*args):
        raise OSError("a broken library")

    monkeypatch.setattr(tiled, "grads_kernel",
                        lambda name: real._replace(step=real.step._replace(call=broken)))
    monkeypatch.setattr(sys.modules["fastmnist.train"], "thread_budget", lambda: 2)
    assert main(["doctor", "--device", "cpu", "--steps", "10"]) == 1
    found = lines_of(capsys.readouterr().out)
    assert found["large batch"][0] == "FAIL"
    assert "TiledStep fell back to NumPy" in found["large batch"][1]
    assert "a broken library" in found["large batch"][1]
    assert found["fast step"][0] == "PASS"
