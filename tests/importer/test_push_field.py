"""Push as it meets the field: a target that already holds everything, one that is not a registry, a
first contact that fails for a moment, and a fault soak through a proxy in front of the real registry."""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.cli import app
from ferry.importer.push import PushOptions
from ferry.importer.push import run as push
from ferry.shared.bundle.reader import Bundle
from ferry.shared.errors import RegistryError
from ferry.shared.manifest import SCHEMA1_TYPES
from ferry.shared.storage.reader import Selection
from tests.support.proxy import FaultPlan, Proxy
from tests.support.registry import Registry
from tests.support.zoo import Zoo

runner = CliRunner()
WRITE = re.compile(r'"(POST|PATCH|PUT|DELETE) /v2/')


@pytest.fixture(scope="module")
def bundle(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("push-field") / "zoo.tar"
    export(ExportOptions(root=zoo.root, output=out, selection=Selection(untagged=True)))
    return out


def _served_right(reg: Registry, bundle: Path, *, complete: bool) -> None:
    """Every tag the registry serves has the bundle's digest (complete: every tag is served); every blob
    in its storage hashes to its name."""
    catalog = Bundle.open(bundle).catalog
    for repo in catalog.repositories:
        for tag, digest in repo.tags.items():
            if catalog.manifests[digest].media_type in SCHEMA1_TYPES:
                continue  # skipped by push, by default
            status, got, _ = reg.manifest(repo.name, tag)
            if status == 200:
                assert got == digest, f"{repo.name}:{tag} is served as {got}, the bundle has {digest}"
            else:
                assert not complete and status == 404, (repo.name, tag, status)
    for data in (reg.root / "docker/registry/v2/blobs").rglob("data"):
        assert hashlib.sha256(data.read_bytes()).hexdigest() == data.parent.name


def test_a_rerun_over_a_complete_target_writes_nothing(bundle: Path, tmp_path: Path) -> None:
    """The second push sends HEADs only: no manifest PUT again, no mount into a repository that has the
    blob (the registry's own access log is counted)."""
    with Registry(tmp_path / "target", access_log=True) as reg:
        assert not push(PushOptions(bundle=str(bundle), registry=reg.url)).failed
        first = reg.log_path.read_text().splitlines()
        assert any(WRITE.search(line) for line in first)
        again = push(PushOptions(bundle=str(bundle), registry=reg.url))
        assert not again.failed and again.blobs_uploaded == again.blobs_mounted == 0
        assert again.manifests_present > 0  # every manifest and tag was found in place, none PUT
        second = reg.log_path.read_text().splitlines()[len(first) :]
        writes = [line for line in second if WRITE.search(line)]
        assert writes == [], "\n".join(writes)
        assert sum('"HEAD /v2/' in line for line in second) > 0
        _served_right(reg, bundle, complete=True)


def test_a_server_that_is_not_a_registry_is_refused_before_planning(bundle: Path) -> None:
    class Html(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>Welcome to nginx!</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        r = runner.invoke(app, ["push", str(bundle), "--registry", url, "--dry-run"])
        assert r.exit_code == 1, r.stderr
        assert "does not speak the Registry V2 API" in r.stderr and "text/html" in r.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_the_first_contact_honours_retries(bundle: Path, tmp_path: Path) -> None:
    refused = {"n": 0}

    def flaky_ping(h: BaseHTTPRequestHandler) -> bool:
        if h.path == "/v2/" and refused["n"] < 3:
            refused["n"] += 1
            h.send_response(503)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return True
        return False

    with Registry(tmp_path / "target") as reg:
        proxy = Proxy(reg.host, route=flaky_ping).start()
        try:
            with pytest.raises(RegistryError, match="503"):
                push(PushOptions(bundle=str(bundle), registry=proxy.url, retries=2, backoff=0.01))
            refused["n"] = 0
            r = push(PushOptions(bundle=str(bundle), registry=proxy.url, retries=5, backoff=0.01))
            assert not r.failed and refused["n"] == 3
        finally:
            proxy.stop()


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_fault_soak(bundle: Path, tmp_path: Path, rate: float) -> None:
    """5xx, 429, cut connections and slow replies at this rate on every /v2 request: each run either
    completes with every image intact, or fails and a rerun goes on from there; nothing wrong is ever
    served, and the runs converge."""
    with Registry(tmp_path / "target") as reg:
        plan = FaultPlan(
            rate=rate, budget=100_000, seed=int(rate * 100), kinds=("500", "503", "429", "cut", "slow")
        )
        plan.slow = 0.2
        proxy = Proxy(reg.host, faults=plan).start()
        try:
            runs = 0
            why: list[str] = []
            for _ in range(8):
                runs += 1
                try:
                    r = push(
                        PushOptions(bundle=str(bundle), registry=proxy.url, retries=6, backoff=0.02, jobs=8)
                    )
                except RegistryError as e:
                    why.append(e.message)
                    _served_right(reg, bundle, complete=False)
                    continue
                if not r.failed:
                    break
                why.append("; ".join(f"{i.ref}: {i.reason}" for i in r.failed[:3]))
                _served_right(reg, bundle, complete=False)
            else:
                pytest.fail(f"no complete push in 8 runs at a fault rate of {rate}: " + " | ".join(why))
            assert plan.injected, "the proxy injected no fault"
            _served_right(reg, bundle, complete=True)
        finally:
            proxy.stop()
        print(f"fault rate {rate}: {len(plan.injected)} faults injected, complete after {runs} run(s)")
