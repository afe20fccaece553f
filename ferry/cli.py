"""``ferry``: the command line.  Each command parses options, calls one library function, renders the result.

Errors are caught once, in :func:`_execute`: a :class:`~ferry.shared.errors.FerryError` becomes one line (plus the
details it carries and a hint) and its exit code; anything else is a bug and shows its traceback under
``--debug``.
"""

import functools
import gc
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar, Union

import typer

from ferry.shared import __version__
from ferry.shared.errors import FerryError, UsageError

if TYPE_CHECKING:
    from ferry.bundler.export import ExportResult
    from ferry.bundler.kit import KitResult
    from ferry.importer.diff import DiffResult
    from ferry.importer.inspect import InspectResult
    from ferry.importer.push import PushResult
    from ferry.importer.restore import RestoreResult
    from ferry.importer.verify import VerifyResult
    from ferry.shared.bundle.receipt import ReceiptResult
    from ferry.shared.registry.credentials import Resolved
    from ferry.shared.storage.writer import Owner

# Each command imports what it runs inside its own body: a start-up that loads every command's modules (httpx,
# redis, the exporter) costs a third of a second, which is a tenth of a verify or a restore of 5000 tags.
from . import render

#: every environment variable ferry reads: shown by --help, the man page and the README (a test checks that
#: the source reads no other)
ENVIRONMENT = [
    ("FERRY_REGISTRY_USERNAME", "account for the target registry (push, diff, export from a registry)"),
    ("FERRY_REGISTRY_PASSWORD", "its password (with -u: the password of that user)"),
    ("FERRY_SOURCE_USERNAME", "account for the source registry of ferry copy"),
    ("FERRY_SOURCE_PASSWORD", "its password"),
    ("REGISTRY_AUTH_FILE", "containers auth.json to read credentials from (as podman and skopeo do)"),
    ("XDG_RUNTIME_DIR", "holds containers/auth.json (podman login writes it there)"),
    ("DOCKER_CONFIG", "folder of docker's config.json (default ~/.docker)"),
    (
        "AWS_ENDPOINT_URL",
        "S3 endpoint for s3://BUCKET/PREFIX (also AWS_REGION, AWS_PROFILE, AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY and the rest of boto3's own)",
    ),
    ("FERRY_REGISTRY_LOG", "log level of the registries ferry demo starts (default error)"),
]

app = typer.Typer(
    name="ferry",
    help="Move a whole Docker registry into Harbor across an air gap: export the registry's storage tree into "
    "one checksummed bundle, verify it after the trip, then restore it into Harbor 1.x storage or push it "
    "into Harbor 2.x (or any registry).",
    epilog="Environment: " + "; ".join(f"{var}: {what}" for var, what in ENVIRONMENT) + ".",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # plain help (click's formatter): it wraps every text to the terminal; rich's option tables cut long
    # words (URLs, variable names) at 80 columns
    rich_markup_mode=None,
)
log = logging.getLogger("ferry")

T = TypeVar("T")
_state = {"debug": False}

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary; errors only.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON result on stdout.")]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", min=0, help="Hashing threads (0: one per core).")]
# the registry options of every command that talks to one (push, diff): one declaration, one meaning
UsernameOpt = Annotated[
    Optional[str], typer.Option("--username", "-u", help="Registry user (password from --password-stdin).")
]
PasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from stdin (else FERRY_REGISTRY_PASSWORD or docker config).",
    ),
]
AuthfileOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--authfile",
        help="Read registry credentials from this auth file only (containers auth.json or docker config.json "
        "form) instead of REGISTRY_AUTH_FILE, the containers and docker files.",
        show_default=False,
    ),
]
CaCertOpt = Annotated[
    Optional[Path], typer.Option("--ca-cert", help="CA certificate bundle for the registry's TLS.")
]
InsecureOpt = Annotated[
    bool, typer.Option("--insecure", help="Do not verify the registry's TLS certificate.")
]
RetriesOpt = Annotated[
    int, typer.Option("--retries", min=1, help="Attempts per request or upload on retryable errors.")
]
PlatformOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--platform",
        help="os/arch or os/arch/variant (repeatable): of a multi-platform image, only these platforms' images; the "
        "index keeps its exact bytes and records the others as left out.",
        show_default=False,
    ),
]


def parse_images_file(path: Path) -> tuple[str, ...]:
    """``--images-from``: one ``repository[:tag]`` per line, as the seed's images.list; each becomes an
    exact pattern (names and tags hold no glob characters), so one that matches nothing is named."""
    from ferry.shared.storage.paths import repository_problem, tag_problem

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--images-from {path}: cannot read it ({type(e).__name__}: {e})") from None
    out = []
    for n, line in enumerate(lines, 1):
        ref = line.split("#", 1)[0].strip()
        if not ref:
            continue
        repo, _, tag = ref.partition(":")
        problem = repository_problem(repo) or (tag_problem(tag) if tag else None)
        if problem is not None:
            raise UsageError(f"--images-from {path}, line {n}: {ref!r}: {problem}")
        out.append(ref)
    if not out:
        raise UsageError(f"--images-from {path}: lists no image")
    return tuple(out)


def parse_platforms(items: Optional[list[str]]) -> tuple[str, ...]:
    out = []
    for p in items or ():
        parts = p.split("/")
        if not 2 <= len(parts) <= 3 or not all(
            x and x.replace("_", "").replace("-", "").isalnum() for x in parts
        ):
            raise UsageError(f"--platform {p!r}: expected os/arch or os/arch/variant (e.g. linux/amd64)")
        out.append(p)
    return tuple(out)


S3EndpointOpt = Annotated[
    Optional[str],
    typer.Option(
        "--s3-endpoint",
        help="With s3://BUCKET/PREFIX: the S3 endpoint URL (else AWS_ENDPOINT_URL, else AWS). Credentials: the "
        "AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and ~/.aws files.",
        show_default=False,
    ),
]
S3RegionOpt = Annotated[Optional[str], typer.Option("--s3-region", help="S3 region (else AWS_REGION).")]
S3ProfileOpt = Annotated[Optional[str], typer.Option("--s3-profile", help="A profile of ~/.aws/credentials.")]
S3PathStyleOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--s3-path-style/--s3-virtual-host",
        help="Bucket addressing (default: path-style with a custom endpoint, as S3-compatible servers need).",
    ),
]
HarborOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--harbor/--no-harbor",
        help="Treat the target as Harbor 2.x (default: detect via /api/v2.0/systeminfo).",
    ),
]
MapOpt = Annotated[
    Optional[list[str]], typer.Option("--map", help="Rename a repository prefix: OLD=NEW (repeatable).")
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Move tags the target already has at another digest. Without it they are kept, reported "
        "(target and bundle digest) and the run exits 1 once everything else is done.",
    ),
]


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C: every cleanup that runs for Ctrl-C runs for it."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def _execute(fn: Callable[[], T], *, as_json: bool, quiet: bool, show: Callable[[T], None]) -> T:
    try:
        result = fn()
    except FerryError as e:
        render.render_error(e, as_json=as_json)
        raise typer.Exit(e.exit_code) from None
    except Terminated:
        render.err.print("[red]terminated[/] (SIGTERM): stopped; nothing finished was left half-written")
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        render.err.print("[red]interrupted[/]: nothing finished was left half-written")
        raise typer.Exit(130) from None
    except Exception as e:
        if _state["debug"]:
            raise
        render.err.print(f"[bold red]internal error[/]: {type(e).__name__}: {render.safe(e)}")
        render.err.print("[yellow]hint[/]: re-run with --debug for the traceback, and report it")
        raise typer.Exit(70) from None
    if as_json:
        render.print_json(result.to_dict())  # type: ignore[attr-defined]
    elif not quiet:
        show(result)
    return result


def _named_bundle(bundle: Union[Path, str]) -> None:
    """A bundle argument that names no bundle (or a volume set with a gap) is said before the command's
    library is imported: that import was a third of the start of ``ferry verify missing.tar``.  Called
    after the command's own option checks (a wrong option is named first) by the commands whose checks
    import nothing; the library checks again, for its other callers."""
    if str(bundle) != "-":
        from ferry.shared.bundle.volumes import find_volumes

        find_volumes(Path(bundle))


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def parse_size(text: str, option: str = "--volume-size", minimum: int = 1) -> int:
    """``4G`` = 4·10⁹ (fits FAT32's 4 GiB - 1 limit), ``4GiB`` = 4·2³⁰, plain numbers are bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"{option} {text!r}: not a size (examples: 4G, 700M, 2GiB, 1000000)")
    number, unit, binary = float(m.group(1)), m.group(2).lower(), bool(m.group(3))
    power = "_kmgt".index(unit) if unit else 0
    size = int(number * (1024 if binary else 1000) ** power)
    if size < minimum:
        raise UsageError(f"{option} {text!r}: must be at least {minimum} bytes")
    return size


# ----------------------------------------------------------------------------------------------------
# export


@app.command()
def export(
    root: Annotated[
        str,
        typer.Argument(
            help="The registry's root directory (holding docker/registry/v2), that v2 directory, "
            "an uncompressed tar of either (read in place), or a live registry: docker://HOST[:PORT], "
            "https://… or http://… (read over the V2 API).",
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
        Optional[list[str]],
        typer.Option(
            "--include", help="Only images matching this glob on 'repo' or 'repo:tag' (repeatable)."
        ),
    ] = None,
    exclude: Annotated[
        Optional[list[str]],
        typer.Option(
            "--exclude", help="Leave out images matching this glob on 'repo' or 'repo:tag' (repeatable)."
        ),
    ] = None,
    images_from: Annotated[
        Optional[Path],
        typer.Option(
            "--images-from",
            help="Only the images this file lists, one 'repository' or 'repository:tag' per line ('#' "
            "starts a comment); a line that matches nothing is an error.",
            show_default=False,
        ),
    ] = None,
    skip_broken: Annotated[
        bool,
        typer.Option(
            "--skip-broken", help="Export the intact images and record the broken ones instead of failing."
        ),
    ] = False,
    platform: PlatformOpt = None,
    volume_size: Annotated[
        Optional[str],
        typer.Option(
            "--volume-size",
            help="Split into BUNDLE.000, BUNDLE.001, … each at most this size (4G = 4·10⁹ bytes, fits FAT32; "
            "4GiB = 4·2³⁰). `cat` of the volumes is the single-file bundle.",
        ),
    ] = None,
    since: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--since",
            help="An earlier bundle (file or volume set) or its receipt: write a delta that ships only the "
            "manifests and blobs none of them carried (repeatable: every earlier wave).",
            show_default=False,
        ),
    ] = None,
    receipt: Annotated[
        Optional[Path],
        typer.Option(
            "--receipt",
            help="Also write this bundle's receipt here: its index alone (KBs), enough to --since against "
            "later without keeping the bundle.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted export: keep the members of BUNDLE.partial (or its partial "
            "volumes) that check out, then write the rest.",
        ),
    ] = False,
    repos_from: Annotated[
        Optional[Path],
        typer.Option(
            "--repos-from",
            help="From a registry that does not list its repositories (/v2/_catalog refused): read these, "
            "one per line.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle of that name.")] = False,
    with_kit: Annotated[
        Optional[Path],
        typer.Option(
            "--with-kit",
            help="Carry ferry's offline install kit (made by `ferry kit -o DIR`) in the bundle, under "
            "ferry/kit/: the far side installs with `tar -xf BUNDLE ferry/kit && sh ferry/kit/install.sh`.",
            show_default=False,
        ),
    ] = None,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    authfile: AuthfileOpt = None,
    ca_cert: CaCertOpt = None,
    insecure: InsecureOpt = False,
    retries: RetriesOpt = 5,
    s3_endpoint: S3EndpointOpt = None,
    s3_region: S3RegionOpt = None,
    s3_profile: S3ProfileOpt = None,
    s3_path_style: S3PathStyleOpt = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=0,
            help="Hashing threads (0: one per core); from a registry, requests in flight (0: 8).",
        ),
    ] = 0,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a registry storage tree into one bundle: every image, every blob once, checksummed.

    Nothing is written until the whole source has been read and every blob's sha256 checked; a broken image
    stops the export (or is skipped with --skip-broken). The bundle is written as BUNDLE.partial and renamed
    when complete. With --since it is a delta for the next wave of a migration.
    """

    def go() -> "ExportResult":
        from ferry.bundler.export import ExportOptions
        from ferry.bundler.export import run as run_export
        from ferry.shared.bundle.tario import RECORD
        from ferry.shared.storage.reader import Selection

        if output == "-" and sys.stdout.isatty():
            raise UsageError(
                "refusing to write a binary bundle to a terminal", hint="Redirect or pipe stdout."
            )
        if output != "-" and Path(output).is_dir():
            raise UsageError(
                f"-o {output}: is a directory; name the bundle file, e.g. {Path(output) / 'registry.tar'}"
            )
        from ferry.shared.storage.s3fs import S3Config

        config = None
        s3 = None
        if root.startswith("s3://"):
            s3 = S3Config(
                endpoint=s3_endpoint,
                region=s3_region,
                profile=s3_profile,
                path_style=s3_path_style,
                ca_cert=str(ca_cert) if ca_cert else None,
                insecure=insecure,
            )
        elif s3_endpoint or s3_region or s3_profile or s3_path_style is not None:
            raise UsageError(
                "--s3-endpoint, --s3-region, --s3-profile and --s3-path-style are for s3://BUCKET/PREFIX"
            )
        if root.startswith(("docker://", "http://", "https://")):
            url, found = _registry_access(
                root, username, password_stdin, ca_cert, insecure, authfile, bundle_on_stdin=False
            )
            # the HTTP stack only for a registry source (30 ms of every local export's start)
            from ferry.shared.registry.client import ClientConfig

            config = ClientConfig(
                url=url,
                credentials=found.credentials,
                credentials_tried=found.tried,
                ca_cert=str(ca_cert) if ca_cert else None,
                insecure=insecure,
                connections=max(8, 2 * (jobs or 8)),
            )
        elif username or password_stdin or (s3 is None and (ca_cert or insecure)) or repos_from:
            raise UsageError(
                "-u, --password-stdin, --ca-cert, --insecure and --repos-from are for a registry source "
                "(docker://HOST, https://…)",
            )
        opts = ExportOptions(
            root=Path(root),
            registry=config,
            s3_url=root if s3 is not None else None,
            s3=s3,
            repos_from=repos_from,
            retries=retries,
            api_jobs=jobs or 8,
            output=None if output == "-" else Path(output),
            selection=Selection(
                include=tuple(include or ()) + (parse_images_file(images_from) if images_from else ()),
                exclude=tuple(exclude or ()),
                untagged=untagged,
                platforms=parse_platforms(platform),
            ),
            skip_broken=skip_broken,
            volume_size=parse_size(volume_size, "--volume-size", RECORD) if volume_size else None,
            jobs=jobs,
            since=tuple(since or ()),
            receipt=receipt,
            resume=resume,
            with_kit=with_kit,
            force=force,
        )
        with render.progress(not quiet and not as_json) as on_progress:
            return run_export(opts, on_progress=on_progress)

    def show(r: "ExportResult") -> None:
        where = ", ".join(str(p) for p in r.files) or "stdout"
        for s in r.skipped:
            render.err.print(
                f"[yellow]skipped[/] {render.safe(s.ref)}: {render.safe(s.reason)}", soft_wrap=True
            )
        render.err.print(
            f"[green]exported[/] {r.repositories} repositories, {r.tags} tags"
            + (f", {r.untagged} untagged" if r.untagged else "")
            + f", {r.manifests} manifests, {r.blobs} blobs ({render.human(r.blob_bytes)})"
            + (f", {r.foreign_layers} foreign layers recorded" if r.foreign_layers else "")
            + (f", {len(r.skipped)} skipped" if r.skipped else "")
            + f" in {r.seconds:.1f}s → {render.safe(where)}",
            soft_wrap=True,
        )
        if r.bases:
            render.err.print(
                f"[green]delta[/] against {', '.join(b.bundle_id for b in r.bases)}: "
                f"{r.count('new')} tags new, {r.count('moved')} moved, {r.count('gone')} gone from this "
                f"selection; {r.carried_blobs} blobs and {r.carried_manifests} manifests "
                f"({render.human(r.carried_bytes)}) left to the bases",
                soft_wrap=True,
            )
        if r.resumed:
            render.err.print(f"resumed: {r.resumed} members ({render.human(r.resumed_bytes)}) kept")
        if r.kit:
            render.err.print(f"install kit: {len(r.kit)} files under ferry/kit/")
        for note in r.notes:
            render.err.print(f"[yellow]note[/]: {render.safe(note)}", soft_wrap=True)
        render.err.print(
            f"bundle id {r.bundle_id}" + (f", receipt {render.safe(str(r.receipt))}" if r.receipt else "")
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

    def go() -> "VerifyResult":
        _named_bundle(bundle)
        from ferry.importer.verify import VerifyOptions
        from ferry.importer.verify import run as run_verify

        with render.progress(not quiet and not as_json) as on_progress:
            return run_verify(VerifyOptions(path=bundle, quick=quick, jobs=jobs), on_progress=on_progress)

    def show(r: "VerifyResult") -> None:
        rate = r.bytes / r.seconds / 1e6 if r.seconds else 0
        render.err.print(
            f"[green]ok[/] {render.safe(r.path)}: {r.members} members, {r.images} images, {render.human(r.bytes)} "
            f"({'xxh3' if r.quick else 'xxh3 + sha256'}) in {r.seconds:.1f}s, {rate:.0f} MB/s",
            soft_wrap=True,
        )
        if r.bases:
            render.err.print(
                "a delta: the target must have received "
                + ", ".join(f"bundle {b.bundle_id} (created {b.created})" for b in r.bases)
                + " before this one",
                soft_wrap=True,
            )
        if r.kit:
            render.err.print(
                f"carries ferry's install kit ({len(r.kit)} files): tar -xf {render.safe(r.path)} ferry/kit && "
                "sh ferry/kit/install.sh",
                soft_wrap=True,
            )

    _execute(go, as_json=as_json, quiet=quiet, show=show)


@app.command()
def inspect(
    bundle: BundleArg,
    no_trunc: Annotated[
        bool,
        typer.Option("--no-trunc", help="Full digests (the default when stdout is not a terminal)."),
    ] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Show what a bundle holds: repositories, tags, images, blobs, bytes, skipped items, source."""
    full = no_trunc or not sys.stdout.isatty()

    def short(digest: str) -> str:
        return digest if full else digest[:19] + "…"

    def show(r: "InspectResult") -> None:
        d: dict[str, Any] = r.to_dict(images=False)
        src = d["source"]
        render.out.print(
            f"[bold]{render.safe(r.path)}[/]  format {d['formatVersion']}, ferry {d['ferryVersion']}, created {d['created']}"
            + (f", bundle id {d['bundleId']}" if d["bundleId"] else "")
            + "\n"
            f"source: {render.safe(src.get('path'))} ({render.safe(src.get('kind'))}) on {render.safe(src.get('host'))}\n"
            f"{len(d['repositories'])} repositories, {d['imageCount']} images, {d['manifestCount']} manifests, "
            f"{d['blobCount']} blobs, {render.human(d['bytes'])} of content, bundle {render.human(d['bundleBytes'])}",
            soft_wrap=True,
        )
        rows = (
            [
                i.repository,
                i.tag if i.tag is not None else "(untagged)",
                short(i.digest),
                i.media_type.rsplit("/", 1)[-1],
                ", ".join(platforms),
            ]
            for i, platforms in r.images()
        )
        render.table("images", ["repository", "tag", "digest", "type", "platforms"], rows)
        for s in d["skipped"]:
            render.out.print(
                f"[yellow]skipped[/] {render.safe(s['image'])}: {render.safe(s['reason'])}", soft_wrap=True
            )
        if d["foreignLayers"]:
            render.out.print(
                f"{len(d['foreignLayers'])} foreign layer(s) recorded, not bundled (fetched from their URLs)"
            )
        w = d["wave"]
        if w["bases"]:
            render.out.print(
                ("[bold]delta[/] on " if w["delta"] else "exported against ")
                + ", ".join(f"{b['bundleId']} ({b['created']})" for b in w["bases"])
                + f": adds {len(w['tagsNew'])} tags, moves {len(w['tagsMoved'])}, "
                f"{w['manifestsNewCount']} manifests and {w['blobsNewCount']} blobs new ({render.human(w['bytesNew'])}); "
                f"{w['carried']['blobCount']} blobs ({render.human(w['carried']['bytes'])}) came with the bases",
                soft_wrap=True,
            )
            for c in w["tagsMoved"]:
                render.out.print(f"  moved {render.safe(c['ref'])}: {short(c['old'])} → {short(c['digest'])}")
            if w["tagsGone"]:
                render.out.print(
                    f"{len(w['tagsGone'])} tag(s) in a base but not in this selection (left as they are on "
                    "import): "
                    + ", ".join(render.safe(c["ref"]) for c in w["tagsGone"][:10])
                    + (" …" if len(w["tagsGone"]) > 10 else ""),
                    soft_wrap=True,
                )

    def go() -> "InspectResult":
        _named_bundle(bundle)
        from ferry.importer.inspect import run as run_inspect

        return run_inspect(bundle)

    _execute(go, as_json=as_json, quiet=quiet, show=show)


# ----------------------------------------------------------------------------------------------------
# restore


def _show_restore(r: "RestoreResult", overwrite: bool = False) -> None:
    p = r.plan
    if r.dry_run:
        render.out.print(
            f"[bold]plan[/] for {render.safe(r.root)}: {p.repositories} repositories, {p.tags} tags; "
            f"{p.blobs_to_write} blobs to write ({render.human(p.bytes_to_write)}), {p.blobs_present} already there"
            + (
                f"; tags elsewhere in the target ({'would move' if overwrite else 'kept; --overwrite moves them'}): "
                f"{render.safe(', '.join(p.tags_to_move))}"
                if p.tags_to_move
                else ""
            ),
            soft_wrap=True,
        )
        if r.projects:
            render.out.print(f"Harbor projects needed: {render.safe(', '.join(r.projects))}", soft_wrap=True)
        return
    for old, new in r.renamed:
        render.err.print(f"[cyan]renamed[/] {render.safe(old)} → {render.safe(new)}", soft_wrap=True)
    for tag, old, new in r.tags_moved:
        render.err.print(f"[yellow]moved[/] {render.safe(tag)}: {old} → {new}", soft_wrap=True)
    for tag, old, new in r.tags_kept:
        render.err.print(
            f"[red]conflict[/] {render.safe(tag)} is at {old} in the target; the bundle has {new}: "
            "not moved (--overwrite moves it)",
            soft_wrap=True,
        )
    render.err.print(
        f"[green]restored[/] {p.repositories} repositories, {p.tags} tags into {render.safe(r.root)}: "
        f"{r.blobs_written} blobs written ({render.human(r.bytes_written)}), {r.blobs_present} already there, "
        f"{r.tags_written} tags written in {r.seconds:.1f}s",
        soft_wrap=True,
    )
    if r.redis_keys_deleted is not None:
        render.err.print(f"redis: {r.redis_keys_deleted} registry cache keys deleted (DB 1)")
    if r.redis_dump_removed is not None:
        render.err.print(f"redis dump {'removed' if r.redis_dump_removed else 'was not there'}")
    if r.harbor is not None:
        h = r.harbor
        render.err.print(
            f"Harbor {render.safe(h.version)}: projects created {render.safe(', '.join(h.created) or '-')}, "
            f"existing {render.safe(', '.join(h.existing) or '-')}; "
            f"syncregistry called{'; syncquota called' if h.synced_quota else ''}",
            soft_wrap=True,
        )
    for o in r.orphans:
        render.err.print(
            f"[yellow]warning[/] {render.safe(o)}: no project component, Harbor will not list it",
            soft_wrap=True,
        )
    for limit in r.harbor_limits:
        render.err.print(f"[yellow]note[/]: {render.safe(limit)}", soft_wrap=True)
    if r.next_steps:
        render.err.print("[bold]next steps[/]:")
        for i, step in enumerate(r.next_steps, 1):
            render.err.print(f"  {i}. {render.safe(step)}", soft_wrap=True)


def _show_push(r: "PushResult", overwrite: bool = False) -> None:
    if r.dry_run:
        p: dict[str, Any] = r.plan
        render.out.print(
            f"[bold]plan[/] for {render.safe(r.registry)}{' (Harbor ' + render.safe(r.harbor) + ')' if r.harbor else ''}: "
            f"{len(r.images)} images; {p['blobsToUpload']} blobs to upload ({render.human(float(p['bytesToUpload']))}), "
            f"{p['blobsPresent']} already there; tags: {len(p['tagsToCreate'])} to create, "
            f"{len(p['tagsToMove'])} elsewhere on the target, {len(p['tagsRight'])} already right"
            + (
                f"; projects to create: {render.safe(', '.join(r.projects_created))}"
                if r.projects_created
                else ""
            ),
            soft_wrap=True,
        )
        verb = "would move" if overwrite else "exists elsewhere, would be kept (--overwrite moves it)"
        for m in p["tagsToMove"]:
            render.out.print(
                f"  [yellow]{verb}[/] {render.safe(m['ref'])}: target {m['target']}, bundle {m['bundle']}",
                soft_wrap=True,
            )
        return
    for project, message in sorted(r.refused.items()):
        n = sum(1 for i in r.images if i.status == "failed" and i.ref.split("/", 1)[0] == project)
        render.err.print(
            f"[red]refused[/] account {render.safe(r.account or '(anonymous)')} may not push to project "
            f"{render.safe(project)}: {n} image(s) not pushed (the registry said: {render.safe(message)})\n"
            f"  [yellow]hint[/]: add {render.safe(r.account or 'the account')} to project {render.safe(project)} "
            "as a Developer or Maintainer, or push with a robot account that has push permission in it",
            soft_wrap=True,
        )
    for ref, target, bundle_digest in r.tags_moved:
        render.err.print(f"[yellow]moved[/] {render.safe(ref)}: {target} → {bundle_digest}", soft_wrap=True)
    for i in r.images:
        if i.status == "failed" and i.ref.split("/", 1)[0] in r.refused:
            continue  # said once per project, above
        if i.status != "pushed":
            colour = "red" if i.status in ("failed", "conflict") else "yellow"
            render.err.print(
                f"[{colour}]{i.status}[/] {render.safe(i.ref)}: {render.safe(i.reason)}", soft_wrap=True
            )
        elif i.pushed_digest:
            render.err.print(
                f"[cyan]converted[/] {render.safe(i.ref)}: {i.digest} → {i.pushed_digest}", soft_wrap=True
            )
    d = r.to_dict()
    render.err.print(
        f"[{'green' if not r.failed else 'red'}]pushed[/] {d['pushedCount']} images, {d['skippedCount']} skipped, "
        f"{d['failedCount']} failed"
        + (f", {d['conflictCount']} tags kept where the target had them" if d["conflictCount"] else "")
        + f" → {render.safe(r.registry)}: {r.blobs_uploaded} blobs uploaded ({render.human(r.bytes_uploaded)}), "
        f"{r.blobs_mounted} mounted, {r.blobs_present} already there"
        + (f"; projects created: {render.safe(', '.join(r.projects_created))}" if r.projects_created else "")
        + f" in {r.seconds:.1f}s",
        soft_wrap=True,
    )


def parse_owner(text: str) -> "Owner | None":
    from ferry.shared.storage.writer import Owner

    if text == "keep":
        return None
    uid, _, gid = text.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise UsageError(f"--owner {text!r}: expected UID:GID (e.g. 10000:10000) or 'keep'")
    return Owner(int(uid), int(gid or uid))


def _password(password_stdin: bool, bundle_on_stdin: bool, env: str) -> str:
    if password_stdin:
        if bundle_on_stdin:
            raise UsageError(
                "--password-stdin cannot be used when the bundle comes from stdin", hint=f"Set {env}."
            )
        return sys.stdin.readline().rstrip("\n")
    pw = os.environ.get(env)
    if pw is None:
        raise UsageError(f"no password: pass --password-stdin or set {env} (never on the command line)")
    return pw


@app.command()
def restore(
    bundle: Annotated[
        str,
        typer.Argument(help="The bundle (file, volume set, or '-' for stdin).", show_default=False),
    ],
    root: Annotated[
        str,
        typer.Option(
            "--root",
            help="Registry storage directory (Harbor 1.x: /data/registry; it holds docker/registry/v2), or "
            "s3://BUCKET/PREFIX for a registry on the s3 driver (PREFIX: its rootdirectory).",
            show_default=False,
        ),
    ],
    owner: Annotated[
        str,
        typer.Option(
            "--owner", help="UID:GID for everything written, or 'keep'. Harbor's registry user is 10000."
        ),
    ] = "10000:10000",
    s3_endpoint: S3EndpointOpt = None,
    s3_region: S3RegionOpt = None,
    s3_profile: S3ProfileOpt = None,
    s3_path_style: S3PathStyleOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print what would be written and what is already there; write nothing."
        ),
    ] = False,
    redis_url: Annotated[
        Optional[str],
        typer.Option(
            "--redis-url",
            help="Clear Harbor's registry cache (Redis DB 1) at this URL, e.g. redis://host:6379.",
        ),
    ] = None,
    redis_dump: Annotated[
        Optional[Path],
        typer.Option("--redis-dump", help="With Harbor stopped: remove this Redis dump file instead."),
    ] = None,
    harbor_url: Annotated[
        Optional[str],
        typer.Option(
            "--harbor-url", help="Harbor 1.x URL: create missing projects and call syncregistry/syncquota."
        ),
    ] = None,
    harbor_user: Annotated[str, typer.Option("--harbor-user", help="Harbor admin account.")] = "admin",
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="Read the Harbor password from stdin (else FERRY_HARBOR_PASSWORD)."
        ),
    ] = False,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Do not verify Harbor's TLS certificate.")
    ] = False,
    overwrite: OverwriteOpt = False,
    default_project: Annotated[
        str,
        typer.Option(
            "--default-project",
            help="With --harbor-url: the project for one-level names (alpine → library/alpine); Harbor 1.x "
            "cannot serve one-level names.",
        ),
    ] = "library",
    map_: MapOpt = None,
    jobs: JobsOpt = 0,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore a bundle into registry storage (Harbor 1.x, or any Docker Distribution), then resync Harbor.

    Writes the Distribution layout (blobs, _layers and revision links, tags), merging into what is there;
    every blob is verified as it lands and tags are written only once the bundle proved complete.
    Running it twice changes nothing.
    """

    def go() -> "RestoreResult":
        from ferry.importer.harbor1 import HarborAccess
        from ferry.importer.restore import RestoreOptions
        from ferry.importer.restore import run as run_restore
        from ferry.shared.registry.client import parse_url

        harbor = None
        if password_stdin and not harbor_url:
            raise UsageError("--password-stdin is the Harbor password: it needs --harbor-url")
        if harbor_url:
            url = parse_url(harbor_url, option="--harbor-url", registry=False)
            pw = _password(password_stdin, bundle == "-", "FERRY_HARBOR_PASSWORD")
            harbor = HarborAccess(url, harbor_user, pw, verify=not insecure)
        from ferry.shared.storage.s3fs import S3Config

        s3 = None
        if root.startswith("s3://"):
            s3 = S3Config(
                endpoint=s3_endpoint, region=s3_region, profile=s3_profile, path_style=s3_path_style
            )
        elif s3_endpoint or s3_region or s3_profile or s3_path_style is not None:
            raise UsageError(
                "--s3-endpoint, --s3-region, --s3-profile and --s3-path-style are for --root s3://…"
            )
        opts = RestoreOptions(
            bundle=bundle,
            root=Path(root),
            s3_url=root if s3 is not None else None,
            s3=s3,
            owner=parse_owner(owner),
            dry_run=dry_run,
            jobs=jobs,
            redis_url=redis_url,
            redis_dump=redis_dump,
            harbor=harbor,
            overwrite=overwrite,
            maps=parse_map(map_),
            default_project=default_project,
        )
        with render.progress(not quiet and not as_json) as on_progress:
            return run_restore(opts, stdin=sys.stdin.buffer, on_progress=on_progress)

    result = _execute(
        go, as_json=as_json, quiet=quiet, show=functools.partial(_show_restore, overwrite=overwrite)
    )
    if result.tags_kept:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------------------------------
# push


def _registry_access(
    registry: str,
    username: Optional[str],
    password_stdin: bool,
    ca_cert: Optional[Path],
    insecure: bool,
    authfile: Optional[Path],
    *,
    bundle_on_stdin: bool,
) -> "tuple[str, Resolved]":
    """The registry options every command that talks to one takes (push, diff), checked the same way
    before anything is opened: the URL, the CA bundle, and the credentials (-u with --password-stdin or
    FERRY_REGISTRY_PASSWORD, else FERRY_REGISTRY_USERNAME/PASSWORD, else the auth files: credentials.resolve)."""
    from ferry.shared.registry.client import parse_url, ssl_context
    from ferry.shared.registry.credentials import resolve

    if password_stdin and not username:
        raise UsageError(
            "--password-stdin needs --username (-u): a password alone names no account",
            hint="Pass -u USER with --password-stdin, or set FERRY_REGISTRY_USERNAME and FERRY_REGISTRY_PASSWORD.",
        )
    url = parse_url(registry)
    ssl_context(str(ca_cert) if ca_cert else None, insecure)  # a bad --ca-cert is refused now
    password = None
    if username:
        if not password_stdin and os.environ.get("FERRY_REGISTRY_PASSWORD") is None:
            raise UsageError(
                "--username needs --password-stdin or FERRY_REGISTRY_PASSWORD (never a password in argv)"
            )
        password = _password(password_stdin, bundle_on_stdin, "FERRY_REGISTRY_PASSWORD")
    return url, resolve(registry, username, password, authfile=authfile)


def parse_map(items: Optional[list[str]]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise UsageError(f"--map {item!r}: expected OLD=NEW (a repository prefix and its new name)")
        out.append((old, new))
    return tuple(out)


@app.command()
def push(
    bundle: Annotated[
        str, typer.Argument(help="The bundle (file, volume set, or '-' for stdin).", show_default=False)
    ],
    registry: Annotated[
        str,
        typer.Option(
            "--registry",
            help="Target registry URL: https://harbor.example.com, http://host:5000.",
            show_default=False,
        ),
    ],
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    authfile: AuthfileOpt = None,
    ca_cert: CaCertOpt = None,
    insecure: InsecureOpt = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Blobs and images in flight at once.")] = 8,
    chunk_size: Annotated[
        str,
        typer.Option(
            "--chunk-size", help="Blobs larger than this go up in chunked PATCHes (64MiB, 10MB, …)."
        ),
    ] = "64MiB",
    retries: RetriesOpt = 5,
    harbor: HarborOpt = None,
    default_project: Annotated[
        str,
        typer.Option(
            "--default-project", help="Harbor project for one-level names (alpine → library/alpine)."
        ),
    ] = "library",
    map_: MapOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the plan against the live target; upload nothing, create nothing."
        ),
    ] = False,
    convert_schema1: Annotated[
        bool,
        typer.Option(
            "--convert-schema1",
            help="Push schema 1 images converted to schema 2 (new digests, printed old → new) instead of skipping them.",
        ),
    ] = False,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Push a bundle through the Registry V2 API into Harbor 2.x or any registry.

    Blobs the target has are skipped, blobs pushed to another repository are mounted, the rest uploaded
    (chunked above --chunk-size); manifests keep their exact bytes and digests. Re-running finishes what
    an interrupted run left and uploads nothing twice. Exits 1 if any image failed.
    """

    def go() -> "PushResult":
        from ferry.importer.push import PushOptions
        from ferry.importer.push import run as run_push

        url, found = _registry_access(
            registry, username, password_stdin, ca_cert, insecure, authfile, bundle_on_stdin=bundle == "-"
        )
        opts = PushOptions(
            bundle=bundle,
            registry=url,
            credentials=found.credentials,
            credentials_tried=found.tried,
            ca_cert=str(ca_cert) if ca_cert else None,
            insecure=insecure,
            jobs=jobs,
            chunk_size=parse_size(chunk_size, "--chunk-size", 1 << 10),
            retries=retries,
            harbor=harbor,
            default_project=default_project,
            maps=parse_map(map_),
            dry_run=dry_run,
            convert_schema1=convert_schema1,
            overwrite=overwrite,
        )
        with render.progress(not quiet and not as_json) as on_progress:
            result = run_push(opts, stdin=sys.stdin.buffer, on_progress=on_progress)
        return result

    result = _execute(
        go, as_json=as_json, quiet=quiet, show=functools.partial(_show_push, overwrite=overwrite)
    )
    if result.failed:
        raise typer.Exit(1)


@app.command()
def copy(
    source: Annotated[
        str,
        typer.Argument(
            help="A storage tree (directory or tar), a bundle, or a live registry (docker://HOST, https://…).",
            show_default=False,
        ),
    ],
    target: Annotated[
        str,
        typer.Argument(
            help="A registry URL (pushed as `ferry push` does) or a storage root (written as `ferry restore`).",
            show_default=False,
        ),
    ],
    include: Annotated[
        Optional[list[str]], typer.Option("--include", help="Only images matching this glob.")
    ] = None,
    exclude: Annotated[
        Optional[list[str]], typer.Option("--exclude", help="Leave out images matching this glob.")
    ] = None,
    skip_broken: Annotated[
        bool, typer.Option("--skip-broken", help="Copy the intact images, report the broken ones.")
    ] = False,
    platform: PlatformOpt = None,
    repos_from: Annotated[
        Optional[Path],
        typer.Option("--repos-from", help="Repositories of a source registry that does not list them."),
    ] = None,
    src_username: Annotated[
        Optional[str],
        typer.Option(
            "--src-username",
            help="Source registry user; the password from FERRY_SOURCE_PASSWORD (or the docker config).",
        ),
    ] = None,
    src_ca_cert: Annotated[
        Optional[Path], typer.Option("--src-ca-cert", help="CA bundle for the source's TLS.")
    ] = None,
    src_insecure: Annotated[
        bool, typer.Option("--src-insecure", help="Do not verify the source registry's TLS certificate.")
    ] = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    authfile: AuthfileOpt = None,
    ca_cert: CaCertOpt = None,
    insecure: InsecureOpt = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Requests in flight on each side.")] = 8,
    retries: RetriesOpt = 5,
    harbor: HarborOpt = None,
    default_project: Annotated[
        str, typer.Option("--default-project", help="Harbor project for one-level names.")
    ] = "library",
    map_: MapOpt = None,
    overwrite: OverwriteOpt = False,
    owner: Annotated[
        str, typer.Option("--owner", help="Into a storage root: UID:GID of what is written, or 'keep'.")
    ] = "10000:10000",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="The plan against the live target.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy straight from a source into a target, no bundle in between, when both are reachable.

    The push (or restore) flow of ferry: exact digests, every index child, mounts, resume on rerun, tags
    last, and the same report. Exits 1 if any image failed or a tag was kept.
    """
    registry_target = target.startswith(("docker://", "http://", "https://"))

    def go() -> "PushResult | RestoreResult":
        from ferry.importer.copy import CopyOptions
        from ferry.importer.copy import run as run_copy
        from ferry.importer.push import PushOptions
        from ferry.importer.restore import RestoreOptions
        from ferry.shared.registry.client import ClientConfig, parse_url, ssl_context
        from ferry.shared.registry.credentials import resolve
        from ferry.shared.storage.reader import Selection

        src_config = None
        if source.startswith(("docker://", "http://", "https://")):
            src_url = parse_url(source, option="SOURCE")
            ssl_context(str(src_ca_cert) if src_ca_cert else None, src_insecure, option="--src-ca-cert")
            pw = os.environ.get("FERRY_SOURCE_PASSWORD") if src_username else None
            if src_username and pw is None:
                raise UsageError("--src-username needs FERRY_SOURCE_PASSWORD (never a password in argv)")
            src_found = resolve(source, src_username, pw, env="FERRY_SOURCE")
            src_config = ClientConfig(
                url=src_url,
                credentials=src_found.credentials,
                credentials_tried=src_found.tried,
                ca_cert=str(src_ca_cert) if src_ca_cert else None,
                insecure=src_insecure,
                connections=max(8, 2 * jobs),
            )
        elif not Path(source).exists() and not Path(source + ".000").exists():
            raise UsageError(
                f"{source}: no such storage tree or bundle (a registry is docker://HOST or https://…)"
            )
        push_opts = restore_opts = None
        if registry_target:
            url, found = _registry_access(
                target, username, password_stdin, ca_cert, insecure, authfile, bundle_on_stdin=False
            )
            push_opts = PushOptions(
                bundle=source,
                registry=url,
                credentials=found.credentials,
                credentials_tried=found.tried,
                ca_cert=str(ca_cert) if ca_cert else None,
                insecure=insecure,
                jobs=jobs,
                retries=retries,
                harbor=harbor,
                default_project=default_project,
                maps=parse_map(map_),
                dry_run=dry_run,
                overwrite=overwrite,
            )
        else:
            if username or password_stdin or ca_cert or insecure:
                raise UsageError("-u, --password-stdin, --ca-cert and --insecure are for a registry target")
            restore_opts = RestoreOptions(
                bundle=source,
                root=Path(target),
                owner=parse_owner(owner),
                jobs=0,
                dry_run=dry_run,
                overwrite=overwrite,
                maps=parse_map(map_),
                default_project=default_project,
            )
        opts = CopyOptions(
            source=source,
            source_registry=src_config,
            selection=Selection(
                include=tuple(include or ()),
                exclude=tuple(exclude or ()),
                platforms=parse_platforms(platform),
            ),
            skip_broken=skip_broken,
            repos_from=repos_from,
            retries=retries,
            jobs=jobs,
            push=push_opts,
            restore=restore_opts,
        )
        with render.progress(not quiet and not as_json) as on_progress:
            return run_copy(opts, on_progress=on_progress)

    def show(r: "PushResult | RestoreResult") -> None:
        from ferry.importer.push import PushResult as Pushed

        if isinstance(r, Pushed):
            _show_push(r, overwrite)
        else:
            _show_restore(r, overwrite)

    result = _execute(go, as_json=as_json, quiet=quiet, show=show)
    from ferry.importer.push import PushResult as Pushed

    if (isinstance(result, Pushed) and result.failed) or (
        not isinstance(result, Pushed) and result.tags_kept
    ):
        raise typer.Exit(1)


@app.command()
def receipt(
    bundle: BundleArg,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The receipt file to write.", show_default=False),
    ],
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a bundle's receipt: its index alone, a few KB to MB, which `ferry export --since` takes in
    place of the bundle, so the bundle itself need not be kept on the export side."""

    def go() -> "ReceiptResult":
        if output.is_dir():
            raise UsageError(f"-o {output}: is a directory; name the receipt file")
        _named_bundle(bundle)
        from ferry.shared.bundle.receipt import extract

        return extract(bundle, output)

    def show(r: "ReceiptResult") -> None:
        render.err.print(
            f"[green]receipt[/] of bundle {r.bundle_id} (created {r.created}): {r.tags} tags, "
            f"{r.manifests} manifests, {r.blobs} blobs in {render.human(r.bytes)} → {render.safe(r.output)}",
            soft_wrap=True,
        )

    _execute(go, as_json=as_json, quiet=quiet, show=show)


@app.command()
def diff(
    bundle: BundleArg,
    registry: Annotated[
        Optional[str], typer.Option("--registry", help="Compare with this registry (as push would fill it).")
    ] = None,
    root: Annotated[
        Optional[Path],
        typer.Option("--root", help="Compare with this storage root (as restore would fill it)."),
    ] = None,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="With --root: check every blob's data by sha256 (else presence and size). With --registry: "
            "also HEAD every blob in every repository that needs it (else a manifest the registry holds "
            "vouches for its blobs: it took the manifest only with them).",
        ),
    ] = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    authfile: AuthfileOpt = None,
    ca_cert: CaCertOpt = None,
    insecure: InsecureOpt = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Requests in flight at once.")] = 16,
    retries: RetriesOpt = 5,
    harbor: HarborOpt = None,
    default_project: Annotated[
        str, typer.Option("--default-project", help="Harbor project for one-level names, as push uses.")
    ] = "library",
    map_: MapOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Compare a bundle with a live registry or a storage tree: every tag ok, missing or different.

    HEAD requests only (no blob is downloaded); on a storage tree, its link files and blob data. Exits 0
    when the target holds everything the bundle holds, 1 otherwise: the check after an import.
    """

    def go() -> "DiffResult":
        from ferry.importer.diff import DiffOptions
        from ferry.importer.diff import run as run_diff
        from ferry.shared.registry.credentials import Resolved

        url, found = None, Resolved(None, ())
        if registry is not None:
            url, found = _registry_access(
                registry, username, password_stdin, ca_cert, insecure, authfile, bundle_on_stdin=False
            )
        return run_diff(
            DiffOptions(
                bundle=bundle,
                registry=url,
                root=root,
                credentials=found.credentials,
                credentials_tried=found.tried,
                ca_cert=str(ca_cert) if ca_cert else None,
                insecure=insecure,
                retries=retries,
                jobs=jobs,
                harbor=harbor,
                default_project=default_project,
                maps=parse_map(map_),
                deep=deep,
            )
        )

    def show(r: "DiffResult") -> None:
        for e in r.entries:
            if e.status != "ok":
                detail = f" (target {e.target}, bundle {e.bundle})" if e.status == "different" else ""
                render.out.print(f"[red]{e.status}[/] {render.safe(e.ref)}{detail}", soft_wrap=True)
        for repo, digest, problem in r.blobs:
            render.out.print(
                f"[red]blob[/] {render.safe(repo)} {digest}: {render.safe(problem)}", soft_wrap=True
            )
        t = r.counts("tag")
        render.out.print(
            f"[{'green' if r.ok else 'red'}]{'ok' if r.ok else 'differs'}[/] {render.safe(r.target)}: "
            f"tags {t['okCount']} ok, {t['missingCount']} missing, {t['differentCount']} different; "
            f"{sum(r.counts('untagged').values())} untagged and {sum(r.counts('child').values())} index children "
            f"checked; {r.checked_blobs} blobs checked, {len(r.blobs)} with a problem"
            + (f"; {len(r.skipped)} schema 1 tags not compared (push skips them)" if r.skipped else "")
            + f" in {r.seconds:.1f}s",
            soft_wrap=True,
        )

    result = _execute(go, as_json=as_json, quiet=quiet, show=show)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def kit(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The folder to write the kit to.", show_default=False)
    ],
    python: Annotated[
        Optional[list[str]],
        typer.Option(
            "--python",
            help="CPython version the far side runs (repeatable; default: 3.9 to 3.13).",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        Optional[list[str]],
        typer.Option("--arch", help="x86_64 or aarch64 (repeatable; default: both).", show_default=False),
    ] = None,
    wheel: Annotated[
        Optional[Path],
        typer.Option(
            "--wheel",
            help="ferry's own wheel (default: built from this checkout, or repacked from the installed "
            "ferry).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing kit folder.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write an offline install kit (ferry's wheel, every dependency, install.sh) on a machine that reaches PyPI.

    The kit holds wheels for CPython 3.9 to 3.13 on Linux x86_64 and aarch64.

    On the air-gapped host: sh install.sh (a venv with the host's python3, or pipx; no network). Carry it
    inside a bundle with export --with-kit DIR.
    """

    def go() -> "KitResult":
        from ferry.bundler.kit import ARCHES, PYTHONS, KitOptions
        from ferry.bundler.kit import run as run_kit

        opts = KitOptions(
            output=output,
            pythons=tuple(python or PYTHONS),
            arches=tuple(arch or ARCHES),
            wheel=wheel,
            force=force,
            extra=(("ferry.1", _man_page().encode()),),
        )
        with render.status(not quiet and not as_json, "fetching wheels"):
            return run_kit(opts)

    def show(r: "KitResult") -> None:
        render.err.print(
            f"[green]kit[/] {render.safe(str(r.path))}: {len(r.files)} files, {render.human(r.bytes)} for "
            f"CPython {', '.join(r.pythons)} on {', '.join(r.arches)} in {r.seconds:.1f}s; on the far side: "
            f"sh {render.safe(str(r.path))}/install.sh",
            soft_wrap=True,
        )

    _execute(go, as_json=as_json, quiet=quiet, show=show)


def _man_page() -> str:
    """ferry(1) from the command tree --help shows, with the environment variables (kit and make man)."""
    from . import manpage

    return manpage.render(typer.main.get_command(app), ENVIRONMENT)


@app.command(hidden=True)
def manpage(
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write here (default: stdout).")
    ] = None,
) -> None:
    """Print ferry(1), rendered from the same help as --help (make man)."""
    page = _man_page()
    if output is None:
        sys.stdout.write(page)
    else:
        output.write_text(page, encoding="utf-8")


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temp directory with the sample, bundle and restore.")
    ] = False,
) -> None:
    """Run the whole pipeline on an embedded sample registry (nothing outside a temp dir is touched)."""

    def go() -> None:
        from .demo import run as run_demo

        run_demo(keep)

    _execute(go, as_json=False, quiet=True, show=lambda _: None)


def main() -> None:
    # ferry builds large, acyclic data (an index of 5000 tags is some 10^5 objects): at the default
    # threshold the cyclic collector ran about every 700 allocations and rescanned all of it, which was
    # a third of the time to decode such an index (0.22 s against 0.11 to 0.17 s without).  Reference
    # counting frees all of it; the collector is only there for the rare cycle.
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)
    # `kill` and service managers stop a run with SIGTERM: clean up as for Ctrl-C, say so, exit 143
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.argv[1:] = global_options_first(sys.argv[1:])
    _wrap_help_at_spaces()
    if "--json" not in sys.argv[1:]:
        app()
        return
    # under --json a mistake on the command line is a JSON document too, rendered as every other error
    try:
        code = app(standalone_mode=False)
    except _click("exceptions").UsageError as e:
        error = UsageError(e.format_message(), hint="See --help.")
        render.render_error(error, as_json=True)
        sys.exit(error.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def _click(module: str) -> Any:
    """A module of the click typer runs on: typer's vendored click from typer 0.26 on, click itself before
    (what Python 3.9 installs)."""
    import importlib

    try:
        return importlib.import_module(f"typer._click.{module}")
    except ImportError:
        return importlib.import_module(f"click.{module}")


def _wrap_help_at_spaces() -> None:
    """Help wraps at spaces only: click also breaks after hyphens, which cuts ``--password-stdin`` in two
    at 80 columns."""
    tw = _click("_textwrap").TextWrapper
    tw.wordsep_re = tw.wordsep_simple_re


_GLOBAL_FLAGS = re.compile(r"^(-v+|--verbose|--debug)$")


def global_options_first(args: list[str]) -> list[str]:
    """``ferry push b.tar -vv`` as ``ferry -vv push b.tar``: operators add -v where they notice they need it,
    at the end of the line.  No option takes a value that looks like these (up to ``--``, which ends them)."""
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if _GLOBAL_FLAGS.match(a)]
    rest = [a for a in args[:end] if not _GLOBAL_FLAGS.match(a)]
    return flags + rest + args[end:]


if __name__ == "__main__":
    main()
