"""Progress bars for long steps (rich), quiet when stderr is not a terminal unless forced."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


def _enabled() -> bool:
    if os.environ.get("ECLIP_PROGRESS") == "0":
        return False
    return sys.stderr.isatty() or os.environ.get("ECLIP_PROGRESS") == "1"


@contextmanager
def progress_bar(description: str, total: int | None, *extra_fields: str):
    """Yields `advance(n=1, **fields)`; `extra_fields` are shown after the bar (e.g. loss, pairs/s)."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    columns += [TextColumn(f"{name}={{task.fields[{name}]}}") for name in extra_fields]
    with Progress(*columns, disable=not _enabled(), transient=False) as progress:
        task = progress.add_task(description, total=total, **{name: "" for name in extra_fields})

        def advance(n: int = 1, **fields):
            progress.update(task, advance=n, **{k: str(v) for k, v in fields.items()})

        yield advance
