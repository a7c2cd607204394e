"""HTTP damage-assessment service (FastAPI). (No ``from __future__ import annotations``: FastAPI reads the
endpoint annotations at runtime.)

``create_app(predictor_factory, gate=None, max_upload_bytes=...)`` returns an app with

- ``GET /health`` -> ``{"status": "ok", "model_loaded": true, "gate": bool, "schema_version": "1.0"}``
- ``POST /assess`` (multipart form, field ``file``: one image) -> the assessment report of that image (same schema as
  ``cardd assess``, one entry in ``images``; masks as COCO RLE).

The predictor is built once, at start-up (``predictor_factory()`` runs in the app's lifespan), and calls are
serialised with a lock. An image file larger than ``max_upload_bytes`` is refused with 413, and every 413 states that
same limit (``/health`` reports it too); the request body may exceed the limit only by the multipart envelope.
A request with more than one file gets 400 (one image per request), an empty upload 400, a file that is not a
decodable image 415, each with the reason.
"""

import contextlib
import json
import threading
from typing import Callable, Optional, Sequence

from .images import DEFAULT_MAX_SIDE, ImageLoadError, load_image
from .instances import DEFAULT_REPAIR_PRIORITY
from .report import SCHEMA_VERSION, assess_image, new_report

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# Room for the multipart envelope (boundaries, part headers) on top of the file itself.
_MULTIPART_OVERHEAD = 16 * 1024

__all__ = ["create_app", "DEFAULT_MAX_UPLOAD_BYTES"]


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
    class_names: Optional[Sequence[str]] = None,
    score_threshold: float = 0.0,
    priority: Sequence[str] = DEFAULT_REPAIR_PRIORITY,
    max_side: int = DEFAULT_MAX_SIDE,
    model_info: Optional[dict] = None,
):
    """FastAPI app; ``predictor_factory()`` is called once at start-up and must return a predictor
    (callable BGR array -> ``{"instances": Instances}``)."""
    from fastapi import FastAPI, File, HTTPException, Request, UploadFile
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile as StarletteUploadFile

    state = {"predictor": None, "lock": threading.Lock()}
    info = dict(model_info or {})
    if class_names is not None:
        info.setdefault("class_names", list(class_names))
    if gate is not None:
        info.setdefault("gate", gate.describe() if hasattr(gate, "describe") else {})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["predictor"] = predictor_factory()
        yield
        state["predictor"] = None

    app = FastAPI(title="CarDD damage assessment", version=SCHEMA_VERSION, lifespan=lifespan)
    app.state.cardd = state

    @app.get("/health")
    def health():
        return {"status": "ok", "model_loaded": state["predictor"] is not None, "gate": gate is not None,
                "schema_version": SCHEMA_VERSION, "max_upload_bytes": int(max_upload_bytes)}

    def assess_file(file) -> dict:
        if state["predictor"] is None:
            raise HTTPException(status_code=503, detail="model not loaded")
        data = file.file.read(max_upload_bytes + 1)
        name = file.filename or "upload"
        if len(data) > max_upload_bytes:
            raise HTTPException(status_code=413, detail=f"{name}: {_too_large(max_upload_bytes)}")
        if not data:
            raise HTTPException(status_code=400, detail=f"{name}: empty upload")
        try:
            img = load_image(data, max_side=max_side, name=name)
        except ImageLoadError as e:
            raise HTTPException(status_code=415, detail=f"{name}: {e.reason}") from None
        with state["lock"]:
            try:
                rec, _ = assess_image(img, state["predictor"], gate, name=name, class_names=class_names,
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
        # Inference in a worker thread, so it does not block the event loop.
        return await run_in_threadpool(assess_file, file)

    # Outermost wrapper so oversized bodies are refused before multipart parsing.
    app.add_middleware(_BodyLimit, limit=int(max_upload_bytes))
    return app
