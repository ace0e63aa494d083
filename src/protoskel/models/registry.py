"""Backbone and head registries, ``build_model`` and the ``Classifier`` wrapper."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from protoskel.errors import ConfigError
from protoskel.layouts import Layout, get_layout

__all__ = [
    "Classifier",
    "build_model",
    "list_backbones",
    "list_heads",
    "register_backbone",
    "register_head",
    "resolved_options",
]

_BACKBONES: dict[str, type[nn.Module]] = {}
_HEADS: dict[str, Callable[..., nn.Module]] = {}

T = TypeVar("T")


def register_backbone(name: str) -> Callable[[T], T]:
    """Class decorator: register a backbone ``cls(layout, in_channels, **kw)`` under ``name``."""

    def deco(cls: T) -> T:
        if name in _BACKBONES and _BACKBONES[name] is not cls:
            raise ConfigError(f"backbone name {name!r} is already registered")
        _BACKBONES[name] = cls  # type: ignore[assignment]
        return cls

    return deco


def register_head(name: str) -> Callable[[T], T]:
    """Decorator: register a head ``factory(in_channels, num_classes, **kw)`` under ``name``."""

    def deco(factory: T) -> T:
        if name in _HEADS and _HEADS[name] is not factory:
            raise ConfigError(f"head name {name!r} is already registered")
        _HEADS[name] = factory  # type: ignore[assignment]
        return factory

    return deco


def _load_builtins() -> None:
    """Import the modules whose decorators register the built-in backbones and heads."""
    import protoskel.models.backbones  # noqa: F401

    if "linear" not in _HEADS:
        from protoskel.models.heads import LinearHead

        register_head("linear")(LinearHead)
    if "prototype" not in _HEADS:
        from protoskel.models.prototypes import PrototypeHead

        register_head("prototype")(PrototypeHead)


def list_backbones() -> list[str]:
    """Names of the registered backbones."""
    _load_builtins()
    return sorted(_BACKBONES)


def list_heads() -> list[str]:
    """Names of the registered heads."""
    _load_builtins()
    return sorted(_HEADS)


class Classifier(nn.Module):
    """A backbone followed by a head: ``(N, C, T, V, M) -> logits (N, K)``."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (N, M, C_out, T', V)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K)."""
        return self.head(self.backbone(x))


#: Arguments build_model passes itself; not user options.
_FIXED = frozenset({"self", "layout", "in_channels", "num_classes"})


def _split_kwargs(kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(backbone options, head options)``: ``head_*`` keys go to the head, prefix dropped."""
    head_kw = {k[len("head_") :]: v for k, v in kw.items() if k.startswith("head_")}
    bb_kw = {k: v for k, v in kw.items() if not k.startswith("head_")}
    return bb_kw, head_kw


def _check_kwargs(what: str, name: str, fn: Callable[..., Any], kw: dict[str, Any]) -> None:
    """Raise ConfigError naming the unknown keyword arguments and the accepted ones."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = sorted(
        k
        for k, p in params.items()
        if k not in _FIXED
        and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )
    bad = sorted(set(kw) - set(allowed))
    if bad:
        raise ConfigError(
            f"{what} {name!r} does not accept option(s) {', '.join(bad)}; "
            f"its options are: {', '.join(allowed) or '(none)'}"
        )


def check_options(
    backbone: str, head: str, kwargs: dict[str, Any], head_kwargs: dict[str, Any]
) -> None:
    """Refuse an unknown backbone or head, or an option it does not take, naming the recipe key."""
    _load_builtins()
    if backbone not in _BACKBONES:
        raise ConfigError(
            f"model.backbone: unknown backbone {backbone!r}; known backbones: "
            f"{', '.join(sorted(_BACKBONES))}"
        )
    if head not in _HEADS:
        raise ConfigError(
            f"model.head: unknown head {head!r}; known heads: {', '.join(sorted(_HEADS))}"
        )
    for key, what, name, fn, kw in (
        ("model.kwargs", "backbone", backbone, _BACKBONES[backbone], kwargs),
        ("model.head_kwargs", "head", head, _HEADS[head], head_kwargs),
    ):
        try:
            _check_kwargs(what, name, fn, dict(kw))
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from None


def build_model(
    name: str,
    layout: Layout | str,
    num_classes: int,
    in_channels: int = 3,
    head: str = "linear",
    **kw: Any,
) -> Classifier:
    """Build ``Classifier(backbone, head)``; ``head_*`` options go to the head, the rest to the
    backbone (e.g. ``build_model("atgcn", "ntu-25", 60, width=48, head_dropout=0.3)``)."""
    _load_builtins()
    if name not in _BACKBONES:
        raise ConfigError(
            f"unknown backbone {name!r}; known backbones: {', '.join(sorted(_BACKBONES))}"
        )
    if head not in _HEADS:
        raise ConfigError(f"unknown head {head!r}; known heads: {', '.join(sorted(_HEADS))}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    lay = get_layout(layout)
    bb_kw, head_kw = _split_kwargs(kw)
    _check_kwargs("backbone", name, _BACKBONES[name], bb_kw)
    _check_kwargs("head", head, _HEADS[head], head_kw)
    try:
        backbone = _BACKBONES[name](lay, in_channels, **bb_kw)
        # Heads that declare a ``layout`` parameter (the prototype head: body parts) get it.
        needs_layout = "layout" in inspect.signature(_HEADS[head]).parameters
        head_kw = {"layout": lay, **head_kw} if needs_layout else head_kw
        head_mod = _HEADS[head](backbone.out_channels, num_classes, **head_kw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad option value for backbone {name!r} / head {head!r}: {e}") from None
    return Classifier(backbone, head_mod)


def _defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """Keyword defaults of a backbone class or head factory (without the fixed arguments)."""
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if k not in _FIXED and p.default is not inspect.Parameter.empty
    }


def resolved_options(name: str, head: str = "linear", **kw: Any) -> dict[str, dict[str, Any]]:
    """Every backbone and head option :func:`build_model` would use, defaults filled in.

    Checkpoints store this so they rebuild the same network after a default changes.
    """
    _load_builtins()
    if name not in _BACKBONES or head not in _HEADS:
        raise ConfigError(f"unknown backbone {name!r} or head {head!r}")
    bb_kw, head_kw = _split_kwargs(kw)
    return {
        "backbone": {**_defaults(_BACKBONES[name]), **bb_kw},
        "head": {**_defaults(_HEADS[head]), **head_kw},
    }
