"""A storage tree in an S3 bucket (Distribution's s3 driver, Harbor's S3 backend), read as a :class:`TreeFS`.

The driver keeps the same layout under ``PREFIX/docker/registry/v2``.  Walking it object by object, as a
directory is walked, costs a request per folder and per link: hours for a large registry.  So the view
is built at open, in parallel: every key under ``v2`` listed (one listing per blob prefix folder and per
repository folder, many at once), which answers every folder listing and every size; then every small
link object the walk reads (tags' ``current/link``, revision links) and every manifest they name fetched
at once.  After that the walk asks nothing it has not been told.

Content is not a local file: blobs are handed out as streams (:meth:`S3FS.open`) or fetched whole
(:meth:`S3FS.fetch`), and their sha256 is checked by whoever writes them.  ``local`` is False, so the
scan does not try to hash blob files by path.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from ..errors import FerryError, NotAStorageTree, SourceNotFound, SourceUnreadable, UsageError
from .fs import Extent
from .paths import V2_SUFFIX

log = logging.getLogger(__name__)

#: link objects and manifests are fetched at open up to this size each, and this much in all
PREFETCH_MAX = 4 << 20
PREFETCH_BUDGET = 512 << 20


class S3Error(FerryError):
    code = "s3"


@dataclass(frozen=True)
class S3Config:
    """Endpoint and credentials as S3 users have them: options, else the standard AWS environment and
    ``~/.aws`` files (boto3's own resolution)."""

    endpoint: str | None = None  # else AWS_ENDPOINT_URL, else AWS itself
    region: str | None = None
    profile: str | None = None
    #: path-style addressing (S3-compatible servers: Ceph RGW, MinIO); virtual-hosted on AWS
    path_style: bool | None = None
    ca_cert: str | None = None
    insecure: bool = False
    jobs: int = 32


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` -> (bucket, prefix without slashes at either end)."""
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise UsageError(f"{url}: no bucket (s3://BUCKET/PREFIX)")
    return bucket, prefix.strip("/")


def s3_client(config: S3Config) -> Any:
    try:
        import boto3
        import botocore.config
    except ImportError:  # pragma: no cover - a dependency
        raise UsageError("reading S3 needs boto3 (pip install boto3)") from None
    endpoint = config.endpoint or os.environ.get("AWS_ENDPOINT_URL")
    path_style = config.path_style if config.path_style is not None else endpoint is not None
    session = boto3.session.Session(profile_name=config.profile, region_name=config.region)
    verify: bool | str = False if config.insecure else (config.ca_cert or True)
    return session.client(
        "s3",
        endpoint_url=endpoint,
        verify=verify,
        config=botocore.config.Config(
            s3={"addressing_style": "path" if path_style else "auto"},
            max_pool_connections=max(10, config.jobs),
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


def _s3_error(e: Exception, where: str) -> FerryError:
    code = getattr(e, "response", {}).get("Error", {}).get("Code", "") if hasattr(e, "response") else ""
    if code in ("NoSuchBucket",):
        return SourceNotFound(f"{where}: no such bucket", hint="Check the bucket name and the endpoint.")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"):
        return S3Error(
            f"{where}: access denied ({code})",
            hint="Check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, --s3-profile) and the "
            "bucket policy: ferry needs to list and read.",
        )
    return S3Error(f"{where}: {type(e).__name__}: {e}", hint="Check --s3-endpoint, the network and TLS.")


def list_objects(
    client: Any, bucket: str, prefix: str, delimiter: str = ""
) -> tuple[list[tuple[str, int]], list[str]]:
    """(key, size) of every object below ``prefix``, and the common prefixes (with a delimiter)."""
    keys: list[tuple[str, int]] = []
    dirs: list[str] = []
    kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        kw["Delimiter"] = delimiter
    try:
        for page in client.get_paginator("list_objects_v2").paginate(**kw):
            keys += [(o["Key"], int(o["Size"])) for o in page.get("Contents", ())]
            dirs += [p["Prefix"] for p in page.get("CommonPrefixes", ())]
    except Exception as e:
        raise _s3_error(e, f"s3://{bucket}/{prefix}") from None
    return keys, dirs


def list_tree(client: Any, bucket: str, v2: str, pool: ThreadPoolExecutor) -> dict[str, int]:
    """Every key below the tree at ``v2`` with its size: one listing per blob prefix folder
    (``blobs/sha256/00`` … ``ff``) and per repository folder, many at once, so that no listing is long."""
    root = f"{v2}/" if v2 else ""
    tops: list[str] = []
    for sub in ("blobs/", "repositories/"):
        _, dirs = list_objects(client, bucket, root + sub, "/")
        tops += dirs
    folders: list[str] = []
    lists = pool.map(lambda p: list_objects(client, bucket, p, "/"), tops)
    for part, (_, dirs) in zip(tops, lists):
        folders += dirs if part.startswith(root + "blobs/") else [part]
    out: dict[str, int] = {}
    for keys, _ in pool.map(lambda p: list_objects(client, bucket, p), folders):
        out.update(keys)
    return out


class S3FS:
    local = False

    def __init__(self, url: str, config: S3Config) -> None:
        self.bucket, prefix = parse_s3_url(url)
        self.description = url
        self.config = config
        self.client = s3_client(config)
        self._lock = threading.Lock()
        base = self._find_v2(prefix)
        self.v2 = base  # key prefix of the v2 folder, without a trailing slash
        self._files: dict[str, int] = {}
        self._dirs: dict[str, dict[str, bool]] = {"": {}}
        self._cache: dict[str, bytes] = {}
        self._pool = ThreadPoolExecutor(max(1, config.jobs), thread_name_prefix="ferry-s3")
        self._index()
        self._prefetch()

    # -- building the view -----------------------------------------------------------------------
    def _list(self, prefix: str, delimiter: str = "") -> tuple[list[tuple[str, int]], list[str]]:
        return list_objects(self.client, self.bucket, prefix, delimiter)

    def _find_v2(self, prefix: str) -> str:
        for cand in (f"{prefix}/{V2_SUFFIX}" if prefix else V2_SUFFIX, prefix):
            _, dirs = self._list(f"{cand}/" if cand else "", "/")
            names = {d.rstrip("/").rsplit("/", 1)[-1] for d in dirs}
            if "repositories" in names or "blobs" in names:
                return cand
        raise NotAStorageTree(
            f"{self.description}: no docker/registry/v2 (repositories/, blobs/) below this prefix",
            hint="Give the s3 driver's rootdirectory: s3://BUCKET/ROOTDIRECTORY.",
        )

    def _rel(self, key: str) -> str:
        return key[len(self.v2) + 1 :] if self.v2 else key

    def _index(self) -> None:
        """Every key under v2 (:func:`list_tree`)."""
        for key, size in list_tree(self.client, self.bucket, self.v2, self._pool).items():
            self._add(self._rel(key), size)
        log.info("%s: %d objects listed", self.description, len(self._files))

    def _add(self, rel: str, size: int) -> None:
        self._files[rel] = size
        parent, _, name = rel.rpartition("/")
        self._dirs.setdefault(parent, {})[name] = False
        while parent:
            grand, _, pname = parent.rpartition("/")
            self._dirs.setdefault(grand, {})[pname] = True
            parent = grand

    def _prefetch(self) -> None:
        """The links the walk reads, then the manifests they name, fetched all at once."""
        links = [
            p
            for p in self._files
            if p.startswith("repositories/")
            and p.endswith("/link")
            and (("/_manifests/tags/" in p and p.endswith("/current/link")) or "/_manifests/revisions/" in p)
        ]
        self._fetch_all(links)
        manifests = set()
        for p in links:
            text = self._cache.get(p, b"").decode("ascii", "replace")
            alg, _, hexd = text.partition(":")
            if hexd and len(hexd) > 2 and hexd.isalnum():
                data = f"blobs/{alg}/{hexd[:2]}/{hexd}/data"
                if self._files.get(data, PREFETCH_MAX + 1) <= PREFETCH_MAX:
                    manifests.add(data)
        budget, chosen = PREFETCH_BUDGET, []
        for p in sorted(manifests):
            if budget >= self._files[p]:
                budget -= self._files[p]
                chosen.append(p)
        self._fetch_all(chosen)

    def _fetch_all(self, paths: list[str]) -> None:
        for path, data in zip(paths, self._pool.map(self._get, paths)):
            if data is not None:
                self._cache[path] = data

    def _key(self, path: str) -> str:
        return f"{self.v2}/{path}" if self.v2 else path

    def _get(self, path: str, limit: int | None = None) -> bytes | None:
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(path)}
        if limit is not None:
            kw["Range"] = f"bytes=0-{limit - 1}"
        try:
            r = self.client.get_object(**kw)
            return cast(bytes, r["Body"].read())
        except Exception as e:
            code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "InvalidRange"):
                return None if code != "InvalidRange" else b""
            raise SourceUnreadable(
                f"s3://{self.bucket}/{self._key(path)}", f"unreadable ({code or e})"
            ) from None

    # -- TreeFS ------------------------------------------------------------------------------------
    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        return list(self._dirs.get(path, {}).items())

    def read(self, path: str, limit: int) -> bytes | None:
        got = self.read_extent(path, limit)
        return got[0] if got is not None else None

    def read_extent(self, path: str, limit: int) -> tuple[bytes, Extent] | None:
        size = self._files.get(path)
        if size is None:
            return None
        data = self._cache.get(path)
        if data is None:
            data = self._get(path, min(limit, size) if size else None) or b""
        return data[:limit], Extent(self.uri(path), 0, size)

    def extent(self, path: str) -> Extent | None:
        size = self._files.get(path)
        return Extent(self.uri(path), 0, size) if size is not None else None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- content -----------------------------------------------------------------------------------
    def uri(self, path: str) -> str:
        return f"s3://{self.bucket}/{self._key(path)}"

    def _path_of(self, uri: str) -> str:
        key = uri[len(f"s3://{self.bucket}/") :]
        return self._rel(key)

    def fetch(self, uri: str) -> bytes:
        """An object's bytes, whole (a small blob, a manifest not kept)."""
        path = self._path_of(uri)
        data = self._cache.get(path)
        if data is None:
            data = self._get(path)
        if data is None:
            raise SourceUnreadable(uri, "removed from the bucket while the export ran")
        return data

    def open(self, uri: str) -> BinaryIO:
        """An object's bytes as a stream, read once by the writer, which hashes it.  One above
        :data:`RANGED` comes in parallel ranged GETs (:class:`_Ranged`): one connection to S3 rarely
        fills the link."""
        key = self._key(self._path_of(uri))
        size = self._files.get(self._path_of(uri), 0)
        if size > RANGED:
            return cast(BinaryIO, _Ranged(self.client, self.bucket, key, size, uri))
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as e:
            raise _s3_error(e, uri) from None
        return cast(BinaryIO, r["Body"])


#: objects above this are read in parts of PART bytes, AHEAD parts at a time (at most 64 MiB held)
RANGED = 32 << 20
PART = 16 << 20
AHEAD = 4


class _Ranged:
    """An object read in parallel ranged GETs, handed out in order: no temp copy, bounded memory."""

    def __init__(self, client: Any, bucket: str, key: str, size: int, uri: str) -> None:
        self.client, self.bucket, self.key, self.size, self.uri = client, bucket, key, size, uri
        self._pool = ThreadPoolExecutor(AHEAD, thread_name_prefix="ferry-s3range")
        self._parts = [(at, min(size, at + PART) - 1) for at in range(0, size, PART)]
        self._next = 0
        self._jobs: list[Any] = []
        self._cur = b""  # the part being handed out, from _pos on
        self._pos = 0
        self._fill()

    def _get(self, first: int, last: int) -> bytes:
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={first}-{last}")
            return bytes(r["Body"].read())
        except Exception as e:
            raise _s3_error(e, self.uri) from None

    def _fill(self) -> None:
        while len(self._jobs) < AHEAD and self._next < len(self._parts):
            self._jobs.append(self._pool.submit(self._get, *self._parts[self._next]))
            self._next += 1

    def read(self, n: int = -1) -> bytes:
        out: list[bytes] = []
        want = self.size if n < 0 else n
        while want > 0:
            if self._pos >= len(self._cur):
                if not self._jobs:
                    break
                self._cur, self._pos = self._jobs.pop(0).result(), 0
                self._fill()
                continue
            piece = self._cur[self._pos : self._pos + want]
            self._pos += len(piece)
            want -= len(piece)
            out.append(piece)
        return b"".join(out)

    def close(self) -> None:
        for j in self._jobs:
            j.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> _Ranged:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["S3FS", "S3Config", "S3Error", "list_objects", "list_tree", "parse_s3_url", "s3_client"]
