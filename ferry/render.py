"""Console rendering: errors, progress bars, tables.  The only module that prints."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ferry.shared.errors import FerryError
from ferry.shared.progress import Progress as ProgressEvent
from ferry.shared.progress import ProgressCallback, no_progress

if TYPE_CHECKING:
    from rich.console import Console

# rich is imported where it draws: its console, progress, table and logging modules together cost about
# 60 ms of every start, and a quiet command run from a script that succeeds draws nothing


@functools.cache
def _console(stderr: bool) -> Console:
    from rich.console import Console

    # no emoji codes: ``library/alpine:link: put manifest`` must not print as ``library/alpine🔗 put``
    return Console(stderr=stderr, highlight=False, emoji=False)


#: the variables by which rich may take a pipe for a terminal: when one is set, rich decides
_TERMINAL_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE", "FORCE_TERMINAL")


def _maybe_terminal(stream: Any) -> bool:
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        tty = False
    return tty or any(k in os.environ for k in _TERMINAL_ENV)


class _Plain:
    """What rich's console prints to a pipe, for markup strings, without importing rich: its console costs
    25 ms, a third of the start of a command that fails at once (``ferry verify missing.tar`` in a script).
    Markup tags are dropped and escapes undone exactly as rich does (a test compares the two); lines are
    never folded (rich folds a pipe at 80 columns unless ``soft_wrap``, which would cut a digest in two
    for grep).  Anything but strings goes to rich."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr

    def print(self, *objects: Any, soft_wrap: bool = False, **options: Any) -> None:
        if options or not all(isinstance(o, str) for o in objects):
            _console(self._stderr).print(*objects, soft_wrap=soft_wrap, **options)
            return
        stream = sys.stderr if self._stderr else sys.stdout
        stream.write(" ".join(map(plain, objects)) + "\n")
        stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(_console(self._stderr), name)


def _printer(stderr: bool) -> Console | _Plain:
    # decided at each use, as rich decides at each print: tests and callers swap sys.stderr
    if _maybe_terminal(sys.stderr if stderr else sys.stdout):
        return _console(stderr)
    return _Plain(stderr)


#: rich's markup tag (rich.markup.RE_TAGS), with the backslashes that may escape it
_TAG_RE = re.compile(r"((\\*)\[([a-z#/@][^[]*?)])")
#: what rich.markup.escape escapes
_ESCAPE_RE = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def plain(markup: str) -> str:
    """The text rich shows for ``markup``: tags dropped, ``\\[`` shown as ``[``, pairs of backslashes
    before a tag halved (rich.markup's parse, text only)."""
    if "[" not in markup:
        return markup
    out: list[str] = []
    pos = 0
    for m in _TAG_RE.finditer(markup):
        full, escapes, _ = m.groups()
        start, end = m.span()
        out.append(markup[pos:start])
        pos = end
        if escapes:
            backslashes, escaped = divmod(len(escapes), 2)
            out.append("\\" * backslashes)
            if escaped:
                out.append(full[len(escapes) :])
    out.append(markup[pos:])
    return "".join(out)


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}
#: any of them but the tab (a table's separator)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _escape_backslashes(m: re.Match[str]) -> str:
    return f"{m.group(1)}{m.group(1)}\\{m.group(2)}"


def safe(text: object) -> str:
    """Data (names, tags, paths, a registry's error text) as rich shows it literally: markup escaped as
    rich.markup.escape does (a test compares the two; importing rich for it cost every error 25 ms) and
    control characters written out (a tag ``v1\\n`` must not break the line it is reported on)."""
    markup = _ESCAPE_RE.sub(_escape_backslashes, str(text).translate(_CONTROL))
    if markup.endswith("\\") and not markup.endswith("\\\\"):
        return markup + "\\"
    return markup


def __getattr__(name: str) -> Console | _Plain:
    # ``render.err`` / ``render.out``: rich's consoles on a terminal, plain text to a pipe
    if name in ("err", "out"):
        return _printer(name == "err")
    raise AttributeError(name)


class _LazyRichHandler(logging.Handler):
    """Hands records to rich's handler, importing it only when something is actually logged."""

    def emit(self, record: logging.LogRecord) -> None:
        handler = self.__dict__.get("_rich")
        if handler is None:
            from rich.logging import RichHandler

            handler = self._rich = RichHandler(console=_console(True), show_path=False)
            handler.setFormatter(self.formatter)
        handler.handle(record)


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", handlers=[_LazyRichHandler()])
    # -vv shows ferry's own requests (the registry client logs each); the HTTP libraries' internals
    # (connections, headers, TLS) stay out unless something goes wrong
    for name in ("httpx", "httpcore", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(name).setLevel(logging.WARNING)


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def render_error(e: FerryError, *, as_json: bool) -> None:
    if as_json:
        print_json({"ok": False, "error": e.to_dict()})
        return
    err = _printer(True)
    err.print(f"[bold red]error[/] [dim]({e.code})[/]: {safe(e.message)}", soft_wrap=True)
    details = e.to_dict()
    for b in details.get("broken", []):  # type: ignore[attr-defined]
        missing = ", ".join(b["missing"])
        err.print(
            f"  [red]✗[/] {safe(b['image'])}: {safe(b['reason'])}"
            + (f" [dim]({safe(missing)})[/]" if missing else ""),
            soft_wrap=True,
        )
    for p in details.get("problems", []):  # type: ignore[attr-defined]
        where = ", ".join(p.get("volumes") or [])
        imgs = p.get("images") or []
        line = f"  [red]✗[/] {safe(p.get('member') or '(bundle)')}: {safe(p['problem'])}"
        if where:
            line += f" [dim]{safe(f'[volume {where}]')}[/]"
        if imgs:
            shown = ", ".join(imgs[:5]) + (f" and {len(imgs) - 5} more" if len(imgs) > 5 else "")
            line += f"\n      breaks: {safe(shown)}"
        err.print(line, soft_wrap=True)
    lacking: list[dict[str, Any]] = list(details.get("missing", []))  # type: ignore[call-overload]
    for item in lacking[:10]:
        imgs = item.get("images") or []
        where = f" in {item['where']}" if item.get("where") else ""
        shown = ", ".join(imgs[:3]) + (f" and {len(imgs) - 3} more" if len(imgs) > 3 else "")
        err.print(
            f"  [red]✗[/] {safe(item['digest'])}{safe(where)} [dim](bundle {safe(item['base'])})[/]"
            + (f"\n      needed by: {safe(shown)}" if shown else ""),
            soft_wrap=True,
        )
    if len(lacking) > 10:
        err.print(f"  … and {len(lacking) - 10} more (--json lists every one)")
    if e.hint:
        err.print(f"[yellow]hint[/]: {safe(e.hint)}", soft_wrap=True)


@contextmanager
def progress(enabled: bool) -> Iterator[ProgressCallback]:
    """A progress callback drawing bars on stderr, or a no-op when disabled or stderr is not a terminal."""
    if not enabled or not _maybe_terminal(sys.stderr) or not _console(True).is_terminal:
        yield no_progress
        return
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Amount(ProgressColumn):
        """Bytes (done/total and a rate) for byte phases; a count for the others (the walk of a source,
        which has no total until it ends: images or manifests found so far)."""

        def render(self, task: Any) -> Text:
            unit = task.fields.get("unit", "B")
            if unit != "B":
                return Text(f"{int(task.completed)} {unit} found")
            total = f"/{human(task.total)}" if task.total else ""
            speed = f"  {human(task.speed)}/s" if task.speed else ""
            return Text(f"{human(task.completed)}{total}{speed}")

    bars = Progress(
        TextColumn("[bold]{task.description:<14}"),
        BarColumn(),
        Amount(),
        TextColumn("{task.fields[count]}"),
        TimeRemainingColumn(),
        console=_console(True),
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def on(ev: ProgressEvent) -> None:
        tid = tasks.get(ev.phase)
        if tid is None:
            for t in bars.tasks:  # a walk that another phase follows is over: its bar is full
                if t.fields.get("unit", "B") != "B" and t.total is None:
                    bars.update(t.id, total=max(t.completed, 1), completed=max(t.completed, 1))
            tid = tasks[ev.phase] = bars.add_task(ev.phase, total=ev.total or None, count="", unit=ev.unit)
        if ev.unit != "B":
            bars.update(tid, completed=ev.done, total=ev.total or None)
            return
        count = f"{ev.files}/{ev.files_total}" if ev.files_total else str(ev.files)
        bars.update(tid, completed=ev.done, total=ev.total or None, count=f"{count} {ev.items}")

    with bars:
        yield on


@contextmanager
def status(enabled: bool, what: str) -> Iterator[None]:
    """A spinner on stderr for work that has no byte count (fetching a kit), when stderr is a terminal."""
    if not enabled or not _maybe_terminal(sys.stderr) or not _console(True).is_terminal:
        yield
        return
    with _console(True).status(what):
        yield


def table(title: str, columns: list[str], rows: Iterable[Sequence[object]]) -> None:
    """A table on a terminal; tab-separated lines, one per row, anywhere else (for grep, cut and awk:
    a table folded to 80 columns would break a digest across lines)."""
    if not _maybe_terminal(sys.stdout) or not _console(False).is_terminal:
        write = sys.stdout.write
        write("\t".join(columns) + "\n")
        lines: list[str] = []
        for r in rows:
            line = "\t".join(map(str, r))
            # a row whose only control characters are its separators is written as it is (an inspect of
            # 100k tags wrote 500k cells, each through translate); any other is written out cell by cell
            if _CONTROL_RE.search(line) is not None or line.count("\t") != len(r) - 1:
                line = "\t".join(str(c).translate(_CONTROL) for c in r)
            lines.append(line)
            if len(lines) >= 4096:
                write("\n".join(lines) + "\n")
                lines.clear()
        if lines:
            write("\n".join(lines) + "\n")
        sys.stdout.flush()
        return
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*(safe(c) for c in r))
    _console(False).print(t)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


Renderer = Callable[[Any], None]
