"""fastmnist: the classic 784-50-10 sigmoid network, trained by SGD on a GPU (CuPy) or CPU (NumPy).

Public API::

    from fastmnist import load_mnist, TwoLayerNet, train, plot_history
    (x, t), (xt, tt) = load_mnist(normalize=True, dataset="fashion-mnist")
    net = TwoLayerNet(784, 50, 10, device="auto", seed=0)
    history = train(net, x, t, xt, tt)
"""
__version__ = "0.1.0"

from .backend import Backend, DeviceError, get_backend, to_numpy
from .datasets import DataError, load_mnist, load_split
from .images import predict_image, preprocess_image
from .functions import cross_entropy_error, numerical_gradient, sigmoid, sigmoid_grad, softmax
from .network import TwoLayerNet
from .plots import plot_history
from .train import History, TrainingDiverged, train

__all__ = [
    "Backend", "DataError", "DeviceError", "History", "TrainingDiverged", "TwoLayerNet",
    "cross_entropy_error", "get_backend", "load_mnist", "load_split", "numerical_gradient",
    "plot_history", "predict_image", "preprocess_image", "sigmoid", "sigmoid_grad", "softmax", "to_numpy", "train",
]
