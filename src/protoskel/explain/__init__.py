"""Explanations: prototype retrieval, few-shot enrollment and forgetting of classes."""

from __future__ import annotations

from protoskel.explain.enroll import calibrated_bias, enroll, forget, forget_example

__all__ = ["calibrated_bias", "enroll", "forget", "forget_example"]
