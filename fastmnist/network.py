"""The two-layer network: affine -> sigmoid -> affine -> softmax, with backprop."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from . import functions as F
from .backend import array_namespace, get_backend, to_numpy
from .modelfile import read_model_file, write_model_file

PARAM_NAMES = ("W1", "b1", "W2", "b2")
PIXEL_SCALE = 1.0 / 255.0  # uint8 pixels to 0..1
EVAL_CHUNK = 10_000  # rows per forward pass when scoring a whole set (bounds device memory)


def on_device(method):
    """Run a method (or a function whose first argument is a network) with the network's GPU
    current: CuPy launches kernels on the current device."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.backend.use():
            return method(self, *args, **kwargs)
    return wrapper


class TwoLayerNet:
    """A ``input_size -> hidden_size -> output_size`` classifier with sigmoid hidden units.

    ``params`` holds ``W1 (D, H)``, ``b1 (H,)``, ``W2 (H, C)``, ``b2 (C,)`` on the chosen device in
    ``dtype`` (float32 unless asked). Weights start as ``weight_init_std * N(0, 1)`` drawn on the
    host from ``seed``, so every device starts from the same numbers; biases start at zero.
    Methods accept NumPy input and return arrays on the device (``fastmnist.to_numpy`` brings
    them back).
    """

    def __init__(self, input_size=784, hidden_size=50, output_size=10, weight_init_std=0.01, *,
                 device="auto", dtype="float32", seed=None):
        for name, size in (("input_size", input_size), ("hidden_size", hidden_size),
                           ("output_size", output_size)):
            if not isinstance(size, (int, np.integer)) or size < 1:
                raise ValueError(f"{name} must be a positive integer, got {size!r}")
        if not (isinstance(weight_init_std, (int, float)) and math.isfinite(weight_init_std)
                and weight_init_std > 0):
            raise ValueError(f"weight_init_std must be a positive number, got {weight_init_std!r}")
        self.backend = get_backend(device)
        self.xp = self.backend.xp
        self.dtype = self.backend.dtype(dtype)
        self.dtype_name = np.dtype(dtype).name
        self.sizes = (int(input_size), int(hidden_size), int(output_size))
        self.weight_init_std = float(weight_init_std)
        self.seed = seed
        self.metadata = {}  # dataset, accuracy, ... carried into model files
        self.params = init_params(self.sizes, weight_init_std, np.dtype(dtype), seed,
                                  self.backend)

    @property
    def device(self) -> str:
        return self.backend.device

    def __repr__(self):
        d, h, c = self.sizes
        return f"TwoLayerNet({d}, {h}, {c}, device={self.device!r}, dtype={self.dtype_name!r})"

    # -- inputs -------------------------------------------------------------------------------
    def as_input(self, x, keep_uint8: bool = False):
        """``x`` as a ``(N, D)`` array of this net's dtype on its device (``(D,)`` stays 1-D).

        With ``keep_uint8``, uint8 pixels stay uint8 (scaled to 0..1 later, batch by batch).
        """
        raw = keep_uint8 and str(getattr(x, "dtype", "")) == "uint8"
        x = self.backend.asarray(x) if raw else self.backend.asarray(x, dtype=self.dtype)
        d = self.sizes[0]
        if x.ndim > 2 and math.prod(x.shape[1:]) == d:
            x = self.xp.reshape(x, (x.shape[0], d))
        if x.shape[-1] != d or x.ndim > 2:
            raise ValueError(f"input has shape {tuple(x.shape)}; this network expects (N, {d}) "
                             f"rows of {d} pixels (or (N, 1, 28, 28) images)")
        return x

    def as_labels(self, t, n: int):
        """Integer class indices ``(n,)`` on the device from one-hot or integer labels."""
        c = self.sizes[2]
        host = t if isinstance(t, (np.ndarray, list, tuple, int, np.integer)) else None
        if host is not None:
            t = check_labels(np.asarray(host), n, c)
        t = self.backend.asarray(t)
        return F.labels_to_indices(t, c)

    # -- forward ------------------------------------------------------------------------------
    def logits(self, x):
        """Pre-softmax scores ``(N, C)`` for a device input ``x`` ``(N, D)``."""
        p = self.params
        z1 = F.sigmoid(x @ p["W1"] + p["b1"])
        return z1 @ p["W2"] + p["b2"]

    @on_device
    def predict(self, x):
        """Class probabilities ``(N, C)`` (rows sum to 1) for inputs ``(N, D)``."""
        return F.softmax(self.logits(self.as_input(x)))

    @on_device
    def loss(self, x, t):
        """Mean cross-entropy on ``x`` against one-hot or integer labels ``t`` (0-d device array)."""
        x = self.as_input(x)
        n = 1 if x.ndim == 1 else x.shape[0]
        return F.softmax_cross_entropy(self.logits(x), self.as_labels(t, n))

    def count_correct(self, x, t_idx, chunk: int | None = None):
        """How many rows of the device input ``x`` are classified as ``t_idx`` (0-d device array).

        ``x`` may hold uint8 pixels, scaled to 0..1 chunk by chunk.
        Works through ``x`` in chunks so a 60,000-row set never needs a 60,000 x H buffer.
        """
        xp, chunk = self.xp, chunk or EVAL_CHUNK
        correct = xp.zeros((), dtype=xp.int64)
        n = x.shape[0]
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            guess = xp.argmax(self.logits(as_float(xp, x[start:stop, ...], self.dtype)), axis=1)
            correct = correct + xp.sum(xp.astype(guess == t_idx[start:stop], xp.int64))
        return correct

    @on_device
    def accuracy(self, x, t) -> float:
        """Fraction of rows of ``x`` classified as ``t`` (one-hot or integer labels)."""
        x = self.as_input(x)
        if x.ndim == 1:
            x = self.xp.reshape(x, (1, -1))
        t = self.as_labels(t, x.shape[0])
        return float(to_numpy(self.count_correct(x, t))) / x.shape[0]

    # -- gradients ----------------------------------------------------------------------------
    @on_device
    def gradient(self, x, t):
        """Backpropagated gradients of :meth:`loss`, a dict shaped like ``params``."""
        x = self.as_input(x)
        if x.ndim == 1:
            x = self.xp.reshape(x, (1, -1))
        onehot = one_hot(self.as_labels(t, x.shape[0]), self.sizes[2], self.dtype)
        grads, _ = backprop(self.params, x, onehot)
        return grads

    @on_device
    def numerical_gradient(self, x, t, h: float = 1e-4):
        """Central-difference gradients of :meth:`loss` (slow: two passes per parameter)."""
        x = self.as_input(x)
        n = 1 if x.ndim == 1 else x.shape[0]
        t = self.as_labels(t, n)

        def loss_at(_):
            return F.softmax_cross_entropy(self.logits(x), t)

        return {k: F.numerical_gradient(loss_at, self.params[k], h) for k in PARAM_NAMES}

    def predict_image(self, source, top: int = 3) -> dict:
        """Read a photo or drawing of one digit (see :func:`fastmnist.images.predict_image`)."""
        from .images import predict_image

        return predict_image(source, self, top=top)

    # -- files --------------------------------------------------------------------------------
    def save(self, path, **metadata) -> Path:
        """Write this network to a ``.npz`` model file (see :mod:`fastmnist.modelfile`) with its
        ``metadata`` and any given here; returns the path written."""
        meta = {**self.metadata, **metadata, "sizes": list(self.sizes), "dtype": self.dtype_name,
                "seed": self.seed, "weight_init_std": self.weight_init_std}
        return write_model_file(path, self.host_params(), meta)

    @classmethod
    def load(cls, path, device="auto") -> "TwoLayerNet":
        """A network rebuilt on ``device`` from a file written by :meth:`save`; a bad file is
        refused whole (:class:`fastmnist.modelfile.ModelFileError`), nothing half-loaded."""
        arrays, meta = read_model_file(path)
        d, h, c = meta["sizes"]
        net = cls(d, h, c, meta.get("weight_init_std", 0.01), device=device,
                  dtype=meta.get("dtype", "float32"), seed=meta.get("seed"))
        net.params = {k: net.backend.asarray(arrays[k], dtype=net.dtype) for k in PARAM_NAMES}
        net.metadata = meta
        return net

    # -- moving ---------------------------------------------------------------------------------
    def host_params(self) -> dict:
        """Copies of the parameters as NumPy arrays."""
        return {k: np.array(to_numpy(v)) for k, v in self.params.items()}

    def to(self, device) -> "TwoLayerNet":
        """This network's parameters moved to another device (a new object)."""
        clone = TwoLayerNet.__new__(TwoLayerNet)
        clone.__dict__.update(self.__dict__)
        clone.backend = get_backend(device)
        clone.xp = clone.backend.xp
        clone.dtype = clone.backend.dtype(self.dtype_name)
        clone.params = {k: clone.backend.asarray(v, dtype=clone.dtype)
                        for k, v in self.host_params().items()}
        return clone


def init_params(sizes, std, dtype, seed, backend) -> dict:
    """Weights ``std * N(0, 1)`` drawn on the host from ``seed``; zero biases; moved to device."""
    d, h, c = sizes
    rng = np.random.default_rng(seed)
    host = {
        "W1": rng.standard_normal((d, h), dtype=dtype) * dtype.type(std),
        "b1": np.zeros(h, dtype=dtype),
        "W2": rng.standard_normal((h, c), dtype=dtype) * dtype.type(std),
        "b2": np.zeros(c, dtype=dtype),
    }
    return {k: backend.asarray(v) for k, v in host.items()}


def backprop(params: dict, x, onehot):
    """Gradients of the mean cross-entropy, and that loss, for device arrays.

    ``x`` ``(B, D)`` inputs, ``onehot`` ``(B, C)`` targets in the parameters' dtype. Returns
    ``(grads, loss)`` with ``grads`` shaped like ``params`` and ``loss`` a 0-d array.
    """
    xp = array_namespace(x)
    W1, b1, W2, b2 = (params[k] for k in PARAM_NAMES)
    z1 = F.sigmoid(x @ W1 + b1)
    logits = z1 @ W2 + b2
    y = F.softmax(logits)
    loss = F.softmax_cross_entropy(logits, onehot)
    dy = (y - onehot) / x.shape[0]  # softmax + cross-entropy, differentiated together
    dz1 = (dy @ xp.matrix_transpose(W2)) * z1 * (1.0 - z1)  # sigmoid' = z (1 - z)
    grads = {"W1": xp.matrix_transpose(x) @ dz1, "b1": xp.sum(dz1, axis=0),
             "W2": xp.matrix_transpose(z1) @ dy, "b2": xp.sum(dy, axis=0)}
    return grads, loss


def as_float(xp, x, dtype):
    """A batch in ``dtype``: uint8 pixels are scaled to 0..1, floats pass through."""
    if x.dtype == dtype:
        return x
    return xp.astype(x, dtype) * PIXEL_SCALE


def one_hot(t_idx, num_classes: int, dtype):
    """``(N, C)`` one-hot rows in ``dtype`` from integer labels ``(N,)`` (any namespace)."""
    xp = array_namespace(t_idx)
    classes = xp.arange(num_classes, dtype=t_idx.dtype)
    return xp.astype(xp.reshape(t_idx, (-1, 1)) == classes, dtype)


def check_labels(t: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """Validate host labels (one-hot ``(n, C)`` or integer ``(n,)``) and return them."""
    if t.ndim == 2 and t.shape == (n, num_classes):
        return t
    if t.ndim == 0 and n == 1:
        t = t.reshape(1)
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"labels have shape {t.shape}; expected ({n},) class indices or "
                         f"({n}, {num_classes}) one-hot rows to match {n} inputs")
    if t.dtype.kind not in "iu":
        if t.dtype.kind == "f" and np.all(np.isfinite(t)) and np.all(t == np.round(t)):
            t = t.astype(np.int64)
        else:
            raise ValueError(f"labels must be whole numbers 0-{num_classes - 1}, got dtype {t.dtype}")
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"labels must lie in 0-{num_classes - 1}; found values from "
                         f"{t.min()} to {t.max()}")
    return t


def gradient_check(net: TwoLayerNet, x, t, h: float = 1e-4) -> dict:
    """Relative error of backprop against central differences, per parameter.

    For each parameter: ``max|g_bp - g_num| / max(max|g_bp|, max|g_num|)``. Run it in float64
    on a small batch; values around 1e-8 or below mean the backward pass is right.
    """
    analytic = {k: to_numpy(v) for k, v in net.gradient(x, t).items()}
    numeric = {k: to_numpy(v) for k, v in net.numerical_gradient(x, t, h).items()}
    errors = {}
    for k in PARAM_NAMES:
        scale = max(np.abs(analytic[k]).max(), np.abs(numeric[k]).max(), np.finfo(float).tiny)
        errors[k] = float(np.abs(analytic[k] - numeric[k]).max() / scale)
    return errors
