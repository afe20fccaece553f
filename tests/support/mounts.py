"""Real mounts for filesystem cases: a tmpfs mounted for one test and unmounted after it, even on failure."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def unavailable(reason: str) -> None:
    """A real component a test needs is missing here: skipped on a developer's machine, a failure in CI
    (where a skip would hide a missing install step)."""
    if os.environ.get("CI"):
        pytest.fail(f"not available in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``) at ``path``; skips the test with the reason when not root."""
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


__all__ = ["tmpfs", "unavailable"]
