"""How a bundle's files are named: one file, or volumes ``X.000``, ``X.001``, … (``--volume-size``).

Apart from the tar reading and writing (:mod:`.tario`) so that a command given a missing bundle can say so
before it imports the index code: that took a third of the start of ``ferry verify missing.tar``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import BundleDamaged, SourceNotFound


def volume_name(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n:03d}")


_VOL_RE = re.compile(r"^(.*)\.(\d{3})$")


def find_volumes(path: Path) -> list[Path]:
    """The files that make up the bundle ``path`` names: itself, or ``X.000``, ``X.001``, … when ``path``
    is ``X`` (absent) or any volume of the set.  A gap in the numbering is named (a missing middle volume
    would otherwise look like a bundle truncated at the volume before it)."""
    if path.is_file():
        m = _VOL_RE.match(path.name)
        if not m:
            return [path]
        base = path.with_name(m.group(1))
    elif volume_name(path, 0).is_file():
        base = path
    else:
        raise SourceNotFound(f"{path}: no such bundle (nor {volume_name(path, 0).name})")
    first = volume_name(base, 0)
    numbers = sorted(
        int(m.group(2))
        for name in os.listdir(base.parent or ".")
        if (m := _VOL_RE.match(name))
        and m.group(1) == base.name
        and volume_name(base, int(m.group(2))).is_file()
    )
    if not numbers or numbers[0] != 0:
        raise SourceNotFound(f"{first}: the first volume of this set is missing")
    gaps = sorted(set(range(numbers[-1] + 1)) - set(numbers))
    if gaps:
        names = [volume_name(base, n).name for n in gaps]
        what = f"volume{'s' if len(names) > 1 else ''} {', '.join(names)} missing from the set"
        raise BundleDamaged(
            f"{base}: {what} (found {len(numbers)} of {numbers[-1] + 1})",
            tuple({"member": None, "problem": "volume missing", "volumes": [n]} for n in names),
            hint="Copy the missing volume(s) from the origin, then run `ferry verify` again.",
        )
    return [volume_name(base, n) for n in numbers]


def volume_name_after(path: Path) -> str:
    """The name of the volume after ``X.NNN``."""
    m = _VOL_RE.match(path.name)
    return volume_name(path.with_name(m.group(1)), int(m.group(2)) + 1).name if m else path.name + ".001"


__all__ = ["find_volumes", "volume_name", "volume_name_after"]
