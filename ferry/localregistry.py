"""A real Docker Distribution (Debian's docker-registry 2.8) on 127.0.0.1, for the demo, tests and bench."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"

OCI_ACCEPT = ",".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def s3_storage(driver: dict[str, str]) -> str:
    """The ``storage`` lines of a docker-registry config for the s3 driver (``driver``: regionendpoint,
    bucket, accesskey, secretkey, region, rootdirectory) against a plain-HTTP S3 server, blobs served by
    the registry itself (no redirect to the S3 server)."""
    return (
        "  s3: {"
        + ", ".join(f"{k}: {v}" for k, v in driver.items())
        + ", secure: false, v4auth: true}\n  redirect: {disable: true}"
    )


def wait_until_serving(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 20) -> None:
    """Return once the docker-registry ``proc`` answers ``url``/v2/ (a 401 under auth counts: it is up);
    raise with the end of its ``log`` when it exits or ``seconds`` pass first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{url}/v2/", timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not start in {seconds:.0f} s: {log.read_text()[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    root: Path  # the registry's rootdirectory (holds docker/registry/v2)
    schema1: bool = False
    htpasswd: Path | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_config: str = ""
    allow_foreign_urls: bool = True
    #: log every request (method, path, status) to ``log_path``: lets a test count what reached it
    access_log: bool = False
    #: the s3 driver instead of the filesystem: regionendpoint, bucket, accesskey, secretkey, region,
    #: rootdirectory (``root`` then only holds nothing)
    s3: dict[str, str] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def config_text(self) -> str:
        lines = [
            "version: 0.1",
            f"log: {{level: {os.environ.get('FERRY_REGISTRY_LOG', 'error')}, "
            f"accesslog: {{disabled: {'false' if self.access_log else 'true'}}}}}",
            "storage:",
            s3_storage(self.s3) if self.s3 else f"  filesystem: {{rootdirectory: {self.root}}}",
            "  delete: {enabled: true}",
            f"http: {{addr: '127.0.0.1:{self.port}'}}",
        ]
        if self.allow_foreign_urls:
            # foreign (non-distributable) layers are refused unless their URLs are allowed explicitly
            lines.append("validation: {manifests: {urls: {allow: ['^https?://']}}}")
        if self.schema1:
            lines.append("compatibility: {schema1: {enabled: true}}")
        if self.htpasswd:
            lines.append(f"auth: {{htpasswd: {{realm: ferry-test, path: {self.htpasswd}}}}}")
        return "\n".join(lines) + "\n" + self.extra_config

    def start(self) -> Registry:
        self.root.mkdir(parents=True, exist_ok=True)
        self._cfg_dir = Path(tempfile.mkdtemp(prefix="ferry-registry-cfg-"))
        cfg = self._cfg_dir / "config.yml"
        cfg.write_text(self.config_text())
        self.config_path = cfg
        # the log goes to a file: a pipe nobody reads fills up (every 404 is logged) and blocks the registry
        self.log_path = self._cfg_dir / "registry.log"
        with open(self.log_path, "wb") as log:
            # the access log goes to stdout
            # AWS_CA_BUNDLE in the environment makes the s3 driver panic at start
            env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
            self.proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(cfg)],
                env=env,
                stdout=log if self.access_log else subprocess.DEVNULL,
                stderr=log,
            )
        wait_until_serving(self.url, self.proc, self.log_path)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if getattr(self, "_cfg_dir", None) is not None:
            shutil.rmtree(self._cfg_dir, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the registry itself serves ---------------------------------------------------------
    def _get(
        self, path: str, accept: str | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(f"{self.url}{path}", method=method)
        if accept:
            req.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def catalog(self) -> list[str]:
        _, _, body = self._get("/v2/_catalog?n=1000")
        return list(json.loads(body)["repositories"])

    def tags(self, repo: str) -> list[str]:
        status, _, body = self._get(f"/v2/{repo}/tags/list")
        return list(json.loads(body).get("tags") or []) if status == 200 else []

    def manifest(self, repo: str, ref: str) -> tuple[int, str, bytes]:
        """(status, Docker-Content-Digest, body) of GET manifest with every modern media type accepted."""
        status, headers, body = self._get(f"/v2/{repo}/manifests/{ref}", OCI_ACCEPT)
        return status, headers.get("Docker-Content-Digest", ""), body

    def blob_status(self, repo: str, digest: str) -> int:
        return self._get(f"/v2/{repo}/blobs/{digest}", method="HEAD")[0]

    def delete_manifest(self, repo: str, digest: str) -> int:
        return self._get(f"/v2/{repo}/manifests/{digest}", method="DELETE")[0]
