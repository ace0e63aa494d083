"""Explanation reports: one self-contained HTML page, a JSON record and an animated GIF.

:func:`write_report` explains one clip (a file, a video, or a :class:`SkeletonSequence`) with a
checkpoint: the top classes, where the model looked (per-joint and per-frame importance), and,
for prototype models, the prototypes that make up the top class's logit, each drawn as the
matched segment of the input beside the training segment it was projected from. The training
keypoints are not in the checkpoint (only clip ids and frame ranges); with ``data_root`` (a
prepared store, or a folder of clip files named by clip id) they are read back and drawn,
otherwise the panel says which clip and frames it is and how to provide the data.

:func:`write_gallery` writes a page of every prototype of a checkpoint. Both write into a
temporary folder beside ``out_dir`` and rename it into place, so a report is never half-written.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DatasetError, ProtoskelError
from protoskel.explain.attribution import (
    frame_importance,
    gradient_saliency,
    joint_importance,
    normalize01,
    own_part_share,
    prototype_evidence,
    prototype_masking,
    supporting_prototypes,
)
from protoskel.explain.render import Panel, data_uri, heatmap_png, panels_png, skeleton_gif, to_xy
from protoskel.inference import Predictor, is_video, load_input, require_prototypes

__all__ = [
    "GALLERY_FORMAT",
    "REPORT_FORMAT",
    "SourceClips",
    "explain_clip",
    "write_gallery",
    "write_report",
]

REPORT_FORMAT = "protoskel-explanation"
GALLERY_FORMAT = "protoskel-prototypes"
_MARKERS = {REPORT_FORMAT: "explanation.json", GALLERY_FORMAT: "prototypes.json"}


# ---------------------------------------------------------------------------- output folder
def _is_ours(folder: Path, fmt: str) -> bool:
    marker = folder / _MARKERS[fmt]
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("format") == fmt
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def _atomic_dir(out: str | Path, fmt: str) -> Iterator[Path]:
    """Yield a fresh hidden folder beside ``out``; on success it replaces ``out`` by renames.

    An existing ``out`` is replaced only when it is empty or a previous output of the same kind,
    so a mistyped ``--out`` never deletes someone's folder.
    """
    dst = Path(out).expanduser()
    if dst.exists() and not (dst.is_dir() and (_is_ours(dst, fmt) or not any(dst.iterdir()))):
        raise ProtoskelError(
            f"{dst}: exists and is not a protoskel {fmt.split('-')[1]} folder; choose another "
            "--out or remove it"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()  # plain mkdir so the umask sets the permissions of the final folder
    try:
        yield tmp
        if dst.exists():
            old = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def _r(v: Any, nd: int = 4) -> Any:
    """Round floats (and arrays of them) for compact JSON."""
    if isinstance(v, np.ndarray):
        return np.round(v.astype(np.float64), nd).tolist()
    return round(float(v), nd)


# --------------------------------------------------------------------------- training clips
class SourceClips:
    """Training segments behind prototypes, read back from a prepared store or a clip folder.

    ``data_root`` is a prepared store (clips looked up by id in the checkpoint's training split,
    then in the other splits) or a folder of clip files named after their ids (e.g. NW-UCLA's
    ``all_sqe``). Each clip goes through the checkpoint's own pipeline (single view, as in
    prototype projection), so the frame ranges of the provenance index it exactly.
    """

    def __init__(self, data_root: str | Path, predictor: Predictor) -> None:
        from protoskel.data.store import is_store, open_store

        self.root = Path(data_root).expanduser()
        self.pred = predictor
        self._cache: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        #: Per looked-up clip id: where it was found (split name or file), None when missing.
        self.found_in: dict[str, str | None] = {}
        self.store = None
        self.files: dict[str, Path] | None = None
        self.notes: list[str] = []
        if not self.root.is_dir():
            raise DatasetError(
                f"{self.root}: --data must be a prepared store folder (or a folder of clip "
                "files); no such folder"
            )
        if is_store(self.root):
            self.store = open_store(self.root)
            meta = predictor.checkpoint.get("meta") or {}
            trained_on = meta.get("dataset")
            if trained_on and self.store.manifest.get("dataset") not in (None, trained_on):
                self.notes.append(
                    f"the checkpoint was trained on dataset {trained_on!r} but {self.root} holds "
                    f"{self.store.manifest.get('dataset')!r}"
                )
            first = meta.get("train_split") or predictor.config.data.train_split
            names = self.store.split_names
            self.splits = [first, *[n for n in names if n != first]] if first in names else names
            self._ids: dict[str, dict[str, int]] = {}

    @property
    def kind(self) -> str:
        """``"store"`` or ``"folder"``."""
        return "store" if self.store is not None else "folder"

    def _find_in_store(self, clip_id: str) -> tuple[SkeletonSequence, str] | None:
        assert self.store is not None
        for name in self.splits:
            if name not in self._ids:
                self._ids[name] = {c: i for i, c in enumerate(self.store.split(name).ids)}
            i = self._ids[name].get(clip_id)
            if i is not None:
                return self.store.split(name).get(i), name
        return None

    def _find_file(self, clip_id: str) -> Path | None:
        from protoskel.inference import _SKELETON_ENDINGS

        if self.files is None:
            self.files = {}
            for dirpath, _, names in os.walk(self.root):
                for n in names:
                    if n.lower().endswith(_SKELETON_ENDINGS):
                        self.files.setdefault(n.split(".")[0], Path(dirpath) / n)
        hit = self.files.get(clip_id)
        if hit is None:  # e.g. MSR's a01_s01_e01_skeleton3D.txt for clip a01_s01_e01
            hit = next((p for s, p in self.files.items() if s.startswith(f"{clip_id}_")), None)
        return hit

    def locate(self, clip_id: str) -> tuple[SkeletonSequence, str] | None:
        """The clip with this id and where it was found (split name or file path), or None."""
        if self.store is not None:
            return self._find_in_store(clip_id)
        from protoskel.data.readers import read_clip

        path = self._find_file(clip_id)
        return None if path is None else (read_clip(path), str(path))

    def has(self, clip_id: str) -> bool:
        """True when the clip can be found."""
        return self.locate(clip_id) is not None

    def segment(self, prov: dict[str, Any] | None) -> tuple[np.ndarray | None, str]:
        """Front-view points (S, V, 2) of a prototype's source segment, and a note on it."""
        if prov is None:
            return None, "never projected onto a training segment"
        cid = str(prov.get("clip_id"))
        if prov.get("enrolled"):
            return None, f"enrolled from example {cid!r}, which is not in the training data"
        if cid not in self._cache:
            found = self.locate(cid)
            self.found_in[cid] = None if found is None else found[1]
            if found is None:
                self._cache[cid] = None
            else:
                x = self.pred.prepare(found[0], stream="joint", num_clips=1)
                self._cache[cid] = to_xy(x, self.pred.layout)
        got = self._cache[cid]
        if got is None:
            return None, f"clip {cid!r} is not in {self.root}"
        xy, _ = got
        person = min(int(prov.get("person", 0)), xy.shape[0] - 1)
        fs, fe = int(prov["frame_start"]), int(prov["frame_end"])
        return xy[person, fs:fe], f"{cid}, frames {_frames(prov)}"


def _frames(prov: dict[str, Any]) -> str:
    """Human frame range of a provenance record (original clip frames when known, 1-based)."""
    if "orig_frame_start" in prov:
        return f"{prov['orig_frame_start'] + 1}-{prov['orig_frame_end']}"
    return f"{prov['frame_start'] + 1}-{prov['frame_end']} of {prov.get('num_frames')} sampled"


def _placeholder(prov: dict[str, Any] | None, why: str) -> str:
    if prov is None:
        return "no source segment: " + why
    if prov.get("enrolled"):
        return why
    return (
        f"training clip {prov.get('clip_id')}\nframes {_frames(prov)}, person "
        f"{prov.get('person', 0)}\n{why}"
    )


# ------------------------------------------------------------------------------ explanation
def _input_name(src: str | Path | SkeletonSequence) -> str:
    if isinstance(src, SkeletonSequence):
        return src.meta.get("path") or src.id or "clip"
    return str(src)


def explain_clip(
    pred: Predictor,
    seq: SkeletonSequence,
    *,
    top_k_classes: int = 5,
    top_prototypes: int = 5,
) -> dict[str, Any]:
    """The facts of an explanation (no files): predictions, importance maps, prototypes.

    Returns a dict with ``facts`` (JSON-ready, what explanation.json holds minus file names)
    and ``arrays``: ``xy``/``valid`` (front-view input points of the first view),
    ``importance`` (T, V), ``saliency`` (T, V), ``positions`` (T,).
    """
    pred.require_person(seq)
    adapted = pred.adapt(seq)
    # The class explained is the one predict reports: probabilities averaged over every view
    # the recipe tests (its clips, rotations and mirror), as Predictor.probabilities does.
    views = pred.prepare(adapted, adapt=False, mirror=pred.test_flip, rotate=True)
    with torch.no_grad():
        probs = F.softmax(pred.model(views), dim=1).mean(0).double().numpy()
    ranked = pred.ranked(probs, top_k_classes)
    target = ranked[0]["index"]
    # The evidence is of the first sampled view as it is, unrotated and unmirrored.
    x0 = pred.prepare(adapted, adapt=False)[:1]
    pos = pred.positions(adapted.num_frames)[0].double().numpy()
    xy, valid = to_xy(pred.prepare(adapted, stream="joint", adapt=False), pred.layout)
    saliency = gradient_saliency(pred.model, x0, target)
    lay = pred.layout
    facts: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": 1,
        "checkpoint": pred.path,
        "input": {
            "id": seq.id,
            "layout": seq.layout,
            "frames": adapted.num_frames,
            "persons": seq.num_persons,
            "coords": seq.num_coords,
        },
        "model": {
            "backbone": pred.config.model.backbone,
            "head": pred.head_name,
            "stream": pred.stream,
            "layout": lay.name,
            "num_frames": pred.num_frames,
            "test_clips": pred.test_clips,
            "test_flip": pred.test_flip,
            "test_rotate": pred.test_rotate,
            "invariance": pred.config.model.invariance,
            "dataset": (pred.checkpoint.get("meta") or {}).get("dataset"),
        },
        "classes": pred.classes,
        "predictions": ranked,
        "views_averaged": len(views),
        "explained_class": {**ranked[0], "view": 0},
        "positions": _r(pos, 2),
        "joints": list(lay.joints),
        "saliency": {
            "method": "gradient_x_input",
            "map": _r(saliency),
            "joints": _r(joint_importance(saliency)),
            "frames": _r(frame_importance(saliency)),
        },
        "prototypes": [],
    }
    importance = saliency
    if pred.is_prototype:
        ev = prototype_evidence(pred.model, x0, pos)
        support = supporting_prototypes(ev["contributions"][target])
        listed = support[: max(0, top_prototypes)]
        # One set of masked copies gives the class map and every prototype's own map.
        drops = prototype_masking(pred.model, x0, target)
        importance = normalize01(drops[support].sum(0))
        facts["importance"] = {
            "method": "prototype_masking",
            "map": _r(importance),
            "joints": _r(joint_importance(importance)),
            "frames": _r(frame_importance(importance)),
        }
        facts["prototypes"], facts["logit"] = _prototype_facts(pred, ev, target, listed, drops)
    else:
        facts["importance"] = {**facts["saliency"]}
    return {
        "facts": facts,
        "arrays": {
            "xy": xy,
            "valid": valid,
            "importance": importance,
            "saliency": saliency,
            "positions": pos,
        },
    }


def _dependence(imp: np.ndarray, part: Sequence[int], joints: Sequence[str]) -> dict[str, Any]:
    """Which joints one prototype's match depended on (its masking map), and how local."""
    per_joint = np.clip(imp, 0.0, None).sum(0)
    top = [int(j) for j in np.argsort(-per_joint, kind="stable")[:3]] if per_joint.any() else []
    return {
        "top_joints": [joints[j] for j in top],
        "own_part_share": _r(own_part_share(imp, part)),
    }


def _prototype_facts(
    pred: Predictor,
    ev: dict[str, Any],
    target: int,
    order: list[int],
    drops: np.ndarray,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    c = ev["contributions"][target]
    total_pos = float(c[c > 0].sum())
    parts = list(pred.layout.parts.values())
    out = []
    for rank, q in enumerate(order, 1):
        pi = int(ev["proto_part"][q])
        cls = int(ev["proto_class"][q])
        prov = ev["provenance"][q]
        item: dict[str, Any] = {
            "rank": rank,
            "prototype": q,
            "class": cls,
            "class_name": pred.classes[cls],
            "part": ev["part_names"][pi],
            "joints": [pred.layout.joints[j] for j in parts[pi]],
            "similarity": _r(ev["similarity"][q]),
            "weight": _r(ev["weight"][target, q]),
            "contribution": _r(c[q]),
            "share": _r(c[q] / total_pos) if total_pos > 0 else 0.0,
            "input": {
                "person": int(ev["person"][q]),
                "frame_start": int(ev["frame_start"][q]),
                "frame_end": int(ev["frame_end"][q]),
                "clip_frame_start": int(ev["clip_frame_start"][q]),
                "clip_frame_end": int(ev["clip_frame_end"][q]),
            },
            "source": None if prov is None else dict(prov),
            "depends_on": _dependence(drops[q], parts[pi], pred.layout.joints),
        }
        out.append(item)
    logit = {
        "value": _r(ev["logits"][target]),
        "bias": _r(ev["bias"][target]),
        "prototypes_total": _r(c.sum()),
        "listed_total": _r(sum(float(c[q]) for q in order)),
        "num_prototypes": len(c),
        "num_contributing": int((c > 0).sum()),
    }
    return out, logit


# -------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f6f4;
color:#222;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.15em;margin:28px 0 8px;border-bottom:1px solid
#ddd;padding-bottom:4px}
.meta{color:#555;font-size:.9em}code{background:#eceae6;padding:0 4px;border-radius:3px}
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left;font-size:.95em}
.bar{background:#e4e2dd;width:260px;height:12px;border-radius:6px;overflow:hidden}
.bar span{display:block;height:100%;background:#c0392b}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.card{background:#fff;border:1px solid #e2e0db;border-radius:8px;padding:12px;margin:10px 0}
.card img{max-width:100%}.small{font-size:.85em;color:#555}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:12px}
.pill{display:inline-block;background:#eee;border-radius:9px;padding:0 8px;font-size:.8em}
details{margin-top:6px}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def _e(v: Any) -> str:
    return html.escape(str(v))


def _img(data: bytes, mime: str, alt: str) -> str:
    return f'<img src="{data_uri(data, mime)}" alt="{_e(alt)}">'


def _report_html(facts: dict[str, Any], images: dict[str, bytes], input_name: str) -> str:
    m, top = facts["model"], facts["explained_class"]
    rows = "".join(
        f'<tr><td>{_e(p["label"])}</td><td><div class=bar><span style="width:'
        f'{100 * p["prob"]:.1f}%"></span></div></td><td>{100 * p["prob"]:.1f}%</td></tr>'
        for p in facts["predictions"]
    )
    inp = facts["input"]
    mapped = (
        f" (mapped from layout <code>{_e(inp['layout'])}</code>)"
        if inp["layout"] != m["layout"]
        else ""
    )
    body = [
        f"<h1>Why <em>{_e(top['label'])}</em>?</h1>",
        f"<p class=meta>input <code>{_e(input_name)}</code>: {inp['frames']} frames, "
        f"{inp['persons']} person(s), layout <code>{_e(m['layout'])}</code>{mapped}, "
        f"{m['num_frames']} frames sampled as in training.<br>model <code>"
        f"{_e(facts['checkpoint'])}</code>: {_e(m['backbone'])} backbone, {_e(m['head'])} head, "
        f"{_e(m['stream'])} stream"
        + (f", trained on {_e(m['dataset'])}" if m.get("dataset") else "")
        + ".</p>",
        "<h2>Prediction</h2>",
        f"<table>{rows}</table>",
    ]
    n_views = facts.get("views_averaged", 1)
    if n_views > 1:
        body.append(
            f"<p class=small>Averaged over the {n_views} views the recipe tests (its clips"
            + (", rotations" if m.get("test_rotate") else "")
            + (" and their mirror images" if m.get("test_flip") else "")
            + "), as <code>predict</code> does; the maps below are of the first view.</p>"
        )
    body.append("<h2>Where the model looked</h2>")
    method = facts["importance"]["method"]
    how = (
        "How much the prototypes' evidence for the predicted class depends on each joint's "
        "motion, in blocks of 4 frames (measured by holding random sets of blocks still): "
        "the joints and moments those matches used."
        if method == "prototype_masking"
        else "Gradient x input saliency of the predicted class's logit (this model has no "
        "prototypes; saliency shows local sensitivity, not the model's reasoning)."
    )
    body.append(
        f"<p class=small>{how} Colour and size of the joints: importance in that frame; the bar "
        "under the skeleton: importance per frame. The skeleton is the normalised input, "
        "rotated to face the viewer.</p>"
    )
    body.append(
        "<div class=row>"
        + _img(images["explanation.gif"], "image/gif", "animated skeleton with importance")
        + _img(images["importance.png"], "image/png", "importance per joint and frame")
        + "</div>"
    )
    if facts["prototypes"]:
        lg = facts["logit"]
        body.append(f"<h2>The evidence for <em>{_e(top['label'])}</em></h2>")
        body.append(
            f"<p>Its logit {lg['value']:.3f} = bias {lg['bias']:.3f} + the contributions "
            f"(weight x similarity) of {lg['num_contributing']} of {lg['num_prototypes']} "
            f"prototypes ({lg['prototypes_total']:.3f}); the {len(facts['prototypes'])} largest "
            f"give {lg['listed_total']:.3f}. Each prototype is a real piece of motion of one "
            "body part in a training clip; left: where this input matched it, right: the "
            "training segment it comes from.</p>"
        )
        if facts.get("data_root") is None:
            body.append(
                "<p class=small>Checkpoints keep only the clip id and frames of each prototype's "
                "training segment, not its keypoints: add <code>--data PREPARED_STORE</code> (the "
                "prepared training data) to <code>protoskel explain</code> to draw them.</p>"
            )
        for note in facts.get("notes", []):
            body.append(f"<p class=small>Note: {_e(note)}.</p>")
        for p in facts["prototypes"]:
            body.append(_prototype_card(p, images.get(f"prototype_{p['rank']}.png")))
        body.append(
            "<h2>Baseline: gradient saliency</h2><p class=small>Gradient x input of the same "
            "logit, for comparison with the prototype evidence above.</p>"
            + _img(images["saliency.png"], "image/png", "gradient saliency")
        )
    elif m["head"] != "prototype":
        body.append(
            "<p class=small>This model has a linear head, so there are no prototypes to show; "
            "train with <code>model.head: prototype</code> for case-based explanations.</p>"
        )
    body.append(
        "<h2>For programs</h2><p class=small><code>explanation.json</code> in this folder holds "
        "the same facts (classes, probabilities, prototypes with their source clips and frame "
        "ranges, importance maps); <code>explanation.gif</code> is the animation.</p>"
    )
    return _page(f"protoskel: why {top['label']}", "\n".join(body))


def _prototype_card(p: dict[str, Any], png: bytes | None) -> str:
    src = p["source"] or {}
    dep = p["depends_on"]
    i = p["input"]
    where = (
        f"training clip <code>{_e(src.get('clip_id'))}</code> (class "
        f"{_e(src.get('class_name', p['class_name']))}), frames {_e(_frames(src))}"
        if src and not src.get("enrolled")
        else (
            f"enrolled example <code>{_e(src.get('clip_id'))}</code>"
            if src
            else "an unprojected prototype"
        )
    )
    img = _img(png, "image/png", f"prototype {p['prototype']}") if png else ""
    return (
        f"<div class=card><b>#{p['rank']}</b> <span class=pill>{_e(p['part'])}</span> "
        f"The {_e(p['part'].replace('_', ' '))} of this input in clip frames "
        f"{i['clip_frame_start'] + 1}-{i['clip_frame_end']} (input frames "
        f"{i['frame_start'] + 1}-{i['frame_end']}, person {i['person']}) looks like prototype "
        f"{p['prototype']} of class <em>{_e(p['class_name'])}</em>: the "
        f"{_e(p['part'].replace('_', ' '))} in {where}.<br><span class=small>similarity "
        f"{p['similarity']:.3f} x weight {p['weight']:.3f} = contribution "
        f"{p['contribution']:.3f} ({100 * p['share']:.1f}% of the positive evidence); "
        f"the match depended most on {_e(', '.join(dep['top_joints']))}, "
        f"{100 * dep['own_part_share']:.0f}% on the {_e(p['part'].replace('_', ' '))} "
        f"itself</span><br>{img}</div>"
    )


# ------------------------------------------------------------------------------- reports
def _load(
    src: str | Path | SkeletonSequence, progress: bool, max_frames: int | None
) -> SkeletonSequence:
    if isinstance(src, SkeletonSequence):
        return src
    return load_input(src, max_frames=max_frames, progress=progress and is_video(src))


def _predictor(checkpoint: str | Path | Predictor) -> Predictor:
    return (
        checkpoint if isinstance(checkpoint, Predictor) else Predictor.from_checkpoint(checkpoint)
    )


def write_report(
    checkpoint: str | Path | Predictor,
    input_path_or_seq: str | Path | SkeletonSequence,
    out_dir: str | Path,
    *,
    top_k_classes: int = 5,
    top_prototypes: int = 5,
    data_root: str | Path | None = None,
    progress: bool = False,
    max_frames: int | None = None,
) -> Path:
    """Explain one clip; write ``index.html``, ``explanation.json`` and ``explanation.gif``.

    ``data_root`` (a prepared store or a folder of clip files) lets the report draw the
    training segments behind prototypes; ``max_frames`` caps the frames read from a video.
    Returns ``out_dir`` (replaced atomically).
    """
    pred = _predictor(checkpoint)
    seq = _load(input_path_or_seq, progress, max_frames)
    name = _input_name(input_path_or_seq)
    res = explain_clip(pred, seq, top_k_classes=top_k_classes, top_prototypes=top_prototypes)
    facts, arr = res["facts"], res["arrays"]
    facts["input"]["path"] = name
    sources = SourceClips(data_root, pred) if data_root is not None else None
    facts["data_root"] = None if sources is None else str(sources.root)
    if sources is not None and sources.notes:
        facts["notes"] = list(sources.notes)
    lay = pred.layout
    pos = arr["positions"]
    t = len(pos)
    labels = [f"input frame {k + 1}/{t}, clip frame {round(pos[k]) + 1}" for k in range(t)]
    imp = arr["importance"]
    images: dict[str, bytes] = {}
    with _atomic_dir(out_dir, REPORT_FORMAT) as tmp:
        top = facts["explained_class"]
        gif = skeleton_gif(
            tmp / "explanation.gif",
            arr["xy"],
            arr["valid"],
            lay,
            imp,
            frame_importance(imp),
            title=f"{top['label']} ({100 * top['prob']:.0f}%)",
            frame_labels=labels,
        )
        images["explanation.gif"] = gif.read_bytes()
        clip_labels = [str(round(p) + 1) for p in pos]
        images["importance.png"] = heatmap_png(
            imp,
            lay,
            title=f"importance ({facts['importance']['method']})",
            frame_labels=clip_labels,
        )
        if facts["prototypes"] or pred.is_prototype:
            images["saliency.png"] = heatmap_png(
                arr["saliency"], lay, title="gradient x input", frame_labels=clip_labels
            )
        for p in facts["prototypes"]:
            images[f"prototype_{p['rank']}.png"] = _prototype_png(p, arr, lay, pred, sources)
            if sources is not None and p["source"] and not p["source"].get("enrolled"):
                where = sources.found_in.get(str(p["source"]["clip_id"]))
                p["source"]["found"] = where is not None
                p["source"]["found_in"] = where
        files = {"html": "index.html", "gif": "explanation.gif"}
        for fname, data in images.items():
            if fname.endswith(".png"):
                (tmp / fname).write_bytes(data)
                files[fname.rsplit(".", 1)[0]] = fname
        facts["files"] = files
        _write_json(tmp / "explanation.json", facts)
        (tmp / "index.html").write_text(_report_html(facts, images, name), encoding="utf-8")
    return Path(out_dir).expanduser()


def _prototype_png(
    p: dict[str, Any],
    arr: dict[str, Any],
    lay: Any,
    pred: Predictor,
    sources: SourceClips | None,
) -> bytes:
    joints = list(lay.parts[p["part"]])
    i = p["input"]
    left = Panel(
        title=f"this input: {p['part'].replace('_', ' ')}",
        subtitle=f"clip frames {i['clip_frame_start'] + 1}-{i['clip_frame_end']}",
        xy=arr["xy"][i["person"], i["frame_start"] : i["frame_end"]],
        highlight=joints,
    )
    prov = p["source"]
    sub = "" if not prov else f"{prov.get('clip_id')}"
    if sources is None:
        xy, why = None, "pass --data PREPARED_STORE\n(the training data) to draw it"
    else:
        xy, why = sources.segment(prov)
    right = Panel(
        title=f"prototype {p['prototype']} ({p['class_name']})",
        subtitle=sub if xy is None else why,
        xy=xy,
        highlight=joints,
        color="#2c6fbb",
        text=_placeholder(prov, why),
    )
    return panels_png([left, right], lay)


def write_gallery(
    checkpoint: str | Path | Predictor,
    out_dir: str | Path,
    *,
    data_root: str | Path | None = None,
) -> Path:
    """A page of every prototype (class, part, source clip and frames, drawn when data is given).

    Writes ``index.html`` and ``prototypes.json`` into ``out_dir`` (replaced atomically) and
    returns it. Non-prototype checkpoints raise CheckpointError.
    """
    from protoskel.models.prototypes import find_prototype_head

    pred = _predictor(checkpoint)
    require_prototypes(pred, "a prototype gallery")
    head = find_prototype_head(pred.model)
    sources = SourceClips(data_root, pred) if data_root is not None else None
    weight = head.weight().detach().double().numpy()
    parts = list(pred.layout.parts.values())
    items, cards = [], {c: [] for c in range(head.num_classes)}
    for q in range(head.num_prototypes):
        cls, pi = int(head.proto_class[q]), int(head.proto_part[q])
        prov = head.provenance[q]
        item: dict[str, Any] = {
            "prototype": q,
            "class": cls,
            "class_name": pred.classes[cls],
            "part": head.part_names[pi],
            "weight": _r(weight[cls, q]),
            "source": None if prov is None else dict(prov),
        }
        png = None
        if sources is not None:
            xy, why = sources.segment(prov)
            if prov is not None and not prov.get("enrolled"):
                item["source"]["found"] = xy is not None
            png = panels_png(
                [
                    Panel(
                        title=f"#{q} {head.part_names[pi].replace('_', ' ')}",
                        subtitle=why if xy is not None else "",
                        xy=xy,
                        highlight=list(parts[pi]),
                        color="#2c6fbb",
                        text=_placeholder(prov, why),
                    )
                ],
                pred.layout,
            )
        items.append(item)
        cards[cls].append(_gallery_card(item, png))
    facts = {
        "format": GALLERY_FORMAT,
        "version": 1,
        "checkpoint": pred.path,
        "classes": pred.classes,
        "parts": list(head.part_names),
        "data_root": None if sources is None else str(sources.root),
        "prototypes": items,
    }
    hint = (
        ""
        if sources is not None
        else "<p class=small>The training keypoints are not stored in checkpoints: run "
        "<code>protoskel prototypes CHECKPOINT --out DIR --data PREPARED_STORE</code> to draw "
        "each prototype's training segment.</p>"
    )
    body = [
        f"<h1>Prototypes of <code>{_e(Path(pred.path).name)}</code></h1>",
        f"<p class=meta>{head.num_prototypes} prototypes, {head.num_classes} classes, parts: "
        f"{_e(', '.join(head.part_names))}. Each is a piece of motion of one body part in a "
        "training clip (or an enrolled example); the weight is how much its similarity counts "
        "towards its class.</p>",
        hint,
    ]
    for c, cs in cards.items():
        meta = head.class_meta[c] if c < len(head.class_meta) else {}
        tag = " <span class=pill>enrolled</span>" if meta.get("enrolled") else ""
        body.append(f"<h2>{_e(pred.classes[c])}{tag}</h2><div class=grid>{''.join(cs)}</div>")
    with _atomic_dir(out_dir, GALLERY_FORMAT) as tmp:
        _write_json(tmp / "prototypes.json", facts)
        (tmp / "index.html").write_text(
            _page(f"protoskel prototypes: {Path(pred.path).name}", "\n".join(body)),
            encoding="utf-8",
        )
    return Path(out_dir).expanduser()


def _gallery_card(item: dict[str, Any], png: bytes | None) -> str:
    src = item["source"]
    if src is None:
        where = "not projected"
    elif src.get("enrolled"):
        where = f"enrolled example <code>{_e(src.get('clip_id'))}</code>"
    else:
        where = f"<code>{_e(src.get('clip_id'))}</code>, frames {_e(_frames(src))}"
    img = _img(png, "image/png", f"prototype {item['prototype']}") if png else ""
    return (
        f"<div class=card><b>#{item['prototype']}</b> <span class=pill>{_e(item['part'])}"
        f"</span> weight {item['weight']:.3f}<br><span class=small>{where}</span><br>{img}</div>"
    )
