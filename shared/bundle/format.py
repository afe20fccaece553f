"""The ferry bundle format, version 1.2 (specs/bundle-format.md is the normative text).

A bundle is a plain, uncompressed POSIX tar:

    ferry/index.msgpack.zst   first: the whole plan (msgpack map, one zstandard frame)
    oci-layout                OCI image layout marker, so stock tools can read the bundle
    index.json                OCI image index naming each tagged image ``repository:tag``
    blobs/<alg>/<hex>         every config and layer once, then every manifest (children first)
    ferry/kit/<file>          only with ``export --with-kit``: ferry's offline install kit
    ferry/trailer.msgpack     last: xxh3-128 of every member, of the index and of all headers, so
                              truncation and damage show

Versioning: ``version`` is ``[major, minor]``.  A reader refuses a major it does not know; minor versions
only add keys, which readers ignore.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from sys import intern
from typing import IO, Any, cast

import msgpack
import zstandard

from ..digest import Digest
from ..errors import BundleFormatError, BundleVersionError
from ..manifest import INDEX_TYPES, SCHEMA1_TYPES, BlobRef, ChildRef, MediaType
from ..model import Base, Blob, Catalog, Manifest, Repository, Skipped, TagChange
from ..storage.paths import repository_problem, tag_problem

FORMAT = "ferry-bundle"
TRAILER_FORMAT = "ferry-bundle-trailer"
VERSION = (1, 2)
#: a delta bundle (``--since``): members are only what no base carried, which a 1.x reader would misread
DELTA_VERSION = (2, 0)
#: a bundle with a partial index (``--platform``): 1.2 readers refuse it as inconsistent (an index child the
#: repository does not hold), which is what they should do
PARTIAL_VERSION = (1, 3)
#: the minor a bundle with an install kit has (``kit``, members ``ferry/kit/…``): 1.4, or 2.1 for a delta.
#: Earlier readers refuse it (members they do not expect), which the kit's own ferry reads.
KIT_MINOR = {1: 4, 2: 1}
#: the majors this reader reads
MAJORS = (1, 2)
INDEX_MEMBER = "ferry/index.msgpack.zst"
TRAILER_MEMBER = "ferry/trailer.msgpack"
OCI_LAYOUT_MEMBER = "oci-layout"
OCI_INDEX_MEMBER = "index.json"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
KIT_PREFIX = "ferry/kit/"
#: a kit file's name below ferry/kit/: one plain file name, as wheels and scripts have (no folders)
KIT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
REF_NAME = "org.opencontainers.image.ref.name"
#: an index larger than this is refused before decompression (a 5000-tag index is about 2 MiB)
INDEX_MAX = 1 << 30


def blob_member(digest: str) -> str:
    """``blobs/<alg>/<hex>`` for a digest already validated (every digest of a decoded index is)."""
    return "blobs/" + digest.replace(":", "/", 1)


def member_digest(name: str) -> str | None:
    """The digest a ``blobs/<alg>/<hex>`` member holds, or None for any other name."""
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        text = f"{parts[1]}:{parts[2]}"
        if Digest.is_valid(text):
            return text
    return None


@dataclass(frozen=True)
class BundleInfo:
    """Facts about a bundle that are not part of the catalog."""

    ferry_version: str
    created: str
    source: dict[str, Any]
    options: dict[str, Any]
    volume_size: int | None
    version: tuple[int, int] = VERSION
    #: unique per bundle, given at export (1.2; None in older bundles): later waves name their bases by it
    bundle_id: str | None = None
    #: the offline install kit carried after the blobs (1.4/2.1), in member order
    kit: tuple[KitFile, ...] = ()


@dataclass(frozen=True)
class KitFile:
    """One file of the install kit: member ``ferry/kit/<name>``, checked by its sha256 like a blob."""

    name: str
    size: int
    sha256: str  # lower-case hex

    @property
    def member(self) -> str:
        return KIT_PREFIX + self.name


def encode_index(catalog: Catalog, info: BundleInfo, order: list[str] | None = None) -> bytes:
    base_at = {b.bundle_id: i for i, b in enumerate(catalog.bases)}
    carried = {d: base_at[b] for d, b in catalog.carried.items()}

    def blob_doc(d: str, size: int, media_type: str) -> dict[str, Any]:
        doc: dict[str, Any] = {"size": size, "mediaType": media_type}
        if d in carried:
            doc["base"] = carried[d]
        return doc

    def manifest_doc(d: str, m: Manifest) -> dict[str, Any]:
        doc = _manifest_doc(m)
        if d in carried:
            doc["base"] = carried[d]
        return doc

    version = (
        DELTA_VERSION
        if catalog.carried
        else PARTIAL_VERSION
        if any(m.left_out for m in catalog.manifests.values())
        else VERSION
    )
    if info.kit:
        version = (version[0], max(version[1], KIT_MINOR[version[0]]))
    doc = {
        "format": FORMAT,
        "version": list(version),
        "ferry_version": info.ferry_version,
        "created": info.created,
        "source": info.source,
        "options": info.options,
        "volume_size": info.volume_size,
        **({"bundle_id": info.bundle_id} if info.bundle_id is not None else {}),
        "repositories": _Streamed(
            len(catalog.repositories),
            lambda: (
                {
                    "name": r.name,
                    "tags": dict(r.tags),
                    "manifests": list(r.manifests),
                    "untagged": list(r.untagged),
                }
                for r in catalog.repositories
            ),
        ),
        "manifests": _Streamed(
            len(catalog.manifests),
            lambda: ((d, manifest_doc(d, m)) for d, m in catalog.manifests.items()),
            pairs=True,
        ),
        "blobs": _Streamed(
            len(catalog.blobs),
            lambda: ((d, blob_doc(d, b.size, b.media_type)) for d, b in catalog.blobs.items()),
            pairs=True,
        ),
        "order": order if order is not None else catalog.member_order(),
        "skipped": [
            {
                "repository": s.repository,
                "tag": s.tag,
                "digest": s.digest,
                "reason": s.reason,
                "missing": list(s.missing),
            }
            for s in catalog.skipped
        ],
        **(
            {"bases": [{"bundle_id": b.bundle_id, "created": b.created} for b in catalog.bases]}
            if catalog.bases
            else {}
        ),
        **({"kit": [[k.name, k.size, k.sha256] for k in info.kit]} if info.kit else {}),
        **(
            {
                "changes": [
                    {
                        "repository": c.repository,
                        "tag": c.tag,
                        "kind": c.kind,
                        "digest": c.digest,
                        "old": c.old,
                        "base": c.base,
                    }
                    for c in catalog.changes
                ]
            }
            if catalog.changes
            else {}
        ),
    }
    # packed piece by piece, twice: once to learn the size the frame header declares, once into the
    # compressor.  The bytes are those of msgpack.packb(doc), but neither the document as dicts nor the
    # packed bytes exist whole (at 100k tags those were 160 MiB over the compressed index)
    size = sum(len(chunk) for chunk in _packed(doc))
    out = _Chunks()
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=True)
    with cctx.stream_writer(cast(IO[bytes], out), size=size, closefd=False) as w:
        for chunk in _packed(doc):
            w.write(chunk)
    return out.join()


class _Chunks:
    """A write target that keeps the pieces and joins them once (a BytesIO's getvalue is a second copy)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def join(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _packed(doc: dict[str, Any]) -> Iterator[bytes]:
    """``doc`` as msgpack, in pieces of about 1 MiB; :class:`_Streamed` values are packed entry by entry."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)

    def full() -> bool:
        return len(packer.getbuffer()) >= 1 << 20

    packer.pack_map_header(len(doc))
    for key, value in doc.items():
        packer.pack(key)
        if isinstance(value, _Streamed):
            if value.pairs:
                packer.pack_map_header(value.n)
            else:
                packer.pack_array_header(value.n)
            for item in value.items():
                if value.pairs:
                    packer.pack(item[0])
                    packer.pack(item[1])
                else:
                    packer.pack(item)
                if full():
                    yield packer.bytes()
                    packer.reset()
        else:
            packer.pack(value)
    yield packer.bytes()


@dataclass(frozen=True)
class _Streamed:
    """A list (or, with ``pairs``, a map) of ``n`` entries the encoder packs one at a time."""

    n: int
    #: makes the entries (again: the encoder packs them twice)
    items: Callable[[], Iterator[Any]]
    pairs: bool = False


def _manifest_doc(m: Manifest) -> dict[str, Any]:
    return {
        "mediaType": m.media_type,
        "size": m.size,
        "blobs": list(m.blobs),
        "foreign": [
            {"digest": b.digest, "size": b.size, "mediaType": b.media_type, "urls": list(b.urls)}
            for b in m.foreign
        ],
        "children": [
            {"digest": c.digest, "size": c.size, "mediaType": c.media_type, "platform": c.platform}
            for c in m.children
        ],
        "subject": m.subject,
        "artifactType": m.artifact_type,
        **({"leftOut": list(m.left_out)} if m.left_out else {}),
    }


#: what an index may decompress to: a fixed allowance, plus what the bundle's size could describe (every
#: member has at least a 512-byte header; a tag costs about 100 bytes of index), never more than INDEX_MAX.
#: A hostile index of a few KB must not make the reader allocate gigabytes before it is refused.
INDEX_RAW_BASE = 16 << 20


def index_raw_cap(index_size: int, bundle_size: int | None = None) -> int:
    """The most bytes an index of ``index_size`` compressed bytes, in a bundle of ``bundle_size``, may
    decompress to."""
    return min(INDEX_MAX, INDEX_RAW_BASE + max(64 * index_size, bundle_size or 0))


class _Capped:
    """The decompressed index as a stream that gives at most ``cap`` bytes: a frame may claim (and hold)
    900 MB of zeros, so nothing is sized by its header and nothing past the cap is read."""

    def __init__(self, reader: Any, cap: int) -> None:
        self.reader, self.cap, self.n = reader, cap, 0

    def read(self, size: int = -1) -> bytes:
        left = self.cap + 1 - self.n
        data = self.reader.read(left if size < 0 else min(size, left)) if left > 0 else b""
        self.n += len(data)
        if self.n > self.cap:
            raise BundleFormatError(
                f"the bundle index decompresses to more than {self.cap} bytes, far more than this bundle "
                "could describe"
            )
        return bytes(data)


def _read_index(u: msgpack.Unpacker) -> dict[str, Any]:
    """The index map, read entry by entry: ``manifests`` and ``blobs`` become Manifest and Blob objects as
    each entry arrives and ``order`` a list, so the whole document never exists as msgpack's dicts at once
    (at 100k tags they were several times the catalog).  Every digest and media type is interned: the
    index names a digest in several places (its entry, each manifest that uses it, each repository, the
    order), and the catalog holds each string once."""
    doc: dict[str, Any] = {"_manifests_base": {}, "_blobs_base": {}}
    for _ in range(_header(u.read_map_header, "the index", "map")):
        key = u.unpack()
        if key in ("manifests", "blobs"):
            doc[key], doc[f"_{key}_base"] = _entries(
                u, key, _manifest_from if key == "manifests" else _blob_from
            )
        elif key == "order":
            # strings only, which the catalog keeps anyway: unpacked in one call (a call per entry was
            # a third of the time to open a 100k-tag bundle), checked and interned in one pass
            doc["order"] = list(map(intern, _strs(u.unpack(), "order")))
        else:
            doc[_str(key, "an index key")] = u.unpack()
    return doc


def _entries(
    u: msgpack.Unpacker, what: str, make: Callable[[str, Any], Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One of the index's digest maps, made into records entry by entry, and each entry's ``base``."""
    out, base = {}, {}
    for _ in range(_header(u.read_map_header, what, "map")):
        d = intern(_str(u.unpack(), f"a {what[:-1]} digest"))
        entry = u.unpack()
        out[d] = make(d, entry)  # checks that the entry is a map
        if entry.get("base") is not None:
            base[d] = entry["base"]
    return out, base


def _header(read: Callable[[], int], what: str, kind: str) -> int:
    try:
        return int(read())
    except msgpack.UnpackValueError:
        if what == "the index":
            raise BundleFormatError("the first member is not a ferry bundle index") from None
        raise _malformed(f"{what} is not a {kind}") from None


def _blob_from(d: str, b: Any) -> Blob:
    # the common case checked in one expression; the field-by-field path names what is wrong
    if (
        type(b) is dict
        and type(size := b.get("size")) is int
        and size >= 0
        and type(mt := b.get("mediaType", "")) is str
    ):
        return Blob(d, size, intern(mt))
    b = _map(b, f"blob {d}")
    return Blob(
        d, _size(b.get("size"), f"the size of {d}"), _str(b.get("mediaType", ""), f"the mediaType of {d}")
    )


def _malformed(what: str) -> BundleFormatError:
    return BundleFormatError(f"the bundle index is malformed ({what})")


def _str(v: Any, what: str) -> str:
    if type(v) is not str:
        raise _malformed(f"{what} is not a string")
    return v


def _opt_str(v: Any, what: str) -> str | None:
    return None if v is None else _str(v, what)


def _size(v: Any, what: str) -> int:
    if type(v) is not int or v < 0:
        raise _malformed(f"{what} is not a size ({v!r})")
    return v


def _list(v: Any, what: str) -> list[Any]:
    if type(v) is not list:
        raise _malformed(f"{what} is not a list")
    return v


def _map(v: Any, what: str) -> dict[str, Any]:
    if type(v) is not dict:
        raise _malformed(f"{what} is not a map")
    return v


def _strs(v: Any, what: str) -> tuple[str, ...]:
    items = tuple(_list(v, what))
    if not all(type(x) is str for x in items):
        raise _malformed(f"{what} holds something that is not a string")
    return items


def decode_index(data: bytes, *, bundle_size: int | None = None) -> tuple[Catalog, BundleInfo, list[str]]:
    """Parse an index; returns the catalog, the bundle facts and the member order of the blobs.

    Every value is checked for its type as it is read (the index crossed an air gap and may be hostile),
    memory is bounded by :func:`index_raw_cap`, then :func:`validate_catalog` checks what it says."""
    cap = index_raw_cap(len(data), bundle_size)
    try:
        with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=False) as stream:
            # no container may announce more entries, and no string more bytes, than the cap allows
            u = msgpack.Unpacker(
                _Capped(stream, cap),
                raw=False,
                strict_map_key=True,
                max_buffer_size=cap,
                max_array_len=cap,
                max_map_len=cap,
                max_str_len=cap,
                max_bin_len=cap,
            )
            doc = _read_index(u)
    except zstandard.ZstdError as e:
        raise BundleFormatError(f"the bundle index is unreadable ({e})") from None
    except (ValueError, msgpack.UnpackException, RecursionError) as e:
        raise BundleFormatError(f"the bundle index is unreadable ({type(e).__name__}: {e})") from None
    if doc.get("format") != FORMAT:
        raise BundleFormatError("the first member is not a ferry bundle index")
    check_version(doc.get("version"))
    try:
        manifests, blobs = doc["manifests"], doc["blobs"]
        repos = []
        for r in _list(doc["repositories"], "repositories"):
            r = _map(r, "a repository")
            name = _str(r.get("name"), "a repository name")
            tags = _map(r.get("tags"), f"the tags of {name}")
            for tag, target in tags.items():
                _str(target, f"the target of {name}:{tag}")
            repos.append(
                Repository(
                    name,
                    {t: intern(d) for t, d in tags.items()},
                    tuple(map(intern, _strs(r.get("manifests"), f"the manifests of {name}"))),
                    tuple(map(intern, _strs(r.get("untagged", []), f"the untagged manifests of {name}"))),
                )
            )
        skipped = tuple(
            Skipped(
                _str(s.get("repository"), "a skipped repository"),
                _opt_str(s.get("tag"), "a skipped tag"),
                _opt_str(s.get("digest"), "a skipped digest"),
                _str(s.get("reason"), "a skip reason"),
                _strs(s.get("missing", []), "a skipped image's missing digests"),
            )
            for s in (_map(x, "a skipped item") for x in _list(doc.get("skipped", []), "skipped"))
        )
        volume_size = doc.get("volume_size")
        if volume_size is not None and (type(volume_size) is not int or volume_size < 512):
            raise _malformed(f"volume_size {volume_size!r} is not a volume size")
        info = BundleInfo(
            _str(doc.get("ferry_version", ""), "ferry_version"),
            _str(doc.get("created", ""), "created"),
            _map(doc.get("source") or {}, "source"),
            _map(doc.get("options") or {}, "options"),
            volume_size,
            (doc["version"][0], doc["version"][1]),
            _opt_str(doc.get("bundle_id"), "bundle_id"),
            _kit(doc.get("kit", [])),
        )
        order = doc["order"]
        bases = _bases(doc.get("bases", []))
        # only a delta's members are less than what it describes; a 1.x reader never honoured ``base``
        carried = _carried(doc, bases) if info.version[0] >= 2 else {}
        changes = _changes(doc.get("changes", []))
    except KeyError as e:
        raise _malformed(f"no {e.args[0]!r}") from None
    except AttributeError as e:  # a value of the wrong kind where a map was expected
        raise _malformed(str(e)) from None
    catalog = Catalog(tuple(repos), manifests, blobs, skipped, carried, bases, changes)
    validate_catalog(catalog, order)
    return catalog, info, order


_BUNDLE_ID = re.compile(r"[0-9a-f]{32}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _kit(v: Any) -> tuple[KitFile, ...]:
    out = []
    for entry in _list(v, "kit"):
        entry = _list(entry, "a kit entry")
        if len(entry) != 3:
            raise _malformed("a kit entry is not [name, size, sha256]")
        name = _str(entry[0], "a kit file name")
        if not KIT_NAME_RE.fullmatch(name):
            raise _malformed(f"kit file name {name!r} is not a plain file name")
        sha = _str(entry[2], f"the sha256 of kit file {name}")
        if not _SHA256_HEX.fullmatch(sha):
            raise _malformed(f"the sha256 of kit file {name} is not 64 lower-case hex digits")
        out.append(KitFile(name, _size(entry[1], f"the size of kit file {name}"), sha))
    if len({k.name for k in out}) != len(out):
        raise _malformed("a kit file is listed twice")
    return tuple(out)


def _bases(v: Any) -> tuple[Base, ...]:
    out = []
    for b in _list(v, "bases"):
        b = _map(b, "a base")
        bundle_id = _str(b.get("bundle_id"), "a base's bundle_id")
        if not _BUNDLE_ID.fullmatch(bundle_id):
            raise _malformed(f"base bundle id {bundle_id!r} is not 32 hex digits")
        out.append(Base(bundle_id, _str(b.get("created", ""), "a base's created time")))
    if len({b.bundle_id for b in out}) != len(out):
        raise _malformed("a base is listed twice")
    return tuple(out)


def _carried(doc: dict[str, Any], bases: tuple[Base, ...]) -> dict[str, str]:
    """digest -> the bundle id of the base that carried it, from each entry's ``base`` (an index into
    ``bases``)."""
    out: dict[str, str] = {}
    for key in ("blobs", "manifests"):
        for d, at in doc[f"_{key}_base"].items():
            if type(at) is not int or not 0 <= at < len(bases):
                raise _malformed(f"{d} names base {at!r}, which the index does not list")
            out[d] = bases[at].bundle_id
    return out


_CHANGE_KINDS = ("new", "moved", "gone")


def _changes(v: Any) -> tuple[TagChange, ...]:
    out = []
    for c in _list(v, "changes"):
        c = _map(c, "a tag change")
        kind = _str(c.get("kind"), "a tag change's kind")
        if kind not in _CHANGE_KINDS:
            raise _malformed(f"a tag change of kind {kind!r}")
        repo, tag = (
            _str(c.get("repository"), "a changed tag's repository"),
            _str(c.get("tag"), "a changed tag"),
        )
        digest, old = _str(c.get("digest"), f"{repo}:{tag}'s digest"), _opt_str(c.get("old"), "an old digest")
        base = _opt_str(c.get("base"), "a changed tag's base")
        # they are only reported, but reported names must be names: no escape codes reach a terminal
        problem = repository_problem(repo) or tag_problem(tag)
        if problem is None and not all(Digest.is_valid(x) for x in (digest, *([old] if old else []))):
            problem = "invalid digest"
        if problem is not None or (base is not None and not _BUNDLE_ID.fullmatch(base)):
            raise _malformed(f"a tag change names an {problem or 'invalid base id'}")
        out.append(TagChange(repo, tag, kind, digest, old, base))
    return tuple(out)


def validate_catalog(catalog: Catalog, order: list[str]) -> None:
    """Refuse an index whose names or digests are not what a registry could hold.

    The index crossed an air gap and names files and paths on the import side, so every digest, repository
    name and tag is checked against the distribution grammar before anyone uses it.  Every digest is checked
    once, in one set (a 5000-image index names 15k digests 40k times); only when something is wrong is the
    index gone through again, entry by entry, to name what."""
    held = catalog.blobs.keys() | catalog.manifests.keys()
    refs: set[object] = set()
    named: set[object] = set(held)
    try:
        for m in catalog.manifests.values():
            refs.update(m.blobs)
            # most manifests have no children and no foreign layers: no generator made for them (this
            # loop runs for every manifest on every open, 120k at 100k tags)
            if m.children:
                refs.update(c.digest for c in m.held_children)
                named.update(c.digest for c in m.children)
                if m.left_out and not set(m.left_out) <= {c.digest for c in m.children}:
                    raise BundleFormatError(
                        f"the bundle index is inconsistent: {m.digest} leaves out what it does not list"
                    )
            if m.foreign:
                named.update(f.digest for f in m.foreign)
            if m.subject is not None:
                named.add(m.subject)
        for r in catalog.repositories:
            named.update(r.tags.values())
        named |= refs
        if not (refs <= held and all(type(d) is str and Digest.is_valid(d) for d in named)):
            _explain_catalog(catalog)  # raises for what is wrong (a foreign layer may be a manifest's blob)
        _validate_names(catalog, order, held)
    except TypeError:  # an unhashable value where a digest belongs
        raise BundleFormatError("the bundle index is malformed (a digest is not a string)") from None


def _validate_names(catalog: Catalog, order: list[str], held: set[str]) -> None:
    """What the digest check leaves: the order, repository names and tags, what repositories hold."""
    members = held - catalog.carried.keys() if catalog.carried else held
    if len(order) != len(members) or set(order) != members:
        raise BundleFormatError(
            "the bundle index is inconsistent: its member order does not list every blob once"
            + (" (without what its bases carried)" if catalog.carried else "")
        )
    # the order a streaming reader relies on: a blob before the manifests that need it, an index's
    # children before the index (which also rules out a cycle of indexes).  What a base carried is on
    # the target before the first member arrives; what a base carried needs only what a base carried
    pos = {d: i for i, d in enumerate(order)}
    carried = catalog.carried
    for d, m in catalog.manifests.items():
        if carried and d in carried:
            for ref in (*m.blobs, *(c.digest for c in m.held_children)):
                if ref not in carried:
                    raise BundleFormatError(
                        f"the bundle index is inconsistent: {d} came with a base, but {ref}, which it "
                        "needs, did not"
                    )
            continue
        at = pos[d]
        # the latest position of what it needs, found in C (map and max); what comes late is looked
        # for only when something does.  This runs for every manifest on every open (120k at 100k
        # tags); what a base carried has no position (-1)
        needs = m.blobs if not m.children else (*m.blobs, *(c.digest for c in m.held_children))
        if not needs or max(map(pos.get, needs, repeat(-1, len(needs)))) <= at:
            continue
        late = next(ref for ref in needs if pos.get(ref, -1) > at)
        raise BundleFormatError(f"the bundle index is inconsistent: {d} comes before {late}, which it needs")
    names: set[str] = set()
    for r in catalog.repositories:
        problem = repository_problem(r.name)
        if problem is not None:
            raise BundleFormatError(f"the bundle index names an {problem}: {r.name!r}")
        if r.name in names:
            raise BundleFormatError(f"the bundle index lists the repository {r.name} twice")
        names.add(r.name)
        for tag in r.tags:
            problem = tag_problem(tag)
            if problem is not None:
                raise BundleFormatError(f"the bundle index names an {problem}: {tag!r} in {r.name}")
        # a tag, an untagged entry and an index child must be manifests of this repository: the registry
        # serves a manifest only from a repository that links it (else the tag answers 404)
        mine = set(r.manifests)
        for d in mine:
            held_m = catalog.manifests.get(d)
            if held_m is None:
                raise BundleFormatError(
                    f"the bundle index is inconsistent: {r.name} holds {d}, which it does not describe"
                )
            if not held_m.children:
                continue
            for c in held_m.held_children:
                if c.digest not in mine:
                    raise BundleFormatError(
                        f"the bundle index is inconsistent: {d} in {r.name} lists the child {c.digest}, "
                        f"which {r.name} does not hold"
                    )
        for tag, d in r.tags.items():
            if d not in mine:
                raise BundleFormatError(
                    f"the bundle index is inconsistent: the tag {r.name}:{tag} points to {d}, "
                    f"which {r.name} does not hold"
                )
        for d in r.untagged:
            if d not in mine:
                raise BundleFormatError(
                    f"the bundle index is inconsistent: {r.name} lists {d} as untagged but does not hold it"
                )


def _explain_catalog(catalog: Catalog) -> None:
    """Raise for the first invalid digest or missing reference, saying where it is."""

    valid: set[str] = set()

    def digest(d: object, what: str) -> None:
        if d in valid:
            return
        if not isinstance(d, str) or not Digest.is_valid(d):
            raise BundleFormatError(f"the bundle index names an invalid digest {d!r} ({what})")
        valid.add(d)

    for d, m in catalog.manifests.items():
        digest(d, "manifest")
        for ref in (*m.blobs, *(c.digest for c in m.held_children), *(f.digest for f in m.foreign)):
            digest(ref, f"referenced by {d}")
            if (
                ref not in catalog.blobs
                and ref not in catalog.manifests
                and all(f.digest != ref for f in m.foreign)
            ):
                raise BundleFormatError(
                    f"the bundle index is inconsistent: {d} needs {ref}, which it does not hold"
                )
        if m.subject is not None:
            digest(m.subject, f"subject of {d}")
    for d in catalog.blobs:
        digest(d, "blob")
    for r in catalog.repositories:
        for tag, d in r.tags.items():
            digest(d, f"tag {r.name}:{tag}")


def _manifest_from(digest: str, m: dict[str, Any]) -> Manifest:
    # most manifests have neither foreign layers nor children: checked in a few C-level operations (this
    # runs for 120k manifests on every open at 100k tags); anything else, or anything wrong, takes the
    # field-by-field path, which names what is wrong
    if type(m) is dict and type(digest) is str:
        mt, size, blobs = m.get("mediaType"), m.get("size"), m.get("blobs")
        subject, artifact = m.get("subject"), m.get("artifactType")
        if (
            type(mt) is str
            and type(size) is int
            and size >= 0
            and type(blobs) is list
            # absent or an empty list (the encoder writes []); no other value equals []
            and m.get("foreign", _EMPTY) == _EMPTY
            and m.get("children", _EMPTY) == _EMPTY
            and not m.get("leftOut")
            and (subject is None or type(subject) is str)
            and (artifact is None or type(artifact) is str)
        ):
            try:
                interned = tuple(map(intern, blobs))  # intern takes nothing but a str
            except TypeError:
                pass
            else:
                return Manifest(digest, intern(mt), size, interned, (), (), subject, artifact)
    _str(digest, "a manifest digest")
    _map(m, f"manifest {digest}")
    return _manifest_checked(digest, m)


#: compared with, never changed
_EMPTY: list[Any] = []


def _manifest_checked(digest: str, m: dict[str, Any]) -> Manifest:
    foreign = []
    for f in _list(m.get("foreign", []), f"the foreign layers of {digest}"):
        f = _map(f, f"a foreign layer of {digest}")
        size = f.get("size")
        if type(size) is not int:  # a foreign layer's size may be unknown (-1, schema 1)
            raise _malformed(f"a foreign layer of {digest} has no integer size")
        foreign.append(
            BlobRef(
                _str(f.get("digest"), f"a foreign layer of {digest}"),
                size,
                _str(f.get("mediaType"), f"a foreign layer's mediaType in {digest}"),
                _strs(f.get("urls", []), f"a foreign layer's urls in {digest}"),
            )
        )
    children = []
    for c in _list(m.get("children", []), f"the children of {digest}"):
        c = _map(c, f"a child of {digest}")
        children.append(
            ChildRef(
                _str(c.get("digest"), f"a child of {digest}"),
                _size(c.get("size"), f"a child's size in {digest}"),
                _str(c.get("mediaType"), f"a child's mediaType in {digest}"),
                _opt_str(c.get("platform"), f"a child's platform in {digest}"),
            )
        )
    return Manifest(
        digest,
        _str(m.get("mediaType"), f"the mediaType of {digest}"),
        _size(m.get("size"), f"the size of {digest}"),
        _strs(m.get("blobs"), f"the blobs of {digest}"),
        tuple(foreign),
        tuple(children),
        _opt_str(m.get("subject"), f"the subject of {digest}"),
        _opt_str(m.get("artifactType"), f"the artifactType of {digest}"),
        _strs(m.get("leftOut", []), f"the children {digest} leaves out"),
    )


def check_version(version: Any) -> None:
    if not (
        isinstance(version, (list, tuple))
        and len(version) == 2
        and all(type(v) is int and v >= 0 for v in version)
    ):
        raise BundleFormatError(f"the bundle index has no valid version ({version!r})")
    if version[0] not in MAJORS:
        raise BundleVersionError(f"{version[0]}.{version[1]}", " and ".join(f"{m}.x" for m in MAJORS))


def encode_trailer(index_xxh3: str, members: list[tuple[str, int, str]], headers_xxh3: str) -> bytes:
    doc = {
        "format": TRAILER_FORMAT,
        "version": list(VERSION),
        "index_xxh3": index_xxh3,
        "headers_xxh3": headers_xxh3,
        # a tuple packs as the list it is read back as: no second list of 300k lists at 100k tags
        "members": members,
    }
    return bytes(msgpack.packb(doc, use_bin_type=True))


@dataclass(frozen=True)
class Trailer:
    index_xxh3: str
    #: (member name, size, xxh3-128 hex) for every member before the trailer, in tar order
    members: tuple[tuple[str, int, str], ...]
    #: xxh3-128 of every header block before the trailer, in tar order (format 1.1; None in 1.0 bundles)
    headers_xxh3: str | None = None


def decode_trailer(data: bytes) -> Trailer:
    try:
        # tuples straight from the decoder: a bundle lists tens of thousands of members
        doc = msgpack.unpackb(data, raw=False, use_list=False)
        if doc.get("format") != TRAILER_FORMAT:
            raise ValueError("not a trailer")
        check_version(doc.get("version"))
        members = doc["members"]
        if not all(
            type(m) is tuple and len(m) == 3 and type(m[0]) is str and type(m[1]) is int and type(m[2]) is str
            for m in members
        ):
            raise ValueError("a member entry is not [name, size, xxh3]")
        headers = doc.get("headers_xxh3")
        if headers is not None and not isinstance(headers, str):
            raise ValueError("headers_xxh3 is not a string")
        return Trailer(str(doc["index_xxh3"]), members, headers)
    except (ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException) as e:
        raise BundleFormatError(f"the bundle trailer is unreadable ({e})") from None


def oci_index(catalog: Catalog) -> bytes:
    """The OCI ``index.json``: one entry per tag (schema 1 has no OCI form), named ``repository:tag``; in
    a delta, per tag whose image is whole in the bundle."""
    entries = []
    for image in catalog.images():
        if image.tag is None or image.media_type in SCHEMA1_TYPES:
            continue
        if catalog.carried and any(d in catalog.carried for d in catalog.closure(image.digest)):
            continue  # a delta's layout lists only the images it holds whole
        mt = image.media_type
        entries.append(
            {
                "mediaType": mt,
                "digest": image.digest,
                "size": image.size,
                "annotations": {REF_NAME: f"{image.repository}:{image.tag}"},
            }
        )
    doc = {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX.value, "manifests": entries}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


__all__ = [
    "DELTA_VERSION",
    "INDEX_MEMBER",
    "INDEX_TYPES",
    "KIT_PREFIX",
    "OCI_INDEX_MEMBER",
    "OCI_LAYOUT",
    "OCI_LAYOUT_MEMBER",
    "TRAILER_MEMBER",
    "VERSION",
    "BundleInfo",
    "KitFile",
    "Trailer",
    "blob_member",
    "decode_index",
    "decode_trailer",
    "encode_index",
    "encode_trailer",
    "member_digest",
    "oci_index",
]
