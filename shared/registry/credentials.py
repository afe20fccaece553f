"""Registry credentials as operators already have them: one resolver, one documented order.

For a registry host, the first of these that has credentials wins (specs/cli.md, "Credentials"):

1. ``--username`` with ``--password-stdin`` (or ``FERRY_REGISTRY_PASSWORD``);
2. ``FERRY_REGISTRY_USERNAME`` and ``FERRY_REGISTRY_PASSWORD`` (``FERRY_SOURCE_…`` for a copy's source);
3. ``--authfile FILE``, and then no other file; else the containers auth files, as podman and skopeo read
   them: ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
   ``~/.config/containers/auth.json``; then docker's ``$DOCKER_CONFIG/config.json`` (``~/.docker``).

In one file, as docker reads it: ``credHelpers[host]`` (run ``docker-credential-NAME get``), then the
``auths`` entry (``auth``: base64 ``user:password``; ``identitytoken``: an OAuth2 refresh token), then
``credsStore`` (a helper for every host).  A helper that answers ``<token>`` as the user gives an identity
token too.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

#: docker.io's names for one registry: config files key it by its old index URL
_DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io"}


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    #: an OAuth2 refresh token (``identitytoken``): exchanged at the registry's token service
    identity_token: str | None = field(default=None, repr=False)
    #: where they came from, for the message when the registry refuses them
    source: str = ""

    def basic_header(self) -> str:
        """The ``Authorization`` value for HTTP basic auth."""
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


@dataclass(frozen=True)
class Resolved:
    credentials: Credentials | None
    #: every source that was looked at, in order (named in the hint of a 401)
    tried: tuple[str, ...]


def _split(url: str) -> tuple[str, str]:
    """(host, path) of a registry reference (``https://host/v1/``, ``host:port``, ``host/ns``)."""
    host, _, path = url.split("://", 1)[-1].partition("/")
    host = host.lower()
    return ("docker.io" if host in _DOCKER_HUB else host), path


def host_of(url: str) -> str:
    return _split(url)[0]


def auth_files(environ: Mapping[str, str], home: Path, authfile: Path | None = None) -> list[Path]:
    """The files searched, in order: ``--authfile`` alone, else the containers files, then docker's."""
    if authfile is not None:
        return [authfile]
    out = []
    if environ.get("REGISTRY_AUTH_FILE"):
        out.append(Path(environ["REGISTRY_AUTH_FILE"]))
    if environ.get("XDG_RUNTIME_DIR"):
        out.append(Path(environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    out.append(home / ".config" / "containers" / "auth.json")
    out.append(Path(environ.get("DOCKER_CONFIG") or home / ".docker") / "config.json")
    return out


def resolve(
    url: str,
    username: str | None = None,
    password: str | None = None,
    *,
    env: str = "FERRY_REGISTRY",
    authfile: Path | None = None,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Resolved:
    """The credentials for the registry at ``url``, by the order in the module's docstring."""
    environ = os.environ if environ is None else environ
    home = Path(environ.get("HOME") or Path.home()) if home is None else home
    tried = ["--username"]
    if username and password is not None:
        return Resolved(Credentials(username, password, source="--username"), tuple(tried))
    tried.append(f"{env}_USERNAME/PASSWORD")
    env_user, env_pw = environ.get(f"{env}_USERNAME"), environ.get(f"{env}_PASSWORD")
    if env_user and env_pw is not None:
        return Resolved(Credentials(env_user, env_pw, source=tried[-1]), tuple(tried))
    if authfile is not None and not authfile.is_file():
        raise UsageError(f"--authfile {authfile}: no such file")
    host = host_of(url)
    for path in auth_files(environ, home, authfile):
        tried.append(str(path))
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise UsageError(
                f"{path}: not a readable auth file ({type(e).__name__}: {e})",
                hint="Fix or remove it, or pass the credentials with -u USER --password-stdin.",
            ) from None
        if not isinstance(doc, dict):
            continue
        found = _from_file(doc, host, path, environ)
        if found is not None:
            return Resolved(found, tuple(tried))
    return Resolved(None, tuple(tried))


def _matching(entries: object, host: str) -> object | None:
    """The entry for ``host`` in a map keyed by registry (``host``, ``https://host/v1/``, ``host/ns``):
    the exact host first, then the first key naming a repository namespace on it."""
    if not isinstance(entries, dict):
        return None
    partial: object | None = None
    value: object
    for key, value in entries.items():
        key_host, path = _split(str(key))
        if key_host != host:
            continue
        if path.strip("/") in ("", "v1", "v2"):
            return value
        partial = partial if partial is not None else value
    return partial


def _from_file(
    doc: dict[str, object], host: str, path: Path, environ: Mapping[str, str]
) -> Credentials | None:
    helper = _matching(doc.get("credHelpers"), host)
    if isinstance(helper, str) and helper:
        found = _helper(helper, host, f"{path} (credHelpers)", environ)
        if found is not None:
            return found
    entry = _matching(doc.get("auths"), host)
    if isinstance(entry, dict):
        user, pw = "", ""
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise UsageError(
                    f"{path}: the auth entry for {host} is not base64 of user:password"
                ) from None
        token = entry.get("identitytoken")
        if isinstance(token, str) and token:
            return Credentials(user or "<token>", pw, identity_token=token, source=f"{path} (identitytoken)")
        if user:
            return Credentials(user, pw, source=f"{path} (auths)")
    store = doc.get("credsStore")
    if isinstance(store, str) and store:
        return _helper(store, host, f"{path} (credsStore)", environ)
    return None


def _helper(name: str, host: str, source: str, environ: Mapping[str, str]) -> Credentials | None:
    """``docker-credential-NAME get``, host on stdin: ``{"Username": …, "Secret": …}``, or "not found"."""
    program = f"docker-credential-{name}"
    exe = shutil.which(program, path=environ.get("PATH"))
    if exe is None:
        raise UsageError(
            f"{source} names the credential helper {program}, which is not on PATH",
            hint=f"Install {program}, or pass the credentials with -u USER --password-stdin.",
        )
    try:
        done = subprocess.run(
            [exe, "get"],
            input=host,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=dict(environ),
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UsageError(f"the credential helper {program} failed: {e}") from None
    if done.returncode != 0:
        if "not found" in (done.stdout + done.stderr).lower():
            return None  # the helper has nothing for this host: the next source is asked
        raise UsageError(
            f"the credential helper {program} failed for {host}: "
            f"{(done.stderr or done.stdout).strip() or f'exit status {done.returncode}'}"
        )
    try:
        doc = json.loads(done.stdout)
        user, secret = str(doc["Username"]), str(doc["Secret"])
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"the credential helper {program} answered something that is not its JSON") from None
    if user == "<token>":
        return Credentials(user, "", identity_token=secret, source=f"{source}: {program}")
    return Credentials(user, secret, source=f"{source}: {program}")


__all__ = ["Credentials", "Resolved", "auth_files", "host_of", "resolve"]
