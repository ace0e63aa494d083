"""The HTTP service: one checkpoint behind a JSON API and a self-contained web page.

Routes (see ``/docs``, served from packaged assets so it works offline, or ``/openapi.json``):

- ``GET /``          the web page (``static/index.html``): upload a clip, watch the skeleton,
  read the predictions and the prototype explanation
- ``GET /health``    liveness: ``{"status": "ok", ...}``
- ``GET /models``    the loaded model: name, classes, layout, stream, invariance, limits
- ``POST /predict``  a clip as a multipart file field ``file`` (skeleton NPZ/CSV/JSON/NTU/...,
  or a video when the ``video`` extra is installed; optional form field ``layout`` for generic
  files that do not name one) or a JSON body ``{"keypoints": [...], "layout": "..."}``;
  returns ``predictions`` plus the clip's front-view ``skeleton`` for drawing
- ``POST /explain``  the same input; returns the explanation JSON and URLs of the rendered
  report files, served under ``/reports/<id>/``

Errors are JSON ``{"detail": "..."}``: 413 for an upload over ``max_upload_mb``, 422 for a clip
over ``max_frames`` or a malformed clip (the message names the file and the place in it), 415
for an unsupported file or content type, 400 for other protoskel errors; an unexpected failure is
a 500 with a JSON detail and a logged traceback. Reading, pose extraction and the model run in
the thread pool, so the event loop keeps serving while they work. Predictions run concurrently
(an eval-mode forward under ``no_grad`` only reads the weights); explanations, heavier and
rendering images, run one at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import ConfigError, DataFormatError, LayoutError, ProtoskelError
from protoskel.inference import VIDEO_EXTENSIONS, Predictor, is_video

__all__ = ["MAX_DRAW_FRAMES", "create_app", "serve"]

log = logging.getLogger("protoskel.serve")

STATIC = Path(__file__).resolve().parent / "static"
#: Frames sent to the page for drawing; longer clips are subsampled evenly.
MAX_DRAW_FRAMES = 300
_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")
# Multipart framing (boundaries, part headers, the layout field) on top of the file itself.
_MULTIPART_SLACK = 64 * 1024


def _skeleton_endings() -> tuple[str, ...]:
    from protoskel.inference import _SKELETON_ENDINGS

    return _SKELETON_ENDINGS


def _safe_name(filename: str | None) -> str:
    """A file name safe to create in our temp folder that keeps the (lower-case) extension."""
    base = Path(str(filename or "")).name
    base = _NAME_RE.sub("_", base).lstrip(".") or "upload"
    return base[-120:]


def _model_name(pred: Predictor) -> str:
    """Shipped models are named by their file; run outputs (best/last.pt) by their recipe."""
    p = Path(pred.path)
    if p.stem and p.stem not in ("best", "last"):
        return p.stem
    return pred.config.name or p.parent.name or "model"


class _Service:
    """State shared by the routes: the predictor, limits and the report folder."""

    def __init__(
        self,
        predictor: Predictor,
        max_upload_mb: float,
        max_frames: int,
        data_root: str | Path | None,
        max_reports: int,
    ) -> None:
        self.pred = predictor
        self.max_bytes = int(max_upload_mb * 1024 * 1024)
        self.max_upload_mb = max_upload_mb
        self.max_frames = int(max_frames)
        self.data_root = data_root
        self.max_reports = int(max_reports)
        self.reports = Path(tempfile.mkdtemp(prefix="protoskel-reports-"))
        self.explain_lock = threading.Lock()
        self.started = time.time()
        self.name = _model_name(predictor)

    # ------------------------------------------------------------------------------ info
    def model_info(self) -> dict[str, Any]:
        """What /models reports about the loaded checkpoint."""
        p = self.pred
        meta = p.checkpoint.get("meta") or {}
        return {
            "name": self.name,
            "checkpoint": Path(p.path).name,
            "classes": list(p.classes),
            "num_classes": len(p.classes),
            "layout": p.layout.name,
            "num_joints": p.layout.num_joints,
            "coords": p.in_channels,
            "stream": p.stream,
            "num_frames": p.num_frames,
            "test_clips": p.test_clips,
            "backbone": p.config.model.backbone,
            "head": p.head_name,
            "prototypes": p.is_prototype,
            "invariance": p.config.model.invariance or None,
            "invariance_mode": p.config.model.invariance_mode
            if p.config.model.invariance
            else None,
            "dataset": meta.get("dataset") or None,
            "epoch": p.checkpoint.get("epoch"),
        }

    def limits(self) -> dict[str, Any]:
        """Upload limits and accepted inputs, for clients and the page."""
        from protoskel.layouts import list_layouts

        return {
            "layouts": list_layouts(),
            "max_upload_mb": self.max_upload_mb,
            "max_frames": self.max_frames,
            "skeleton_formats": list(_skeleton_endings()),
            "video_formats": list(VIDEO_EXTENSIONS),
        }

    # ----------------------------------------------------------------------------- input
    def check_frames(self, seq: SkeletonSequence, name: str) -> None:
        """422 when a clip is longer than the server accepts."""
        if seq.num_frames > self.max_frames:
            raise HTTPException(
                422,
                f"{name}: the clip has {seq.num_frames} frames; this server accepts at most "
                f"{self.max_frames} (cut the clip, or start the server with a larger "
                "--max-frames)",
            )

    def too_large(self, size: int, what: str) -> HTTPException:
        """The 413 error for an upload of ``size`` bytes."""
        return HTTPException(
            413,
            f"{what} is {size / 1024 / 1024:.1f} MB; this server accepts at most "
            f"{self.max_upload_mb:g} MB (start it with a larger --max-upload-mb)",
        )

    def load_file(self, path: Path, name: str, layout: str | None) -> SkeletonSequence:
        """Read an uploaded skeleton file or video (runs in a worker thread)."""
        from protoskel.data.readers import read_clip
        from protoskel.inference import load_input

        try:
            if is_video(path):
                self._check_video_length(path, name)
                seq = load_input(path, max_frames=self.max_frames)
            elif layout:
                seq = read_clip(path, layout)
            else:
                seq = load_input(path)
        except ProtoskelError:
            raise
        except Exception as e:
            # Readers raise DataFormatError for what they anticipate; anything else a malformed
            # upload triggers is still the client's input, not a server fault.
            raise DataFormatError(
                name, None, f"could not be read ({type(e).__name__}: {str(e)[:200]})"
            ) from None
        seq.meta["path"] = name
        self.check_frames(seq, name)
        return seq

    def _check_video_length(self, path: Path, name: str) -> None:
        """Refuse a video longer than ``max_frames`` before spending minutes on its poses."""
        try:
            import cv2
        except ImportError:
            raise ProtoskelError(
                f"{name}: videos need the video extra (pip install 'protoskel[video]'); "
                "upload a skeleton file instead"
            ) from None
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise DataFormatError(name, None, "is not a video OpenCV can decode")
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        finally:
            cap.release()
        if count > self.max_frames:
            raise HTTPException(
                422,
                f"{name}: the video has {count} frames; this server accepts at most "
                f"{self.max_frames} (cut the video, or start the server with a larger "
                "--max-frames)",
            )

    def seq_from_json(self, obj: Any) -> SkeletonSequence:
        """A clip from a JSON body ``{"keypoints", "layout", "scores"?, "fps"?, "id"?}``."""
        from protoskel.layouts import list_layouts

        where = "request body"
        if not isinstance(obj, dict):
            raise DataFormatError(
                where, None, 'expected a JSON object {"keypoints": [...], "layout": "..."}'
            )
        unknown = sorted(set(obj) - {"keypoints", "layout", "scores", "fps", "id"})
        if unknown:
            raise DataFormatError(
                where,
                f"field {unknown[0]!r}",
                "unknown; fields: keypoints, layout, scores, fps, id",
            )
        layout = obj.get("layout")
        # Only built-in names: a client must never make the server open a file path.
        if not isinstance(layout, str) or layout not in list_layouts():
            raise DataFormatError(
                where,
                "field 'layout'",
                f"must be a built-in layout name, got {layout!r}; built-ins: "
                f"{', '.join(list_layouts())}",
            )
        if "keypoints" not in obj:
            raise DataFormatError(
                where, "field 'keypoints'", "missing; give (T, V, C) or (M, T, V, C) numbers"
            )
        kp = _array(obj["keypoints"], where, "keypoints")
        if kp.ndim == 3:
            kp = kp[None]
        if kp.ndim != 4:
            raise DataFormatError(
                where,
                "field 'keypoints'",
                f"expected shape (T, V, C) or (M, T, V, C), got {tuple(kp.shape)}",
            )
        scores = None
        if obj.get("scores") is not None:
            scores = _array(obj["scores"], where, "scores")
            if scores.ndim == 2:
                scores = scores[None]
            if scores.shape != kp.shape[:3]:
                raise DataFormatError(
                    where,
                    "field 'scores'",
                    f"shape {scores.shape} does not match keypoints (M, T, V) {kp.shape[:3]}",
                )
        fps = obj.get("fps")
        if fps is not None and (
            isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0
        ):
            raise DataFormatError(where, "field 'fps'", f"must be a positive number, got {fps!r}")
        seq = SkeletonSequence(
            keypoints=kp,
            layout=layout,
            scores=scores,
            id=str(obj.get("id") or "json-clip")[:200],
            fps=None if fps is None else float(fps),
            meta={"path": "request body"},
        )
        self.check_frames(seq, where)
        from protoskel.layouts import get_layout

        seq.validate(where, get_layout(layout))
        return seq

    # ------------------------------------------------------------------------------ work
    def predict(self, seq: SkeletonSequence, top_k: int) -> dict[str, Any]:
        """Predictions and the drawing payload (runs in a worker thread)."""
        t0 = time.perf_counter()
        adapted = self.pred.adapt(seq)
        out = self.pred.predict(adapted, top_k=top_k)
        ms = (time.perf_counter() - t0) * 1000.0
        return {
            **out,
            "model": self.name,
            "input": _input_info(seq, adapted),
            "skeleton": self.skeleton(adapted),
            "timing_ms": {"predict": round(ms, 2)},
        }

    def explain(self, seq: SkeletonSequence, top_k: int, top_prototypes: int) -> dict[str, Any]:
        """Write a report for the clip and return its JSON and file URLs (worker thread)."""
        from protoskel.explain.report import write_report

        rid = uuid.uuid4().hex[:16]
        adapted = self.pred.adapt(seq)
        t0 = time.perf_counter()
        with self.explain_lock:
            out = write_report(
                self.pred,
                seq,
                self.reports / rid,
                top_k_classes=top_k,
                top_prototypes=top_prototypes,
                data_root=self.data_root,
            )
        ms = (time.perf_counter() - t0) * 1000.0
        facts = json.loads((out / "explanation.json").read_text(encoding="utf-8"))
        self._prune()
        base = f"/reports/{rid}"
        files = {k: f"{base}/{v}" for k, v in (facts.get("files") or {}).items()}
        return {
            "predictions": facts.get("predictions", []),
            "model": self.name,
            "input": _input_info(seq, adapted),
            "explanation": facts,
            "report_url": f"{base}/index.html",
            "files": files,
            "skeleton": self.skeleton(adapted),
            "timing_ms": {"explain": round(ms, 2)},
        }

    def _prune(self) -> None:
        """Keep only the newest ``max_reports`` report folders."""
        dirs = sorted(
            (d for d in self.reports.iterdir() if d.is_dir() and not d.name.startswith(".")),
            key=lambda d: d.stat().st_mtime,
        )
        for d in dirs[: max(0, len(dirs) - self.max_reports)]:
            shutil.rmtree(d, ignore_errors=True)

    def skeleton(self, seq: SkeletonSequence) -> dict[str, Any]:
        """Front-view 2D points of the clip for the page's canvas (at most MAX_DRAW_FRAMES)."""
        from protoskel.explain.render import to_xy

        lay = self.pred.layout
        kp = seq.keypoints
        step = max(1, math.ceil(kp.shape[1] / MAX_DRAW_FRAMES))
        sub = np.ascontiguousarray(kp[:, ::step])
        x = torch.from_numpy(sub).permute(3, 1, 2, 0)[None].float()  # (1, C, T, V, M)
        xy, valid = to_xy(x, lay)  # (M, T, V, 2) with +y up, (M, T)
        present = (sub != 0).any(axis=-1)  # (M, T, V)
        pts = np.round(xy, 4)
        frames = [
            [
                [pts[m, t, v].tolist() if present[m, t, v] else None for v in range(lay.num_joints)]
                for t in range(pts.shape[1])
            ]
            for m in range(pts.shape[0])
            if valid[m].any()
        ]
        return {
            "layout": lay.name,
            "joints": list(lay.joints),
            "bones": [list(b) for b in lay.bones],
            "parts": {k: list(v) for k, v in lay.parts.items()},
            "fps": (seq.fps or 30.0) / step,
            "step": step,
            "frames": int(kp.shape[1]),
            "persons": frames,
            "y_up": True,
        }


def _array(value: Any, where: str, field: str) -> np.ndarray:
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError) as e:
        raise DataFormatError(
            where,
            f"field {field!r}",
            f"must be a rectangular nested list of numbers ({str(e)[:120]})",
        ) from None
    return arr


def _input_info(seq: SkeletonSequence, adapted: SkeletonSequence) -> dict[str, Any]:
    return {
        "name": seq.meta.get("path") or seq.id,
        "layout": seq.layout,
        "frames": seq.num_frames,
        "persons": seq.num_persons,
        "coords": seq.num_coords,
        "fps": seq.fps,
        "model_layout": adapted.layout,
    }


def _status_of(e: ProtoskelError) -> int:
    return 422 if isinstance(e, DataFormatError | LayoutError) else 400


def _new_app(lifespan: Any) -> FastAPI:
    """A FastAPI app whose /docs uses packaged Swagger UI assets (no CDN) when available."""
    from protoskel import __version__

    kw: dict[str, Any] = {
        "title": "protoskel",
        "version": __version__,
        "description": "Skeleton-based action recognition that shows why. The web page is at "
        "`/`; the OpenAPI spec is at `/openapi.json`.",
        "lifespan": lifespan,
    }
    try:
        from fastapi_offline import FastAPIOffline
    except ImportError:
        app = FastAPI(docs_url=None, redoc_url=None, **kw)

        @app.get("/docs", include_in_schema=False)
        async def docs() -> HTMLResponse:
            # FastAPI's default page would load Swagger UI from a CDN; never depend on one.
            return HTMLResponse(
                "<!DOCTYPE html><html><head><meta charset='utf-8'><title>protoskel API</title>"
                "</head><body><h1>protoskel API</h1><p>The interactive docs need the "
                "<code>fastapi-offline</code> package (installed by the <code>serve</code> "
                "extra). The OpenAPI spec is at <a href='/openapi.json'>/openapi.json</a>."
                "</p></body></html>"
            )

        return app
    return FastAPIOffline(redoc_url=None, **kw)


_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "Skeleton clip (.npz, .csv, .json, .skeleton, "
                            "_skeleton3D.txt, .pkl) or video (.mp4, .avi, .mov, .mkv, .webm)",
                        },
                        "layout": {
                            "type": "string",
                            "description": "Built-in layout of a generic NPZ/CSV clip that "
                            "does not name one",
                        },
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["keypoints", "layout"],
                    "properties": {
                        "keypoints": {
                            "type": "array",
                            "description": "(T, V, C) or (M, T, V, C) numbers; missing = 0",
                        },
                        "layout": {"type": "string", "example": "kinect-v1-20"},
                        "scores": {"type": "array", "description": "(T, V) or (M, T, V)"},
                        "fps": {"type": "number"},
                        "id": {"type": "string"},
                    },
                }
            },
        },
    }
}


def create_app(
    checkpoint: str | Path | Predictor,
    *,
    max_upload_mb: float = 50,
    max_frames: int = 5000,
    data_root: str | Path | None = None,
    max_reports: int = 32,
) -> FastAPI:
    """The FastAPI app serving one checkpoint (path, shipped name, or a loaded Predictor).

    ``data_root`` (prepared store or clip folder) lets explanations draw the training segments
    behind prototypes; ``max_reports`` rendered reports are kept (oldest removed first).
    """
    if max_upload_mb <= 0 or max_frames < 1 or max_reports < 1:
        raise ProtoskelError(
            f"serve: --max-upload-mb must be > 0, --max-frames and max_reports >= 1 (got "
            f"{max_upload_mb}, {max_frames}, {max_reports})"
        )
    pred = (
        checkpoint if isinstance(checkpoint, Predictor) else Predictor.from_checkpoint(checkpoint)
    )
    svc = _Service(pred, max_upload_mb, max_frames, data_root, max_reports)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        shutil.rmtree(svc.reports, ignore_errors=True)

    app = _new_app(lifespan)
    app.state.service = svc
    # Also clean up when the app is dropped without a shutdown (e.g. tests without lifespan).
    weakref.finalize(app, shutil.rmtree, str(svc.reports), True)

    @app.exception_handler(ProtoskelError)
    async def _protoskel_error(_: Request, exc: ProtoskelError) -> JSONResponse:
        return JSONResponse({"detail": _scrub(str(exc), svc)}, status_code=_status_of(exc))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); see the server log"},
            status_code=500,
        )

    async def read_input(request: Request) -> SkeletonSequence:
        ctype = request.headers.get("content-type", "").lower()
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > svc.max_bytes + _MULTIPART_SLACK:
                raise svc.too_large(int(declared), "the request")
        if ctype.startswith("multipart/form-data"):
            return await _read_multipart(request)
        if ctype.startswith("application/json"):
            body = await request.body()
            if len(body) > svc.max_bytes:
                raise svc.too_large(len(body), "the JSON body")
            try:
                obj = json.loads(body)
            except (ValueError, RecursionError) as e:
                raise DataFormatError("request body", None, f"invalid JSON ({e})") from None
            return await run_in_threadpool(svc.seq_from_json, obj)
        raise HTTPException(
            415,
            f"unsupported content type {ctype or '(none)'!r}: send multipart/form-data with the "
            'clip in a file field named "file", or application/json {"keypoints": [...], '
            '"layout": "..."}',
        )

    async def _read_multipart(request: Request) -> SkeletonSequence:
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception as e:
            # Starlette reports framing errors as its own HTTPException; keep only the reason.
            why = getattr(e, "detail", None) or str(e)
            raise DataFormatError(
                "request body", None, f"malformed multipart form ({why})"
            ) from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(
                422, 'no file: send the clip in a multipart file field named "file"'
            )
        name = _safe_name(upload.filename)
        data = await upload.read(svc.max_bytes + 1)
        await upload.close()
        if len(data) > svc.max_bytes:
            raise svc.too_large(upload.size or len(data), f"{name}")
        if not data:
            raise HTTPException(422, f"{name}: the uploaded file is empty")
        low = name.lower()
        if not (low.endswith(_skeleton_endings()) or is_video(low)):
            raise HTTPException(
                415,
                f"{name}: unsupported file type; skeleton clips: "
                f"{', '.join(_skeleton_endings())}; videos: {', '.join(VIDEO_EXTENSIONS)}",
            )
        layout = form.get("layout")
        if layout is not None and not isinstance(layout, str):
            raise HTTPException(422, "the layout field must be text")
        layout = (layout or "").strip() or None
        if layout is not None:
            from protoskel.layouts import list_layouts

            if layout not in list_layouts():
                raise HTTPException(
                    422,
                    f"layout {layout!r} is not a built-in layout; built-ins: "
                    f"{', '.join(list_layouts())}",
                )
        folder = Path(tempfile.mkdtemp(prefix="protoskel-upload-"))
        try:
            path = folder / name
            path.write_bytes(data)
            return await run_in_threadpool(svc.load_file, path, name, layout)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health", summary="Liveness check")
    async def health() -> dict[str, Any]:
        """``{"status": "ok"}`` with the model name and uptime."""
        return {
            "status": "ok",
            "model": svc.name,
            "uptime_s": round(time.time() - svc.started, 1),
        }

    @app.get("/models", summary="The loaded model")
    async def models() -> dict[str, Any]:
        """The served model (classes, layout, stream, invariance, ...) and the upload limits."""
        return {"models": [svc.model_info()], "limits": svc.limits()}

    @app.post("/predict", summary="Classify a clip", openapi_extra=_BODY_DOC)
    async def predict(
        request: Request, top_k: int = Query(5, ge=1, le=1000, description="Classes to return")
    ) -> dict[str, Any]:
        """Top-k classes ``[{"label", "index", "prob"}]`` and the clip's front-view skeleton."""
        seq = await read_input(request)
        return await run_in_threadpool(svc.predict, seq, top_k)

    @app.post("/explain", summary="Explain a clip", openapi_extra=_BODY_DOC)
    async def explain(
        request: Request,
        top_k: int = Query(5, ge=1, le=1000, description="Classes to list"),
        top_prototypes: int = Query(5, ge=0, le=100, description="Prototypes to list"),
    ) -> dict[str, Any]:
        """Explanation JSON (importance maps; prototypes for prototype models) and report URLs."""
        seq = await read_input(request)
        return await run_in_threadpool(svc.explain, seq, top_k, top_prototypes)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/reports", StaticFiles(directory=svc.reports), name="reports")
    return app


def _scrub(msg: str, svc: _Service) -> str:
    """Drop server-side temp folders from a message (the client knows its file by name)."""
    msg = re.sub(r"/[^\s:'\"]*protoskel-upload-[^/\s]+/", "", msg)
    return msg.replace(str(svc.reports), "reports")


def _check_can_listen(host: str, port: int) -> None:
    """Refuse a host that does not resolve or a port something else listens on."""
    import socket

    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"--host {host}: cannot resolve it ({e})") from None
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(addr)
        except OSError as e:
            raise ConfigError(
                f"--port {port}: cannot listen on {host}:{port} ({e.strerror}); choose another "
                "--port or stop the program using it"
            ) from None


def serve(
    checkpoint: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = 50,
    max_frames: int = 5000,
    data_root: str | Path | None = None,
    log_level: str = "info",
) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    # Before the model loads: uvicorn would report a taken port after "startup complete"
    # and exit with its own code 3.
    _check_can_listen(host, port)
    app = create_app(
        checkpoint, max_upload_mb=max_upload_mb, max_frames=max_frames, data_root=data_root
    )
    log.info("serving %s on http://%s:%d", checkpoint, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
