"""HTTP service for a checkpoint: JSON API (``/predict``, ``/explain``) and a web page at ``/``."""

from __future__ import annotations

from protoskel.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
