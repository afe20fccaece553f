"""Test helpers around the real registry and skopeo."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ferry.localregistry import OCI_ACCEPT, REGISTRY_BIN, Registry, free_port

__all__ = ["OCI_ACCEPT", "REGISTRY_BIN", "Registry", "free_port", "push_layout", "skopeo"]


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["skopeo", "--insecure-policy", *args]
    env = dict(os.environ, HOME=os.environ.get("HOME", "/tmp"))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {p.stderr.strip()}")
    return p


def push_layout(layout: Path, ref: str, registry: Registry, dest: str, *, fmt: str | None = None) -> None:
    """skopeo copy --all an image of an OCI layout into the registry (plain http)."""
    args = ["copy", "--all", "--dest-tls-verify=false", "--preserve-digests"]
    if fmt:
        args = ["copy", "--all", "--dest-tls-verify=false", "--format", fmt]
    skopeo(*args, f"oci:{layout}:{ref}", f"docker://{registry.host}/{dest}")
