"""HTTP damage-assessment service (FastAPI). (No ``from __future__ import annotations``: FastAPI reads the
endpoint annotations at runtime.)

``create_app(predictor_factory, gate=None, max_upload_bytes=..., workers=1, queue_size=8, ...)`` returns an app with

- ``GET /health`` -> ``{"status": "ok", "model_loaded": true, "gate": bool, "schema_version": "1.0",
  "max_upload_bytes": int, "workers": {...}}``; ``workers`` holds the worker count, queue depth and size, jobs in
  flight, completed / failed / rejected counts and p50/p95 latency (ms) of the recent requests
  (:meth:`cardd_d2.assessment.workers.InferencePool.stats`).
- ``POST /assess`` (multipart form, field ``file``: one image) -> the assessment report of that image (same schema as
  ``cardd assess``, one entry in ``images``; masks as COCO RLE).

Inference runs on ``workers`` threads, each with its own predictor (``predictor_factory()`` runs once per worker in
the app's lifespan). At most ``queue_size`` requests wait for a worker; one more gets 503 with a ``Retry-After``
header at once, and a request still unanswered after ``request_timeout_s`` gets 504 (a queued one is then dropped).
An exception while assessing one image answers that request with 500 and the worker serves the next.
An image file larger than ``max_upload_bytes`` is refused with 413, and every 413 states that same limit (``/health``
reports it too); the request body may exceed the limit only by the multipart envelope. A request with more than one
file gets 400 (one image per request), an empty upload 400, a file that is not a decodable image 415, each with the
reason.
"""

import asyncio
import contextlib
import json
from typing import Callable, Optional, Sequence

from .images import DEFAULT_MAX_SIDE, ImageLoadError, load_image
from .instances import DEFAULT_REPAIR_PRIORITY
from .report import SCHEMA_VERSION, assess_image, new_report
from .workers import InferencePool, PoolFull

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_QUEUE_SIZE = 8
DEFAULT_REQUEST_TIMEOUT_S = 300.0
# Room for the multipart envelope (boundaries, part headers) on top of the file itself.
_MULTIPART_OVERHEAD = 16 * 1024

__all__ = ["create_app", "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_QUEUE_SIZE", "DEFAULT_REQUEST_TIMEOUT_S"]


def _too_large(limit: int) -> str:
    return f"upload larger than the limit of {limit} bytes ({limit / 2**20:.1f} MB) per image"


class _BodyLimit:
    """ASGI middleware: 413 when the request body is (announced or turns out to be) larger than ``limit`` bytes."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = int(limit)

    async def _reject(self, send, detail: str):
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.exceptions import HTTPException

        limit = self.limit + _MULTIPART_OVERHEAD
        detail = _too_large(self.limit)
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    if int(v) > limit:
                        return await self._reject(send, detail)
                except ValueError:
                    pass
        state = {"n": 0, "started": False}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["n"] += len(message.get("body", b""))
                if state["n"] > limit:
                    # An HTTPException passes through FastAPI's body parsing unchanged and becomes a 413 response.
                    raise HTTPException(status_code=413, detail=detail)
            return message

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as e:
            if e.status_code != 413 or state["started"]:
                raise
            await self._reject(send, detail)


def create_app(
    predictor_factory: Callable[[], Callable],
    gate=None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    *,
    workers: int = 1,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    class_names: Optional[Sequence[str]] = None,
    score_threshold: float = 0.0,
    priority: Sequence[str] = DEFAULT_REPAIR_PRIORITY,
    max_side: int = DEFAULT_MAX_SIDE,
    model_info: Optional[dict] = None,
):
    """FastAPI app; ``predictor_factory()`` is called once per worker at start-up and must return a predictor
    (callable BGR array -> ``{"instances": Instances}``)."""
    from fastapi import FastAPI, File, HTTPException, Request, UploadFile
    from fastapi.responses import JSONResponse
    from starlette.datastructures import UploadFile as StarletteUploadFile

    pool = InferencePool(predictor_factory, workers=workers, queue_size=queue_size)
    info = dict(model_info or {})
    if class_names is not None:
        info.setdefault("class_names", list(class_names))
    if gate is not None:
        info.setdefault("gate", gate.describe() if hasattr(gate, "describe") else {})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        pool.start()
        yield
        pool.close()

    app = FastAPI(title="CarDD damage assessment", version=SCHEMA_VERSION, lifespan=lifespan)
    app.state.cardd = pool

    @app.get("/health")
    def health():
        return {"status": "ok", "model_loaded": pool.started, "gate": gate is not None,
                "schema_version": SCHEMA_VERSION, "max_upload_bytes": int(max_upload_bytes), "workers": pool.stats()}

    def assess_bytes(predictor, data: bytes, name: str) -> dict:
        # Runs on a worker thread: decoding is inference work too, so it is bounded by the same queue.
        try:
            img = load_image(data, max_side=max_side, name=name)
        except ImageLoadError as e:
            raise HTTPException(status_code=415, detail=f"{name}: {e.reason}") from None
        try:
            rec, _ = assess_image(img, predictor, gate, name=name, class_names=class_names,
                                  score_threshold=score_threshold, priority=priority)
        except Exception as e:  # noqa: BLE001
            raise HTTPException(status_code=500,
                                detail=f"{name}: processing failed: {type(e).__name__}: {e}") from None
        return new_report([rec], info, priority, score_threshold, rec["time_s"])

    @app.post("/assess")
    async def assess_upload(request: Request, file: UploadFile = File(..., description="one image (JPEG, PNG, ...)")):
        # FastAPI would keep one of several files silently: count them all.
        form = await request.form()
        files = [v for _, v in form.multi_items() if isinstance(v, StarletteUploadFile)]
        if len(files) > 1:
            names = ", ".join(f.filename or "?" for f in files)
            raise HTTPException(status_code=400, detail=f"one image per request; got {len(files)} files ({names})")
        if not pool.started:
            raise HTTPException(status_code=503, detail="model not loaded")
        name = file.filename or "upload"
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(status_code=413, detail=f"{name}: {_too_large(max_upload_bytes)}")
        if not data:
            raise HTTPException(status_code=400, detail=f"{name}: empty upload")
        try:
            job = pool.submit(assess_bytes, data, name)
        except PoolFull as e:
            return JSONResponse(status_code=503, content={"detail": str(e)},
                                headers={"Retry-After": str(e.retry_after_s)})
        try:
            # Cancelling the wrapper (timeout, client gone) cancels the job if no worker has started it yet.
            return await asyncio.wait_for(asyncio.wrap_future(job), timeout=request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(status_code=504, detail=f"{name}: no result within {request_timeout_s:g} s") from None
        except HTTPException:
            raise
        except Exception as e:  # noqa: BLE001  (anything the worker raised outside assess_image)
            raise HTTPException(status_code=500,
                                detail=f"{name}: processing failed: {type(e).__name__}: {e}") from None

    # Outermost wrapper so oversized bodies are refused before multipart parsing.
    app.add_middleware(_BodyLimit, limit=int(max_upload_bytes))
    return app
