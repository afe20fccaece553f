"""What both sides of the air gap need: the bundle format, the storage-tree layout, digests, errors, models.

No CLI and no console output here: the library logs through :mod:`logging` and reports progress as data.
"""

# the one place the version is written (pyproject reads it from here); not looked up through
# importlib.metadata, whose import costs 30 ms of every start
__version__ = "0.1.0"
