"""The one error hierarchy of ferry.

Every failure a user can cause or meet is a :class:`FerryError` with a stable kebab-case ``code`` (for
scripts and ``--json`` output), a one-line message, and a ``hint`` saying what to do next. The CLI catches
them once and prints them; anything else that escapes is a bug and keeps its traceback.

This module imports nothing from the project, so every layer can raise these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


class FerryError(Exception):
    """Base of every error ferry reports to a user."""

    code: ClassVar[str] = "ferry-error"
    exit_code: ClassVar[int] = 1
    default_hint: ClassVar[str] = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class UsageError(FerryError):
    """The command line asks for something impossible (bad option value, conflicting flags)."""

    code = "usage"
    exit_code = 2


class SourceNotFound(FerryError, FileNotFoundError):
    code = "source-not-found"
    exit_code = 2


class NotAStorageTree(FerryError):
    code = "not-a-storage-tree"
    exit_code = 2
    default_hint = (
        "Point ferry at the registry's root directory (the one holding docker/registry/v2), at that v2 "
        "directory, or at an uncompressed tar of either."
    )


class SourceUnreadable(FerryError):
    """A file or folder of the source exists but cannot be read (permissions, I/O error)."""

    code = "source-unreadable"
    default_hint = (
        "Run ferry as a user who can read the whole registry storage (root, or the registry's user)."
    )

    def __init__(self, path: str, reason: str, *, hint: str | None = None) -> None:
        self.path = path
        #: the short form, for a broken image's reason
        self.reason = reason
        super().__init__(f"{path}: {reason}", hint=hint)


class SourceChanged(FerryError):
    """The source changed under ferry while it read it (a blob deleted or truncated mid-copy)."""

    code = "source-changed"
    default_hint = (
        "Something (the registry's garbage collector, a cleanup job) changed the storage during the export: "
        "stop it, or export again; nothing was left behind."
    )


class OutputError(FerryError):
    """The output cannot be written (exists, unwritable directory, disk full)."""

    code = "output-error"


class DiskFull(OutputError):
    code = "disk-full"
    default_hint = "Free space on the target filesystem, or split the bundle with --volume-size."


@dataclass(frozen=True)
class BrokenImage:
    """One image that cannot be exported faithfully, and why."""

    repository: str
    tag: str | None
    digest: str
    reason: str
    #: digests (blobs or manifests) that are missing or whose bytes do not match
    missing: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        if self.tag is not None:
            return f"{self.repository}:{self.tag}"
        return f"{self.repository}@{self.digest}" if self.digest else self.repository


class BrokenImages(FerryError):
    """The source holds images whose manifests or blobs are missing or damaged."""

    code = "broken-images"
    default_hint = (
        "Repair the source, narrow the export with --exclude, or pass --skip-broken to export the rest."
    )

    def __init__(self, broken: tuple[BrokenImage, ...]) -> None:
        self.broken = broken
        n = len(broken)
        super().__init__(f"{n} broken image{'s' if n != 1 else ''} in the source; nothing was written")

    def to_dict(self) -> dict[str, object]:
        d = super().to_dict()
        d["broken"] = [
            {"image": b.ref, "digest": b.digest, "reason": b.reason, "missing": list(b.missing)}
            for b in self.broken
        ]
        return d


class DigestMismatch(FerryError):
    code = "digest-mismatch"

    def __init__(self, expected: str, actual: str, size: int, *, where: str = "") -> None:
        self.expected, self.actual, self.size = expected, actual, size
        at = f" in {where}" if where else ""
        super().__init__(f"content of {expected}{at} hashes to {actual} ({size} bytes)")


class BundleFormatError(FerryError):
    """The file is not a ferry bundle, or its structure is damaged (truncated, foreign, wrong order)."""

    code = "bundle-format"
    default_hint = "Copy the bundle again from its origin; `ferry verify` names what is damaged."

    def __init__(self, reason: str, *, offset: int | None = None, hint: str | None = None) -> None:
        self.offset = offset
        self.reason = reason
        at = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{reason}{at}", hint=hint)


class BundleVersionError(BundleFormatError):
    code = "bundle-version"

    def __init__(self, found: str, supported: str) -> None:
        super().__init__(
            f"bundle format version {found} is newer than this ferry understands (it reads {supported})",
            hint="Install a newer ferry on this side of the air gap.",
        )


class BundleDamaged(FerryError):
    """Verification found damaged members; ``problems`` names each one."""

    code = "bundle-damaged"
    default_hint = "Copy the damaged volume(s) again from the origin and re-run `ferry verify`."

    def __init__(
        self, summary: str, problems: tuple[dict[str, object], ...], *, hint: str | None = None
    ) -> None:
        self.problems = problems
        super().__init__(summary, hint=hint)

    def to_dict(self) -> dict[str, object]:
        d = super().to_dict()
        d["problems"] = list(self.problems)
        return d


class BaseMissing(FerryError):
    """A delta bundle relies on content its bases carried, and the target does not have it."""

    code = "base-missing"

    def __init__(self, summary: str, missing: tuple[dict[str, object], ...], *, hint: str) -> None:
        #: {digest, where (target repository or None for blob data), images, base, baseCreated}
        self.missing = missing
        super().__init__(summary, hint=hint)

    def to_dict(self) -> dict[str, object]:
        d = super().to_dict()
        d["missing"] = list(self.missing)
        return d


@dataclass(frozen=True)
class Diagnostic:
    """One entry of a registry's ``{"errors": [...]}`` body (distribution-spec error codes)."""

    code: str
    message: str = ""
    detail: str = ""


#: statuses worth another try: the registry (or something in front of it) was busy or broken for a moment
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class RegistryError(FerryError):
    """A registry answered with an error (or could not be reached)."""

    code = "registry"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str = "",
        url: str = "",
        diagnostics: tuple[Diagnostic, ...] = (),
        retry_after: float | None = None,
        transport: bool = False,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.method = method
        self.url = url  # redacted: never carries credentials or tokens
        self.diagnostics = diagnostics
        self.retry_after = retry_after
        self.transport = transport
        super().__init__(message, hint=hint)

    @property
    def retryable(self) -> bool:
        return self.transport or (self.status in RETRYABLE_STATUS)

    @property
    def spec_codes(self) -> tuple[str, ...]:
        return tuple(d.code for d in self.diagnostics)

    def to_dict(self) -> dict[str, object]:
        d = super().to_dict()
        d.update(
            status=self.status, method=self.method, url=self.url, errors=[vars(x) for x in self.diagnostics]
        )
        return d


class AuthError(RegistryError):
    code = "registry-auth"
    default_hint = "Check the credentials (--username with --password-stdin, FERRY_REGISTRY_USERNAME/PASSWORD, or docker login)."


class RegistryUnreachable(RegistryError):
    code = "registry-unreachable"
    default_hint = "Check the registry URL, DNS, the network path and TLS (--ca-cert, --insecure)."


__all__ = [
    "RETRYABLE_STATUS",
    "AuthError",
    "BaseMissing",
    "BrokenImage",
    "BrokenImages",
    "BundleDamaged",
    "BundleFormatError",
    "BundleVersionError",
    "Diagnostic",
    "DigestMismatch",
    "DiskFull",
    "FerryError",
    "NotAStorageTree",
    "OutputError",
    "RegistryError",
    "RegistryUnreachable",
    "SourceChanged",
    "SourceNotFound",
    "SourceUnreadable",
    "UsageError",
]
