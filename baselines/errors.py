"""Exceptions of the baseline store.

Every message is one readable line that a command-line tool can print as is.

Tree::

    BaselineError
    ├── BaselineNotFound    no such model, version, or active version
    ├── IntegrityError      a file or the manifest differs from what was written (says which file)
    ├── SignatureError      a keyed store met an unsigned, badly signed or foreign-key baseline
    ├── InvalidInputError   a model id, version, array name, array or meta the store cannot take
    │                       (also a ValueError)
    └── StoreError          anything else: I/O failures, an unreadable ACTIVE file or audit log,
                            nothing to roll back to
"""

from __future__ import annotations

__all__ = [
    "BaselineError",
    "BaselineNotFound",
    "IntegrityError",
    "InvalidInputError",
    "SignatureError",
    "StoreError",
]


class BaselineError(Exception):
    """Root of every error raised by :mod:`baselines`."""


class BaselineNotFound(BaselineError, LookupError):
    """The model, the version, or the model's active version does not exist in the store."""


class IntegrityError(BaselineError):
    """A stored baseline no longer matches what was written: a digest differs, a file is missing,
    or the manifest does not match its version."""


class SignatureError(BaselineError):
    """A store opened with a signing key met a baseline that is unsigned, signed with another key,
    or whose signature does not match its manifest."""


class InvalidInputError(BaselineError, ValueError):
    """An argument the store refuses: a malformed model id, version or array name, an object array,
    or metadata that JSON cannot store faithfully."""


class StoreError(BaselineError):
    """Any other failure of the store: I/O errors, unreadable bookkeeping files, or an operation
    that cannot be carried out (such as a rollback with no earlier version)."""
