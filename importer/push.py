"""``ferry push``: replay a bundle through the Registry V2 API into Harbor 2.x (or any registry).

Before the first upload: the bundle is opened (a file is checked completely), names are mapped to what the
target accepts (Harbor: every repository needs a project; ``--map old=new`` rewrites prefixes, a one-level
name goes to ``--default-project``), invalid names are reported all at once, and missing Harbor projects are
created.  Then the copy algorithm runs against :class:`~ferry.importer.registry.sink.RegistrySink` and the result
is reported per image: pushed, skipped (with why), or failed (with why).
"""

from __future__ import annotations

import json
import logging
import resource
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from ferry.shared.bundle.source import open_source
from ferry.shared.delta import base_missing
from ferry.shared.errors import RegistryError
from ferry.shared.manifest import SCHEMA1_TYPES
from ferry.shared.model import Catalog
from ferry.shared.progress import ProgressCallback, no_progress
from ferry.shared.registry.client import (
    MANIFEST_ACCEPT,
    ClientConfig,
    Credentials,
    RegistryClient,
    connect,
    detect_harbor,
    with_retries,
)
from ferry.shared.store import ImageSource
from ferry.shared.transfer import copy

from .names import map_names
from .registry.sink import RegistrySink

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushOptions:
    bundle: str  # path or "-"
    registry: str  # URL
    credentials: Credentials | None = None
    #: where credentials were looked for (named when the registry answers 401)
    credentials_tried: tuple[str, ...] = ()
    ca_cert: str | None = None
    insecure: bool = False
    jobs: int = 8
    chunk_size: int = 64 << 20
    retries: int = 5
    #: first retry delay in seconds, doubled each attempt (Retry-After wins when the server gives one)
    backoff: float = 0.5
    harbor: bool | None = None  # None: detect
    default_project: str = "library"
    maps: tuple[tuple[str, str], ...] = ()
    create_projects: bool = True
    dry_run: bool = False
    #: push schema 1 manifests converted to schema 2 (new digests) instead of skipping them
    convert_schema1: bool = False
    #: move tags the target has at another digest (else they are kept and reported, and the run fails)
    overwrite: bool = False


@dataclass(frozen=True)
class ImageOutcome:
    ref: str  # the target reference (mapped name)
    source: str  # the bundle's reference
    digest: str
    status: str  # pushed | skipped | failed
    reason: str = ""
    #: set when the target got another manifest than the bundle's (schema 1 converted to schema 2)
    pushed_digest: str | None = None


@dataclass(frozen=True)
class PushResult:
    registry: str
    harbor: str | None
    dry_run: bool
    projects_created: tuple[str, ...]
    images: tuple[ImageOutcome, ...]
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    #: manifests and tags the target already served at the bundle's digest (not PUT again)
    manifests_present: int = 0
    bytes_uploaded: int = 0
    plan: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    #: tags the target had at another digest: (repository:tag, target's digest, bundle's digest)
    tags_kept: tuple[tuple[str, str, str], ...] = ()
    tags_moved: tuple[tuple[str, str, str], ...] = ()
    #: project -> what the registry said when it refused the account (once per project)
    refused: dict[str, str] = field(default_factory=dict)
    account: str | None = None

    @property
    def failed(self) -> list[ImageOutcome]:
        return [i for i in self.images if i.status in ("failed", "conflict")]

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": not self.failed,
            "registry": self.registry,
            "harborVersion": self.harbor,
            "dryRun": self.dry_run,
            "projectsCreated": list(self.projects_created),
            "images": [
                {
                    "ref": i.ref,
                    "bundleRef": i.source,
                    "digest": i.digest,
                    "status": i.status,
                    "reason": i.reason,
                    "pushedDigest": i.pushed_digest or i.digest,
                }
                for i in self.images
            ],
            "pushedCount": sum(i.status == "pushed" for i in self.images),
            "skippedCount": sum(i.status == "skipped" for i in self.images),
            "failedCount": sum(i.status == "failed" for i in self.images),
            "conflictCount": sum(i.status == "conflict" for i in self.images),
            "tagsKept": [{"ref": r, "target": t, "bundle": b} for r, t, b in self.tags_kept],
            "tagsMoved": [{"ref": r, "target": t, "bundle": b} for r, t, b in self.tags_moved],
            "refusedProjects": [
                {"project": p, "account": self.account, "message": m} for p, m in sorted(self.refused.items())
            ],
            "blobsUploaded": self.blobs_uploaded,
            "blobsMounted": self.blobs_mounted,
            "blobsPresent": self.blobs_present,
            "manifestsPresent": self.manifests_present,
            "bytesUploaded": self.bytes_uploaded,
            "plan": self.plan,
            "seconds": round(self.seconds, 3),
            "cpuSeconds": round(self.cpu_seconds, 3),
        }


def open_target(
    client: RegistryClient,
    repositories: list[str],
    *,
    retries: int,
    backoff: float,
    harbor: bool | None,
    default_project: str,
    maps: tuple[tuple[str, str], ...],
) -> tuple[str | None, dict[str, str]]:
    """The first contact with a target registry, the same for push and diff: one authenticated call that
    proves the URL, TLS, credentials and that the target speaks the V2 API (retried as ``retries`` says);
    then Harbor is detected (``harbor`` None) or taken as told, and the bundle's repositories get their
    target names.  Returns (Harbor's version or None, bundle name -> target name)."""
    connect(client, retries=retries, backoff=backoff)
    version = detect_harbor(client) if harbor is None else ("forced" if harbor else None)
    names = map_names(repositories, harbor=version is not None, default_project=default_project, maps=maps)
    return version, names


def ensure_projects(
    client: RegistryClient, projects: list[str], creds: Credentials | None, *, create: bool
) -> tuple[list[str], list[str]]:
    """(created, missing-but-not-created). Harbor's API takes basic auth; no cookies are kept."""
    headers = {"Authorization": creds.basic_header()} if creds is not None else {}
    created, missing = [], []
    for p in projects:
        r = with_retries(
            lambda p=p: client.request(  # type: ignore[misc]
                "HEAD",
                client.url("/api/v2.0/projects"),
                params={"project_name": p},
                expect=(200, 404),
                what=f"check Harbor project {p}",
                headers=headers,
            ),
            attempts=3,
            what="project check",
        )
        if r.status_code == 200:
            continue
        if not create:
            missing.append(p)
            continue
        try:
            client.request(
                "POST",
                client.url("/api/v2.0/projects"),
                expect=(201, 409),
                what=f"create Harbor project {p}",
                headers={**headers, "Content-Type": "application/json"},
                content=json.dumps(
                    {"project_name": p, "metadata": {"public": "false"}, "storage_limit": -1}
                ).encode(),
            )
        except RegistryError as e:
            if e.status in (401, 403):
                raise RegistryError(
                    f"the account may not create Harbor project {p!r} ({e.status})",
                    status=e.status,
                    hint="Create the projects in Harbor first, or push with a system administrator or a system-level robot account.",
                ) from None
            raise
        created.append(p)
    return created, missing


def outcomes(catalog: Catalog, names: dict[str, str], sink: RegistrySink | None) -> list[ImageOutcome]:
    result = []
    for image in catalog.images():
        target = names[image.repository]
        ref = f"{target}:{image.tag}" if image.tag is not None else f"{target}@{image.digest}"
        if sink is None:
            result.append(ImageOutcome(ref, image.ref, image.digest, "planned"))
            continue
        s = sink.stats
        reason = ""
        status = "pushed"
        for d in catalog.closure(image.digest):
            key = (target, d)
            if key in s.skipped:
                status, reason = "skipped", s.skipped[key]
                break
            if key in s.failed:
                status, reason = "failed", s.failed[key]
                break
        if status == "pushed" and image.tag is not None and (target, image.tag) in s.failed_tags:
            status, reason = "failed", s.failed_tags[(target, image.tag)]
        kept = s.tags_kept.get((target, image.tag)) if image.tag is not None else None
        if status == "pushed" and kept is not None:
            status = "conflict"
            reason = (
                f"the tag exists on the target at {kept[0]}; the bundle has {kept[1]}: not moved "
                "(the image itself was pushed; --overwrite moves the tag)"
            )
        new = s.converted.get((target, image.digest))
        if new is not None and status == "pushed":
            reason = f"schema 1 converted to schema 2: {image.digest} → {new}"
        result.append(ImageOutcome(ref, image.ref, image.digest, status, reason, new))
    return result


def run(
    opts: PushOptions,
    *,
    stdin: BinaryIO | None = None,
    on_progress: ProgressCallback = no_progress,
    source: ImageSource | None = None,
) -> PushResult:
    """``source``: any image source instead of the bundle ``opts.bundle`` names (``ferry copy``)."""
    started = time.monotonic()
    cpu0 = _cpu()
    client = RegistryClient(
        ClientConfig(
            url=opts.registry,
            credentials=opts.credentials,
            credentials_tried=opts.credentials_tried,
            ca_cert=opts.ca_cert,
            insecure=opts.insecure,
            connections=max(4, opts.jobs * 2),
        )
    )
    opened = open_source(opts.bundle, stdin) if source is None else None
    source = source if source is not None else opened
    assert source is not None
    try:
        catalog = source.catalog
        harbor, names = open_target(
            client,
            [r.name for r in catalog.repositories],
            retries=opts.retries,
            backoff=opts.backoff,
            harbor=opts.harbor,
            default_project=opts.default_project,
            maps=opts.maps,
        )
        sink = RegistrySink(
            client,
            names=names,
            jobs=opts.jobs,
            chunk_size=opts.chunk_size,
            retries=opts.retries,
            backoff=opts.backoff,
            convert_schema1=opts.convert_schema1,
            overwrite=opts.overwrite,
            on_progress=on_progress,
        )
        if catalog.carried:
            # a delta: what its bases carried must be on the target, asked before a project is created
            # (a dry run says so too: the push would fail)
            lacking = sink.check_carried(catalog)
            if lacking:
                raise base_missing(catalog, lacking, target=sink.description)
        created: list[str] = []
        missing: list[str] = []
        if harbor is not None:
            # only projects something will be pushed into: a repository of schema 1 images that are
            # skipped must not leave an empty project behind
            projects = sorted(
                {names[r].split("/", 1)[0] for r in pushed_repositories(catalog, opts.convert_schema1)}
            )
            created, missing = ensure_projects(
                client, projects, opts.credentials, create=opts.create_projects and not opts.dry_run
            )
            if opts.dry_run:
                created = missing
        if opts.dry_run:
            return PushResult(
                opts.registry,
                harbor,
                True,
                tuple(created),
                tuple(outcomes(catalog, names, None)),
                plan=_plan(client, catalog, names, set(missing), opts.retries),
                seconds=time.monotonic() - started,
                cpu_seconds=_cpu() - cpu0,
                account=opts.credentials.username if opts.credentials else None,
            )
        copy(source, sink, on_progress=no_progress)
    finally:
        if opened is not None:
            opened.close()
        client.close()
    s = sink.stats
    return PushResult(
        opts.registry,
        harbor,
        False,
        tuple(created),
        tuple(outcomes(catalog, names, sink)),
        blobs_uploaded=s.blobs_uploaded,
        blobs_mounted=s.blobs_mounted,
        blobs_present=s.blobs_present,
        manifests_present=s.manifests_present,
        bytes_uploaded=s.bytes_uploaded,
        seconds=time.monotonic() - started,
        cpu_seconds=_cpu() - cpu0,
        tags_kept=tuple((f"{r}:{t}", a, b) for (r, t), (a, b) in sorted(s.tags_kept.items())),
        tags_moved=tuple((f"{r}:{t}", a, b) for (r, t), (a, b) in sorted(s.tags_moved.items())),
        refused=dict(s.refused),
        account=opts.credentials.username if opts.credentials else None,
    )


def pushed_repositories(catalog: Catalog, convert_schema1: bool) -> list[str]:
    """Repositories with at least one image a push sends (schema 1 ones are skipped unless converted)."""
    return [
        r.name
        for r in catalog.repositories
        if any(
            convert_schema1 or catalog.manifests[d].media_type not in SCHEMA1_TYPES
            for d in (*r.tags.values(), *r.untagged)
        )
    ]


def _plan(
    client: RegistryClient, catalog: Catalog, names: dict[str, str], new_projects: set[str], retries: int
) -> dict[str, object]:
    """What a push would send, against the live target: each unique blob checked once, in the first
    repository that needs it; each tag: to create, to move, or already right.  A project that does not
    exist yet holds nothing, and is not asked about (Harbor grants no access to a missing project)."""

    def empty(target: str) -> bool:
        return target.split("/", 1)[0] in new_projects

    def head(path: str, what: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return client.head(path, what=what, attempts=retries, headers=headers)

    first: dict[str, str] = {}
    for repo in catalog.repositories:
        for b in catalog.repository_blobs(repo):
            first.setdefault(b, names[repo.name])
    upload = present = nbytes = 0
    for d, target in first.items():
        if d in catalog.carried:
            present += 1  # checked against the target already
        elif not empty(target) and head(f"/v2/{target}/blobs/{d}", "check blob").status_code == 200:
            present += 1
        else:
            upload += 1
            nbytes += catalog.blobs[d].size
    create: list[str] = []
    move: list[dict[str, str]] = []
    right: list[str] = []
    for repo in catalog.repositories:
        target = names[repo.name]
        for tag, d in sorted(repo.tags.items()):
            ref = f"{target}:{tag}"
            r = None if empty(target) else head(f"/v2/{target}/manifests/{tag}", "check tag", MANIFEST_ACCEPT)
            current = (
                r.headers.get("Docker-Content-Digest") if r is not None and r.status_code == 200 else None
            )
            if current is None:
                create.append(ref)
            elif current == d:
                right.append(ref)
            else:
                move.append({"ref": ref, "target": current, "bundle": d})
    return {
        "blobsToUpload": upload,
        "bytesToUpload": nbytes,
        "blobsPresent": present,
        "manifests": sum(len(r.manifests) for r in catalog.repositories),
        "projectsToCreate": sorted(new_projects),
        "tagsToCreate": create,
        "tagsToMove": move,
        "tagsRight": right,
    }


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


__all__ = ["ImageOutcome", "PushOptions", "PushResult", "map_names", "open_target", "run"]
