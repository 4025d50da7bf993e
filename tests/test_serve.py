"""The HTTP API (`mtfer serve`): every endpoint, the same answers as `mtfer predict --json`, hostile input, the
token, the bounded queue (429), and a real uvicorn process on loopback answering concurrent requests."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the HTTP API needs the 'serve' extra (pip install -e '.[serve]')")
from fastapi.testclient import TestClient  # noqa: E402

from mtfer.core.decoding import decode_image  # noqa: E402
from mtfer.core.inference import Predictor  # noqa: E402
from mtfer.media.answers import face_json, thresholds  # noqa: E402
from mtfer.serve import api  # noqa: E402
from mtfer.serve.batching import FaceBatcher  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()  # the shipped model


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> TestClient:
    return TestClient(api.create_app(predictor=predictor, token=""))


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> list[bytes]:
    """JPEGs of UTKFace chips with a margin, in which the shipped detector finds a face."""
    chips = sorted((shared_data / "utkface" / "UTKFace").glob("*.jpg"))[::500][:6]
    out = []
    for chip in chips:
        image = cv2.copyMakeBorder(cv2.imread(str(chip)), 80, 80, 80, 80, cv2.BORDER_REPLICATE)
        out.append(cv2.imencode(".jpg", image)[1].tobytes())
    return out


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (a decompression bomb's header)."""
    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + head
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(head)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_every_endpoint_answers_as_mtfer_predict_json(client, predictor, photos):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == predictor.path.name
    card = client.get("/v1/model").json()
    assert card["tasks"] == predictor.classes and card["not_sure_thresholds"] == thresholds(predictor)
    assert {"metrics", "calibration", "lineage"} <= set(card)
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/v1/predict", "/v1/predict/batch", "/v1/model"}

    expected = [face_json(p, thresholds(predictor)) for p in predictor.predict_image(decode_image(photos[0]))]
    raw = client.post("/v1/predict", content=photos[0], headers={"content-type": "image/jpeg"})
    form = client.post("/v1/predict", files={"file": ("face.jpg", photos[0], "image/jpeg")})
    assert raw.status_code == form.status_code == 200
    for response in (raw, form):
        body = response.json()
        assert body["model"] == predictor.path.name and body["faces"] == json.loads(json.dumps(expected))
        assert all(set(face["answer"]) == set(predictor.tasks) for face in body["faces"])

    batch = client.post(
        "/v1/predict/batch",
        files=[("files", ("a.jpg", photos[0])), ("files", ("notes.txt", b"hello")), ("files", ("b.jpg", photos[1]))],
    )
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert [r["image"] for r in results] == ["a.jpg", "notes.txt", "b.jpg"]
    assert results[0]["faces"] == body["faces"] and "not an image" in results[1]["error"] and results[2]["faces"]


def test_hostile_input_gets_a_clear_4xx_and_no_traceback(predictor, photos):
    client = TestClient(api.create_app(predictor=predictor, token="", max_image_bytes=200_000))
    big = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8))[1].tobytes()
    cases = {
        "not an image": (b"GIF89a but not really" * 3, 400),
        "truncated": (photos[0][:400], 400),
        "empty": (b"", 400),
        "too many bytes": (big, 413),
        "too many pixels": (_png_claiming(200_000, 200_000), 400),
    }
    for name, (data, status) in cases.items():
        response = client.post("/v1/predict", content=data, headers={"content-type": "application/octet-stream"})
        assert response.status_code == status, (name, response.text)
        assert set(response.json()) == {"error"} and "Traceback" not in response.text, name
    too_many = [("files", (f"{i}.jpg", photos[0])) for i in range(api.MAX_BATCH + 1)]
    assert client.post("/v1/predict/batch", files=too_many).status_code == 413
    assert client.post("/v1/predict", files={"other": ("x.jpg", photos[0])}).status_code == 422
    assert client.get("/v1/nowhere").status_code == 404


def test_a_token_guards_every_v1_route_but_not_the_health_check(predictor, photos):
    client = TestClient(api.create_app(predictor=predictor, token="s3cret"))
    assert client.get("/healthz").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        assert client.get("/v1/model", headers=headers).status_code == 401
        assert client.post("/v1/predict", content=photos[0], headers=headers).status_code == 401
    good = {"Authorization": "Bearer s3cret"}
    assert client.get("/v1/model", headers=good).status_code == 200
    assert client.post("/v1/predict", content=photos[0], headers=good).status_code == 200


def test_past_the_queue_a_request_gets_429_with_retry_after(predictor, photos):
    release, inside = threading.Event(), threading.Event()

    class Slow:  # the shipped model, held up inside the service until the test lets it go
        path, bundle, classes, tasks, backend = (
            predictor.path,
            predictor.bundle,
            predictor.classes,
            predictor.tasks,
            "x",
        )

        def find(self, image):
            inside.set()
            release.wait(60)
            return predictor.find(image)

        predict_groups = predictor.predict_groups

    client = TestClient(api.create_app(predictor=Slow(), token="", max_queue=1))  # type: ignore[arg-type]
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/v1/predict", content=photos[0])
        assert inside.wait(60)  # the one place in the queue is taken
        busy = client.post("/v1/predict", content=photos[0])
        assert busy.status_code == 429 and busy.headers["retry-after"] == str(api.RETRY_AFTER_S)
        assert "busy" in busy.json()["error"]
        release.set()
        assert first.result(60).status_code == 200
    assert client.post("/v1/predict", content=photos[0]).status_code == 200  # the place is free again
    with pytest.raises(ValueError, match="at least one"):
        api.Gate(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, data: bytes, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "image/jpeg", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_real_server_on_loopback_answers_concurrent_requests_as_one_at_a_time(photos, tmp_path):
    port = _free_port()
    env = {**os.environ, "MTFER_API_TOKEN": "t0ken", "MTFER_RUNS": str(tmp_path / "runs")}
    command = [sys.executable, "-m", "mtfer.cli", "serve", "--model", "default", "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
                    if json.loads(response.read())["status"] == "ok":
                        break
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer within 120 s"
                time.sleep(0.3)
        one_by_one = [_post(f"{url}/v1/predict", p, "t0ken") for p in photos]
        with ThreadPoolExecutor(len(photos)) as pool:
            together = list(pool.map(lambda p: _post(f"{url}/v1/predict", p, "t0ken"), photos))
        assert [s for s, _ in one_by_one] == [200] * len(photos)
        assert together == one_by_one  # the same faces, probabilities and answers, in any interleaving
        assert _post(f"{url}/v1/predict", photos[0])[0] == 401  # no token
        status, body = _post(f"{url}/v1/predict", b"\x00" * 100, "t0ken")
        assert status == 400 and set(body) == {"error"}
    finally:
        process.terminate()
        process.wait(30)


def test_faces_of_concurrent_requests_share_network_calls_and_errors_reach_every_caller(predictor, photos):
    """While one batch is in the network, requests that arrive wait and go through together in the next call, each
    getting its own faces' answers; a failing network call fails every request in it and the next call works."""
    found = [predictor.find(p) for p in photos[:4]]
    alone = [predictor.predict_groups([f])[0] for f in found]
    in_network, release = threading.Event(), threading.Event()
    calls: list[int] = []
    fail = [False]

    class Held:  # the shipped model's network, held at its first call until three more requests wait
        def predict_groups(self, groups):
            calls.append(len(groups))
            if len(calls) == 1:
                in_network.set()
                assert release.wait(60)
            if fail[0]:
                raise RuntimeError("the network failed")
            return predictor.predict_groups(groups)

    batcher = FaceBatcher(Held())  # type: ignore[arg-type]
    try:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(batcher.probabilities, found[0])
            assert in_network.wait(60)
            rest = [pool.submit(batcher.probabilities, f) for f in found[1:]]
            while batcher._queue.qsize() < 3:  # all three wait for the network
                time.sleep(0.01)
            release.set()
            answers = [first.result(60)] + [r.result(60) for r in rest]
        assert calls == [1, 3] and (batcher.calls, batcher.requests) == (2, 4)
        for got, want in zip(answers, alone, strict=True):
            for a, b in zip(got, want, strict=True):
                for task in a:
                    np.testing.assert_allclose(list(a[task].values()), list(b[task].values()), atol=1e-5)
        assert batcher.probabilities([]) == []  # no face: no network call
        fail[0] = True
        with pytest.raises(RuntimeError, match="the network failed"):
            batcher.probabilities(found[0])
        fail[0] = False
        assert len(batcher.probabilities(found[0])) == len(found[0])
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.probabilities(found[0])
