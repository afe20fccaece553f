"""Console rendering: errors, progress bars, tables.  The only module that prints."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape

from shared.errors import FerryError
from shared.progress import Progress as ProgressEvent
from shared.progress import ProgressCallback, no_progress

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


# rich's progress, table and logging modules are imported where they are used: together they cost 40 ms of
# every start, and a command run from a script draws no bars


def setup_logging(verbose: int) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(console=err, show_path=False)]
    )


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def render_error(e: FerryError, *, as_json: bool) -> None:
    if as_json:
        print_json({"ok": False, "error": e.to_dict()})
        return
    err.print(f"[bold red]error[/] [dim]({e.code})[/]: {e.message}", soft_wrap=True)
    details = e.to_dict()
    for b in details.get("broken", []):  # type: ignore[attr-defined]
        missing = ", ".join(b["missing"])
        err.print(
            f"  [red]✗[/] {b['image']}: {b['reason']}" + (f" [dim]({missing})[/]" if missing else ""),
            soft_wrap=True,
        )
    for p in details.get("problems", []):  # type: ignore[attr-defined]
        where = ", ".join(p.get("volumes") or [])
        imgs = p.get("images") or []
        line = f"  [red]✗[/] {p.get('member') or '(bundle)'}: {p['problem']}"
        if where:
            line += f" [dim]{escape(f'[volume {where}]')}[/]"
        if imgs:
            shown = ", ".join(imgs[:5]) + (f" and {len(imgs) - 5} more" if len(imgs) > 5 else "")
            line += f"\n      breaks: {shown}"
        err.print(line, soft_wrap=True)
    if e.hint:
        err.print(f"[yellow]hint[/]: {e.hint}", soft_wrap=True)


@contextmanager
def progress(enabled: bool) -> Iterator[ProgressCallback]:
    """A progress callback drawing bars on stderr, or a no-op when disabled or stderr is not a terminal."""
    if not enabled or not err.is_terminal:
        yield no_progress
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bars = Progress(
        TextColumn("[bold]{task.description:<14}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TextColumn("{task.fields[count]}"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def on(ev: ProgressEvent) -> None:
        if ev.unit != "B":
            return
        tid = tasks.get(ev.phase)
        if tid is None:
            tid = tasks[ev.phase] = bars.add_task(ev.phase, total=ev.total or None, count="")
        count = f"{ev.files}/{ev.files_total}" if ev.files_total else str(ev.files)
        bars.update(tid, completed=ev.done, total=ev.total or None, count=f"{count} {ev.items}")

    with bars:
        yield on


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*r)
    out.print(t)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


Renderer = Callable[[Any], None]
