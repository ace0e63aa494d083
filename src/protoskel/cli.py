"""The ``protoskel`` command line: one Typer app, thin wrappers over library functions.

Errors that protoskel raises on purpose become a one-line message on stderr and exit code 2;
``--debug`` shows the traceback instead. ``--json`` output is one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from protoskel.errors import ProtoskelError

app = typer.Typer(
    help="protoskel: skeleton-based action recognition that shows why.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
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


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
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


def main() -> None:
    """Console entry point: run the app, turning protoskel errors into exit code 2."""
    try:
        app(standalone_mode=False)
    except ProtoskelError as e:
        if _state["debug"]:
            raise
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code or 0)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(1)
    except Exception as e:  # click usage errors carry their own exit code
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
