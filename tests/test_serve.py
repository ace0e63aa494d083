"""The HTTP service: API behaviour, limits, malformed input (never a 500) and concurrency."""

from __future__ import annotations

import copy
import io
import json
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _tiny import tiny_recipe

pytest.importorskip("fastapi")
# starlette's TestClient prefers httpx2 and warns that plain httpx is deprecated.
pytest.importorskip("httpx2")

import httpx2
from fastapi.testclient import TestClient

from conftest import media_file, vtest_excerpt
from protoskel.data.readers import write_generic_npz
from protoskel.data.sequence import SkeletonSequence
from protoskel.data.store import open_store
from protoskel.data.synthetic import write_synthetic_store
from protoskel.errors import ConfigError
from protoskel.inference import Predictor
from protoskel.serve import create_app
from protoskel.training.config import config_from_dict
from protoskel.training.trainer import train

TINY = tiny_recipe()
PROTO = {"head": "prototype", "head_kwargs": {"window": 2, "proto_dim": 8}}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny linear and prototype checkpoints trained on the synthetic set, plus sample clips."""
    root = tmp_path_factory.mktemp("serve")
    store = write_synthetic_store(root / "store", n_train_per_class=4, n_val_per_class=2)
    out: dict[str, Path] = {"store": store}
    for name, model in (("linear", {}), ("prototype", PROTO)):
        cfg = copy.deepcopy(TINY)
        cfg["model"].update(model)
        train(config_from_dict(cfg), store, root / name, progress=False)
        out[name] = root / name / "last.pt"
    out["clip"] = write_generic_npz(open_store(store).split("val").get(0), root / "clip.npz")
    return out


@pytest.fixture(scope="module")
def client(models: dict[str, Path]) -> Iterator[TestClient]:
    """The service for the linear model (500s come back as responses, not exceptions)."""
    with TestClient(create_app(models["linear"]), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def proto_client(models: dict[str, Path]) -> Iterator[TestClient]:
    """The service for the prototype model."""
    with TestClient(create_app(models["prototype"]), raise_server_exceptions=False) as c:
        yield c


def _upload(client: TestClient, path: str, name: str, data: bytes, **form: str) -> Any:
    return client.post(path, files={"file": (name, io.BytesIO(data))}, data=form or None)


def _npz(tmp_path: Path, keypoints: np.ndarray, layout: str | None = "kinect-v1-20") -> bytes:
    arrays: dict[str, Any] = {"keypoints": keypoints.astype(np.float32)}
    if layout is not None:
        arrays["layout"] = np.array(layout)
    p = tmp_path / "c.npz"
    np.savez(p, **arrays)
    return p.read_bytes()


def _clip(models: dict[str, Path]) -> SkeletonSequence:
    return open_store(models["store"]).split("val").get(0)


# ------------------------------------------------------------------------------ happy paths
def test_health_and_models(client: TestClient, models: dict[str, Path]) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["model"] == "linear"
    body = client.get("/models").json()
    m = body["models"][0]
    assert m["classes"] == open_store(models["store"]).classes
    assert m["layout"] == "kinect-v1-20" and m["stream"] == "joint"
    assert m["invariance"] is None and m["prototypes"] is False and m["num_frames"] == 16
    assert body["limits"]["max_frames"] == 5000 and body["limits"]["max_upload_mb"] == 50
    assert "kinect-v1-20" in body["limits"]["layouts"]


def test_predict_npz_upload_matches_the_predictor(
    client: TestClient, models: dict[str, Path]
) -> None:
    r = _upload(client, "/predict", "clip.npz", models["clip"].read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    preds = body["predictions"]
    assert len(preds) == 5
    probs = [p["prob"] for p in preds]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    direct = Predictor.from_checkpoint(models["linear"]).predict(_clip(models), top_k=5)
    assert [p["label"] for p in preds] == [p["label"] for p in direct["predictions"]]
    assert abs(preds[0]["prob"] - direct["predictions"][0]["prob"]) < 1e-6
    assert body["input"] == {
        "name": "clip.npz",
        "layout": "kinect-v1-20",
        "frames": _clip(models).num_frames,
        "persons": 1,
        "coords": 3,
        "fps": None,
        "model_layout": "kinect-v1-20",
    }
    sk = body["skeleton"]
    assert len(sk["persons"]) == 1 and len(sk["persons"][0]) == sk["frames"]
    frame = sk["persons"][0][0]
    assert len(frame) == 20 and all(len(p) == 2 for p in frame if p is not None)
    assert len(sk["bones"]) == 19 and sk["joints"][0] == "hip_center"


def test_predict_json_body_same_as_upload(client: TestClient, models: dict[str, Path]) -> None:
    clip = _clip(models)
    up = _upload(client, "/predict", "clip.npz", models["clip"].read_bytes()).json()
    for kp in (clip.keypoints[0].tolist(), clip.keypoints.tolist()):  # (T,V,C) and (M,T,V,C)
        r = client.post("/predict", json={"keypoints": kp, "layout": "kinect-v1-20"})
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        assert [p["label"] for p in got] == [p["label"] for p in up["predictions"]]
        assert abs(got[0]["prob"] - up["predictions"][0]["prob"]) < 1e-6
    r = client.post(
        "/predict?top_k=2", json={"keypoints": clip.keypoints.tolist(), "layout": "kinect-v1-20"}
    )
    assert len(r.json()["predictions"]) == 2


def test_layout_form_field_for_files_that_do_not_name_one(
    client: TestClient, models: dict[str, Path], tmp_path: Path
) -> None:
    data = _npz(tmp_path, _clip(models).keypoints, layout=None)
    r = _upload(client, "/predict", "c.npz", data)
    assert r.status_code == 422 and "layout" in r.json()["detail"]
    r = _upload(client, "/predict", "c.npz", data, layout="kinect-v1-20")
    assert r.status_code == 200, r.text
    r = _upload(client, "/predict", "c.npz", data, layout="../../etc/passwd.yaml")
    assert r.status_code == 422 and "built-in" in r.json()["detail"]


def test_explain_prototype_model(proto_client: TestClient, models: dict[str, Path]) -> None:
    r = _upload(proto_client, "/explain", "clip.npz", models["clip"].read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    ex = body["explanation"]
    assert ex["predictions"] == body["predictions"] and ex["model"]["head"] == "prototype"
    protos = ex["prototypes"]
    assert protos and protos[0]["rank"] == 1
    p = protos[0]
    assert p["part"] in ("torso", "left_arm", "right_arm", "left_leg", "right_leg")
    assert p["contribution"] > 0 and p["similarity"] > 0
    assert p["source"]["clip_id"].startswith("syn_")
    assert body["report_url"].startswith("/reports/") and body["report_url"].endswith("index.html")
    html = proto_client.get(body["report_url"])
    assert html.status_code == 200 and "<html" in html.text
    gif = proto_client.get(body["files"]["gif"])
    assert gif.status_code == 200 and gif.content[:6] in (b"GIF87a", b"GIF89a")
    png = proto_client.get(body["files"]["prototype_1"])
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


def test_explain_linear_model_gives_importance(client: TestClient, models: dict[str, Path]) -> None:
    clip = _clip(models)
    r = client.post(
        "/explain?top_k=3", json={"keypoints": clip.keypoints.tolist(), "layout": "kinect-v1-20"}
    )
    assert r.status_code == 200, r.text
    ex = r.json()["explanation"]
    assert ex["prototypes"] == [] and len(ex["predictions"]) == 3
    imp = np.asarray(ex["importance"]["map"])
    assert imp.shape == (16, 20) and imp.max() == pytest.approx(1.0)


# ---------------------------------------------------------------------------- bad input
KINECT = "kinect-v1-20"


def _file(name: str, data: bytes) -> dict[str, Any]:
    return {"files": {"file": (name, data)}}


def _raw(body: bytes, ctype: str = "application/json") -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": ctype}}


def _json(kp: Any, layout: Any = KINECT, **extra: Any) -> dict[str, Any]:
    return {"json": {"keypoints": kp, "layout": layout, **extra}}


class _ObjectArray:
    """Pickles to an object array whose data is a short list: numpy 2 crashes building it."""

    def __reduce__(self) -> tuple:
        reconstruct = np.zeros(1).__reduce__()[0]
        return reconstruct, (np.ndarray, (0,), b"b"), (1, (10**6,), np.dtype("O"), False, [1, 2])


def _bad_cases(
    tmp_path: Path, clip: SkeletonSequence
) -> list[tuple[str, dict[str, Any], int, str]]:
    """(what, request keywords, expected status, words the message must contain)."""
    nan = clip.keypoints.copy()
    nan[0, 3, 5, 1] = np.nan
    seven = _npz(tmp_path, clip.keypoints[:, :, :7])
    # Python's json writes NaN, as some clients do; the clip must still be refused.
    frame = [[float("nan"), 1.0]] + [[0.0, 0.0]] * 12
    nan_body = json.dumps({"keypoints": [frame], "layout": "penn-13"}).encode()
    return [
        ("garbage bytes", _file("g.npz", b"\x00\x01garbage"), 422, "NPZ"),
        ("empty file", _file("e.npz", b""), 422, "empty"),
        ("wrong joint count", _file("w.npz", seven), 422, "joints"),
        ("NaN", _file("n.npz", _npz(tmp_path, nan)), 422, "non-finite"),
        ("unsupported type", _file("x.exe", b"MZ\x90\x00"), 415, "unsupported"),
        ("bad CSV", _file("c.csv", b"a,b\n1,2\n"), 422, "frame,person"),
        ("bad JSON clip", _file("j.json", b"{not json"), 422, "JSON"),
        (
            "crashing pickle",
            _file("o.pkl", pickle.dumps([{"keypoint": _ObjectArray()}])),
            422,
            "refused",
        ),
        (
            "malformed multipart",
            _raw(b"garbage", "multipart/form-data; boundary=xyz"),
            422,
            "multipart",
        ),
        (
            "two files",
            {"files": [("file", ("a.npz", b"1")), ("file", ("b.npz", b"2"))]},
            422,
            "files",
        ),
        ("no file field", {"data": {"layout": KINECT}, "files": {"x": ("", b"")}}, 422, "file"),
        ("invalid JSON body", _raw(b"{"), 422, "JSON"),
        ("JSON not an object", {"json": [1, 2, 3]}, 422, "object"),
        ("JSON without layout", {"json": {"keypoints": [[[0, 0, 0]]]}}, 422, "layout"),
        ("JSON layout path", _json([[[0, 0, 0]]], "/etc/x.yaml"), 422, "built-in"),
        ("ragged keypoints", _json([[[1, 2, 3]], [[1, 2]]]), 422, "rectangular"),
        ("string keypoints", _json([[["a", "b", "c"]]]), 422, "numbers"),
        ("JSON wrong joints", _json([[[1, 2, 3]]]), 422, "joints"),
        ("JSON NaN", _raw(nan_body), 422, "non-finite"),
        ("unknown field", _json([], x=1), 422, "unknown"),
        ("plain text body", _raw(b"hello", "text/plain"), 415, "content type"),
        ("bad top_k", {**_json([]), "params": {"top_k": 0}}, 422, "top_k"),
    ]


def test_malformed_inputs_are_4xx_with_a_message(
    client: TestClient, models: dict[str, Path], tmp_path: Path
) -> None:
    for what, kw, status, words in _bad_cases(tmp_path, _clip(models)):
        for route in ("/predict", "/explain"):
            r = client.post(route, **kw)
            assert r.status_code == status, (what, route, r.status_code, r.text)
            detail = r.json()["detail"]
            assert detail, what
            text = detail if isinstance(detail, str) else json.dumps(detail)
            assert words.lower() in text.lower(), (what, text)
            # Server-side temp folders never leak into messages.
            assert "protoskel-upload-" not in text, text


def test_upload_and_length_limits(models: dict[str, Path], tmp_path: Path) -> None:
    app = create_app(models["linear"], max_upload_mb=0.05, max_frames=30)
    with TestClient(app, raise_server_exceptions=False) as c:
        big = _npz(tmp_path, np.random.default_rng(0).normal(size=(1, 400, 20, 3)))
        assert len(big) > 0.05 * 1024 * 1024
        r = _upload(c, "/predict", "big.npz", big)
        assert r.status_code == 413 and "at most 0.05 MB" in r.json()["detail"]
        r = c.post(
            "/predict",
            content=b"{" + b" " * 60_000 + b"}",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413
        long = _clip(models)
        assert long.num_frames > 30
        r = _upload(c, "/predict", "long.npz", models["clip"].read_bytes())
        assert r.status_code == 422 and "at most 30" in r.json()["detail"]
        r = c.post(
            "/predict", json={"keypoints": long.keypoints.tolist(), "layout": "kinect-v1-20"}
        )
        assert r.status_code == 422 and "frames" in r.json()["detail"]
        short = long.keypoints[:, :30]
        r = c.post("/predict", json={"keypoints": short.tolist(), "layout": "kinect-v1-20"})
        assert r.status_code == 200


def test_too_long_video_is_refused_before_pose_extraction(models: dict[str, Path]) -> None:
    pytest.importorskip("cv2")
    video = media_file("vtest.avi")
    app = create_app(models["linear"], max_frames=50)
    with TestClient(app, raise_server_exceptions=False) as c:
        t0 = time.perf_counter()
        r = _upload(c, "/predict", "vtest.avi", video.read_bytes())
        assert r.status_code == 422, r.text
        assert "frames" in r.json()["detail"] and "at most 50" in r.json()["detail"]
        assert time.perf_counter() - t0 < 10  # no pose extraction of 795 frames happened


@pytest.mark.realdata
def test_predict_video_upload(client: TestClient, tmp_path: Path) -> None:
    pytest.importorskip("mediapipe")
    # 20 frames keep pose extraction to a couple of seconds; from frame 160 a person is tracked.
    short = vtest_excerpt(tmp_path / "short.avi", 160, 20)
    r = _upload(client, "/predict", "short.avi", short.read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["input"]["layout"] == "mediapipe-33" and body["input"]["frames"] == 20
    assert body["input"]["model_layout"] == "kinect-v1-20" and len(body["predictions"]) == 5
    # The first 20 frames have nobody in them: an error, not a class.
    empty = vtest_excerpt(tmp_path / "empty.avi", 0, 20)
    r = _upload(client, "/predict", "empty.avi", empty.read_bytes())
    assert r.status_code == 422 and "empty.avi: no person in any of its 20 frames" in r.text


def test_docs_work_offline_and_describe_both_bodies(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "cdn." not in docs.text and "https://" not in docs.text
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert {"/health", "/models", "/predict", "/explain"} <= set(spec["paths"])


def test_page_is_self_contained(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="skeleton"' in page.text
    for asset in ("/static/app.js", "/static/app.css"):
        r = client.get(asset)
        assert r.status_code == 200 and len(r.text) > 500
        assert "http://" not in r.text and "https://" not in r.text, asset
    assert "http://" not in page.text and "https://" not in page.text


# ------------------------------------------------------------------------------ concurrency
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def live_server(models: dict[str, Path]) -> Iterator[tuple[str, Any]]:
    """uvicorn serving the linear model on a free loopback port, in a thread."""
    import uvicorn

    app = create_app(models["linear"])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_parallel_requests_all_succeed(
    live_server: tuple[str, Any], models: dict[str, Path]
) -> None:
    url, _ = live_server
    data = models["clip"].read_bytes()

    def one(i: int) -> tuple[int, str]:
        with httpx2.Client(timeout=60) as h:
            if i % 2:
                r = h.post(f"{url}/predict", files={"file": ("clip.npz", data)})
            else:
                kp = _clip(models).keypoints.tolist()
                r = h.post(f"{url}/predict", json={"keypoints": kp, "layout": "kinect-v1-20"})
        return r.status_code, r.json()["predictions"][0]["label"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(16)))
    assert all(code == 200 for code, _ in results), results
    assert len({label for _, label in results}) == 1


def test_inference_does_not_block_the_event_loop(
    live_server: tuple[str, Any], models: dict[str, Path]
) -> None:
    url, app = live_server
    svc = app.state.service
    release, entered = threading.Event(), threading.Event()
    real = svc.predict

    def slow_predict(seq: SkeletonSequence, top_k: int) -> dict[str, Any]:
        entered.set()
        assert release.wait(30)
        return real(seq, top_k)

    svc.predict = slow_predict
    try:
        with ThreadPoolExecutor(1) as pool:
            fut = pool.submit(
                httpx2.post,
                f"{url}/predict",
                files={"file": ("clip.npz", models["clip"].read_bytes())},
                timeout=60,
            )
            assert entered.wait(30), "the predict request never reached the model"
            # The model call is parked in a worker thread; the loop must still answer.
            health = httpx2.get(f"{url}/health", timeout=5)
            assert health.status_code == 200 and not fut.done()
            release.set()
            assert fut.result(timeout=60).status_code == 200
    finally:
        release.set()
        svc.predict = real


def test_serve_refuses_a_taken_port_before_loading_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import uvicorn

    from protoskel.serve import app as app_mod

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn must not start"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"--port {port}: cannot listen on 127.0.0.1:{port}"):
            app_mod.serve(tmp_path / "not-even-read.pt", port=port)
