"""The registry client's token handling against a real token-auth docker-registry (behind the Harbor
stand-in's token service, which grants exactly the actions a challenge asks for, as Harbor does)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ferry.shared.registry.client import ClientConfig, RegistryClient
from ferry.shared.registry.credentials import Credentials
from tests.support.harbor import HarborStandIn, token_auth_registry


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[HarborStandIn]:
    with token_auth_registry(tmp_path) as service:
        yield service


def _finish_upload(client: RegistryClient, opened: httpx.Response, blob: bytes) -> None:
    """The upload ``opened`` started, finished with ``blob`` as a streamed body (it cannot be sent twice:
    a refusal of its token fails it), and the blob then served under its digest."""
    digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
    location = opened.headers["Location"]
    put = client.request(
        "PUT",
        location + ("&" if "?" in location else "?") + f"digest={digest}",
        expect=(201,),
        what="finish the upload",
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(blob))},
        content=iter([blob]),
    )
    assert put.status_code == 201
    repo = location.split("/v2/", 1)[1].split("/blobs/", 1)[0]
    head = client.request("HEAD", client.url(f"/v2/{repo}/blobs/{digest}"), expect=(200,), what="check")
    assert head.headers["Docker-Content-Digest"] == digest


def test_a_pull_token_that_lands_late_never_displaces_the_push_token(token_registry: HarborStandIn) -> None:
    """A read and an upload to one repository in two threads: the read was challenged for pull before
    the upload's push token arrived, and its pull-only token arrives after.  Were it cached over the push
    token, the upload's streamed body would be refused and could not be sent again."""
    service = token_registry
    client = RegistryClient(
        ClientConfig(url=service.url, credentials=Credentials(service.username, service.password))
    )
    plain = httpx.Client()
    try:
        # the read's auth flow, driven by hand so that its token lands at the worst moment
        read = client.auth.auth_flow(httpx.Request("HEAD", client.url("/v2/library/app/manifests/v1")))
        challenge = plain.send(next(read))
        assert challenge.status_code == 401 and ':pull"' in challenge.headers["WWW-Authenticate"]
        token_request = read.send(challenge)

        opened = client.request(
            "POST", client.url("/v2/library/app/blobs/uploads/"), expect=(202,), what="open an upload"
        )
        read.send(plain.send(token_request))  # the pull-only token arrives now
        read.close()

        _finish_upload(client, opened, b"layer bytes " * 1000)
    finally:
        plain.close()
        client.close()


def test_a_mount_challenged_for_its_source_leaves_the_upload_token_in_place(
    token_registry: HarborStandIn,
) -> None:
    """A mount into a repository is challenged again: its token grants the repository but not a pull of
    the mount's source.  An upload to the same repository in another thread is sending that token at the
    moment; dropped from the cache then, the upload's streamed body would go out without it, be refused,
    and could not be sent again ("authorization expired mid-request" under load)."""
    service = token_registry
    client = RegistryClient(
        ClientConfig(url=service.url, credentials=Credentials(service.username, service.password))
    )
    plain = httpx.Client()
    try:
        opened = client.request(
            "POST", client.url("/v2/library/app/blobs/uploads/"), expect=(202,), what="open an upload"
        )
        blob = b"layer bytes " * 1000
        digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
        # the mount's auth flow, driven by hand: challenged, and its new token not arrived yet
        mount = client.auth.auth_flow(
            httpx.Request(
                "POST",
                client.url("/v2/library/app/blobs/uploads/"),
                params={"mount": digest, "from": "library/base"},
            )
        )
        challenge = plain.send(next(mount))
        assert challenge.status_code == 401 and "repository:library/base:pull" in challenge.headers.get(
            "WWW-Authenticate", ""
        )
        mount.send(challenge)  # now fetching the token that grants both
        _finish_upload(client, opened, blob)
        mount.close()
    finally:
        plain.close()
        client.close()
