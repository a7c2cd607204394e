"""The HTTP service, started for real (uvicorn in a thread on 127.0.0.1, free port) and called over HTTP."""
import io
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from assessment_helpers import FakePredictor, constant_gate, rgb_image

from cardd_d2.assessment import validate_report
from cardd_d2.assessment.service import create_app

MAX_UPLOAD = 64 * 1024


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png_bytes(arr):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server():
    import uvicorn

    made = []

    def factory():
        made.append(FakePredictor())
        return made[-1]

    app = create_app(factory, gate=None, max_upload_bytes=MAX_UPLOAD)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", made
    finally:
        srv.should_exit = True
        th.join(timeout=10)


def test_health_and_model_loaded_once(server):
    url, made = server
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.get("/health")
        assert r.status_code == 200 and r.json()["model_loaded"] is True and r.json()["schema_version"] == "1.0"
        for _ in range(2):
            r = c.post("/assess", files={"file": ("car.png", _png_bytes(rgb_image()), "image/png")})
            assert r.status_code == 200, r.text
    assert len(made) == 1 and made[0].calls == 2  # built at start-up, reused by every request


def test_assess_returns_schema_valid_report(server):
    url, _ = server
    gray16 = np.full((30, 40), 40000, np.uint16)
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/assess", files={"file": ("deep.png", _png_bytes(gray16), "image/png")})
    assert r.status_code == 200, r.text
    rep = r.json()
    validate_report(rep)
    (img,) = rep["images"]
    assert img["status"] == "ok" and img["file"] == "deep.png" and (img["width"], img["height"]) == (40, 30)
    assert img["instances"][0]["class"] == "crack" and "mask" in img["instances"][0]
    assert any("16-bit" in w for w in img["warnings"])


def test_bad_uploads_get_clear_4xx(server):
    url, made = server
    calls = made[0].calls
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/assess", files={"file": ("notes.jpg", b"hello, not an image", "image/jpeg")})
        assert r.status_code == 415 and "notes.jpg" in r.json()["detail"] and "not an image" in r.json()["detail"]
        r = c.post("/assess", files={"file": ("empty.png", b"", "image/png")})
        assert r.status_code == 400 and "empty" in r.json()["detail"]
        r = c.post("/assess", files={"file": ("cut.png", _png_bytes(rgb_image())[:200], "image/png")})
        assert r.status_code == 415 and "cut.png" in r.json()["detail"]
        r = c.post("/assess", data={"x": "1"})
        assert r.status_code == 422  # no file field
        # too large: just over the file limit (checked by the endpoint), far over (refused from Content-Length) ...
        limit = f"limit of {MAX_UPLOAD} bytes"  # the same number in every refusal and in /health
        assert c.get("/health").json()["max_upload_bytes"] == MAX_UPLOAD
        for extra in (100, MAX_UPLOAD):
            big = b"\xff\xd8\xff" + bytes(MAX_UPLOAD + extra)
            r = c.post("/assess", files={"file": ("big.jpg", big, "image/jpeg")})
            assert r.status_code == 413 and limit in r.json()["detail"], r.text
        # ... and streamed without Content-Length (chunked)
        boundary = "cardd-test-boundary"

        def body():
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.jpg\"\r\n"
                   "Content-Type: image/jpeg\r\n\r\n").encode()
            for _ in range(8):
                yield bytes(MAX_UPLOAD // 4)
            yield f"\r\n--{boundary}--\r\n".encode()

        r = c.post("/assess", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413 and limit in r.json()["detail"], r.text
        # two files: refused, not one of them silently dropped
        png = _png_bytes(rgb_image())
        for files in ([("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))],
                      [("file", ("a.png", png, "image/png")), ("other", ("b.png", png, "image/png"))]):
            r = c.post("/assess", files=files)
            assert r.status_code == 400 and "one image per request" in r.json()["detail"], r.text
            assert "a.png" in r.json()["detail"] and "b.png" in r.json()["detail"]
        assert c.get("/health").status_code == 200  # still serving
    assert made[0].calls == calls  # none of them reached the model


def test_gate_in_service():
    from fastapi.testclient import TestClient  # in-process: only checks the gate wiring

    pred = FakePredictor()
    app = create_app(lambda: pred, gate=constant_gate(0.01), max_upload_bytes=MAX_UPLOAD)
    with TestClient(app) as c:
        assert c.get("/health").json()["gate"] is True
        r = c.post("/assess", files={"file": ("x.png", _png_bytes(rgb_image()), "image/png")})
    assert r.status_code == 200 and r.json()["images"][0]["status"] == "discarded" and pred.calls == 0
    validate_report(r.json())


def test_cardd_serve_subprocess(tiny_config_file, save_tiny_weights, tmp_path):
    """`cardd serve` as a real process with a 6-class parts model: health, one assessment labelled with the
    checkpoint's names, then shut down."""
    from assessment_helpers import PARTS

    weights = save_tiny_weights(PARTS, "parts.pth")
    import os
    import signal
    import subprocess
    import sys

    port = _free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "cardd_cli", "serve", "--config-file", tiny_config_file,
                             "--host", "127.0.0.1", "--port", str(port), "--max-upload-mb", "1",
                             "--confidence-threshold", "0.0", "MODEL.WEIGHTS", weights],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        url = f"http://127.0.0.1:{port}"
        deadline, up = time.time() + 120, False
        while time.time() < deadline and proc.poll() is None:
            try:
                up = httpx.get(url + "/health", timeout=2).json()["model_loaded"]
                break
            except (httpx.HTTPError, ValueError):
                time.sleep(0.3)
        assert up, open(tmp_path / "serve.log").read()[-3000:]
        r = httpx.post(url + "/assess", files={"file": ("c.png", _png_bytes(rgb_image()), "image/png")}, timeout=60)
        assert r.status_code == 200, r.text
        validate_report(r.json())
        assert r.json()["model"]["config_file"] == tiny_config_file and r.json()["model"]["class_names"] == PARTS
        found = {d["class"] for d in r.json()["images"][0]["instances"]}
        assert found and found <= set(PARTS)
        assert httpx.get(url + "/health", timeout=5).json()["max_upload_bytes"] == 1024 * 1024
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
