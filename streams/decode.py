"""Inference events as JSON bytes -> one columnar :class:`~detector.schema.EventBatch` per model.

This is the throughput ceiling of the service, so there are four paths:

* a *native* path, tried first on the whole chunk: the C scanner of ``streams/_native.c`` reads
  one model's events straight into float64 columns and builds Python objects only for ids,
  categories, predictions, labels and ``ts``. It refuses every message the paths below could treat
  differently (see the C file); a refused message goes alone to the general path, and after
  :data:`_NATIVE_REFUSALS` per part the rest of the chunk goes to the paths below. A build without
  the extension skips it;
* a *typed* path, on each part of what is left: msgspec decodes every message straight
  into a Struct generated from its model's schema, checking the contract's types in C as it
  parses, and columns are read off the Structs. It takes a part only if every message fits;
  a part with a bad event, a feature outside the schema or of the wrong type, or an unknown
  model goes to the two below;
* a *fast* path that touches each event with a couple of C-level calls (``orjson.loads``,
  ``operator.itemgetter``, ``dict.get`` through ``map``) and builds columns with one numpy call;
* a *careful* path that looks at every value in Python and knows every rule of the contract.

The native, typed and fast paths only ever accept input they can prove the careful path would treat the
same way; on anything else (a bad event, a string where a number belongs, an absent feature) the
fast path hands that one stage of that one part to the careful path. All paths give identical
results (``tests/test_decode.py`` checks it), and none raises on any input: undecodable messages
become :class:`DeadLetter` values.

Messages are parsed one by one, not as one array joined with commas: joined, a message like
``{"a":1},{"b":2}`` pairs with a neighbour's unbalanced brackets to keep the element count right
and smuggles events across message boundaries; and on these ~1 KB events it was not faster.

Contract decisions the event format left open are written down in :class:`Decoder`.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date
from itertools import chain, compress, repeat
from operator import attrgetter, is_not, itemgetter
from typing import TYPE_CHECKING, Any, Final, TypeVar, Union, cast

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from detector.schema import MISSING, UNSEEN, EventBatch, Schema

if TYPE_CHECKING:  # (importing it loads the anomaly scorers and scipy: not needed to decode)
    from detector.prepared import Prepared

try:
    from streams import _native
except ImportError:  # built without the C extension: the typed path comes first
    _native = None  # type: ignore[assignment]
    logging.getLogger(__name__).warning(
        "streams._native is not built (no C compiler at install?): decoding takes the msgspec path, ~2x slower"
    )

__all__ = [
    "MAX_TS",
    "MIN_TS",
    "REASONS",
    "DeadLetter",
    "DecodeResult",
    "Decoder",
    "ModelBatch",
    "parse_events",
    "parse_ts",
]

#: Stable machine codes of :attr:`DeadLetter.reason`.
REASONS: Final = (
    "oversize",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "bad_type",
    "no_baseline",
    "future_ts",
)

#: Earliest and latest accepted event time (epoch ms): 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z,
#: the range RFC 3339 can spell, so epoch and string timestamps accept the same instants.
MIN_TS: Final = -62_135_596_800_000
MAX_TS: Final = 253_402_300_799_999

#: Pseudo feature names under which problems with the prediction, label and probabilities are
#: counted in ``violations``; ``$`` keeps them apart from a feature that happens to be called "label".
PREDICTION_KEY: Final = "$prediction"
LABEL_KEY: Final = "$label"
PROBABILITIES_KEY: Final = "$probabilities"

_DEFAULT_MAX_BYTES: Final = 1_048_576
#: Kafka 4 brokers refuse record timestamps more than an hour ahead of their clock (message.timestamp.after.max.ms).
_DEFAULT_MAX_FUTURE_MS: Final = 3_600_000
#: Chunks are decoded in parts of this many messages: each stage walks every parsed object once, and
#: a part's objects still sit in the CPU cache; 10,000-message parts were 1.7x slower (benchmarks/).
_PART: Final = 512
#: Messages per part of a chunk the native path refuses (or reads with another model's scanner) one
#: by one; after them the rest of the chunk goes to the typed path: each piece costs what a small
#: part does.
_NATIVE_REFUSALS: Final = 8
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_REQUIRED_FIELDS: Final = ("event_id", "ts", "model_id", "features")
_BYTES_TYPES: Final = frozenset({bytes, bytearray})  # len() is the size in bytes
_NUMBER_TYPES: Final = frozenset({int, float, type(None)})
_PREDICTION_TYPES: Final = frozenset({str, int, float, type(None)})
_OPTIONAL_STR_TYPES: Final = frozenset({str, type(None)})
_PROBA_TYPES: Final = frozenset({dict, list, type(None)})
_CATEGORY_TYPES: Final = frozenset({str, bool, type(None)})
_NONE: Final = frozenset({type(None)})

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Violations = dict[tuple[str, str], int]
_K = TypeVar("_K", bound=Hashable)


@dataclass(frozen=True)
class DeadLetter:
    """A message that could not become a row, with the reason, for the dead-letter topic.

    Attributes
    ----------
    index
        Position of the message in the input sequence.
    raw
        The message exactly as received (``b""`` for a message without a value).
    reason
        Stable machine code, one of :data:`REASONS`.
    detail
        One readable line naming the field and the offending value.

    Examples
    --------
    >>> parse_events([b'{"event_id": "e1"}'])[2][0].reason
    'missing_field'
    """

    index: int
    raw: bytes
    reason: str
    detail: str


@dataclass(frozen=True)
class ModelBatch:
    """The rows of one model decoded from a chunk.

    Attributes
    ----------
    model_id
        The model the rows belong to.
    batch
        The rows, in input order, laid out by the model's :class:`~detector.schema.Schema`.
    index
        ``int64`` position in the input sequence of each row of :attr:`batch` (to map rows back to
        Kafka offsets or file lines).
    violations
        ``(reason, feature) -> count`` of this model's rows; see :attr:`DecodeResult.violations`.
    prepared
        The model monitor's state-free results for these rows, when a decoding process computed them
        (:func:`streams.ahead.prepare`); None otherwise.

    Examples
    --------
    >>> s = Schema("m", numeric=("x",))
    >>> event = b'{"event_id":"a","ts":1,"model_id":"m","features":{"x":2}}'
    >>> mb = Decoder({"m": s}).decode([b"[]", event]).batches[0]
    >>> mb.model_id, mb.index.tolist(), mb.batch.numeric.tolist()
    ('m', [1], [[2.0]])
    """

    model_id: str
    batch: EventBatch
    index: I64
    violations: Violations = field(default_factory=dict)
    prepared: Prepared | None = None


@dataclass(frozen=True)
class DecodeResult:
    """Everything decoded from one chunk of messages.

    Attributes
    ----------
    batches
        One :class:`ModelBatch` per model present, in order of first appearance.
    dead
        Messages that could not become a row, in input order.
    violations
        ``(reason, feature) -> count`` of feature-level problems that did not reject the event,
        summed over models. Reasons: ``"missing"`` (absent or null), ``"wrong_type"`` (a numeric
        feature sent a string, boolean, object or array; a categorical feature sent a number, object
        or array), ``"non_finite"`` (a number too large for float64) and ``"unexpected"`` (a feature
        the schema does not know). The prediction, label and probabilities are counted under
        ``"$prediction"``, ``"$label"`` and ``"$probabilities"``; a probability array whose length
        differs from the schema's classes counts as ``("misaligned", "$probabilities")``.
    n_input
        Number of messages given; always ``sum(len(b.batch) for b in batches) + len(dead)``.

    Examples
    --------
    >>> s = Schema("m", numeric=("x", "y"))
    >>> r = Decoder({"m": s}).decode([b'{"event_id":"a","ts":1,"model_id":"m","features":{"x":"1"}}'])
    >>> sorted(r.violations.items())
    [(('missing', 'y'), 1), (('wrong_type', 'x'), 1)]
    """

    batches: list[ModelBatch]
    dead: list[DeadLetter]
    violations: Violations
    n_input: int


# ----------------------------------------------------------------------------------------------
# Timestamps


def parse_ts(value: object) -> int | None:
    """Event time as epoch milliseconds, or ``None`` if ``value`` is not a valid ``ts``.

    Accepts an integer of epoch milliseconds, a float of them (truncated toward zero) and an
    RFC 3339 string with a UTC offset (``Z`` or ``±hh:mm``; ``T``, ``t`` or a space between date and
    time; any number of fraction digits, truncated to the millisecond; a leap second ``:60`` counts
    as the next second). Booleans, naive strings without an offset and instants outside
    :data:`MIN_TS` .. :data:`MAX_TS` are invalid.

    Examples
    --------
    >>> parse_ts("2026-11-28T10:00:00.123Z"), parse_ts("2026-11-28T12:00:00.123+02:00")
    (1795860000123, 1795860000123)
    >>> parse_ts(1795860000123.9), parse_ts("yesterday"), parse_ts("2026-11-28T10:00:00")
    (1795860000123, None, None)
    """
    if isinstance(value, str):
        return _parse_rfc3339(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float) and math.isfinite(value):
        ms = int(value)
    else:
        return None
    return ms if MIN_TS <= ms <= MAX_TS else None


def _parse_rfc3339(s: str) -> int | None:
    m = _RFC3339.fullmatch(s)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, _z, sign, off_h, off_m = m.groups()
    h, mi, sec = int(hour), int(minute), int(second)
    if h > 23 or mi > 59 or sec > 60:
        return None
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    ms = (((days * 24 + h) * 60 + mi) * 60 + sec) * 1000
    if frac:
        ms += int((frac + "00")[:3])
    if sign:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            return None
        offset = (oh * 60 + om) * 60_000
        ms += -offset if sign == "+" else offset
    return ms if MIN_TS <= ms <= MAX_TS else None


def _ts_column(values: Sequence[Any]) -> I64 | None:
    """``ts`` of every event, or ``None`` if any is invalid (the caller then goes event by event)."""
    n = len(values)
    types = set(map(type, values))
    if types == {int}:
        try:
            ts = np.fromiter(values, np.int64, n)
        except OverflowError:
            return None
        if n and (ts.min() < MIN_TS or ts.max() > MAX_TS):
            return None
        return ts
    if types == {str}:
        vectorized = _rfc3339_column(values)
        if vectorized is not None:
            return vectorized
    parsed = list(map(parse_ts, values))
    if None in parsed:
        return None
    return np.fromiter(parsed, np.int64, n)


def _rfc3339_column(values: Sequence[str]) -> I64 | None:
    """Epoch ms of RFC 3339 strings, vectorized per string length; ``None`` unless all are valid.

    A regex per string cost more than the rest of decoding together. Strings of one length
    are laid out alike once the first one is known, so their digits can be read as one matrix.
    ``None`` is never final: the caller then asks :func:`parse_ts` string by string.
    """
    n = len(values)
    lengths = np.fromiter(map(len, values), np.intp, n)
    distinct = np.unique(lengths)
    if len(distinct) > 8:
        return None
    out = np.empty(n, np.int64)
    for length in distinct.tolist():
        rows = np.flatnonzero(lengths == length)
        same = values if len(rows) == n else _take(values, rows.tolist())
        ms = _rfc3339_same_length(same, length)
        if ms is None:
            return None
        out[rows] = ms
    return out


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


def _rfc3339_same_length(values: Sequence[str], length: int) -> I64 | None:
    first = _RFC3339.fullmatch(values[0])
    if first is None:
        return None
    try:
        text = "".join(values).encode("ascii")
    except UnicodeEncodeError:
        return None
    b = np.frombuffer(text, np.uint8).reshape(len(values), length)
    frac = first.end(7) - first.start(7) if first.group(7) else 0
    zone = 19 + (frac + 1 if frac else 0)
    offset = length - zone == 6
    digit_at = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, *range(20, 20 + frac)]
    if offset:
        digit_at += [zone + 1, zone + 2, zone + 4, zone + 5]
    d = b[:, digit_at] - np.uint8(48)  # wraps around: a digit iff < 10
    ok = (d < 10).all(axis=1)
    ok &= (b[:, 4] == ord("-")) & (b[:, 7] == ord("-")) & (b[:, 13] == ord(":")) & (b[:, 16] == ord(":"))
    ok &= (b[:, 10] == ord("T")) | (b[:, 10] == ord("t")) | (b[:, 10] == ord(" "))
    if frac:
        ok &= b[:, 19] == ord(".")
    if offset:
        ok &= ((b[:, zone] == ord("+")) | (b[:, zone] == ord("-"))) & (b[:, zone + 3] == ord(":"))
    else:
        ok &= (b[:, zone] == ord("Z")) | (b[:, zone] == ord("z"))
    if not ok.all():
        return None
    v = d.astype(np.int64)
    year = v[:, 0] * 1000 + v[:, 1] * 100 + v[:, 2] * 10 + v[:, 3]
    month = v[:, 4] * 10 + v[:, 5]
    day = v[:, 6] * 10 + v[:, 7]
    hour = v[:, 8] * 10 + v[:, 9]
    minute = v[:, 10] * 10 + v[:, 11]
    second = v[:, 12] * 10 + v[:, 13]
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_ok = (month >= 1) & (month <= 12)
    dim = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + ((month == 2) & leap)
    ok = (year >= 1) & month_ok & (day >= 1) & (day <= dim) & (hour <= 23) & (minute <= 59) & (second <= 60)
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    days = era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468
    ms = (((days * 24 + hour) * 60 + minute) * 60 + second) * 1000
    for k in range(min(frac, 3)):
        ms += v[:, 14 + k] * (100, 10, 1)[k]
    if offset:
        off_h = v[:, -4] * 10 + v[:, -3]
        off_m = v[:, -2] * 10 + v[:, -1]
        ok &= (off_h <= 23) & (off_m <= 59)
        sign = np.where(b[:, zone] == ord("+"), -1, 1)
        ms += sign * (off_h * 60 + off_m) * 60_000
    ok &= (ms >= MIN_TS) & (ms <= MAX_TS)
    return ms if ok.all() else None


# ----------------------------------------------------------------------------------------------
# Parsing and schema-free validation


def _show(v: object) -> str:
    """A short one-line rendering of a JSON value for a dead-letter detail."""
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "an array"
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _one_line(s: str) -> str:
    return " ".join(s.split())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_int(s: str) -> int | float:
    # Same as orjson: integers beyond 64 bits become floats (then possibly inf), never big ints.
    if len(s) <= 20:
        i = int(s)
        if -(2**63) <= i < 2**64:
            return i
    return float(s)


def _loads_overflowing(text: str) -> Any:
    """Parse JSON that orjson rejected only because a number overflows float64.

    The contract keeps such an event and counts the number as ``non_finite``; the stdlib parser
    turns it into ``inf``. Its extra leniency (NaN literals, lone surrogates) is refused.
    """
    obj = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    orjson.dumps(obj)  # raises on lone surrogates, which orjson would have refused to parse
    return obj


def _loads_one(value: object, max_bytes: int) -> tuple[Any, str, str]:
    """Parse one message: ``(object, "", "")`` or ``(None, reason, detail)``. Never raises."""
    if value is None:
        return None, "not_json", "message has no value (null, e.g. a tombstone)"
    raw: bytes | bytearray | memoryview
    if isinstance(value, str):
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError as e:
            return None, "not_utf8", _one_line(f"text is not encodable as UTF-8: {e.reason}")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = value
    else:
        return None, "not_json", f"message must be bytes, got {type(value).__name__}"
    size = raw.nbytes if isinstance(raw, memoryview) else len(raw)
    if size > max_bytes:
        return None, "oversize", f"message is {size} bytes, limit is {max_bytes}"
    try:
        return orjson.loads(raw), "", ""
    except Exception as e:
        error = str(e)
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        return None, "not_utf8", _one_line(f"invalid UTF-8 at byte {e.start}: {e.reason}")
    if "infinity" in error:
        try:
            return _loads_overflowing(text), "", ""
        except Exception:
            pass
    return None, "not_json", _one_line(f"invalid JSON: {error}")


def _parse(values: Sequence[Any], max_bytes: int, fast: bool) -> tuple[list[Any], list[int], list[DeadLetter]]:
    objs: list[Any] = []
    index: list[int] = []
    dead: list[DeadLetter] = []
    n = len(values)
    if fast and n and set(map(type, values)) <= _BYTES_TYPES and max(map(len, values)) <= max_bytes:
        # One C-level pass; a bad message stops it, is examined, and the pass resumes after it.
        parsed = map(orjson.loads, values)
        done = 0  # values[:done] are in objs or dead
        while True:
            before = len(objs)
            try:
                objs.extend(parsed)  # keeps what it appended before an exception
            except Exception:
                bad = done + len(objs) - before
            else:
                index.extend(range(done, n))
                break
            index.extend(range(done, bad))
            obj, reason, detail = _loads_one(values[bad], max_bytes)
            if reason:
                dead.append(DeadLetter(bad, _raw(values[bad]), reason, detail))
            else:
                objs.append(obj)
                index.append(bad)
            done = bad + 1
        return objs, index, dead
    for i, v in enumerate(values):
        obj, reason, detail = _loads_one(v, max_bytes)
        if reason:
            dead.append(DeadLetter(i, _raw(v), reason, detail))
        else:
            objs.append(obj)
            index.append(i)
    return objs, index, dead


def _raw(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return b""


def _check_event(obj: Any) -> tuple[str, str] | None:
    """``(reason, detail)`` of the first contract violation of one parsed message, else ``None``."""
    if type(obj) is not dict:
        return "not_object", f"message must be a JSON object, got {_show(obj)}"
    for name in _REQUIRED_FIELDS:
        v = obj.get(name)
        if v is None:
            return "missing_field", f"required field {name!r} is {'null' if name in obj else 'absent'}"
        if name == "ts":
            if parse_ts(v) is None:
                return "bad_type", f"field 'ts' must be epoch ms or RFC 3339 with an offset, got {_show(v)}"
        elif name == "features":
            if type(v) is not dict:
                return "bad_type", f"field 'features' must be an object, got {_show(v)}"
        elif type(v) is not str or not v:
            return "bad_type", f"field {name!r} must be a non-empty string, got {_show(v)}"
    for name in ("model_version", "client_id"):
        v = obj.get(name)
        if v is not None and type(v) is not str:
            return "bad_type", f"field {name!r} must be a string or null, got {_show(v)}"
    for name in ("prediction", "label"):
        v = obj.get(name)
        if type(v) not in _PREDICTION_TYPES:
            return "bad_type", f"field {name!r} must be a number, a string or null, got {_show(v)}"
    p = obj.get("probabilities")
    if type(p) not in _PROBA_TYPES:
        return "bad_type", f"field 'probabilities' must be an object or an array of numbers, got {_show(p)}"
    entries: Iterable[tuple[Any, Any]] = p.items() if type(p) is dict else enumerate(p or ())
    for k, v in entries:
        if type(v) not in _NUMBER_TYPES:
            return "bad_type", f"field 'probabilities' has a non-numeric entry {k!r}: {_show(v)}"
    return None


@dataclass
class _Events:
    """Validated events, column by column (internal; lists are sliced per model)."""

    index: list[int]
    objs: list[dict[str, Any]]
    event_id: Sequence[str]
    ts: I64
    model_id: Sequence[str]
    features: Sequence[dict[str, Any]]
    client_id: Sequence[Any]
    prediction: Sequence[Any]
    probabilities: Sequence[Any]
    label: Sequence[Any]


def _column(objs: Iterable[dict[str, Any]], key: str) -> list[Any]:
    return list(map(dict.get, objs, repeat(key)))


def _validate_fast(objs: list[Any], index: list[int]) -> _Events | None:
    """Columns of ``objs`` if every event is valid, else ``None``; ~10 C-level passes over the chunk."""
    try:
        # absent fields come back as None and fail the type checks below
        ids, tss, mids, feats = (_column(objs, key) for key in _REQUIRED_FIELDS)
    except TypeError:  # a message is not an object
        return None
    if not objs:
        return None
    if (
        set(map(type, ids)) != {str}
        or "" in ids
        or set(map(type, mids)) != {str}
        or "" in mids
        or set(map(type, feats)) != {dict}
    ):
        return None
    ts = _ts_column(tss)
    if ts is None:
        return None
    client = _column(objs, "client_id")
    pred = _column(objs, "prediction")
    proba = _column(objs, "probabilities")
    label = _column(objs, "label")
    if (
        not set(map(type, client)) <= _OPTIONAL_STR_TYPES
        or not set(map(type, _column(objs, "model_version"))) <= _OPTIONAL_STR_TYPES
        or not set(map(type, pred)) <= _PREDICTION_TYPES
        or not set(map(type, label)) <= _PREDICTION_TYPES
    ):
        return None
    proba_types = set(map(type, proba))
    if not proba_types <= _PROBA_TYPES:
        return None
    if proba_types != _NONE:
        present = [p for p in proba if p is not None] if type(None) in proba_types else proba
        entries = chain.from_iterable(
            map(dict.values, present)
            if proba_types - _NONE == {dict}
            else (p.values() if type(p) is dict else p for p in present)
        )
        if not set(map(type, entries)) <= _NUMBER_TYPES:
            return None
    return _Events(index, objs, ids, ts, mids, feats, client, pred, proba, label)


def _validate(objs: list[Any], index: list[int], values: Sequence[Any], fast: bool) -> tuple[_Events, list[DeadLetter]]:
    if fast:
        events = _validate_fast(objs, index)
        if events is not None:
            return events, []
    good: list[dict[str, Any]] = []
    good_index: list[int] = []
    dead: list[DeadLetter] = []
    for obj, i in zip(objs, index, strict=True):
        problem = _check_event(obj)
        if problem is None:
            good.append(obj)
            good_index.append(i)
        else:
            dead.append(DeadLetter(i, _raw(values[i]), *problem))
    ts = np.fromiter((parse_ts(o["ts"]) for o in good), np.int64, len(good))
    return (
        _Events(
            good_index,
            good,
            _column(good, "event_id"),
            ts,
            _column(good, "model_id"),
            _column(good, "features"),
            _column(good, "client_id"),
            _column(good, "prediction"),
            _column(good, "probabilities"),
            _column(good, "label"),
        ),
        dead,
    )


def parse_events(
    values: Sequence[bytes], *, max_message_bytes: int = _DEFAULT_MAX_BYTES
) -> tuple[list[dict[str, Any]], list[int], list[DeadLetter]]:
    """Parse and validate messages against the event contract, without any schema.

    Used to build baselines from reference files, where no schema exists yet.

    Parameters
    ----------
    values
        One JSON event per item (a Kafka message value or a JSONL line).
    max_message_bytes
        Longer messages are dead letters with reason ``"oversize"`` and are not parsed.

    Returns
    -------
    events
        The parsed objects of the valid events, in input order.
    positions
        Position in ``values`` of each of ``events``.
    dead
        Dead letters of the other messages, in input order.

    Examples
    --------
    >>> event = b'{"event_id":"a","ts":1,"model_id":"m","features":{}}'
    >>> events, positions, dead = parse_events([b"{", event])
    >>> positions, [(d.index, d.reason) for d in dead]
    ([1], [(0, 'not_json')])
    """
    events: list[dict[str, Any]] = []
    positions: list[int] = []
    dead: list[DeadLetter] = []
    for start in range(0, len(values), _PART):
        part = values[start : start + _PART]
        objs, index, part_dead = _parse(part, max_message_bytes, True)
        ev, invalid = _validate(objs, index, part, True)
        events.extend(ev.objs)
        positions.extend(i + start for i in ev.index)
        dead.extend(replace(d, index=d.index + start) for d in sorted(part_dead + invalid, key=_by_index))
    return events, positions, dead


def _by_index(d: DeadLetter) -> int:
    return d.index


# ----------------------------------------------------------------------------------------------
# Encoding one model's events by its schema


def _number(v: Any) -> tuple[float, str]:
    """A numeric value and its violation reason ("" if none)."""
    t = type(v)
    if t is float or t is int:
        try:
            x = float(v)
        except OverflowError:
            x = math.inf
        return (x, "") if math.isfinite(x) else (math.nan, "non_finite")
    if v is None:
        return math.nan, "missing"
    return math.nan, "wrong_type"


def _number_key(v: int | float) -> str:
    """The category a JSON number stands for: ``1`` and ``1.0`` are the same JSON number, ``"1"``."""
    if type(v) is float and v.is_integer():
        return str(int(v))
    return str(v) if type(v) is int else repr(v)


def _category(v: Any, lut: Mapping[Any, int]) -> tuple[int, str]:
    """A categorical code and its violation reason ("" if none)."""
    t = type(v)
    if t is str:
        return lut.get(v, UNSEEN), ""
    if v is None:
        return MISSING, "missing"
    if t is bool:
        return lut.get("true" if v else "false", UNSEEN), ""
    if t is int or t is float:
        return lut.get(_number_key(v), UNSEEN), "wrong_type"
    return UNSEEN, "wrong_type"


@dataclass(frozen=True)
class _Plan:
    """What encoding needs from a schema, computed once per decoder."""

    schema: Schema
    numeric_row: itemgetter[Any] | None
    names: frozenset[str]
    luts: tuple[dict[Any, int], ...]
    class_lut: dict[Any, int]
    class_row: itemgetter[Any] | None
    #: Learned from the data, for speed only: "binary" when most numeric columns hold exact 0s or 1s.
    hints: dict[str, bool] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, schema: Schema) -> _Plan:
        luts = []
        for j in range(len(schema.categorical)):
            idx = schema.category_index(j)
            lut: dict[Any, int] = {**idx, None: MISSING}
            # Only used when a column holds strings, booleans and nulls, so True cannot meet 1.
            lut[True] = idx.get("true", UNSEEN)
            lut[False] = idx.get("false", UNSEEN)
            luts.append(lut)
        return cls(
            schema=schema,
            numeric_row=itemgetter(*schema.numeric) if schema.numeric else None,
            names=frozenset(schema.numeric + schema.categorical),
            luts=tuple(luts),
            class_lut={**schema.class_index, None: MISSING},
            class_row=itemgetter(*schema.classes) if schema.classes else None,
        )


def _all_numbers(rows: list[Any], n: int, k: int) -> tuple[F64 | None, bool]:
    """``rows`` as an ``(n, k)`` float array when every value is an int or a float, else ``None``;
    and whether most columns hold exact zeros or ones.

    numpy infers one dtype for the whole list in C, faster than checking each value's type and then
    converting: float64 or int64 means numbers, possibly with booleans, which it also takes as
    numbers; null, strings and huge ints give another dtype. A boolean can only have become 0 or 1,
    so only those columns are looked at again, unless most columns hold zeros or ones (pixels,
    indicators): then a type check of every value is needed anyway, and the caller had better
    check types first and convert with ``np.fromiter``, which is cheaper than ``np.array``.
    """
    try:
        x = np.array(rows)
    except (ValueError, OverflowError):  # ragged or unconvertible: the careful path explains it
        return None, False
    if x.dtype == np.int64:
        x = x.astype(np.float64)
    elif x.dtype != np.float64:
        return None, False
    x = x.reshape(n, k)
    maybe_bool = np.flatnonzero(((x == 0.0) | (x == 1.0)).any(axis=0)).tolist()
    binary = 4 * len(maybe_bool) > k
    columns: list[Iterable[Any]]
    if binary:
        columns = [rows if k == 1 else chain.from_iterable(rows)]
    else:
        columns = [rows if k == 1 else map(itemgetter(j), rows) for j in maybe_bool]
    if any(bool in set(map(type, c)) for c in columns):
        return None, binary
    return x, binary


def _numeric_fast(plan: _Plan, feats: Sequence[dict[str, Any]], counts: Counter[tuple[str, str]]) -> F64 | None:
    names = plan.schema.numeric
    n, k = len(feats), len(names)
    assert plan.numeric_row is not None
    try:
        rows: list[Any] = list(map(plan.numeric_row, feats))
    except KeyError:  # absent features: same as null
        rows = _column(feats, names[0]) if k == 1 else [tuple(map(f.get, names)) for f in feats]
    x = None
    if not plan.hints.get("binary"):
        x, binary = _all_numbers(rows, n, k)
        if binary:
            plan.hints["binary"] = True
    if x is None:
        if not set(map(type, rows if k == 1 else chain.from_iterable(rows))) <= _NUMBER_TYPES:
            return None
        try:
            x = np.fromiter(rows if k == 1 else chain.from_iterable(rows), np.float64, n * k).reshape(n, k)
        except OverflowError:
            return None
    # JSON has no NaN, so NaN here came from null or absent; inf from an overflowing number.
    missing = np.isnan(x)
    if missing.any():
        for name, c in zip(names, missing.sum(axis=0).tolist(), strict=True):
            if c:
                counts["missing", name] += c
    infinite = np.isinf(x)
    if infinite.any():
        for name, c in zip(names, infinite.sum(axis=0).tolist(), strict=True):
            if c:
                counts["non_finite", name] += c
        x[infinite] = np.nan
    return x


def _numeric_careful(plan: _Plan, feats: Sequence[dict[str, Any]], counts: Counter[tuple[str, str]]) -> F64:
    names = plan.schema.numeric
    x = np.empty((len(feats), len(names)))
    for i, f in enumerate(feats):
        for j, name in enumerate(names):
            x[i, j], reason = _number(f.get(name))
            if reason:
                counts[reason, name] += 1
    return x


def _categorical_fast(
    plan: _Plan, j: int, feats: Sequence[dict[str, Any]], counts: Counter[tuple[str, str]]
) -> I32 | None:
    name = plan.schema.categorical[j]
    col = _column(feats, name)
    if not set(map(type, col)) <= _CATEGORY_TYPES:
        return None
    missing = col.count(None)
    if missing:
        counts["missing", name] += missing
    return np.fromiter(map(plan.luts[j].get, col, repeat(UNSEEN)), np.int32, len(col))


def _categorical_careful(plan: _Plan, j: int, feats: Sequence[dict[str, Any]], counts: Counter[tuple[str, str]]) -> I32:
    name = plan.schema.categorical[j]
    lut = plan.luts[j]
    codes = np.empty(len(feats), np.int32)
    for i, f in enumerate(feats):
        codes[i], reason = _category(f.get(name), lut)
        if reason:
            counts[reason, name] += 1
    return codes


def _unexpected(
    plan: _Plan, feats: Sequence[dict[str, Any]], rows: Iterable[int], counts: Counter[tuple[str, str]]
) -> None:
    for i in rows:
        for name in feats[i].keys() - plan.names:
            counts["unexpected", name] += 1


def _unexpected_rows_fast(plan: _Plan, feats: Sequence[dict[str, Any]], x: F64, c: I32) -> npt.NDArray[np.intp]:
    """Rows that may carry a feature outside the schema (a superset; exact rows are checked later).

    A row whose every schema feature holds a usable value and that has exactly as many keys as the
    schema has features cannot carry another one.
    """
    k = len(plan.names)
    suspect = np.fromiter(map(len, feats), np.int64, len(feats)) != k
    if x.shape[1]:
        suspect |= np.isnan(x).any(axis=1)
    if c.shape[1]:
        suspect |= (c == MISSING).any(axis=1)
    return np.flatnonzero(suspect)


def _target_fast(
    kind: str, plan: _Plan, col: Sequence[Any], key: str, counts: Counter[tuple[str, str]]
) -> tuple[F64, I32] | None:
    """Prediction or label as (numeric values, class codes), or ``None`` if the careful path is needed."""
    n = len(col)
    types = set(map(type, col))
    if kind == "numeric":
        if not types <= _NUMBER_TYPES:
            return None
        try:
            values = np.fromiter(col, np.float64, n)
        except OverflowError:
            return None
        infinite = np.isinf(values)
        if infinite.any():
            counts["non_finite", key] += int(infinite.sum())
            values[infinite] = np.nan
        return values, np.full(n, MISSING, np.int32)
    if not types <= _OPTIONAL_STR_TYPES:
        return None
    codes = np.fromiter(map(plan.class_lut.get, col, repeat(UNSEEN)), np.int32, n)
    return np.full(n, np.nan), codes


def _target_careful(
    kind: str, plan: _Plan, col: Sequence[Any], key: str, counts: Counter[tuple[str, str]]
) -> tuple[F64, I32]:
    n = len(col)
    values = np.full(n, np.nan)
    codes = np.full(n, MISSING, np.int32)
    for i, v in enumerate(col):
        if v is None:
            continue
        if kind == "numeric":
            values[i], reason = _number(v)
            if reason:
                counts[reason, key] += 1
        elif type(v) is str:
            codes[i] = plan.class_lut.get(v, UNSEEN)
        else:  # a number names its class by its string form; not a violation (0/1 labels are common)
            codes[i] = plan.class_lut.get(_number_key(v), UNSEEN)
    return values, codes


def _proba_fast(plan: _Plan, col: Sequence[Any], counts: Counter[tuple[str, str]]) -> tuple[F64, F64] | None:
    """``(proba, confidence)`` when every event that sent probabilities sent one shape, else ``None``."""
    n, k = len(col), len(plan.schema.classes)
    types = set(map(type, col))
    if types == _NONE:
        return np.full((n, k), np.nan), np.full(n, np.nan)
    shape = types - _NONE
    if k == 0 or len(shape) != 1:
        return None
    present, sent = col, None
    if type(None) in types:
        sent = np.fromiter(map(is_not, col, repeat(None)), np.bool_, n)
        present = list(compress(col, sent))
    if set(map(len, present)) != {k}:
        return None
    if shape == {dict}:
        assert plan.class_row is not None
        try:
            rows: Sequence[Any] = list(map(plan.class_row, present))
        except KeyError:
            return None
    else:
        rows = present
    m = len(rows)
    try:
        p = np.fromiter(rows if k == 1 and shape == {dict} else chain.from_iterable(rows), np.float64, m * k)
    except OverflowError:
        return None
    p = p.reshape(m, k)
    infinite = np.isinf(p)
    if infinite.any():
        counts["non_finite", PROBABILITIES_KEY] += int(infinite.any(axis=1).sum())
        p[infinite] = np.nan
    confidence = np.fmax.reduce(p, axis=1)
    if sent is None:
        return p, confidence
    full, full_confidence = np.full((n, k), np.nan), np.full(n, np.nan)
    full[sent] = p
    full_confidence[sent] = confidence
    return full, full_confidence


def _proba_careful(plan: _Plan, col: Sequence[Any], counts: Counter[tuple[str, str]]) -> tuple[F64, F64]:
    classes = plan.schema.classes
    n, k = len(col), len(classes)
    p = np.full((n, k), np.nan)
    conf = np.full(n, np.nan)
    for i, given in enumerate(col):
        if given is None:
            continue
        if type(given) is dict:
            keys, raw = list(given.keys()), list(given.values())
        else:
            keys, raw = [], list(given)
        values = []
        non_finite = False
        for v in raw:
            x, reason = _number(v)
            non_finite |= reason == "non_finite"
            values.append(x)
        if non_finite:
            counts["non_finite", PROBABILITIES_KEY] += 1
        finite = [x for x in values if x == x]
        if finite:
            conf[i] = max(finite)
        if type(given) is dict:
            by_class = dict(zip(keys, values, strict=True))
            for j, c in enumerate(classes):
                p[i, j] = by_class.get(c, math.nan)
        elif len(values) == k:
            p[i] = values
        elif k:
            counts["misaligned", PROBABILITIES_KEY] += 1
    return p, conf


def _concat(batches: list[EventBatch]) -> EventBatch:
    if len(batches) == 1:
        return batches[0]
    return EventBatch(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(EventBatch)})


def _group_rows(model_ids: Sequence[_K]) -> dict[_K, list[int]]:
    """Rows of each model, models in order of first appearance, rows in input order."""
    first_seen = dict.fromkeys(model_ids)
    if len(first_seen) <= 1:
        return {m: list(range(len(model_ids))) for m in first_seen}
    code = {m: k for k, m in enumerate(first_seen)}
    codes = np.fromiter(map(code.__getitem__, model_ids), np.intp, len(model_ids))
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(code))).tolist()
    return {m: order[lo:hi].tolist() for m, lo, hi in zip(first_seen, [0, *bounds[:-1]], bounds, strict=True)}


def _take(col: Sequence[Any], rows: list[int]) -> Sequence[Any]:
    if len(rows) == 1:
        return (col[rows[0]],)
    return itemgetter(*rows)(col)  # type: ignore[no-any-return]


def _encode(plan: _Plan, ev: _Events, rows: list[int] | None, fast: bool) -> tuple[EventBatch, Violations]:
    """One model's rows (``None``: all of ``ev``) as an EventBatch and its violation counts."""

    def pick(col: Sequence[Any]) -> Sequence[Any]:
        return col if rows is None else _take(col, rows)

    schema = plan.schema
    counts: Counter[tuple[str, str]] = Counter()
    feats = pick(ev.features)
    n = len(feats)

    if not schema.numeric:
        x: F64 = np.empty((n, 0))
    else:
        fx = _numeric_fast(plan, feats, counts) if fast else None
        x = fx if fx is not None else _numeric_careful(plan, feats, counts)

    c = np.empty((n, len(schema.categorical)), np.int32)
    for j in range(len(schema.categorical)):
        fc = _categorical_fast(plan, j, feats, counts) if fast else None
        c[:, j] = fc if fc is not None else _categorical_careful(plan, j, feats, counts)

    suspects: Iterable[int] = _unexpected_rows_fast(plan, feats, x, c).tolist() if fast else range(n)
    _unexpected(plan, feats, suspects, counts)

    no_targets = schema.prediction == "none"  # not decoded: not picked either
    batch = _assemble(
        plan,
        counts,
        fast,
        x,
        c,
        prediction=() if no_targets else pick(ev.prediction),
        label=() if no_targets else pick(ev.label),
        probas=pick(ev.probabilities),
        event_id=pick(ev.event_id),
        ts=ev.ts if rows is None else ev.ts[rows],
        client_id=pick(ev.client_id),
    )
    return batch, dict(counts)


def _assemble(
    plan: _Plan,
    counts: Counter[tuple[str, str]],
    fast: bool,
    x: F64,
    c: I32,
    *,
    prediction: Sequence[Any],
    label: Sequence[Any],
    probas: Sequence[Any] | tuple[F64, F64],
    event_id: Iterable[Any],
    ts: I64,
    client_id: Iterable[Any],
) -> EventBatch:
    """The EventBatch of one model's rows from their features and their other columns.

    ``probas`` is one value per row as sent, or ``(proba, confidence)`` already computed.
    """
    n = len(x)
    kind = plan.schema.prediction
    targets = []
    for col, key in ((prediction, PREDICTION_KEY), (label, LABEL_KEY)):
        if kind == "none":
            targets.append((np.full(n, np.nan), np.full(n, MISSING, np.int32)))
            continue
        ft = _target_fast(kind, plan, col, key, counts) if fast else None
        targets.append(ft if ft is not None else _target_careful(kind, plan, col, key, counts))

    if type(probas) is tuple and len(probas) == 2 and type(probas[0]) is np.ndarray:
        proba, confidence = probas
    else:
        fp = _proba_fast(plan, probas, counts) if fast else None
        proba, confidence = fp if fp is not None else _proba_careful(plan, probas, counts)

    return EventBatch(
        event_id=np.fromiter(event_id, object, n),
        ts=ts,
        client_id=np.fromiter(client_id, object, n),
        numeric=x,
        categorical=c,
        prediction=targets[0][0],
        prediction_code=targets[0][1],
        confidence=confidence,
        proba=proba,
        label=targets[1][0],
        label_code=targets[1][1],
    )


# ----------------------------------------------------------------------------------------------
# Typed path: msgspec decodes each message straight into a Struct of its model's schema


#: Integers orjson returns as ``int``; beyond them it returns a float, msgspec still an ``int``.
_ORJSON_INT_MIN: Final = -(2**63)
_ORJSON_INT_MAX: Final = 2**64 - 1
_FEATURES = attrgetter("features")
_EVENT_ID = attrgetter("event_id")
_TS = attrgetter("ts")
_CLIENT_ID = attrgetter("client_id")
_PREDICTION = attrgetter("prediction")
_LABEL = attrgetter("label")
_PROBABILITIES = attrgetter("probabilities")
_Target = str | int | float | None


@dataclass(frozen=True)
class _TypedModel:
    """What reading a model's typed events needs beyond its :class:`_Plan`."""

    model_id: str
    proba: type | None  # Struct of a probability object with exactly the schema's classes


class _Typed:
    """One msgspec decoder for all models, tagged by ``model_id``.

    msgspec checks every type the event contract asks for while it parses, in C, and builds a
    Struct instead of a dict per object: ~2.5x cheaper than parsing with orjson and then checking.
    It only ever *accepts* what the general path would accept and decode to the same values;
    anything it refuses (a bad event, a number in a categorical feature, a feature outside the
    schema, an unknown model) sends the whole part to the general path, which explains it.
    """

    def __init__(self, plans: Mapping[str, _Plan]) -> None:
        self.models: dict[type, _TypedModel] = {}
        members: list[Any] = []
        for model_id, plan in plans.items():
            event_type, model = self._structs(model_id, plan.schema, len(members))
            self.models[event_type] = model
            members.append(event_type)
        # A tagged Struct decoded alone accepts a message without the tag; in a union the tag is
        # required. The extra member's tag is no model's, and a message that picks it is refused.
        no_model = "\x00"
        while no_model in plans:
            no_model += "\x00"
        self.none_type = msgspec.defstruct("NoModel", [], tag_field="model_id", tag=no_model)
        members.append(self.none_type)
        self.decode = msgspec.json.Decoder(Union[tuple(members)]).decode  # noqa: UP007  (a runtime union)

    @staticmethod
    def _structs(model_id: str, schema: Schema, k: int) -> tuple[type, _TypedModel]:
        # Field names are generated: feature and class names need not be identifiers.
        numeric = [f"n{j}" for j in range(len(schema.numeric))]
        categorical = [f"c{j}" for j in range(len(schema.categorical))]
        features = msgspec.defstruct(
            f"Features{k}",
            [(a, float | None, None) for a in numeric] + [(a, str | bool | None, None) for a in categorical],
            rename=dict(zip(numeric + categorical, schema.numeric + schema.categorical, strict=True)),
            forbid_unknown_fields=True,  # a feature outside the schema is counted by the general path
            gc=False,
        )
        proba: type | None = None
        proba_type: Any = dict[str, float | None] | list[float | None] | None  # no classes: confidence only
        if schema.classes:
            names = [f"p{j}" for j in range(len(schema.classes))]
            proba = msgspec.defstruct(
                f"Probabilities{k}",
                [(a, float | None, None) for a in names],
                rename=dict(zip(names, schema.classes, strict=True)),
                forbid_unknown_fields=True,
                gc=False,
            )
            proba_type = proba | list[float | None] | None
        event = msgspec.defstruct(
            f"Event{k}",
            [
                ("event_id", str),
                ("ts", int | float | str),
                ("features", features),
                ("model_version", str | None, None),
                ("client_id", str | None, None),
                ("prediction", _Target, None),
                ("label", _Target, None),
                ("probabilities", proba_type, None),
            ],
            tag_field="model_id",
            tag=model_id,
            gc=False,
        )
        return event, _TypedModel(model_id, proba)


def _scanners(schemas: Mapping[str, Schema], max_bytes: int) -> dict[str, _native.Scanner]:
    """A native scanner per model, none without the C extension."""
    if _native is None:
        return {}
    return {
        model_id: _native.Scanner(
            model_id.encode(),
            [name.encode() for name in schema.numeric],
            [name.encode() for name in schema.categorical],
            [name.encode() for name in schema.classes],
            max_bytes,
        )
        for model_id, schema in schemas.items()
    }


def _utf8(value: bytes) -> bool:
    # msgspec does not check the UTF-8 of what it skips (unknown fields); orjson checks everything.
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _big_int(col: Sequence[Any]) -> bool:
    """Whether an int in ``col`` is one orjson would have returned as a float."""
    return int in set(map(type, col)) and any(
        type(v) is int and not _ORJSON_INT_MIN <= v <= _ORJSON_INT_MAX for v in col
    )


def _count_missing(schema: Schema, x: F64, counts: Counter[tuple[str, str]]) -> None:
    """Count the NaN of numeric features read from floats and nulls: each one was null or absent."""
    missing = np.isnan(x)
    if missing.any():
        for name, c in zip(schema.numeric, missing.sum(axis=0).tolist(), strict=True):
            if c:
                counts["missing", name] += c


def _category_codes(plan: _Plan, cols: Sequence[list[Any]], n: int, counts: Counter[tuple[str, str]]) -> I32:
    """Codes of categorical columns holding only strings, booleans and ``None``."""
    c = np.empty((n, len(cols)), np.int32)
    for j, col in enumerate(cols):
        absent = col.count(None)
        if absent:
            counts["missing", plan.schema.categorical[j]] += absent
        c[:, j] = np.fromiter(map(plan.luts[j].get, col, repeat(UNSEEN)), np.int32, n)
    return c


def _encode_native(
    plan: _Plan, cols: tuple[list[Any], ...], ts: I64, x: F64, proba: F64
) -> tuple[EventBatch, Violations]:
    """One model's events read by the native scanner, as :func:`_encode` reads them."""
    schema = plan.schema
    event_id, _, client_id, prediction, label, categorical = cols
    n = len(x)
    counts: Counter[tuple[str, str]] = Counter()
    _count_missing(schema, x, counts)
    c = _category_codes(plan, categorical, n, counts)
    # the scanner refuses non-finite numbers and, without classes, any probabilities sent
    confidence = np.fmax.reduce(proba, axis=1) if schema.classes else np.full(n, np.nan)
    no_targets = schema.prediction == "none"
    batch = _assemble(
        plan,
        counts,
        True,
        x,
        c,
        prediction=() if no_targets else prediction,
        label=() if no_targets else label,
        probas=(proba, confidence),
        event_id=event_id,
        ts=ts,
        client_id=client_id,
    )
    return batch, dict(counts)


def _valid_prefix(ts_values: list[Any]) -> tuple[int, I64]:
    """How many leading ``ts`` are valid, and their epoch ms."""
    ts = _ts_column(ts_values)
    if ts is not None:
        return len(ts_values), ts
    parsed = list(map(parse_ts, ts_values))
    n = parsed.index(None)
    return n, np.fromiter(parsed[:n], np.int64, n)


def _encode_typed(
    plan: _Plan, model: _TypedModel, events: Sequence[Any], event_id: Sequence[str], ts: I64
) -> tuple[EventBatch, Violations] | None:
    """One model's typed events as an EventBatch and its violation counts, as :func:`_encode` does."""
    schema = plan.schema
    counts: Counter[tuple[str, str]] = Counter()
    n = len(events)
    # Numeric features first, then categorical ones, in schema order; astuple is ~8x cheaper than
    # an attrgetter of 32 names.
    rows = list(map(msgspec.structs.astuple, map(_FEATURES, events)))
    k, kc = len(schema.numeric), len(schema.categorical)

    if not k:
        x: F64 = np.empty((n, 0))
    else:
        numeric = rows if not kc else map(itemgetter(slice(0, k)), rows)
        # msgspec gave floats or None, which fromiter turns into NaN: null and absent are "missing"
        x = np.fromiter(chain.from_iterable(numeric), np.float64, n * k).reshape(n, k)
        _count_missing(schema, x, counts)
    c = _category_codes(plan, [list(map(itemgetter(k + j), rows)) for j in range(kc)], n, counts)

    prediction: list[Any] = []
    label: list[Any] = []
    if schema.prediction != "none":
        prediction, label = list(map(_PREDICTION, events)), list(map(_LABEL, events))
        if _big_int(prediction) or _big_int(label):
            return None

    probas: list[Any] = list(map(_PROBABILITIES, events))
    if model.proba is not None:
        proba_type = model.proba
        # in schema class order, like an array: absent classes are None, as null entries are
        probas = [msgspec.structs.astuple(p) if type(p) is proba_type else p for p in probas]  # type: ignore[arg-type]

    batch = _assemble(
        plan,
        counts,
        True,
        x,
        c,
        prediction=prediction,
        label=label,
        probas=probas,
        event_id=event_id,
        ts=ts,
        client_id=map(_CLIENT_ID, events),
    )
    return batch, dict(counts)


# ----------------------------------------------------------------------------------------------


class Decoder:
    """Decode chunks of inference events into one :class:`ModelBatch` per model.

    Parameters
    ----------
    schemas
        ``model_id -> Schema``; events of other models become dead letters ``"no_baseline"``.
        Read once here: build a new decoder when baselines change.
    max_message_bytes
        Longer messages become dead letters ``"oversize"`` without being parsed.
    max_future_ms
        An event whose ``ts`` is more than this many milliseconds after its message's own timestamp
        (the ``record_ts`` given to :meth:`decode`, Kafka's) is a dead letter ``"future_ts"``: one
        event from a wrong clock would otherwise move event time on, for the time windows of drift and
        the adversarial detector's rates and campaign clocks, for everyone. None: no check.

    Notes
    -----
    Contract decisions beyond the event format:

    * a required field that is null counts as ``missing_field``; an empty ``event_id`` or
      ``model_id`` is ``bad_type``;
    * optional fields are null or absent, or of their type; otherwise the event is ``bad_type``
      (``client_id``/``model_version`` strings, ``prediction``/``label`` a number or string --
      booleans are refused -- and ``probabilities`` an object or array of numbers or nulls);
    * ``ts`` strings must carry a UTC offset: a naive time is ambiguous and refused;
    * a numeric value in a categorical column or class is looked up by its JSON number form
      (``1`` and ``1.0`` are both ``"1"``); for features that is also a ``wrong_type``
      violation, for predictions and labels (integer class labels are common) it is not;
    * a string prediction or label under a numeric schema is NaN and a ``wrong_type`` violation;
      with ``prediction="none"`` predictions and labels are not decoded;
    * a number too large for float64 (orjson refuses it) keeps the event: the value is NaN and a
      ``non_finite`` violation;
    * an object or array as a feature value is a ``wrong_type`` violation (NaN, or ``UNSEEN``);
    * ``confidence`` is the largest probability sent, classes outside the schema included; a
      probability array whose length differs from the schema's classes leaves ``proba`` NaN and
      counts ``("misaligned", "$probabilities")``;
    * violations are also kept per model in :attr:`ModelBatch.violations`.

    Examples
    --------
    >>> s = Schema("m", numeric=("x",), categorical=("c",), categories=(("a", "b"),),
    ...            prediction="categorical", classes=("no", "yes"))
    >>> dec = Decoder({"m": s})
    >>> r = dec.decode([
    ...     b'{"event_id":"e1","ts":"2026-11-28T10:00:00Z","model_id":"m",'
    ...     b'"features":{"x":1.5,"c":"b"},"prediction":"yes","probabilities":{"no":0.1,"yes":0.9}}',
    ...     b'{"event_id":"e2","ts":1795860000000,"model_id":"m","features":{"x":null,"c":"z"}}',
    ...     b'{"event_id":"e3","ts":"yesterday","model_id":"m","features":{}}',
    ...     b'{"event_id":"e4","ts":1,"model_id":"other","features":{}}',
    ... ])
    >>> b = r.batches[0].batch
    >>> b.numeric[:, 0].tolist(), b.categorical[:, 0].tolist()
    ([1.5, nan], [1, -2])
    >>> b.prediction_code.tolist(), b.confidence.tolist()
    ([1, -1], [0.9, nan])
    >>> [(d.index, d.reason) for d in r.dead], r.violations
    ([(2, 'bad_type'), (3, 'no_baseline')], {('missing', 'x'): 1})
    """

    def __init__(
        self,
        schemas: Mapping[str, Schema],
        *,
        max_message_bytes: int = _DEFAULT_MAX_BYTES,
        max_future_ms: int | None = _DEFAULT_MAX_FUTURE_MS,
    ) -> None:
        for model_id, schema in schemas.items():
            if schema.model_id != model_id:
                raise ValueError(f"schema for {model_id!r} is for model {schema.model_id!r}")
        if type(max_message_bytes) is not int or max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be a positive integer, got {max_message_bytes!r}")
        if max_future_ms is not None and (type(max_future_ms) is not int or max_future_ms < 0):
            raise ValueError(f"max_future_ms must be a non-negative integer or None, got {max_future_ms!r}")
        self.schemas = schemas
        self.max_message_bytes = max_message_bytes
        self.max_future_ms = max_future_ms
        self._plans = {model_id: _Plan.of(schema) for model_id, schema in schemas.items()}
        self._typed = _Typed(self._plans) if self._plans else None
        self._scanners = _scanners(schemas, max_message_bytes)
        #: The model the native path tries first: the one of the last part it took.
        self._native_model = next(iter(self._scanners), None)

    def __getstate__(self) -> dict[str, Any]:
        # The generated Struct types and the scanners cannot be pickled (file replay sends the
        # decoder to the process that decodes ahead); they are made again on the other side.
        return {**self.__dict__, "_typed": None, "_scanners": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._typed = _Typed(self._plans) if self._plans else None
        self._scanners = _scanners(self.schemas, self.max_message_bytes)

    def decode(self, values: Sequence[bytes | None], record_ts: npt.ArrayLike | None = None) -> DecodeResult:
        """Decode one chunk of messages; never raises on message content.

        Parameters
        ----------
        values
            Message values (bytes) in input order; a ``None`` value (Kafka tombstone) is a dead letter.
        record_ts
            Each message's own timestamp (epoch ms; negative: none), for the ``max_future_ms`` check;
            None (file input): no check.
        """
        # The collector would walk every parsed object again and again while a chunk's objects are
        # alive, and decoding makes no reference cycles: pausing it made decoding 1.3x faster.
        paused = gc.isenabled()
        gc.disable()
        try:
            out = self._decode(values, fast=True)
        finally:
            if paused:
                gc.enable()
        if record_ts is None or self.max_future_ms is None:
            return out
        return self._drop_future(out, values, np.asarray(record_ts, dtype=np.int64))

    def _drop_future(self, out: DecodeResult, values: Sequence[Any], record_ts: I64) -> DecodeResult:
        """``out`` with the events dated more than ``max_future_ms`` after their message as dead letters
        (their feature violations were counted already: they are rare, and their rows gone)."""
        assert self.max_future_ms is not None
        if len(record_ts) != len(values):
            raise ValueError(f"record_ts has {len(record_ts)} timestamps for {len(values)} messages")
        batches, dead = [], []
        for mb in out.batches:
            rts = record_ts[mb.index]
            late = (rts >= 0) & (mb.batch.ts - rts > self.max_future_ms)
            if not late.any():
                batches.append(mb)
                continue
            for i in np.flatnonzero(late).tolist():
                at, ts, rt = int(mb.index[i]), int(mb.batch.ts[i]), int(rts[i])
                detail = f"ts {ts} is {ts - rt} ms after the message's timestamp {rt} (at most {self.max_future_ms})"
                dead.append(DeadLetter(at, _raw(values[at]), "future_ts", detail))
            keep = np.flatnonzero(~late)
            if len(keep):
                batches.append(replace(mb, batch=mb.batch.take(keep), index=mb.index[keep]))
        if not dead:
            return out
        return replace(out, batches=batches, dead=sorted(out.dead + dead, key=_by_index))

    def _decode(
        self, values: Sequence[Any], *, fast: bool, typed: bool | None = None, native: bool | None = None
    ) -> DecodeResult:
        """``fast=False``: the careful path only; ``typed=False``, ``native=False``: without those paths."""
        parts: dict[str, list[tuple[EventBatch, I64]]] = {}
        counts: dict[str, Counter[tuple[str, str]]] = {}
        dead: list[DeadLetter] = []
        typed = fast if typed is None else typed
        native = typed if native is None else native
        native = native and bool(self._scanners)
        # The native path reads a whole chunk at once (its cost per call is larger than per message);
        # what it leaves goes to the other paths in parts.
        block = max(len(values), 1) if native else _PART
        for start in range(0, len(values), block):
            chunk = values[start : start + block]
            done = self._decode_native(chunk, start, parts, counts, dead) if native else 0
            for i in range(done, len(chunk), _PART):
                part, at = chunk[i : i + _PART], start + i
                if not (typed and self._plain(part) and self._decode_typed(part, at, parts, counts)):
                    self._decode_part(part, at, fast, parts, counts, dead)
        batches = [
            ModelBatch(
                model_id,
                _concat([b for b, _ in pieces]),
                np.concatenate([i for _, i in pieces]),
                dict(counts[model_id]),
            )
            for model_id, pieces in parts.items()
        ]
        total: Counter[tuple[str, str]] = Counter()
        for c in counts.values():
            total.update(c)
        return DecodeResult(batches, dead, dict(total), len(values))

    def _decode_typed(
        self,
        values: Sequence[Any],
        offset: int,
        parts: dict[str, list[tuple[EventBatch, I64]]],
        counts: dict[str, Counter[tuple[str, str]]],
    ) -> bool:
        """Decode ``values`` with the typed path if every message fits it; else change nothing, ``False``."""
        typed = self._typed
        if typed is None:
            return False
        try:
            events = list(map(typed.decode, values))
        except Exception:  # a bad message, or one this path does not take: the general path explains it
            return False
        groups = _group_rows(list(map(type, events)))
        if typed.none_type in groups:
            return False
        event_id = list(map(_EVENT_ID, events))
        if "" in event_id:
            return False
        ts = _ts_column(list(map(_TS, events)))
        if ts is None:
            return False
        done: list[tuple[str, tuple[EventBatch, Violations], list[int] | None]] = []
        for kind, rows in groups.items():
            model = typed.models[kind]
            everything = len(rows) == len(events)
            encoded = _encode_typed(
                self._plans[model.model_id],
                model,
                events if everything else _take(events, rows),
                event_id if everything else _take(event_id, rows),
                ts if everything else ts[rows],
            )
            if encoded is None:
                return False
            done.append((model.model_id, encoded, None if everything else rows))
        positions = np.arange(offset, offset + len(values), dtype=np.int64)
        for model_id, (batch, violations), picked in done:
            parts.setdefault(model_id, []).append((batch, positions if picked is None else positions[picked]))
            counts.setdefault(model_id, Counter()).update(violations)
        return True

    def _plain(self, values: Sequence[Any]) -> bool:
        """Whether ``values`` are all bytes of valid UTF-8 within the size limit (what the typed path takes)."""
        if not values or set(map(type, values)) != {bytes}:
            return False
        if max(map(len, values)) > self.max_message_bytes:
            return False
        return all(map(bytes.isascii, values)) or all(map(_utf8, values))

    def _decode_native(
        self,
        values: Sequence[bytes],
        offset: int,
        parts: dict[str, list[tuple[EventBatch, I64]]],
        counts: dict[str, Counter[tuple[str, str]]],
        dead: list[DeadLetter],
    ) -> int:
        """Decode the messages of ``values`` with the native scanner of one model, up to the first it
        refuses beyond :data:`_NATIVE_REFUSALS` per part (those it refuses go one by one the general way).

        Returns how many leading messages of ``values`` are done; the caller decodes the rest.
        """
        model_id = self._native_model
        if model_id not in self._scanners:
            return 0
        assert model_id is not None
        values = list(values)
        n = len(values)

        def columns(model_id: str) -> tuple[F64, F64]:
            """The float64 columns the scanner of ``model_id`` writes, NaN where nothing is read."""
            schema = self._plans[model_id].schema
            return np.full((n, len(schema.numeric)), np.nan), np.full((n, len(schema.classes)), np.nan)

        x, proba = columns(model_id)
        pos = refused = 0
        budget = _NATIVE_REFUSALS * -(-n // _PART)
        switched = -1
        while pos < n:
            got = self._scanners[model_id].scan(values, pos, x, proba)
            n_ok, cols = got[0], cast(tuple[list[Any], ...], got[1:])  # the lists hold the n_ok messages read
            if n_ok:
                valid, ts = _valid_prefix(cols[1])
                if valid < n_ok:  # a ts the general path explains
                    n_ok = valid
                    cols = tuple(col[:valid] if j != 5 else [c[:valid] for c in col] for j, col in enumerate(cols))
            if n_ok:
                plan = self._plans[model_id]
                batch, violations = _encode_native(plan, cols, ts, x[pos : pos + n_ok], proba[pos : pos + n_ok])
                parts.setdefault(model_id, []).append((batch, np.arange(offset + pos, offset + pos + n_ok)))
                counts.setdefault(model_id, Counter()).update(violations)
                pos += n_ok
                if pos == n:
                    break
            refused += 1
            if refused > budget:
                return pos
            if switched != pos and len(self._scanners) > 1:  # maybe a message of another model: try its scanner
                other = self._first_model(values[pos])
                if other is not None and other != model_id:
                    model_id = self._native_model = other
                    x, proba = columns(model_id)
                    switched = pos
                    continue
            self._decode_part([values[pos]], offset + pos, True, parts, counts, dead)
            pos += 1
        return n

    def _first_model(self, value: bytes) -> str | None:
        """The model of the message ``value``, if it has a scanner."""
        if type(value) is not bytes or len(value) > self.max_message_bytes:  # oversize ones are never parsed
            return None
        try:
            model_id = orjson.loads(value).get("model_id")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return model_id if type(model_id) is str and model_id in self._scanners else None

    def _decode_part(
        self,
        values: Sequence[Any],
        offset: int,
        fast: bool,
        parts: dict[str, list[tuple[EventBatch, I64]]],
        counts: dict[str, Counter[tuple[str, str]]],
        dead: list[DeadLetter],
    ) -> None:
        """Decode ``values`` (at ``offset`` in the chunk) into ``parts``, ``counts`` and ``dead``."""
        objs, index, part_dead = _parse(values, self.max_message_bytes, fast)
        ev, invalid = _validate(objs, index, values, fast)
        part_dead.extend(invalid)
        positions = np.asarray(ev.index, np.int64) + offset
        for model_id, rows in _group_rows(ev.model_id).items():
            plan = self._plans.get(model_id)
            if plan is None:
                detail = f"no baseline schema for model_id {_show(model_id)}"
                for r in rows:
                    i = ev.index[r]
                    part_dead.append(DeadLetter(i, _raw(values[i]), "no_baseline", detail))
                continue
            everything = len(rows) == len(ev.model_id)
            batch, violations = _encode(plan, ev, None if everything else rows, fast)
            parts.setdefault(model_id, []).append((batch, positions if everything else positions[rows]))
            counts.setdefault(model_id, Counter()).update(violations)
        part_dead.sort(key=_by_index)
        dead.extend(d if not offset else replace(d, index=offset + d.index) for d in part_dead)
