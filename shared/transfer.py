"""The copy algorithm, written once for every source and sink (see :mod:`ferry.shared.store` for the contract)."""

from __future__ import annotations

import logging

from .delta import base_missing
from .errors import UsageError
from .progress import Progress, ProgressCallback, no_progress
from .store import DeltaSink, ImageSink, ImageSource, RepositoryBlind, SinkResult

log = logging.getLogger(__name__)


def copy(source: ImageSource, sink: ImageSink, *, on_progress: ProgressCallback = no_progress) -> SinkResult:
    catalog = source.catalog
    blind = isinstance(sink, RepositoryBlind) and sink.repository_blind
    holders: dict[str, list[str]] = {} if blind else catalog.repositories_holding()
    total = catalog.member_bytes
    done = files = 0
    if catalog.carried:
        # a delta: the target must hold what the bases carried, checked before anything is written
        if not isinstance(sink, DeltaSink):
            raise UsageError(
                "this bundle is a delta (it relies on earlier bundles) and this target cannot take one",
                hint="Import a full bundle here (export without --since).",
            )
        missing = sink.check_carried(catalog)
        if missing:
            raise base_missing(catalog, missing, target=getattr(sink, "description", "the target"))
    try:
        sink.begin(catalog)
        if catalog.carried:
            assert isinstance(sink, DeltaSink)
            for d in catalog.carried_order():
                sink.put_carried(holders.get(d, ()), d)
        on_progress(Progress("copy", 0, total))
        for content in source.contents():
            repos = holders.get(content.digest, ())
            manifest = catalog.manifests.get(content.digest)
            if manifest is not None:
                sink.put_manifest(repos, manifest, content)
            else:
                sink.put_blob(repos, content)
            done += content.size
            files += 1
            on_progress(Progress("copy", done, total, files=files))
        for repo in catalog.repositories:
            for tag, digest in repo.tags.items():
                sink.tag(repo.name, tag, digest)
        return sink.commit()
    except BaseException:
        sink.abort()
        raise


__all__ = ["copy"]
