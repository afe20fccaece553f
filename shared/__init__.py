"""What both sides of the air gap need: the bundle format, the storage-tree layout, digests, errors, models.

No CLI and no console output here: the library logs through :mod:`logging` and reports progress as data.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ferry")
except PackageNotFoundError:  # running from a source checkout that was not installed
    __version__ = "0.0.0+src"
