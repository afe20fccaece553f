"""The real S3 server of ../shared/s3/ (one-node Ceph radosgw), started for a test session and stopped
by its own stop script, also when the tests fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ferry.localregistry import free_port
from tests.support.mounts import unavailable

S3_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "s3"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def registry_driver(self, bucket: str, root: str = "/prod") -> dict[str, str]:
        """docker-registry's s3 storage driver settings for ``bucket`` under ``root`` on this server."""
        return {
            "regionendpoint": self.endpoint,
            "bucket": bucket,
            "accesskey": self.access_key,
            "secretkey": self.secret_key,
            "region": self.region,
            "rootdirectory": root,
        }

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )


@contextmanager
def s3_server() -> Iterator[S3Server]:
    if shutil.which("radosgw") is None or os.geteuid() != 0:
        unavailable("the S3 fixture needs radosgw (make test installs ceph) and root")
    state = Path(tempfile.mkdtemp(prefix="ferry-s3-"))
    env = dict(os.environ, S3_DIR=str(state / "s3"), S3_PORT=str(free_port()), MON_PORT=str(free_port()))
    try:
        p = subprocess.run(
            ["bash", str(S3_DIR / "start.sh")], env=env, capture_output=True, text=True, timeout=120
        )
        if p.returncode != 0:
            raise RuntimeError(f"the S3 fixture did not start: {p.stderr[-2000:]}")
        vals = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
        yield S3Server(vals["ENDPOINT"], vals["ACCESS_KEY"], vals["SECRET_KEY"], vals["REGION"])
    finally:
        subprocess.run(["bash", str(S3_DIR / "stop.sh")], env=env, capture_output=True, timeout=60)
        shutil.rmtree(state, ignore_errors=True)


__all__ = ["S3Server", "s3_server"]
