"""The ASGI app: the page, ``POST /api/predict``, ``GET /api/model`` and ``GET /healthz``.

Every answer to a bad request is a 4xx with ``{"detail": message}``; the network's work runs in
a worker thread so the event loop keeps serving while an image is read.
"""
from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import anyio
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from .. import __version__
from ..images import NoDigitError, class_names, predict_image

STATIC = Path(__file__).parent / "static"
MAX_BYTES = 10 * 1024 * 1024  # an upload larger than this is refused (413) before it is read
IMAGE_TYPES = ("image/", "application/octet-stream")


def png_data_url(image: np.ndarray) -> str:
    """A float image (H, W) in 0..1 as a ``data:image/png;base64,...`` URL."""
    buf = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def digit_json(d: dict, names: list[str]) -> dict:
    probs = [float(p) for p in d["probabilities"]]
    return {"digit": int(d["digit"]), "label": names[int(d["digit"])], "probabilities": probs,
            "top": [{"digit": int(k), "label": names[int(k)], "probability": float(p)}
                    for k, p in d["top"]],
            "image": png_data_url(d["image"])}


def answer_json(r: dict, names: list[str]) -> dict:
    """``predict_image``'s answer as JSON: one digit's fields at the top level (None for a
    number), ``number``, every digit, and the picture the network saw."""
    digits = [digit_json(d, names) for d in r["digits"]]
    one = digits[0] if len(digits) == 1 else {"digit": None, "label": None,
                                              "probabilities": None, "top": None}
    return {**one, "image": png_data_url(r["image"]), "number": r["number"], "digits": digits}


async def read_body(request: Request, limit: int = MAX_BYTES) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the upload is {int(declared):,} bytes; the limit is "
                                 f"{limit:,} bytes (10 MB): send a smaller image")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the upload is over the limit of {limit:,} bytes (10 MB): "
                                     "send a smaller image")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request: Request) -> bytes:
    """The image of a request: its raw body (``image/*``) or the form field ``image``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (kind.startswith(IMAGE_TYPES) or kind == "multipart/form-data"):
        what = f"unsupported content type {kind!r}" if kind else "no Content-Type header"
        raise HTTPException(415, f"{what}: send the image as the body (Content-Type: image/png, "
                                 "image/jpeg, ...) or as the multipart form field 'image'")
    body = await read_body(request)
    if kind == "multipart/form-data":
        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form()
        field = form.get("image")
        if field is None or isinstance(field, str):
            raise HTTPException(400, "the form has no file field 'image'")
        body = await field.read()
    if not body:
        raise HTTPException(400, "the image is empty (0 bytes)")
    return body


def create_app(net, model_path=None, *, info: dict | None = None) -> FastAPI:
    """The app serving ``net`` (a :class:`~fastmnist.TwoLayerNet`); ``info`` adds to
    ``GET /api/model``."""
    names = class_names(net)
    # as many images read at once as there are cores: more only queue up and hold memory
    readers = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
    app = FastAPI(title="fastmnist", version=__version__,
                  summary="Read handwritten digits (or a model's classes) from images")
    model = {"file": str(model_path) if model_path else None, "sizes": list(net.sizes),
             "device": str(net.device),
             "classes": names, **{k: v for k, v in net.metadata.items()
                                  if isinstance(v, (str, int, float, bool, type(None)))},
             **(info or {})}

    @app.exception_handler(Exception)
    async def internal_error(request, exc):  # never a stack trace in an answer
        return JSONResponse({"detail": "internal error while reading the image"}, 500)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/api/model")
    async def api_model():
        return model

    @app.post("/api/predict", openapi_extra={"requestBody": {"content": {
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "image": {"type": "string", "format": "binary"}}}}}}})
    async def api_predict(request: Request):
        """Read the digit (or the number) in an image sent as the body or as form field
        ``image``."""
        data = await image_bytes(request)
        try:
            r = await anyio.to_thread.run_sync(predict_image, data, net, limiter=readers)
        except NoDigitError as exc:
            raise HTTPException(422, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return answer_json(r, names)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
