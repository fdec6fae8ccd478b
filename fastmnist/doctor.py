"""``fastmnist doctor``: does this install compute the right numbers, here, now?

``fastmnist info`` describes the machine; the doctor verifies it, in seconds, one line per
check (PASS, FAIL or SKIP with the reason) and an exit code, or ``--json`` for a bug report.
Every comparison allows float rounding (:mod:`fastmnist.agreement`), nothing more.

On any machine: backprop against numerical gradients; the tuned step against the plain one over
N steps, and the large-batch step over a few; uint8 against float input; a model file's round trip; a short run that must learn; the
BLAS library's products with one thread and with all. Where CUDA is usable: the versions and
the GPU; the fused kernels against the generic step; the CUDA graph against eager steps; the GPU
against the CPU on the same batches; uint8 data resident on the device; the full-set scoring;
the GPU memory pool's peak over a training run. ``device="cuda"`` makes the CUDA checks
required: without a usable GPU they fail, with the reason.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import __version__, agreement
from .backend import DeviceError, get_backend, to_numpy
from .steps.generic import CheckedCount, first_line
from .modelfile import ModelFileError
from .network import TwoLayerNet, gradient_check, one_hot
from .steps import BufferedCount, BufferedStep, PlainStep
from .system import blas_info, blas_libraries, cuda_report
from .steps.threaded import THREADED_MIN_BATCH
from .train import make_step, train

LR, BATCH, ROWS = 0.1, 100, 1000  # the article's step on 1,000 random rows
STEPS = 200
LARGE_STEPS = 5  # steps of THREADED_MIN_BATCH rows, where train() takes its large-batch step


@dataclass
class Check:
    """One check's verdict: ``status`` is ``"PASS"``, ``"FAIL"`` or ``"SKIP"``."""

    name: str
    status: str
    detail: str
    seconds: float = 0.0

    def line(self) -> str:
        return f"{self.status:4s}  {self.name:18s} {self.detail}  ({self.seconds:.2f} s)"


def doctor(device="auto", steps: int = STEPS, log=print) -> list[Check]:
    """Run every check on ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``) and
    return the verdicts; ``log`` gets each line as it is decided (None: silent)."""
    cuda, why, required = cuda_backend(device)
    checks = [(name, fn, ()) for name, fn in CPU_CHECKS]
    checks += [(name, fn, (cuda,)) for name, fn in CUDA_CHECKS]
    results = []
    for name, fn, args in checks:
        if args and cuda is None:
            result = Check(name, "FAIL" if required else "SKIP", why)
        else:
            result = run_check(name, fn, *args, steps=steps)
        results.append(result)
        if log:
            log(result.line())
    return results


def cuda_backend(device) -> tuple[object | None, str, bool]:
    """The backend for the CUDA checks, or None and why they do not run; and whether
    ``device`` requires them (``"cuda"``, ``"cuda:N"``)."""
    device = "auto" if device is None else str(device).strip().lower()
    if device == "cpu":
        return None, "not asked for (--device cpu)", False
    try:
        backend = get_backend(device)
    except DeviceError as exc:
        return None, exc.problem, True
    if not backend.is_cuda:
        return None, backend.reason or "no GPU in use", False
    return backend, "", device != "auto"


def run_check(name: str, fn, *args, steps: int) -> Check:
    """One check, timed; whatever it raises is its failure, told in one line."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what a check must notice, it checks itself
            with np.errstate(all="ignore"):
                ok, detail = fn(*args, steps=steps)
        status = "SKIP" if ok is None else "PASS" if ok else "FAIL"
    except Exception as exc:
        status, detail = "FAIL", f"{type(exc).__name__}: {first_line(exc)}"
    return Check(name, status, detail, time.perf_counter() - t0)


# -- shared pieces ----------------------------------------------------------------------------------
def random_rows(n: int = ROWS, seed: int = 0):
    """``n`` random float32 rows of 784 pixels in 0..1 and integer labels 0-9."""
    rng = np.random.default_rng(seed)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)


def batches(steps: int, n: int = ROWS, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, (steps, BATCH))


def run_steps(kind: str, device, x, t, rows, graph: bool = True):
    """Step ``kind`` through ``rows`` ``(steps, B)`` from the same start; host parameters,
    each step's mean loss, and the step object (whose ``fused``/``graph`` say what ran)."""
    net = TwoLayerNet(seed=0, device=device)
    with net.backend.use():
        xd, td = net.as_input(x, keep_uint8=True), net.as_labels(t, x.shape[0])
        if kind == "plain":
            step = PlainStep(net.params, xd, one_hot(td, 10, net.dtype), LR)
        elif kind == "generic":
            step = BufferedStep(net.params, xd, one_hot(td, 10, net.dtype), LR, rows.shape[1],
                                net.xp)
        else:  # "fast": what train() runs here
            step = make_step(True, net, xd, td, LR, rows.shape[1], graph)
        losses = net.xp.zeros(rows.shape, net.dtype)
        for i in range(rows.shape[0]):
            step(net.backend.asarray(rows[i]), losses, i)
        net.backend.synchronize()
    return net.host_params(), to_numpy(losses).mean(axis=1), step


def agree(got, expected, steps: int, what: str, batch: int = BATCH) -> tuple[bool, str]:
    """Parameters and losses (``(params, batch-mean losses)`` of :func:`run_steps`) of two runs
    of ``steps`` steps, within rounding."""
    tol = agreement.tolerance("float32", agreement.terms_per_step((784, 50, 10), batch), steps)
    problem = (agreement.disagreement(got[0], expected[0], tol)
               or agreement.disagreement({"loss": got[1]}, {"loss": expected[1]}, tol))
    if problem:
        return False, f"{what}: {problem}"
    worst = max(relative(got[0][k], expected[0][k]) for k in expected[0])
    return True, (f"{what} agree after {steps} steps (max difference {worst:.1e} of the weights' "
                  f"scale; rounding allows {tol:.1e})")


def relative(a, b) -> float:
    return float(np.abs(a.astype(float) - b).max() / max(np.abs(b).max(), 1e-30))


# -- checks on any machine -----------------------------------------------------------------
def check_gradient(steps: int):
    rng = np.random.default_rng(0)
    x, t = rng.random((8, 20)), rng.integers(0, 10, 8)
    net = TwoLayerNet(20, 10, 10, 0.5, device="cpu", dtype="float64", seed=0)
    worst = max(gradient_check(net, x, t).values())
    return worst < 1e-6, (f"backprop vs central differences (float64): max relative error "
                          f"{worst:.1e}, limit 1e-6")


def fast_steps(x, t, rows):
    """:func:`run_steps` of the step ``train()`` takes here; raises where a compiled step fell
    back to NumPy (right numbers, but its kernel failed or disagreed), saying why."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        fast = run_steps("fast", "cpu", x, t, rows)
    if getattr(fast[2], "compiled", True) is False:
        why = next((str(w.message) for w in said), "no reason given")
        raise RuntimeError(f"{type(fast[2]).__name__} fell back to NumPy: {why}")
    return fast


def check_fast_step(steps: int):
    x, t = random_rows()
    rows = batches(steps)
    fast = fast_steps(x, t, rows)
    return agree(fast[:2], run_steps("plain", "cpu", x, t, rows)[:2], steps,
                 f"{type(fast[2]).__name__} and the plain array-API step")


def check_large_batch(steps: int):
    x, t = random_rows()
    rows = np.random.default_rng(1).integers(0, ROWS, (LARGE_STEPS, THREADED_MIN_BATCH))
    fast = fast_steps(x, t, rows)
    close = getattr(fast[2], "close", None)
    if close:
        close()
    return agree(fast[:2], run_steps("plain", "cpu", x, t, rows)[:2], LARGE_STEPS,
                 f"{type(fast[2]).__name__} and the plain array-API step at batch "
                 f"{THREADED_MIN_BATCH:,}", batch=THREADED_MIN_BATCH)


def check_uint8(steps: int):
    x, t = random_rows()
    pixels = (x * 255).round().astype(np.uint8)
    rows = batches(steps)
    raw = run_steps("fast", "cpu", pixels, t, rows)
    scaled = run_steps("fast", "cpu", pixels.astype(np.float32) / 255, t, rows)
    return agree(raw[:2], scaled[:2], steps, "uint8 rows and their float32 values")


def check_model_file(steps: int):
    net = TwoLayerNet(seed=3, weight_init_std=0.3, device="cpu")
    net.params["b2"] += np.float32(0.5)
    x, _ = random_rows(20)
    with tempfile.TemporaryDirectory(prefix="fastmnist-doctor-") as folder:
        path = net.save(Path(folder) / "model", dataset="doctor")
        back = TwoLayerNet.load(path, device="cpu")
        (Path(folder) / "cut.npz").write_bytes(path.read_bytes()[:200])
        try:
            TwoLayerNet.load(Path(folder) / "cut.npz", device="cpu")
            refused = False
        except ModelFileError:
            refused = True
    same = all(np.array_equal(back.params[k], net.params[k]) for k in net.params)
    same_output = np.array_equal(back.predict(x), net.predict(x))
    ok = same and same_output and back.metadata.get("dataset") == "doctor" and refused
    return ok, (f"save and load give identical parameters and predictions; a truncated file is "
                f"refused" if ok else f"round trip: parameters identical {same}, predictions "
                f"identical {same_output}, truncated file refused {refused}")


def blobs(n: int, seed: int = 0):
    """A learnable stand-in for digits: ten random stroke patterns, dimmed and noisy."""
    rng = np.random.default_rng(seed)
    patterns = (rng.random((10, 784)) < 0.15).astype(np.float32)
    t = rng.integers(0, 10, n)
    x = patterns[t] * rng.uniform(0.5, 1, (n, 1)) + 0.35 * rng.standard_normal((n, 784))
    return np.clip(x, 0, 1).astype(np.float32), t


def check_learning(steps: int):
    x, t = blobs(3000)
    net = TwoLayerNet(seed=0, device="cpu")
    iters = max(steps, 300)
    h = train(net, x[:2500], t[:2500], x[2500:], t[2500:], iters=iters, learning_rate=LR,
              seed=0, quiet=True)
    first, last = h.loss[0], float(np.mean(h.loss[-20:]))
    ok = h.test_acc[-1] >= 0.9 and last < first / 2
    return ok, (f"{iters} steps of train() (lr {LR}, batch {BATCH}) on 10 noisy patterns: loss "
                f"{first:.2f} -> {last:.2f}, held-out accuracy {h.test_acc[-1]:.3f} (needs 0.9)")


def check_blas(steps: int):
    libs = blas_libraries()
    rng = np.random.default_rng(0)
    a, b = rng.random((256, 784), dtype=np.float32), rng.standard_normal((784, 50), dtype=np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = agreement.tolerance("float32", 784) * (np.abs(a).astype(np.float64) @ np.abs(b))
    counts = sorted({1, max((i.get("num_threads") or 1) for i in libs)} if libs else {1})
    worst = []
    for n in counts:
        with threads(n):
            worst.append(float((np.abs(a @ b - exact) / bound).max()))
    name = "; ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
                     f"{i.get('num_threads')} threads)" for i in libs) or "BLAS not identified"
    ok = max(worst) <= 1
    return ok, (f"{name}: float32 products within rounding with {' and '.join(map(str, counts))}"
                f" thread(s) (worst {max(worst):.2f} of the bound)" if ok else
                f"{name}: float32 products off by {max(worst):.1f}x the rounding bound")


def threads(n: int):
    """BLAS held to ``n`` threads inside the block (a no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(n, user_api="blas")


# -- checks on a GPU ---------------------------------------------------------------------------
def check_cuda(cuda, steps: int):
    report = cuda_report()
    gpu = next(d for d in report["devices"] if d["index"] == cuda.cuda_index)
    return True, (f"CuPy {report['cupy']}, CUDA runtime {report['runtime']}, driver "
                  f"{report['driver']}; {cuda.device}: {gpu.get('name')} "
                  f"({gpu.get('memory_bytes', 0) / 2**30:.1f} GiB, compute capability "
                  f"{gpu.get('compute_capability')})")


def check_fused(cuda, steps: int):
    x, t = random_rows()
    rows = batches(steps)
    fused = run_steps("fast", cuda, x, t, rows, graph=False)
    if not fused[2].fused:
        return False, fused[2].reason or "the fused step fell back to the generic one"
    return agree(fused[:2], run_steps("generic", cuda, x, t, rows)[:2], steps,
                 "fused kernels and the generic CuPy step")


def check_graph(cuda, steps: int):
    x, t = random_rows()
    rows = batches(steps)
    graphed = run_steps("fast", cuda, x, t, rows, graph=True)
    if getattr(graphed[2], "graph_unsupported", False):  # None: SKIP, the eager fused step is what trains
        return None, graphed[2].graph_reason
    if graphed[2].graph is None:
        return False, graphed[2].graph_reason or graphed[2].reason or "the CUDA graph was not used"
    return agree(graphed[:2], run_steps("fast", cuda, x, t, rows, graph=False)[:2], steps,
                 "CUDA-graph replay and eager fused steps")


def check_gpu_vs_cpu(cuda, steps: int):
    x, t = random_rows()
    rows = batches(steps)
    ok, detail = agree(run_steps("fast", cuda, x, t, rows)[:2],
                       run_steps("fast", "cpu", x, t, rows)[:2], steps, "GPU and CPU steps")
    if not ok and "CUPY_TF32" in os.environ:
        detail += " (CUPY_TF32 is set: TF32 products carry 10-bit mantissas)"
    return ok, detail


def check_uint8_on_gpu(cuda, steps: int):
    x, t = random_rows()
    pixels = (x * 255).round().astype(np.uint8)
    on_device = TwoLayerNet(device=cuda).as_input(pixels, keep_uint8=True)
    if str(on_device.dtype) != "uint8" or on_device.nbytes != pixels.nbytes:
        return False, f"uint8 input became {on_device.dtype} on the device"
    rows = batches(steps)
    return agree(run_steps("fast", cuda, pixels, t, rows)[:2],
                 run_steps("fast", cuda, pixels.astype(np.float32) / 255, t, rows)[:2], steps,
                 "uint8 rows resident on the GPU and their float32 values")


def check_gpu_scoring(cuda, steps: int):
    x, _ = blobs(60_000)
    pixels = (x * 255).round().astype(np.uint8)
    cpu = TwoLayerNet(seed=0, weight_init_std=0.3, device="cpu")
    answers = np.argmax(cpu.predict(pixels.astype(np.float32) / 255), axis=1)
    answers[::3] = (answers[::3] + 1) % 10  # a third wrong, so that the count says something
    net = cpu.to(cuda)
    with cuda.use():
        xd, labels = net.as_input(pixels, keep_uint8=True), net.as_labels(answers, 60_000)
        count = CheckedCount(BufferedCount(net.params, net.xp), net.count_correct, net.params)
        got = int(to_numpy(count(xd, labels)))
        fast = int(to_numpy(BufferedCount(net.params, net.xp)(xd, labels)))
    if count.reason:
        return False, count.reason
    return True, (f"chunked full-set scoring of 60,000 uint8 rows agrees with the plain forward "
                  f"pass ({fast} and {got} correct)")


def check_gpu_memory(cuda, steps: int):
    x, t = blobs(60_000)
    pixels = (x * 255).round().astype(np.uint8)
    pool = cuda.xp.get_default_memory_pool()
    with cuda.use():
        pool.free_all_blocks()
        start = pool.total_bytes()
        net = TwoLayerNet(seed=0, device=cuda)
        h = train(net, pixels[:50_000], t[:50_000], pixels[50_000:], t[50_000:], iters=steps,
                  seed=0, quiet=True)
        cuda.synchronize()
        peak = pool.total_bytes() - start
    data = pixels.nbytes
    limit = data + 256 * 2**20
    ok = peak <= limit and np.isfinite(h.loss[-1])
    return ok, (f"peak GPU memory pool over {steps} training steps on 60,000 uint8 rows: "
                f"{peak / 2**20:.0f} MiB (data {data / 2**20:.0f} MiB; limit "
                f"{limit / 2**20:.0f} MiB); step {h.config['step']}")


CPU_CHECKS = [
    ("gradient", check_gradient), ("fast step", check_fast_step),
    ("large batch", check_large_batch), ("uint8 input", check_uint8),
    ("model file", check_model_file), ("learning", check_learning), ("BLAS", check_blas),
]
CUDA_CHECKS = [
    ("CUDA", check_cuda), ("fused kernels", check_fused), ("CUDA graph", check_graph),
    ("GPU vs CPU", check_gpu_vs_cpu), ("uint8 on GPU", check_uint8_on_gpu),
    ("GPU scoring", check_gpu_scoring), ("GPU memory", check_gpu_memory),
]


# -- the command -----------------------------------------------------------------------------
def report(results: list[Check], device, seconds: float) -> dict:
    """Everything a bug report needs: versions, BLAS, CUDA, and every verdict."""
    return {"fastmnist": __version__, "python": platform.python_version(),
            "platform": platform.platform(), "numpy": np.__version__, "blas": blas_info(),
            "cuda": cuda_report(), "device": device, "seconds": round(seconds, 3),
            "checks": [asdict(r) for r in results], **summary_counts(results)}


def summary_counts(results: list[Check]) -> dict:
    return {k: sum(r.status == s for r in results)
            for k, s in (("passed", "PASS"), ("failed", "FAIL"), ("skipped", "SKIP"))}


def cmd_doctor(args) -> int:
    t0 = time.perf_counter()
    device = args.device or "auto"
    cuda_backend(device)  # a device name that means nothing is an error, not a check
    if not args.json:
        print(f"fastmnist {__version__} doctor: Python {platform.python_version()}, NumPy "
              f"{np.__version__}, device {device}")
    results = doctor(device, args.steps, log=None if args.json else print)
    seconds = time.perf_counter() - t0
    counts = summary_counts(results)
    if args.json:
        print(json.dumps(report(results, device, seconds), indent=1))
    else:
        print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
              f"in {seconds:.1f} s")
    return 1 if counts["failed"] else 0


def steps_count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check that this install computes right (seconds)",
                       description="Run fastmnist's self-checks, one line each: PASS, FAIL or "
                                   "SKIP with the reason. Exit status 1 if any check fails.")
    p.add_argument("--device", default=None,
                   help="auto (default: CUDA checks where a GPU is usable), cpu (skip them), "
                        "cuda or cuda:N (require them)")
    p.add_argument("--steps", type=steps_count, default=STEPS,
                   help=f"SGD steps in each comparison ({STEPS})")
    p.add_argument("--json", action="store_true", help="print a JSON report for bug reports")
    p.set_defaults(func=cmd_doctor)

