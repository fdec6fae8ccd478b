"""Shared fixtures: an isolated data cache, the real data sets, and the `cuda` marker."""
from pathlib import Path

import numpy as np
import pytest

from fastmnist import agreement
from fastmnist.backend import probe_cuda

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def pytest_collection_modifyitems(config, items):
    cupy, reason = probe_cuda(0)
    if cupy is not None:
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: {reason}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty cache and no data/mirror/device settings from the shell."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    for var in ("FASTMNIST_DATA", "FASTMNIST_MIRROR", "FASTMNIST_OFFLINE", "FASTMNIST_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    return cache / "fastmnist"


@pytest.fixture(scope="session")
def mnist_test():
    """The real 10,000 MNIST test digits: uint8 images (N, 28, 28) and labels (N,)."""
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"the real MNIST test set is missing from {MNIST_DIR} (../shared/data/mnist)")
    from fastmnist.datasets import get_dataset, load_folder

    ds = get_dataset("mnist")
    return load_folder(MNIST_DIR, (ds.files["test", "images"], ds.files["test", "labels"]), [], "")


@pytest.fixture(scope="session")
def fashion_dir():
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST is missing from {FASHION_DIR}: "
                    "apt-get install -y dataset-fashion-mnist (.ci/run does this)")
    return FASHION_DIR


def small_problem(n=16, d=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), rng.integers(0, 10, n)


def assert_agree(got: dict, expected: dict, *, steps: int, batch: int, sizes=(784, 50, 10),
                 dtype="float32", before: dict | None = None):
    """Arrays from two implementations of the same ``steps`` SGD steps agree as closely as
    float rounding lets them (see fastmnist.agreement), and no closer is asked."""
    tol = agreement.tolerance(dtype, agreement.terms_per_step(sizes, batch), steps)
    problem = agreement.disagreement(got, expected, tol, before)
    assert problem is None, problem


def assert_same_accuracy(got: float, expected: float, net, x, *, steps: int, batch: int,
                         dtype="float32"):
    """Accuracies on ``x`` of two runs that agree to float rounding differ at most by the rows
    whose class that rounding could flip (``net`` is the expected run's network)."""
    tol = agreement.tolerance(dtype, agreement.terms_per_step(net.sizes, batch), steps)
    flips = agreement.uncertain_rows(net.params, np.asarray(x), tol)
    assert abs(got - expected) * len(x) <= flips, (got, expected, f"{flips} uncertain rows")
