"""``ferry demo``: the whole pipeline on an embedded sample registry, in a temp dir, in a few seconds.

1. build a sample Docker Distribution storage tree (a multi-arch index, nested and prefix repositories,
   shared layers, a tag named ``current``) with the same storage-tree writer ``ferry restore`` uses;
2. ``ferry export`` it into one bundle;  3. ``ferry verify`` the bundle;  4. ``ferry inspect`` it;
5. ``ferry restore`` it into a Harbor-1.x-style root and, when docker-registry is installed, serve that
   root with a real registry and check every tag's digest;  6. ``ferry push`` it into that registry's
   sibling, a fresh empty registry, and check again.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.importer.inspect import run as inspect
from ferry.importer.push import PushOptions
from ferry.importer.push import run as push
from ferry.importer.restore import RestoreOptions
from ferry.importer.restore import run as restore
from ferry.importer.verify import VerifyOptions
from ferry.importer.verify import run as verify
from ferry.shared.memory import MemoryRegistry, MemorySource, sample_layer
from ferry.shared.model import Catalog
from ferry.shared.storage.reader import Selection
from ferry.shared.storage.writer import StorageTreeSink
from ferry.shared.transfer import copy

from . import render
from .localregistry import REGISTRY_BIN, Registry


def build_sample(root: Path) -> Catalog:
    m = MemoryRegistry()
    base = sample_layer(1, 16384)  # every image shares this base layer
    amd = m.image("library/alpine", [base, sample_layer(2)], arch="amd64")
    arm = m.image("library/alpine", [base, sample_layer(3)], arch="arm64")
    m.index("library/alpine", [amd, arm], tag="3.19")
    m.image("team/backend/api", [base, sample_layer(4)], tag="1.0")
    m.image("team/backend/api", [base, sample_layer(4), sample_layer(5)], tag="1.1")
    # a repository inside another one, with a tag named like a storage-layout folder
    m.image("team/backend/api/worker", [base, sample_layer(6)], tag="current")
    source = MemorySource(m)
    copy(source, StorageTreeSink(str(root), owner=None))
    return source.catalog


def _served_ok(root: Path, catalog: Catalog) -> int:
    with Registry(root) as reg:
        n = 0
        for repo in catalog.repositories:
            for tag, digest in repo.tags.items():
                status, got, _ = reg.manifest(repo.name, tag)
                if status != 200 or got != digest:
                    raise SystemExit(
                        f"demo failed: {repo.name}:{tag} served {status} {got}, expected {digest}"
                    )
                n += 1
        return n


def run(keep: bool = False) -> None:
    work = Path(tempfile.mkdtemp(prefix="ferry-demo-"))

    def say(text: str) -> None:
        render.out.print(text, soft_wrap=True)

    try:
        say(f"[bold]ferry demo[/] in {work}\n")
        tree = work / "old-registry"
        catalog = build_sample(tree)
        say(f"1. sample registry storage tree: {tree}/docker/registry/v2")
        say(
            f"   {len(catalog.repositories)} repositories, {sum(len(r.tags) for r in catalog.repositories)} tags, "
            f"{len(catalog.manifests)} manifests, {len(catalog.blobs)} blobs"
        )

        bundle = work / "registry.tar"
        e = export(ExportOptions(root=tree, output=bundle, selection=Selection(untagged=True)))
        say(f"\n2. ferry export {tree} -o {bundle}")
        say(
            f"   {e.tags} tags, {e.manifests} manifests, {e.blobs} blobs, bundle {render.human(e.bundle_bytes)}"
        )

        v = verify(VerifyOptions(path=bundle))
        say(f"\n3. ferry verify {bundle}\n   ok: {v.members} members, every xxh3 and sha256 checked")

        say(f"\n4. ferry inspect {bundle}")
        for image in inspect(bundle).catalog.images():
            say(f"   {image.ref:<40} {image.digest[:19]}…  {image.media_type.rsplit('/', 1)[-1]}")

        harbor_root = work / "harbor" / "data" / "registry"
        r = restore(RestoreOptions(bundle=str(bundle), root=harbor_root, owner=None))
        say(f"\n5. ferry restore {bundle} --root {harbor_root} --owner keep")
        say(
            f"   {r.blobs_written} blobs written, {r.tags_written} tags; (as root, the default --owner is Harbor's 10000:10000)"
        )
        if shutil.which(REGISTRY_BIN) or Path(REGISTRY_BIN).exists():
            n = _served_ok(harbor_root, catalog)
            say(
                f"   a real docker-registry serving {harbor_root} answers all {n} tags with the source digests ✓"
            )
            with Registry(work / "new-registry") as target:
                p = push(PushOptions(bundle=str(bundle), registry=target.url, harbor=False))
                say(f"\n6. ferry push {bundle} --registry {target.url}")
                say(
                    f"   {sum(i.status == 'pushed' for i in p.images)} images pushed: {p.blobs_uploaded} blobs "
                    f"uploaded, {p.blobs_mounted} mounted across repositories, {len(p.failed)} failed"
                )
            n = _served_ok(work / "new-registry", catalog)
            say(f"   the fresh registry serves all {n} tags with the source digests ✓")
            say(
                "\n[green]demo complete[/]: export → verify → inspect → restore → push, digests identical end to end."
            )
        else:
            say(
                "   (docker-registry is not installed: `make test` installs it; skipping the serve and push steps)"
            )
            say(
                "\n[green]demo complete[/]: export → verify → inspect → restore, digests identical end to end."
            )
    finally:
        if keep:
            say(f"\nkept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
