"""Shared fixtures: an isolated data cache, the real data sets, and the `cuda` marker.

The real data are found wherever this machine has them, as a new user's checkout would: the
MNIST test digits in ``$FASTMNIST_DATA``, ``../shared/data/mnist`` (this project's machines,
and CI), fastmnist's cache or system copies, or else downloaded by fastmnist's own loader from
its mirrors, verified as always; Fashion-MNIST likewise, Debian's copy first.
"""
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from fastmnist import agreement
from fastmnist.backend import probe_cuda
from fastmnist.datasets import DataError, get_dataset, load_folder, load_split

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_SETTINGS = ("FASTMNIST_DATA", "FASTMNIST_MIRROR", "FASTMNIST_OFFLINE", "XDG_CACHE_HOME")
USER_SETTINGS = {k: os.environ.get(k) for k in DATA_SETTINGS}  # before tests hide them


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


@contextmanager
def users_settings():
    """The data settings as the shell gave them: their cache, their folder, their mirrors."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in USER_SETTINGS.items():
            if value is None:
                mp.delenv(key, raising=False)
            else:
                mp.setenv(key, value)
        yield


def idx_images(images: np.ndarray) -> bytes:
    """uint8 images ``(N, 28, 28)`` as an IDX file's bytes."""
    n = images.shape[0]
    return (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + images.tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return (2049).to_bytes(4, "big") + labels.shape[0].to_bytes(4, "big") + labels.tobytes()


def data_folder(name: str, splits, places, tmp_path_factory) -> Path:
    """A folder holding the verified IDX files of ``name``'s ``splits``: the first of ``places``
    that has them all, else what fastmnist's loader finds or downloads (in the user's own
    settings), written out to a session folder."""
    ds = get_dataset(name)
    for folder in places:
        if all(load_folder(folder, (ds.files[s, "images"], ds.files[s, "labels"]), [], "")
               is not None for s in splits):
            return folder
    out = tmp_path_factory.mktemp(name)
    for split in splits:
        try:
            with users_settings():
                images, labels = load_split(name, split)
        except DataError as exc:
            pytest.fail(f"the real {name} {split} set is needed and could not be found or "
                        f"downloaded: {exc}")
        (out / ds.files[split, "images"].name.removesuffix(".gz")).write_bytes(idx_images(images))
        (out / ds.files[split, "labels"].name.removesuffix(".gz")).write_bytes(idx_labels(labels))
    return out


def user_data_places(name: str) -> list[Path]:
    root = USER_SETTINGS["FASTMNIST_DATA"]
    return [Path(root) / name, Path(root)] if root else []


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """A folder with the real MNIST test set's two IDX files (10,000 digits)."""
    return data_folder("mnist", ["test"], user_data_places("mnist") + [MNIST_DIR], tmp_path_factory)


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    """The real 10,000 MNIST test digits: uint8 images (N, 28, 28) and labels (N,)."""
    ds = get_dataset("mnist")
    return load_folder(mnist_dir, (ds.files["test", "images"], ds.files["test", "labels"]), [], "")


@pytest.fixture(scope="session")
def fashion_files(tmp_path_factory) -> Path:
    places = [FASHION_DIR] + user_data_places("fashion-mnist")
    return data_folder("fashion-mnist", ["train", "test"], places, tmp_path_factory)


@pytest.fixture
def fashion_dir(fashion_files, monkeypatch):
    """The full Fashion-MNIST, which ``load_mnist(dataset="fashion-mnist")`` and the commands
    find during the test through ``$FASTMNIST_DATA``."""
    monkeypatch.setenv("FASTMNIST_DATA", str(fashion_files))
    return fashion_files


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


def sigint_as_usual() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT: a shell that starts jobs in
    the background (CI can) hands them SIGINT ignored, and Python then never raises
    KeyboardInterrupt; the child gets the default back, as a terminal's command has."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)

