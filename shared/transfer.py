"""The copy algorithm, written once for every source and sink (see :mod:`shared.store` for the contract)."""

from __future__ import annotations

import logging

from .progress import Progress, ProgressCallback, no_progress
from .store import ImageSink, ImageSource, SinkResult

log = logging.getLogger(__name__)


def copy(source: ImageSource, sink: ImageSink, *, on_progress: ProgressCallback = no_progress) -> SinkResult:
    catalog = source.catalog
    holders = catalog.repositories_holding()
    total = catalog.total_bytes
    done = files = 0
    try:
        sink.begin(catalog)
        on_progress(Progress("copy", 0, total))
        for content in source.contents():
            repos = holders.get(content.digest, [])
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
