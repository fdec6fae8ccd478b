"""``fastmnist serve``: start the draw-a-digit page for a model on a local port."""
from __future__ import annotations

import sys
from pathlib import Path

from . import EXTRA_HINT


def missing_stack() -> str | None:
    """Which part of the serve extra is not installed, or None."""
    for module in ("fastapi", "uvicorn", "multipart"):
        try:
            __import__(module)
        except ImportError:
            return module
    return None


def load_model(model, device):
    """``(net, path)`` for a path or a net; no path means the last model `fastmnist train`
    kept. Raises ``FileNotFoundError`` saying how to get one."""
    from ..models import default_model
    from ..network import TwoLayerNet

    if isinstance(model, TwoLayerNet):
        return model, None
    path = Path(model or default_model())
    if not path.is_file():
        how = "train one with `fastmnist train --dataset mnist --augment` (or start with " \
              "`fastmnist serve --train`)"
        raise FileNotFoundError(f"no model file at {path}: {how}" if model else
                                f"no trained model yet: {how}, or name one with --model")
    return TwoLayerNet.load(path, device=device or "auto"), path


def run(model=None, host: str = "127.0.0.1", port: int = 8000, device=None,
        open_browser: bool = False) -> None:
    """Serve ``model`` until Ctrl-C, saying where and what."""
    lack = missing_stack()
    if lack:
        raise ImportError(f"the web server needs {lack}: {EXTRA_HINT}")
    import uvicorn

    from ..models import model_warnings
    from .app import create_app

    net, path = load_model(model, device)
    for line in model_warnings(net, path):
        print(f"warning: {line}", file=sys.stderr)
    url = f"http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port}/"
    meta = net.metadata
    acc = meta.get("test_accuracy")
    print(f"serving {path or 'the given network'} ({'-'.join(map(str, net.sizes))}, "
          f"{meta.get('dataset', 'unknown data')}"
          + (f", test accuracy {acc:.4f}" if isinstance(acc, float) else "")
          + f") on {net.device}")
    print(f"open {url} to draw a digit (API docs: {url}docs); Ctrl-C stops", flush=True)
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, (url,)).start()
    uvicorn.run(create_app(net, path), host=host, port=port, log_level="warning")


def cmd_serve(args) -> int:
    if missing_stack():
        print(f"fastmnist serve: the web server is not installed: {EXTRA_HINT}", file=sys.stderr)
        return 2
    model = args.model
    if args.train:
        import subprocess  # `fastmnist train` itself, with its progress and its messages

        print("training a digit model first: fastmnist train --dataset mnist --augment", flush=True)
        status = subprocess.call([sys.executable, "-m", "fastmnist.cli", "train", "--dataset",
                                  "mnist", "--augment", "--save", "model.npz",
                                  *(["--device", args.device] if args.device else [])])
        if status != 0:
            return status
        model = "model.npz"
    run(model, host=args.host, port=args.port, device=args.device, open_browser=args.open)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="a draw-a-digit web page for your model (local)",
                       description="Serve a page where you draw a digit (or drop a photo) and "
                                   "watch the network read it, with a JSON API beside it. "
                                   f"Needs the serve extra: {EXTRA_HINT}")
    p.add_argument("--model", default=None,
                   help="model file (default: the last one `fastmnist train` kept)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (127.0.0.1: this computer only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.add_argument("--train", action="store_true",
                   help="train a digit model first (fastmnist train --dataset mnist --augment)")
    p.add_argument("--device", default=None,
                   help="auto (default; a GPU when usable), cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_serve)
