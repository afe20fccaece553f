"""``ferry``: the command line.  Each command parses options, calls one library function, renders the result.

Errors are caught once, in :func:`_execute`: a :class:`~shared.errors.FerryError` becomes one line (plus the
details it carries and a hint) and its exit code; anything else is a bug and shows its traceback under
``--debug``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from shared import __version__
from shared.errors import FerryError, UsageError
from shared.storage.reader import Selection

from . import render

app = typer.Typer(
    name="ferry",
    help="Move a whole Docker registry into Harbor across an air gap: export the registry's storage tree into "
    "one checksummed bundle, verify it after the trip, then restore it into Harbor 1.x storage or push it "
    "into Harbor 2.x (or any registry).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("ferry")
T = TypeVar("T")
_state = {"debug": False}

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary; errors only.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON result on stdout.")]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", min=0, help="Hashing threads (0: one per core).")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ferry {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv: debug).")
    ] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug
    render.setup_logging(verbose + (2 if debug else 0))


def _execute(fn: Callable[[], T], *, as_json: bool, quiet: bool, show: Callable[[T], None]) -> T:
    try:
        result = fn()
    except FerryError as e:
        render.render_error(e, as_json=as_json)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        render.err.print("[red]interrupted[/]: nothing finished was left half-written")
        raise typer.Exit(130) from None
    except Exception as e:
        if _state["debug"]:
            raise
        render.err.print(f"[bold red]internal error[/]: {type(e).__name__}: {e}")
        render.err.print("[yellow]hint[/]: re-run with --debug for the traceback, and report it")
        raise typer.Exit(70) from None
    if as_json:
        render.print_json(result.to_dict())  # type: ignore[attr-defined]
    elif not quiet:
        show(result)
    return result


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``4G`` = 4·10⁹ (fits FAT32's 4 GiB - 1 limit), ``4GiB`` = 4·2³⁰, plain numbers are bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"--volume-size {text!r}: not a size (examples: 4G, 700M, 2GiB, 1000000)")
    number, unit, binary = float(m.group(1)), m.group(2).lower(), bool(m.group(3))
    power = "_kmgt".index(unit) if unit else 0
    return int(number * (1024 if binary else 1000) ** power)


# ----------------------------------------------------------------------------------------------------
# export


@app.command()
def export(
    root: Annotated[
        Path,
        typer.Argument(
            help="The registry's root directory (holding docker/registry/v2), that v2 directory, "
            "or an uncompressed tar of either (read in place).",
            show_default=False,
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="The bundle file to write; '-' writes it to stdout.", show_default=False
        ),
    ],
    untagged: Annotated[
        bool, typer.Option("--untagged", help="Also export manifests no tag points to (by digest).")
    ] = False,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include", help="Only images matching this glob on 'repo' or 'repo:tag' (repeatable)."
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude", help="Leave out images matching this glob on 'repo' or 'repo:tag' (repeatable)."
        ),
    ] = None,
    skip_broken: Annotated[
        bool,
        typer.Option(
            "--skip-broken", help="Export the intact images and record the broken ones instead of failing."
        ),
    ] = False,
    volume_size: Annotated[
        str | None,
        typer.Option(
            "--volume-size",
            help="Split into BUNDLE.000, BUNDLE.001, … each at most this size (4G = 4·10⁹ bytes, fits FAT32; "
            "4GiB = 4·2³⁰). `cat` of the volumes is the single-file bundle.",
        ),
    ] = None,
    jobs: JobsOpt = 0,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a registry storage tree into one bundle: every image, every blob once, checksummed.

    Nothing is written until the whole source has been read and every blob's sha256 checked; a broken image
    stops the export (or is skipped with --skip-broken). The bundle is written as BUNDLE.partial and renamed
    when complete.
    """
    from bundler.export import ExportOptions, ExportResult
    from bundler.export import run as run_export

    def go() -> ExportResult:
        if output == "-" and sys.stdout.isatty():
            raise UsageError(
                "refusing to write a binary bundle to a terminal", hint="Redirect or pipe stdout."
            )
        if output != "-" and Path(output).is_dir():
            raise UsageError(
                f"-o {output}: is a directory; name the bundle file, e.g. {Path(output) / 'registry.tar'}"
            )
        opts = ExportOptions(
            root=root,
            output=None if output == "-" else Path(output),
            selection=Selection(
                include=tuple(include or ()), exclude=tuple(exclude or ()), untagged=untagged
            ),
            skip_broken=skip_broken,
            volume_size=parse_size(volume_size) if volume_size else None,
            jobs=jobs,
        )
        with render.progress(not quiet and not as_json) as on_progress:
            return run_export(opts, on_progress=on_progress)

    def show(r: ExportResult) -> None:
        where = ", ".join(str(p) for p in r.files) or "stdout"
        for s in r.skipped:
            render.err.print(f"[yellow]skipped[/] {s.ref}: {s.reason}", soft_wrap=True)
        render.err.print(
            f"[green]exported[/] {r.repositories} repositories, {r.tags} tags"
            + (f", {r.untagged} untagged" if r.untagged else "")
            + f", {r.manifests} manifests, {r.blobs} blobs ({render.human(r.blob_bytes)})"
            + (f", {r.foreign_layers} foreign layers recorded" if r.foreign_layers else "")
            + (f", {len(r.skipped)} skipped" if r.skipped else "")
            + f" in {r.seconds:.1f}s → {where}",
            soft_wrap=True,
        )

    _execute(go, as_json=as_json, quiet=quiet, show=show)


# ----------------------------------------------------------------------------------------------------
# verify / inspect

BundleArg = Annotated[
    Path,
    typer.Argument(
        help="The bundle: a file, or a volume set given by its first volume (X.000) or base name (X).",
        show_default=False,
    ),
]


@app.command()
def verify(
    bundle: BundleArg,
    quick: Annotated[
        bool, typer.Option("--quick", help="Check xxh3 checksums only (skip sha256 of blobs).")
    ] = False,
    jobs: JobsOpt = 0,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Prove a bundle arrived intact: structure, index, every member's xxh3 and every blob's sha256.

    A damaged bundle exits 1 and lists each bad member, the volume it sits in and the images it breaks.
    """
    from importer.verify import VerifyOptions, VerifyResult
    from importer.verify import run as run_verify

    def go() -> VerifyResult:
        with render.progress(not quiet and not as_json) as on_progress:
            return run_verify(VerifyOptions(path=bundle, quick=quick, jobs=jobs), on_progress=on_progress)

    def show(r: VerifyResult) -> None:
        rate = r.bytes / r.seconds / 1e6 if r.seconds else 0
        render.err.print(
            f"[green]ok[/] {r.path}: {r.members} members, {r.images} images, {render.human(r.bytes)} "
            f"({'xxh3' if r.quick else 'xxh3 + sha256'}) in {r.seconds:.1f}s, {rate:.0f} MB/s",
            soft_wrap=True,
        )

    _execute(go, as_json=as_json, quiet=quiet, show=show)


@app.command()
def inspect(bundle: BundleArg, quiet: QuietOpt = False, as_json: JsonOpt = False) -> None:
    """Show what a bundle holds: repositories, tags, images, blobs, bytes, skipped items, source."""
    from importer.inspect import InspectResult
    from importer.inspect import run as run_inspect

    def show(r: InspectResult) -> None:
        d: dict[str, Any] = r.to_dict()
        src = d["source"]
        render.out.print(
            f"[bold]{r.path}[/]  format {d['formatVersion']}, ferry {d['ferryVersion']}, created {d['created']}\n"
            f"source: {src.get('path')} ({src.get('kind')}) on {src.get('host')}\n"
            f"{len(d['repositories'])} repositories, {len(d['images'])} images, {d['manifests']} manifests, "
            f"{d['blobs']} blobs, {render.human(d['bytes'])} of content, bundle {render.human(d['bundleBytes'])}",
            soft_wrap=True,
        )
        rows = [
            [
                i["repository"],
                i["tag"] if i["tag"] is not None else "(untagged)",
                i["digest"][:19] + "…",
                i["mediaType"].rsplit("/", 1)[-1],
                ", ".join(i["platforms"]),
            ]
            for i in d["images"]
        ]
        render.table("images", ["repository", "tag", "digest", "type", "platforms"], rows)
        for s in d["skipped"]:
            render.out.print(f"[yellow]skipped[/] {s['image']}: {s['reason']}", soft_wrap=True)
        if d["foreignLayers"]:
            render.out.print(
                f"{len(d['foreignLayers'])} foreign layer(s) recorded, not bundled (fetched from their URLs)"
            )

    _execute(lambda: run_inspect(bundle), as_json=as_json, quiet=quiet, show=show)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
