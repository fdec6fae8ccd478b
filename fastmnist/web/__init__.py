"""The draw-a-digit page: a local web server that reads digits drawn or photographed.

``fastmnist serve`` (or :func:`serve`) starts it; :func:`create_app` builds the ASGI app for a
network, for tests or other servers. The web stack (FastAPI, uvicorn) comes with the ``serve``
extra and is imported only here, when a server is asked for.
"""
from __future__ import annotations


def create_app(net, model_path=None, **kwargs):
    """The FastAPI app serving ``net`` (see :mod:`fastmnist.web.app`)."""
    from .app import create_app as build

    return build(net, model_path, **kwargs)


def serve(model=None, host: str = "127.0.0.1", port: int = 8000, device=None,
          open_browser: bool = False) -> None:
    """Serve the page and API for ``model`` (a path or a TwoLayerNet; default: the last model
    `fastmnist train` kept) on http://host:port until Ctrl-C."""
    from .server import run

    run(model, host=host, port=port, device=device, open_browser=open_browser)
