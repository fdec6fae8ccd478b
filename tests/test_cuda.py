"""The GPU path, run only where CuPy sees a usable CUDA device (skipped with the reason elsewhere)."""
import numpy as np
import pytest

from fastmnist import TwoLayerNet, functions as F, to_numpy, train
from fastmnist.network import gradient_check
from fastmnist.train import make_step
from tests.conftest import small_problem

pytestmark = pytest.mark.cuda


def test_auto_chooses_the_gpu():
    net = TwoLayerNet(device="auto")
    assert net.device.startswith("cuda") and type(net.params["W1"]).__module__.startswith("cupy")


def test_functions_agree_with_numpy_on_the_gpu():
    import cupy

    z = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)
    t = np.arange(64) % 10
    zc, tc = cupy.asarray(z), cupy.asarray(t)
    np.testing.assert_allclose(F.softmax(zc).get(), F.softmax(z), rtol=1e-5)
    np.testing.assert_allclose(F.sigmoid(zc).get(), F.sigmoid(z), rtol=1e-5)
    assert float(F.softmax_cross_entropy(zc, tc)) == pytest.approx(float(F.softmax_cross_entropy(z, t)), rel=1e-5)


def test_gradcheck_on_the_gpu():
    x, t = small_problem(n=6, d=12)
    net = TwoLayerNet(12, 5, 10, 0.5, device="cuda", dtype="float64", seed=0)
    assert max(gradient_check(net, x, t).values()) < 1e-6


@pytest.mark.parametrize("graph", [True, False])
def test_gpu_step_matches_cpu_step_on_the_same_batches(graph, recwarn):
    x, t = small_problem(n=300, d=784, seed=2)
    x = x.astype(np.float32)
    nets = [TwoLayerNet(seed=1, device=d) for d in ("cpu", "cuda")]
    rows = np.random.default_rng(0).integers(0, 300, (50, 30))
    losses = []
    for net in nets:
        xd, td = net.as_input(x), net.as_labels(t, 300)
        step = make_step(True, net, xd, td, 0.3, 30, cuda_graph=graph)
        loss = net.xp.zeros((50, 30), dtype=net.dtype)
        for i in range(50):
            step(net.backend.asarray(rows[i]), loss, i)
        losses.append(to_numpy(loss))
    assert type(step).__name__ == "CudaStep"  # the CPU one above was the CpuStep
    assert not [w for w in recwarn if "CUDA graph" in str(w.message)], "the graph was not used"
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-3, atol=1e-5)
    for k in nets[0].params:
        np.testing.assert_allclose(to_numpy(nets[1].params[k]), nets[0].params[k], rtol=1e-3, atol=1e-5)


def test_training_on_the_gpu_learns(mnist_test):
    images, labels = mnist_test
    x = images.reshape(-1, 784).astype(np.float32) / 255
    net = TwoLayerNet(seed=0, device="cuda")
    h = train(net, x[:8000], labels[:8000], x[8000:], labels[8000:], iters=3000, seed=0, quiet=True)
    assert h.config["device"].startswith("cuda") and h.test_acc[-1] > 0.88
