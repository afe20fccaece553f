"""Real Harbor for the tests: the Harbor core builds in ../shared/harbor/, started without containers.

One Harbor per version per test session (start-up takes 10 to 15 s); each test makes its own projects,
users and robots through Harbor's own API.  When a Harbor cannot start on this machine, the tests that
need it fail with the reason start.sh gave: they are never skipped silently.  stop.sh stops exactly the
pids start.sh recorded, also when tests fail.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.localregistry import s3_storage, wait_until_serving

#: ../shared/harbor beside the project (CI lays a copy of shared/ there; it is read-only)
HARBOR_HOME = Path(__file__).resolve().parents[2].parent / "shared" / "harbor"

DEVELOPER, MAINTAINER, GUEST = 2, 4, 3


class HarborUnavailable(RuntimeError):
    pass


@dataclass
class RealHarbor:
    version: str
    work: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.env["URL"].rstrip("/")

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]

    @property
    def username(self) -> str:
        return self.env.get("USERNAME", "admin")

    @property
    def password(self) -> str:
        return self.env["PASSWORD"]

    @property
    def v2(self) -> bool:
        return not self.version.startswith("v1.")

    # -- Harbor's own API ----------------------------------------------------------------------------
    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        user, pw = auth or (self.username, self.password)
        base = "/api/v2.0" if self.v2 else "/api"
        req = urllib.request.Request(f"{self.url}{base}{path}", method=method)
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode())
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, data=data, timeout=60) as r:
                raw, status, hdrs = r.read(), r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            raw, status, hdrs = e.read(), e.code, dict(e.headers)
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = raw.decode(errors="replace")
        return status, doc, hdrs

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, doc, _ = self.api(method, path, body, **kw)
        assert 200 <= status < 300, f"{method} {path}: {status} {doc}"
        return doc

    def project(self, name: str | None = None, *, storage_limit: int = -1) -> str:
        name = name or f"p{uuid.uuid4().hex[:10]}"
        self.ok(
            "POST",
            "/projects",
            {"project_name": name, "metadata": {"public": "false"}, "storage_limit": storage_limit},
        )
        return name

    def user(self, name: str | None = None) -> tuple[str, str]:
        name = name or f"u{uuid.uuid4().hex[:10]}"
        pw = "Ferry-" + uuid.uuid4().hex[:12] + "A1"
        self.ok(
            "POST",
            "/users",
            {
                "username": name,
                "email": f"{name}@example.com",
                "realname": name,
                "password": pw,
                "comment": "",
            },
        )
        return name, pw

    def member(self, project: str, user: str, role: int = DEVELOPER) -> None:
        self.ok("POST", f"/projects/{project}/members", {"role_id": role, "member_user": {"username": user}})

    def robot(
        self, *, project: str | None = None, system_on: tuple[str, ...] = (), create_projects: bool = False
    ) -> tuple[str, str]:
        """A robot account with push and pull: a project robot of ``project``, or a system robot with push
        in each of ``system_on`` (and, with ``create_projects``, the right to create projects)."""
        access = [{"resource": "repository", "action": a} for a in ("push", "pull")]
        if project is not None:
            body = {
                "name": f"r{uuid.uuid4().hex[:8]}",
                "level": "project",
                "duration": -1,
                "permissions": [{"kind": "project", "namespace": project, "access": access}],
            }
        else:
            perms: list[dict[str, Any]] = [
                {"kind": "project", "namespace": p, "access": access} for p in system_on
            ]
            if create_projects:
                perms.append(
                    {
                        "kind": "system",
                        "namespace": "/",
                        "access": [{"resource": "project", "action": "create"}],
                    }
                )
            body = {
                "name": f"r{uuid.uuid4().hex[:8]}",
                "level": "system",
                "duration": -1,
                "permissions": perms,
            }
        doc = self.ok("POST", "/robots", body)
        return str(doc["name"]), str(doc["secret"])

    def immutable(self, project: str, tag_pattern: str) -> None:
        self.ok(
            "POST",
            f"/projects/{project}/immutabletagrules",
            {
                "disabled": False,
                "action": "immutable",
                "template": "immutable_template",
                "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": tag_pattern}],
                "scope_selectors": {
                    "repository": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}]
                },
            },
            headers={"X-Is-Resource-Name": "true"},
        )

    def artifacts(self, repo: str) -> list[dict[str, Any]]:
        """Harbor's artifact API for a repository, with tags and accessories."""
        project, _, rest = repo.partition("/")
        enc = urllib.parse.quote(urllib.parse.quote(rest, safe=""), safe="")
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            doc = self.ok(
                "GET",
                f"/projects/{project}/repositories/{enc}/artifacts?with_tag=true&with_accessory=true"
                f"&page_size=100&page={page}",
            )
            out += doc
            if len(doc) < 100:
                return out
            page += 1

    def move_registry_to_s3(self, driver: dict[str, str]) -> None:
        """Restart the docker-registry behind core on Distribution's s3 driver (``driver``: regionendpoint,
        bucket, accesskey, secretkey, region, rootdirectory), as a Harbor with S3 storage runs it.  The
        start scripts only write a filesystem config (and ../shared is read-only), so the config they wrote
        is edited and the registry restarted under the same port and token auth; its new pid replaces the
        old one in WORK/pids, so stop.sh still stops exactly what runs."""
        cfg = self.work / "registry.yml"
        lines = cfg.read_text().splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("  filesystem: "))
        lines[at : at + 1] = s3_storage(driver).splitlines()
        cfg.write_text("\n".join(lines) + "\n")
        pids = (self.work / "pids").read_text().splitlines()
        old = next(int(line.split()[1]) for line in pids if line.startswith("registry "))
        os.kill(old, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{old}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        # as start.sh runs it: without REGISTRY_* (config overrides) and AWS_CA_BUNDLE (the driver panics)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_") and k != "AWS_CA_BUNDLE"}
        log = self.work / "logs" / "registry.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["docker-registry", "serve", str(cfg)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        pids = [f"registry {proc.pid}" if line.startswith("registry ") else line for line in pids]
        (self.work / "pids").write_text("\n".join(pids) + "\n")
        try:
            wait_until_serving(self.env["REGISTRY_BACKEND_URL"].rstrip("/"), proc, log)
        except RuntimeError as e:
            raise HarborUnavailable(f"the registry on S3 did not start: {e}") from None

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(HARBOR_HOME / self.version / "stop.sh"), str(self.work), "--wipe"],
            check=False,
            capture_output=True,
            timeout=120,
        )


def start(version: str, work: Path) -> RealHarbor:
    """Start Harbor ``version`` (a folder of ../shared/harbor) in ``work``; raise with start.sh's own
    words when it cannot."""
    script = HARBOR_HOME / version / "start.sh"
    if not script.exists():
        raise HarborUnavailable(f"{script} is missing: ../shared/harbor must lie beside the project")
    work.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        ["bash", str(script), str(work)], capture_output=True, text=True, timeout=900, env=dict(os.environ)
    )
    harbor = RealHarbor(version, work)
    if p.returncode != 0:
        harbor.stop()
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
        raise HarborUnavailable(f"Harbor {version} did not start:\n{tail}")
    for line in (work / "env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            harbor.env[key.strip()] = value.strip()
    return harbor


__all__ = ["DEVELOPER", "GUEST", "HARBOR_HOME", "MAINTAINER", "HarborUnavailable", "RealHarbor", "start"]
