"""Sharpness-aware minimisation: the helpers, and the trainer's SAM step against a hand-made one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from _tiny import write_tiny_store
from protoskel.data.store import open_store
from protoskel.errors import ConfigError
from protoskel.training.checkpoint import load_checkpoint
from protoskel.training.config import load_config
from protoskel.training.distributed import DistInfo
from protoskel.training.sam import kept_batchnorm_stats, sam_ascend, sam_return
from protoskel.training.trainer import _loader, build_model_from_config, train

# One SGD step over the whole tiny training split (36 clips), without momentum or decay, so
# the trainer's update is w - lr * grad and can be rebuilt by hand. Dropout makes the two
# passes' random draws matter; the rotation makes the loader's draws matter.
RECIPE = {
    "model": {"backbone": "atgcn", "kwargs": {"width": 8, "depth": 3}, "dropout": 0.3},
    "data": {"num_frames": 12, "augment": {"rotate": 0.3}},
    "train": {
        "epochs": 1,
        "batch_size": 36,
        "optimizer": "sgd",
        "lr": 0.5,
        "momentum": 0.0,
        "nesterov": False,
        "weight_decay": 0.0,
        "warmup_epochs": 0,
        "label_smoothing": 0.0,
        "sam_rho": 0.05,
        "threads": 1,
    },
}


def test_ascend_moves_by_rho_along_the_gradient_and_return_undoes_it() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    net(torch.randn(5, 4)).square().sum().backward()
    before = [p.detach().clone() for p in net.parameters()]
    grads = [p.grad.clone() for p in net.parameters()]
    moves = sam_ascend(net, 0.05)
    params = list(net.parameters())
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before, strict=True)])
    g = torch.cat([x.flatten() for x in grads])
    assert float(step.norm()) == pytest.approx(0.05, rel=1e-5)
    assert torch.allclose(step, 0.05 * g / g.norm(), atol=1e-7)
    sam_return(moves)
    assert all(torch.allclose(p, b, atol=1e-7) for p, b in zip(params, before, strict=True))


def test_ascend_without_gradients_moves_nothing() -> None:
    net = nn.Linear(3, 2)
    before = net.weight.detach().clone()
    assert sam_ascend(net, 0.05) == []
    assert torch.equal(net.weight, before)


def test_kept_batchnorm_stats_restores_running_statistics() -> None:
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).train()
    x = torch.randn(8, 3) * 5 + 2
    saved = {k: v.clone() for k, v in bn.state_dict().items()}
    with kept_batchnorm_stats(bn):
        bn(x)
    assert all(torch.equal(v, bn.state_dict()[k]) for k, v in saved.items())
    bn(x)  # control: outside the block the statistics do move
    assert not torch.equal(saved["1.running_mean"], bn[1].running_mean)


def _hand_made_sam_step(cfg, store_dir: Path) -> dict[str, torch.Tensor]:
    """The trainer's first step rebuilt from its parts: model, batch and random draws."""
    store = open_store(store_dir)
    split = store.split(cfg.data.train_split)
    torch.manual_seed(cfg.train.seed)
    in_channels = int(store.manifest["num_coords"])
    model = build_model_from_config(cfg, store.layout, len(store.classes), in_channels)
    loader = _loader(split, store.layout, cfg, True, DistInfo())
    loader.set_epoch(0)
    x, y = next(iter(loader))
    model.train()
    params = list(model.named_parameters())
    draws = torch.get_rng_state()
    nn.functional.cross_entropy(model(x), y).backward()
    g = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
    norm = torch.cat([t.flatten() for t in g if t is not None]).norm()
    stats = {k: v.clone() for k, v in model.state_dict().items() if k not in dict(params)}
    with torch.no_grad():
        for p, t in zip(model.parameters(), g, strict=True):
            if t is not None:
                p.add_(cfg.train.sam_rho * t / norm)
    model.zero_grad()
    torch.set_rng_state(draws)
    nn.functional.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        for p, t in zip(model.parameters(), g, strict=True):
            if t is not None:
                p.sub_(cfg.train.sam_rho * t / norm)
                p.sub_(cfg.train.lr * p.grad)
    state = model.state_dict()
    state.update(stats)  # the second pass must not have moved them
    return state


def test_trainer_sam_step_matches_a_hand_made_one(tmp_path: Path) -> None:
    store = write_tiny_store(tmp_path / "store")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(RECIPE))
    cfg = load_config(tmp_path / "r.yaml")
    train(cfg, store, tmp_path / "run", progress=False)
    got = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    want = _hand_made_sam_step(cfg, store)
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.allclose(got[k].float(), v.float(), atol=1e-6), k
    # Control: the plain step is a different model, so the comparison above has teeth.
    plain = load_config(tmp_path / "r.yaml", ["train.sam_rho=0.0"])
    train(plain, store, tmp_path / "plain", progress=False)
    other = load_checkpoint(tmp_path / "plain" / "last.pt")["model"]
    assert not all(torch.allclose(other[k].float(), v.float(), atol=1e-6) for k, v in want.items())


def _full_and_resumed(
    train_opts: dict, tmp_path: Path, edit: Callable[[Path], None] = lambda _: None
) -> tuple[dict, dict, Path, object]:
    """An uninterrupted run and one stopped after epoch 1, ``edit``-ed, then resumed."""
    store = write_tiny_store(tmp_path / "store")
    recipe = {**RECIPE, "train": {**RECIPE["train"], **train_opts}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    cfg = load_config(tmp_path / "r.yaml")
    train(cfg, store, tmp_path / "full", progress=False)
    train(cfg, store, tmp_path / "part", progress=False, max_epochs=1)
    edit(tmp_path / "part" / "last.pt")
    train(cfg, store, tmp_path / "part", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    return a, b, store, cfg


def test_sam_resumes_exactly(tmp_path: Path) -> None:
    a, b, _, _ = _full_and_resumed({"epochs": 3, "batch_size": 8}, tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_negative_rho_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(RECIPE))
    with pytest.raises(ConfigError, match=r"train\.sam_rho: must be >= 0"):
        load_config(tmp_path / "r.yaml", ["train.sam_rho=-0.1"])


@pytest.mark.parametrize(
    "extra",
    [
        {"train": {"mixup": 0.4, "mixup_mode": "parts"}},
        {"train": {"view_weight": 1.0, "view_pattern": "_nomatch$"}},
        {"model": {"head": "prototype", "head_kwargs": {"window": 2}, "dropout": 0.0}},
        {"model": {"invariance": "frame_averaging", "invariance_train": "sample"}},
    ],
    ids=["mixup", "cross-view", "prototype", "frame-averaging"],
)
def test_sam_composes_with_the_other_training_options(tmp_path: Path, extra: dict) -> None:
    store = write_tiny_store(tmp_path / "store")
    recipe = {k: {**v, **extra.get(k, {})} for k, v in RECIPE.items()}
    recipe["train"].update(epochs=2, batch_size=12, push_epochs=1)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    res = train(load_config(tmp_path / "r.yaml"), store, tmp_path / "sam", progress=False)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in res["history"])
    plain = load_config(tmp_path / "r.yaml", ["train.sam_rho=0.0"])
    train(plain, store, tmp_path / "plain", progress=False)
    a = load_checkpoint(tmp_path / "sam" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "plain" / "last.pt")["model"]
    floats = [k for k in a if isinstance(a[k], torch.Tensor) and a[k].is_floating_point()]
    assert not all(torch.allclose(a[k], b[k]) for k in floats)


def test_a_run_from_before_sam_resumes(tmp_path: Path) -> None:
    """A checkpoint written before train.sam_rho existed has no such key; it resumes as 0."""
    from protoskel.training.checkpoint import save_checkpoint

    def forget_sam(path: Path) -> None:
        ck = load_checkpoint(path)
        del ck["config"]["train"]["sam_rho"]
        save_checkpoint({k: v for k, v in ck.items() if k not in ("format", "version", "path")},
                        path)  # fmt: skip

    a, b, store, _ = _full_and_resumed({"epochs": 2, "sam_rho": 0.0}, tmp_path, forget_sam)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="different config"):
        other = load_config(tmp_path / "r.yaml", ["train.sam_rho=0.05"])
        train(other, store, tmp_path / "part", resume=True, progress=False)
