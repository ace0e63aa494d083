"""The ``protoskel`` command line: one Typer app, thin wrappers over library functions.

Errors that protoskel raises on purpose become a one-line message on stderr and exit code 2;
``--debug`` shows the traceback instead. ``--json`` output is one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from protoskel.errors import ProtoskelError

app = typer.Typer(
    help="protoskel: skeleton-based action recognition that shows why.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    # Help texts are plain text: rich markup would swallow examples such as "[ax, ay, az]".
    rich_markup_mode=None,
)
layouts_app = typer.Typer(help="Skeleton layouts (joints, bones, parts).", no_args_is_help=True)
datasets_app = typer.Typer(help="Datasets: list, prepare, inspect.", no_args_is_help=True)
app.add_typer(layouts_app, name="layouts")
app.add_typer(datasets_app, name="datasets")

_state = {"debug": False}


def echo_json(obj: Any) -> None:
    """Print one JSON object on stdout (and nothing else there)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def log(msg: str) -> None:
    """Progress and log lines go to stderr so stdout stays machine-readable."""
    sys.stderr.write(msg + "\n")


def _print_version(value: bool) -> None:
    """--version: print the version and exit."""
    if value:
        from protoskel import __version__

        typer.echo(f"protoskel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    _state["debug"] = debug


# ---------------------------------------------------------------- layouts
@layouts_app.command("list")
def layouts_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the built-in skeleton layouts."""
    from protoskel.layouts import get_layout, list_layouts

    rows = []
    for name in list_layouts():
        lay = get_layout(name)
        rows.append(
            {
                "name": name,
                "joints": lay.num_joints,
                "dims": lay.dims,
                "parts": lay.part_names,
                "description": lay.description,
            }
        )
    if as_json:
        echo_json({"layouts": rows})
        return
    for r in rows:
        typer.echo(f"{r['name']:<14} {r['joints']:>3} joints  {r['dims']}D  {r['description']}")


@layouts_app.command("show")
def layouts_show(
    name: Annotated[str, typer.Argument(help="Built-in layout name or a YAML layout file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a layout: joints with their parents and parts, centre and axes."""
    from protoskel.layouts import get_layout

    lay = get_layout(name)
    d = lay.to_dict()
    if as_json:
        echo_json(d)
        return
    part_of = {j: p for p, js in d["parts"].items() for j in js}
    typer.echo(f"{lay.name}: {lay.description}")
    typer.echo(f"{lay.num_joints} joints, {lay.dims}D, centre {d['center']}, up {d['up']}")
    for i, (j, p) in enumerate(zip(lay.joints, lay.parents, strict=True)):
        parent = lay.joints[p] if p >= 0 else "(root)"
        typer.echo(f"  {i:>2} {j:<18} parent {parent:<18} part {part_of[j]}")


# ---------------------------------------------------------------- datasets
@datasets_app.command("list")
def datasets_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the datasets `datasets prepare` knows, with layout, classes and protocol."""
    from protoskel.data.protocols import list_datasets

    rows = [d.to_dict() for d in list_datasets()]
    if as_json:
        echo_json({"datasets": rows})
        return
    for r in rows:
        k = r["num_classes"] or "-"
        typer.echo(
            f"{r['name']:<13} {r['layout']:<13} {k:>3} classes  {r['protocol']:<19} "
            f"{r['description']}"
        )


@datasets_app.command("prepare")
def datasets_prepare(
    name: Annotated[str, typer.Argument(help="Dataset name (see `protoskel datasets list`).")],
    src: Annotated[
        str, typer.Option("--src", help="The dataset's source folder (pyskl: the .pkl file).")
    ],
    out: Annotated[str, typer.Option("--out", help="Folder to write the prepared store to.")],
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip bad files (listed in the manifest).")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing store.")] = False,
    layout: Annotated[
        str | None,
        typer.Option(
            "--layout",
            help="generic, pyskl: layout of clips that do not name one (pyskl: other than 17, "
            "18 or 25 joints).",
        ),
    ] = None,
    to_layout: Annotated[
        str | None,
        typer.Option(
            "--to-layout",
            help="Re-express every clip in this layout through the joint maps (e.g. to fine-tune "
            "a model pretrained on another dataset's joint order).",
        ),
    ] = None,
    subject_split: Annotated[
        int | None,
        typer.Option(
            "--subject-split",
            help="Split train/test by this row (0-based) of the dataset's published subject "
            "splits (UTKinect, MSR Action3D: tr_te_splits.mat) instead of the default protocol.",
        ),
    ] = None,
    splits: Annotated[
        str | None,
        typer.Option(
            "--splits",
            help="Write only these splits, comma-separated (e.g. a PYSKL file's "
            "xsub_train,xsub_val).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Read a dataset by its standard protocol and write a prepared store (atomically)."""
    from protoskel.data.protocols import prepare_dataset

    keep = None if splits is None else [s.strip() for s in splits.split(",") if s.strip()]
    if keep == []:
        raise typer.BadParameter("names no split (e.g. --splits train,val)", param_hint="--splits")
    state = {"step": -1}

    def progress(done: int, total: int) -> None:
        # One line per 10 % keeps logs readable when stderr is not a terminal.
        step = done * 10 // max(total, 1)
        if step != state["step"]:
            state["step"] = step
            log(f"reading {name}: {done}/{total} files")

    manifest = prepare_dataset(
        name,
        src,
        out,
        skip_bad=skip_bad,
        force=force,
        layout=layout,
        to_layout=to_layout,
        subject_split=subject_split,
        keep_splits=keep,
        progress=progress,
        log=log,
    )
    if as_json:
        manifest.pop("layout_def", None)
        echo_json(manifest)
    else:
        counts = ", ".join(f"{k} {v['count']}" for k, v in manifest["splits"].items())
        typer.echo(f"{out}: {manifest['dataset']} ({counts}; {len(manifest['skipped'])} skipped)")


@datasets_app.command("info")
def datasets_info(
    path: Annotated[str, typer.Argument(help="A prepared store folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a prepared store: layout, classes, split counts, skipped files."""
    from protoskel.data.store import open_store

    store = open_store(path)
    info = {k: v for k, v in store.manifest.items() if k != "layout_def"}
    for name in store.split_names:
        lengths = store.split(name).lengths
        info["splits"][name]["mean_frames"] = round(float(lengths.mean()), 1) if lengths.size else 0
    if as_json:
        echo_json(info)
        return
    typer.echo(f"{store.path}: {info.get('dataset')} ({info.get('protocol')})")
    scores = "with" if info.get("has_scores") else "without"
    typer.echo(f"layout {info['layout']}, {info.get('num_persons')} person(s), {scores} scores")
    typer.echo(f"{len(store.classes)} classes: {', '.join(store.classes)}")
    for name, s in info["splits"].items():
        typer.echo(f"  {name:<8} {s['count']:>6} clips {s['frames']:>9} frames")
    for s in info["skipped"]:
        typer.echo(f"  skipped {s['file']}: {s['reason']}")


# ---------------------------------------------------------------- training / evaluation
models_app = typer.Typer(help="Shipped (pre-trained) models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _metrics_summary(m: dict[str, Any]) -> str:
    return (
        f"top1 {m['top1']:.2f}  top5 {m['top5']:.2f}  "
        f"mean-class {m['mean_class_acc']:.2f}  n {m['n']}"
    )


@app.command("train")
def train_cmd(
    config: Annotated[str, typer.Argument(help="YAML recipe (see configs/).")],
    data: Annotated[str, typer.Option("--data", help="Prepared dataset folder.")],
    out: Annotated[str, typer.Option("--out", help="Run folder for checkpoints and logs.")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.pt.")] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace the run already in OUT (its checkpoints and log)."),
    ] = False,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a recipe value: key=value.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final summary as JSON.")
    ] = False,
) -> None:
    """Train a model from a recipe on a prepared dataset."""
    from protoskel.training import distributed
    from protoskel.training.config import load_config
    from protoskel.training.trainer import train

    cfg = load_config(config, overrides or [])
    try:
        res = train(cfg, data, out, resume=resume, overwrite=force, progress=True)
    except BaseException:
        distributed.cleanup(wait=False)
        raise
    distributed.cleanup()
    last = res["history"][-1] if res["history"] else {}
    summary = {"out": res["out"], "best_top1": res["best_top1"], "last": last}
    if as_json:
        echo_json(summary)
    else:
        top1 = last.get("val_top1")
        shown = "n/a" if top1 is None else f"{top1:.2f}"
        log(f"done: {res['out']}/last.pt  last val top1 {shown}")


# Shared by eval and ensemble: None keeps the recipe's data.test_flip.
_FlipOption = Annotated[
    bool | None,
    typer.Option(
        "--flip/--no-flip",
        help="Average with the left-right mirror of each clip (default: the recipe's "
        "data.test_flip).",
    ),
]

# Shared by eval and ensemble: None keeps the recipe's data.test_rotate.
_RotateOption = Annotated[
    str | None,
    typer.Option(
        "--rotate",
        help="Test-time rotations to average over, a YAML list of [ax, ay, az] in radians, "
        "e.g. '[[0,-0.5,0],[0,0,0],[0,0.5,0]]'; '[]' turns them off (default: the recipe's "
        "data.test_rotate).",
    ),
]


# Shared by eval and ensemble: a robustness test, never part of a recipe.
_OccludeOption = Annotated[
    str | None,
    typer.Option(
        "--occlude",
        help="Hide this body part of the layout (e.g. left_arm) in every test clip, for all its "
        "frames: its joints sit on the nearest joint outside it, as augment.occlude does. "
        "Measures robustness to a lost limb.",
    ),
]


# Shared by eval and ensemble: None keeps the recipe's data.test_clips.
_ClipsOption = Annotated[
    int | None,
    typer.Option(
        "--clips",
        min=1,
        help="Test clips per video: K evenly shifted samplings averaged (default: the "
        "recipe's data.test_clips).",
    ),
]
# Shared by eval and ensemble: the probabilities as a prediction file for compare.
_SaveProbsOption = Annotated[
    str | None,
    typer.Option(
        "--save-probs",
        help="Also write the class probabilities, clip ids and labels to this .npz file "
        "(input to protoskel compare).",
    ),
]


def _rotations(text: str | None) -> list[Any] | None:
    """Parse ``--rotate`` (None: keep the recipe's)."""
    if text is None:
        return None
    import yaml

    from protoskel.data.transforms import rotation_angles
    from protoskel.errors import ConfigError

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"--rotate {text!r}: not a YAML list like [[0,0.5,0]]") from None
    return rotation_angles(value, "--rotate").tolist()


@app.command("eval")
def eval_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint file or shipped model name.")],
    data: Annotated[str, typer.Option("--data", help="Prepared dataset folder.")],
    split: Annotated[
        str | None, typer.Option("--split", help="Split (default: the recipe's data.val_split).")
    ] = None,
    clips: _ClipsOption = None,
    confusion: Annotated[
        str | None, typer.Option("--confusion", help="Write the confusion matrix PNG here.")
    ] = None,
    flip: _FlipOption = None,
    rotate: _RotateOption = None,
    occlude: _OccludeOption = None,
    save_probs: _SaveProbsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Evaluate a checkpoint: top-1, top-5, mean class and per-class accuracy."""
    from protoskel.training.trainer import evaluate

    m = evaluate(
        checkpoint,
        data,
        split=split,
        clips=clips,
        confusion_png=confusion,
        flip=flip,
        rotate=_rotations(rotate),
        occlude=occlude,
        save_probs=save_probs,
        progress=True,
    )
    if as_json:
        echo_json(m)
        return
    typer.echo(_metrics_summary(m))
    for c, a in m["per_class"].items():
        typer.echo(f"  {c:<24} {'n/a' if a is None else f'{a:6.2f}'}")
    if m.get("probs_file"):
        log(f"predictions written to {m['probs_file']}")


@app.command("ensemble")
def ensemble_cmd(
    checkpoints: Annotated[
        list[str],
        typer.Argument(
            help="Checkpoints to fuse (e.g. 4 streams), or prediction .npz files "
            "(eval --save-probs), fused as saved."
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option("--data", help="Prepared dataset folder (needed for checkpoints)."),
    ] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="Comma-separated weights, one per checkpoint.")
    ] = None,
    fit_weights: Annotated[
        bool,
        typer.Option("--fit-weights", help="Fit weights on the held-out training clips."),
    ] = False,
    split: Annotated[
        str | None, typer.Option("--split", help="Split (default: the recipe's data.val_split).")
    ] = None,
    clips: _ClipsOption = None,
    flip: _FlipOption = None,
    rotate: _RotateOption = None,
    occlude: _OccludeOption = None,
    save_probs: _SaveProbsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Fuse several checkpoints' (or saved prediction files') class probabilities."""
    from protoskel.errors import ConfigError
    from protoskel.training.ensemble import ensemble

    w = None
    if weights is not None:
        try:
            w = [float(v) for v in weights.split(",")]
        except ValueError:
            raise ConfigError(
                f"--weights {weights!r}: expected numbers like 0.6,0.6,0.4,0.4"
            ) from None
    rot = _rotations(rotate)
    m = ensemble(
        list(checkpoints),
        data,
        weights=w,
        fit=fit_weights,
        split=split,
        clips=clips,
        flip=flip,
        rotate=rot,
        occlude=occlude,
        save_probs=save_probs,
        progress=True,
    )
    if as_json:
        echo_json(m)
        return
    for mem, wt in zip(m["members"], m["weights"], strict=True):
        where = mem.get("checkpoint", mem.get("predictions"))
        typer.echo(f"  w={wt:.2f}  {mem['stream']:<12} top1 {mem['top1']:.2f}  {where}")
    typer.echo("ensemble: " + _metrics_summary(m))
    if m.get("probs_file"):
        log(f"predictions written to {m['probs_file']}")


@app.command("compare")
def compare_cmd(
    first: Annotated[
        str, typer.Argument(help="Reference: checkpoint, shipped name or prediction .npz.")
    ],
    others: Annotated[
        list[str],
        typer.Argument(help="One or more to compare with it (checkpoints, names or .npz)."),
    ],
    data: Annotated[
        str | None, typer.Option("--data", help="Prepared dataset (for checkpoints).")
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Split (default: the recipe's data.val_split).")
    ] = None,
    flip: _FlipOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Compare models on the same clips: top-1 with 95 % intervals, McNemar's exact test.

    With several models after the first, each is compared with the first and the p-values
    are also Holm-adjusted over those comparisons.
    """
    from protoskel.training.compare import compare_to_reference, predictions_of

    ref = predictions_of(first, data, split, flip)
    preds = [predictions_of(o, data, split, flip) for o in others]
    fam = compare_to_reference(ref, preds, [first, *others])
    rows = fam["comparisons"]
    # One candidate keeps the pairwise shape (its Holm p equals the raw one).
    several = len(rows) > 1
    if as_json:
        echo_json(fam if several else rows[0])
        return
    labels = [chr(ord("A") + i) if i < 26 else f"M{i}" for i in range(len(rows) + 1)]

    def line(label: str, s: dict[str, Any], n: int) -> str:
        lo, hi = s["top1_ci95"]
        return (
            f"{label}  top1 {s['top1']:6.2f}  95% CI [{lo:5.2f}, {hi:5.2f}]  "
            f"{s['correct']}/{n}  {s['name']}"
        )

    typer.echo(line(labels[0], rows[0]["a"], rows[0]["n"]))
    for label, r in zip(labels[1:], rows, strict=True):
        typer.echo(line(label, r["b"], r["n"]))
        typer.echo(
            f"{label} - A {r['difference']:+.2f} points; only A right {r['only_a_right']}, only "
            f"{label} right {r['only_b_right']}, both wrong {r['both_wrong']}; same prediction "
            f"on {r['agreement']:.1f} % of clips"
        )
        holm = (
            f"; Holm-adjusted p = {r['mcnemar_p_holm']:.3g} over the {len(rows)} comparisons"
            if several
            else ""
        )
        typer.echo(f"McNemar exact p = {r['mcnemar_p']:.3g}{holm}")


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the checkpoints shipped with protoskel and their reported accuracy."""
    from protoskel.training.registry import shipped_models

    rows = shipped_models()
    if as_json:
        echo_json({"models": rows})
        return
    if not rows:
        typer.echo("no shipped models")
    for r in rows:
        inv = r.get("invariance") or ""
        if inv and r.get("invariance_mode"):
            inv = f"{inv} ({r['invariance_mode']})"
        typer.echo(
            f"{r['name']:<36} {r['dataset']:<14} {r['stream']:<12} {r.get('head', ''):<10} "
            f"top1 {r['top1']:.2f}  {inv}"
        )


# --- pose ------------------------------------------------------------ video -> skeleton clip
@app.command("pose")
def pose_cmd(
    video: Annotated[str, typer.Argument(help="Video file (anything OpenCV can decode).")],
    out: Annotated[str, typer.Option("--out", help="Output clip, generic NPZ (.npz).")],
    start_frame: Annotated[
        int, typer.Option("--start-frame", help="Skip this many frames first.")
    ] = 0,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", help="Process at most this many frames.")
    ] = None,
    model_complexity: Annotated[
        int, typer.Option("--model-complexity", help="MediaPipe model; only 1 ships offline.")
    ] = 1,
    min_detection_confidence: Annotated[
        float, typer.Option("--min-detection-confidence", help="Person detection threshold.")
    ] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Extract a mediapipe-33 skeleton clip (3D world, y up) from a video with MediaPipe Pose."""
    from protoskel.errors import ConfigError
    from protoskel.pose import extract_pose, write_pose_npz

    if Path(out).suffix.lower() != ".npz":
        # Before the video is read, so a wrong name costs no extraction time.
        raise ConfigError(f"{out}: pose writes a generic NPZ clip; give a name ending in .npz")
    seq = extract_pose(
        video,
        model_complexity=model_complexity,
        min_detection_confidence=min_detection_confidence,
        start_frame=start_frame,
        max_frames=max_frames,
        progress=True,
    )
    path = write_pose_npz(seq, out)
    secs = float(seq.meta["extraction_seconds"])
    summary = {
        "video": str(video),
        "out": str(path),
        "layout": seq.layout,
        "frames": seq.num_frames,
        "frames_with_pose": int(seq.meta["frames_with_pose"]),
        "fps": seq.fps,
        "start_frame": start_frame,
        "seconds": round(secs, 3),
        "extraction_fps": round(seq.num_frames / secs, 2) if secs > 0 else None,
    }
    log(
        f"{summary['frames']} frames, {summary['frames_with_pose']} with a pose, video fps "
        f"{summary['fps']}; extracted at {summary['extraction_fps']} frames/s "
        f"({summary['seconds']} s) -> {path}"
    )
    if as_json:
        echo_json(summary)


# --- inference & explanations --------------------------------- predict, explain, prototypes
def _set_threads(n: int) -> None:
    """Torch intra-op threads for one-clip inference."""
    import torch

    # One clip is a small job: on a busy CPU, spinning extra threads made it 100x slower.
    torch.set_num_threads(max(1, int(n)))


def _prediction_lines(preds: list[dict[str, Any]]) -> str:
    return "\n".join(f"{p['prob'] * 100:6.2f}%  {p['label']}" for p in preds)


def _stream_predict(
    checkpoint: str, source: str, window: int, hop: int, top_k: int, max_frames: int | None
) -> None:
    import statistics

    from protoskel.inference import Predictor, iter_frames

    pred = Predictor.from_checkpoint(checkpoint)
    frames = iter_frames(source, max_frames=max_frames)
    latencies = []
    for row in pred.predict_windows(frames, window=window, hop=hop, top_k=top_k):
        latencies.append(row["latency_ms"])
        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()
    if latencies:
        log(
            f"{len(latencies)} windows, latency median {statistics.median(latencies):.1f} ms, "
            f"max {max(latencies):.1f} ms"
        )


@app.command("predict")
def predict_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint file or shipped model name.")],
    input_: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="Skeleton clip file or video; with --stream also a camera index (0, 1, ...).",
        ),
    ],
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, help="Classes to list (5; --stream: 1).")
    ] = None,
    stream: Annotated[
        bool,
        typer.Option("--stream", help="Sliding windows over the frames: one JSON line each."),
    ] = False,
    window: Annotated[
        int, typer.Option("--window", min=1, help="--stream: frames per window.")
    ] = 52,
    hop: Annotated[
        int, typer.Option("--hop", min=1, help="--stream: frames between windows.")
    ] = 10,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", min=1, help="Read at most this many frames.")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="CPU threads for torch.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Classify a clip or video: the top classes with their probabilities."""
    _set_threads(threads)
    if stream:
        _stream_predict(checkpoint, input_, window, hop, top_k or 1, max_frames)
        return
    from protoskel.inference import Predictor, load_input

    pred = Predictor.from_checkpoint(checkpoint)
    seq = load_input(input_, max_frames=max_frames, progress=True)
    res = pred.predict(seq, top_k=top_k or 5)
    if as_json:
        echo_json({**res, "checkpoint": pred.path, "input": input_})
        return
    typer.echo(_prediction_lines(res["predictions"]))


@app.command("explain")
def explain_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint file or shipped model name.")],
    input_: Annotated[str, typer.Argument(metavar="INPUT", help="Skeleton clip file or video.")],
    out: Annotated[str, typer.Option("--out", help="Report folder (replaced atomically).")],
    data: Annotated[
        str | None,
        typer.Option("--data", help="Prepared store of the training data: draws prototypes."),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Classes to list.")] = 5,
    top_prototypes: Annotated[
        int, typer.Option("--top-prototypes", min=1, help="Prototypes to show.")
    ] = 5,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", min=1, help="Read at most this many frames.")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="CPU threads for torch.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Write an explanation report (index.html, explanation.json, explanation.gif)."""
    from protoskel.explain.report import write_report

    _set_threads(threads)

    path = write_report(
        checkpoint,
        input_,
        out,
        top_k_classes=top_k,
        top_prototypes=top_prototypes,
        data_root=data,
        progress=True,
        max_frames=max_frames,
    )
    facts = json.loads((path / "explanation.json").read_text(encoding="utf-8"))
    if as_json:
        echo_json(
            {
                "report": str(path),
                "index": str(path / "index.html"),
                "json": str(path / "explanation.json"),
                "gif": str(path / "explanation.gif"),
                "predictions": facts["predictions"],
                "prototypes": [
                    {k: p[k] for k in ("rank", "prototype", "part", "contribution")}
                    | {"clip_id": (p["source"] or {}).get("clip_id")}
                    for p in facts["prototypes"]
                ],
            }
        )
        return
    typer.echo(_prediction_lines(facts["predictions"]))
    typer.echo(f"report: {path / 'index.html'}")


@app.command("prototypes")
def prototypes_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Prototype checkpoint file or shipped name.")],
    out: Annotated[str, typer.Option("--out", help="Gallery folder (replaced atomically).")],
    data: Annotated[
        str | None,
        typer.Option("--data", help="Prepared store of the training data: draws each segment."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Write a gallery page of every prototype: class, body part, source clip and frames."""
    from protoskel.explain.report import write_gallery

    path = write_gallery(checkpoint, out, data_root=data)
    facts = json.loads((path / "prototypes.json").read_text(encoding="utf-8"))
    if as_json:
        echo_json(
            {
                "gallery": str(path),
                "index": str(path / "index.html"),
                "prototypes": len(facts["prototypes"]),
                "classes": facts["classes"],
            }
        )
        return
    typer.echo(f"{len(facts['prototypes'])} prototypes: {path / 'index.html'}")


@app.command("enroll", context_settings={"allow_extra_args": True})
def enroll_cmd(
    ctx: typer.Context,
    checkpoint: Annotated[str, typer.Argument(help="Prototype checkpoint file or shipped name.")],
    name: Annotated[str, typer.Option("--name", help="Name of the new class.")],
    examples: Annotated[
        list[str], typer.Option("--examples", help="Example clips or videos: --examples A B C.")
    ],
    out: Annotated[str, typer.Option("--out", help="New checkpoint file (written atomically).")],
    per_part: Annotated[
        int | None,
        typer.Option("--prototypes-per-part", min=1, help="Prototypes per example and part."),
    ] = None,
    margin: Annotated[
        float, typer.Option("--margin", help="Logit margin of the bias (without --negatives).")
    ] = 1.0,
    negatives: Annotated[
        str | None,
        typer.Option(
            "--negatives",
            help="Prepared store (e.g. the training data) whose clips of the known classes "
            "calibrate the new class's bias; recommended.",
        ),
    ] = None,
    negatives_split: Annotated[
        str, typer.Option("--negatives-split", help="Split of --negatives to use.")
    ] = "train",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Add a class to a prototype model from a few examples (the backbone is unchanged)."""
    from protoskel.errors import ConfigError
    from protoskel.inference import enroll_checkpoint

    extra = list(ctx.args)
    if any(a.startswith("-") for a in extra):
        raise ConfigError(f"enroll: unexpected option {next(a for a in extra if a[0] == '-')}")
    res = enroll_checkpoint(
        checkpoint,
        name,
        [*examples, *extra],
        out,
        prototypes_per_part=per_part,
        margin=margin,
        negatives=negatives,
        negatives_split=negatives_split,
    )
    if as_json:
        echo_json(res)
        return
    typer.echo(
        f"{res['checkpoint']}: enrolled {name!r} from {len(res['examples'])} example(s), "
        f"{res['prototypes']} prototypes; {len(res['classes'])} classes"
    )


@app.command("forget")
def forget_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Prototype checkpoint file or shipped name.")],
    name: Annotated[str, typer.Option("--name", help="Class to remove.")],
    out: Annotated[str, typer.Option("--out", help="New checkpoint file (written atomically).")],
    example: Annotated[
        str | None,
        typer.Option("--example", help="Remove only this enrolled example (its clip id)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Remove a class (or one enrolled example of it) from a prototype model."""
    from protoskel.inference import forget_checkpoint

    res = forget_checkpoint(checkpoint, name, out, example=example)
    if as_json:
        echo_json(res)
        return
    what = f"example {example!r} of {name!r}" if example else f"class {name!r}"
    typer.echo(f"{res['checkpoint']}: removed {what}; {len(res['classes'])} classes")


# --- demo ------------------------------------------------------- synthetic data -> model
@app.command("demo")
def demo_cmd(
    out: Annotated[
        str, typer.Option("--out", help="Folder for data, checkpoints and report.")
    ] = "protoskel-demo",
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Training epochs (default: recipe's).")
    ] = None,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Do not open the report in a browser.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Generate synthetic actions, train a tiny model on the CPU, evaluate and explain it."""
    from protoskel.demo import run_demo

    res = run_demo(out, epochs=epochs, open_report=not no_open, log=log)
    if as_json:
        echo_json(res)
        return
    typer.echo(
        f"val accuracy {res['top1']:.1f}% (mean class {res['mean_class_acc']:.1f}%, chance "
        f"{res['chance']:.1f}%, {res['n']} clips) in {res['seconds']:.0f} s"
    )
    for c, a in res["per_class"].items():
        typer.echo(f"  {c:<16} {'n/a' if a is None else f'{a:6.1f}'}")
    typer.echo(f"checkpoint: {res['checkpoint']}")
    if res["report"]:
        typer.echo(f"report: {res['report']}")
    typer.echo(f"try: protoskel eval {res['checkpoint']} --data {res['data']}")
    if "predict" in {c.name for c in app.registered_commands}:
        typer.echo(f"     protoskel predict {res['checkpoint']} {res['sample']}")


# --- export & serve ------------------------------------------------ deployment of a checkpoint
@app.command("export")
def export_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint file or shipped model name.")],
    fmt: Annotated[
        str, typer.Option("--format", help="onnx, pt2 (torch.export) or torchscript.")
    ] = "onnx",
    out: Annotated[
        str, typer.Option("--out", help="Output file, required (written atomically).")
    ] = "",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.")] = 17,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Export a model: prepared clip x (N, C, T, V, M) float32 -> logits (N, K)."""
    from protoskel.errors import ConfigError
    from protoskel.export import export_checkpoint

    if not out:
        raise ConfigError("export: --out FILE is required (e.g. --out model.onnx)")
    res = export_checkpoint(checkpoint, out, fmt, opset=opset)
    if as_json:
        echo_json(res)
        return
    meta = res["metadata"]
    shape = ", ".join(str(s) for s in res["input_shape"])
    typer.echo(f"{res['out']}: {res['format']}, {res['bytes']} bytes")
    typer.echo(
        f"input x ({shape}) = (N, C, T, V, M), {meta['stream']} stream of layout "
        f"{meta['layout']}, {meta['num_frames']} frames -> logits (N, {len(res['classes'])})"
    )
    if meta["invariance"] != "none":
        typer.echo(f"frame averaging: {meta['frame_averaging']}")


@app.command("serve")
def serve_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint file or shipped model name.")],
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", help="Largest accepted upload (MB).")
    ] = 50.0,
    max_frames: Annotated[
        int, typer.Option("--max-frames", help="Longest accepted clip (frames).")
    ] = 5000,
    data: Annotated[
        str | None,
        typer.Option("--data", help="Training data (store or clip folder) for explanations."),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Serve a model over HTTP: web page at /, API docs at /docs, /predict and /explain."""
    from protoskel.serve import serve

    serve(
        checkpoint,
        host=host,
        port=port,
        max_upload_mb=max_upload_mb,
        max_frames=max_frames,
        data_root=data,
        log_level=log_level,
    )


def main() -> None:
    """Console entry point: usage errors and protoskel errors exit with code 2."""
    try:
        # Standalone mode lets typer print usage errors itself (exit 2); ours propagate here.
        app()
    except ProtoskelError as e:
        if _state["debug"]:
            raise
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
