"""A versioned, content-addressed, optionally signed store of model baselines.

A baseline is a mapping ``name -> numpy array`` plus a JSON metadata dict; the store knows
nothing of what the arrays mean. On disk::

    ROOT/
    ├── .lock                      writers hold an exclusive flock on it
    ├── audit.jsonl                one JSON object per save / promote / rollback, appended and fsynced
    └── <model_id>/
        ├── ACTIVE                 {"version": ..., "updated_at": ...}, replaced atomically
        └── <version>/             immutable once written
            ├── <name>.npy         np.save(..., allow_pickle=False)
            └── manifest.json

``manifest.json`` is ``{"format": 1, "model_id", "version", "created_at", "files": {name: {"sha256",
"dtype", "shape", "bytes"}}, "meta", "signature"}``. The version is the first 16 hex digits of the
SHA-256 of the canonical JSON of ``{"model_id", "files": {name: sha256}, "meta"}`` (see
:func:`content_version`), so the same content always gets the same version and saving it again
is a no-op. The signature, when the store has a key, is an HMAC-SHA256 over the canonical JSON of
the manifest without its ``"signature"`` key (see :func:`canonical_json`).

What is checked, and when
-------------------------
:meth:`BaselineStore.load` and :meth:`BaselineStore.promote` check, before anything is returned or
activated: the signature (keyed stores only; unsigned baselines are refused), that the manifest
still hashes to its version and sits in its own directory, and the SHA-256, dtype and shape of
every file. Without a key, ``created_at`` is not protected (it is not part of the version); with a
key, every byte of the manifest's content is. The ``ACTIVE`` pointer and the audit log are not
signed: the store protects baselines against modification, not the choice of the active one
against someone who can write to ``ROOT``.

Concurrency: every writer (save, promote, rollback) holds an exclusive ``fcntl.flock`` on
``ROOT/.lock`` for the whole operation, across threads and processes of one host (flock is not
reliable on NFS). Readers take no lock: versions appear with an atomic ``os.replace`` of a complete
directory and never change afterwards, ``ACTIVE`` is replaced atomically, and an audit line that is
still being written is skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import io
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from numpy.lib.format import dtype_to_descr

from baselines.errors import (
    BaselineError,
    BaselineNotFound,
    IntegrityError,
    InvalidInputError,
    SignatureError,
    StoreError,
)

__all__ = [
    "FORMAT",
    "SIGNATURE_ALG",
    "BaselineInfo",
    "BaselineStore",
    "FileStatus",
    "SignatureStatus",
    "StoredBaseline",
    "VerifyReport",
    "canonical_json",
    "content_version",
]

#: Version of the on-disk manifest layout this module reads and writes.
FORMAT = 1
#: The only signature algorithm the store writes and accepts.
SIGNATURE_ALG = "hmac-sha256"

FileStatus = Literal["ok", "mismatch", "missing"]
SignatureStatus = Literal["ok", "missing", "bad", "unchecked"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NAME_RULE = "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
_VERSION_RE = re.compile(r"[0-9a-f]{16}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_RESERVED_MODEL_IDS = frozenset({"audit.jsonl"})
_MIN_KEY_BYTES = 16
_TMP_PREFIX = ".tmp-"
_MANIFEST = "manifest.json"
_ACTIVE = "ACTIVE"
_AUDIT = "audit.jsonl"
_LOCK = ".lock"

Array = npt.NDArray[Any]


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaselineInfo:
    """What the store knows about one stored version, without its arrays.

    Parameters
    ----------
    model_id
        The model the baseline belongs to.
    version
        16 hex digits naming the content (see :func:`content_version`).
    created_at
        When this content was first written (UTC).
    active
        Whether this version was the model's active one when the info was read.
    path
        Directory holding the version's ``.npy`` files and ``manifest.json``.
    meta
        The metadata as stored (its JSON form: tuples come back as lists).

    Examples
    --------
    >>> info = BaselineInfo("m", "0123456789abcdef", datetime(2024, 5, 1, tzinfo=UTC), True,
    ...                     Path("/store/m/0123456789abcdef"), {"rows": 10})
    >>> info.label
    'm/0123456789abcdef'
    """

    model_id: str
    version: str
    created_at: datetime
    active: bool
    path: Path
    meta: dict[str, Any]

    @property
    def label(self) -> str:
        """``model_id/version``, as messages print it."""
        return f"{self.model_id}/{self.version}"


@dataclass(frozen=True)
class StoredBaseline:
    """A verified baseline: its info, its arrays and its metadata.

    The arrays are fresh copies read with ``allow_pickle=False``; the caller owns them.

    Examples
    --------
    >>> info = BaselineInfo("m", "0123456789abcdef", datetime(2024, 5, 1, tzinfo=UTC), True,
    ...                     Path("/store/m/0123456789abcdef"), {"rows": 10})
    >>> b = StoredBaseline(info, {"edges": np.array([0.0, 1.0])}, info.meta)
    >>> b.version, b.arrays["edges"].shape
    ('0123456789abcdef', (2,))
    """

    info: BaselineInfo
    arrays: dict[str, Array]
    meta: dict[str, Any]

    @property
    def model_id(self) -> str:
        """Shortcut for ``info.model_id``."""
        return self.info.model_id

    @property
    def version(self) -> str:
        """Shortcut for ``info.version``."""
        return self.info.version


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of :meth:`BaselineStore.verify`: every check, nothing raised.

    Parameters
    ----------
    ok
        True when the baseline would load: no problem at all.
    files
        Each file listed in the manifest: ``"ok"``, ``"mismatch"`` (digest, dtype or shape differ,
        or it is not a readable ``.npy``) or ``"missing"``.
    signature
        ``"ok"``, ``"missing"`` (unsigned, keyed store), ``"bad"`` (wrong key, modified manifest or
        unreadable manifest, keyed store) or ``"unchecked"`` (the store has no key).
    problems
        One readable line per problem, in the order they were found.
    model_id, version
        The baseline that was checked.

    Examples
    --------
    >>> r = VerifyReport(False, {"edges": "mismatch", "counts": "ok"}, "unchecked",
    ...                  ["baseline m/0123456789abcdef file edges.npy: SHA-256 mismatch"],
    ...                  "m", "0123456789abcdef")
    >>> r.summary()
    'm/0123456789abcdef: FAILED: baseline m/0123456789abcdef file edges.npy: SHA-256 mismatch'
    """

    ok: bool
    files: dict[str, FileStatus]
    signature: SignatureStatus
    problems: list[str]
    model_id: str
    version: str

    def summary(self) -> str:
        """One line for a command-line tool: ``OK`` with counts, or the first problem."""
        if self.ok:
            return f"{self.model_id}/{self.version}: OK ({len(self.files)} files, signature {self.signature})"
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"{self.model_id}/{self.version}: FAILED: {self.problems[0]}{more}"


# --------------------------------------------------------------------------------------------
# Canonical forms
# --------------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """The canonical UTF-8 JSON that versions and signatures are computed over.

    Examples
    --------
    >>> canonical_json({"b": 1, "a": [1.5, "é"]})
    b'{"a":[1.5,"\\xc3\\xa9"],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def content_version(model_id: str, digests: Mapping[str, str], meta: Mapping[str, Any]) -> str:
    """The version of a baseline: 16 hex digits of SHA-256 over its model id, file digests and meta.

    ``digests`` maps each array name to the SHA-256 (hex) of its ``.npy`` file. ``created_at`` and the
    signature are deliberately left out, so the same content always gets the same version.

    Examples
    --------
    >>> content_version("m", {"edges": "00" * 32}, {"rows": 10})
    '7c8627d60d32e9a3'
    """
    payload = {"model_id": model_id, "files": dict(digests), "meta": dict(meta)}
    return hashlib.sha256(canonical_json(payload)).hexdigest()[:16]


def _signature_value(key: bytes, manifest: Mapping[str, Any]) -> str:
    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    return hmac.new(key, canonical_json(unsigned), hashlib.sha256).hexdigest()


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"created_at is {value!r}, not an RFC 3339 string")
    t = datetime.fromisoformat(value)
    if t.tzinfo is None:
        raise ValueError(f"created_at {value!r} has no time zone")
    return t.astimezone(UTC)


def _short(digest: str) -> str:
    return digest[:12] + "..."


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise InvalidInputError(f"invalid {what} {value!r}: use {_NAME_RULE}")
    return value


def _check_model_id(model_id: Any) -> str:
    _check_name(model_id, "model id")
    if model_id in _RESERVED_MODEL_IDS:
        raise InvalidInputError(f"invalid model id {model_id!r}: the name is reserved for the store's own files")
    return str(model_id)


def _check_version(version: Any) -> str:
    return _check_name(version, "version")


def _check_text(value: Any, what: str, *, allow_empty: bool) -> str:
    if not isinstance(value, str) or (not allow_empty and not value):
        kind = "a string" if allow_empty else "a non-empty string"
        raise InvalidInputError(f"{what} must be {kind}, got {value!r}")
    return value


def _prepare_arrays(arrays: Any) -> dict[str, Array]:
    if not isinstance(arrays, Mapping):
        raise InvalidInputError(f"arrays must be a mapping of name -> numpy array, got {type(arrays).__name__}")
    out: dict[str, Array] = {}
    folded: dict[str, str] = {}
    for name, value in arrays.items():
        _check_name(name, "array name")
        if name.lower() in folded:
            raise InvalidInputError(
                f"array names {folded[name.lower()]!r} and {name!r} differ only in case; "
                "their files would collide on case-insensitive file systems"
            )
        folded[name.lower()] = name
        if isinstance(value, np.ma.MaskedArray):
            raise InvalidInputError(
                f"array {name!r} is a masked array, whose mask .npy cannot keep; store the mask as an array of its own"
            )
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise InvalidInputError(
                f"array {name!r} has dtype {arr.dtype} (Python objects), which cannot be stored "
                "without pickle; convert it to a numeric, bool or fixed-width string dtype first "
                "(e.g. .astype(str))"
            )
        out[name] = arr
    return out


def _plain_json(value: Any, path: str) -> Any:
    """Copy ``value`` as plain JSON types, or raise a ValueError saying where it is not JSON."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(f"{path} is a string that is not valid Unicode") from None
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{path} is {value!r}: JSON has no NaN or infinity; store null or a string")
        return float(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInputError(
                    f"{path} has the key {k!r} of type {type(k).__name__}: JSON object keys must be strings"
                )
            out[str(k)] = _plain_json(v, f"{path}[{k!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_plain_json(v, f"{path}[{i}]") for i, v in enumerate(value)]
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    raise InvalidInputError(
        f"{path} is a {kind}, which JSON cannot store; convert it to int, float, str, bool, None, "
        "list or dict (numpy values: .item() or .tolist())"
    )


def _json_form(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


# --------------------------------------------------------------------------------------------
# File helpers
# --------------------------------------------------------------------------------------------


class _HashingWriter:
    """File-like object that hashes and counts what np.save writes through it."""

    def __init__(self, f: io.BufferedWriter) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.count += len(data)
        return self._f.write(data)


def _write_npy(path: Path, arr: Array) -> dict[str, Any]:
    with open(path, "xb") as f:
        w = _HashingWriter(f)
        np.save(w, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return {
        "sha256": w.sha256.hexdigest(),
        "dtype": _json_form(dtype_to_descr(arr.dtype)),
        "shape": list(arr.shape),
        "bytes": w.count,
    }


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{_TMP_PREFIX}{secrets.token_hex(8)}-{path.name}")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _drop_torn_tail(fd: int) -> None:
    """Cut what follows the last newline of an append-only file: a line torn by a crashed writer."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            keep = start + cut + 1
            break
        end = start
    else:
        keep = 0
    if keep != size:
        os.ftruncate(fd, keep)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads_strict(raw: bytes | str) -> Any:
    return json.loads(raw, parse_constant=_reject_constant)


@contextmanager
def _io_errors(action: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise StoreError(f"{action}: {e.strerror or e}{where}") from e


# --------------------------------------------------------------------------------------------
# Manifest parsing
# --------------------------------------------------------------------------------------------


def _parse_manifest(raw: bytes) -> dict[str, Any]:
    """Parse and type-check a manifest; ValueError says what is wrong, _FormatError a newer format."""
    m = _loads_strict(raw)
    if not isinstance(m, dict):
        raise ValueError("it is not a JSON object")
    fmt = m.get("format")
    if fmt != FORMAT:
        raise _FormatError(fmt)
    for key in ("model_id", "version", "created_at"):
        if not isinstance(m.get(key), str):
            raise ValueError(f"{key!r} is missing or not a string")
    _parse_time(m["created_at"])
    if not isinstance(m.get("meta"), dict):
        raise ValueError("'meta' is missing or not an object")
    files = m.get("files")
    if not isinstance(files, dict):
        raise ValueError("'files' is missing or not an object")
    for name, entry in files.items():
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"file name {name!r} is not a valid array name")
        if not isinstance(entry, dict):
            raise ValueError(f"entry of {name!r} is not an object")
        if not isinstance(entry.get("sha256"), str) or not _SHA256_RE.fullmatch(entry["sha256"]):
            raise ValueError(f"sha256 of {name!r} is not 64 lowercase hex digits")
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"shape of {name!r} is not a list of sizes")
        if not isinstance(entry.get("bytes"), int) or entry["bytes"] < 0:
            raise ValueError(f"bytes of {name!r} is not a size")
        if "dtype" not in entry:
            raise ValueError(f"dtype of {name!r} is missing")
    if "signature" not in m:
        raise ValueError("'signature' is missing (it is null for unsigned baselines)")
    sig = m["signature"]
    if sig is not None and not (
        isinstance(sig, dict) and all(isinstance(sig.get(k), str) for k in ("alg", "key_id", "value"))
    ):
        raise ValueError("'signature' is neither null nor an object with alg, key_id and value")
    canonical_json(m)  # strings JSON can escape but UTF-8 cannot encode (lone surrogates) raise here
    return m


class _FormatError(Exception):
    def __init__(self, fmt: Any) -> None:
        super().__init__(fmt)
        self.fmt = fmt


@dataclass(frozen=True)
class _Problem:
    error: type[BaselineError]
    message: str


@dataclass
class _Inspection:
    model_id: str
    version: str
    path: Path
    manifest: dict[str, Any] | None = None
    files: dict[str, FileStatus] = field(default_factory=dict)
    signature: SignatureStatus = "unchecked"
    problems: list[_Problem] = field(default_factory=list)
    arrays: dict[str, Array] = field(default_factory=dict)

    def report(self) -> VerifyReport:
        return VerifyReport(
            ok=not self.problems,
            files=dict(self.files),
            signature=self.signature,
            problems=[p.message for p in self.problems],
            model_id=self.model_id,
            version=self.version,
        )

    def raise_first(self, prefix: str = "") -> None:
        if self.problems:
            p = self.problems[0]
            raise p.error(prefix + p.message)


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class BaselineStore:
    """Versioned, content-addressed store of model baselines, signed when given a key.

    Parameters
    ----------
    root
        Directory of the store; created on the first write.
    signing_key
        Secret HMAC key (at least 16 bytes). With it, every save is signed and only baselines with a
        valid signature by this key load or get promoted. Without it, signatures are not checked
        (reported as ``"unchecked"``) and new baselines are unsigned.
    key_id
        Name of the key, written next to each signature so a key rotation can be recognised.

    Examples
    --------
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = BaselineStore(tmp.name, signing_key=b"k" * 32, key_id="ci")
    >>> v1 = store.save("fraud-model", {"edges": np.array([0.0, 0.5, 1.0])}, {"rows": 1000})
    >>> v1.active, len(v1.version)
    (True, 16)
    >>> store.save("fraud-model", {"edges": np.array([0.0, 0.5, 1.0])}, {"rows": 1000}).version == v1.version
    True
    >>> v2 = store.save("fraud-model", {"edges": np.array([0.0, 0.4, 1.0])}, {"rows": 2000}, promote=True)
    >>> store.load("fraud-model").meta
    {'rows': 2000}
    >>> store.rollback("fraud-model", reason="v2 alerts too often") == v1.version
    True
    >>> store.load("fraud-model").arrays["edges"]
    array([0. , 0.5, 1. ])
    >>> store.verify("fraud-model").signature
    'ok'
    >>> [e["action"] for e in store.audit_log("fraud-model")]
    ['save', 'promote', 'save', 'promote', 'rollback']
    >>> tmp.cleanup()
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        signing_key: bytes | None = None,
        key_id: str = "default",
    ) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"baseline store root {self.root} exists and is not a directory")
        if signing_key is not None:
            if not isinstance(signing_key, bytes):
                raise InvalidInputError(f"signing_key must be bytes, got {type(signing_key).__name__}")
            if len(signing_key) < _MIN_KEY_BYTES:
                raise InvalidInputError(
                    f"signing_key has {len(signing_key)} bytes; use at least {_MIN_KEY_BYTES} random bytes"
                )
        self._key = signing_key
        self.key_id = _check_name(key_id, "key id")

    def __repr__(self) -> str:
        signed = f"signed with key {self.key_id!r}" if self._key is not None else "unsigned"
        return f"BaselineStore({str(self.root)!r}, {signed})"

    @property
    def signed(self) -> bool:
        """Whether this store signs what it saves and refuses baselines without a valid signature."""
        return self._key is not None

    # ---------------------------------------------------------------------------- writing

    def save(
        self,
        model_id: str,
        arrays: Mapping[str, npt.ArrayLike],
        meta: Mapping[str, Any],
        *,
        actor: str = "inferwatch",
        promote: bool | None = None,
    ) -> BaselineInfo:
        """Store a baseline and return its info; saving content that is already stored is a no-op.

        Parameters
        ----------
        model_id
            Model the baseline belongs to.
        arrays
            Name -> array. Names follow the model-id rule; object arrays are refused.
        meta
            JSON-serializable metadata (string keys, finite floats); stored in its JSON form.
        actor
            Who saves, for the audit log.
        promote
            True: make it the active version. False: never. None: only if the model has no active
            version yet.

        Raises
        ------
        InvalidInputError
            A malformed model id or array name, an object array, or metadata JSON cannot store.
        IntegrityError, SignatureError
            The same content is already stored but no longer verifies (it is left untouched).
        StoreError
            The files could not be written.
        """
        model_id = _check_model_id(model_id)
        actor = _check_text(actor, "actor", allow_empty=False)
        prepared = _prepare_arrays(arrays)
        if not isinstance(meta, Mapping):
            raise InvalidInputError(f"meta must be a mapping, got {type(meta).__name__}")
        plain_meta: dict[str, Any] = _plain_json(meta, "meta")

        with self._write_lock(), _io_errors(f"cannot save baseline of {model_id} in {self.root}"):
            model_dir = self.root / model_id
            model_dir.mkdir(parents=True, exist_ok=True)
            self._remove_leftovers(model_dir)
            previous = self._read_active(model_id)
            tmp = model_dir / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
            os.mkdir(tmp)
            try:
                files = {name: _write_npy(tmp / f"{name}.npy", arr) for name, arr in prepared.items()}
                digests = {name: entry["sha256"] for name, entry in files.items()}
                version = content_version(model_id, digests, plain_meta)
                vdir = model_dir / version
                if vdir.exists():
                    self._reuse_existing(model_id, version, digests, plain_meta, actor, previous)
                else:
                    manifest: dict[str, Any] = {
                        "format": FORMAT,
                        "model_id": model_id,
                        "version": version,
                        "created_at": _utc_now(),
                        "files": files,
                        "meta": plain_meta,
                        "signature": None,
                    }
                    manifest["signature"] = self._sign(manifest)
                    _write_json_atomic(tmp / _MANIFEST, manifest)  # also fsyncs tmp
                    os.replace(tmp, vdir)
                    _fsync_dir(model_dir)
                    self._append_audit("save", model_id, version, previous, actor, "")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

            if promote is None:
                do_promote, reason = previous is None, "first version of the model"
            else:
                do_promote, reason = promote, "promoted on save"
            if do_promote and previous != version:
                self._set_active(model_id, version, previous, "promote", actor, reason)
            return self._info(model_id, version)

    def promote(self, model_id: str, version: str, *, actor: str = "inferwatch", reason: str = "") -> None:
        """Make ``version`` the model's active baseline, after verifying it.

        Raises
        ------
        BaselineNotFound
            No such model or version.
        IntegrityError, SignatureError
            The version does not verify; the active version is left as it was.
        """
        model_id = _check_model_id(model_id)
        version = _check_version(version)
        actor = _check_text(actor, "actor", allow_empty=False)
        reason = _check_text(reason, "reason", allow_empty=True)
        with self._write_lock(), _io_errors(f"cannot promote {model_id}/{version}"):
            self._require_model(model_id)
            self._inspect(model_id, version).raise_first("refusing to promote: ")
            try:
                previous = self._read_active(model_id)
            except StoreError:
                previous = None  # an unreadable ACTIVE is what an explicit promotion repairs
            self._set_active(model_id, version, previous, "promote", actor, reason)

    def rollback(self, model_id: str, *, actor: str = "inferwatch", reason: str = "") -> str:
        """Re-activate the version that was active before the current one; return it.

        The history is a stack replayed from the audit log: each promotion pushes a version, each
        rollback pops one. The target is verified first.

        Raises
        ------
        BaselineNotFound
            No such model.
        StoreError
            No earlier version to go back to, or ``ACTIVE`` disagrees with the audit log.
        IntegrityError, SignatureError
            The earlier version no longer verifies; nothing is changed.
        """
        model_id = _check_model_id(model_id)
        actor = _check_text(actor, "actor", allow_empty=False)
        reason = _check_text(reason, "reason", allow_empty=True)
        with self._write_lock(), _io_errors(f"cannot roll back {model_id}"):
            self._require_model(model_id)
            current = self._read_active(model_id)
            if current is None:
                raise StoreError(f"model {model_id} has no active version to roll back from")
            stack = self._history(model_id)
            if not stack or stack[-1] != current:
                logged = stack[-1] if stack else "none"
                raise StoreError(
                    f"model {model_id}: ACTIVE is {current} but the audit log's last promotion is {logged}; "
                    "promote a version explicitly to bring them back in line"
                )
            if len(stack) < 2:
                raise StoreError(f"model {model_id}: nothing to roll back to, {current} is the first version promoted")
            target = stack[-2]
            self._inspect(model_id, target).raise_first(f"refusing to roll back {model_id} to {target}: ")
            self._set_active(model_id, target, current, "rollback", actor, reason)
            return target

    # ---------------------------------------------------------------------------- reading

    def load(self, model_id: str, version: str | None = None) -> StoredBaseline:
        """Load and verify a baseline (``version=None``: the active one).

        Raises
        ------
        BaselineNotFound
            No such model or version, or the model has no active version.
        SignatureError
            Keyed store: the baseline is unsigned, signed with another key, or its manifest changed.
        IntegrityError
            A file is missing or differs from its digest, or the manifest does not match its version.
        """
        model_id = _check_model_id(model_id)
        version = self._resolve(model_id, version)
        with _io_errors(f"cannot read baseline {model_id}/{version}"):
            insp = self._inspect(model_id, version)
        insp.raise_first()
        if insp.manifest is None:  # pragma: no cover - raise_first raised: no manifest is a problem
            raise StoreError(f"baseline {model_id}/{version}: {_MANIFEST} could not be read")
        info = self._info_from_manifest(insp.manifest, insp.path, self.active_version(model_id))
        return StoredBaseline(info=info, arrays=insp.arrays, meta=info.meta)

    def verify(self, model_id: str, version: str | None = None) -> VerifyReport:
        """Check a baseline like :meth:`load` does and report every finding instead of raising.

        Only a missing model or version (:class:`BaselineNotFound`), an unreadable ``ACTIVE`` pointer
        when ``version`` is None (:class:`StoreError`) or a malformed argument raise.
        """
        model_id = _check_model_id(model_id)
        version = self._resolve(model_id, version)
        with _io_errors(f"cannot read baseline {model_id}/{version}"):
            return self._inspect(model_id, version).report()

    def list_models(self) -> list[str]:
        """Models with at least one stored version, sorted."""
        if not self.root.is_dir():
            return []
        with _io_errors(f"cannot list {self.root}"):
            return sorted(
                d.name
                for d in self.root.iterdir()
                if _NAME_RE.fullmatch(d.name)
                and d.name not in _RESERVED_MODEL_IDS
                and d.is_dir()
                and self._version_ids(d.name)
            )

    def list_versions(self, model_id: str) -> list[BaselineInfo]:
        """Stored versions of a model, oldest first, marking the active one.

        The versions are listed, not verified: see :meth:`verify`.

        Raises
        ------
        BaselineNotFound
            The model has no stored version.
        IntegrityError
            A version's manifest is missing or unreadable (the message names it).
        """
        model_id = _check_model_id(model_id)
        with _io_errors(f"cannot list versions of {model_id}"):
            self._require_model(model_id)
            active = self._read_active(model_id)
            infos = [
                self._info_from_manifest(self._read_manifest(model_id, v), self.root / model_id / v, active)
                for v in self._version_ids(model_id)
            ]
        return sorted(infos, key=lambda i: (i.created_at, i.version))

    def active_version(self, model_id: str) -> str | None:
        """The model's active version, or None if it has none (or is not in the store)."""
        model_id = _check_model_id(model_id)
        with _io_errors(f"cannot read the active version of {model_id}"):
            return self._read_active(model_id)

    def audit_log(self, model_id: str | None = None) -> list[dict[str, Any]]:
        """Audit entries in the order they were written, optionally of one model only.

        Each entry is ``{"ts", "action", "model_id", "version", "previous", "actor", "reason"}`` with
        action ``"save"``, ``"promote"`` or ``"rollback"``; ``previous`` is the version that was active
        before the action.
        """
        if model_id is not None:
            model_id = _check_model_id(model_id)
        with _io_errors(f"cannot read {self.root / _AUDIT}"):
            entries = self._read_audit()
        return [e for e in entries if model_id is None or e.get("model_id") == model_id]

    # ---------------------------------------------------------------------------- internals

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        with _io_errors(f"cannot lock baseline store {self.root}"):
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _sign(self, manifest: Mapping[str, Any]) -> dict[str, str] | None:
        if self._key is None:
            return None
        return {"alg": SIGNATURE_ALG, "key_id": self.key_id, "value": _signature_value(self._key, manifest)}

    def _version_ids(self, model_id: str) -> list[str]:
        model_dir = self.root / model_id
        if not model_dir.is_dir():
            return []
        return sorted(d.name for d in model_dir.iterdir() if _VERSION_RE.fullmatch(d.name) and d.is_dir())

    def _require_model(self, model_id: str) -> None:
        if not self._version_ids(model_id):
            raise BaselineNotFound(f"no baseline for model {model_id} in {self.root}")

    def _resolve(self, model_id: str, version: str | None) -> str:
        """The version to act on; raise BaselineNotFound when there is none."""
        if version is not None:
            version = _check_version(version)
            if not (self.root / model_id / version).is_dir():
                self._require_model(model_id)
                raise BaselineNotFound(f"no version {version} of model {model_id} in {self.root}")
            return version
        self._require_model(model_id)
        active = self.active_version(model_id)
        if active is None:
            choices = ", ".join(self._version_ids(model_id))
            raise BaselineNotFound(f"model {model_id} has no active version; promote one of: {choices}")
        if not (self.root / model_id / active).is_dir():
            raise BaselineNotFound(f"model {model_id}: its active version {active} is missing from {self.root}")
        return active

    def _read_active(self, model_id: str) -> str | None:
        path = self.root / model_id / _ACTIVE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = _loads_strict(raw)
            version = data["version"]
            if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
                raise ValueError(f"version {version!r} is not 16 hex digits")
        except (ValueError, TypeError, KeyError) as e:
            raise StoreError(f"{path} is unreadable ({e}); promote a version to rewrite it") from None
        return version

    def _read_manifest(self, model_id: str, version: str) -> dict[str, Any]:
        """The parsed manifest, or IntegrityError / StoreError saying why there is none."""
        vdir = self.root / model_id / version
        label = f"baseline {model_id}/{version}"
        try:
            raw = (vdir / _MANIFEST).read_bytes()
        except FileNotFoundError:
            raise IntegrityError(
                f"{label}: {_MANIFEST} is missing: the baseline is incomplete or was damaged"
            ) from None
        try:
            return _parse_manifest(raw)
        except _FormatError as e:
            raise StoreError(
                f"{label}: {_MANIFEST} has format {e.fmt!r}, this inferwatch reads format {FORMAT}; upgrade inferwatch"
            ) from None
        except (ValueError, UnicodeDecodeError) as e:
            raise IntegrityError(
                f"{label}: {_MANIFEST} is unreadable ({e}): it was damaged or modified after it was written"
            ) from None

    def _inspect(self, model_id: str, version: str) -> _Inspection:
        """Run every check on one version, collecting problems; only a missing version raises."""
        vdir = self.root / model_id / version
        if not vdir.is_dir():
            raise BaselineNotFound(f"no version {version} of model {model_id} in {self.root}")
        label = f"baseline {model_id}/{version}"
        insp = _Inspection(model_id, version, vdir, signature="unchecked" if self._key is None else "bad")
        try:
            manifest = self._read_manifest(model_id, version)
        except (IntegrityError, StoreError) as e:
            insp.problems.append(_Problem(type(e), str(e)))
            return insp
        insp.manifest = manifest

        # 1. Signature: in a keyed store, nothing in the manifest is trusted before it.
        sig = manifest["signature"]
        if self._key is None:
            insp.signature = "unchecked"
        elif sig is None:
            insp.signature = "missing"
            insp.problems.append(
                _Problem(
                    SignatureError,
                    f"{label} is not signed, and this store only accepts baselines signed with key {self.key_id!r}",
                )
            )
        elif sig["alg"] != SIGNATURE_ALG:
            insp.problems.append(
                _Problem(SignatureError, f"{label} is signed with {sig['alg']!r}; only {SIGNATURE_ALG} is accepted")
            )
        elif sig["key_id"] != self.key_id:
            insp.problems.append(
                _Problem(
                    SignatureError,
                    f"{label} is signed with key {sig['key_id']!r}, but this store holds key "
                    f"{self.key_id!r}; save it again with this key to re-sign it",
                )
            )
        elif not hmac.compare_digest(
            _signature_value(self._key, manifest).encode("ascii"), sig["value"].encode("utf-8", "replace")
        ):
            insp.problems.append(
                _Problem(
                    SignatureError,
                    f"{label}: signature does not match {_MANIFEST}: the manifest was modified after it was "
                    f"signed, or it was signed with a different key named {self.key_id!r}",
                )
            )
        else:
            insp.signature = "ok"

        # 2. The manifest is the one of this directory and still hashes to its version.
        if manifest["model_id"] != model_id or manifest["version"] != version:
            insp.problems.append(
                _Problem(
                    IntegrityError,
                    f"{label}: {_MANIFEST} describes {manifest['model_id']}/{manifest['version']}: "
                    "it was copied or moved from another baseline",
                )
            )
        digests = {name: entry["sha256"] for name, entry in manifest["files"].items()}
        rehashed = content_version(manifest["model_id"], digests, manifest["meta"])
        if rehashed != manifest["version"]:
            insp.problems.append(
                _Problem(
                    IntegrityError,
                    f"{label}: {_MANIFEST} no longer matches its version (its content hashes to {rehashed}): "
                    "the metadata or the file list was modified after it was written",
                )
            )

        # 3. Every file: present, same digest, same dtype and shape as listed.
        for name in sorted(manifest["files"]):
            entry = manifest["files"][name]
            where = f"{label} file {name}.npy"
            try:
                data = (vdir / f"{name}.npy").read_bytes()
            except FileNotFoundError:
                insp.files[name] = "missing"
                insp.problems.append(
                    _Problem(
                        IntegrityError,
                        f"{where}: missing (listed in {_MANIFEST} but not on disk): the baseline is "
                        "incomplete or was modified after it was written",
                    )
                )
                continue
            found = hashlib.sha256(data).hexdigest()
            if found != entry["sha256"]:
                insp.files[name] = "mismatch"
                insp.problems.append(
                    _Problem(
                        IntegrityError,
                        f"{where}: SHA-256 mismatch (expected {_short(entry['sha256'])}, "
                        f"found {_short(found)}): the baseline was modified after it was written",
                    )
                )
                continue
            try:
                arr = np.load(io.BytesIO(data), allow_pickle=False)
                if not isinstance(arr, np.ndarray):
                    raise ValueError("it is not a single .npy array")
            except (ValueError, OSError, EOFError) as e:
                insp.files[name] = "mismatch"
                insp.problems.append(_Problem(IntegrityError, f"{where}: not a readable .npy array ({e})"))
                continue
            listed = (entry["dtype"], entry["shape"], entry["bytes"])
            held = (_json_form(dtype_to_descr(arr.dtype)), list(arr.shape), len(data))
            if listed != held:
                insp.files[name] = "mismatch"
                insp.problems.append(
                    _Problem(
                        IntegrityError,
                        f"{where}: {_MANIFEST} lists dtype {listed[0]}, shape {tuple(listed[1])}, "
                        f"{listed[2]} bytes but the file holds dtype {held[0]}, shape {tuple(held[1])}, "
                        f"{held[2]} bytes: "
                        "the manifest was modified after it was written",
                    )
                )
                continue
            insp.files[name] = "ok"
            insp.arrays[name] = arr
        return insp

    def _reuse_existing(
        self,
        model_id: str,
        version: str,
        digests: Mapping[str, str],
        meta: Mapping[str, Any],
        actor: str,
        previous: str | None,
    ) -> None:
        """Saving stored content: check it is the same and intact; re-sign it if only the signature is off."""
        insp = self._inspect(model_id, version)
        if insp.manifest is None or any(p.error is not SignatureError for p in insp.problems):
            insp.raise_first(
                f"cannot save {model_id}/{version}: the same content is already stored but does not verify "
                f"(move {insp.path} aside and save again): "
            )
        assert insp.manifest is not None
        # The stored manifest hashes to its version and its files are intact: compare the content.
        stored_digests = {n: e["sha256"] for n, e in insp.manifest["files"].items()}
        if stored_digests != dict(digests) or insp.manifest["meta"] != dict(meta):
            raise StoreError(
                f"cannot save {model_id}/{version}: a different baseline is stored under the same version "
                "(truncated-hash collision); change the metadata slightly and save again"
            )
        if insp.problems:
            # Only the signature is off (unsigned, or another key): the caller has just presented
            # exactly this content, which the digests prove, so sign it with this store's key.
            manifest = dict(insp.manifest)
            manifest["signature"] = None
            manifest["signature"] = self._sign(manifest)
            _write_json_atomic(insp.path / _MANIFEST, manifest)
            reason = f"re-signed with key {self.key_id!r}"
            self._append_audit("save", model_id, version, previous, actor, reason)

    def _set_active(
        self, model_id: str, version: str, previous: str | None, action: str, actor: str, reason: str
    ) -> None:
        path = self.root / model_id / _ACTIVE
        _write_json_atomic(path, {"version": version, "updated_at": _utc_now()})
        try:
            self._append_audit(action, model_id, version, previous, actor, reason)
        except BaseException:
            if previous is None:
                path.unlink(missing_ok=True)
            else:
                _write_json_atomic(path, {"version": previous, "updated_at": _utc_now()})
            raise

    def _append_audit(
        self, action: str, model_id: str, version: str, previous: str | None, actor: str, reason: str
    ) -> None:
        entry = {
            "ts": _utc_now(),
            "action": action,
            "model_id": model_id,
            "version": version,
            "previous": previous,
            "actor": actor,
            "reason": reason,
        }
        line = json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n"
        path = self.root / _AUDIT
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _drop_torn_tail(fd)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.root)

    def _read_audit(self) -> list[dict[str, Any]]:
        path = self.root / _AUDIT
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return []
        # The part after the last newline is a line still being written (or torn by a crash): skip it.
        entries: list[dict[str, Any]] = []
        for n, line in enumerate(raw.split(b"\n")[:-1], start=1):
            if not line.strip():
                continue
            try:
                entry = _loads_strict(line)
                if not isinstance(entry, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                raise StoreError(f"{path} line {n} is not a valid audit entry ({e})") from None
            entries.append(entry)
        return entries

    def _history(self, model_id: str) -> list[str]:
        """Stack of active versions replayed from the audit log: promote pushes, rollback pops."""
        stack: list[str] = []
        for e in self._read_audit():
            if e.get("model_id") != model_id:
                continue
            version = e.get("version")
            if not isinstance(version, str):
                continue
            if e.get("action") == "promote":
                if not stack or stack[-1] != version:
                    stack.append(version)
            elif e.get("action") == "rollback":
                if stack:
                    stack.pop()
                if not stack or stack[-1] != version:
                    stack.append(version)
        return stack

    def _remove_leftovers(self, model_dir: Path) -> None:
        """Remove temporary files of writers that crashed (we hold the lock: nobody else is writing)."""
        for p in model_dir.iterdir():
            if p.name.startswith(_TMP_PREFIX):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    def _info(self, model_id: str, version: str) -> BaselineInfo:
        manifest = self._read_manifest(model_id, version)
        return self._info_from_manifest(manifest, self.root / model_id / version, self._read_active(model_id))

    @staticmethod
    def _info_from_manifest(manifest: Mapping[str, Any], path: Path, active: str | None) -> BaselineInfo:
        return BaselineInfo(
            model_id=manifest["model_id"],
            version=manifest["version"],
            created_at=_parse_time(manifest["created_at"]),
            active=manifest["version"] == active,
            path=path,
            meta=manifest["meta"],
        )
