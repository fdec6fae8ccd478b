"""The GPU path, run only where CuPy sees a usable CUDA device (skipped with the reason elsewhere):
``python -m pytest -m cuda``. Float comparisons use fastmnist.agreement's rounding bounds."""
import json

import numpy as np
import pytest

from fastmnist import TwoLayerNet, agreement, functions as F, to_numpy, train
from fastmnist.backend import DeviceError, array_namespace, get_backend
from fastmnist.cli import main
from fastmnist.steps.cuda import CudaStep, FusedStep
from fastmnist.steps.generic import CheckedCount
from fastmnist.steps.kernels import CudaKernels, NumpyKernels
from fastmnist.network import gradient_check, one_hot
from fastmnist.steps import BufferedCount, BufferedStep
from fastmnist.train import make_step
from tests.conftest import assert_agree, small_problem

pytestmark = pytest.mark.cuda
STEPS, BATCH, LR = 100, 50, 0.3


@pytest.fixture
def cp():
    import cupy

    return cupy


def problem(n=600, seed=2):
    x, t = small_problem(n=n, d=784, seed=seed)
    return x.astype(np.float32), t


def steps_on(device, x, t, kind="fast", graph=True, dtype="float32", steps=STEPS):
    """Host parameters, per-row losses and the step after ``steps`` steps of ``kind`` on
    ``device``, on the same batches wherever they run."""
    net = TwoLayerNet(seed=1, device=device, dtype=dtype)
    with net.backend.use():
        xd, td = net.as_input(x, keep_uint8=True), net.as_labels(t, x.shape[0])
        if kind == "generic":
            step = BufferedStep(net.params, xd, one_hot(td, 10, net.dtype), LR, BATCH, net.xp)
        else:
            step = make_step(True, net, xd, td, LR, BATCH, cuda_graph=graph)
        rows = np.random.default_rng(0).integers(0, x.shape[0], (steps, BATCH))
        losses = net.xp.zeros((steps, BATCH), dtype=net.dtype)
        for i in range(steps):
            step(net.backend.asarray(rows[i]), losses, i)
    return net.host_params(), to_numpy(losses), step


def fallbacks(recwarn) -> list[str]:
    """fastmnist's warnings that a fused kernel, the CUDA graph or fast scoring was left out."""
    return [str(w.message) for w in recwarn
            if any(k in str(w.message) for k in ("fused", "CUDA graph", "scoring"))]


# -- devices and transfers ------------------------------------------------------------------
def test_auto_chooses_the_gpu():
    net = TwoLayerNet(device="auto")
    assert net.device == "cuda:0" and type(net.params["W1"]).__module__.startswith("cupy")


def test_cuda_n_selects_that_gpu_and_refuses_one_that_does_not_exist(cp):
    count = cp.cuda.runtime.getDeviceCount()
    last = count - 1
    net = TwoLayerNet(device=f"cuda:{last}", seed=0)
    assert net.device == f"cuda:{last}" and net.backend.cuda_index == last
    assert all(p.device.id == last for p in net.params.values())
    with net.backend.use():
        assert float(net.loss(np.zeros((2, 784)), [1, 2])) > 0  # runs on that device
    with pytest.raises(DeviceError, match=f"cuda:{count} does not exist"):
        get_backend(f"cuda:{count}")


def test_transfer_helpers(cp):
    b = get_backend("cuda")
    host = np.arange(12, dtype=np.float64).reshape(3, 4)
    dev = b.asarray(host, dtype="float32")
    assert isinstance(dev, cp.ndarray) and dev.dtype == np.float32 and dev.device.id == 0
    assert b.asarray(dev) is dev or b.asarray(dev).data.ptr == dev.data.ptr  # no copy
    back = to_numpy(dev)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_array_equal(back, host.astype(np.float32))
    assert array_namespace(dev) is cp
    b.synchronize()
    assert b.gpu_seconds(lambda: dev @ dev.T, repeat=3, warmup=1) > 0


def test_functions_agree_with_numpy_on_the_gpu(cp):
    z = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)
    t = np.arange(64) % 10
    zc, tc = cp.asarray(z), cp.asarray(t)
    tol = agreement.tolerance("float32", 10)
    for f in (F.softmax, F.sigmoid):
        assert agreement.disagreement({"y": f(zc)}, {"y": f(z)}, tol) is None
    assert agreement.disagreement({"loss": F.softmax_cross_entropy(zc, tc)},
                                  {"loss": F.softmax_cross_entropy(z, t)}, tol) is None


def test_gradcheck_on_the_gpu():
    x, t = small_problem(n=6, d=12)
    net = TwoLayerNet(12, 5, 10, 0.5, device="cuda", dtype="float64", seed=0)
    assert max(gradient_check(net, x, t).values()) < 1e-6


# -- the fused kernels, the self-check and the graph ----------------------------------------------
@pytest.mark.parametrize("kernel", ["bias_sigmoid", "sigmoid_backward", "softmax_xent"])
def test_each_fused_kernel_computes_what_its_numpy_reference_does(cp, kernel):
    rng = np.random.default_rng(3)
    b, h, c = 300, 50, 10
    if kernel == "softmax_xent":
        host = {"yT": rng.normal(0, 3, (c, b)).astype(np.float32),
                "t": np.eye(c, dtype=np.float32)[rng.integers(0, c, b)],
                "loss": np.zeros(b, np.float32)}
        args = lambda a: (a["yT"], a["t"], a["loss"], np.float32(0.01))  # noqa: E731
    elif kernel == "bias_sigmoid":  # z is a strided view, as in the step (za[:, :h])
        host = {"a": rng.normal(0, 4, (b, h)).astype(np.float32),
                "b": rng.normal(0, 1, h).astype(np.float32),
                "za": np.ones((b, h + 1), np.float32)}
        args = lambda a: (a["a"], a["b"], a["za"][:, :h])  # noqa: E731
    else:
        host = {"za": rng.random((b, h + 1), dtype=np.float32),
                "dz": rng.normal(0, 1, (b, h)).astype(np.float32)}
        args = lambda a: (a["za"][:, :h], a["dz"])  # noqa: E731
    dev = {k: cp.asarray(v) for k, v in host.items()}
    getattr(NumpyKernels(), kernel)(*args(host))
    getattr(CudaKernels(cp), kernel)(*args(dev))
    cp.cuda.Device().synchronize()
    # CUDA's expf/logf are within 2 ulps; sums of C terms add sqrt(C) ulps
    problem_ = agreement.disagreement(dev, host, agreement.tolerance("float32", c))
    assert problem_ is None, f"{kernel}: {problem_}"
    if kernel == "bias_sigmoid":
        assert bool((dev["za"][:, h] == 1).all())  # the constant column is left alone


def test_the_fused_step_passes_its_self_check_and_matches_the_generic_step(recwarn):
    x, t = problem()
    fused = steps_on("cuda", x, t, graph=False)
    assert isinstance(fused[2], CudaStep) and fused[2].fused is True and fused[2].reason is None
    assert not fallbacks(recwarn)
    generic = steps_on("cuda", x, t, kind="generic")
    assert_agree(fused[0], generic[0], steps=STEPS, batch=BATCH)
    assert_agree({"loss": fused[1]}, {"loss": generic[1]}, steps=STEPS, batch=BATCH)


def test_a_wrong_cuda_kernel_is_caught_and_the_generic_step_trains(cp):
    class Slack(CudaKernels):
        def sigmoid_backward(self, z, dz):
            dz *= z  # forgets (1 - z)

    x, t = problem()
    net = TwoLayerNet(seed=1, device="cuda")
    xd, td = net.as_input(x), net.as_labels(t, x.shape[0])
    step = FusedStep(net.params, xd, one_hot(td, 10, net.dtype), LR, BATCH, cp, Slack(cp))
    rows = np.random.default_rng(0).integers(0, x.shape[0], (STEPS, BATCH))
    losses = cp.zeros((STEPS, BATCH), cp.float32)
    with pytest.warns(RuntimeWarning, match="disagrees with the generic step"):
        for i in range(STEPS):
            step(cp.asarray(rows[i]), losses, i)
    assert step.fused is False
    generic = steps_on("cuda", x, t, kind="generic")
    assert_agree(net.host_params(), generic[0], steps=STEPS, batch=BATCH)


def test_a_kernel_that_does_not_compile_is_caught(monkeypatch):
    import fastmnist.steps.kernels as kernels

    broken = kernels.SOFTMAX_XENT._replace(
        source=kernels.SOFTMAX_XENT.source.replace("expf(s)", "expf(s, m)"))
    monkeypatch.setattr(kernels, "SOFTMAX_XENT", broken)
    x, t = problem()
    with pytest.warns(RuntimeWarning, match="fused kernel failed"):
        got = steps_on("cuda", x, t, graph=False, steps=20)
    assert got[2].fused is False
    assert_agree(got[0], steps_on("cuda", x, t, kind="generic", steps=20)[0], steps=20,
                 batch=BATCH)


def test_the_graph_step_is_used_and_matches_eager_steps(recwarn):
    x, t = problem()
    graphed = steps_on("cuda", x, t, graph=True)
    if getattr(graphed[2], "graph_unsupported", False):
        pytest.skip(graphed[2].graph_reason)
    assert graphed[2].graph is not None and graphed[2].use_graph
    assert not fallbacks(recwarn)
    eager = steps_on("cuda", x, t, graph=False)
    assert_agree(graphed[0], eager[0], steps=STEPS, batch=BATCH)
    assert_agree({"loss": graphed[1]}, {"loss": eager[1]}, steps=STEPS, batch=BATCH)


@pytest.mark.parametrize("graph", [True, False])
def test_gpu_and_cpu_train_alike_on_the_same_batches(graph):
    x, t = problem()
    gpu, cpu = steps_on("cuda", x, t, graph=graph), steps_on("cpu", x, t)
    assert type(cpu[2]).__name__ in ("CpuStep", "CompiledStep") and isinstance(gpu[2], CudaStep)
    assert_agree(gpu[0], cpu[0], steps=STEPS, batch=BATCH)
    assert_agree({"loss": gpu[1]}, {"loss": cpu[1]}, steps=STEPS, batch=BATCH)


def test_float64_on_the_gpu_takes_the_generic_step():
    x, t = small_problem(n=300, d=784, seed=5)
    gpu = steps_on("cuda", x, t, dtype="float64", steps=40)
    cpu = steps_on("cpu", x, t, dtype="float64", steps=40)
    assert type(gpu[2]) is BufferedStep and gpu[0]["W1"].dtype == np.float64
    assert_agree(gpu[0], cpu[0], steps=40, batch=BATCH, dtype="float64")


def test_uint8_data_stays_uint8_on_the_device(cp):
    x, t = problem()
    pixels = (x * 255).round().astype(np.uint8)
    net = TwoLayerNet(device="cuda")
    resident = net.as_input(pixels, keep_uint8=True)
    assert isinstance(resident, cp.ndarray) and resident.dtype == cp.uint8
    assert resident.nbytes == pixels.nbytes
    raw = steps_on("cuda", pixels, t)
    scaled = steps_on("cuda", pixels.astype(np.float32) / 255, t)
    assert_agree(raw[0], scaled[0], steps=STEPS, batch=BATCH)
    net = TwoLayerNet(seed=0, device="cuda")
    h = train(net, pixels, t, pixels[:100], t[:100], iters=30, batch_size=BATCH, seed=0,
              quiet=True)
    assert h.config["step"] == "CudaStep" and np.isfinite(h.loss).all()


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_chunked_scoring_of_60k_rows_matches_the_cpu(cp, dtype, recwarn):
    rng = np.random.default_rng(7)
    x = rng.random((60_000, 784), dtype=np.float32)
    if dtype == "uint8":
        x = (x * 255).round().astype(np.uint8)
    cpu = TwoLayerNet(seed=0, weight_init_std=0.3, device="cpu")
    floats = x.astype(np.float32) / 255 if dtype == "uint8" else x
    t = np.argmax(cpu.predict(floats), axis=1)
    t[::3] = (t[::3] + 1) % 10
    gpu = cpu.to("cuda")
    with gpu.backend.use():
        xd, td = gpu.as_input(x, keep_uint8=True), gpu.as_labels(t, 60_000)
        fast = BufferedCount(gpu.params, cp)
        parts = [int(p) for p in fast.chunks(xd, td)]
        checked = CheckedCount(BufferedCount(gpu.params, cp), gpu.count_correct, gpu.params)
        got = int(to_numpy(checked(xd, td)))
    assert len(parts) == 6 and checked.reason is None and not fallbacks(recwarn)
    expected = int(np.sum(np.argmax(cpu.predict(floats), axis=1) == t))
    flips = agreement.uncertain_rows(cpu.params, floats, agreement.tolerance("float32", 784))
    assert abs(sum(parts) - expected) <= flips and abs(got - expected) <= flips


# -- files, photos, commands ------------------------------------------------------------------
def test_save_and_load_a_gpu_net(tmp_path):
    x, t = problem(n=200)
    net = TwoLayerNet(seed=4, device="cuda")
    train(net, x, t, iters=20, batch_size=BATCH, seed=0, quiet=True)
    path = net.save(tmp_path / "gpu-model", dataset="mnist")
    for device in ("cpu", "cuda"):
        back = TwoLayerNet.load(path, device=device)
        assert back.device == ("cpu" if device == "cpu" else "cuda:0")
        for k in net.params:
            np.testing.assert_array_equal(to_numpy(back.params[k]), to_numpy(net.params[k]))
    assert TwoLayerNet.load(path, device="cpu").metadata["dataset"] == "mnist"


def test_predict_image_with_a_gpu_net(mnist_test, tmp_path):
    from PIL import Image

    images, labels = mnist_test
    x = images.reshape(-1, 784).astype(np.float32) / 255
    cpu = TwoLayerNet(seed=0, device="cpu")
    train(cpu, x[:5000], labels[:5000], iters=1500, seed=0, quiet=True)
    gpu = cpu.to("cuda")
    path = tmp_path / "digit.png"
    Image.fromarray(255 - images[9000]).resize((140, 140)).save(path)  # dark ink on white
    on_gpu, on_cpu = gpu.predict_image(path), cpu.predict_image(path)
    assert on_gpu["digit"] == on_cpu["digit"] == labels[9000]
    np.testing.assert_array_equal(on_gpu["image"], on_cpu["image"])  # preprocessing: the CPU's
    # the logits may differ by one forward pass's rounding; softmax moves a probability by at
    # most e^(2d) - 1 for logits that move by d
    seen = on_cpu["image"].reshape(1, -1).astype(np.float64)
    d = agreement.logit_moves(cpu.params, seen, agreement.tolerance("float32", 784))[0]
    gap = np.abs(np.subtract(on_gpu["probabilities"], on_cpu["probabilities"])).max()
    assert gap <= np.expm1(2 * d), (gap, d)


def test_bench_cuda_quick_smoke(tmp_path, fashion_dir, monkeypatch, capsys):
    import fastmnist.bench as bench

    monkeypatch.setattr(bench, "STEPS", 2)
    assert main(["bench", "--device", "cuda", "--quick", "--repeat", "1", "--out",
                 str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "workload.json").read_text())
    assert saved["environment"]["device"] == "cuda:0" and saved["environment"]["gpu"]
    assert saved["results"]["fastmnist"]["seconds"] > 0
    assert "GPU memory pool after training" in capsys.readouterr().out


def test_memory_pool_is_reported(cp):
    import fastmnist.bench as bench

    x, t = problem(n=2000)

    def load():
        return (x, t), (x[:500], t[:500])

    m = bench.peak_host_memory(load, "cuda", iters=50)
    assert m["gpu_pool_bytes"] >= x.nbytes  # the training set lives in the pool
    assert "GPU memory pool after training" in bench.memory_line(m)


def test_doctor_on_the_gpu(capsys):
    code = main(["doctor", "--device", "cuda", "--steps", "100"])  # a fallback is a FAIL there
    out = capsys.readouterr().out
    assert code == 0, out
    skipped = [line for line in out.splitlines() if line.startswith("SKIP")]
    # the one SKIP allowed: a CuPy that refuses to capture cuBLAS calls into a CUDA graph
    assert all(line.startswith("SKIP  CUDA graph") and "CuPy cannot capture" in line
               for line in skipped), out
    assert "FAIL" not in out and f"0 failed, {len(skipped)} skipped" in out


def test_training_on_the_gpu_learns(mnist_test):
    images, labels = mnist_test
    x = images.reshape(-1, 784).astype(np.float32) / 255
    net = TwoLayerNet(seed=0, device="cuda")
    h = train(net, x[:8000], labels[:8000], x[8000:], labels[8000:], iters=3000, seed=0, quiet=True)
    assert h.config["device"].startswith("cuda") and h.test_acc[-1] > 0.88
