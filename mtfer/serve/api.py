"""The HTTP API: one shared Predictor behind FastAPI, safe by default.

    POST /v1/predict        one image (multipart field "file", or the raw body) -> its faces, as `mtfer predict --json`
    POST /v1/predict/batch  several images (multipart fields "files") -> one result per image, a bad one as an error
    GET  /v1/model          the model card: tasks and classes, metrics, calibration, "not sure" thresholds, lineage
    GET  /healthz           liveness, without a token
    GET  /docs              the OpenAPI documentation (FastAPI's)

Why it is built this way:

- **Bounded.** At most ``max_queue`` requests are inside the service at once (reading, decoding, detecting or
  waiting for the network); one more gets ``429 Too Many Requests`` with ``Retry-After`` at once, so a burst costs
  memory for ``max_queue`` photos, never more. Each body is read up to the app's per-photo limit and refused past
  it (413), before decoding; pixels and decoded bytes are checked from the header as everywhere else.
- **Clear errors, never a traceback.** Every error is ``{"error": "..."}`` with a 4xx status saying what to fix;
  anything unexpected is a 500 with a one-line message, the details only in the server's log.
- **Optional bearer token** (``MTFER_API_TOKEN``): when set, every /v1 route needs ``Authorization: Bearer <token>``
  (compared in constant time); /healthz stays open for load balancers.
- **One predictor** (LiteRT where the bundle has its file), loaded once at start-up; requests share it from FastAPI's
  thread pool: faces are found in parallel, and the faces of concurrent requests go through the network together
  (mtfer.serve.batching; ``batch_faces=False`` / ``mtfer serve --no-batching``: one network call per request).
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as FormFile

from mtfer.core import decoding
from mtfer.core.inference import Predictor, predictions
from mtfer.media.answers import face_json, thresholds
from mtfer.serve.batching import FaceBatcher

LOGGER = logging.getLogger("mtfer.serve")
ENV_TOKEN = "MTFER_API_TOKEN"
MAX_IMAGE_BYTES = 50 * 1024 * 1024  # per image, as the app's upload limit
MAX_BATCH = 32  # images per batch request
MAX_QUEUE = 8  # requests inside the service at once; more get 429
RETRY_AFTER_S = 1


class Busy(Exception):
    """More requests than the queue holds."""


class Gate:
    """A counter of requests inside the service: `enter` refuses past `capacity` instead of waiting."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"the queue must hold at least one request, got {capacity}")
        self.capacity, self.inside, self._lock = capacity, 0, threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            if self.inside >= self.capacity:
                raise Busy
            self.inside += 1

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self.inside -= 1


def model_card(predictor: Predictor) -> dict[str, Any]:
    """What a caller needs to know about the model answering: from its metadata, JSON-ready."""
    meta = predictor.bundle.metadata
    keys = ("title", "description", "architecture", "datasets", "protocol", "created", "metrics", "calibration")
    return {
        "model": predictor.path.name,
        "tasks": predictor.classes,
        "not_sure_thresholds": thresholds(predictor),
        "backend": predictor.backend,
        **{k: meta[k] for k in keys if k in meta},
        "lineage": meta.get("lineage", []),
    }


def create_app(
    model: str | os.PathLike | None = None,
    token: str | None = None,
    max_queue: int = MAX_QUEUE,
    max_image_bytes: int = MAX_IMAGE_BYTES,
    predictor: Predictor | None = None,
    batch_faces: bool = True,
) -> FastAPI:
    """The API for `model` (run id, bundle folder, 'default'; None: the active model). `token` defaults to
    $MTFER_API_TOKEN (empty: no token needed). `batch_faces`: concurrent requests share network calls."""
    token = token if token is not None else os.environ.get(ENV_TOKEN, "")
    predictor = predictor or Predictor(model)
    limits = thresholds(predictor)
    gate = Gate(max_queue)
    identity = {"model": predictor.path.name, "title": predictor.bundle.metadata.get("title", predictor.path.name)}
    batcher = FaceBatcher(predictor) if batch_faces else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if batcher is not None:
            batcher.close()

    app = FastAPI(
        title="mtfer",
        summary="Emotion, gender, race group and age group for every face in a photo.",
        version=str(predictor.bundle.metadata.get("format_version", "1")),
        lifespan=lifespan,
    )
    app.state.batcher = batcher

    def authorized(request: Request) -> None:
        if not token:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "a bearer token is needed: Authorization: Bearer <MTFER_API_TOKEN>")

    def predict_bytes(data: bytes) -> dict[str, Any]:
        if len(data) > max_image_bytes:
            raise HTTPException(413, f"the image is over {_size(max_image_bytes)}")
        if batcher is None:
            found = predictor.predict_image(data)
        else:
            faces = predictor.find(data)
            found = predictions(faces, batcher.probabilities(faces))
        return {**identity, "faces": [face_json(p, limits) for p in found]}

    async def read_body(request: Request) -> bytes:
        """The raw body, read in chunks and refused past the limit before it is all in memory."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_image_bytes:
                raise HTTPException(413, f"the image is over {_size(max_image_bytes)}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_upload(upload: FormFile) -> bytes:
        data = await upload.read(max_image_bytes + 1)
        if len(data) > max_image_bytes:
            raise HTTPException(413, f"{upload.filename or 'the image'} is over {_size(max_image_bytes)}")
        return data

    @app.exception_handler(Busy)
    async def busy(_: Request, __: Busy) -> JSONResponse:
        return JSONResponse(
            {"error": f"busy: {max_queue} requests are being answered; try again shortly"},
            status_code=429,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(decoding.ImageError)
    async def image_error(_: Request, exc: decoding.ImageError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)  # not an image, truncated, too many pixels

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        LOGGER.exception("request failed")
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"}, status_code=500)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", **identity, "inside": gate.inside, "capacity": max_queue}

    @app.get("/v1/model", dependencies=[Depends(authorized)])
    def model_info() -> dict[str, Any]:
        return model_card(predictor)

    @app.post("/v1/predict", dependencies=[Depends(authorized)])
    async def predict(request: Request) -> dict[str, Any]:
        """One image: multipart/form-data with the field `file`, or the image itself as the body."""
        with gate:
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                form = await request.form(max_files=1, max_fields=1)
                upload = form.get("file")
                if not isinstance(upload, FormFile):
                    raise HTTPException(422, 'multipart upload without a "file" field')
                data = await read_upload(upload)
            else:
                data = await read_body(request)
            if not data:
                raise HTTPException(400, "no image: send it as the body or as the multipart field 'file'")
            return await _in_thread(predict_bytes, data)

    @app.post("/v1/predict/batch", dependencies=[Depends(authorized)])
    async def predict_batch(files: Annotated[list[UploadFile], File(description="images")]) -> dict[str, Any]:
        """Several images as multipart fields `files`: one result per image, in order; an image that cannot be
        read is an entry with its error, and the others still go through."""
        if len(files) > MAX_BATCH:
            raise HTTPException(413, f"at most {MAX_BATCH} images per batch request, got {len(files)}")
        with gate:
            results = []
            for upload in files:
                name = upload.filename or f"image {len(results) + 1}"
                try:
                    data = await read_upload(upload)
                    results.append({"image": name, **await _in_thread(predict_bytes, data)})
                except (HTTPException, decoding.ImageError) as exc:
                    reason = exc.detail if isinstance(exc, HTTPException) else str(exc)
                    results.append({"image": name, "error": str(reason)})
            return {**identity, "results": results}

    return app


def _size(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n:,} bytes"


async def _in_thread(fn: Any, *args: Any) -> Any:
    """Runs blocking work (decoding, detection, the network) in the thread pool, keeping the event loop free."""
    return await run_in_threadpool(fn, *args)


def serve(host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> None:
    """Runs the API with uvicorn until interrupted (`mtfer serve`)."""
    import uvicorn

    app = create_app(**kwargs)
    LOGGER.info("serving %s on http://%s:%d (docs at /docs)", app.title, host, port)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


__all__ = ["ENV_TOKEN", "MAX_QUEUE", "Gate", "create_app", "model_card", "serve"]
