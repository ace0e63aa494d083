"""One place that builds the rich progress bars of the CLI (training, pose extraction)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Column tokens; any other string is a rich ``TextColumn`` template.
COLUMNS = ("{bar}", "{count}", "{elapsed}", "{remaining}")


def progress_bar(columns: Sequence[str], *, disable: bool = False) -> Any:
    """A rich ``Progress`` on stderr with ``columns`` (tokens of :data:`COLUMNS` or text)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    makers = {
        "{bar}": BarColumn,
        "{count}": MofNCompleteColumn,
        "{elapsed}": TimeElapsedColumn,
        "{remaining}": TimeRemainingColumn,
    }
    cols = [makers[c]() if c in makers else TextColumn(c) for c in columns]
    return Progress(*cols, console=Console(stderr=True), disable=disable, transient=False)
