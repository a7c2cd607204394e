"""The HTTP service, started for real (uvicorn in a thread on 127.0.0.1, free port) and called over HTTP."""
import contextlib
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


@contextlib.contextmanager
def _serving(app):
    """Run ``app`` with uvicorn in a thread on a free 127.0.0.1 port; yields its base URL."""
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        th.join(timeout=10)


@pytest.fixture(scope="module")
def server():
    made = []

    def factory():
        made.append(FakePredictor())
        return made[-1]

    with _serving(create_app(factory, gate=None, max_upload_bytes=MAX_UPLOAD)) as url:
        yield url, made


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


class BlockingPredictor(FakePredictor):
    """A FakePredictor that waits for ``release`` (and says when it has started) before answering."""

    def __init__(self, started, release):
        super().__init__()
        self.started, self.release = started, release

    def __call__(self, image_bgr):
        self.started.release()
        assert self.release.wait(30), "test never released the predictor"
        return super().__call__(image_bgr)


def _post_png(url, name="car.png", image=None, timeout=60):
    return httpx.post(url + "/assess", files={"file": (name, _png_bytes(rgb_image() if image is None else image),
                                                       "image/png")}, timeout=timeout)


def _in_threads(fns):
    """Start each function in a thread; returns a function that joins them and gives their results."""
    results = [None] * len(fns)

    def run(i):
        results[i] = fns[i]()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(fns))]
    for t in threads:
        t.start()

    def join():
        for t in threads:
            t.join(60)
        return results

    return join


def test_full_queue_answers_503_with_retry_after_at_once():
    started, release = threading.Semaphore(0), threading.Event()
    app = create_app(lambda: BlockingPredictor(started, release), workers=1, queue_size=1, max_upload_bytes=MAX_UPLOAD)
    with _serving(app) as url:
        first = _in_threads([lambda: _post_png(url, "a.png")])
        assert started.acquire(timeout=30)  # a.png holds the only worker
        second = _in_threads([lambda: _post_png(url, "b.png")])
        deadline = time.time() + 30
        while httpx.get(url + "/health").json()["workers"]["queue_depth"] < 1 and time.time() < deadline:
            time.sleep(0.02)
        w = httpx.get(url + "/health").json()["workers"]
        assert (w["workers"], w["queue_size"], w["queue_depth"], w["in_flight"]) == (1, 1, 1, 1)
        t0 = time.perf_counter()
        r = _post_png(url, "c.png", timeout=10)
        assert time.perf_counter() - t0 < 5  # refused, not left waiting
        assert r.status_code == 503 and "busy" in r.json()["detail"], r.text
        assert int(r.headers["Retry-After"]) >= 1
        release.set()
        (ra,), (rb,) = first(), second()
        assert ra.status_code == 200 and rb.status_code == 200
        w = httpx.get(url + "/health").json()["workers"]
        assert (w["completed"], w["rejected"], w["queue_depth"], w["in_flight"]) == (2, 1, 0, 0)
        assert _post_png(url, "d.png").status_code == 200  # a free slot again


def test_workers_run_requests_in_parallel():
    """Two workers: two requests are inside the model at the same time (one worker would deadlock the barrier)."""
    barrier = threading.Barrier(2, timeout=20)

    class MeetingPredictor(FakePredictor):
        def __call__(self, image_bgr):
            barrier.wait()
            return super().__call__(image_bgr)

    made = []

    def factory():
        made.append(MeetingPredictor())
        return made[-1]

    with _serving(create_app(factory, workers=2, queue_size=0, max_upload_bytes=MAX_UPLOAD)) as url:
        results = _in_threads([lambda: _post_png(url, "a.png"), lambda: _post_png(url, "b.png")])()
        assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
        assert len(made) == 2 and [p.calls for p in made] == [1, 1]  # one model per worker, each used once
        assert httpx.get(url + "/health").json()["workers"]["workers"] == 2


def test_crash_in_one_request_is_500_and_the_service_keeps_serving():
    class CrashOnWidePredictor(FakePredictor):
        def __call__(self, image_bgr):
            if image_bgr.shape[1] > 100:
                raise RuntimeError("simulated failure inside the model")
            return super().__call__(image_bgr)

    with _serving(create_app(CrashOnWidePredictor, workers=1, queue_size=2, max_upload_bytes=MAX_UPLOAD)) as url:
        r = _post_png(url, "wide.png", image=rgb_image(h=20, w=120))
        assert r.status_code == 500, r.text
        assert "wide.png" in r.json()["detail"] and "simulated failure" in r.json()["detail"]
        for i in range(3):
            assert _post_png(url, f"ok{i}.png").status_code == 200
        h = httpx.get(url + "/health").json()
        assert h["status"] == "ok" and h["workers"]["workers_alive"] == 1


def test_health_reports_latency_percentiles():
    class SlowPredictor(FakePredictor):
        def __call__(self, image_bgr):
            time.sleep(0.02)
            return super().__call__(image_bgr)

    with _serving(create_app(SlowPredictor, workers=1, max_upload_bytes=MAX_UPLOAD)) as url:
        lat = httpx.get(url + "/health").json()["workers"]["latency"]
        assert lat["window"] == 0 and lat["total_p50_ms"] is None
        for i in range(4):
            assert _post_png(url, f"{i}.png").status_code == 200
        lat = httpx.get(url + "/health").json()["workers"]["latency"]
    assert lat["window"] == 4
    assert 20.0 <= lat["service_p50_ms"] <= lat["service_p95_ms"] <= lat["total_p95_ms"]
    assert lat["service_p50_ms"] <= lat["total_p50_ms"]


def test_request_timeout_answers_504():
    started, release = threading.Semaphore(0), threading.Event()
    app = create_app(lambda: BlockingPredictor(started, release), workers=1, queue_size=1,
                     request_timeout_s=0.5, max_upload_bytes=MAX_UPLOAD)
    with _serving(app) as url:
        try:
            r = _post_png(url, "slow.png")
            assert r.status_code == 504 and "slow.png" in r.json()["detail"], r.text
        finally:
            release.set()  # before shutting down, which waits for the worker


@pytest.mark.parametrize("flag,value", [("--workers", "0"), ("--queue-size", "-1"), ("--request-timeout", "0")])
def test_serve_rejects_bad_pool_settings(flag, value, capsys):
    import cardd_cli

    with pytest.raises(SystemExit) as e:
        cardd_cli.main(["serve", "--config-file", "x.yaml", flag, value])
    assert e.value.code == 2 and flag in capsys.readouterr().err


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
    """`cardd serve` as a real process with a 6-class parts model and two workers: health, one assessment labelled
    with the checkpoint's names, then shut down."""
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
                             "--workers", "2", "--queue-size", "3",
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
        health = httpx.get(url + "/health", timeout=5).json()
        assert health["max_upload_bytes"] == 1024 * 1024
        w = health["workers"]
        assert (w["workers"], w["queue_size"], w["completed"]) == (2, 3, 1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
