"""fastmnist: the classic 784-50-10 sigmoid network, trained by SGD on a GPU (CuPy) or CPU (NumPy).

Public API::

    from fastmnist import load_mnist, TwoLayerNet, train, plot_history
    (x, t), (xt, tt) = load_mnist(normalize=True, dataset="fashion-mnist")
    net = TwoLayerNet(784, 50, 10, device="auto", seed=0)
    history = train(net, x, t, xt, tt)
"""
__version__ = "0.1.0"

import importlib

from .backend import Backend, DeviceError, get_backend, to_numpy
from .datasets import DataError, load_mnist, load_split
from .functions import cross_entropy_error, numerical_gradient, sigmoid, sigmoid_grad, softmax
from .network import TwoLayerNet
from .train import History, TrainingDiverged, train
from .doctor import doctor  # light: its checks import what they need when they run

# Photos (SciPy) and figures (matplotlib) load on first use: `import fastmnist` and the
# command line start in a fraction of the time.
_LAZY = {"plot_history": "plots", "predict_image": "images", "preprocess_image": "images",
         "sweep": "sweeps", "read_number": "images", "NoDigitError": "images",
         "augmented_training_set": "augment", "serve": "web"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'fastmnist' has no attribute {name!r}")

__all__ = [
    "Backend", "DataError", "DeviceError", "History", "TrainingDiverged", "TwoLayerNet",
    "cross_entropy_error", "doctor", "get_backend", "load_mnist", "load_split", "numerical_gradient",
    "plot_history", "predict_image", "preprocess_image", "sigmoid", "sigmoid_grad", "softmax",
    "sweep", "to_numpy", "train", "read_number", "NoDigitError", "augmented_training_set", "serve",
]
