"""Training and evaluation loops: deterministic, resumable, distributed-ready, CPU-first."""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from protoskel.data.loader import seeded_generator
from protoskel.errors import CheckpointError, ConfigError
from protoskel.layouts import Layout
from protoskel.progress import progress_bar
from protoskel.training.checkpoint import (
    build_from_checkpoint,
    checkpoint_layout,
    load_checkpoint,
    save_checkpoint,
)
from protoskel.training.config import Config, config_from_dict
from protoskel.training.distributed import (
    DistInfo,
    convert_sync_batchnorm,
    init_distributed,
)
from protoskel.training.metrics import classification_metrics, save_confusion_png
from protoskel.training.mixing import mix_batch, mix_rng
from protoskel.training.sam import kept_batchnorm_stats, sam_ascend, sam_return
from protoskel.training.views import pick_partners, symmetric_kl, view_partners

# Stream tag of the cross-view partner draws, apart from the loader's order (0) and batch (1)
# streams, so enabling it leaves the rest of a run's random draws as they were.
_VIEWS = 2

__all__ = [
    "build_model_from_config",
    "evaluate",
    "predict_split",
    "subset_split",
    "train",
]


def build_model_from_config(
    cfg: Config | dict[str, Any], layout: Layout, num_classes: int, in_channels: int
) -> nn.Module:
    """Build the network a recipe describes (backbone + head, optionally frame-averaged).

    ``in_channels`` is the coordinates per joint; stacked streams multiply what the model sees.
    """
    from protoskel.data.transforms import stream_channels
    from protoskel.models import build_model

    c = cfg if isinstance(cfg, Config) else config_from_dict(cfg)
    model = build_model(
        c.model.backbone,
        layout=layout,
        num_classes=num_classes,
        in_channels=stream_channels(c.data.stream, in_channels, layout.num_joints),
        head=c.model.head,
        head_dropout=c.model.dropout,
        **{f"head_{k}": v for k, v in c.model.head_kwargs.items()},
        **c.model.kwargs,
    )
    if c.model.invariance:
        from protoskel.models.invariance import wrap_invariance

        # Bones and motion are translation-free already; centring them would remove signal.
        model = wrap_invariance(
            model,
            c.model.invariance,
            c.model.invariance_mode,
            coords=in_channels,
            center=c.data.stream == "joint",
            train=c.model.invariance_train,
            box=bool(c.data.normalize.get("box", False)),
            up=layout.up if c.model.invariance_axes == "up" else None,
        )
    return model


def architecture(cfg: Config) -> dict[str, dict[str, Any]]:
    """All backbone/head options of the recipe's model, defaults filled in (for checkpoints)."""
    from protoskel.models.registry import resolved_options

    return resolved_options(
        cfg.model.backbone,
        cfg.model.head,
        head_dropout=cfg.model.dropout,
        **{f"head_{k}": v for k, v in cfg.model.head_kwargs.items()},
        **cfg.model.kwargs,
    )


def prototype_head(model: nn.Module) -> Any:
    """The model's PrototypeHead, or None for other heads."""
    from protoskel.models.prototypes import PrototypeHead

    return next((m for m in model.modules() if isinstance(m, PrototypeHead)), None)


# How often and on how many clips to evaluate, and how many threads to use, do not change the
# trained weights (an epoch's data order depends only on seed and epoch): a resume may change them.
_RESUME_FREE = ("eval_every", "eval_clips", "threads")


def _resume_view(config: dict[str, Any]) -> dict[str, Any]:
    """A config without the settings that --resume lets change."""
    train = {k: v for k, v in config.get("train", {}).items() if k not in _RESUME_FREE}
    return {**config, "train": train}


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) wherever two nested config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def _epoch_line(row: dict[str, Any], paces: list[float], epochs: int) -> str:
    """A one-line epoch summary, with the time left at the pace of the last epochs run here."""
    line = f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.3f} acc "
    line += f"{row['train_acc']:.1f}"
    if "val_top1" in row:
        line += f" | val top1 {row['val_top1']:.2f} top5 {row['val_top5']:.2f}"
        if row.get("val_clips", 1) > 1:
            line += f" ({row['val_clips']} clips)"
    # Only epochs run by this process: those restored by --resume may come from another machine.
    recent = paces[-5:]
    left = (epochs - row["epoch"]) * sum(recent) / len(recent)
    when = f"{left:.0f} s" if left < 90 else f"{left / 60:.0f} min"
    return line + f" | {row['epoch_seconds']:.0f} s, about {when} left"


class WeightEMA:
    """Exponential moving average of a model's parameters and buffers (timm's ModelEma idea).

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after n updates, so early
    averages are not dominated by the random initialisation. Integer buffers are copied;
    non-tensor extra state is left alone.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = model.state_dict()
        for k, v in self.model.state_dict().items():
            if not isinstance(v, torch.Tensor):
                continue  # module extra state (prototype provenance) changes only at projection
            if v.dtype.is_floating_point:
                v.mul_(d).add_(live[k].detach(), alpha=1 - d)
            else:
                v.copy_(live[k])


@dataclass
class _Subset:
    """A packed split made of chosen clips of another split (same attributes the loader reads)."""

    keypoints: np.ndarray
    scores: np.ndarray | None
    offsets: np.ndarray
    labels: np.ndarray
    subjects: np.ndarray
    views: np.ndarray
    ids: list[str]

    @property
    def lengths(self) -> np.ndarray:
        """Frames per clip."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.labels)


def subset_split(split: Any, indices: np.ndarray) -> _Subset:
    """Copy the chosen clips of a prepared split into a new packed split in memory."""
    idx = np.asarray(indices, dtype=np.int64)
    off = np.asarray(split.offsets)
    starts, ends = off[idx], off[idx + 1]
    rows = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
    new_off = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
    sc = None if split.scores is None else np.asarray(split.scores)[rows]
    return _Subset(
        keypoints=np.asarray(split.keypoints)[rows],
        scores=sc,
        offsets=new_off,
        labels=np.asarray(split.labels)[idx],
        subjects=np.asarray(split.subjects)[idx],
        views=np.asarray(split.views)[idx],
        ids=[split.ids[i] for i in idx],
    )


def holdout_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into (kept for training, held out)."""
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, round(n * fraction))
    return np.sort(perm[k:]), np.sort(perm[:k])


def lr_at(step: int, steps_per_epoch: int, cfg: Config) -> float:
    """Learning rate at a global step: linear warm-up, then cosine, constant or step decay."""
    t = cfg.train
    warm = t.warmup_epochs * steps_per_epoch
    total = t.epochs * steps_per_epoch
    if step < warm:
        return t.lr * (step + 1) / warm
    if t.schedule == "constant":
        return t.lr
    if t.schedule == "step":
        passed = sum(step >= m * steps_per_epoch for m in t.milestones)
        return t.lr * t.lr_decay**passed
    progress = (step - warm) / max(1, total - warm)
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * progress))


def _make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    t = cfg.train
    # Norm and bias parameters are not decayed (standard practice; stabilises small models).
    head = prototype_head(model)
    keep = {f"head.{n}" for n in head.no_weight_decay()} if head is not None else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim <= 1 or name.endswith(".bias") or any(name.endswith(k) for k in keep)
        (no_decay if plain else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": t.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov)
    return torch.optim.AdamW(groups, lr=t.lr)


# Samples per evaluation forward. Larger forwards allocate activations above glibc's mmap
# threshold, so every batch page-faults in fresh memory: the frame-averaged NW-UCLA model at
# 5 clips + mirror evaluated 3x faster at 40 samples per forward than at 1280 (BENCHMARKS.md).
EVAL_SAMPLES = 32


def eval_samples_per_clip(cfg: Config, coords: int, num_clips: int, mirror: bool) -> int:
    """Forward samples one test clip costs: its copies (clips, rotations, mirror) x FA frames."""
    from protoskel.models.invariance import frame_count

    copies = num_clips * max(1, len(cfg.data.test_rotate or [])) * (2 if mirror else 1)
    views = 1
    if cfg.model.invariance == "frame_averaging":
        up = cfg.model.invariance_axes == "up"
        views = frame_count(coords, mode=cfg.model.invariance_mode, up=up)
    return copies * views


def eval_batch_size(cfg: Config, coords: int, num_clips: int, mirror: bool) -> int:
    """Clips per evaluation batch: copies x frame-averaging frames near EVAL_SAMPLES."""
    # max(1, ...): a bad num_clips (0) is left to the loader's own clear error.
    samples = eval_samples_per_clip(cfg, coords, num_clips, mirror)
    return max(1, EVAL_SAMPLES // max(1, samples))


def eval_loader(
    split: Any,
    layout: Layout,
    cfg: Config,
    num_clips: int | None = None,
    mirror: bool = False,
    occlude: str | None = None,
) -> Any:
    """The recipe's evaluation ClipLoader on a split (``num_clips`` defaults to test_clips)."""
    from protoskel.data.loader import ClipLoader

    num_clips = cfg.data.test_clips if num_clips is None else num_clips
    return ClipLoader(
        split,
        layout,
        batch_size=eval_batch_size(cfg, int(split.keypoints.shape[-1]), num_clips, mirror),
        num_frames=cfg.data.num_frames,
        train=False,
        stream=cfg.data.stream,
        seed=cfg.train.seed,
        num_clips=num_clips,
        normalize=cfg.loader_normalize(),
        mirror=mirror,
        rotations=cfg.data.test_rotate or None,
        occlude=occlude,
    )


def _loader(split: Any, layout: Layout, cfg: Config, train: bool, dist: DistInfo) -> Any:
    from protoskel.data.loader import ClipLoader

    if not train:
        return eval_loader(split, layout, cfg, mirror=cfg.data.test_flip)
    batch = cfg.train.batch_size
    if dist.enabled:
        if batch % dist.world_size:
            raise ConfigError(
                f"train.batch_size={batch} must be divisible by the {dist.world_size} processes"
            )
        batch //= dist.world_size
    return ClipLoader(
        split,
        layout,
        batch_size=batch,
        num_frames=cfg.data.num_frames,
        train=True,
        stream=cfg.data.stream,
        augment=cfg.data.augment,
        seed=cfg.train.seed,
        num_clips=1,
        rank=dist.rank,
        world_size=dist.world_size,
        normalize=cfg.loader_normalize(),
    )


@torch.no_grad()
def predict_split(
    model: nn.Module, loader: Any, progress: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, K) over a loader (multi-clip outputs averaged) and labels.

    ``progress`` labels a bar of batches on stderr, shown only on a terminal.
    """
    import sys

    model.eval()
    probs, labels = [], []
    k = getattr(loader, "copies", getattr(loader, "num_clips", 1))
    show = progress is not None and sys.stderr.isatty()
    with progress_bar(
        [progress or "", "{bar}", "{count}", "{elapsed}", "{remaining}"], disable=not show
    ) as bar:
        task = bar.add_task("", total=len(loader))
        for x, y in loader:
            p = F.softmax(model(x), dim=1)
            if k > 1:
                p = p.view(-1, k, p.shape[1]).mean(1)
            probs.append(p.double().numpy())
            labels.append(y.numpy())
            bar.advance(task)
    return np.concatenate(probs), np.concatenate(labels)


def teacher_probs(
    cfg: Config, data_dir: str | Path, indices: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """Mixed class probabilities (N, K) of the ``train.distill`` teachers on training clips."""
    weights = cfg.train.distill_weights or [1.0] * len(cfg.train.distill)
    mixed = None
    for name, w in zip(cfg.train.distill, weights, strict=True):
        p, y, _, _ = checkpoint_probs(
            name,
            data_dir,
            split=cfg.data.train_split,
            indices=indices,
            fix="train.distill needs teachers trained on the student's dataset",
        )
        if not np.array_equal(y, labels):
            raise ConfigError(f"train.distill: teacher {name} saw other clips than the student")
        mixed = w * p if mixed is None else mixed + w * p
    return mixed / sum(weights)


def soften(probs: np.ndarray, temperature: float) -> torch.Tensor:
    """Probabilities at a temperature: ``p ** (1/T)`` renormalised (softmax of logits / T)."""
    logp = torch.log(torch.as_tensor(probs, dtype=torch.float64).clamp_min(1e-12)) / temperature
    return torch.softmax(logp, dim=1).float()


def distill_loss(logits: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(soft || softmax(logits / T)) * T^2, the gradient-scale-preserving Hinton loss."""
    logq = F.log_softmax(logits / temperature, dim=1)
    return F.kl_div(logq, soft, reduction="batchmean") * temperature**2


def _progress(enabled: bool) -> Any:
    if not enabled:
        return contextlib.nullcontext(None)
    cols = ["{task.description}", "{bar}", "{count}", "{elapsed}", "eta", "{remaining}"]
    return progress_bar([*cols, "{task.fields[stats]}"])


class _Logs:
    """CSV log (always) and TensorBoard (when installed), rank 0 only."""

    FIELDS = (
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "val_top1",
        "val_top5",
        "val_mean_class_acc",
        "epoch_seconds",
        "val_clips",
    )

    def __init__(self, out: Path, enabled: bool, resume: bool) -> None:
        self.enabled = enabled
        self.path = out / "log.csv"
        self.tb = None
        if not enabled:
            return
        self.fields: tuple[str, ...] = self.FIELDS
        if resume and self.path.exists():
            # A run started by an older version keeps its columns, so the file stays one table.
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                self.fields = tuple(header)
        else:
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.FIELDS)
        with contextlib.suppress(Exception):
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))

    def write(self, row: dict[str, Any]) -> None:
        """Append one epoch's row."""
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.fields])
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, row["epoch"])
            self.tb.flush()


def _push(
    model: nn.Module, split: Any, layout: Layout, cfg: Config, classes: list[str], bar: Any
) -> dict[str, Any]:
    """Prototype projection onto real training segments, then last-layer fine-tuning."""
    from protoskel.models.prototypes import push_and_finetune

    if bar is not None:
        bar.console.print("projecting prototypes onto training segments, tuning last layer")
    res = push_and_finetune(
        model,
        split,
        layout,
        num_frames=cfg.data.num_frames,
        stream=cfg.data.stream,
        normalize=cfg.loader_normalize(),
        epochs=cfg.train.push_epochs,
        lr=cfg.train.push_lr,
        classes=classes,
        seed=cfg.train.seed,
    )
    return {"pushed_prototypes": len(res["provenance"])}


def warm_start(
    model: nn.Module,
    checkpoint: str | Path,
    layout: Layout | None = None,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Copy the parameters and buffers of ``checkpoint`` whose name and shape match into ``model``.

    Returns the source and the counts of copied and freshly initialised entries. Raises when a
    shared name has another shape or when less than half of the source matches: that is a
    different architecture, and copying a few stray tensors would pass silently. With
    ``layout``, the checkpoint must have been trained on the same joint order (per-joint weights
    would otherwise land on other joints). With ``classes`` other than the checkpoint's (another
    dataset), the head is left freshly initialised: fine-tuning a pretrained backbone.
    """
    ck = load_checkpoint(checkpoint)
    src_lay = checkpoint_layout(ck)
    if layout is not None and tuple(src_lay.joints) != tuple(layout.joints):
        raise CheckpointError(
            f"{ck['path']}: train.init was trained on layout {src_lay.name!r}, but this data is in "
            f"{layout.name!r}, and per-joint weights would land on other joints; prepare the data "
            f"in its layout with `protoskel datasets prepare ... --to-layout {src_lay.name}`"
        )
    src = ck["model"]
    new_head = classes is not None and list(ck["classes"]) != list(classes)
    if new_head:
        # The classifier is ``head`` of the model, or ``<inner>.head`` inside a wrapper such as
        # frame averaging, whose state-dict keys carry the inner model's prefix.
        heads = tuple(f"{n}." for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] == "head")
        src = {k: v for k, v in src.items() if not k.startswith(heads)}
    own = model.state_dict()
    clash = [k for k, v in src.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    take = {k: v for k, v in src.items() if k in own and k not in clash}
    why = None
    if clash:
        why = f"{clash[0]} has shape {tuple(src[clash[0]].shape)} there"
    elif 2 * len(take) < len(src):
        why = f"only {len(take)} of its {len(src)} tensors exist in this model"
    if why is not None:
        raise CheckpointError(
            f"{ck['path']}: train.init does not fit this model ({why}); initialise from a run "
            "of the same backbone and width"
        )
    model.load_state_dict(take, strict=False)
    info = {"checkpoint": str(ck["path"]), "copied": len(take), "fresh": len(own) - len(take)}
    if new_head:
        info["new_head"] = f"{len(ck['classes'])} -> {len(classes)} classes"
    return info


# What a run folder holds; --force removes these (and only these) before a fresh run.
_RUN_FILES = ("last.pt", "best.pt", "log.csv")


def train(
    cfg: Config,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    max_epochs: int | None = None,
) -> dict[str, Any]:
    """Train a model from a recipe on a prepared store; write best.pt/last.pt and log.csv.

    A folder that already holds a run (``last.pt``) is continued with ``resume`` or replaced
    with ``overwrite``, never silently. A run that fails before its first checkpoint removes
    the folder it created. ``max_epochs`` stops early after that many epochs in total (the
    schedule still spans ``train.epochs``), which is how an interrupted run is simulated in tests.
    """
    out = Path(out_dir)
    last = out / "last.pt"
    if resume and overwrite:
        raise ConfigError("give either --resume or --force, not both")
    if resume and not last.is_file():
        raise CheckpointError(f"{last}: --resume given but there is no last.pt to resume")
    if not resume and last.exists() and not overwrite:
        raise ConfigError(
            f"{out}: already holds a run (last.pt); pass --resume to continue it, --force to "
            "replace it, or choose another --out"
        )
    main = int(os.environ.get("RANK", "0")) == 0
    if overwrite and main:
        for name in _RUN_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "tb", ignore_errors=True)
    created = not out.exists()
    try:
        return _train(cfg, data_dir, out, resume=resume, progress=progress, max_epochs=max_epochs)
    except BaseException:
        # Nothing of a run is lost: only a folder this call made, holding no checkpoint yet.
        if created and main and out.is_dir() and not last.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _train(
    cfg: Config,
    data_dir: str | Path,
    out: Path,
    *,
    resume: bool,
    progress: bool,
    max_epochs: int | None,
) -> dict[str, Any]:
    """The training run itself (see :func:`train`)."""
    from protoskel.data.store import open_store

    dist = init_distributed()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    store = open_store(data_dir)
    layout = store.layout
    classes = list(store.classes)
    train_split = store.split(cfg.data.train_split)
    val_split = store.split(cfg.data.val_split) if cfg.data.val_split else None
    keep, held = holdout_indices(len(train_split), cfg.data.holdout_fraction, cfg.data.holdout_seed)
    if len(held):
        train_split = subset_split(train_split, keep)
    in_channels = int(store.manifest["num_coords"])
    soft = None
    if cfg.train.distill and cfg.train.distill_alpha > 0:
        # Soft targets indexed by position in the (holdout-reduced) training split; the
        # teachers are fixed, so computing them once is exact and costs one evaluation each.
        # Before the run folder exists, so a bad teacher leaves nothing behind.
        table = teacher_probs(cfg, data_dir, keep, train_split.labels)
        soft = soften(table, cfg.train.distill_temperature)
    alpha, temp = cfg.train.distill_alpha, cfg.train.distill_temperature
    partners = None
    if cfg.train.view_weight > 0:
        # Before the run folder exists, so a pattern that pairs other classes leaves nothing.
        partners = view_partners(train_split.ids, train_split.labels, cfg.train.view_pattern)
    torch.manual_seed(cfg.train.seed)
    model = build_model_from_config(cfg, layout, len(classes), in_channels)
    # Before the run folder exists, so an initial checkpoint that does not fit leaves nothing.
    init_info = (
        warm_start(model, cfg.train.init, layout, classes)
        if cfg.train.init and not resume
        else None
    )
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if dist.enabled:
        model = convert_sync_batchnorm(model)
    optimizer = _make_optimizer(model, cfg)
    ema = WeightEMA(model, cfg.train.ema) if cfg.train.ema > 0 else None

    start_epoch, best, history = 0, -1.0, []
    last_path = out / "last.pt"
    if resume:
        ck = load_checkpoint(last_path)
        # Through the config class, so an option added after the run started (absent from
        # the checkpoint) compares at its default instead of as a difference.
        saved = config_from_dict(ck["config"]).to_dict()
        diff = _differences(_resume_view(saved), _resume_view(cfg.to_dict()))
        if diff:
            shown = "; ".join(f"{k}: {a!r} in the run, {b!r} now" for k, a, b in diff[:3])
            raise ConfigError(
                f"{last_path}: the run was started with a different config ({shown}"
                f"{'; ...' if len(diff) > 3 else ''}); resume with the same config and --set "
                "values (only train.eval_every, train.eval_clips and train.threads may change)"
            )
        # With EMA, "model" holds the average (what eval and predict use), "raw_model" the
        # weights the optimiser was updating.
        model.load_state_dict(ck.get("raw_model", ck["model"]))
        if ema is not None:
            ema.model.load_state_dict(ck["model"])
            ema.updates = int(ck.get("ema_updates", 0))
        optimizer.load_state_dict(ck["optimizer"])
        start_epoch, best = int(ck["epoch"]), float(ck.get("best_top1", -1.0))
        history = list(ck.get("history", []))
        torch.set_rng_state(ck["rng"])
        init_info = ck.get("meta", {}).get("init")

    net: nn.Module = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(model)

    proto = prototype_head(model)
    train_loader = _loader(train_split, layout, cfg, True, dist)
    val_loader = _loader(val_split, layout, cfg, False, dist) if val_split is not None else None
    # The interim evaluations may use fewer clips (train.eval_clips); the last uses the recipe's.
    quick_clips = cfg.train.eval_clips or cfg.data.test_clips
    quick_loader = val_loader
    if val_split is not None and quick_clips != cfg.data.test_clips:
        quick_loader = eval_loader(
            val_split, layout, cfg, num_clips=quick_clips, mirror=cfg.data.test_flip
        )
    steps = len(train_loader)
    logs = _Logs(out, dist.is_main, resume)
    end_epoch = cfg.train.epochs if max_epochs is None else min(cfg.train.epochs, max_epochs)
    meta = {
        "dataset": store.manifest.get("dataset", ""),
        "protocol": store.manifest.get("protocol", ""),
        "train_split": cfg.data.train_split,
        "val_split": cfg.data.val_split,
        "num_persons": int(store.manifest.get("num_persons", 1)),
        "holdout_ids": [],
    }
    if init_info is not None:
        meta["init"] = init_info
    arch = architecture(cfg)
    if len(held):
        meta["holdout_ids"] = [store.split(cfg.data.train_split).ids[i] for i in held]

    mixing, mode, smoothing = cfg.train.mixup > 0, cfg.train.mixup_mode, cfg.train.label_smoothing
    paces: list[float] = []

    def batch_loss(
        x: torch.Tensor,
        y: torch.Tensor,
        x2: torch.Tensor | None,
        y2: torch.Tensor | None,
        perm: torch.Tensor | None,
        lam: float,
        rows: np.ndarray,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits of one batch (a function, as SAM evaluates it twice)."""
        if partners is None:
            logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        else:
            # One forward over both views keeps DDP at one forward per backward.
            both = net(torch.cat([x, x2]))
            logits, other_view = both[: len(y)], both[len(y) :]
            loss = (
                F.cross_entropy(logits, y, label_smoothing=smoothing)
                + F.cross_entropy(other_view, y2, label_smoothing=smoothing)
            ) / 2
            loss = loss + cfg.train.view_weight * symmetric_kl(logits, other_view)
        if perm is not None:
            other = F.cross_entropy(logits, y[perm], label_smoothing=smoothing)
            loss = lam * loss + (1 - lam) * other
        if soft is not None:
            target = soft[torch.as_tensor(rows)]
            if perm is not None:
                target = lam * target + (1 - lam) * target[perm]
            kd = distill_loss(logits, target, temp)
            loss = (1 - alpha) * loss + alpha * kd
        if proto is not None:
            loss = loss + proto.weighted_aux_loss(None, y)
        return loss, logits

    with _progress(progress and dist.is_main) as bar:
        for epoch in range(start_epoch, end_epoch):
            t0 = time.perf_counter()
            train_loader.set_epoch(epoch)
            net.train()
            task = None
            if bar is not None:
                task = bar.add_task(f"epoch {epoch + 1}/{cfg.train.epochs}", total=steps, stats="")
            loss_sum, correct, seen = 0.0, 0, 0
            order = train_loader.epoch_indices(epoch)
            for it, (x, y) in enumerate(train_loader):
                lr = lr_at(epoch * steps + it, steps, cfg)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                perm, lam = None, 1.0
                if mixing:
                    rng = mix_rng(cfg.train.seed, epoch, it)
                    if rng.random() < cfg.train.mixup_prob:
                        x, perm, lam = mix_batch(x, layout, mode, cfg.train.mixup, rng)
                at = it * train_loader.batch_size
                rows = order[at : at + len(y)]
                x2 = y2 = None
                if partners is not None:
                    g = seeded_generator(cfg.train.seed, epoch, _VIEWS, dist.rank, it)
                    x2, y2 = train_loader.batch(pick_partners(partners, rows, g), g)
                optimizer.zero_grad(set_to_none=True)
                draws = torch.get_rng_state() if cfg.train.sam_rho > 0 else None
                loss, logits = batch_loss(x, y, x2, y2, perm, lam, rows)
                loss.backward()
                if draws is not None:
                    moves = sam_ascend(model, cfg.train.sam_rho)
                    optimizer.zero_grad(set_to_none=True)
                    # The same random draws (e.g. frame averaging's sampled frame) as the
                    # first pass, so both gradients see one input, and the run's draws stay
                    # those of a run without SAM.
                    after = torch.get_rng_state()
                    torch.set_rng_state(draws)
                    with kept_batchnorm_stats(model):
                        batch_loss(x, y, x2, y2, perm, lam, rows)[0].backward()
                    torch.set_rng_state(after)
                    sam_return(moves)
                optimizer.step()
                if ema is not None:
                    ema.update(model)
                loss_sum += float(loss.detach()) * len(y)
                # Under mixing, a clip counts as right when it predicts its larger label share.
                shown = y if perm is None or lam >= 0.5 else y[perm]
                correct += int((logits.argmax(1) == shown).sum())
                seen += len(y)
                if task is not None:
                    bar.update(
                        task,
                        advance=1,
                        stats=f"loss {loss_sum / seen:.3f} acc {100 * correct / seen:.1f} "
                        f"lr {lr:.4f}",
                    )
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": loss_sum / max(seen, 1),
                "train_acc": 100.0 * correct / max(seen, 1),
            }
            is_last = epoch + 1 == cfg.train.epochs
            if is_last and proto is not None and ema is not None:
                # Project and fine-tune the averaged weights: they are what gets shipped.
                model.load_state_dict(ema.model.state_dict())
            if is_last and proto is not None and dist.is_main:
                row.update(_push(model, train_split, layout, cfg, classes, bar))
            if is_last and proto is not None and ema is not None:
                ema.model.load_state_dict(model.state_dict())
            eval_model = ema.model if ema is not None else model
            if (
                val_loader is not None
                and dist.is_main
                and ((epoch + 1) % cfg.train.eval_every == 0 or is_last)
            ):
                probs, labels = predict_split(eval_model, val_loader if is_last else quick_loader)
                m = classification_metrics(probs, labels, classes)
                row.update(
                    val_top1=m["top1"], val_top5=m["top5"], val_mean_class_acc=m["mean_class_acc"]
                )
                row["val_clips"] = cfg.data.test_clips if is_last else quick_clips
            row["epoch_seconds"] = time.perf_counter() - t0
            history.append(row)
            paces.append(row["epoch_seconds"])
            if bar is not None:
                # The bar shows the running epoch only; each finished epoch leaves one summary
                # line, which is also all a log file (nohup, a batch job) gets.
                bar.remove_task(task)
                bar.console.print(_epoch_line(row, paces, cfg.train.epochs), soft_wrap=True)
            logs.write(row)
            if dist.is_main:
                ck = {
                    "model": eval_model.state_dict(),
                    "config": cfg.to_dict(),
                    "layout": layout.to_dict(),
                    "classes": classes,
                    "in_channels": in_channels,
                    "arch": arch,
                    "epoch": epoch + 1,
                    "metrics": {k: v for k, v in row.items() if k.startswith("val_")},
                    "history": history,
                    "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(),
                    "meta": meta,
                }
                if ema is not None:
                    ck["raw_model"] = model.state_dict()
                    ck["ema_updates"] = ema.updates
                top1 = row.get("val_top1")
                # A prototype model is only complete after projection (last epoch).
                if top1 is not None and top1 > best and (proto is None or is_last):
                    best = top1
                    ck["best_top1"] = best
                    save_checkpoint(ck, out / "best.pt")
                ck["best_top1"] = best
                save_checkpoint(ck, last_path)
    return {"history": history, "best_top1": best, "out": str(out)}


def load_for_eval(checkpoint: str | Path) -> tuple[dict[str, Any], nn.Module, Config]:
    """Load a checkpoint and rebuild its model in eval mode."""
    ck = load_checkpoint(checkpoint)
    cfg = config_from_dict(ck["config"])
    return ck, build_from_checkpoint(ck), cfg


def check_occlude_part(ck: dict[str, Any], occlude: str | None) -> None:
    """Refuse a body part the checkpoint's layout does not have, naming the checkpoint."""
    if occlude is None:
        return
    lay = checkpoint_layout(ck)
    if occlude not in lay.parts:
        raise ConfigError(
            f"{ck['path']}: cannot occlude {occlude!r}: its layout {lay.name!r} has no such "
            f"part; give one of {', '.join(lay.parts)}"
        )


def checkpoint_probs(
    checkpoint: str | Path,
    data_dir: str | Path,
    split: str | None = None,
    clips: int | None = None,
    indices: np.ndarray | None = None,
    flip: bool | None = None,
    rotate: list[Any] | None = None,
    fix: str = "evaluate on the dataset the model was trained for",
    occlude: str | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[str]]:
    """Class probabilities of one checkpoint on a split (optionally a subset of its clips).

    ``fix`` ends the error raised when the checkpoint's classes differ from the store's;
    ``occlude`` names a body part hidden in every clip (see :class:`ClipLoader`);
    ``progress`` shows a bar of batches on a terminal.
    """
    from protoskel.data.store import open_store

    ck, model, cfg = load_for_eval(checkpoint)
    check_occlude_part(ck, occlude)
    store = open_store(data_dir)
    lay = checkpoint_layout(ck)
    if list(store.classes) != list(ck["classes"]):
        raise CheckpointError(
            f"{ck['path']}: trained on classes {ck['classes']} but {data_dir} has "
            f"{store.classes}; {fix}"
        )
    if store.layout.joints != lay.joints:
        raise CheckpointError(
            f"{ck['path']}: trained on layout {lay.name!r} but {data_dir} uses "
            f"{store.layout.name!r}"
        )
    name = split or cfg.data.val_split
    sp = store.split(name)
    if indices is not None:
        sp = subset_split(sp, indices)
    if clips is not None:
        cfg.data.test_clips = clips
    if flip is not None:
        cfg.data.test_flip = bool(flip)
    if rotate is not None:
        cfg.data.test_rotate = list(rotate)  # checked by the loader
    loader = eval_loader(sp, lay, cfg, mirror=cfg.data.test_flip, occlude=occlude)
    label = f"eval {Path(ck['path']).stem}" if progress else None
    probs, labels = predict_split(model, loader, progress=label)
    return probs, labels, ck, list(store.classes)


def evaluate(
    checkpoint: str | Path,
    data_dir: str | Path,
    *,
    split: str | None = None,
    clips: int | None = None,
    confusion_png: str | Path | None = None,
    flip: bool | None = None,
    rotate: list[Any] | None = None,
    occlude: str | None = None,
    save_probs: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """top1/top5/mean_class_acc/n and per-class accuracy of a checkpoint on a prepared split.

    ``save_probs`` writes the class probabilities as a prediction file for ``compare``;
    ``progress`` shows a bar on a terminal.
    """
    from protoskel.training.compare import check_predictions_path

    if save_probs is not None:
        check_predictions_path(save_probs)
    probs, labels, ck, classes = checkpoint_probs(
        checkpoint,
        data_dir,
        split,
        clips,
        flip=flip,
        rotate=rotate,
        occlude=occlude,
        progress=progress,
    )
    m = classification_metrics(probs, labels, classes)
    if confusion_png is not None:
        title = f"{Path(ck['path']).name} on {Path(data_dir).name}: top1 {m['top1']:.2f}%"
        save_confusion_png(np.asarray(m["confusion"]), classes, confusion_png, title)
        m["confusion_png"] = str(confusion_png)
    m["checkpoint"] = ck["path"]
    m["split"] = split or ck["config"]["data"]["val_split"]
    if occlude is not None:
        m["occluded_part"] = occlude
    if save_probs is not None:
        source = {
            "checkpoint": ck["path"],
            "stream": ck["config"]["data"]["stream"],
            "flip": effective_flip(flip, ck),
            "clips": clips if clips is not None else ck["config"]["data"].get("test_clips", 1),
            "rotate": rotate,
        }
        m["probs_file"] = str(
            save_split_predictions(save_probs, probs, labels, data_dir, m, source)
        )
    return m


def effective_flip(flip: bool | None, ck: dict[str, Any]) -> bool:
    """The mirror setting an evaluation used: the option, else the checkpoint's recipe."""
    return bool(ck["config"]["data"].get("test_flip")) if flip is None else bool(flip)


def save_split_predictions(
    path: str | Path,
    probs: np.ndarray,
    labels: np.ndarray,
    data_dir: str | Path,
    metrics: dict[str, Any],
    source: dict[str, Any],
) -> Path:
    """Write probabilities on ``metrics["split"]`` of a store, with its clip ids and classes."""
    from protoskel.data.store import open_store
    from protoskel.training.compare import Predictions, save_predictions

    store = open_store(data_dir)
    sp = store.split(metrics["split"])
    info = {**source, "data": str(data_dir), "split": metrics["split"], "top1": metrics["top1"]}
    if metrics.get("occluded_part"):
        info["occlude"] = metrics["occluded_part"]
    return save_predictions(path, Predictions(probs, labels, sp.ids, list(store.classes), info))
