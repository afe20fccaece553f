"""Docker Distribution's storage layout as typed path specs, after distribution's registry/storage/paths.go.

One function, :meth:`StorageLayout.path`, maps every spec to a path below a root that is a parameter, so
the same code reads a registry's tree (export) and writes Harbor 1.x storage (restore).

    <root>/docker/registry/v2/
        blobs/<alg>/<hex[:2]>/<hex>/data
        repositories/<name>/_layers/<alg>/<hex>/link
        repositories/<name>/_manifests/revisions/<alg>/<hex>/link
        repositories/<name>/_manifests/tags/<tag>/current/link
        repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link

A link file holds exactly ``<alg>:<hex>`` with no newline.  Repository names may nest, and a repository may
sit inside another (``team/sub`` and ``team/sub/app``); the leading ``_`` of ``_layers``/``_manifests``/
``_uploads`` cannot start a name component, so the two never collide.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from ..digest import Digest

V2_SUFFIX = "docker/registry/v2"

# distribution/reference grammar (reference/regexp.go), one path component and the whole name
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
COMPONENT_RE = re.compile(rf"^{_COMPONENT}$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
#: distribution refuses names longer than this (reference.NameTotalLengthMax)
NAME_MAX = 255


def repository_problem(name: str) -> str | None:
    """Why a registry cannot hold a repository of this name, or None when it can.

    The one rule for names, applied by every writer (export leaves such a repository out and says why)
    and every reader (a bundle index naming one is refused), so that ferry never writes what it would
    refuse to read."""
    if not isinstance(name, str):
        return "the repository name is not a string"
    if len(name) > NAME_MAX:
        return f"invalid repository name (longer than {NAME_MAX} characters)"
    if not REPOSITORY_RE.fullmatch(name):
        return (
            "invalid repository name (components of lower-case letters and digits, "
            "separated by '.', '_', '__' or '-')"
        )
    return None


def tag_problem(tag: str) -> str | None:
    """Why a registry cannot serve a tag of this name, or None when it can (the same rule everywhere)."""
    if not isinstance(tag, str):
        return "the tag is not a string"
    if not TAG_RE.fullmatch(tag):
        if len(tag) > 128:
            return "invalid tag name (longer than 128 characters)"
        return "invalid tag name (letters, digits, '_', '.' and '-', not starting with '.' or '-')"
    return None


def valid_repository(name: str) -> bool:
    return repository_problem(name) is None


def valid_tag(tag: str) -> bool:
    return isinstance(tag, str) and TAG_RE.fullmatch(tag) is not None


@dataclass(frozen=True)
class BlobsDir:
    """``blobs/<algorithm>``: two-character prefix folders, then one folder per blob."""

    algorithm: str


@dataclass(frozen=True)
class BlobData:
    digest: Digest


@dataclass(frozen=True)
class RepositoriesRoot:
    pass


@dataclass(frozen=True)
class RepositoryDir:
    repo: str


@dataclass(frozen=True)
class LayerLink:
    repo: str
    digest: Digest


@dataclass(frozen=True)
class ManifestRevisionsDir:
    repo: str


@dataclass(frozen=True)
class ManifestRevisionLink:
    repo: str
    digest: Digest


@dataclass(frozen=True)
class TagsDir:
    repo: str


@dataclass(frozen=True)
class TagCurrentLink:
    repo: str
    tag: str


@dataclass(frozen=True)
class TagIndexEntryLink:
    repo: str
    tag: str
    digest: Digest


PathSpec = Union[
    BlobsDir,
    BlobData,
    RepositoriesRoot,
    RepositoryDir,
    LayerLink,
    ManifestRevisionsDir,
    ManifestRevisionLink,
    TagsDir,
    TagCurrentLink,
    TagIndexEntryLink,
]

# one entry per spec, keyed by its class: distribution's pathFor switch (a dict, as Python 3.9 has no match)
_RELATIVE: dict[type, Callable[[Any], str]] = {
    BlobsDir: lambda s: f"blobs/{s.algorithm}",
    BlobData: lambda s: f"blobs/{s.digest.algorithm}/{s.digest.hex[:2]}/{s.digest.hex}/data",
    RepositoriesRoot: lambda s: "repositories",
    RepositoryDir: lambda s: f"repositories/{s.repo}",
    LayerLink: lambda s: f"repositories/{s.repo}/_layers/{s.digest.algorithm}/{s.digest.hex}/link",
    ManifestRevisionsDir: lambda s: f"repositories/{s.repo}/_manifests/revisions",
    ManifestRevisionLink: lambda s: (
        f"repositories/{s.repo}/_manifests/revisions/{s.digest.algorithm}/{s.digest.hex}/link"
    ),
    TagsDir: lambda s: f"repositories/{s.repo}/_manifests/tags",
    TagCurrentLink: lambda s: f"repositories/{s.repo}/_manifests/tags/{s.tag}/current/link",
    TagIndexEntryLink: lambda s: (
        f"repositories/{s.repo}/_manifests/tags/{s.tag}/index/{s.digest.algorithm}/{s.digest.hex}/link"
    ),
}


@dataclass(frozen=True)
class StorageLayout:
    """Maps path specs to paths below ``v2`` (the ``docker/registry/v2`` directory).

    Paths are plain strings, as in distribution: the walk of a 5000-tag tree builds some 10^5 of them, and
    pathlib objects cost more than the file system calls they name.  With ``v2=""`` paths are relative.
    """

    v2: str = ""

    @classmethod
    def for_root(cls, root: str | os.PathLike[str]) -> StorageLayout:
        """The layout of a registry whose ``rootdirectory`` is ``root`` (Harbor 1.x: /data/registry)."""
        return cls(f"{os.fspath(root).rstrip('/')}/{V2_SUFFIX}")

    def path(self, spec: PathSpec) -> str:
        rel = _RELATIVE[type(spec)](spec)
        return f"{self.v2}/{rel}" if self.v2 else rel


def link_target(content: bytes) -> str | None:
    """The digest a link file names, as text, or None when it is no strict link: read as the registry
    reads it (no newline, lower-case hex), checked by the one digest validator, and no Digest built (a
    walk reads two links per tag)."""
    text = content.decode("ascii", errors="replace")
    return text if Digest.is_valid(text) else None


__all__ = [
    "NAME_MAX",
    "V2_SUFFIX",
    "BlobData",
    "BlobsDir",
    "LayerLink",
    "ManifestRevisionLink",
    "ManifestRevisionsDir",
    "PathSpec",
    "RepositoriesRoot",
    "RepositoryDir",
    "StorageLayout",
    "TagCurrentLink",
    "TagIndexEntryLink",
    "TagsDir",
    "link_target",
    "repository_problem",
    "tag_problem",
    "valid_repository",
    "valid_tag",
]
