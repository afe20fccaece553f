"""Does a Harbor 2.x serve what a bundle holds?  A check for the tests, and for users after a push.

    python -m tests.support.harborcheck BUNDLE --harbor URL -u USER --password-stdin [--map OLD=NEW ...]

For every tag and untagged manifest of the bundle (under the names a push gives them): ``/v2`` serves it
at the bundle's digest; and Harbor's own artifact API describes it: the artifact exists with that digest,
an index lists every child as a reference, a Helm chart is typed ``CHART``, an image ``IMAGE``, and a cosign
signature tag (``sha256-<hex>.sig``) appears as an accessory ``signature.cosign`` of the image it signs.
With the referrers API (Harbor 2.8+), a manifest with a ``subject`` is listed among its subject's
referrers.  Prints one line per problem; exits 0 when there is none.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ferry.importer.names import map_names
from ferry.shared.bundle.reader import Bundle
from ferry.shared.manifest import INDEX_TYPES, MANIFEST_TYPES, SCHEMA1_TYPES
from ferry.shared.model import Catalog
from ferry.shared.registry.client import ClientConfig, Credentials, RegistryClient

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
SIG_TAG = re.compile(r"^sha256-([0-9a-f]{64})\.sig$")


def _api(url: str, user: str, password: str, path: str) -> Any:
    req = urllib.request.Request(f"{url}/api/v2.0{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=60) as r:
        return json.loads(r.read())


def _artifacts(url: str, user: str, password: str, repo: str) -> dict[str, dict[str, Any]]:
    project, _, rest = repo.partition("/")
    enc = urllib.parse.quote(urllib.parse.quote(rest, safe=""), safe="")
    out: dict[str, dict[str, Any]] = {}
    page = 1
    while True:
        try:
            doc = _api(
                url,
                user,
                password,
                f"/projects/{project}/repositories/{enc}/artifacts?with_tag=true&with_accessory=true"
                f"&page_size=100&page={page}",
            )
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return out
            raise
        for a in doc:
            out[a["digest"]] = a
        if len(doc) < 100:
            return out
        page += 1


def check(
    catalog: Catalog,
    url: str,
    user: str,
    password: str,
    *,
    names: dict[str, str],
    convert_schema1: bool = False,
) -> list[str]:
    """Every difference between what Harbor serves and what the bundle holds, one line each."""
    problems: list[str] = []
    client = RegistryClient(ClientConfig(url=url, credentials=Credentials(user, password)))
    accept = {"Accept": ", ".join(sorted(MANIFEST_TYPES))}
    try:
        for repo in catalog.repositories:
            target = names[repo.name]
            refs = [(t, d) for t, d in repo.tags.items()] + [(d, d) for d in repo.untagged]
            pushable = [
                (ref, d)
                for ref, d in refs
                if convert_schema1 or catalog.manifests[d].media_type not in SCHEMA1_TYPES
            ]
            if not pushable:
                continue
            arts = _artifacts(url, user, password, target)
            for ref, d in pushable:
                r = client.http.head(client.url(f"/v2/{target}/manifests/{ref}"), headers=accept)
                got = (
                    r.headers.get("Docker-Content-Digest")
                    if r.status_code == 200
                    else f"HTTP {r.status_code}"
                )
                m = catalog.manifests[d]
                if m.media_type in SCHEMA1_TYPES:
                    if r.status_code != 200:
                        problems.append(f"{target}:{ref}: not served ({got})")
                    continue  # converted: another digest, by design
                if got != d:
                    problems.append(f"{target}:{ref}: served as {got}, the bundle has {d}")
                    continue
                a = arts.get(d)
                if a is None:
                    # a cosign signature, or a manifest with a subject (Harbor 2.8+), is an accessory of the
                    # image it refers to, not an artifact of its own
                    of = m.subject if m.subject is not None else _signed(catalog, ref, m)
                    accessories = {
                        x.get("digest") for x in (arts.get(of or "") or {}).get("accessories") or []
                    }
                    if d not in accessories:
                        problems.append(
                            f"{target}:{ref}: Harbor's artifact API lists {d} neither as an artifact nor as an accessory"
                        )
                    continue
                if ref != d and ref not in {t["name"] for t in a.get("tags") or []}:
                    problems.append(f"{target}:{ref}: Harbor does not list this tag on {d}")
                config_type = _config_type(client, target, d, m.media_type)
                want = (
                    "CHART"
                    if config_type == HELM_CONFIG
                    else "IMAGE"
                    if config_type in _IMAGE_CONFIGS or m.media_type in INDEX_TYPES
                    else None
                )
                if want is not None and a.get("type") != want:
                    problems.append(f"{target}:{ref}: Harbor types it {a.get('type')}, expected {want}")
                if m.children:
                    listed = {c.get("child_digest") for c in a.get("references") or []}
                    missing = [c.digest for c in m.children if c.digest not in listed]
                    if missing:
                        problems.append(f"{target}:{ref}: Harbor does not list the children {missing}")
            for tag, d in repo.tags.items():
                s = SIG_TAG.match(tag)
                if s and _signed(catalog, tag, catalog.manifests[d]) and f"sha256:{s.group(1)}" in arts:
                    subject = arts[f"sha256:{s.group(1)}"]
                    acc = {(x.get("type"), x.get("digest")) for x in subject.get("accessories") or []}
                    if ("signature.cosign", d) not in acc:
                        problems.append(
                            f"{target}:{tag}: not an accessory signature.cosign of its image ({acc})"
                        )
            for d in repo.manifests:
                m = catalog.manifests[d]
                if m.subject is None or m.subject not in repo.manifests:
                    continue
                r = client.http.get(client.url(f"/v2/{target}/referrers/{m.subject}"))
                try:
                    doc = r.json() if r.status_code == 200 else None
                except ValueError:
                    doc = None
                if not isinstance(doc, dict) or "manifests" not in doc:
                    continue  # no referrers API (Harbor before 2.8 answers something else)
                listed = {x.get("digest") for x in doc["manifests"]}
                if d not in listed:
                    problems.append(f"{target}@{d}: not among the referrers of its subject {m.subject}")
    finally:
        client.close()
    return problems


COSIGN_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"


def _signed(catalog: Catalog, tag: str, m: Any) -> str | None:
    """The digest a cosign signature (``sha256-<hex>.sig`` whose layers are cosign's) signs, else None."""
    s = SIG_TAG.match(tag)
    layers = [catalog.blobs[b].media_type for b in m.blobs[1:] if b in catalog.blobs]
    if s is None or not layers or any(t != COSIGN_LAYER for t in layers):
        return None
    return f"sha256:{s.group(1)}"


_IMAGE_CONFIGS = {
    "application/vnd.docker.container.image.v1+json",
    "application/vnd.oci.image.config.v1+json",
}


def _config_type(client: RegistryClient, repo: str, digest: str, media_type: str) -> str | None:
    if media_type in INDEX_TYPES or media_type in SCHEMA1_TYPES:
        return None
    r = client.http.get(client.url(f"/v2/{repo}/manifests/{digest}"), headers={"Accept": media_type})
    if r.status_code != 200:
        return None
    return str((r.json().get("config") or {}).get("mediaType") or "") or None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--harbor", required=True)
    ap.add_argument("-u", "--username", required=True)
    ap.add_argument("--password-stdin", action="store_true", required=True)
    ap.add_argument("--map", action="append", default=[])
    ap.add_argument("--default-project", default="library")
    ap.add_argument("--convert-schema1", action="store_true")
    a = ap.parse_args(argv)
    password = sys.stdin.readline().rstrip("\n")
    with Bundle.open(a.bundle) as b:
        catalog = b.catalog
    maps = tuple(tuple(m.split("=", 1)) for m in a.map)
    names = map_names(
        [r.name for r in catalog.repositories], harbor=True, default_project=a.default_project, maps=maps
    )  # type: ignore[arg-type]
    problems = check(
        catalog, a.harbor.rstrip("/"), a.username, password, names=names, convert_schema1=a.convert_schema1
    )
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s)" if problems else "ok: Harbor serves everything the bundle holds")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
