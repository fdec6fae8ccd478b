"""Model files: a network's parameters and metadata in one ``.npz``, never a pickle.

Layout: arrays ``W1 b1 W2 b2`` plus ``meta``, a JSON string (format, sizes, dtype, dataset,
preprocessing, seed, accuracy, fastmnist version). Loading checks everything before it builds a
network, so a bad file is refused whole with a message saying what is wrong.
"""
from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np

from . import __version__
from .files import atomic_open
from .network import PARAM_NAMES, TwoLayerNet

FORMAT = "fastmnist.TwoLayerNet/1"
PREPROCESSING = "mnist: white on black, 28x28, digit fitted to 20x20 and centred by mass, 0..1"


class ModelFileError(ValueError):
    """A model file is missing, corrupt or not a fastmnist two-layer network."""


def save_model(net: TwoLayerNet, path, **metadata) -> Path:
    """Write ``net`` to ``path`` (``.npz`` is appended if missing) atomically; returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta = {**getattr(net, "metadata", {}), **metadata, "format": FORMAT,
            "sizes": list(net.sizes), "dtype": net.dtype_name, "seed": net.seed,
            "weight_init_std": net.weight_init_std, "fastmnist": __version__,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    meta.setdefault("preprocessing", PREPROCESSING)
    arrays = net.host_params()
    with atomic_open(path) as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    return path


def read_model_file(path) -> tuple[dict, dict]:
    """``(arrays, meta)`` from a model file, fully validated; raises :class:`ModelFileError`."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no model file at {path}; train one with `fastmnist train --save "
                             f"{path}` or pass --model PATH")
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
    if set(contents) != set(PARAM_NAMES):
        raise ModelFileError(f"{path} holds arrays {sorted(contents)}; a two-layer network has "
                             f"exactly {list(PARAM_NAMES)} (a different architecture?)")
    check_shapes(path, contents, meta)
    return contents, meta


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


def load_model(path, device="auto") -> TwoLayerNet:
    """A :class:`TwoLayerNet` rebuilt from ``path`` on ``device``; nothing half-loaded on error."""
    arrays, meta = read_model_file(path)
    d, h, c = meta["sizes"]
    net = TwoLayerNet(d, h, c, meta.get("weight_init_std", 0.01), device=device,
                      dtype=meta.get("dtype", "float32"), seed=meta.get("seed"))
    net.params = {k: net.backend.asarray(arrays[k], dtype=net.dtype) for k in PARAM_NAMES}
    net.metadata = meta
    return net
