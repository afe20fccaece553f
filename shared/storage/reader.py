"""Reading a Docker Distribution storage tree: find every image, follow it completely, check every byte.

The walk follows what the registry itself does to serve an image, never what a script would guess:

* a repository is a directory holding ``_manifests``, at any depth, possibly inside another repository;
* a tag's target is ``_manifests/tags/<tag>/current/link`` (``index/`` is history); any tag name works,
  ``current``, ``index`` and ``link`` included, because tags are only ever entries of ``tags/``;
* a manifest is served only if the repository has its revision link and the blob data exists; an index's
  children must be revisions of the same repository;
* ``--untagged`` adds revisions no tag reaches; a revision folder without ``link`` was deleted;
* ``_uploads`` and blobs no manifest references are never read.

:func:`scan` returns the :class:`~ferry.shared.model.Catalog` plus where each digest's bytes are.  It reads and
checks every manifest before anything is written.  Blobs it hashes before returning, or, with
``defer_hashing``, while the walk and then the copy go on (see :class:`_Hasher`); a broken source stops
the export with the complete list of what is wrong either way.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, cast

from ..digest import SLOTS, Digest, digest_of, xxh3_of
from ..errors import BrokenImage, BrokenImages, SourceUnreadable, UsageError
from ..hashing import HashJob, HashPool, HashProcess, RangeHashes
from ..manifest import ManifestError, ManifestInfo, parse_manifest
from ..model import Blob, Catalog, Manifest, Repository, Skipped
from ..prefetch import FetchAhead
from ..progress import Progress, ProgressCallback, no_progress
from ..store import BlobContent
from .fs import Extent, TreeFS
from .paths import (
    BlobData,
    ManifestRevisionLink,
    ManifestRevisionsDir,
    PathSpec,
    RepositoriesRoot,
    StorageLayout,
    TagCurrentLink,
    TagsDir,
    link_target,
    repository_problem,
    tag_problem,
)

log = logging.getLogger(__name__)

LINK_MAX = 200
#: blobs from this size on are hashed on threads just ahead of the copy; smaller ones in the background
#: process during the walk (see :class:`_Hasher`)
DEFER_MIN = 1 << 20
#: larger than any registry accepts (distribution: 4 MiB by default), small enough to never exhaust memory
MANIFEST_MAX = 32 << 20
#: content up to this size, read once to be hashed, is kept for the writer (configs, small layers,
#: manifests: two thirds of a registry's files), up to KEEP_BUDGET bytes in all
KEEP_MAX = 64 << 10
KEEP_BUDGET = 64 << 20
#: a tree that is not local (S3): blobs up to REMOTE_SMALL fetched ahead of the writer, REMOTE_AHEAD in all
REMOTE_SMALL = 4 << 20
REMOTE_AHEAD = 64 << 20


class RemoteFS(Protocol):
    """What a tree whose files are not local adds to :class:`TreeFS`: its content, by extent path."""

    local: bool

    def fetch(self, uri: str) -> bytes: ...

    def open(self, uri: str) -> BinaryIO: ...


@dataclass(frozen=True)
class Selection:
    """Which images to take.  Patterns are shell globs; one with ``:`` matches ``repository:tag``,
    one without matches the repository name.  ``*`` crosses ``/``."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    untagged: bool = False
    #: ``os/arch`` or ``os/arch/variant``: of an index, only the children for these platforms (and those
    #: that name none) are exported; the index keeps its bytes and records the others as left out
    platforms: tuple[str, ...] = ()

    def keeps(self, platform: str | None) -> bool:
        """Whether an index child for ``platform`` is exported."""
        if not self.platforms or platform is None:
            return True
        return any(platform == p or platform.startswith(p + "/") for p in self.platforms)

    @staticmethod
    def _hit(p: str, repo: str, tag: str | None) -> bool:
        if ":" in p:
            return tag is not None and fnmatch.fnmatchcase(f"{repo}:{tag}", p)
        return fnmatch.fnmatchcase(repo, p)

    def matching(self, repo: str, tags: Iterable[str]) -> set[str]:
        """The patterns (include and exclude) that match the repository or one of its tags: a pattern
        that matches nothing in the whole source is a mistake (a typo, the wrong registry) that would
        otherwise export nothing or all."""
        if not (self.include or self.exclude):
            return set()
        return {p for p in (*self.include, *self.exclude) for t in (None, *tags) if self._hit(p, repo, t)}

    def unmatched(self, matched: set[str]) -> None:
        """Refuse the patterns no image of the source matched (``matched``: every pattern that did)."""
        missing = [
            (o, p)
            for o, ps in (("--include", self.include), ("--exclude", self.exclude))
            for p in ps
            if p not in matched
        ]
        if missing:
            raise UsageError(
                "; ".join(f"{o} {p!r} matches no image in the source" for o, p in missing),
                hint="Patterns are globs on 'repository' or 'repository:tag' ('*' crosses '/'), e.g. "
                "'team/*' or 'library/alpine:3.*'.",
            )

    def wants(self, repo: str, tag: str | None) -> bool:
        def hit(p: str) -> bool:
            return self._hit(p, repo, tag)

        if self.include and not any(hit(p) for p in self.include):
            return False
        return not any(hit(p) for p in self.exclude)


@dataclass(frozen=True)
class ScanOptions:
    selection: Selection = field(default_factory=Selection)
    skip_broken: bool = False
    jobs: int = 0  # 0: one per core
    #: hash blobs in a background process while the walk goes on, and let :class:`TreeSource` wait for
    #: the results at the end of the copy, raising there if a blob is wrong (when the walk itself found
    #: something wrong, the scan waits for them, so that every broken image is named before any output)
    defer_hashing: bool = False
    #: blobs whose bytes need not be read: an earlier bundle carried them (a delta export), or an
    #: interrupted export wrote them (``--resume``: checked there, and hashed while copied if not kept)
    known: frozenset[str] = frozenset()
    #: manifests (and their blobs) earlier bundles described (a delta export): an image whose manifest is
    #: among them is taken as described there, without reading it again (content-addressed: the same
    #: digest is the same manifest, needing the same blobs); only its revision links are checked
    described: Catalog | None = None


@dataclass(frozen=True)
class ScanResult:
    catalog: Catalog
    #: digest -> where its bytes are (every bundled blob and manifest)
    extents: Mapping[str, Extent]
    #: digest -> xxh3-128 of its bytes, computed while verifying (manifests only, while hashing is deferred)
    xxh3: Mapping[str, str]
    broken: tuple[BrokenImage, ...]
    #: the blob hashing still to do, when deferred
    pending: _Hasher | None = None
    #: digest -> bytes of small manifests and blobs already read while verifying them
    data: Mapping[str, bytes] = field(default_factory=dict)
    #: the tree, when its files are not local (S3): content is fetched or streamed from it
    remote: RemoteFS | None = None
    #: manifests no tag reaches, left out because --untagged was not given (repositories taken whole)
    untagged_left: int = 0


@dataclass(**SLOTS)
class _Loaded:
    info: ManifestInfo | None
    problem: str | None
    extent: Extent | None
    xxh3: str | None
    raw: bytes | None = None  # kept when small (KEEP_MAX) and the budget allows


class _Budget:
    """Bytes of content kept in memory for the writer, which then needs no second read: manifests up to
    :data:`KEEP_BUDGET`, small blobs in what the manifests leave of it (measured: sharing one budget
    evenly cost a 100k-tag export 30 % more time, re-reading small files cold).  The walk and the hasher
    share it, and the hasher holds this rather than the tree, which dies with the walk."""

    __slots__ = ("blobs", "manifests")

    def __init__(self) -> None:
        self.manifests = self.blobs = 0

    def take_manifest(self, size: int) -> bool:
        if size > KEEP_MAX or self.manifests + size > KEEP_BUDGET:
            return False
        self.manifests += size
        return True

    def take_blob(self, size: int) -> bool:
        if size > KEEP_MAX or self.manifests + self.blobs + size > KEEP_BUDGET:
            return False
        self.blobs += size
        return True


@dataclass(frozen=True)
class _BadLink:
    """A link file that names no digest (as the registry reads it)."""

    reason: str


class _Tree:
    def __init__(self, fs: TreeFS) -> None:
        self.fs = fs
        self.layout = StorageLayout()
        self._manifests: dict[str, _Loaded] = {}
        self._blob_extents: dict[str, Extent | None] = {}
        self.budget = _Budget()
        #: what could not be read where no image is known yet (a tag's link, a folder): broken, like an
        #: image whose manifest cannot be read
        self.unreadable: list[BrokenImage] = []
        #: what earlier bundles described (ScanOptions.described)
        self.described: Catalog | None = None
        self.selection = Selection()
        #: include/exclude patterns some image of the source matched
        self.matched: set[str] = set()
        #: manifests of fully selected repositories that no tag reaches, left out without --untagged
        self.untagged_left = 0

    def p(self, spec: PathSpec) -> str:
        return self.layout.path(spec)

    def repositories(self, skipped: list[Skipped]) -> Iterator[str]:
        """Every repository (a folder holding ``_manifests``, at any depth), in name order; a folder whose
        name a registry cannot serve, or that cannot be read, is added to ``skipped`` with why.

        Iterative, not recursive: a hostile or broken tree may nest folders thousands deep."""
        stack = [(self.p(RepositoriesRoot()), "")]
        while stack:
            rel, name = stack.pop()
            try:
                dirs = sorted((n for n, is_dir in self.fs.list_dir(rel) if is_dir), reverse=True)
            except SourceUnreadable as e:
                # what is in there cannot be known: as broken as an image whose manifest cannot be read
                self.unreadable.append(BrokenImage(name or "(repositories)", None, "", e.reason))
                continue
            if "_manifests" in dirs and name:
                problem = repository_problem(name)
                if problem is None:
                    yield name
                else:
                    log.warning("skipping %r: %s", name, problem)
                    skipped.append(Skipped(name, None, None, problem))
            # reversed onto the stack: popped in name order, a repository before the ones inside it
            stack.extend((f"{rel}/{d}", f"{name}/{d}" if name else d) for d in dirs if not d.startswith("_"))

    def _link(self, path: str) -> str | _BadLink | None:
        """The digest the link at ``path`` names, what is wrong with it, or None when it is missing."""
        raw = self.fs.read(path, LINK_MAX)
        if raw is None:
            return None
        target = link_target(raw)
        return target if target is not None else _BadLink(f"invalid link {raw[:80]!r}")

    def tags(self, repo: str) -> tuple[dict[str, str], list[Skipped]]:
        tags: dict[str, str] = {}
        bad: list[Skipped] = []
        for tag, is_dir in sorted(self.fs.list_dir(self.p(TagsDir(repo)))):
            if not is_dir:
                continue
            problem = tag_problem(tag)
            if problem is not None:
                # the same rule every bundle reader applies: a tag it would refuse never reaches the index
                log.warning("skipping %s:%r: %s", repo, tag, problem)
                bad.append(Skipped(repo, tag, None, problem))
                continue
            try:
                link = self._link(self.p(TagCurrentLink(repo, tag)))
            except SourceUnreadable as e:
                self.unreadable.append(BrokenImage(repo, tag, "", f"tag link {e.reason}"))
                continue
            if isinstance(link, str):
                tags[tag] = link
            else:
                reason = (
                    link.reason
                    if link is not None
                    else "tag has no current/link (the registry cannot serve it)"
                )
                bad.append(Skipped(repo, tag, None, reason))
        return tags, bad

    def revision_names(self, repo: str) -> set[str]:
        """The digests the revision folders are named by, without reading their links (a count for a note)."""
        base = self.p(ManifestRevisionsDir(repo))
        return {
            f"{alg}:{hexd}"
            for alg, is_dir in self.fs.list_dir(base)
            if is_dir
            for hexd, is_dir2 in self.fs.list_dir(f"{base}/{alg}")
            if is_dir2
        }

    def revisions(self, repo: str) -> set[str]:
        out: set[str] = set()
        base = self.p(ManifestRevisionsDir(repo))
        for alg, is_dir in self.fs.list_dir(base):
            if not is_dir:
                continue
            for hexd, is_dir2 in self.fs.list_dir(f"{base}/{alg}"):
                try:
                    link = self._link(f"{base}/{alg}/{hexd}/link") if is_dir2 else None
                except SourceUnreadable as e:
                    self.unreadable.append(
                        BrokenImage(repo, None, f"{alg}:{hexd}", f"revision link {e.reason}")
                    )
                    continue
                # a revision folder whose link is gone was deleted through the API
                if link == f"{alg}:{hexd}":
                    out.add(link)
        return out

    def blob_extent(self, digest: str) -> Extent | None:
        if digest not in self._blob_extents:
            try:
                ext = self.fs.extent(self.p(BlobData(Digest.parse(digest))))
            except SourceUnreadable:
                ext = None  # reported as missing: the registry cannot serve it either
            self._blob_extents[digest] = ext
        return self._blob_extents[digest]

    def has_revision(self, repo: str, digest: str) -> bool:
        """Whether ``repo`` links the manifest ``digest`` (its revision link names that digest); an
        unreadable link is not one the registry could follow either."""
        try:
            link = self._link(self.p(ManifestRevisionLink(repo, Digest.parse(digest))))
        except SourceUnreadable:
            return False
        return link == digest

    def manifest(self, digest: str) -> _Loaded:
        got = self._manifests.get(digest)
        if got is not None:
            return got
        try:
            found = self.fs.read_extent(self.p(BlobData(Digest.parse(digest))), MANIFEST_MAX + 1)
        except SourceUnreadable as e:
            got = self._manifests[digest] = _Loaded(None, f"manifest data {e.reason}", None, None)
            return got
        if found is None:
            got = _Loaded(None, "manifest data missing", None, None)
        elif len(found[0]) > MANIFEST_MAX:
            got = _Loaded(None, "manifest larger than any registry accepts", found[1], None)
        else:
            raw, ext = found
            if digest_of(raw, digest.split(":", 1)[0]) != digest:
                got = _Loaded(None, "manifest bytes do not match their digest", ext, None)
            else:
                try:
                    got = _Loaded(parse_manifest(raw), None, ext, xxh3_of(raw))
                    if self.budget.take_manifest(len(raw)):
                        got.raw = raw
                except ManifestError as e:
                    got = _Loaded(None, f"manifest unreadable: {e}", ext, None)
        self._manifests[digest] = got
        return got


@dataclass(**SLOTS)
class _Root:
    repo: str
    tag: str | None
    digest: str
    problems: list[tuple[str, str]] = field(default_factory=list)  # (reason, digest)
    closure: list[str] = field(default_factory=list)  # manifests and bundled blobs


def _follow(tree: _Tree, root: _Root, linked: Callable[[str], bool], hasher: _Hasher) -> None:
    """Every manifest and blob the image needs, into ``root.closure`` (a manifest, the closures of its
    children, then its own blobs), and what is wrong with them into ``root.problems``.

    Iterative, with the order a recursive walk would give: an index may nest others thousands deep in a
    hostile tree.  A frame is (digest, False) before the manifest is entered, (digest, True) for its blobs
    once its children are done."""
    seen: set[str] = set()
    described = tree.described
    stack: list[tuple[str, bool]] = [(root.digest, False)]
    while stack:
        d, blobs_now = stack.pop()
        if blobs_now:
            info = tree.manifest(d).info
            assert info is not None
            for b in info.blobs:
                if b.digest in seen:
                    continue
                ext = tree.blob_extent(b.digest)
                if ext is None:
                    if not b.foreign:
                        root.problems.append(("blob missing", b.digest))
                    continue
                seen.add(b.digest)
                hasher.add(b.digest, ext)
                if b.size >= 0 and ext.size != b.size:
                    root.problems.append((f"blob is {ext.size} bytes, manifest says {b.size}", b.digest))
                root.closure.append(b.digest)
            continue
        if d in seen:
            continue
        if described is not None and d in described.manifests:
            for x in described.closure(d):
                if x in seen:
                    continue
                seen.add(x)
                root.closure.append(x)
                if x in described.manifests and not linked(x):
                    root.problems.append(("manifest is not linked in the repository (no revision link)", x))
            continue
        seen.add(d)
        root.closure.append(d)
        if not linked(d):
            root.problems.append(("manifest is not linked in the repository (no revision link)", d))
        info = tree.manifest(d).info
        if info is None:
            root.problems.append((tree.manifest(d).problem or "manifest unreadable", d))
            continue
        stack.append((d, True))
        stack.extend((c.digest, False) for c in reversed(info.children) if tree.selection.keeps(c.platform))


def _reachable(tree: _Tree, digests: list[str]) -> set[str]:
    out: set[str] = set()
    stack = list(digests)
    while stack:
        d = stack.pop()
        if d in out:
            continue
        out.add(d)
        info = tree.manifest(d).info
        if info is not None:
            stack.extend(c.digest for c in info.children)
    return out


class _Hasher:
    """Checks every blob the walk finds (sha256 against its name, xxh3 for the bundle).

    ``background``: a forked child hashes each blob under :data:`DEFER_MIN` as the walk finds it, on the
    other core, and keeps the bytes of small ones for the writer.  Small blobs cost per file (Python work
    that holds the GIL), which is why threads during the walk were measured slower than after it (2.7 s
    against 1.7 s on a 5000-tag tree): a child has its own interpreter.  Large blobs cost per byte, in C
    without the GIL: they are hashed on this process's threads, just ahead of the copy (:meth:`start`),
    so both cores hash a bulk tree (one child alone made a tree of 96 MiB layers 1.3x slower than tar).
    Without ``background``, everything is hashed by :meth:`finish`, on a thread per core.
    """

    def __init__(
        self,
        jobs: int,
        on_progress: ProgressCallback,
        budget: _Budget,
        *,
        background: bool = False,
        known: frozenset[str] = frozenset(),
        blobs: bool = True,
    ) -> None:
        self._jobs_n = jobs
        self._known = known
        #: hash blob files here (by path); False for a tree whose files are not local (S3): whoever
        #: writes their bytes hashes them
        self._blobs = blobs
        #: every digest this hasher checks (the jobs themselves are let go once sent to the child)
        self._jobs: set[str] = set()
        self._later: list[HashJob] = []  # not sent to the child: for the threads
        self._pool: HashPool | None = None
        self._on_progress = on_progress
        # not the tree: a deferred hasher lives on through the copy, and the tree's parsed manifests
        # (1.2 KiB a tag, all in the catalog by then) would live on with it
        self._budget = budget
        self.total = self.done = 0
        self.xxh3: dict[str, str] = {}
        self.bad: dict[str, str] = {}
        #: digest -> the bytes of small blobs, read once for hashing and kept for the writer (they share
        #: the manifests' budget)
        self.data: dict[str, bytes] = {}
        self._process = HashProcess(self._result) if background else None

    def add(self, digest: str, ext: Extent) -> None:
        if digest in self._jobs or digest in self._known or not self._blobs:
            return
        self.total += ext.size
        keep = self._process is not None and self._budget.take_blob(ext.size)
        piece = ((ext.path, ext.offset, ext.size),)
        job = HashJob(digest, piece, ext.size, digest.split(":", 1)[0], keep=keep)
        self._jobs.add(digest)
        if self._process is not None and ext.size < DEFER_MIN:
            self._process.add(job)
        else:
            self._later.append(job)

    def has(self, digest: str) -> bool:
        """Whether this hasher checks ``digest`` (not: a blob the scan was told is ``known``)."""
        return digest in self._jobs

    def _result(self, job: HashJob, h: RangeHashes | OSError) -> None:
        d = job.key
        if isinstance(h, OSError):
            self.bad[d] = f"blob data unreadable ({h.strerror})"
        else:
            if h.size != job.size:
                self.bad[d] = f"blob data is truncated ({h.size} of {job.size} bytes readable)"
            elif h.digest != d:
                self.bad[d] = f"blob bytes hash to {h.digest}"
            assert h.xxh3 is not None  # asked for: the bundle trailer needs it
            self.xxh3[d] = h.xxh3
            if h.data is not None and d not in self.bad:
                self.data[d] = h.data
        self.done += job.size
        if self._process is None:  # in the background, the walk and then the copy report progress
            self._on_progress(Progress("verify source", self.done, self.total, files=len(self.xxh3)))

    def collect(self) -> None:
        """Take in the background results that have arrived (the rest come with :meth:`finish`)."""
        if self._process is not None:
            self._process.collect()

    def start(self, order: list[str] | None = None) -> None:
        """Hash what the child does not on this process's threads; ``order`` (default: largest first, so
        no core ends alone on the biggest layer) lets a copy in that order find each blob just read into
        the page cache."""
        self._pool = HashPool(self._jobs_n, self._result)
        rank = {d: i for i, d in enumerate(order)} if order is not None else {}
        for job in sorted(self._later, key=lambda j: rank.get(j.key, -j.size)):
            self._pool.add(job)
        self._pool.flush()

    def finish(self) -> None:
        """Every blob added is hashed when this returns."""
        if self._pool is None:
            self.start()
        assert self._pool is not None
        self._pool.finish()
        if self._process is not None:
            self._process.finish()

    def abort(self) -> None:
        if self._pool is not None:
            self._pool.abort()
        if self._process is not None:
            self._process.abort()


def _walk_repository(
    tree: _Tree, repo: str, sel: Selection, hasher: _Hasher
) -> tuple[list[_Root], list[Skipped]]:
    tags, bad_tags = tree.tags(repo)
    tree.matched |= sel.matching(repo, tags)
    repo_roots = [_Root(repo, t, d) for t, d in tags.items() if sel.wants(repo, t)]
    skipped = [s for s in bad_tags if sel.wants(repo, s.tag)]
    if sel.untagged and sel.wants(repo, None):
        revisions = tree.revisions(repo)
        linked: Callable[[str], bool] = revisions.__contains__
        # reachability counts every tag, selected or not: an excluded tag is not "untagged"
        tagged = _reachable(tree, list(tags.values()))
        loose = sorted(revisions - tagged)
        children = {c.digest for d in loose if (i := tree.manifest(d).info) for c in i.children}
        repo_roots += [_Root(repo, None, d) for d in loose if d not in children]
    else:
        # without --untagged, read only the revision links the selected images need: registries keep
        # every revision ever pushed, and most of them are no tag's target any more
        checked: dict[str, bool] = {}

        def linked(d: str) -> bool:
            if d not in checked:
                checked[d] = tree.has_revision(repo, d)
            return checked[d]

    for r in repo_roots:
        _follow(tree, r, linked, hasher)
    if not sel.untagged and len(repo_roots) == len(tags):
        # said once at the end: what --untagged would add (one listing of the revisions per repository;
        # the children of an untagged index count as untagged too, as a registry's garbage collection
        # counts them)
        reached = {d for r in repo_roots for d in r.closure}
        tree.untagged_left += len(tree.revision_names(repo) - reached)
    return repo_roots, skipped


def _walk(
    tree: _Tree,
    sel: Selection,
    roots: list[_Root],
    skipped: list[Skipped],
    hasher: _Hasher,
    on_progress: ProgressCallback,
) -> None:
    # one thread: walking repositories on several threads was measured slower, not faster (GIL handoffs
    # around every tiny file-system call)
    for repo in tree.repositories(skipped):
        try:
            repo_roots, repo_skipped = _walk_repository(tree, repo, sel, hasher)
        except SourceUnreadable as e:
            tree.unreadable.append(BrokenImage(repo, None, "", e.reason))
            continue
        roots += repo_roots
        skipped += repo_skipped
        on_progress(Progress("scan", len(roots), 0, unit="images"))
        # the child's answers are taken in as the walk goes: left to the end, every answer and every job it
        # answers stayed in memory (330 MiB at 100k tags); taken now they are an xxh3 string each
        hasher.collect()


def scan(fs: TreeFS, options: ScanOptions, on_progress: ProgressCallback = no_progress) -> ScanResult:
    """Walk the tree, follow the selected images, verify their bytes; raise :class:`BrokenImages` unless
    ``skip_broken``, in which case broken images are left out and listed in ``catalog.skipped``."""
    tree = _Tree(fs)
    tree.described = options.described
    tree.selection = options.selection
    sel = options.selection
    roots: list[_Root] = []
    skipped: list[Skipped] = []
    jobs = options.jobs or os.cpu_count() or 1
    local = getattr(fs, "local", True)
    hasher = _Hasher(
        jobs,
        on_progress,
        tree.budget,
        background=options.defer_hashing and local,
        known=options.known,
        blobs=local,
    )
    try:
        _walk(tree, sel, roots, skipped, hasher, on_progress)
        sel.unmatched(tree.matched)
    except BaseException:
        hasher.abort()
        raise
    defer = options.defer_hashing and not tree.unreadable and not any(r.problems for r in roots)
    if not defer:
        # a broken image is reported with everything else that is wrong: hash before deciding
        hasher.finish()
    blob_xxh3, bad_blobs = hasher.xxh3, hasher.bad

    broken: list[BrokenImage] = [b for b in tree.unreadable if sel.wants(b.repository, b.tag)]
    good: list[_Root] = []
    for r in roots:
        problems = r.problems + [(bad_blobs[d], d) for d in r.closure if d in bad_blobs]
        if problems:
            broken.append(_broken_image(r.repo, r.tag, r.digest, problems))
        else:
            good.append(r)
    if broken and not options.skip_broken:
        raise BrokenImages(tuple(broken))
    skipped += [Skipped(b.repository, b.tag, b.digest or None, b.reason, b.missing) for b in broken]

    # deferred, nothing was collected yet: the kept bytes reach the copy through ``pending``
    result = _build(tree, good, skipped, blob_xxh3, hasher.data, tuple(broken), hasher if defer else None)
    return result if local else dataclasses.replace(result, remote=cast(RemoteFS, fs))


def _build(
    tree: _Tree,
    good: list[_Root],
    skipped: list[Skipped],
    blob_xxh3: dict[str, str],
    blob_data: dict[str, bytes],
    broken: tuple[BrokenImage, ...],
    pending: _Hasher | None,
) -> ScanResult:
    manifests: dict[str, Manifest] = {}
    blobs: dict[str, Blob] = {}
    extents: dict[str, Extent] = {}
    xxh3: dict[str, str] = {}
    data: dict[str, bytes] = {}
    by_repo: dict[str, list[_Root]] = {}
    described = tree.described
    for r in good:
        by_repo.setdefault(r.repo, []).append(r)
        for d in r.closure:
            if d in manifests or d in blobs:
                continue
            loaded = tree._manifests.get(d)
            if loaded is None and described is not None:
                # taken as an earlier bundle described it: never read here, and never bundled
                if d in described.manifests:
                    manifests[d] = described.manifests[d]
                    continue
                if d in described.blobs:
                    blobs[d] = described.blobs[d]
                    continue
            if loaded is not None:
                if d not in manifests:
                    info, ext = loaded.info, loaded.extent
                    assert info is not None and ext is not None and loaded.xxh3 is not None
                    bundled = tuple(b.digest for b in info.blobs if tree.blob_extent(b.digest) is not None)
                    foreign = tuple(b for b in info.blobs if tree.blob_extent(b.digest) is None)
                    manifests[d] = Manifest(
                        d,
                        info.media_type,
                        ext.size,
                        bundled,
                        foreign,
                        info.children,
                        info.subject,
                        info.artifact_type,
                        tuple(c.digest for c in info.children if not tree.selection.keeps(c.platform)),
                    )
                    extents[d], xxh3[d] = ext, loaded.xxh3
                    if loaded.raw is not None:
                        data[d] = loaded.raw
            elif d not in blobs:
                ext = tree.blob_extent(d)
                assert ext is not None
                blobs[d] = Blob(d, ext.size, "")
                extents[d] = ext
                if d in blob_data:
                    data[d] = blob_data[d]
                if pending is None and d in blob_xxh3:  # not hashed: a base carried it
                    xxh3[d] = blob_xxh3[d]
    # media types come from the manifests that reference the blob (storage does not keep them)
    for m in manifests.values():
        if m.digest not in tree._manifests:
            continue  # described by an earlier bundle, media types included
        info = tree._manifests[m.digest].info
        assert info is not None
        for b in info.blobs:
            if b.digest in blobs and not blobs[b.digest].media_type:
                blobs[b.digest] = Blob(b.digest, blobs[b.digest].size, b.media_type)
    repos = []
    for name, rs in by_repo.items():
        tags = {r.tag: r.digest for r in rs if r.tag is not None}
        held = dict.fromkeys(d for r in rs for d in r.closure if d in manifests)
        untagged = tuple(r.digest for r in rs if r.tag is None)
        repos.append(Repository(name, tags, tuple(held), untagged))
    catalog = Catalog(tuple(repos), manifests, blobs, tuple(skipped))
    return ScanResult(catalog, extents, xxh3, broken, pending, data, untagged_left=tree.untagged_left)


class TreeSource:
    """A scanned storage tree as an :class:`~ferry.shared.store.ImageSource`.

    All content is verified.  When the scan left blob hashing to its background process, a blob whose
    result is not in yet is yielded with ``xxh3_later``; :meth:`contents` waits for every result at its
    end and raises :class:`BrokenImages` if any blob did not match, so the sink aborts and nothing is left.
    """

    def __init__(self, result: ScanResult) -> None:
        self.catalog = result.catalog
        self._result = result

    def contents(self) -> Iterator[BlobContent]:
        if self._result.remote is not None:
            yield from self._remote(self._result.remote)
            return
        r, pending = self._result, self._result.pending
        order = self.catalog.member_order()  # a delta: without what its bases carried
        if pending is not None:
            pending.collect()  # most results are in: the child hashed while the walk went on
            pending.start(order)
        try:
            for d in order:
                x, data, later = r.xxh3.get(d), r.data.get(d), None
                if x is None and pending is not None and pending.has(d):
                    x, data = pending.xxh3.get(d), pending.data.get(d)
                    if x is None:
                        later = functools.partial(pending.xxh3.__getitem__, d)
                ext = r.extents[d]
                yield BlobContent(d, ext.size, (ext,), True, x, xxh3_later=later, data=data)
        except BaseException:
            if pending is not None:
                pending.abort()
            raise
        if pending is not None:
            pending.finish()
            if pending.bad:
                raise BrokenImages(tuple(self._broken(pending.bad)))

    def _remote(self, fs: RemoteFS) -> Iterator[BlobContent]:
        """Content of a tree that is not local: manifests were read (and checked) by the walk; small
        blobs are fetched a few at a time ahead of the writer, large ones streamed; the writer hashes
        every blob (``verified=False``)."""
        r = self._result
        order = self.catalog.member_order()
        blobs = self.catalog.blobs
        ahead = FetchAhead(
            order,
            lambda x: r.extents[x].size if x in blobs else None,
            lambda x: fs.fetch(r.extents[x].path),
            small=REMOTE_SMALL,
            budget=REMOTE_AHEAD,
            jobs=8,
            name="ferry-fetch",
        )
        try:
            for i, d in enumerate(order):
                ext = r.extents[d]
                if d in self.catalog.manifests:
                    data = r.data.get(d)
                    yield BlobContent(
                        d,
                        ext.size,
                        (),
                        True,
                        r.xxh3.get(d),
                        data=data if data is not None else fs.fetch(ext.path),
                    )
                    continue
                data = ahead.take(i)
                if data is not None:
                    yield BlobContent(d, ext.size, (), False, data=data)
                    continue
                stream = fs.open(ext.path)
                try:
                    yield BlobContent(d, ext.size, (), False, stream=stream)
                finally:
                    stream.close()
        finally:
            ahead.close()

    def _broken(self, bad: Mapping[str, str]) -> Iterator[BrokenImage]:
        for image in self.catalog.images():
            problems = [(bad[d], d) for d in self.catalog.closure(image.digest) if d in bad]
            if problems:
                yield _broken_image(image.repository, image.tag, image.digest, problems)


def _broken_image(repo: str, tag: str | None, digest: str, problems: list[tuple[str, str]]) -> BrokenImage:
    """One broken image from its (reason, digest at fault) pairs: each reason and digest once."""
    return BrokenImage(
        repo,
        tag,
        digest,
        "; ".join(sorted({p[0] for p in problems})),
        tuple(dict.fromkeys(p[1] for p in problems)),
    )


__all__ = ["ScanOptions", "ScanResult", "Selection", "TreeSource", "scan"]
