"""ferry(1), rendered from the same click command tree as ``--help``: one text, two forms."""

from __future__ import annotations

import datetime
import re
from typing import Any

from ferry.shared import __version__

# click's objects are used by what they do, not imported: typer vendors its own click from 0.26 on (what
# Python 3.10+ installs), while Python 3.9 gets typer 0.23 and click itself


def _esc(text: str) -> str:
    # roff: a backslash starts an escape, a leading '.' or "'" a request
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)


def _para(text: str) -> str:
    return "\n".join(_esc(" ".join(p.split())) + "\n.PP" for p in text.split("\n\n") if p.strip())


def _options(ctx: Any, cmd: Any) -> list[str]:
    out = []
    for p in cmd.get_params(ctx):
        rec = p.get_help_record(ctx)
        if rec is None:
            continue
        names, help_text = rec
        out += [".TP", f"\\fB{_esc(names)}\\fR", _esc(" ".join(help_text.split()))]
    return out


def render(group: Any, environment: list[tuple[str, str]]) -> str:
    """The man page of ``group`` and all its commands, with the environment variables ferry reads."""
    date = datetime.date.today().isoformat()
    ctx = group.context_class(group, info_name="ferry")
    lines = [
        f'.TH FERRY 1 "{date}" "ferry {__version__}" "User Commands"',
        ".SH NAME",
        "ferry \\- move a whole Docker registry into Harbor across an air gap",
        ".SH SYNOPSIS",
        "\\fBferry\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        _para(group.help or ""),
        ".SH OPTIONS",
        *_options(ctx, group),
        ".SH COMMANDS",
    ]
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = cmd.context_class(cmd, info_name=name, parent=ctx)
        lines += [
            f".SS {_esc('ferry ' + name)} {_esc(' '.join(cmd.collect_usage_pieces(sub)))}",
            _para(cmd.help or ""),
            *_options(sub, cmd),
        ]
    lines.append(".SH ENVIRONMENT")
    for var, what in environment:
        lines += [".TP", f"\\fB{var}\\fR", _esc(what)]
    lines += [
        ".SH EXIT STATUS",
        "0 on success; 1 for an error, or a check that found something missing or different (verify, diff, tags "
        "kept at another digest); 2 for a usage error; 70 for an internal error (a bug); 130 when interrupted, "
        "143 when terminated.",
        ".SH SEE ALSO",
        "skopeo(1), tar(1)",
    ]
    return "\n".join(lines) + "\n"


__all__ = ["render"]
