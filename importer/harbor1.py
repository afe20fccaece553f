"""Telling Harbor 1.x about storage that appeared behind its back.

Harbor 1.x keeps three views of the registry, and each must learn about restored images:

* the registry's blob-descriptor cache in Redis DB 1 (``blobs::*``, ``repository::*``; core's
  ``upload:*:size`` quota keys live there too): stale entries make the registry trust what it cached over
  what is on disk, so they are deleted (with Harbor stopped, removing the dump file does the same);
* Harbor's database: ``repository`` rows come only from push notifications or ``POST
  /api/internal/syncregistry``, which adds repositories only for *existing* projects, so projects are
  created first (``POST /api/projects``, 409 = exists);
* quota (1.9+): ``POST /api/internal/syncquota`` recounts usage.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ferry.shared.errors import FerryError, UsageError
from ferry.shared.manifest import INDEX_TYPES, MediaType
from ferry.shared.model import Catalog

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

#: Harbor's project-name rule, the same in 1.x and 2.x (src/pkg/project/manager.go)
PROJECT_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
REGISTRY_CACHE_PATTERNS = ("blobs::*", "repository::*", "upload:*:size")
HARBOR_REGISTRY_DB = 1


class HarborError(FerryError):
    code = "harbor"


class RedisError(FerryError):
    code = "redis"
    default_hint = "Check --redis-url (Harbor 1.x: redis://<redis host>:6379; the registry cache is DB 1)."


REDIS_SCHEMES = ("redis", "rediss", "unix")


def check_redis_url(url: str) -> None:
    """Refuse a URL the Redis client cannot use, before anything is written."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in REDIS_SCHEMES:
        raise UsageError(
            f"--redis-url {url!r}: not a Redis URL",
            hint="Use redis://HOST:6379 (rediss:// for TLS, unix:///path/to/socket); Harbor's registry cache is DB 1.",
        )


def flush_registry_cache(url: str) -> int:
    """Delete the registry's cache keys from Redis DB 1 (whatever DB the URL names); returns how many."""
    import redis  # only restores that talk to Redis pay for importing the client

    from ferry.shared.registry.client import redact

    client = redis.Redis.from_url(url, db=HARBOR_REGISTRY_DB, socket_timeout=10, socket_connect_timeout=10)
    deleted = 0
    try:
        for pattern in REGISTRY_CACHE_PATTERNS:
            batch: list[bytes] = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += int(client.delete(*batch))
                    batch = []
            if batch:
                deleted += int(client.delete(*batch))
    except redis.RedisError as e:
        raise RedisError(f"redis at {redact(url)}: {e}") from None
    finally:
        client.close()
    log.info("deleted %d registry cache keys from redis DB %d", deleted, HARBOR_REGISTRY_DB)
    return deleted


def remove_dump(path: Path) -> bool:
    """Remove Redis's dump file (Harbor stopped: the cache then starts empty). True if it existed."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError as e:
        raise RedisError(f"{path}: cannot remove the redis dump ({e.strerror})") from None


@dataclass(frozen=True)
class HarborAccess:
    url: str
    username: str
    password: str = field(repr=False)
    verify: bool | str = True


@dataclass(frozen=True)
class HarborSync:
    version: str
    created: tuple[str, ...]
    existing: tuple[str, ...]
    synced_registry: bool
    synced_quota: bool


def projects_of(repositories: list[str]) -> tuple[list[str], list[str]]:
    """(projects to ensure, repositories Harbor cannot list because they have no valid project)."""
    projects: dict[str, None] = {}
    orphans = []
    for repo in repositories:
        project, sep, _ = repo.partition("/")
        if not sep or not PROJECT_RE.fullmatch(project):
            orphans.append(repo)
        else:
            projects.setdefault(project, None)
    return list(projects), orphans


def api_limits(catalog: Catalog) -> tuple[str, ...]:
    """What Harbor 1.8-1.10's own API, UI and quota cannot describe among these images, said once after a
    restore: its /v2 serves indexes and OCI manifests exactly (``skopeo copy --all`` pulls every child),
    but its tag API lists OCI tags with an empty digest and a manifest list as its amd64 child, and its
    quota counts OCI tags as 0 bytes."""
    oci = lists = 0
    for image in catalog.images():
        if image.tag is None:
            continue
        if image.media_type in INDEX_TYPES:
            lists += 1
        elif image.media_type == MediaType.OCI_MANIFEST:
            oci += 1
    out = []
    if lists:
        out.append(
            f"{lists} tag(s) are multi-arch indexes: Harbor 1.x's UI and tag API show each as its amd64 child; "
            "its /v2 serves the index and every child exactly"
        )
    if oci:
        out.append(
            f"{oci} tag(s) are OCI manifests: Harbor 1.x's UI and tag API list them with an empty digest and "
            "its quota counts them as 0 bytes; its /v2 serves them exactly"
        )
    return tuple(out)


def sync_harbor(access: HarborAccess, projects: list[str]) -> HarborSync:
    import httpx  # only restores that talk to Harbor pay for importing the HTTP client

    from ferry.shared.registry.client import NoCookies

    with httpx.Client(
        base_url=access.url.rstrip("/"),
        auth=(access.username, access.password),
        verify=access.verify,
        timeout=60,
        follow_redirects=False,
    ) as client:
        # a client carrying Harbor's session cookie is treated as a browser and must pass CSRF checks
        client.cookies.jar.set_policy(NoCookies())
        try:
            info = client.get("/api/systeminfo")
            _check(info, "GET /api/systeminfo")
            version = str(info.json().get("harbor_version", ""))
            created, existing = [], []
            for p in projects:
                r = client.post("/api/projects", json={"project_name": p, "metadata": {"public": "false"}})
                if r.status_code == 409:
                    existing.append(p)
                else:
                    _check(r, f"POST /api/projects ({p})")
                    created.append(p)
            _check(client.post("/api/internal/syncregistry"), "POST /api/internal/syncregistry")
            quota = _minor(version) >= 9
            if quota:
                _check(client.post("/api/internal/syncquota"), "POST /api/internal/syncquota")
        except httpx.HTTPError as e:
            raise HarborError(
                f"Harbor at {access.url}: {e}", hint="Check --harbor-url and that Harbor is up."
            ) from None
    return HarborSync(version, tuple(created), tuple(existing), True, quota)


def _minor(version: str) -> int:
    m = re.match(r"v?1\.(\d+)", version)
    return int(m.group(1)) if m else 0


def _check(r: httpx.Response, what: str) -> None:
    if r.status_code in (200, 201, 202, 204):
        return
    if r.status_code in (401, 403):
        raise HarborError(
            f"Harbor refused {what}: {r.status_code} (needs a system administrator)",
            hint="Give an admin account: --harbor-user and the password on stdin or in FERRY_HARBOR_PASSWORD.",
        )
    raise HarborError(f"Harbor answered {what} with {r.status_code}: {r.text[:200]}")


def next_steps(root: str, projects: list[str], *, redis_done: bool) -> list[str]:
    """What the operator still has to do when ferry was not given Harbor's URL (or Redis)."""
    steps = []
    if not redis_done:
        steps.append(
            "Clear the registry cache: with Harbor stopped, delete the Redis dump (ferry restore --redis-dump "
            "/data/redis/dump.rdb), or with it running: ferry restore … --redis-url redis://<redis>:6379"
        )
    steps.append("Restart Harbor: cd <harbor install dir> && docker-compose down && docker-compose up -d")
    if projects:
        steps.append(
            "Create the projects (Harbor only lists repositories of existing projects): "
            + ", ".join(projects)
            + " — e.g. curl -u admin -X POST -H 'Content-Type: application/json' "
            '-d \'{"project_name":"NAME","metadata":{"public":"false"}}\' https://<harbor>/api/projects'
        )
    steps.append("Resync Harbor's database: curl -u admin -X POST https://<harbor>/api/internal/syncregistry")
    steps.append(
        "Harbor 1.9/1.10: recount quotas: curl -u admin -X POST https://<harbor>/api/internal/syncquota"
    )
    steps.append(
        f"(or run ferry restore again with --harbor-url https://<harbor>; it skips what is already in {root})"
    )
    return steps


__all__ = [
    "HarborAccess",
    "HarborError",
    "HarborSync",
    "RedisError",
    "flush_registry_cache",
    "next_steps",
    "projects_of",
    "remove_dump",
    "sync_harbor",
]
