"""Credentials as operators have them, each source against a real registry that requires them.

The registry is docker-registry with htpasswd (basic auth); the identity-token case needs a token service
that exchanges refresh tokens, which the token service beside the real registry in tests/support/harbor.py
plays (docker-registry ships none).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.localregistry import Registry
from ferry.shared.errors import AuthError, UsageError
from ferry.shared.registry.client import ClientConfig, RegistryClient, connect
from ferry.shared.registry.credentials import Resolved, resolve
from tests.support.harbor import token_auth_registry

USER, PASSWORD = "carol", "pa55-word"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("auth")
    line = subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True
    ).stdout
    (tmp / "htpasswd").write_text(line)
    with Registry(tmp / "storage", htpasswd=tmp / "htpasswd") as reg:
        yield reg


def _auth(user: str = USER, pw: str = PASSWORD) -> str:
    return base64.b64encode(f"{user}:{pw}".encode()).decode()


def _connects(url: str, found: Resolved) -> None:
    client = RegistryClient(
        ClientConfig(url=url, credentials=found.credentials, credentials_tried=found.tried)
    )
    try:
        connect(client, retries=1, backoff=0)
    finally:
        client.close()


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), "PATH": os.environ["PATH"], **extra}


def _write(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("where", ["REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "containers", "docker"])
def test_each_auth_file_is_read(registry: Registry, tmp_path: Path, where: str) -> None:
    doc = {"auths": {registry.host: {"auth": _auth()}}}
    extra = {}
    if where == "REGISTRY_AUTH_FILE":
        extra["REGISTRY_AUTH_FILE"] = str(_write(tmp_path / "elsewhere.json", doc))
    elif where == "XDG_RUNTIME_DIR":
        _write(tmp_path / "run/containers/auth.json", doc)
        extra["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
    elif where == "containers":
        _write(tmp_path / ".config/containers/auth.json", doc)
    else:
        _write(tmp_path / "dockercfg/config.json", doc)
        extra["DOCKER_CONFIG"] = str(tmp_path / "dockercfg")
    found = resolve(registry.url, environ=_env(tmp_path, **extra))
    assert found.credentials is not None and found.credentials.username == USER
    _connects(registry.url, found)


def test_the_order_of_precedence(registry: Registry, tmp_path: Path) -> None:
    wrong = {"auths": {registry.host: {"auth": _auth(pw="wrong")}}}
    right = {"auths": {registry.host: {"auth": _auth()}}}
    # the containers file comes before docker's
    _write(tmp_path / ".config/containers/auth.json", right)
    _write(tmp_path / ".docker/config.json", wrong)
    found = resolve(registry.url, environ=_env(tmp_path))
    assert found.credentials is not None and ".config/containers/auth.json" in found.credentials.source
    _connects(registry.url, found)
    # the environment comes before every file, and -u before the environment
    env = _env(tmp_path, FERRY_REGISTRY_USERNAME=USER, FERRY_REGISTRY_PASSWORD="wrong-too")
    assert resolve(registry.url, environ=env).credentials.password == "wrong-too"  # type: ignore[union-attr]
    assert resolve(registry.url, USER, PASSWORD, environ=env).credentials.source == "--username"  # type: ignore[union-attr]
    # --authfile replaces the search: the right file elsewhere is not consulted
    only = _write(tmp_path / "only.json", wrong)
    found = resolve(registry.url, environ=_env(tmp_path), authfile=only)
    assert found.tried[-1] == str(only)
    with pytest.raises(AuthError) as e:
        _connects(registry.url, found)
    assert str(only) in (e.value.hint or "")  # the hint names where the refused credentials came from
    with pytest.raises(UsageError, match="no such file"):
        resolve(registry.url, environ=_env(tmp_path), authfile=tmp_path / "missing.json")


def _helper(bin_dir: Path, name: str, host: str, user: str, secret: str) -> None:
    """A docker credential helper (the protocol: `get`, the server on stdin, JSON on stdout)."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "assert sys.argv[1:] == ['get']\n"
        "server = sys.stdin.read().strip()\n"
        f"if server != {host!r}:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
        f"print(json.dumps({{'ServerURL': server, 'Username': {user!r}, 'Secret': {secret!r}}}))\n"
    )
    script.chmod(0o755)


@pytest.mark.parametrize("kind", ["credHelpers", "credsStore"])
def test_credential_helpers_are_run(registry: Registry, tmp_path: Path, kind: str) -> None:
    _helper(tmp_path / "bin", "ferrytest", registry.host, USER, PASSWORD)
    doc: dict[str, object] = (
        {"credHelpers": {registry.host: "ferrytest"}}
        if kind == "credHelpers"
        else {"auths": {registry.host: {}}, "credsStore": "ferrytest"}
    )
    _write(tmp_path / ".docker/config.json", doc)
    env = {"HOME": str(tmp_path), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    found = resolve(registry.url, environ=env)
    assert found.credentials is not None and "docker-credential-ferrytest" in found.credentials.source
    _connects(registry.url, found)
    # a helper with nothing for the host is passed over; one that is not installed is named
    assert resolve("https://other.example:5000", environ=env).credentials is None
    with pytest.raises(UsageError, match="docker-credential-ferrytest, which is not on PATH"):
        resolve(registry.url, environ={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})


def test_an_identity_token_is_exchanged_at_the_token_service(tmp_path: Path) -> None:
    with token_auth_registry(tmp_path) as service:
        service.refresh_tokens["idt-0123456789"] = "admin"
        host = service.url.split("://", 1)[1]
        _write(tmp_path / ".docker/config.json", {"auths": {host: {"identitytoken": "idt-0123456789"}}})
        found = resolve(service.url, environ=_env(tmp_path))
        assert found.credentials is not None and found.credentials.identity_token == "idt-0123456789"
        client = RegistryClient(ClientConfig(url=service.url, credentials=found.credentials))
        try:
            connect(client, retries=1, backoff=0)
            # a pull needs a token with the pull action, which only the refresh grant gave
            r = client.request(
                "GET", client.url("/v2/library/none/tags/list"), expect=(200, 404), what="list"
            )
            assert r.status_code == 404  # authorized: the repository just does not exist
        finally:
            client.close()
        posts = [c for c in service.calls if c[0] == "POST" and c[1] == "/service/token"]
        assert posts and posts[0][2]["grant_type"] == ["refresh_token"]  # type: ignore[index]


def test_a_401_names_every_source_that_was_tried(registry: Registry, tmp_path: Path) -> None:
    env = _env(tmp_path, REGISTRY_AUTH_FILE=str(tmp_path / "auth.json"))
    found = resolve(registry.url, environ=env)
    assert found.credentials is None
    with pytest.raises(AuthError) as e:
        _connects(registry.url, found)
    hint = e.value.hint or ""
    for source in (
        "FERRY_REGISTRY_USERNAME/PASSWORD",
        str(tmp_path / "auth.json"),
        ".config/containers/auth.json",
        ".docker/config.json",
    ):
        assert source in hint
    # and through the command line: one line and the hint, exit 1
    done = subprocess.run(
        ["ferry", "export", registry.url, "-o", str(tmp_path / "b.tar")],
        capture_output=True,
        text=True,
        env={**env, "PATH": os.environ["PATH"]},
    )
    assert done.returncode == 1
    assert "No credentials for" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "b.tar").exists()
