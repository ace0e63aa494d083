"""Models: graph utilities, blocks, registered backbones, heads and ``build_model``."""

from protoskel.models.heads import LinearHead
from protoskel.models.registry import (
    Classifier,
    build_model,
    list_backbones,
    list_heads,
    register_backbone,
    register_head,
)

__all__ = [
    "Classifier",
    "LinearHead",
    "build_model",
    "list_backbones",
    "list_heads",
    "register_backbone",
    "register_head",
]
