"""``fastmnist serve``: start the draw-a-digit page for a model on a local port."""
from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

EXTRA_HINT = "pip install 'fastmnist[serve]'"


def missing_stack() -> str | None:
    """Which part of the serve extra is not installed, or None."""
    for modules in (("fastapi",), ("uvicorn",), ("python_multipart", "multipart")):
        for module in modules:  # python-multipart's module was `multipart` before 0.0.13
            try:
                __import__(module)
                break
            except ImportError:
                pass
        else:
            return modules[0]
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


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, so a port in use or a wrong address is reported before
    anything says the page is up."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}: {exc.strerror or exc}; give an address of this "
                      "computer with --host (127.0.0.1: this computer only)") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host} port {port}: {exc.strerror or exc}; choose "
                      "another with --port") from None
    return sock


def page_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):  # every address of this computer: this one works here
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


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
    sock = listen(host, port)
    url = page_url(sock)
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
    server = uvicorn.Server(uvicorn.Config(create_app(net, path), log_level="warning"))
    server.run(sockets=[sock])


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


def port_number(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {text}")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="a draw-a-digit web page for your model (local)",
                       description="Serve a page where you draw a digit (or drop a photo) and "
                                   "watch the network read it, with a JSON API beside it. "
                                   f"Needs the serve extra: {EXTRA_HINT}")
    p.add_argument("--model", default=None,
                   help="model file (default: the last one `fastmnist train` kept)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (127.0.0.1: this computer only; 0.0.0.0: every "
                        "network it is on)")
    p.add_argument("--port", type=port_number, default=8000,
                   help="port to listen on (8000; 0: any free one)")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.add_argument("--train", action="store_true",
                   help="train a digit model first (fastmnist train --dataset mnist --augment)")
    p.add_argument("--device", default=None,
                   help="auto (default; a GPU when usable), cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_serve)
