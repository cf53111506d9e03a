"""Exceptions of the detection core.

Tree::

    DetectorError
    ├── SchemaMismatchError   a batch does not have the columns the reference was built with
    └── SnapshotError         a snapshot cannot be restored into this detector
"""

from __future__ import annotations


class DetectorError(Exception):
    """Root of every error raised by :mod:`detector`."""


class SchemaMismatchError(DetectorError, ValueError):
    """A batch's shape or columns do not match the schema it is scored against."""


class SnapshotError(DetectorError, ValueError):
    """A snapshot is missing arrays or was taken with other hyper-parameters."""
