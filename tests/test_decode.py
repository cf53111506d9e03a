"""Tests of streams.decode: JSON bytes -> EventBatch per model, dead letters and violations."""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import fields
from typing import Any

import numpy as np
import orjson
import pytest

import streams.decode as decode_module
from detector.schema import MISSING, UNSEEN, EventBatch, Schema
from streams.decode import (
    MAX_TS,
    MIN_TS,
    REASONS,
    DeadLetter,
    Decoder,
    DecodeResult,
    parse_events,
    parse_ts,
)

T0 = 1_795_860_000_000  # 2026-11-28T10:00:00Z

SCHEMA = Schema(
    "m",
    numeric=("x", "y"),
    categorical=("c",),
    categories=(("a", "b", "true", "1"),),
    prediction="categorical",
    classes=("no", "yes"),
)
REGRESSOR = Schema("r", numeric=("x",), prediction="numeric")


def event(i: int = 0, **overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event_id": f"e{i}",
        "ts": T0 + i,
        "model_id": "m",
        "features": {"x": float(i), "y": 0.5, "c": "a"},
    }
    out.update(overrides)
    return out


def raw(i: int = 0, **overrides: Any) -> bytes:
    return orjson.dumps(event(i, **overrides))


def decoder(**kwargs: Any) -> Decoder:
    return Decoder({"m": SCHEMA, "r": REGRESSOR}, **kwargs)


def careful(dec: Decoder, values: list[Any]) -> DecodeResult:
    return dec._decode(values, fast=False)


def only_batch(result: DecodeResult) -> EventBatch:
    assert [b.model_id for b in result.batches] == ["m"]
    return result.batches[0].batch


def assert_same(a: DecodeResult, b: DecodeResult) -> None:
    assert a.n_input == b.n_input
    assert a.dead == b.dead
    assert a.violations == b.violations
    assert [m.model_id for m in a.batches] == [m.model_id for m in b.batches]
    for ma, mb in zip(a.batches, b.batches, strict=True):
        assert ma.violations == mb.violations
        np.testing.assert_array_equal(ma.index, mb.index)
        for f in fields(EventBatch):
            xa, xb = getattr(ma.batch, f.name), getattr(mb.batch, f.name)
            assert xa.dtype == xb.dtype and xa.shape == xb.shape, f.name
            if xa.dtype == object:
                assert xa.tolist() == xb.tolist(), f.name
            else:
                np.testing.assert_array_equal(xa, xb, err_msg=f.name)


def assert_accounted(result: DecodeResult) -> None:
    """Every input position is in exactly one batch row or one dead letter."""
    seen = [d.index for d in result.dead]
    for mb in result.batches:
        assert mb.index.dtype == np.int64 and len(mb.index) == len(mb.batch)
        assert list(mb.index) == sorted(mb.index)
        seen.extend(mb.index.tolist())
    assert sorted(seen) == list(range(result.n_input))
    assert [d.index for d in result.dead] == sorted(d.index for d in result.dead)


# ----------------------------------------------------------------------------------------------
# Dead letters


@pytest.mark.parametrize(
    ("value", "reason", "in_detail"),
    [
        (b"{" + b" " * 300 + b"}", "oversize", "302 bytes"),
        (b'{"event_id": "\xff"}', "not_utf8", "UTF-8"),
        (b'{"event_id": "e1",', "not_json", "JSON"),
        (b"", "not_json", "JSON"),
        (None, "not_json", "tombstone"),
        (b"[1, 2]", "not_object", "array"),
        (b'"just a string"', "not_object", "just a string"),
        (orjson.dumps({"ts": T0, "model_id": "m", "features": {}}), "missing_field", "'event_id'"),
        (raw(features=None), "missing_field", "'features' is null"),
        (raw(ts="yesterday"), "bad_type", "field 'ts' must be epoch ms or RFC 3339"),
        (raw(ts=True), "bad_type", "'ts'"),
        (raw(event_id=7), "bad_type", "'event_id'"),
        (raw(event_id=""), "bad_type", "non-empty"),
        (raw(model_id=""), "bad_type", "'model_id'"),
        (raw(features=[1, 2]), "bad_type", "'features'"),
        (raw(client_id=42), "bad_type", "'client_id'"),
        (raw(model_version=3), "bad_type", "'model_version'"),
        (raw(prediction=True), "bad_type", "'prediction'"),
        (raw(label={"a": 1}), "bad_type", "'label'"),
        (raw(probabilities="yes"), "bad_type", "'probabilities'"),
        (raw(probabilities={"yes": "high"}), "bad_type", "'probabilities'"),
        (raw(model_id="nobody"), "no_baseline", "'nobody'"),
    ],
)
def test_every_reason_code(value: bytes | None, reason: str, in_detail: str) -> None:
    values = [raw(0), value, raw(2)]
    dec = decoder(max_message_bytes=300)
    for result in (dec.decode(values), careful(dec, values)):
        assert result.n_input == 3
        assert len(result.dead) == 1
        dead = result.dead[0]
        assert (dead.index, dead.reason) == (1, reason)
        assert dead.raw == (value or b"")
        assert in_detail in dead.detail and "\n" not in dead.detail
        assert only_batch(result).event_id.tolist() == ["e0", "e2"]
        np.testing.assert_array_equal(result.batches[0].index, [0, 2])
    assert reason in REASONS


def test_oversize_messages_are_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[Any] = []
    loads = orjson.loads

    def spy(value: Any) -> Any:
        parsed.append(value)
        return loads(value)

    monkeypatch.setattr(orjson, "loads", spy)
    big = raw(1, pad="x" * 400)
    result = decoder(max_message_bytes=300).decode([raw(0), big])
    assert [(d.index, d.reason) for d in result.dead] == [(1, "oversize")]
    assert big not in parsed and only_batch(result).event_id.tolist() == ["e0"]


def test_dead_letter_indices_are_global_across_parts() -> None:
    values = [raw(i) for i in range(1300)]
    for i in (3, 700, 1299):
        values[i] = b"garbage"
    result = decoder().decode(values)
    assert [d.index for d in result.dead] == [3, 700, 1299]
    assert all(d.raw == b"garbage" for d in result.dead)
    assert len(only_batch(result)) == 1297
    assert_accounted(result)


def test_parse_events_validates_without_schema() -> None:
    values = [raw(0, model_id="anything"), b"{", raw(2, ts=None), raw(3)]
    events, positions, dead = parse_events(values)
    assert positions == [0, 3]
    assert [e["event_id"] for e in events] == ["e0", "e3"]
    assert [(d.index, d.reason) for d in dead] == [(1, "not_json"), (2, "missing_field")]
    _, _, dead = parse_events([raw(0, pad="x" * 100)], max_message_bytes=50)
    assert [d.reason for d in dead] == ["oversize"]


# ----------------------------------------------------------------------------------------------
# Timestamps


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0, T0),
        (T0 + 0.9, T0),
        (-5, -5),
        ("2026-11-28T10:00:00Z", T0),
        ("2026-11-28T10:00:00.123Z", T0 + 123),
        ("2026-11-28T10:00:00.1Z", T0 + 100),
        ("2026-11-28T10:00:00.123999Z", T0 + 123),
        ("2026-11-28t10:00:00z", T0),
        ("2026-11-28 10:00:00Z", T0),
        ("2026-11-28T12:00:00.123+02:00", T0 + 123),
        ("2026-11-28T05:30:00-04:30", T0),
        ("2026-11-28T10:00:00-00:00", T0),
        ("2016-12-31T23:59:60Z", parse_ts("2017-01-01T00:00:00Z")),
        ("1970-01-01T00:00:00Z", 0),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000),
        ("0001-01-01T00:00:00Z", MIN_TS),
        ("9999-12-31T23:59:59.999Z", MAX_TS),
        (MAX_TS + 1, None),
        (float("nan"), None),
        (float("inf"), None),
        (True, None),
        (None, None),
        ("yesterday", None),
        ("2026-11-28T10:00:00", None),  # naive: no UTC offset
        ("2026-11-28", None),
        ("2026-02-29T10:00:00Z", None),
        ("2026-11-28T24:00:00Z", None),
        ("2026-11-28T10:60:00Z", None),
        ("2026-11-28T10:00:00+24:00", None),
        ("2026-11-28T10:00:00.Z", None),
        ("２026-11-28T10:00:00Z", None),  # full-width digit
        ("0001-01-01T00:00:00+00:01", None),
    ],
)
def test_parse_ts(value: object, expected: int | None) -> None:
    assert parse_ts(value) == expected


def random_rfc3339(rng: np.random.Generator) -> str:
    """Mostly well-formed RFC 3339 strings with out-of-range fields and stray characters."""
    year = int(rng.choice([0, 1, 1900, 1970, 2000, 2024, 2026, 2100, 9999]))
    month, day = int(rng.integers(0, 14)), int(rng.integers(0, 33))
    hour, minute, second = int(rng.integers(0, 26)), int(rng.integers(0, 62)), int(rng.integers(0, 62))
    frac = ["", ".5", ".12", ".123", ".123456", ".999999999"][rng.integers(6)]
    zone = ["Z", "z", "+02:00", "-04:30", "+23:59", "-00:00", "+24:00", "+01:60"][rng.integers(8)]
    sep = "Tt "[rng.integers(3)]
    s = f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}{frac}{zone}"
    if rng.random() < 0.1:
        i = int(rng.integers(len(s)))
        s = s[:i] + "x-:.+Z9１"[rng.integers(8)] + s[i + 1 :]
    return s


def test_vectorized_rfc3339_agrees_with_parse_ts() -> None:
    rng = np.random.default_rng(7)
    strings = [random_rfc3339(rng) for _ in range(2000)]
    expected = [parse_ts(s) for s in strings]
    n_vectorized = 0
    for s, e in zip(strings, expected, strict=True):
        got = decode_module._rfc3339_column([s])
        if got is not None:  # None only sends the column to parse_ts
            assert got.tolist() == [e], s
            n_vectorized += 1
    assert n_vectorized == sum(e is not None for e in expected) > 500
    # a column mixing lengths (Python's isoformat drops zero microseconds) is vectorized too
    valid = [s for s, e in zip(strings, expected, strict=True) if e is not None and s[-1] in "Zz"]
    assert len({len(s) for s in valid}) > 3
    column = decode_module._rfc3339_column(valid)
    assert column is not None and column.tolist() == [parse_ts(s) for s in valid]


def test_rfc3339_chunk_is_not_parsed_string_by_string(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [raw(i, ts=f"2026-11-28T10:00:{i % 60:02d}.{i:03d}+01:00") for i in range(600)]
    values += [raw(i, ts=f"2026-11-28T10:00:{i % 60:02d}Z") for i in range(600, 700)]
    expected = [parse_ts(orjson.loads(v)["ts"]) for v in values]
    monkeypatch.setattr(decode_module, "parse_ts", None)
    assert only_batch(decoder().decode(values)).ts.tolist() == expected


def test_ts_column_mixes_epoch_and_rfc3339() -> None:
    values = [raw(0, ts=T0), raw(1, ts="2026-11-28T11:00:00.5+01:00"), raw(2, ts=float(T0) + 7.6)]
    for result in (decoder().decode(values), careful(decoder(), values)):
        b = only_batch(result)
        assert b.ts.dtype == np.int64
        assert b.ts.tolist() == [T0, T0 + 500, T0 + 7]


# ----------------------------------------------------------------------------------------------
# Encoding by schema


def test_feature_violations_are_counted_not_rejected() -> None:
    values = [
        raw(0, features={"x": 1, "y": 2.5, "c": "b"}),
        raw(1, features={"x": "3", "y": None, "c": 1}),  # x string, y null, c number
        raw(2, features={"x": True, "c": None, "extra": 1, "more": None}),  # y absent
        raw(3, features={"x": {"nested": 1}, "y": [1], "c": {"o": 1}, "extra": 2}),
        b'{"event_id":"e4","ts":1,"model_id":"m","features":{"x":1e999,"y":-1e999,"c":"a"}}',
    ]
    expected = {
        ("wrong_type", "x"): 3,
        ("missing", "y"): 2,
        ("wrong_type", "y"): 1,
        ("non_finite", "x"): 1,
        ("non_finite", "y"): 1,
        ("wrong_type", "c"): 2,
        ("missing", "c"): 1,
        ("unexpected", "extra"): 2,
        ("unexpected", "more"): 1,
    }
    for result in (decoder().decode(values), careful(decoder(), values)):
        assert result.dead == []
        assert result.violations == expected
        assert result.batches[0].violations == expected
        b = only_batch(result)
        np.testing.assert_array_equal(
            b.numeric, [[1, 2.5], [np.nan, np.nan], [np.nan, np.nan], [np.nan, np.nan], [np.nan, np.nan]]
        )
        # a number in a categorical column is looked up by its string form: 1 -> "1" (code 3)
        assert b.categorical[:, 0].tolist() == [1, 3, MISSING, UNSEEN, 0]


@pytest.mark.parametrize("other", [0.5, 7, 1.0, 0])
def test_boolean_among_numbers_is_a_wrong_type(other: float) -> None:
    # numpy converts booleans to 1.0 / 0.0 along with the numbers, so the fast path must still see them
    values = [
        raw(0, features={"x": other, "y": 2.5, "c": "a"}),
        raw(1, features={"x": True, "y": 3, "c": "a"}),
        raw(2, features={"x": other, "y": False, "c": "a"}),
    ]
    for result in (decoder().decode(values), careful(decoder(), values)):
        assert result.violations == {("wrong_type", "x"): 1, ("wrong_type", "y"): 1}
        np.testing.assert_array_equal(only_batch(result).numeric, [[other, 2.5], [np.nan, 3], [other, np.nan]])


def test_numeric_features_all_ints_or_huge() -> None:
    big = b'{"event_id":"e1","ts":1,"model_id":"m","features":{"x":3,"y":1000000000000000000000000000000,"c":"a"}}'
    values = [raw(0, features={"x": 1, "y": 2, "c": "a"}), big]
    for result in (decoder().decode(values), careful(decoder(), values)):
        assert result.violations == {}
        np.testing.assert_array_equal(only_batch(result).numeric, [[1.0, 2.0], [3.0, 1e30]])


def test_unseen_and_boolean_categories() -> None:
    values = [
        raw(0, features={"x": 0, "y": 0, "c": "zzz"}),
        raw(1, features={"x": 0, "y": 0, "c": True}),  # "true" is in the vocabulary
        raw(2, features={"x": 0, "y": 0, "c": False}),  # "false" is not
        raw(3, features={"x": 0, "y": 0, "c": "b"}),
        raw(4, features={"x": 0, "y": 0, "c": 1.0}),  # same JSON number as 1 -> "1"
    ]
    for result in (decoder().decode(values), careful(decoder(), values)):
        assert only_batch(result).categorical[:, 0].tolist() == [UNSEEN, 2, UNSEEN, 1, 3]
        assert result.violations == {("wrong_type", "c"): 1}


def test_predictions_and_labels() -> None:
    values = [
        raw(0, prediction="yes", label="no"),
        raw(1, prediction="maybe", label=1),
        raw(2),
        raw(3, model_id="r", features={"x": 1}, prediction=2.5, label=3),
        raw(4, model_id="r", features={"x": 1}, prediction="high", label=None),
    ]
    cls = Schema(
        "m",
        numeric=("x", "y"),
        categorical=("c",),
        categories=(("a",),),
        prediction="categorical",
        classes=("no", "yes", "1"),
    )
    dec = Decoder({"m": cls, "r": REGRESSOR})
    for result in (dec.decode(values), careful(dec, values)):
        m, r = result.batches
        assert (m.model_id, r.model_id) == ("m", "r")
        assert m.batch.prediction_code.tolist() == [1, UNSEEN, MISSING]
        assert m.batch.label_code.tolist() == [0, 2, MISSING]
        assert np.isnan(m.batch.prediction).all() and np.isnan(m.batch.label).all()
        np.testing.assert_array_equal(r.batch.prediction, [2.5, np.nan])
        np.testing.assert_array_equal(r.batch.label, [3.0, np.nan])
        assert r.batch.prediction_code.tolist() == [MISSING, MISSING]
        assert result.violations == {("wrong_type", "$prediction"): 1}


def test_probabilities_as_object_and_array() -> None:
    values = [
        raw(0, probabilities={"no": 0.2, "yes": 0.8}),
        raw(1, probabilities={"yes": 0.6}),  # class "no" absent
        raw(2, probabilities=[0.7, 0.3]),  # aligned with classes
        raw(3, probabilities=[0.1, 0.2, 0.7]),  # misaligned
        raw(4, probabilities={"no": 0.1, "yes": 0.2, "other": 0.7}),  # confidence over all given
        raw(5, probabilities={"no": None, "yes": None}),
        raw(6),
    ]
    for result in (decoder().decode(values), careful(decoder(), values)):
        b = only_batch(result)
        nan = np.nan
        np.testing.assert_array_equal(
            b.proba, [[0.2, 0.8], [nan, 0.6], [0.7, 0.3], [nan, nan], [0.1, 0.2], [nan, nan], [nan, nan]]
        )
        np.testing.assert_array_equal(b.confidence, [0.8, 0.6, 0.7, 0.7, 0.7, nan, nan])
        assert result.violations == {("misaligned", "$probabilities"): 1}


@pytest.mark.parametrize("as_array", [False, True])
def test_probabilities_fast_path_shapes(as_array: bool) -> None:
    probs: list[list[float | None]] = [[0.25, 0.75], [0.9, 0.1], [None, 0.4]]
    values = [
        raw(i, probabilities=p if as_array else dict(zip(("no", "yes"), p, strict=True))) for i, p in enumerate(probs)
    ]
    values.append(b'{"event_id":"z","ts":1,"model_id":"m","features":{},"probabilities":[1e999,0.5]}')
    fast, slow = decoder().decode(values), careful(decoder(), values)
    assert_same(fast, slow)
    b = only_batch(fast)
    np.testing.assert_array_equal(b.proba, [[0.25, 0.75], [0.9, 0.1], [np.nan, 0.4], [np.nan, 0.5]])
    np.testing.assert_array_equal(b.confidence, [0.75, 0.9, 0.4, 0.5])
    assert fast.violations[("non_finite", "$probabilities")] == 1


def test_probabilities_without_classes_still_give_confidence() -> None:
    s = Schema("m", numeric=("x",), prediction="categorical")
    values = [raw(0, probabilities={"a": 0.3, "b": 0.7}), raw(1, probabilities=[0.9, 0.05, 0.05]), raw(2)]
    dec = Decoder({"m": s})
    for result in (dec.decode(values), careful(dec, values)):
        b = only_batch(result)
        assert b.proba.shape == (3, 0)
        np.testing.assert_array_equal(b.confidence, [0.7, 0.9, np.nan])
        assert b.prediction_code.tolist() == [MISSING] * 3


def test_columns_and_dtypes() -> None:
    values = [raw(0, client_id="c0", model_version="v1"), raw(1, client_id=None), raw(2, extra_field=[1])]
    b = only_batch(decoder().decode(values))
    assert b.event_id.dtype == object and b.event_id.tolist() == ["e0", "e1", "e2"]
    assert b.client_id.dtype == object and b.client_id.tolist() == ["c0", None, None]
    assert b.numeric.dtype == np.float64 and b.numeric.shape == (3, 2)
    assert b.categorical.dtype == np.int32 and b.categorical.shape == (3, 1)
    assert b.prediction_code.dtype == np.int32 and b.label_code.dtype == np.int32
    assert b.proba.shape == (3, 2) and b.confidence.shape == (3,)


def test_single_feature_and_featureless_schemas() -> None:
    one = Schema("one", numeric=("x",))
    none = Schema("none", categorical=("c",), categories=(("a",),))
    values = [
        raw(0, model_id="one", features={"x": 4}),
        raw(1, model_id="none", features={"c": "a", "x": 1}),
        raw(2, model_id="one", features={}),
    ]
    dec = Decoder({"one": one, "none": none})
    fast = dec.decode(values)
    assert_same(fast, careful(dec, values))
    a, b = fast.batches
    np.testing.assert_array_equal(a.batch.numeric, [[4.0], [np.nan]])
    assert b.batch.numeric.shape == (1, 0) and b.batch.categorical.tolist() == [[0]]
    assert fast.violations == {("missing", "x"): 1, ("unexpected", "x"): 1}


# ----------------------------------------------------------------------------------------------
# Several models, parts, fast path


def test_multiple_models_split_with_their_positions() -> None:
    values = [
        raw(0),
        raw(1, model_id="r", features={"x": 10}, prediction=1.5),
        raw(2),
        b"not json",
        raw(4, model_id="r", features={"x": 11}, prediction=2.5),
        raw(5, model_id="ghost"),
    ]
    result = decoder().decode(values)
    m, r = result.batches
    assert m.model_id == "m" and r.model_id == "r"
    assert m.index.tolist() == [0, 2] and m.batch.event_id.tolist() == ["e0", "e2"]
    assert r.index.tolist() == [1, 4] and r.batch.event_id.tolist() == ["e1", "e4"]
    np.testing.assert_array_equal(r.batch.numeric, [[10.0], [11.0]])
    np.testing.assert_array_equal(r.batch.prediction, [1.5, 2.5])
    assert [(d.index, d.reason) for d in result.dead] == [(3, "not_json"), (5, "no_baseline")]
    assert_accounted(result)


def test_models_interleaved_over_many_parts_keep_input_order() -> None:
    values = [raw(i, model_id="r" if i % 3 == 0 else "m", features={"x": i, "y": 0, "c": "a"}) for i in range(2000)]
    fast = decoder().decode(values)
    assert_same(fast, careful(decoder(), values))
    r, m = fast.batches  # in order of first appearance
    assert m.index.tolist() == [i for i in range(2000) if i % 3]
    assert r.index.tolist() == list(range(0, 2000, 3))
    np.testing.assert_array_equal(m.batch.numeric[:, 0], m.index)
    np.testing.assert_array_equal(r.batch.numeric[:, 0], r.index)
    assert r.violations == {("unexpected", "y"): len(r.index), ("unexpected", "c"): len(r.index)}
    assert fast.violations == r.violations


def set_probabilities(e: dict[str, Any], rng: np.random.Generator, *, nulls_in_arrays: bool) -> None:
    """Probabilities of one random shape, or none: an object, an array of any length, a null entry."""
    kind = rng.integers(5)
    if kind == 0:
        e["probabilities"] = {"no": float(rng.random()), "yes": float(rng.random())}
    elif kind == 1:
        e["probabilities"] = [float(rng.random()) for _ in range(rng.integers(1, 4))]
    elif kind == 2:
        e["probabilities"] = {"yes": None}
    elif kind == 3 and nulls_in_arrays:
        e["probabilities"] = [None, 0.5]


def mixed_chunk(rng: np.random.Generator, n: int) -> list[bytes]:
    """Valid events with every kind of value the fast path must hand over or get right."""
    choices: list[Any] = [0.5, -3, None, "7", True, {"o": 1}, [1], 10**30, 1.0]
    cats: list[Any] = ["a", "b", "zzz", None, True, False, 1, 2.0, {"o": 1}]
    out = []
    for i in range(n):
        feats: dict[str, Any] = {}
        for name, pool in (("x", choices), ("y", choices), ("c", cats)):
            if rng.random() < 0.9:
                feats[name] = pool[rng.integers(len(pool))]
        if rng.random() < 0.1:
            feats["extra"] = 1
        e = event(i, features=feats)
        set_probabilities(e, rng, nulls_in_arrays=False)
        if rng.random() < 0.5:
            e["prediction"] = ["yes", "no", 1, 2.0, "other"][rng.integers(5)]
        if rng.random() < 0.5:
            e["label"] = ["yes", "no", 0][rng.integers(3)]
        if rng.random() < 0.3:
            e["ts"] = f"2026-11-28T10:00:00.{rng.integers(1000):03d}Z"
        out.append(json.dumps(e).encode())  # stdlib: orjson refuses to write 10**30
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_equals_careful_path_on_a_mixed_chunk(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values: list[Any] = mixed_chunk(rng, 1500)
    values[17] = b"{broken"
    values[900] = raw(900, ts="later")
    values[1400] = b'{"event_id":"e","ts":1,"model_id":"m","features":{"x":1e999}}'
    fast, slow = decoder().decode(values), careful(decoder(), values)
    assert_same(fast, slow)
    assert len(fast.dead) == 2 and len(fast.batches[0].batch) == 1498
    assert set(fast.violations) >= {
        ("wrong_type", "x"),
        ("missing", "y"),
        ("unexpected", "extra"),
        ("non_finite", "x"),
        ("misaligned", "$probabilities"),
    }


def clean_chunk(n: int) -> list[bytes]:
    return [
        raw(
            i,
            features={"x": i * 0.5, "y": None if i % 7 == 0 else -i, "c": "ab"[i % 2] if i % 5 else None},
            prediction=["yes", "no", None][i % 3],
            label=["no", None][i % 2],
            client_id=f"c{i % 4}",
            probabilities={"no": 0.25, "yes": 0.75} if i % 4 else None,
            ts=T0 + i if i % 2 else f"2026-11-28T10:00:00.{i % 1000:03d}Z",
        )
        for i in range(n)
    ]


def test_clean_chunk_takes_the_fast_path_and_matches_careful(monkeypatch: pytest.MonkeyPatch) -> None:
    values = clean_chunk(1200)
    slow = careful(decoder(), values)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("careful path used on a clean chunk")

    for name in (
        "_check_event",
        "_numeric_careful",
        "_categorical_careful",
        "_target_careful",
        "_proba_careful",
        "_loads_one",
    ):
        monkeypatch.setattr(decode_module, name, forbidden)
    fast = decoder().decode(values)
    assert_same(fast, slow)
    assert fast.violations == {("missing", "y"): 172, ("missing", "c"): 240}


# ----------------------------------------------------------------------------------------------
# Never raise


def corrupt(rng: np.random.Generator, value: bytes) -> bytes:
    kind = rng.integers(6)
    if kind == 0:  # truncated
        return value[: rng.integers(len(value) + 1)]
    if kind == 1:  # random bytes
        return rng.bytes(int(rng.integers(0, 64)))
    if kind == 2:  # a flipped byte
        i = rng.integers(len(value))
        return value[:i] + bytes([rng.integers(256)]) + value[i + 1 :]
    if kind == 3:  # spliced with another fragment
        i = rng.integers(len(value))
        return value[:i] + b'"],[{,:1e999'[rng.integers(12) :] + value[i:]
    if kind == 4:  # a random JSON value
        pool: list[Any] = [None, 1, "s", [], {}, {"event_id": 1}, [{"a": 1}], True, -0.0]
        return orjson.dumps(pool[rng.integers(len(pool))])
    return value


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_never_raises_and_accounts_for_every_message(seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = mixed_chunk(rng, 600)
    values: list[Any] = [corrupt(rng, v) if rng.random() < 0.5 else v for v in base]
    values[5] = None
    values[6] = bytearray(raw(6))
    values[7] = memoryview(raw(7))
    values[8] = "not bytes \ud800"
    values[9] = b"[" * 5000 + b"]" * 5000
    values[10] = b"1" * 400
    values[11] = b'{"x": 1e999, "y": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # deep for the stdlib retry
    dec = decoder(max_message_bytes=300_000)
    fast = dec.decode(values)
    assert fast.n_input == len(values)
    assert sum(len(b.batch) for b in fast.batches) + len(fast.dead) == fast.n_input
    assert_accounted(fast)
    assert all(d.reason in REASONS and isinstance(d.raw, bytes) for d in fast.dead)
    assert 0 < len(fast.dead) < len(values)
    assert_same(fast, careful(dec, values))
    parsed, positions, dead = parse_events(values, max_message_bytes=300_000)
    assert len(parsed) + len(dead) == len(values)
    assert sorted(positions + [d.index for d in dead]) == list(range(len(values)))


def test_bulk_concatenation_cannot_smuggle_events() -> None:
    # Joined with commas these would parse as 3 objects; each message on its own is not JSON.
    values = [b'{"a":1},{"b":2}', b'{"c":[[{}', b"{}]]}"]
    result = decoder().decode(values)
    assert [(d.index, d.reason) for d in result.dead] == [(0, "not_json"), (1, "not_json"), (2, "not_json")]


def test_empty_input() -> None:
    result = decoder().decode([])
    assert result == DecodeResult([], [], {}, 0)


def test_decoder_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="max_message_bytes"):
        Decoder({"m": SCHEMA}, max_message_bytes=0)
    with pytest.raises(ValueError, match="is for model"):
        Decoder({"other": SCHEMA})


def test_dead_letter_is_frozen() -> None:
    d = DeadLetter(0, b"x", "not_json", "invalid JSON")
    with pytest.raises(AttributeError):
        d.reason = "oversize"  # type: ignore[misc]
    assert math.isnan(only_batch(decoder().decode([raw(0, probabilities=None)])).confidence[0])


@pytest.mark.parametrize("k", [1, 8])
def test_all_numbers_finds_a_boolean_among_many_columns(k: int) -> None:
    # one column in {0, 1} among k (the per-column recheck) or all of them (the one-pass recheck)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, k))
    x[:, 0] = rng.integers(0, 2, size=50)
    rows: list[Any] = [tuple(r) for r in x.tolist()] if k > 1 else x[:, 0].tolist()
    np.testing.assert_array_equal(decode_module._all_numbers(rows, 50, k)[0], x)
    for all_binary in (False, True):
        bad = [tuple(r) for r in (np.abs(x) < 0.5 if all_binary else x).astype(float).tolist()]
        if k == 1:
            bad = [float(r[0]) for r in bad]
        bad[7] = (True, *bad[7][1:]) if k > 1 else True
        assert decode_module._all_numbers(bad, 50, k)[0] is None


# ----------------------------------------------------------------------------------------------
# The typed (msgspec) path


def set_ts(e: dict[str, Any], rng: np.random.Generator) -> None:
    """Sometimes an RFC 3339 string with an offset, sometimes a float of epoch ms."""
    if rng.random() < 0.3:
        e["ts"] = f"2026-11-28T10:00:00.{rng.integers(1000):03d}+01:00"
    elif rng.random() < 0.2:
        e["ts"] = T0 + 0.75


def typed_chunk(rng: np.random.Generator, n: int) -> list[bytes]:
    """Valid events the typed path must take, with every value it has to get right."""
    numbers: list[Any] = [0.1 + 0.2, -0.0, 0, -7, 10**23, 2**53 + 1, 1e-310, None, 1.7976931348623157e308]
    cats: list[Any] = ["a", "b", "zzz", 'é"\\', None, True, False]
    out = []
    for i in range(n):
        model = "m" if rng.random() < 0.8 else "r"
        feats: dict[str, Any] = {}
        for name in ("x", "y"):
            if rng.random() < 0.9:
                feats[name] = float(rng.normal()) if rng.random() < 0.6 else numbers[rng.integers(len(numbers))]
        if model == "m" and rng.random() < 0.9:
            feats["c"] = cats[rng.integers(len(cats))]
        if model == "r":
            feats.pop("y", None)
        e = event(i, model_id=model, features=feats, client_id=[None, "c1", "clïent"][rng.integers(3)])
        set_probabilities(e, rng, nulls_in_arrays=True)
        e["prediction"] = ["yes", "no", 1, 2.5, "other", None, 2**64 - 1][rng.integers(7)]
        e["label"] = ["yes", "no", 0, None][rng.integers(4)]
        set_ts(e, rng)
        if rng.random() < 0.2:
            e["extra"] = {"nested": [1, {"deep": "\u2603"}], "n": 1e300}
        text = json.dumps(e, ensure_ascii=bool(rng.random() < 0.5), indent=2 if rng.random() < 0.1 else None)
        out.append(text.encode())
    return out


def decode_typed_only(values: list[Any]) -> DecodeResult:
    """Decode where every part must take the typed path."""
    dec = decoder()
    dec._scanners = {}

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("general path used")

    dec._decode_part = forbidden  # type: ignore[method-assign]
    return dec.decode(values)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_typed_path_equals_general_and_careful_paths(seed: int) -> None:
    values = typed_chunk(np.random.default_rng(seed), 1300)
    typed = decode_typed_only(values)
    assert_same(typed, decoder()._decode(values, fast=True, typed=False))
    assert_same(typed, careful(decoder(), values))
    assert [b.model_id for b in typed.batches] == ["m", "r"] or [b.model_id for b in typed.batches] == ["r", "m"]
    assert {("missing", "x"), ("misaligned", "$probabilities")} <= set(typed.violations)


def test_typed_path_reads_random_floats_exactly() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(size=300) * 10.0 ** rng.integers(-300, 300, 300), rng.random(300)])
    values = [raw(i, features={"x": v, "y": -v, "c": "a"}) for i, v in enumerate(x.tolist())]
    b = only_batch(decode_typed_only(values))
    np.testing.assert_array_equal(b.numeric[:, 0], x)
    np.testing.assert_array_equal(b.numeric[:, 1], -x)


@pytest.mark.parametrize(
    "odd",
    [
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"x":1},"junk":"\xff"}',  # UTF-8 msgspec skips
        b'{"event_id":"e","ts":1,"model_id":"m","model_id":"r","features":{"x":1}}',  # the last one counts
        b'{"event_id":"e","ts":1,"model_id":"\\u0000","features":{}}',  # the union's placeholder tag
        b'{"event_id":"e","ts":1,"features":{}}',
        b'{"event_id":"e","ts":1,"model_id":"nobody","features":{}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"x":1,"extra":2}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"c":1}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"x":true}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"x":1e999}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"prediction":100000000000000000000000000000}',
        b'{"event_id":"","ts":1,"model_id":"m","features":{}}',
        b'{"event_id":"e","ts":99999999999999999999,"model_id":"m","features":{}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"probabilities":{"yes":1,"maybe":0}}',
        b'\xef\xbb\xbf{"event_id":"e","ts":1,"model_id":"m","features":{}}',
        bytearray(b'{"event_id":"e","ts":1,"model_id":"m","features":{}}'),
    ],
)
def test_what_the_typed_path_refuses_goes_the_general_way(odd: bytes) -> None:
    values: list[Any] = clean_chunk(20)
    values[11] = odd
    dec = decoder()
    dec._scanners = {}
    typed_parts = []
    general = dec._decode_part

    def spy(*args: Any, **kwargs: Any) -> None:
        typed_parts.append(args[1])
        general(*args, **kwargs)

    dec._decode_part = spy  # type: ignore[method-assign]
    result = dec.decode(values)
    assert typed_parts == [0]
    assert_same(result, careful(decoder(), values))


def test_overflowing_number_in_an_unknown_field_is_skipped_by_both_paths() -> None:
    values = clean_chunk(20)
    values[3] = b'{"event_id":"e","ts":1,"model_id":"m","features":{"x":1},"n":1e999}'
    assert_same(decode_typed_only(values), careful(decoder(), values))


def test_clean_chunk_takes_the_typed_path() -> None:
    values = clean_chunk(1200)
    assert_same(decode_typed_only(values), careful(decoder(), values))


def test_decoder_pickles_with_its_typed_path() -> None:
    values = clean_chunk(600)
    copy = pickle.loads(pickle.dumps(decoder()))
    assert copy._typed is not None
    assert_same(copy._decode(values, fast=True), careful(decoder(), values))
    assert copy._decode_typed(values[:10], 0, {}, {})


# ----------------------------------------------------------------------------------------------
# The native (C scanner) path


def test_native_extension_is_built() -> None:
    # a pure-Python install still decodes (the typed path comes first); this project's builds must not be one
    assert decode_module._native is not None
    assert set(decoder()._scanners) == {"m", "r"}


def native_chunk(rng: np.random.Generator, n: int, model: str = "m") -> list[bytes]:
    """Valid events of one model the native path must take, with every value it has to get right."""
    numbers: list[Any] = [0.1 + 0.2, -0.0, 0, -7, 10**23, 2**53 + 1, 2**64 - 1, 1e-310, 5e-324, None]
    numbers += [1.7976931348623157e308, 123456789.123456789, 1e22, 1e23, 9007199254740993.0]
    cats: list[Any] = ["a", "b", "zzz", 'é"\\/\b\f\n\r\t', "\u0000", "😀", None, True, False]
    out = []
    for i in range(n):
        names = ["x", "y", "c"] if model == "m" else ["x"]
        feats: dict[str, Any] = {}
        for name in rng.permutation(names).tolist():
            if rng.random() < 0.1:
                continue
            if name == "c":
                feats[name] = cats[rng.integers(len(cats))]
            else:
                feats[name] = float(rng.normal()) if rng.random() < 0.5 else numbers[rng.integers(len(numbers))]
        e = event(i, model_id=model, features=feats, client_id=[None, "c1", "clïent", "😀"][rng.integers(4)])
        kind = rng.integers(4)
        if kind == 0:
            e["probabilities"] = {c: float(rng.random()) for c in rng.permutation(["no", "yes"]).tolist()}
        elif kind == 1:
            e["probabilities"] = [None if rng.random() < 0.2 else float(rng.random()) for _ in range(2)]
        elif kind == 2:
            e["probabilities"] = {"yes": None} if rng.random() < 0.5 else {}
        if model == "m" and rng.random() < 0.8:
            e["prediction"] = ["yes", "no", 1, 2.5, "other", None, -(2**63), 1e2][rng.integers(8)]
        if model == "r":
            e["prediction"] = [1.5, -3, None, 10**18][rng.integers(4)]
            e.pop("probabilities", None)
        e["label"] = ["yes", "no", 0, None][rng.integers(4)]
        set_ts(e, rng)
        if rng.random() < 0.2:
            e["model_version"] = "1.2" if rng.random() < 0.5 else None
        if rng.random() < 0.2:
            e["extra"] = {"nested": [1, {"deep": "\u2603"}, [], {}], "n": -1.5e300, "t": True, "f": False, "z": None}
        items = list(e.items())
        e = dict(items[j] for j in rng.permutation(len(items)).tolist())  # any key order
        text = json.dumps(e, ensure_ascii=bool(rng.random() < 0.5), indent=2 if rng.random() < 0.1 else None)
        out.append(text.encode())
    return out


def decode_native_only(values: list[Any], dec: Decoder | None = None) -> DecodeResult:
    """Decode where every part must take the native path."""
    dec = dec or decoder()

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("another path used")

    dec._decode_part = forbidden  # type: ignore[method-assign]
    dec._decode_typed = forbidden  # type: ignore[method-assign]
    return dec.decode(values)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_native_path_equals_the_other_paths(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = native_chunk(rng, 1300)
    native = decode_native_only(values)
    assert_same(native, decoder()._decode(values, fast=True, native=False))
    assert_same(native, decoder()._decode(values, fast=True, typed=False, native=False))
    assert_same(native, careful(decoder(), values))
    assert {("missing", "x"), ("missing", "c")} <= set(native.violations)


def test_native_path_follows_the_model_of_each_part() -> None:
    rng = np.random.default_rng(4)
    values = native_chunk(rng, 512, "m") + native_chunk(rng, 1024, "r") + native_chunk(rng, 600, "m")  # parts of 512
    native = decode_native_only(values)
    assert [(b.model_id, len(b.batch)) for b in native.batches] == [("m", 1112), ("r", 1024)]
    assert_same(native, careful(decoder(), values))
    # parts mixing two models are not the native path's: they still decode the same
    assert_same(decoder().decode(values[300:900]), careful(decoder(), values[300:900]))


def test_native_path_reads_random_floats_exactly() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(size=3000) * 10.0 ** rng.integers(-300, 300, 3000), rng.random(3000)])
    x[:6] = [5e-324, 2.2250738585072014e-308, 2.225073858507201e-308, 1.7976931348623157e308, 0.1, 1 / 3]
    values = [raw(i, features={"x": v, "y": -v, "c": "a"}) for i, v in enumerate(x.tolist())]
    b = only_batch(decode_native_only(values))
    np.testing.assert_array_equal(b.numeric[:, 0], x)
    np.testing.assert_array_equal(b.numeric[:, 1], -x)
    assert np.signbit(b.numeric[:, 1]).tolist() == np.signbit(-x).tolist()


@pytest.mark.parametrize(
    "token",
    [
        "0",
        "-0",
        "-0.0",
        "1e-400",
        "4.9406564584124654e-324",
        "2.2250738585072011e-308",
        "9007199254740993",
        "9007199254740992.5",
        "18446744073709551616",
        "1e23",
        "8.988465674311579e307",
        "0.000001",
        "123456789012345678901234567890",
        "1.00000000000000011102230246251565404236316680908203125",
        "7.2057594037927933e16",
        "0." + "0" * 400 + "1",
        "1" + "0" * 300 + "e-300",
    ],
)
def test_native_numbers_are_correctly_rounded(token: str) -> None:
    assert decode_module._native is not None
    got = decode_module._native.parse_float(token.encode())
    want = float(int(token)) if token.lstrip("-").isdigit() else float(token)
    if len(token) >= 400:  # longer than the scanner reads exactly: it refuses, the other paths read it
        assert got is None
        return
    assert got is not None and (got, math.copysign(1, got)) == (want, math.copysign(1, want))


def test_native_numbers_agree_with_python_on_random_tokens() -> None:
    assert decode_module._native is not None
    parse = decode_module._native.parse_float
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2**63, 20_000, dtype=np.int64).view(np.float64)
    tokens = [repr(f) for f in bits.tolist() if math.isfinite(f)]
    tokens += [f"{f:.3e}" for f in bits.tolist() if math.isfinite(f)]
    for _ in range(20_000):
        digits = "".join(map(str, rng.integers(0, 10, rng.integers(1, 28)))).lstrip("0") or "0"
        frac = "".join(map(str, rng.integers(0, 10, rng.integers(0, 28))))
        exponent = f"e{rng.integers(-330, 310)}" if rng.random() < 0.5 else ""
        tokens.append(digits + (f".{frac}" if frac else "") + exponent)
    wrong = []
    for t in tokens:
        want, got = float(t), parse(t.encode())
        if not math.isfinite(want):
            if got is not None:  # too large for float64: the other paths count it as non_finite
                wrong.append(t)
        elif got is None or (got, math.copysign(1, got)) != (want, math.copysign(1, want)):
            wrong.append(t)
    assert wrong == []


@pytest.mark.parametrize(
    "token", ["01", "1.", ".5", "+1", "1e", "-", "NaN", "Infinity", "1e400", "-1e400", "0x1", "1_0", ""]
)
def test_native_refuses_what_is_not_a_finite_json_number(token: str) -> None:
    assert decode_module._native is not None
    assert decode_module._native.parse_float(token.encode()) is None


@pytest.mark.parametrize(
    "odd",
    [
        b'{"event\\u005fid":"e","ts":1,"model_id":"m","features":{}}',  # a key with an escape
        b'{"event_id":"e","event_id":"f","ts":1,"model_id":"m","features":{}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"x":1,"x":2}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"probabilities":{"yes":1,"yes":0}}',
        b'{"event_id":"e","ts":1,"model_id":"r","features":{"x":1}}',  # another model in the part
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"c":1}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"x":"1"}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"x":true}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"x":[1]}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"extra":1}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"probabilities":{"yes":1,"maybe":0}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"probabilities":[0.5]}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"probabilities":[0.5,0.5,0]}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"prediction":18446744073709551615}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"prediction":true}',
        b'{"event_id":"e","ts":9223372036854775808,"model_id":"m","features":{}}',
        b'{"event_id":"e","ts":true,"model_id":"m","features":{}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"x":1e999}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"n":1e999}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"s":"\\ud800"}',  # a lone surrogate
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"s":"\\udc00\\ud800"}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"s":"tab\there"}',  # a raw control byte
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"s":"\\x"}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"d":' + b"[" * 100 + b"]" * 100 + b"}",
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"n":01}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"n":NaN}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"t":tru}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{}} x',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{}}{}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"x":1,}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"a":[1,]}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"a":{"k" 1}}',
        b'{"event_id":"e","ts":1,"model_id":"m"}',
        b'{"event_id":"","ts":1,"model_id":"m","features":{}}',
        b'{"event_id":null,"ts":1,"model_id":"m","features":{}}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":null}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"client_id":7}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"model_version":7}',
        b'{"event_id":"e","ts":1,"model_id":"m\\u0000","features":{}}',
        b"[1]",
        b'"s"',
        b"",
        b'{"event_id":"e","ts":1,"model_id":"m","features":{"x":1}',
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"junk":"\xff"}',  # invalid UTF-8 anywhere
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"junk":"\xc0\xaf"}',  # an overlong form
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"junk":"\xed\xa0\x80"}',  # an encoded surrogate
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"junk":"\xf4\x90\x80\x80"}',  # beyond U+10FFFF
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"junk":"\xe2\x82"}',  # truncated
        b'{"event_id":"e","ts":1,"model_id":"m","features":{},"pad":"' + b"x" * 2000 + b'"}',  # oversize
        None,
        bytearray(b'{"event_id":"e","ts":1,"model_id":"m","features":{}}'),
    ],
)
def test_what_the_native_path_refuses_goes_another_way(odd: bytes | None) -> None:
    values: list[Any] = clean_chunk(20)
    values[11] = odd
    dec = decoder(max_message_bytes=1500)
    general = dec._decode_part
    handed: list[tuple[int, int]] = []

    def spy(*args: Any, **kwargs: Any) -> None:
        handed.append((args[1], len(args[0])))
        general(*args, **kwargs)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("typed path used")

    dec._decode_part = spy  # type: ignore[method-assign]
    dec._decode_typed = forbidden  # type: ignore[method-assign]
    result = dec.decode(values)
    if odd is not None and b'"model_id":"r"' in odd:  # valid, of another model: read by that model's scanner
        assert handed == []
    else:  # that message alone; the native path read the others
        assert handed == [(11, 1)]
    assert_same(result, careful(decoder(max_message_bytes=1500), values))


def test_native_path_reads_valid_multibyte_utf8() -> None:
    text = "é€😀\u07ff\u0800\uffff\U00010000\U0010ffff"
    values = [raw(i, client_id=text, features={"x": 1, "y": 2, "c": text}) for i in range(10)]  # raw UTF-8
    b = only_batch(decode_native_only(values))
    assert b.client_id.tolist() == [text] * 10


def spied_decoder() -> tuple[Decoder, list[tuple[str, int, int]]]:
    """A decoder that records which path decoded which messages: (path, offset, count)."""
    dec = decoder()
    calls: list[tuple[str, int, int]] = []

    def spying(name: str) -> Any:
        method = getattr(dec, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, args[1], len(args[0])))
            return method(*args, **kwargs)

        return spy

    for name in ("_decode_native", "_decode_typed", "_decode_part"):
        setattr(dec, name, spying(name))
    return dec, calls


def test_native_path_hands_over_the_rest_of_a_chunk_after_many_refusals() -> None:
    values: list[Any] = clean_chunk(600)
    budget = decode_module._NATIVE_REFUSALS * 2  # per part of 512 messages begun
    bad = list(range(5, 5 + 7 * (budget + 3), 7))
    for i in bad:
        values[i] = raw(i, ts="yesterday") if i % 2 else values[i][:-1]
    dec, calls = spied_decoder()
    result = dec.decode(values)
    assert_same(result, careful(decoder(), values))
    assert sorted(d.index for d in result.dead) == bad
    # the first ones are refused one by one; after the budget the rest goes typed, in parts
    assert [(p, at) for p, at, n in calls if n == 1] == [("_decode_part", i) for i in bad[:budget]]
    rest = bad[budget]
    assert calls[-2:] == [("_decode_typed", rest, 600 - rest), ("_decode_part", rest, 600 - rest)]


def test_native_scanner_checks_its_arguments() -> None:
    native = decode_module._native
    assert native is not None
    with pytest.raises(ValueError, match="duplicate feature"):
        native.Scanner(b"m", [b"x"], [b"x"], [], 1000)
    scanner = native.Scanner(b"m", [b"x"], [], [b"a", b"b"], 1000)
    values = [raw(0, features={"x": 1})]
    with pytest.raises(ValueError, match="float64"):
        scanner.scan(values, 0, np.full((1, 2), np.nan), np.full((1, 2), np.nan))
    with pytest.raises(ValueError, match="float64"):
        scanner.scan(values, 0, np.full((1, 1), np.nan, np.float32), np.full((1, 2), np.nan))
    with pytest.raises(ValueError, match="proba"):
        scanner.scan(values, 0, np.full((1, 1), np.nan), np.full((1, 3), np.nan))
    with pytest.raises(ValueError, match="start"):
        scanner.scan(values, 2, np.full((1, 1), np.nan), np.full((1, 2), np.nan))
    x = np.full((1, 1), np.nan)
    assert scanner.scan(values, 0, x, np.full((1, 2), np.nan))[0] == 1 and x[0, 0] == 1.0
    x = np.full((3, 1), np.nan)
    got = scanner.scan([b"{}", *values * 2], 1, x, np.full((3, 2), np.nan))
    assert got[:2] == (2, ["e0", "e0"]) and np.isnan(x[0, 0]) and x[1:, 0].tolist() == [1.0, 1.0]


def test_decoder_pickles_with_its_native_path() -> None:
    values = clean_chunk(600)
    copy = pickle.loads(pickle.dumps(decoder()))
    assert set(copy._scanners) == {"m", "r"}
    assert_same(decode_native_only(values, copy), careful(decoder(), values))


def test_events_dated_after_their_message_beyond_the_limit_are_dead_letters() -> None:
    """One event from a wrong clock would move event time on for every time window and rate: an event dated more
    than ``max_future_ms`` after its Kafka message is a dead letter ``future_ts``; up to the limit, before it, or
    without a message timestamp (negative), or without ``record_ts`` (a file), it is decoded."""
    hour = 3_600_000
    values: list[bytes | None] = [
        raw(0),
        raw(1, ts=T0 + 2 * hour),  # two hours after its message: a dead letter
        raw(2, ts=T0 + hour),  # exactly the limit: kept
        b"{",  # a dead letter of another reason, between them
        raw(4, model_id="r", features={"x": 1.0}, ts=T0 + 5 * hour),  # another model's: a dead letter too
        raw(5, ts=T0 + 9 * hour),  # no message timestamp: kept
        raw(6, ts=T0 - 9 * hour),  # long before its message: kept (late data is the windows' business)
    ]
    record_ts = np.array([T0, T0, T0, T0, T0, -1, T0], dtype=np.int64)
    out = decoder().decode(values, record_ts)
    assert [(d.index, d.reason) for d in out.dead] == [(1, "future_ts"), (3, "not_json"), (4, "future_ts")]
    assert out.dead[0].raw == values[1] and "7200000 ms after" in out.dead[0].detail
    assert [(mb.model_id, mb.batch.event_id.tolist(), mb.index.tolist()) for mb in out.batches] == [
        ("m", ["e0", "e2", "e5", "e6"], [0, 2, 5, 6])
    ]
    assert "future_ts" in REASONS
    # no record timestamps, or no limit: every event is decoded
    for dec, rts in ((decoder(), None), (decoder(max_future_ms=None), record_ts)):
        kept = dec.decode(values, rts)
        assert [d.index for d in kept.dead] == [3] and sum(len(mb.batch) for mb in kept.batches) == 6
    with pytest.raises(ValueError, match="record_ts"):
        decoder().decode(values, record_ts[:3])
    with pytest.raises(ValueError, match="max_future_ms"):
        decoder(max_future_ms=-1)
