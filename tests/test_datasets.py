import gzip
import hashlib
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fastmnist import datasets as D
from fastmnist.datasets import DataError, DataFile, Dataset, load_mnist, load_split
from tests.conftest import idx_images, idx_labels

ROOT = Path(__file__).resolve().parents[1]


# -- generated IDX data ---------------------------------------------------------------------------
def make_split(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


SPLITS = {"train": make_split(60, 0), "test": make_split(20, 1)}
PAYLOADS = {}
for split, prefix in (("train", "train"), ("test", "t10k")):
    images, labels = SPLITS[split]
    PAYLOADS[f"{prefix}-images-idx3-ubyte.gz"] = idx_images(images)
    PAYLOADS[f"{prefix}-labels-idx1-ubyte.gz"] = idx_labels(labels)
FILES = {(split, kind): DataFile(f"{p}-{kind}-{i}-ubyte.gz", len(SPLITS[split][1]),
                                 hashlib.md5(PAYLOADS[f"{p}-{kind}-{i}-ubyte.gz"]).hexdigest())
         for split, p in (("train", "train"), ("test", "t10k"))
         for kind, i in (("images", "idx3"), ("labels", "idx1"))}


@pytest.fixture
def tiny(monkeypatch):
    """A registered dataset of 60 + 20 generated digits, with no mirrors of its own."""
    ds = Dataset("tiny", FILES, mirrors=())
    monkeypatch.setitem(D.REGISTRY, "tiny", ds)
    return ds


# -- a local server with good and bad mirrors -------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    requests = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        Handler.requests.append((self.path, self.headers.get("User-Agent")))
        mode = self.path.rstrip("/").split("/")[-2]
        name = self.path.rsplit("/", 1)[-1]
        payload = PAYLOADS.get(name)
        if mode == "missing" or payload is None:
            return self.send_error(404, "Not Found")
        body = gzip.compress(payload)
        if mode == "html":
            body = b"<!DOCTYPE html><html><body>We moved! Please visit our new site.</body></html>"
        elif mode == "truncated":
            body = body[: len(body) // 2]
        elif mode == "wrong":
            body = gzip.compress(payload[:-1] + bytes([(payload[-1] + 1) % 10]))
        elif mode == "flaky" and Handler.flaky_left > 0:
            Handler.flaky_left -= 1
            return self.send_error(503, "Service Unavailable")
        elif mode == "stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            time.sleep(30)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "text/html" if mode == "html" else "application/gzip")
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    Handler.requests = []
    Handler.flaky_left = 1
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


FAST = dict(timeout=5, retries=2, backoff=0.01, progress=False)


def cached_files(cache: Path):
    return sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_bad_mirrors_are_skipped_and_only_verified_data_is_cached(tiny, server, isolated_cache):
    mirrors = [f"{server}/{m}/" for m in ("missing", "html", "truncated", "wrong", "good")]
    images, labels = load_split("tiny", "train", mirrors=mirrors, **FAST)
    np.testing.assert_array_equal(images, SPLITS["train"][0])
    np.testing.assert_array_equal(labels, SPLITS["train"][1])
    assert cached_files(isolated_cache) == ["tiny/train-images-idx3-ubyte.gz",
                                            "tiny/train-labels-idx1-ubyte.gz", "tiny/train.npz"]
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        stored = gzip.decompress((isolated_cache / "tiny" / name).read_bytes())
        assert stored == PAYLOADS[name]
    agents = {agent for _, agent in Handler.requests}
    assert len(agents) == 1 and agents.pop().startswith("fastmnist/")
    # second load comes from the cache: no new requests
    count = len(Handler.requests)
    load_split("tiny", "train", mirrors=mirrors, **FAST)
    assert len(Handler.requests) == count


def test_every_failure_is_listed_with_how_to_fix(tiny, server, isolated_cache):
    mirrors = [f"{server}/{m}/" for m in ("missing", "html", "truncated", "wrong")]
    with pytest.raises(DataError) as exc:
        load_split("tiny", "test", mirrors=mirrors, **FAST)
    msg = str(exc.value)
    assert "missing/t10k-images-idx3-ubyte.gz: HTTP 404" in msg
    assert "html/t10k-images-idx3-ubyte.gz: got an HTML" in msg
    assert "truncated/t10k-images-idx3-ubyte.gz: the gzip data is truncated" in msg
    assert "wrong/t10k-images-idx3-ubyte.gz: payload MD5" in msg
    assert "data_dir=FOLDER" in msg and "--data-dir" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert cached_files(isolated_cache) == []


def test_server_errors_are_retried(tiny, server):
    load_split("tiny", "test", mirrors=[f"{server}/flaky/"], **FAST)
    paths = [p for p, _ in Handler.requests]
    assert paths.count("/flaky/t10k-images-idx3-ubyte.gz") == 2  # a 503, then success


def test_offline_never_touches_the_network(tiny, server, monkeypatch):
    monkeypatch.setenv("FASTMNIST_OFFLINE", "1")
    with pytest.raises(DataError, match="downloading is off"):
        load_split("tiny", "train", mirrors=[f"{server}/good/"], **FAST)
    with pytest.raises(DataError, match="downloading is off"):
        load_split("tiny", "train", download=False, mirrors=[f"{server}/good/"], **FAST)
    assert Handler.requests == []


def test_mirror_from_environment_goes_first(tiny, server, monkeypatch):
    monkeypatch.setenv("FASTMNIST_MIRROR", f"{server}/good")
    load_split("tiny", "test", mirrors=[f"{server}/missing/"], **FAST)
    assert Handler.requests[0][0] == "/good/t10k-images-idx3-ubyte.gz"


def test_proxy_from_environment_is_used(tiny, server, monkeypatch):
    monkeypatch.setenv("http_proxy", server)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    load_split("tiny", "test", mirrors=["http://mirror.example.invalid/good/"], **FAST)
    assert Handler.requests[0][0] == "http://mirror.example.invalid/good/t10k-images-idx3-ubyte.gz"


def test_concurrent_downloads_end_with_one_good_copy(tiny, server, isolated_cache):
    results, errors = [], []

    def work():
        try:
            results.append(load_split("tiny", "train", mirrors=[f"{server}/good/"], **FAST))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    assert cached_files(isolated_cache) == ["tiny/train-images-idx3-ubyte.gz",
                                            "tiny/train-labels-idx1-ubyte.gz", "tiny/train.npz"]
    assert D.read_cache(tiny, "train") is not None


def fetch_in_subprocess(tmp_path, isolated_cache, mirror):
    """Start another Python process that downloads the tiny train split from ``mirror``."""
    script = tmp_path / "fetch.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.test_datasets import FILES\n"
        "from fastmnist import datasets as D\n"
        "D.REGISTRY['tiny'] = D.Dataset('tiny', FILES, mirrors=())\n"
        "D.load_split('tiny', 'train', mirrors=[sys.argv[1]], timeout=60, retries=1, progress=False)\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(isolated_cache.parent)}
    return subprocess.Popen([sys.executable, str(script), mirror], env=env)


def test_two_processes_downloading_at_once_leave_one_good_copy(tiny, server, isolated_cache, tmp_path):
    procs = [fetch_in_subprocess(tmp_path, isolated_cache, f"{server}/good/") for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert cached_files(isolated_cache) == ["tiny/train-images-idx3-ubyte.gz",
                                            "tiny/train-labels-idx1-ubyte.gz", "tiny/train.npz"]
    images, _ = D.read_cache(tiny, "train")
    np.testing.assert_array_equal(images, SPLITS["train"][0])


def test_killed_download_leaves_the_cache_untouched(server, isolated_cache, tmp_path):
    proc = fetch_in_subprocess(tmp_path, isolated_cache, f"{server}/stall/")
    deadline = time.time() + 20
    while not Handler.requests and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # half the body has been sent and read
    proc.kill()
    proc.wait()
    assert Handler.requests, "the download never started"
    assert [f for f in cached_files(isolated_cache) if not f.endswith(".part")] == []
    assert D.read_cache(D.Dataset("tiny", FILES, mirrors=()), "train") is None


def test_corrupt_cache_is_detected_removed_and_rebuilt(tiny, server, isolated_cache):
    load_split("tiny", "test", mirrors=[f"{server}/good/"], **FAST)
    npz = isolated_cache / "tiny" / "test.npz"
    blob = bytearray(npz.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    npz.write_bytes(bytes(blob))
    assert D.read_cache(tiny, "test") is None and not npz.exists()
    npz.write_bytes(b"\x80\x04 a pickle, not a zip")
    images, _ = load_split("tiny", "test", download=False, **FAST)  # rebuilt from the cached .gz
    np.testing.assert_array_equal(images, SPLITS["test"][0])
    assert D.read_cache(tiny, "test") is not None


def test_search_order_and_file_spellings(tiny, tmp_path, monkeypatch):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "t10k-images.idx3-ubyte").write_bytes(PAYLOADS["t10k-images-idx3-ubyte.gz"])
    (user / "t10k-labels-idx1-ubyte").write_bytes(PAYLOADS["t10k-labels-idx1-ubyte.gz"])
    images, labels = load_split("tiny", "test", data_dir=user, download=False)
    np.testing.assert_array_equal(labels, SPLITS["test"][1])
    env_dir = tmp_path / "env" / "tiny"
    env_dir.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (env_dir / name).write_bytes(gzip.compress(PAYLOADS[name]))
    monkeypatch.setenv("FASTMNIST_DATA", str(tmp_path / "env"))
    assert load_split("tiny", "test", download=False)[1].shape == (20,)


def test_a_corrupt_user_file_is_reported(tiny, tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(PAYLOADS["t10k-images-idx3-ubyte.gz"])[:100])
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(PAYLOADS["t10k-labels-idx1-ubyte.gz"]))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz \\(data_dir\\): the gzip data is truncated"):
        load_split("tiny", "test", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("mutate, match", [
    (lambda b: (1234).to_bytes(4, "big") + b[4:], "magic number 1234"),
    (lambda b: b[:-5], "promises"),
    (lambda b: b[:4] + (21).to_bytes(4, "big") + b[8:], "promises"),
    (lambda b: b"<html><body>oops</body></html>", "HTML"),
])
def test_idx_structure_is_validated(mutate, match):
    with pytest.raises(DataError, match=match):
        D.parse_idx(mutate(PAYLOADS["t10k-images-idx3-ubyte.gz"]))


def test_labels_outside_0_to_9_are_refused():
    bad = idx_labels(np.array([1, 2, 12], dtype=np.uint8))
    with pytest.raises(DataError, match="0-9"):
        D.parse_idx(bad)


def test_kmnist_checks_the_official_gzip_hash():
    spec = D.get_dataset("kmnist").files["test", "labels"]
    with pytest.raises(DataError, match="does not match the official"):
        D.verify(gzip.compress(idx_labels(np.zeros(10_000, dtype=np.uint8))), spec)


def test_registry_mirrors_in_the_documented_order():
    assert D.get_dataset("mnist").mirrors[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert D.get_dataset("mnist").mirrors[-1] == "http://yann.lecun.com/exdb/mnist/"
    assert "tf-keras-datasets" in D.get_dataset("fashion_mnist").mirrors[1]
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        D.get_dataset("cifar")


def test_real_mnist_test_set_verifies(mnist_test):
    images, labels = mnist_test
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_fashion_mnist_loads_with_the_article_shapes(fashion_dir, isolated_cache):
    (x, t), (xt, tt) = load_mnist(dataset="fashion-mnist", download=False)
    assert x.shape == (60_000, 784) and x.dtype == np.uint8 and t.dtype == np.uint8
    assert xt.shape == (10_000, 784) and tt.shape == (10_000,)
    assert (isolated_cache / "fashion-mnist" / "train.npz").is_file()
    (x, t), (xt, tt) = load_mnist(normalize=True, flatten=False, one_hot_label=True,
                                  dataset="fashion-mnist", download=False)
    assert x.shape == (60_000, 1, 28, 28) and x.dtype == np.float32
    assert 0.0 == x.min() and x.max() == 1.0
    assert t.shape == (60_000, 10) and t.dtype == np.float32 and np.all(t.sum(axis=1) == 1)
    assert np.array_equal(t.argmax(axis=1)[:5], [9, 0, 0, 3, 0])
