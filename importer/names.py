"""Target names for a bundle's repositories, the same for push and restore.

Harbor serves a repository only inside a project (its first path component, with Harbor's own name rule),
and cannot serve a one-level name at all (Harbor 1.x's token service answers 500 for ``alpine``).  So on a
Harbor target ``--map OLD=NEW`` rewrites prefixes first, then a one-level name goes to ``--default-project``
(``alpine`` → ``library/alpine``); every name the target still cannot take is reported at once, before
anything is written.
"""

from __future__ import annotations

import dataclasses

from ferry.shared.errors import UsageError
from ferry.shared.model import Catalog
from ferry.shared.storage.paths import valid_repository

from .harbor1 import PROJECT_RE


def map_names(
    repositories: list[str], *, harbor: bool, default_project: str, maps: tuple[tuple[str, str], ...]
) -> dict[str, str]:
    """Bundle repository -> target repository; raises one UsageError naming every name that cannot work."""
    out: dict[str, str] = {}
    bad: list[str] = []
    for repo in repositories:
        name = repo
        for old, new in sorted(maps, key=lambda m: -len(m[0])):
            if name == old or name.startswith(old.rstrip("/") + "/"):
                name = new.rstrip("/") + name[len(old.rstrip("/")) :]
                break
        if harbor and "/" not in name:
            name = f"{default_project}/{name}"
        project = name.split("/", 1)[0]
        if not valid_repository(name) or (harbor and not PROJECT_RE.fullmatch(project)):
            bad.append(f"{repo} → {name}")
        out[repo] = name
    seen: dict[str, str] = {}
    for repo, name in out.items():
        if name in seen:
            bad.append(f"{seen[name]} and {repo} → {name} (both)")
        seen[name] = repo
    if bad:
        raise UsageError(
            f"{len(bad)} repository name(s) the target cannot take: {', '.join(bad[:10])}",
            hint="Rename them with --map old=new (Harbor project names: lower case, digits, and . _ - between).",
        )
    return out


def rename(catalog: Catalog, names: dict[str, str]) -> Catalog:
    """The catalog with its repositories under their target names (content unchanged)."""
    if all(old == new for old, new in names.items()):
        return catalog
    repos = tuple(dataclasses.replace(r, name=names[r.name]) for r in catalog.repositories)
    changes = tuple(
        dataclasses.replace(c, repository=names.get(c.repository, c.repository)) for c in catalog.changes
    )
    return dataclasses.replace(catalog, repositories=repos, changes=changes, _closure_cache={})


__all__ = ["map_names", "rename"]
