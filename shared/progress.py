"""Progress as data: the library reports, the CLI renders (or not, when output is not a terminal)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """``phase`` started or advanced: ``done`` of ``total`` units (bytes where ``unit == "B"``), and a count of
    the items those bytes belong to: ``files`` of ``files_total`` (0: unknown) ``items`` (files, images)."""

    phase: str
    done: int
    total: int
    unit: str = "B"
    files: int = 0
    files_total: int = 0
    items: str = "files"


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    return None


__all__ = ["Progress", "ProgressCallback", "no_progress"]
