"""Model files: a two-layer network's parameters and metadata in one ``.npz``, never a pickle.

Layout: arrays ``W1 b1 W2 b2`` plus ``meta``, a JSON string (format, sizes, dtype, dataset,
preprocessing, seed, accuracy, fastmnist version). This module knows the file format only, on
host arrays and a metadata dict; :meth:`fastmnist.TwoLayerNet.save` and ``.load`` turn networks
into them and back. Reading checks everything first, so a bad file is refused whole with a
message saying what is wrong.
"""
from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np

from . import __version__
from .files import atomic_open

FORMAT = "fastmnist.TwoLayerNet/1"
ARRAYS = ("W1", "b1", "W2", "b2")  # shapes (D, H), (H,), (H, C), (C,) for meta["sizes"] D, H, C
PREPROCESSING = "mnist: white on black, 28x28, digit fitted to 20x20 and centred by mass, 0..1"


class ModelFileError(ValueError):
    """A model file is missing, corrupt or not a fastmnist two-layer network."""


def write_model_file(path, arrays: dict, meta: dict) -> Path:
    """Write host ``arrays`` (``W1 b1 W2 b2``) and ``meta`` (JSON-able, with ``sizes``) to
    ``path`` atomically, ``.npz`` appended if missing; returns the path written."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta = {"preprocessing": PREPROCESSING, **meta, "format": FORMAT, "fastmnist": __version__,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with atomic_open(path) as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **{k: arrays[k] for k in ARRAYS})
    return path


def read_model_file(path) -> tuple[dict, dict]:
    """``(arrays, meta)`` from a model file, fully validated; raises :class:`ModelFileError`."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no model file at {path}; train one with `fastmnist train --save "
                             f"{path}` or pass --model PATH")
    check_is_zip(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            contents = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ModelFileError(f"{path} holds pickled Python objects; fastmnist never loads "
                                 "pickles (they can run code). Re-save the model with "
                                 "TwoLayerNet.save().") from None
        raise ModelFileError(f"{path} is not a readable .npz model file ({exc})") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        raise ModelFileError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                             "save or download it again") from None
    if "meta" not in contents:
        raise ModelFileError(f"{path} has no 'meta' record: not a fastmnist model file")
    try:
        meta = json.loads(str(contents.pop("meta")))
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: its metadata is not valid JSON") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is a {meta.get('format')!r} file; this fastmnist reads "
                             f"{FORMAT!r} (a two-layer network)")
    if set(contents) != set(ARRAYS):
        raise ModelFileError(f"{path} holds arrays {sorted(contents)}; a two-layer network has "
                             f"exactly {list(ARRAYS)} (a different architecture?)")
    check_shapes(path, contents, meta)
    return contents, meta


KNOWN_STARTS = ((b"\x93NUMPY", "a .npy array"), (b"\x89PNG", "a PNG image"),
                (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
                (b"\x80", "a Python pickle"), (b"\x1f\x8b", "a gzip file"),
                (b"%PDF", "a PDF document"))


def check_is_zip(path: Path) -> None:
    """Refuse at once a file that is not a zip archive (which ``.npz`` files are), saying
    what it looks like instead."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:2] == b"PK":
        return
    if not head:
        raise ModelFileError(f"{path} is empty (0 bytes): not a fastmnist model file")
    looks = next((what for start, what in KNOWN_STARTS if head.startswith(start)), None)
    if looks is None:
        text = head.isascii() and all(32 <= b < 127 or b in b"\t\r\n" for b in head)
        looks = "text" if text else "unknown data"
    raise ModelFileError(f"{path} is not a fastmnist model file ({looks}, not a zip archive). "
                         "Model files are the .npz archives `fastmnist train --save` and "
                         "TwoLayerNet.save() write.")


def check_shapes(path, arrays: dict, meta: dict) -> None:
    try:
        d, h, c = (int(s) for s in meta["sizes"])
    except (KeyError, TypeError, ValueError):
        raise ModelFileError(f"{path}: metadata lacks the layer sizes") from None
    expected = {"W1": (d, h), "b1": (h,), "W2": (h, c), "b2": (c,)}
    for k, shape in expected.items():
        a = arrays[k]
        if a.shape != shape:
            raise ModelFileError(f"{path}: {k} has shape {a.shape}, expected {shape} for a "
                                 f"{d}-{h}-{c} network")
        if a.dtype not in (np.float32, np.float64):
            raise ModelFileError(f"{path}: {k} is {a.dtype}, expected float32 or float64")
        if not np.all(np.isfinite(a)):
            raise ModelFileError(f"{path}: {k} contains NaN or infinite values (the run that "
                                 "saved it diverged); retrain with a smaller learning rate")

