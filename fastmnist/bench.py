"""Benchmarks, side by side in one process on the same data and device.

Variants of the article's workload (10,000 SGD steps of batch 100 through 784-50-10, with a full
train and test evaluation every epoch and after the last step):

- ``fastmnist``: :func:`fastmnist.train` (on the CPU, its compiled step where it was built).
- ``fastmnist-serial``: the same with ``overlap=False`` on the CPU: no helper thread, so the
  evaluations and batch gathers run between the steps (what the overlap buys).
- ``fastmnist-numpy``: the same with the NumPy step (``FASTMNIST_COMPILED=0``), where the
  compiled step is available: what :mod:`fastmnist.steps.compiled` buys.
- ``article-float64``: the article's algorithm as it wrote it (float64, one-hot labels, a second
  forward pass for the loss), reimplemented here as the reference.
- ``numpy-float32``: the same plain code in float32.
- ``torch``: PyTorch written the usual way (nn.Linear, optim.SGD), when it is installed.
- ``matmul-floor``: only the workload's matrix products (five per step plus the evaluations),
  on preallocated buffers: the floor no implementation can go below on this hardware.

Ratios are each variant's time over the floor's, measured in the same run.
"""
from __future__ import annotations

import json
import os
import platform
import time
import tracemalloc

import numpy as np

from . import __version__
from .backend import get_backend, to_numpy
from .network import TwoLayerNet
from .system import blas_info, gpu_properties
from .train import train


# -- timing ------------------------------------------------------------------------------------
def timed(fn, backend, repeat: int = 1, warmup: int = 0) -> float:
    """Best wall time of ``fn()`` in seconds. On CUDA, device time from CUDA events instead."""
    if backend.is_cuda:  # the GPU's own clock: no host timer around asynchronous work
        return backend.gpu_seconds(fn, repeat, warmup)
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def eval_steps(iters: int, per_epoch: int) -> list[int]:
    return [i for i in range(iters) if i % per_epoch == 0 or i == iters - 1]


# -- the article's algorithm (reference) ----------------------------------------------------------
class ArticleNet:
    """The article's network and step, written the way it wrote them, in any float dtype."""

    def __init__(self, xp, sizes, dtype, seed=0, std=0.01):
        d, h, c = sizes
        rng = np.random.default_rng(seed)
        self.xp = xp
        self.params = {k: xp.asarray(v, dtype=dtype) for k, v in {
            "W1": std * rng.standard_normal((d, h)), "b1": np.zeros(h),
            "W2": std * rng.standard_normal((h, c)), "b2": np.zeros(c)}.items()}

    def sigmoid(self, x):
        return 1 / (1 + self.xp.exp(-x))

    def softmax(self, x):
        x = x - x.max(axis=1, keepdims=True)
        e = self.xp.exp(x)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, x):
        p = self.params
        return self.softmax(self.sigmoid(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"])

    def loss(self, x, t):
        y = self.predict(x)
        return -self.xp.sum(self.xp.log(y[self.xp.arange(y.shape[0]), t.argmax(axis=1)] + 1e-7)) / y.shape[0]

    def accuracy(self, x, t):
        return float((self.predict(x).argmax(axis=1) == t.argmax(axis=1)).sum()) / x.shape[0]

    def gradient(self, x, t):
        p, xp = self.params, self.xp
        a1 = x @ p["W1"] + p["b1"]
        z1 = self.sigmoid(a1)
        y = self.softmax(z1 @ p["W2"] + p["b2"])
        dy = (y - t) / x.shape[0]
        da1 = dy @ p["W2"].T
        dz1 = (1.0 - self.sigmoid(a1)) * self.sigmoid(a1) * da1
        return {"W1": x.T @ dz1, "b1": dz1.sum(axis=0), "W2": z1.T @ dy, "b2": dy.sum(axis=0)}


def run_article(xp, data, dtype, iters, batch, lr, seed=0) -> dict:
    (x, t), (xt, tt) = data
    x, xt = xp.asarray(x, dtype=dtype), xp.asarray(xt, dtype=dtype)
    t, tt = xp.asarray(np.eye(10)[t], dtype=dtype), xp.asarray(np.eye(10)[tt], dtype=dtype)
    net = ArticleNet(xp, (784, 50, 10), dtype, seed)
    rng = np.random.default_rng(seed)
    per_epoch = max(x.shape[0] // batch, 1)
    losses, accs = [], []
    for i in range(iters):
        mask = rng.choice(x.shape[0], batch)
        xb, tb = x[mask], t[mask]
        grad = net.gradient(xb, tb)
        for k in net.params:
            net.params[k] -= lr * grad[k]
        losses.append(float(net.loss(xb, tb)))
        if i % per_epoch == 0 or i == iters - 1:
            accs.append((net.accuracy(x, t), net.accuracy(xt, tt)))
    return {"test_acc": accs[-1][1], "final_loss": float(np.mean(losses[-100:]))}


# -- fastmnist -----------------------------------------------------------------------------------
def run_fastmnist(device, data, iters, batch, lr, seed=0, overlap=None, numpy_step=False) -> dict:
    (x, t), (xt, tt) = data
    net = TwoLayerNet(seed=seed, device=device)
    switch = os.environ.get("FASTMNIST_COMPILED")
    if numpy_step:
        os.environ["FASTMNIST_COMPILED"] = "0"
    try:
        h = train(net, x, t, xt, tt, iters=iters, batch_size=batch, learning_rate=lr, seed=seed,
                  quiet=True, overlap=overlap)
    finally:
        if switch is None:
            os.environ.pop("FASTMNIST_COMPILED", None)
        else:
            os.environ["FASTMNIST_COMPILED"] = switch
    net.backend.synchronize()
    return {"test_acc": h.test_acc[-1], "final_loss": float(np.mean(h.loss[-100:]))}


def compiled_step_available() -> bool:
    from .steps import compiled

    return compiled.why_unavailable() is None


# -- PyTorch, written the usual way ---------------------------------------------------------------
def torch_module(backend=None):
    """PyTorch, or None when it is not installed or, for a GPU ``backend``, has no CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if backend is not None and backend.is_cuda and not torch.cuda.is_available():
        return None
    return torch


def run_torch(device: str, data, iters, batch, lr, seed=0) -> dict:
    torch = torch_module()
    (x, t), (xt, tt) = data
    dev = torch.device("cuda" if device.startswith("cuda") else "cpu")
    torch.manual_seed(seed)
    x, xt = torch.as_tensor(x, device=dev), torch.as_tensor(xt, device=dev)
    t, tt = torch.as_tensor(t.astype(np.int64), device=dev), torch.as_tensor(tt.astype(np.int64), device=dev)
    model = torch.nn.Sequential(torch.nn.Linear(784, 50), torch.nn.Sigmoid(),
                                torch.nn.Linear(50, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    per_epoch = max(x.shape[0] // batch, 1)
    losses, accs = [], []
    for i in range(iters):
        idx = torch.randint(0, x.shape[0], (batch,), device=dev)
        loss = loss_fn(model(x[idx]), t[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if i % per_epoch == 0 or i == iters - 1:
            with torch.no_grad():
                accs.append([(model(a).argmax(1) == b).float().mean().item() for a, b in ((x, t), (xt, tt))])
    return {"test_acc": accs[-1][1], "final_loss": float(np.mean(losses[-100:]))}


# -- the floor -------------------------------------------------------------------------------------
def matmul_floor(backend, n_train, n_test, iters, batch, hidden=50, chunk=10_000, per_epoch=None):
    """Run only the workload's float32 matrix products; returns a function to time."""
    xp = backend.xp
    f32 = backend.dtype("float32")
    rng = np.random.default_rng(0)
    d, h, c = 784, hidden, 10

    def arr(*shape):
        return backend.asarray(rng.random(shape, dtype=np.float32), dtype=f32)

    xb, w1, w2, z1, y = arr(batch, d), arr(d, h), arr(h, c), arr(batch, h), arr(batch, c)
    dz, g1, g2 = arr(batch, h), arr(d, h), arr(h, c)
    xe, ze, ye = arr(chunk, d), arr(chunk, h), arr(chunk, c)
    per_epoch = per_epoch or max(n_train // batch, 1)
    evals = len(eval_steps(iters, per_epoch))
    eval_chunks = [min(chunk, n - s) for n in (n_train, n_test) for s in range(0, n, chunk)]

    def run():
        mm = xp.matmul
        for _ in range(iters):
            mm(xb, w1, out=z1)
            mm(z1, w2, out=y)
            mm(y, w2.T, out=dz)
            mm(z1.T, y, out=g2)
            mm(xb.T, dz, out=g1)
        for _ in range(evals):
            for rows in eval_chunks:
                mm(xe[:rows], w1, out=ze[:rows])
                mm(ze[:rows], w2, out=ye[:rows])
        backend.synchronize()

    return run


# -- the whole workload ------------------------------------------------------------------------------
def environment(backend) -> dict:
    env = {"fastmnist": __version__, "python": platform.python_version(),
           "numpy": np.__version__, "machine": platform.machine(), "processor": platform.processor(),
           "cpus": __import__("os").cpu_count(), "blas": blas_info(), "device": backend.device,
           "dtype": "float32"}
    torch = torch_module(backend)
    if torch is not None:
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    if backend.is_cuda:
        env["gpu"] = gpu_properties(backend.xp, backend.cuda_index)["name"]
        env["cupy"] = backend.xp.__version__
    return env


def workload(data, device="cpu", iters=10_000, batch=100, lr=0.1, repeat=2, variants=None,
             log=print) -> dict:
    """Time every variant on ``data`` (``((x, t), (xt, tt))``: float32 images, integer labels).

    Variants run interleaved, ``repeat`` rounds, and each keeps its best time, so a slow
    moment of a shared machine does not land on one variant only.
    """
    backend = get_backend(device)
    (x, t), (xt, tt) = data
    todo = {
        "matmul-floor": lambda: matmul_floor(backend, x.shape[0], xt.shape[0], iters, batch)(),
        "fastmnist": lambda: run_fastmnist(backend, data, iters, batch, lr),
        "numpy-float32": lambda: run_article(backend.xp, data, backend.dtype("float32"), iters, batch, lr),
        "article-float64": lambda: run_article(backend.xp, data, backend.dtype("float64"), iters, batch, lr),
    }
    if not backend.is_cuda:  # a GPU run is one stream of work already
        todo["fastmnist-serial"] = lambda: run_fastmnist(backend, data, iters, batch, lr,
                                                         overlap=False)
        if compiled_step_available():
            todo["fastmnist-numpy"] = lambda: run_fastmnist(backend, data, iters, batch, lr,
                                                            numpy_step=True)
    if torch_module(backend) is not None:
        todo["torch"] = lambda: run_torch(backend.device, data, iters, batch, lr)
    if variants:
        todo = {k: v for k, v in todo.items() if k in variants or k == "matmul-floor"}
    rows = {name: {"seconds": float("inf")} for name in todo}
    for round_ in range(repeat):
        for name, fn in todo.items():
            t0 = time.perf_counter()
            out = fn() or {}
            backend.synchronize()
            seconds = time.perf_counter() - t0
            rows[name].update(out)
            rows[name]["seconds"] = min(rows[name]["seconds"], seconds)
            if log:
                log(f"  round {round_ + 1}/{repeat} {name:16s} {seconds:8.2f} s")
    floor = rows["matmul-floor"]["seconds"]
    for row in rows.values():
        row["ratio_to_floor"] = row["seconds"] / floor
    return {"workload": {"iters": iters, "batch": batch, "lr": lr, "train_rows": int(x.shape[0]),
                         "test_rows": int(xt.shape[0]), "repeat": repeat},
            "environment": environment(backend), "results": rows}


def peak_host_memory(data_loader, device="cpu", iters=10_000) -> dict:
    """Peak bytes allocated on the host (tracemalloc) while loading the data and training."""
    backend = get_backend(device)
    if backend.is_cuda:  # count only this run's blocks in the pool below
        backend.xp.get_default_memory_pool().free_all_blocks()
    tracemalloc.start()
    data = data_loader()
    base = tracemalloc.get_traced_memory()[0]
    run_fastmnist(device, data, iters, 100, 0.1)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    dataset = sum(a.nbytes for pair in data for a in pair)
    out = {"peak_bytes": peak, "dataset_bytes": dataset, "peak_over_dataset_bytes": peak - base}
    if backend.is_cuda:  # the pool keeps what it once held: this run's peak, near enough
        out["gpu_pool_bytes"] = int(backend.xp.get_default_memory_pool().total_bytes())
    return out


def memory_line(m: dict) -> str:
    line = (f"peak host memory while loading + training: {m['peak_bytes'] / 2**20:.0f} MiB "
            f"(dataset in float32: {m['dataset_bytes'] / 2**20:.0f} MiB)")
    if "gpu_pool_bytes" in m:
        line += f"; GPU memory pool after training: {m['gpu_pool_bytes'] / 2**20:.0f} MiB"
    return line


# -- the forward/backward core ---
STEPS = 20  # steps per timing in core()


def core(device="cpu", batches=(100, 1000, 10_000, 60_000), hiddens=(50, 256, 1024), repeat=5,
         rows=60_000, log=None) -> list[dict]:
    """Seconds per SGD step (fastmnist, article float64, torch, floor) per batch/hidden size.

    Each timing covers ``STEPS`` consecutive steps on fresh random batches (floor: the same
    products on a fixed batch), best of ``repeat``. ``log`` gets a line as each size is done.
    """
    from .network import one_hot
    from .train import make_step

    backend = get_backend(device)
    xp = backend.xp
    rng = np.random.default_rng(0)
    x_host = rng.random((rows, 784), dtype=np.float32)
    t_host = rng.integers(0, 10, rows)
    torch = torch_module(backend)
    results = []
    for hidden in hiddens:
        for batch in batches:
            net = TwoLayerNet(784, hidden, 10, seed=0, device=backend)
            x, t = net.as_input(x_host), net.as_labels(t_host, rows)
            step = make_step(True, net, x, t, 0.01, batch)
            idx = backend.asarray(rng.integers(0, rows, (STEPS, batch)))
            losses = xp.zeros((STEPS, batch), dtype=net.dtype)

            def steps():
                for i in range(STEPS):
                    step(idx[i, ...], losses, i)

            row = {"hidden": hidden, "batch": batch, "step": type(step).__name__,
                   "fastmnist": timed(steps, backend, repeat, 1) / STEPS}
            if hasattr(step, "close"):
                step.close()
            ref = ArticleNet(xp, (784, hidden, 10), backend.dtype("float64"))
            xb64 = backend.asarray(x_host[:batch], dtype="float64")
            tb64 = backend.asarray(np.eye(10)[t_host[:batch]], dtype="float64")

            def article_step():
                g = ref.gradient(xb64, tb64)
                for k in ref.params:
                    ref.params[k] -= 0.01 * g[k]
                ref.loss(xb64, tb64)

            row["article-float64"] = timed(article_step, backend, repeat, 1)
            row["matmul-floor"] = timed(matmul_floor(backend, batch, 0, STEPS, batch, hidden,
                                                     per_epoch=10**9), backend, repeat, 1) / STEPS
            if torch is not None:
                row["torch"] = torch_step_time(torch, backend, x_host, t_host, to_numpy(idx),
                                               hidden, repeat)
            results.append(row)
            if log:
                log(f"  hidden {hidden:5d} batch {batch:6d}: {row['fastmnist'] * 1e3:9.3f} ms "
                    f"per step ({len(results)}/{len(hiddens) * len(batches)})")
    return results


def evaluation(device="cpu", rows=60_000, hidden=50, repeat=3) -> dict:
    """Seconds to score ``rows`` images once: fastmnist (the scorer ``train`` uses; on the CPU
    also ``fastmnist-tiled``, its scorer at batches of 4,096 and more, where it was built; and
    ``fastmnist-plain``, :meth:`TwoLayerNet.count_correct`), article float64, and the floor."""
    backend = get_backend(device)
    rng = np.random.default_rng(0)
    x_host = rng.random((rows, 784), dtype=np.float32)
    t_host = rng.integers(0, 10, rows)
    net = TwoLayerNet(784, hidden, 10, seed=0, device=backend)
    x, t = net.as_input(x_host), net.as_labels(t_host, rows)
    ref = ArticleNet(backend.xp, (784, hidden, 10), backend.dtype("float64"))
    x64 = backend.asarray(x_host, dtype="float64")
    t64 = backend.asarray(np.eye(10)[t_host], dtype="float64")
    from .train import make_count

    count = make_count(True, net)  # the scorer train() uses
    result = {"rows": rows, "hidden": hidden}
    if not backend.is_cuda and compiled_step_available():  # large batches' scorer
        from .steps.threaded import Team, thread_budget
        from .steps.tiled import TiledCount

        tiled = TiledCount(net.params, Team(thread_budget()))
        result["fastmnist-tiled"] = timed(lambda: tiled(x, t), backend, repeat, 1)
        tiled.team.close()
    return {**result,
            "fastmnist": timed(lambda: count(x, t), backend, repeat, 1),
            "fastmnist-plain": timed(lambda: net.count_correct(x, t), backend, repeat, 1),
            "article-float64": timed(lambda: ref.accuracy(x64, t64), backend, repeat, 1),
            "matmul-floor": timed(eval_floor(backend, rows, hidden), backend, repeat, 1)}


def eval_floor(backend, rows, hidden, chunk=10_000):
    """The two products of scoring ``rows`` images, ``chunk`` rows at a time, reading every
    row from memory as scoring does (one chunk read again and again would stay in cache)."""
    xp, rng = backend.xp, np.random.default_rng(0)
    xe = backend.asarray(rng.random((rows, 784), dtype=np.float32))
    w1 = backend.asarray(rng.random((784, hidden), dtype=np.float32))
    w2 = backend.asarray(rng.random((hidden, 10), dtype=np.float32))
    ze, ye = xp.empty((chunk, hidden), xe.dtype), xp.empty((chunk, 10), xe.dtype)

    def run():
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            xp.matmul(xe[start:start + n], w1, out=ze[:n])
            xp.matmul(ze[:n], w2, out=ye[:n])

    return run


def torch_step_time(torch, backend, x_host, t_host, idx, hidden, repeat) -> float:
    """Seconds per PyTorch step on the rows ``idx`` ``(STEPS, B)`` of ``x_host``, gathered each
    step as fastmnist's are, with as many threads as fastmnist may use (on the CPU)."""
    from .steps.threaded import thread_budget

    dev = torch.device("cuda" if backend.is_cuda else "cpu")
    model = torch.nn.Sequential(torch.nn.Linear(784, hidden), torch.nn.Sigmoid(),
                                torch.nn.Linear(hidden, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.as_tensor(x_host, device=dev)
    t = torch.as_tensor(t_host.astype(np.int64), device=dev)
    rows = torch.as_tensor(idx, device=dev)

    def steps():
        for i in range(STEPS):
            loss = loss_fn(model(x[rows[i]]), t[rows[i]])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if backend.is_cuda:
            torch.cuda.synchronize()  # so the wall clock below covers the GPU's work

    threads = torch.get_num_threads()
    torch.set_num_threads(thread_budget())
    try:
        return timed(steps, get_backend("cpu"), repeat, 1) / STEPS
    finally:
        torch.set_num_threads(threads)


def save(results: dict, json_path=None, chart_path=None, chart=None, chart_data=None) -> None:
    """Write ``results`` as JSON and ``chart(chart_data or results, path)`` as PNG, each only
    where a path is given."""
    if json_path:
        to_json(results, json_path)
    if chart_path:
        chart(results if chart_data is None else chart_data, chart_path)


def to_json(results: dict, path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, default=lambda o: to_numpy(o).tolist())


# -- how long it will take ------------------------------------------------------------------------
WORKLOAD_RATIOS = {"fastmnist": 1.4, "fastmnist-numpy": 1.55, "fastmnist-serial": 1.7,
                   "numpy-float32": 2.7, "article-float64": 5.3,
                   "torch": 3.4}  # x floor, measured on a 2-core CPU
CORE_RATIOS = {"fastmnist": 1.4, "torch": 1.6, "article-float64": 4.0}  # big steps, likewise


def estimate_seconds(device, iters, repeat, batches, hiddens, rows, with_torch,
                     core_repeat=3) -> dict:
    """A rough duration, in seconds, of each part: :func:`workload` (``"workload"``),
    :func:`peak_host_memory` (``"memory"``), :func:`core` and :func:`evaluation` at these
    sizes. From a fraction of a second of this machine's matrix products: each part's products
    (the floor) times how far above the floor each variant usually runs. A busy machine takes
    longer."""
    backend = get_backend(device)
    xp, probe = backend.xp, 100
    step = timed(matmul_floor(backend, 1, 0, probe, 100, per_epoch=10**9), backend, 2, 1) / probe
    chunk = timed(eval_floor(backend, 10_000, 50), backend, 2, 1)  # 10,000 rows, hidden 50
    a, b = (backend.asarray(np.ones(shape, np.float32)) for shape in ((2048, 784), (784, 512)))
    c = xp.empty((2048, 512), dtype=a.dtype)
    flops_rate = 2 * 2048 * 784 * 512 / timed(lambda: xp.matmul(a, b, out=c), backend, 3, 1)

    def step_time(batch, hidden):  # the floor's step: at least the batch-100 step's cost
        return max(step, 2 * batch * (2 * 784 * hidden + 3 * hidden * 10) / flops_rate)

    ratios = sum(v for k, v in WORKLOAD_RATIOS.items() if with_torch or k != "torch")
    evals = iters // max(rows // 100, 1) + 2
    floor = iters * step + evals * (rows + 10_000) / 10_000 * chunk
    per_step = STEPS * (1 + CORE_RATIOS["fastmnist"] + (CORE_RATIOS["torch"] if with_torch else 0)) \
        + CORE_RATIOS["article-float64"]
    return {"workload": floor * repeat * (1 + ratios),
            "memory": floor * 2 * WORKLOAD_RATIOS["fastmnist"],  # tracemalloc slows it down
            "core": sum((core_repeat + 1) * step_time(b, h) * per_step
                        for h in hiddens for b in batches),
            "evaluation": 4 * (2 + WORKLOAD_RATIOS["article-float64"]) * rows / 10_000 * chunk}


# -- reports ---------------------------------------------------------------------------------
def workload_table(results: dict) -> str:
    lines = [f"{'variant':18s} {'seconds':>9s} {'x floor':>8s} {'test acc':>9s}"]
    for name, row in sorted(results["results"].items(), key=lambda kv: kv[1]["seconds"]):
        acc = row.get("test_acc")
        lines.append(f"{name:18s} {row['seconds']:9.2f} {row['ratio_to_floor']:8.2f} "
                     f"{'' if acc is None else f'{acc:9.4f}'}")
    return "\n".join(lines)


def workload_chart(results: dict, path) -> None:
    from .plots import plt

    rows = sorted(results["results"].items(), key=lambda kv: kv[1]["seconds"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh([k for k, _ in rows], [r["ratio_to_floor"] for _, r in rows], color="tab:blue")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.axvline(1.5, color="tab:orange", ls="--", lw=0.8, label="1.5x target")
    ax.set(xlabel="wall time / matmul floor (lower is better)",
           title=f"Article workload on {results['environment']['device']}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


COLUMNS = ("fastmnist", "article-float64", "torch", "matmul-floor")


def core_table(rows: list[dict], evaluation: dict) -> str:
    lines = ["seconds per SGD step (ratio to the matmul floor)",
             f"{'hidden':>6s} {'batch':>6s} " + " ".join(f"{c:>22s}" for c in COLUMNS)]
    for r in rows:
        cells = []
        for c in COLUMNS:
            v = r.get(c)
            cells.append(f"{'-':>22s}" if v is None else
                         f"{v * 1e6:11.1f} us ({v / r['matmul-floor']:5.2f}x)")
        lines.append(f"{r['hidden']:6d} {r['batch']:6d} " + " ".join(cells))
    e = evaluation
    lines.append(f"full evaluation of {e['rows']} rows (hidden {e['hidden']}): "
                 + ", ".join(f"{k} {e[k] * 1e3:.1f} ms ({e[k] / e['matmul-floor']:.2f}x)"
                             for k in ("fastmnist", "fastmnist-tiled", "fastmnist-plain",
                                       "article-float64", "matmul-floor") if k in e))
    return "\n".join(lines)


def core_chart(rows: list[dict], path) -> None:
    """Time per step against batch size, log-log, one panel per hidden size: fastmnist,
    PyTorch (where measured) and the matmul floor."""
    from .plots import plt

    hiddens = sorted({r["hidden"] for r in rows})
    fig, axes = plt.subplots(1, len(hiddens), figsize=(3.6 * len(hiddens) + 0.6, 3.6),
                             sharey=True, squeeze=False)
    styles = (("fastmnist", "fastmnist", "tab:blue", "o-"), ("torch", "PyTorch", "tab:red", "s--"),
              ("matmul-floor", "matmul floor", "0.35", ":"))
    for ax, hidden in zip(axes[0], hiddens):
        sel = sorted((r for r in rows if r["hidden"] == hidden), key=lambda r: r["batch"])
        batches = [r["batch"] for r in sel]
        for key, label, color, style in styles:
            if all(key in r for r in sel):
                ax.plot(batches, [r[key] * 1e3 for r in sel], style, color=color, label=label,
                        lw=1.6 if key == "fastmnist" else 1.2, ms=4)
        ax.set(xscale="log", yscale="log", xlabel="batch size (rows)", title=f"784-{hidden}-10")
        ax.set_xticks(batches, [f"{b:,}" for b in batches], fontsize=8)
        ax.minorticks_off()
        ax.grid(True, which="major", lw=0.4, alpha=0.5)
    axes[0][0].set_ylabel("ms per SGD step (lower is better)")
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.suptitle("One SGD step against batch size", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
