"""MNIST-format datasets: a registry, IDX parsing and verification, a cache, and downloads.

Data is looked for, in order, in the ``data_dir`` argument, ``$FASTMNIST_DATA``, the cache
(``$XDG_CACHE_HOME/fastmnist`` or ``~/.cache/fastmnist``), system copies (Debian's
``dataset-fashion-mnist``) and finally the dataset's mirrors. Every file is checked on its
decompressed payload (size, MD5, IDX structure) before use, downloads land under a temporary
name and are renamed only once verified, and parsed arrays are cached as ``.npz`` without pickle.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .files import atomic_open

ENV_DATA, ENV_MIRROR, ENV_OFFLINE = "FASTMNIST_DATA", "FASTMNIST_MIRROR", "FASTMNIST_OFFLINE"
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
SPLITS = ("train", "test")
USER_AGENT = f"fastmnist/{__version__} (+https://pypi.org/project/fastmnist/)"


class DataError(RuntimeError):
    """A dataset file is missing, corrupt or could not be downloaded; the message says what to do."""


@dataclass(frozen=True)
class DataFile:
    """One IDX file: its canonical name and what its decompressed payload must be."""

    name: str  # e.g. "train-images-idx3-ubyte.gz"
    count: int  # images or labels it holds
    raw_md5: str | None = None  # MD5 of the decompressed payload, when published
    gz_md5: str | None = None  # MD5 of the official .gz (only where no raw MD5 is known)

    @property
    def is_images(self) -> bool:
        return "images" in self.name

    @property
    def raw_size(self) -> int:
        return 16 + 784 * self.count if self.is_images else 8 + self.count

    def spellings(self) -> list[str]:
        """File names this file may be stored under: gzip or not, '-idx' or '.idx'."""
        stem = self.name.removesuffix(".gz")
        dotted = stem.replace("-idx", ".idx")
        return [self.name, stem, dotted + ".gz", dotted]


@dataclass(frozen=True)
class Dataset:
    name: str
    files: dict  # (split, "images"|"labels") -> DataFile
    mirrors: tuple
    system_dirs: tuple = ()
    classes: tuple = tuple(str(d) for d in range(10))


def _files(md5s: dict, gz: bool = False) -> dict:
    out = {}
    for split, prefix, count in (("train", "train", 60_000), ("test", "t10k", 10_000)):
        for kind, idx in (("images", "idx3"), ("labels", "idx1")):
            name = f"{prefix}-{kind}-{idx}-ubyte.gz"
            digest = md5s[name]
            out[split, kind] = DataFile(name, count, None if gz else digest, digest if gz else None)
    return out


REGISTRY = {
    "mnist": Dataset(
        "mnist",
        _files({"train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
                "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
                "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
                "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637"}),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/",
         "http://yann.lecun.com/exdb/mnist/"),
        ("/usr/share/datasets/mnist",),
    ),
    "fashion-mnist": Dataset(
        "fashion-mnist",
        _files({"train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
                "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
                "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965"}),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
        ("/usr/share/datasets/fashion-mnist",),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"),
    ),
    # KMNIST publishes only the hashes of its .gz files, so those are what its files are checked by.
    "kmnist": Dataset(
        "kmnist",
        _files({"train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
                "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
                "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
                "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134"}, gz=True),
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
}


def get_dataset(name: str) -> Dataset:
    key = name.lower().replace("_", "-")
    if key not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[key]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastmnist"


# -- reading and checking one file ------------------------------------------------------------
def decompress(blob: bytes) -> bytes:
    """The IDX payload of ``blob``: gunzipped when it is gzip, as is otherwise."""
    if blob[:2] != b"\x1f\x8b":
        return blob
    try:
        return gzip.decompress(blob)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"the gzip data is truncated or corrupt ({exc})") from None


def parse_idx(raw: bytes, spec: DataFile | None = None) -> np.ndarray:
    """Decode an IDX payload to a uint8 array: images ``(N, 28, 28)`` or labels ``(N,)``.

    Checks the magic number, the dimensions, that the byte count matches them, and for labels
    that every value is 0-9. ``spec`` adds the expected kind and count.
    """
    if raw[:15].lstrip().lower().startswith((b"<!doctype", b"<html", b"<?xml", b"<head")):
        raise DataError("got an HTML/XML page instead of IDX data (the server sent an error or "
                        "moved the file)")
    if len(raw) < 8:
        raise DataError(f"only {len(raw)} bytes: too short to be an IDX file")
    magic = int.from_bytes(raw[:4], "big")
    n = int.from_bytes(raw[4:8], "big")
    if magic == IMAGE_MAGIC:
        if len(raw) < 16:
            raise DataError("IDX image header is cut short")
        rows, cols = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
        shape, offset = (n, rows, cols), 16
        if (rows, cols) != (28, 28):
            raise DataError(f"images are {rows}x{cols}, expected 28x28")
    elif magic == LABEL_MAGIC:
        shape, offset = (n,), 8
    else:
        raise DataError(f"magic number {magic} is neither {IMAGE_MAGIC} (images) nor "
                        f"{LABEL_MAGIC} (labels): not an IDX file")
    expected = offset + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"IDX header promises {expected} bytes but the payload has {len(raw)} "
                        "(truncated or padded)")
    if spec is not None:
        if spec.is_images != (magic == IMAGE_MAGIC):
            raise DataError(f"{spec.name} should hold {'images' if spec.is_images else 'labels'}")
        if n != spec.count:
            raise DataError(f"{spec.name} should hold {spec.count} items, this holds {n}")
    arr = np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)
    if magic == LABEL_MAGIC and arr.size and arr.max() > 9:
        raise DataError(f"labels must be 0-9, found {arr.max()}")
    return arr


def verify(blob: bytes, spec: DataFile) -> np.ndarray:
    """Check a file's bytes against ``spec`` (payload size and hash, IDX structure); parse them."""
    raw = decompress(blob)
    if spec.raw_md5 is not None:
        if len(raw) != spec.raw_size:
            parse_idx(raw, spec)  # a structural fault explains itself better than a size
            raise DataError(f"payload is {len(raw)} bytes, {spec.name} has {spec.raw_size}")
        digest = hashlib.md5(raw).hexdigest()
        if digest != spec.raw_md5:
            raise DataError(f"payload MD5 {digest} does not match {spec.name}'s {spec.raw_md5}")
    elif spec.gz_md5 is not None and blob[:2] == b"\x1f\x8b":
        digest = hashlib.md5(blob).hexdigest()
        if digest != spec.gz_md5:
            raise DataError(f"file MD5 {digest} does not match the official {spec.name} "
                            f"({spec.gz_md5})")
    return parse_idx(raw, spec)


def find_file(folder: Path, spec: DataFile) -> Path | None:
    for name in spec.spellings():
        path = folder / name
        if path.is_file():
            return path
    return None


# -- downloading ----------------------------------------------------------------------------
def mirror_list(ds: Dataset, mirrors=None) -> list[str]:
    """The mirrors to try: ``mirrors`` replaces the registry's; ``$FASTMNIST_MIRROR`` goes first."""
    chosen = list(ds.mirrors if mirrors is None else ([mirrors] if isinstance(mirrors, str)
                                                      else mirrors))
    extra = os.environ.get(ENV_MIRROR, "").replace(",", " ").split()
    return [m if m.endswith("/") else m + "/" for m in extra + chosen]


def fetch(url: str, timeout: float, progress: bool) -> bytes:
    """GET ``url`` (environment proxies apply) and return the body; raises on any HTTP error."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    opener = urllib.request.build_opener()  # built per call so proxy variables set now apply
    with opener.open(request, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0)
        parts, got = [], 0
        while chunk := response.read(1 << 16):
            parts.append(chunk)
            got += len(chunk)
            if progress:
                shown = f"{got / total:4.0%}" if total else f"{got >> 10} KiB"
                sys.stderr.write(f"\r  {url.rsplit('/', 1)[-1]} {shown}")
        if progress:
            sys.stderr.write("\n")
        if total and got < total:
            raise DataError(f"connection closed after {got} of {total} bytes")
        return b"".join(parts)


def describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect ({exc.reason})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial)} bytes"
    return str(exc) or type(exc).__name__


def download(spec: DataFile, dest: Path, mirrors: list[str], *, timeout: float = 30.0,
             retries: int = 3, backoff: float = 1.0, progress: bool | None = None,
             errors: list | None = None) -> np.ndarray | None:
    """Fetch ``spec`` from the first mirror that serves a verified copy; store it in ``dest``.

    Each mirror gets ``retries`` attempts (waiting ``backoff``, then twice as long) for
    timeouts, dropped connections and 5xx answers; a 4xx answer, bad content, a host name that
    does not resolve or a refused connection moves on at once. Each mirror that failed adds
    one line to ``errors``: its last failure, and how many tries it had.
    The body is verified in memory and written under a temporary name, then renamed, so the
    destination only ever holds a good file. Returns the parsed array, or None with the
    failures appended to ``errors``.
    """
    progress = sys.stderr.isatty() if progress is None else progress
    errors = [] if errors is None else errors
    for base in mirrors:
        url = base + spec.name
        for attempt in range(max(retries, 1)):
            try:
                blob = fetch(url, timeout, progress)
                arr = verify(blob, spec)
            except DataError as exc:
                last, again = str(exc), False
            except urllib.error.HTTPError as exc:
                last, again = describe(exc), exc.code >= 500
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                last, again = describe(exc), worth_retrying(exc)
            else:
                with atomic_open(dest / spec.name) as f:
                    f.write(blob)
                return arr
            if not again or attempt + 1 == retries:
                break
            time.sleep(backoff * 2 ** attempt)
        errors.append(f"{url}: {last}" + (f" ({attempt + 1} tries)" if attempt else ""))
    return None


def worth_retrying(exc: BaseException) -> bool:
    """False for failures a few seconds will not mend: a host name that does not resolve (no
    network, or a wrong mirror) and a refused connection (no server there)."""
    reason = getattr(exc, "reason", exc)
    return not isinstance(reason, (socket.gaierror, ConnectionRefusedError))


# -- the array cache ----------------------------------------------------------------------------
def checksum(*arrays) -> int:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"), crc)
    return crc


def cache_file(ds: Dataset, split: str) -> Path:
    return cache_dir() / ds.name / f"{split}.npz"


def write_cache(ds: Dataset, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    with atomic_open(cache_file(ds, split)) as f:
        np.savez(f, images=images, labels=labels,
                 crc32=np.array(checksum(images, labels), dtype=np.uint64))


def read_cache(ds: Dataset, split: str):
    """The cached ``(images, labels)``, or None; a cache that fails its checks is deleted."""
    path = cache_file(ds, split)
    if not path.is_file():
        return None
    count = ds.files[split, "images"].count
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels, crc = z["images"], z["labels"], int(z["crc32"])
        ok = (images.dtype == np.uint8 and images.shape == (count, 28, 28)
              and labels.dtype == np.uint8 and labels.shape == (count,)
              and checksum(images, labels) == crc and (labels.max() <= 9))
    except Exception:  # truncated zip, missing key, a pickled object: all mean "rebuild"
        ok = False
    if not ok:
        path.unlink(missing_ok=True)
        return None
    return images, labels


# -- finding a split ----------------------------------------------------------------------------
def search_dirs(ds: Dataset, data_dir=None) -> list[tuple[str, Path]]:
    """Folders to look in, in order, each with a label for error messages."""
    dirs = []
    for label, root in (("data_dir", data_dir), (ENV_DATA, os.environ.get(ENV_DATA))):
        if root:
            dirs += [(label, Path(root) / ds.name), (label, Path(root))]
    dirs.append(("cache", cache_dir() / ds.name))
    dirs += [("system copy", Path(d)) for d in ds.system_dirs]
    return dirs


def load_split(name: str = "mnist", split: str = "train", *, data_dir=None, download=None,
               mirrors=None, progress=None, offline_reason: str = "download=False",
               **download_options):
    """``(images, labels)`` of one split: uint8 ``(N, 28, 28)`` and uint8 ``(N,)``, verified.

    ``download=None`` means "yes unless ``$FASTMNIST_OFFLINE`` is set". Raises
    :class:`DataError` listing every place tried and how to supply the files by hand;
    ``offline_reason`` names what turned downloading off there (the caller's own words for
    ``download=False``, such as a command-line flag).
    """
    ds = get_dataset(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    specs = (ds.files[split, "images"], ds.files[split, "labels"])
    if download is None:
        download = not offline_by_environment()
        offline_reason = f"{ENV_OFFLINE}={os.environ.get(ENV_OFFLINE)} is set"
    notes = []
    dirs = search_dirs(ds, data_dir)
    for label, folder in dirs:
        if label == "cache" and (cached := read_cache(ds, split)) is not None:
            return cached
        arrays = load_folder(folder, specs, notes, label)
        if arrays is not None:
            write_cache(ds, split, *arrays)
            return arrays
    if download:
        mirror_urls = mirror_list(ds, mirrors)
        arrays = []
        for spec in specs:
            arr = download_one(ds, spec, mirror_urls, notes, progress, download_options)
            if arr is None:
                break
            arrays.append(arr)
        else:
            write_cache(ds, split, *arrays)
            return tuple(arrays)
    else:
        notes.append(f"downloading is off ({offline_reason})")
    raise DataError(not_found_message(ds, split, specs, notes))


def offline_by_environment() -> bool:
    """True when ``$FASTMNIST_OFFLINE`` asks never to download (any value but empty or 0)."""
    return os.environ.get(ENV_OFFLINE, "").strip() not in ("", "0")


def load_folder(folder: Path, specs, notes: list, label: str):
    """Both files of a split from ``folder``, verified; None (with notes) when absent or bad."""
    arrays = []
    for spec in specs:
        path = find_file(folder, spec)
        if path is None:
            if folder.is_dir():
                notes.append(f"{folder} ({label}): no {spec.name}")
            return None
        try:
            arrays.append(verify(path.read_bytes(), spec))
        except DataError as exc:
            notes.append(f"{path} ({label}): {exc}; skipped")
            return None
    return tuple(arrays)


def download_one(ds: Dataset, spec: DataFile, mirrors, notes, progress, options):
    dest = cache_dir() / ds.name
    if progress is None:
        progress = sys.stderr.isatty()
    if progress:
        sys.stderr.write(f"fastmnist: downloading {ds.name} {spec.name}\n")
    return download(spec, dest, mirrors, progress=progress, errors=notes, **options)


def not_found_message(ds: Dataset, split: str, specs, notes) -> str:
    names = " and ".join(s.name for s in specs)
    tried = "\n".join(f"  - {n}" for n in notes) or "  - (nothing found anywhere)"
    return (f"could not load the {ds.name} {split} set ({names}).\nTried:\n{tried}\n"
            f"To use files you already have, put {names} (gzip or uncompressed) in a folder and "
            f"pass data_dir=FOLDER (CLI: --data-dir FOLDER) or set {ENV_DATA}=FOLDER; "
            f"or name a working mirror with mirrors=[URL] or {ENV_MIRROR}=URL.")


def load_mnist(normalize: bool = False, flatten: bool = True, one_hot_label: bool = False, *,
               dataset: str = "mnist", data_dir=None, download=None, mirrors=None,
               offline_reason: str = "download=False"):
    """The article's loader: ``(x_train, t_train), (x_test, t_test)`` for an MNIST-format set.

    Images are uint8 0-255, or float32 0.0-1.0 when ``normalize``; rows of 784 when ``flatten``,
    else ``(N, 1, 28, 28)``. Labels are uint8 class indices, or float32 one-hot ``(N, 10)``
    when ``one_hot_label``.
    """
    out = []
    for split in SPLITS:
        images, labels = load_split(dataset, split, data_dir=data_dir, download=download,
                                    mirrors=mirrors, offline_reason=offline_reason)
        out.append((format_images(images, normalize, flatten), format_labels(labels, one_hot_label)))
    return tuple(out)


def format_images(images: np.ndarray, normalize: bool, flatten: bool) -> np.ndarray:
    """uint8 ``(N, 28, 28)`` to the article's layout (float32 0-1 when ``normalize``)."""
    n = images.shape[0]
    x = images.reshape(n, 784) if flatten else images.reshape(n, 1, 28, 28)
    if normalize:
        x = np.multiply(x, np.float32(1 / 255), dtype=np.float32)
    return x


def format_labels(labels: np.ndarray, one_hot: bool) -> np.ndarray:
    if not one_hot:
        return labels
    out = np.zeros((labels.shape[0], 10), dtype=np.float32)
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out
