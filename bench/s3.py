"""Export from S3: the generated tree uploaded into a bucket of the real S3 server (../shared/s3, Ceph RGW)
as Distribution's s3 driver lays it out, then ``ferry export s3://…`` against ferry's export of the same
tree from disk and against the route users have today, ``skopeo sync --all --preserve-digests`` from a
docker-registry on that bucket into ``dir:`` folders (goal: ferry >= 3x faster).  MB/s, objects/s,
peak RSS."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.api import _repos, _run, _sync_yaml, _tags, skopeo_sync_dir
from ferry.localregistry import Registry
from tests.support.s3 import s3_server


def run(tree: Path, work: Path, *, skopeo: bool = True, budget: float | None = None) -> dict[str, object]:
    ferry = shutil.which("ferry") or "ferry"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = [p for p in (tree / "docker").rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files if p.name == "data")
    result: dict[str, object] = {"objects": len(files), "bytes": size}
    with s3_server() as s3:
        client = s3.client()
        client.create_bucket(Bucket="bench")

        def put(p: Path) -> None:
            client.put_object(Bucket="bench", Key=f"prod/{p.relative_to(tree)}", Body=p.read_bytes())

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(put, files))
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        env.update(s3.env())
        out = work / "b.tar"
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            s3_s, s3_rss = _run([ferry, "export", "s3://bench/prod", "-o", str(out), "-q"])
            out.unlink()
            subprocess.run(["sync"], check=True)
            disk_s, _ = _run([ferry, "export", str(tree), "-o", str(out), "-q"])
            out.unlink()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        result.update(
            s3_export_s=round(s3_s, 3),
            s3_export_MBps=round(size / 1e6 / s3_s, 1),
            s3_objects_per_s=round(len(files) / s3_s),
            s3_export_peak_MiB=round(s3_rss, 1),
            disk_export_s=round(disk_s, 3),
            s3_vs_disk=round(s3_s / disk_s, 3),
        )
        if skopeo:
            driver = s3.registry_driver("bench")
            with Registry(work / "unused", s3=driver) as reg:
                cfg = _sync_yaml(work, reg.host, _repos(tree))
                sk, took = skopeo_sync_dir(cfg, work / "dirs", _tags(tree), budget)
            result.update(sk)
            # a lower bound of skopeo's time is a lower bound of the speed-up
            result[
                "ferry_speedup_vs_skopeo" if sk["skopeo_finished"] else "ferry_speedup_vs_skopeo_at_least"
            ] = round(took / s3_s, 2)
    shutil.rmtree(work, ignore_errors=True)
    return result


__all__ = ["run"]
