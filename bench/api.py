"""Reading a registry over the V2 API, and registry to registry.

* API export: ``ferry export http://REGISTRY -o B`` against ``skopeo sync --all --preserve-digests`` from
  the registry into ``dir:`` folders (the nearest thing users have) and against ferry's storage-tree
  export of the same tree; MB/s and peak RSS.
* copy: ``ferry copy http://SRC http://DST`` against ``skopeo sync --all --preserve-digests`` registry to
  registry, each into a fresh registry (goal <= 0.5x skopeo's time).

The source is a real docker-registry serving the generated tree (read only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ferry.localregistry import Registry


def _repos(tree: Path) -> list[str]:
    base = tree / "docker/registry/v2/repositories"
    return sorted(str(p.parent.relative_to(base)) for p in base.glob("**/_manifests"))


def _sync_yaml(work: Path, host: str, repos: list[str]) -> Path:
    lines = [f"{host}:", "  tls-verify: false", "  images:"]
    lines += [f"    {r}: []" for r in repos]  # every tag
    path = work / "sync.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS MiB of the process tree's largest member).  stderr goes to a file: skopeo
    writes a line per blob, which fills a pipe nobody reads until it exits."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"bench command failed: {' '.join(cmd)}\n{err.read().decode()[-3000:]}")
    return dt, ru.ru_maxrss / 1024


def run(
    tree: Path, work: Path, *, runs: int = 3, skopeo: bool = True, copy: bool = True
) -> dict[str, object]:
    ferry = shutil.which("ferry") or "ferry"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    repos = _repos(tree)
    size = sum(p.stat().st_size for p in (tree / "docker/registry/v2/blobs").glob("**/data"))
    result: dict[str, object] = {"repositories": len(repos), "bytes": size}
    out = work / "b.tar"

    def fresh(path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        subprocess.run(["sync"], check=True)

    with Registry(tree) as src:
        api, rss = [], []
        for _ in range(runs):
            fresh(out)
            s, m = _run([ferry, "export", src.url, "-o", str(out), "-q"])
            api.append(s)
            rss.append(m)
        tree_s = []
        for _ in range(runs):
            fresh(out)
            tree_s.append(_run([ferry, "export", str(tree), "-o", str(out), "-q"])[0])
        result.update(
            api_export_s=round(min(api), 3),
            api_export_MBps=round(size / 1e6 / min(api), 1),
            api_export_peak_MiB=round(max(rss), 1),
            tree_export_s=round(min(tree_s), 3),
            api_vs_tree_export=round(min(api) / min(tree_s), 3),
        )
        if skopeo:
            dirs = work / "dirs"
            fresh(dirs)
            cfg = _sync_yaml(work, src.host, repos)
            s, m = _run(
                ["skopeo", "--insecure-policy", "sync", "--all", "--preserve-digests", "--src", "yaml",
                 "--dest", "dir", str(cfg), str(dirs)]
            )  # fmt: skip
            fresh(dirs)
            result.update(
                skopeo_sync_dir_s=round(s, 3),
                skopeo_sync_dir_peak_MiB=round(m, 1),
                api_export_vs_skopeo=round(min(api) / s, 3),
            )
        if copy:
            with Registry(work / "dst-ferry") as dst:
                s, m = _run([ferry, "copy", src.url, dst.url, "-q", "--no-harbor"])
            with Registry(work / "dst-skopeo") as dst:
                cfg = _sync_yaml(work, src.host, repos)
                t, _ = _run(
                    ["skopeo", "--insecure-policy", "sync", "--all", "--preserve-digests", "--src", "yaml",
                     "--dest", "docker", "--dest-tls-verify=false", str(cfg), dst.host]
                )  # fmt: skip
            result.update(
                copy_s=round(s, 3),
                copy_peak_MiB=round(m, 1),
                skopeo_sync_registry_s=round(t, 3),
                copy_vs_skopeo=round(s / t, 3),
            )
    shutil.rmtree(work, ignore_errors=True)
    return result


__all__ = ["run"]
