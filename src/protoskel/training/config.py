"""Training recipes: YAML files validated into dataclasses (unknown keys and bad values fail)."""

from __future__ import annotations

import dataclasses
import itertools
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from protoskel.errors import ConfigError

__all__ = ["Config", "DataConfig", "ModelConfig", "TrainConfig", "load_config"]


@dataclass
class ModelConfig:
    """Which network to build."""

    backbone: str = "atgcn"
    head: str = "linear"
    dropout: float = 0.0  # before the classifier (head)
    kwargs: dict[str, Any] = field(default_factory=dict)
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    # View invariance: null, or "frame_averaging" (see docs/invariance.md).
    invariance: str | None = None
    invariance_mode: str = "average"
    # "all": train on every frame (F x the cost); "sample": one random frame per clip and step.
    invariance_train: str = "all"
    # "pca": the clip's principal axes; "up": the body's mean up first (joint stream only).
    invariance_axes: str = "pca"


@dataclass
class DataConfig:
    """How clips become batches."""

    stream: str = "joint"
    num_frames: int = 52
    train_split: str = "train"
    val_split: str = "val"
    test_clips: int = 1
    # Average each test clip's prediction with its left-right mirror's (test-time augmentation).
    test_flip: bool = False
    # Test-time rotations: each test clip is also seen rotated by each [ax, ay, az] (radians,
    # composed as augment.rotate) and the predictions are averaged; [] turns it off.
    test_rotate: list[Any] = field(default_factory=list)
    augment: dict[str, Any] = field(default_factory=dict)
    # Keys of protoskel.data.transforms.normalize (centring, scale, view alignment).
    normalize: dict[str, Any] = field(default_factory=dict)
    # A seeded fraction of the training split kept out of training (for fitting ensemble weights).
    holdout_fraction: float = 0.0
    holdout_seed: int = 0


@dataclass
class TrainConfig:
    """Optimisation recipe."""

    epochs: int = 30
    batch_size: int = 16
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-4
    warmup_epochs: int = 5
    schedule: str = "cosine"
    min_lr: float = 0.0
    # schedule "step": the learning rate is multiplied by lr_decay at each of these epochs
    # (CTR-GCN's recipes: x0.1 at epoch 50 of 65 on NW-UCLA).
    milestones: list[int] = field(default_factory=list)
    lr_decay: float = 0.1
    label_smoothing: float = 0.1
    seed: int = 1
    eval_every: int = 1
    # Test clips per video in the evaluations during training (0: data.test_clips). The last
    # epoch is always evaluated with data.test_clips, so the run's final figure is what
    # `protoskel eval` prints; a cheaper setting (1) only changes the curve in between (and
    # best.pt, chosen on that curve as printed). log.csv's val_clips says which was used.
    eval_clips: int = 0
    threads: int = 0  # 0: leave torch's default
    # Warm start: a checkpoint (path or shipped name) whose parameters of matching name and
    # shape (e.g. the backbone of a linear-head run) initialise this model. It must share the
    # data's layout; trained on other classes (another dataset), its head is left out.
    init: str = ""
    # Exponential moving average of the weights (0 = off, e.g. 0.998): evaluated and saved in
    # place of the raw weights, which smooths out the last epochs' epoch-to-epoch swings.
    ema: float = 0.0
    # Knowledge distillation from fixed teachers (checkpoints or shipped names, e.g. the stream
    # models of an ensemble): their probabilities on the training clips (each with its own
    # recipe's test-time mirror and rotations), mixed with distill_weights (default equal) and
    # softened by distill_temperature, are soft targets with weight distill_alpha beside the
    # labels (Hinton et al. 2015).
    distill: list[str] = field(default_factory=list)
    distill_weights: list[float] = field(default_factory=list)
    distill_alpha: float = 0.5
    distill_temperature: float = 1.0
    # Batch mixing (protoskel.training.mixing): with probability mixup_prob per step, each clip
    # is mixed with another clip of its batch, "blend" (mixup) or "parts" (CutMix of the
    # layout's body parts), by a weight drawn from Beta(mixup, mixup); 0 turns it off.
    mixup: float = 0.0
    mixup_mode: str = "blend"
    mixup_prob: float = 1.0
    # Cross-view consistency (protoskel.training.views): each step also forwards every clip's
    # partner from another camera of the same performance (ids equal once view_pattern, a
    # regular expression, is removed, e.g. '_v\d+' for NW-UCLA) and adds view_weight x the
    # symmetric KL divergence between the two predictions; 0 turns it off.
    view_weight: float = 0.0
    view_pattern: str = ""
    # Sharpness-aware minimisation (protoskel.training.sam): each step also takes the gradient
    # at the weights moved by sam_rho along the normalised gradient and steps with it (two
    # forwards and backwards per step); 0 turns it off. Foret et al. use 0.05 with SGD.
    sam_rho: float = 0.0
    # Prototype heads only: last-layer fine-tuning after projecting prototypes (ProtoPNet).
    push_epochs: int = 20
    push_lr: float = 1e-3


@dataclass
class Config:
    """A whole recipe: model, data, train."""

    name: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what checkpoints store)."""
        return asdict(self)

    def loader_normalize(self) -> dict[str, Any] | None:
        """``data.normalize`` as the data loader applies it.

        With a view-invariance wrapper, box normalisation moves into the wrapper (after
        canonicalisation), because boxing in the camera's frame would depend on the camera.
        """
        norm = dict(self.data.normalize)
        if self.model.invariance not in (None, "", "none") and norm.get("box"):
            norm["box"] = False
        return norm or None

    def validate(self) -> Config:
        """Check values that types alone cannot; raise ConfigError naming the key."""
        from protoskel.data.transforms import (  # torch only when validating
            ROTATION_INVARIANT_STREAMS,
            STREAMS,
        )
        from protoskel.training.mixing import MIX_MODES

        checks = [
            (
                _stream_ok(self.data.stream),
                "data.stream",
                f"must be one of {', '.join(STREAMS)}, or several of them joined by '+' "
                "(e.g. joint+bone), each once",
            ),
            (self.data.num_frames >= 4, "data.num_frames", "must be >= 4"),
            (self.data.test_clips >= 1, "data.test_clips", "must be >= 1"),
            (0.0 <= self.data.holdout_fraction < 1.0, "data.holdout_fraction", "must be in [0, 1)"),
            (self.train.epochs >= 1, "train.epochs", "must be >= 1"),
            (self.train.batch_size >= 1, "train.batch_size", "must be >= 1"),
            (self.train.optimizer in ("sgd", "adamw"), "train.optimizer", "must be sgd or adamw"),
            (self.train.lr > 0, "train.lr", "must be > 0"),
            (self.train.weight_decay >= 0, "train.weight_decay", "must be >= 0"),
            (self.train.warmup_epochs >= 0, "train.warmup_epochs", "must be >= 0"),
            (
                self.train.schedule in ("cosine", "constant", "step"),
                "train.schedule",
                "must be cosine, constant or step",
            ),
            (
                self.train.schedule != "step" or bool(self.train.milestones),
                "train.milestones",
                "schedule step needs the epochs to decay at, e.g. train.milestones=[50]",
            ),
            (
                # A decay inside the warm-up would be skipped by the ramp and then applied all
                # at once when it ends, which is not what anyone writing it means.
                all(self.train.warmup_epochs < m < self.train.epochs for m in self.train.milestones)
                and all(a < b for a, b in itertools.pairwise(self.train.milestones)),
                "train.milestones",
                "must be increasing epochs after the warm-up and before the end: between "
                f"{self.train.warmup_epochs + 1} and {self.train.epochs - 1} (train.warmup_epochs="
                f"{self.train.warmup_epochs}, train.epochs={self.train.epochs})",
            ),
            (0 < self.train.lr_decay <= 1, "train.lr_decay", "must be in (0, 1]"),
            (0 <= self.train.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)"),
            (self.train.eval_every >= 1, "train.eval_every", "must be >= 1"),
            (self.train.eval_clips >= 0, "train.eval_clips", "must be >= 0 (0: data.test_clips)"),
            (self.train.threads >= 0, "train.threads", "must be >= 0"),
            (
                self.model.invariance_train in ("all", "sample"),
                "model.invariance_train",
                "must be all or sample",
            ),
            (0 <= self.train.ema < 1, "train.ema", "must be in [0, 1) (0 turns it off)"),
            (
                not self.train.distill_weights
                or len(self.train.distill_weights) == len(self.train.distill),
                "train.distill_weights",
                "needs one weight per train.distill teacher (or none for equal weights)",
            ),
            (
                all(w >= 0 for w in self.train.distill_weights)
                and (not self.train.distill_weights or sum(self.train.distill_weights) > 0),
                "train.distill_weights",
                "must be >= 0 with a positive sum",
            ),
            (0 <= self.train.distill_alpha <= 1, "train.distill_alpha", "must be in [0, 1]"),
            (self.train.distill_temperature > 0, "train.distill_temperature", "must be > 0"),
            (self.train.mixup >= 0, "train.mixup", "must be >= 0 (0 turns it off)"),
            (
                self.train.mixup_mode in MIX_MODES,
                "train.mixup_mode",
                f"must be one of {', '.join(MIX_MODES)}",
            ),
            (0 <= self.train.mixup_prob <= 1, "train.mixup_prob", "must be in [0, 1]"),
            (
                not (self.train.mixup > 0 and self.model.head == "prototype"),
                "train.mixup",
                "is not supported with the prototype head (its cluster and separation losses "
                "need one label per clip); set train.mixup=0",
            ),
            (self.train.view_weight >= 0, "train.view_weight", "must be >= 0 (0 turns it off)"),
            (
                _regex_ok(self.train.view_pattern),
                "train.view_pattern",
                f"is not a regular expression: {self.train.view_pattern!r}",
            ),
            (
                not (self.train.view_weight > 0 and not self.train.view_pattern),
                "train.view_pattern",
                "is needed with train.view_weight: a regular expression matching the camera part "
                "of the clip ids, e.g. '_v\\d+' for NW-UCLA",
            ),
            (
                not (
                    self.train.view_weight > 0
                    and (self.train.mixup > 0 or self.model.head == "prototype")
                ),
                "train.view_weight",
                "is not supported with train.mixup or the prototype head; turn one of them off",
            ),
            (self.train.sam_rho >= 0, "train.sam_rho", "must be >= 0 (0 turns it off)"),
            (self.train.push_epochs >= 0, "train.push_epochs", "must be >= 0"),
            (self.train.push_lr > 0, "train.push_lr", "must be > 0"),
            (0 <= self.model.dropout < 1, "model.dropout", "must be in [0, 1)"),
            (
                self.model.invariance in (None, "frame_averaging"),
                "model.invariance",
                "must be null or frame_averaging",
            ),
            (
                not (
                    self.model.invariance
                    and any(p in ROTATION_INVARIANT_STREAMS for p in self.data.stream.split("+"))
                ),
                "model.invariance",
                f"the {self.data.stream} stream is already unchanged by camera rotations, and "
                "frame averaging would rotate its features as if they were coordinates: set "
                "model.invariance=null",
            ),
            (
                not (self.model.invariance and "+" in self.data.stream),
                "model.invariance",
                "frame averaging rotates one stream of coordinates; it does not support "
                f"stacked streams ({self.data.stream}): train one stream per model",
            ),
            (
                self.model.invariance_mode in ("average", "canonical"),
                "model.invariance_mode",
                "must be average or canonical",
            ),
            (
                self.model.invariance_axes in ("pca", "up"),
                "model.invariance_axes",
                "must be pca or up",
            ),
            (
                self.model.invariance_axes == "pca" or bool(self.model.invariance),
                "model.invariance_axes",
                "up chooses the axes of frame averaging, which is off: set "
                "model.invariance=frame_averaging, or drop invariance_axes",
            ),
            (
                self.model.invariance_axes == "pca" or self.data.stream == "joint",
                "model.invariance_axes",
                "up measures the body's up from joint positions, so it needs data.stream=joint "
                f"(got {self.data.stream}); use invariance_axes=pca for other streams",
            ),
        ]
        for ok, key, what in checks:
            if not ok:
                raise ConfigError(f"{key}: {what}")
        if self.data.test_rotate:
            from protoskel.data.transforms import rotation_angles

            rotation_angles(self.data.test_rotate, "data.test_rotate")
        if self.data.augment:
            # Checked here rather than when the loader is built, so a bad augmentation is named
            # with its recipe file and fails before a run folder is created.
            from protoskel.data.transforms import AugmentConfig

            try:
                AugmentConfig.from_dict(self.data.augment)
            except ConfigError as e:
                raise ConfigError(f"data.{e}") from None
        if self.data.normalize:
            from protoskel.data.transforms import check_normalize

            try:
                check_normalize(self.data.normalize)
            except ConfigError as e:
                raise ConfigError(f"data.{e}") from None
        return self


def _regex_ok(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _stream_ok(stream: str) -> bool:
    from protoskel.data.transforms import stream_parts

    try:
        stream_parts(stream)
    except ConfigError:
        return False
    return True


def _check_type(value: Any, tp: Any, key: str) -> Any:
    """Coerce/check one value against a dataclass field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept plain numeric text.
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{path}: unknown key; allowed here: {', '.join(sorted(names))}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{path}.")
        else:
            kwargs[key] = _check_type(value, tp, path)
    return cls(**kwargs)


def config_from_dict(data: Any) -> Config:
    """Validate a nested dict into a Config."""
    return _build(Config, data or {}, "").validate()


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.lr=0.05")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe (or defaults when None) and apply ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{p}: cannot read config ({e.strerror})") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "?"
            raise ConfigError(f"{p}: {where}: invalid YAML") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
    set_by: dict[str, str] = {}
    for item in overrides or []:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {k} is not a section")
        node[keys[-1]] = value
        set_by[".".join(keys)] = item
    try:
        cfg = config_from_dict(data)
        from protoskel.models.registry import check_options

        m = cfg.model
        check_options(m.backbone, m.head, m.kwargs, m.head_kwargs)
        return cfg
    except ConfigError as e:
        # Name where the bad value came from: a --set option, else the recipe file.
        key = str(e).split(":", 1)[0]
        origin = next(
            (f"--set {v}" for k, v in set_by.items() if k == key or k.startswith(f"{key}.")), None
        )
        if origin is not None:
            raise ConfigError(
                f"{origin}: {e}" if path is None else f"{path}, {origin}: {e}"
            ) from None
        if path is not None:
            raise ConfigError(f"{path}: {e}") from None
        raise
