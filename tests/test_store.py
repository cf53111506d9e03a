"""Tests of the versioned, content-addressed, signed baseline store (:mod:`baselines.store`)."""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from baselines.errors import (
    BaselineError,
    BaselineNotFound,
    IntegrityError,
    InvalidInputError,
    SignatureError,
    StoreError,
)
from baselines.store import BaselineStore, canonical_json, content_version

KEY = b"0123456789abcdef0123456789abcdef"
OTHER_KEY = b"fedcba9876543210fedcba9876543210"
MODEL = "fraud-model"


def arrays(shift: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "edges": np.linspace(0.0, 1.0, 11) + shift,
        "counts": np.arange(10, dtype=np.int64),
    }


def meta(**extra: Any) -> dict[str, Any]:
    return {"features": ["amount", "country"], "window": 1000, **extra}


def manifest_path(store: BaselineStore, version: str, model_id: str = MODEL) -> Path:
    return store.root / model_id / version / "manifest.json"


def read_manifest(store: BaselineStore, version: str, model_id: str = MODEL) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(manifest_path(store, version, model_id).read_text())
    return data


def write_manifest(store: BaselineStore, version: str, manifest: dict[str, Any], model_id: str = MODEL) -> None:
    manifest_path(store, version, model_id).write_text(json.dumps(manifest))


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------- round trip


def test_round_trip_keeps_values_dtypes_shapes_and_meta(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    original = {
        "f64": np.array([0.5, np.nan, -np.inf, 1e300]),
        "f32_2d": np.arange(12, dtype=np.float32).reshape(3, 4),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        "big_endian": np.arange(4, dtype=">i4"),
        "flags": np.array([True, False, True]),
        "labels": np.array(["a", "bb", "ccc"]),
        "scalar": np.array(3.25),
        "empty": np.zeros((0, 5)),
        "records": np.array([(1, 2.0)], dtype=[("k", "<i8"), ("v", "<f4")]),
    }
    m = {"nested": {"a": [1, 2.5, None, True, "é"]}, "n": 10**20, "tuple": (1, 2)}

    info = store.save(MODEL, original, m)
    loaded = store.load(MODEL)

    assert loaded.version == info.version
    assert set(loaded.arrays) == set(original)
    for name, arr in original.items():
        got = loaded.arrays[name]
        assert got.dtype == arr.dtype, name
        assert got.shape == arr.shape, name
        np.testing.assert_array_equal(got, arr, err_msg=name)
    assert loaded.meta == {"nested": {"a": [1, 2.5, None, True, "é"]}, "n": 10**20, "tuple": [1, 2]}
    assert loaded.info.active is True
    assert loaded.info.path == tmp_path / MODEL / info.version


def test_manifest_follows_the_documented_format(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    before = datetime.now(UTC)
    info = store.save(MODEL, arrays(), meta())
    m = read_manifest(store, info.version)

    assert m["format"] == 1
    assert m["model_id"] == MODEL
    assert m["version"] == info.version
    assert m["signature"] is None
    assert m["meta"] == meta()
    created = datetime.fromisoformat(m["created_at"])
    assert m["created_at"].endswith("Z") and created.tzinfo is not None
    assert before <= created <= datetime.now(UTC)
    assert info.created_at == created
    for name, arr in arrays().items():
        entry = m["files"][name]
        raw = (store.root / MODEL / info.version / f"{name}.npy").read_bytes()
        assert entry["sha256"] == hashlib.sha256(raw).hexdigest()
        assert entry["bytes"] == len(raw)
        assert entry["shape"] == list(arr.shape)
        assert np.dtype(entry["dtype"]) == arr.dtype


# ------------------------------------------------------------------------------- content addressing


def test_version_is_the_documented_hash_of_model_files_and_meta(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    info = store.save(MODEL, arrays(), meta())
    files = read_manifest(store, info.version)["files"]
    digests = {n: e["sha256"] for n, e in files.items()}
    payload = {"model_id": MODEL, "files": digests, "meta": meta()}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    assert canonical_json(payload) == canonical
    assert info.version == hashlib.sha256(canonical).hexdigest()[:16]
    assert content_version(MODEL, digests, meta()) == info.version


def test_same_content_same_version_in_another_store_and_later(tmp_path: Path) -> None:
    a = BaselineStore(tmp_path / "a").save(MODEL, arrays(), meta())
    b = BaselineStore(tmp_path / "b").save(MODEL, arrays(), dict(reversed(list(meta().items()))))
    assert a.version == b.version  # created_at differs, key order of meta does not matter


def test_different_content_gives_a_different_version(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    base = store.save(MODEL, arrays(), meta()).version
    as_f32 = {**arrays(), "edges": arrays()["edges"].astype(np.float32)}
    renamed = {"edges2": arrays()["edges"], "counts": arrays()["counts"]}
    others = {
        store.save(MODEL, arrays(), meta(window=1001)).version,  # meta
        store.save(MODEL, arrays(shift=1e-12), meta()).version,  # one value
        store.save(MODEL, as_f32, meta()).version,  # dtype
        store.save(MODEL, renamed, meta()).version,  # array name
        store.save("other-model", arrays(), meta()).version,  # model id
    }
    assert base not in others
    assert len(others) == 5


def test_saving_the_same_content_again_is_idempotent(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    first = store.save(MODEL, arrays(), meta())
    again = store.save(MODEL, arrays(), meta(), actor="someone-else")

    assert again.version == first.version
    assert again.created_at == first.created_at
    assert [i.version for i in store.list_versions(MODEL)] == [first.version]
    assert [e["action"] for e in store.audit_log(MODEL)] == ["save", "promote"]
    assert sorted(p.name for p in (tmp_path / MODEL).iterdir()) == ["ACTIVE", first.version]


# ------------------------------------------------------------------------------- tampering


def test_tampered_npy_byte_is_refused_and_named(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    v = store.save(MODEL, arrays(), meta()).version
    flip_last_byte(tmp_path / MODEL / v / "edges.npy")

    with pytest.raises(IntegrityError, match=r"file edges\.npy: SHA-256 mismatch") as exc:
        store.load(MODEL)
    assert "\n" not in str(exc.value)
    assert f"{MODEL}/{v}" in str(exc.value)

    report = store.verify(MODEL)
    assert report.ok is False
    assert report.files == {"counts": "ok", "edges": "mismatch"}
    assert len(report.problems) == 1 and "edges.npy" in report.problems[0]
    assert report.summary().startswith(f"{MODEL}/{v}: FAILED: ")


def test_missing_npy_file_is_refused_and_reported(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    v = store.save(MODEL, arrays(), meta()).version
    (tmp_path / MODEL / v / "counts.npy").unlink()

    with pytest.raises(IntegrityError, match=r"file counts\.npy: missing"):
        store.load(MODEL, v)
    report = store.verify(MODEL, v)
    assert report.files == {"counts": "missing", "edges": "ok"}
    assert not report.ok


def test_tampered_meta_fails_the_version_digest_in_an_unkeyed_store(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    v = store.save(MODEL, arrays(), meta()).version
    m = read_manifest(store, v)
    m["meta"]["window"] = 5
    write_manifest(store, v, m)

    with pytest.raises(IntegrityError, match="no longer matches its version"):
        store.load(MODEL)
    report = store.verify(MODEL)
    assert not report.ok
    assert report.signature == "unchecked"
    assert report.files == {"counts": "ok", "edges": "ok"}


def test_tampered_meta_fails_the_signature_in_a_keyed_store(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, signing_key=KEY)
    v = store.save(MODEL, arrays(), meta()).version
    m = read_manifest(store, v)
    m["meta"]["window"] = 5
    write_manifest(store, v, m)

    with pytest.raises(SignatureError, match="signature does not match"):
        store.load(MODEL)
    report = store.verify(MODEL)
    assert report.signature == "bad"
    assert not report.ok


def test_forged_digest_and_shape_in_an_unkeyed_manifest_are_caught(tmp_path: Path) -> None:
    # Rewriting a file and its digest changes the version hash; editing only dtype/shape is caught
    # by comparing them with the file's own header.
    store = BaselineStore(tmp_path)
    v = store.save(MODEL, arrays(), meta()).version
    m = read_manifest(store, v)
    m["files"]["edges"]["shape"] = [12]
    write_manifest(store, v, m)
    with pytest.raises(IntegrityError, match=r"edges\.npy: manifest\.json lists dtype <f8, shape \(12,\)"):
        store.load(MODEL)
    assert store.verify(MODEL).files["edges"] == "mismatch"


def test_manifest_moved_to_another_model_is_refused(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    v = store.save(MODEL, arrays(), meta()).version
    other = store.save("other-model", arrays(), meta()).version
    os.replace(manifest_path(store, v), manifest_path(store, other, "other-model"))
    for name in ("edges", "counts"):
        os.replace(tmp_path / MODEL / v / f"{name}.npy", tmp_path / "other-model" / other / f"{name}.npy")

    with pytest.raises(IntegrityError, match="copied or moved from another baseline"):
        store.load("other-model")


def test_unreadable_manifest_is_an_integrity_error(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    v = store.save(MODEL, arrays(), meta()).version
    manifest_path(store, v).write_text('{"format": 1, "model_id": ')
    with pytest.raises(IntegrityError, match=r"manifest\.json is unreadable"):
        store.load(MODEL)
    report = store.verify(MODEL)
    assert not report.ok and report.files == {}


def test_object_arrays_are_refused_at_save(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    with pytest.raises(InvalidInputError, match=r"array 'names' has dtype object") as exc:
        store.save(MODEL, {"names": np.array(["a", None], dtype=object)}, meta())
    assert isinstance(exc.value, ValueError)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("bad_meta", "match"),
    [
        ({"n": np.int64(3)}, r"meta\['n'\] is a numpy\.int64"),
        ({"x": float("nan")}, r"meta\['x'\] is nan"),
        ({1: "a"}, "keys must be strings"),
        ({"s": {1, 2}}, r"meta\['s'\] is a builtins\.set"),
    ],
)
def test_meta_that_json_cannot_store_faithfully_is_refused(tmp_path: Path, bad_meta: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        BaselineStore(tmp_path).save(MODEL, arrays(), bad_meta)


# ------------------------------------------------------------------------------- signatures


def test_signed_manifest_carries_the_documented_hmac(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, signing_key=KEY, key_id="ci-2024")
    v = store.save(MODEL, arrays(), meta()).version
    m = read_manifest(store, v)
    sig = m.pop("signature")
    expected = hmac.new(
        KEY,
        json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(),
        hashlib.sha256,
    ).hexdigest()

    assert sig == {"alg": "hmac-sha256", "key_id": "ci-2024", "value": expected}
    report = store.verify(MODEL)
    assert report.ok and report.signature == "ok"


def test_wrong_key_is_refused(tmp_path: Path) -> None:
    v = BaselineStore(tmp_path, signing_key=KEY).save(MODEL, arrays(), meta()).version
    other = BaselineStore(tmp_path, signing_key=OTHER_KEY)  # same key id "default", other secret

    with pytest.raises(SignatureError, match=f"{MODEL}/{v}: signature does not match"):
        other.load(MODEL)
    assert other.verify(MODEL).signature == "bad"


def test_key_id_mismatch_is_refused_with_both_names(tmp_path: Path) -> None:
    BaselineStore(tmp_path, signing_key=KEY, key_id="old").save(MODEL, arrays(), meta())
    with pytest.raises(SignatureError, match="signed with key 'old', but this store holds key 'new'"):
        BaselineStore(tmp_path, signing_key=KEY, key_id="new").load(MODEL)


def test_unsigned_baseline_is_refused_by_a_keyed_store(tmp_path: Path) -> None:
    BaselineStore(tmp_path).save(MODEL, arrays(), meta())
    keyed = BaselineStore(tmp_path, signing_key=KEY)

    with pytest.raises(SignatureError, match="is not signed"):
        keyed.load(MODEL)
    report = keyed.verify(MODEL)
    assert report.signature == "missing"
    assert not report.ok
    assert report.files == {"counts": "ok", "edges": "ok"}


def test_unkeyed_store_loads_signed_and_unsigned_reporting_unchecked(tmp_path: Path) -> None:
    signed_v = BaselineStore(tmp_path, signing_key=KEY).save(MODEL, arrays(), meta()).version
    plain = BaselineStore(tmp_path)
    unsigned_v = plain.save(MODEL, arrays(shift=1.0), meta()).version

    for v in (signed_v, unsigned_v):
        np.testing.assert_array_equal(plain.load(MODEL, v).arrays["counts"], np.arange(10))
        report = plain.verify(MODEL, v)
        assert report.ok and report.signature == "unchecked"
    assert read_manifest(plain, signed_v)["signature"] is not None
    assert read_manifest(plain, unsigned_v)["signature"] is None


def test_saving_again_with_a_key_signs_an_unsigned_baseline(tmp_path: Path) -> None:
    v = BaselineStore(tmp_path).save(MODEL, arrays(), meta()).version
    keyed = BaselineStore(tmp_path, signing_key=KEY)
    assert keyed.save(MODEL, arrays(), meta()).version == v
    assert keyed.verify(MODEL).signature == "ok"
    assert keyed.audit_log(MODEL)[-1]["reason"] == "re-signed with key 'default'"


def test_signature_protects_created_at(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, signing_key=KEY)
    v = store.save(MODEL, arrays(), meta()).version
    m = read_manifest(store, v)
    m["created_at"] = "2000-01-01T00:00:00.000000Z"
    write_manifest(store, v, m)
    with pytest.raises(SignatureError):
        store.load(MODEL)


def test_short_signing_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        BaselineStore(tmp_path, signing_key=b"short")


# ------------------------------------------------------------------------------- promote / rollback


def test_first_save_promotes_and_later_saves_do_not_unless_asked(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    v1 = store.save(MODEL, arrays(0), meta())
    v2 = store.save(MODEL, arrays(1), meta())
    assert v1.active and not v2.active
    assert store.active_version(MODEL) == v1.version
    v3 = store.save(MODEL, arrays(2), meta(), promote=True)
    assert v3.active and store.active_version(MODEL) == v3.version
    v4 = BaselineStore(tmp_path).save("new-model", arrays(), meta(), promote=False)
    assert not v4.active and store.active_version("new-model") is None
    with pytest.raises(BaselineNotFound, match="no active version"):
        store.load("new-model")


def test_promote_and_rollback_walk_the_history_stack(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    v1 = store.save(MODEL, arrays(0), meta()).version
    v2 = store.save(MODEL, arrays(1), meta(), promote=False).version
    v3 = store.save(MODEL, arrays(2), meta(), promote=False).version
    store.promote(MODEL, v2, actor="alice", reason="retrained")
    store.promote(MODEL, v3, actor="alice")
    assert store.active_version(MODEL) == v3

    assert store.rollback(MODEL, actor="bob", reason="too many alerts") == v2
    assert store.active_version(MODEL) == v2
    assert store.load(MODEL).version == v2
    assert store.rollback(MODEL) == v1
    assert store.active_version(MODEL) == v1
    with pytest.raises(StoreError, match="nothing to roll back to"):
        store.rollback(MODEL)
    assert store.active_version(MODEL) == v1

    infos = store.list_versions(MODEL)
    assert [i.version for i in infos] == [v1, v2, v3]  # oldest first
    assert [i.active for i in infos] == [True, False, False]


def test_promote_refuses_a_tampered_version(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    v1 = store.save(MODEL, arrays(0), meta()).version
    v2 = store.save(MODEL, arrays(1), meta()).version
    flip_last_byte(tmp_path / MODEL / v2 / "counts.npy")
    n_entries = len(store.audit_log())

    with pytest.raises(IntegrityError, match=r"refusing to promote: .*counts\.npy"):
        store.promote(MODEL, v2)
    assert store.active_version(MODEL) == v1
    assert len(store.audit_log()) == n_entries


def test_promote_refuses_an_unsigned_version_in_a_keyed_store(tmp_path: Path) -> None:
    keyed = BaselineStore(tmp_path, signing_key=KEY)
    v1 = keyed.save(MODEL, arrays(0), meta()).version
    v2 = BaselineStore(tmp_path).save(MODEL, arrays(1), meta()).version
    with pytest.raises(SignatureError):
        keyed.promote(MODEL, v2)
    assert keyed.active_version(MODEL) == v1


def test_rollback_refuses_a_tampered_target(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    v1 = store.save(MODEL, arrays(0), meta()).version
    v2 = store.save(MODEL, arrays(1), meta(), promote=True).version
    (tmp_path / MODEL / v1 / "edges.npy").unlink()
    with pytest.raises(IntegrityError, match=f"refusing to roll back {MODEL} to {v1}"):
        store.rollback(MODEL)
    assert store.active_version(MODEL) == v2


def test_rollback_refuses_when_active_was_changed_behind_the_audit_log(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    v1 = store.save(MODEL, arrays(0), meta()).version
    v2 = store.save(MODEL, arrays(1), meta(), promote=True).version
    (tmp_path / MODEL / "ACTIVE").write_text(json.dumps({"version": v1}))
    with pytest.raises(StoreError, match="promote a version explicitly"):
        store.rollback(MODEL)
    store.promote(MODEL, v1)  # explicit promotion brings ACTIVE and the log back in line
    assert store.rollback(MODEL) == v2


def test_unreadable_active_pointer_is_reported_and_repaired_by_promote(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    v = store.save(MODEL, arrays(), meta()).version
    (tmp_path / MODEL / "ACTIVE").write_text("{not json")
    with pytest.raises(StoreError, match=r"ACTIVE is unreadable .*promote a version to rewrite it"):
        store.load(MODEL)
    store.promote(MODEL, v, reason="repair")
    assert store.load(MODEL).version == v


def test_promote_of_unknown_version_or_model(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.save(MODEL, arrays(), meta())
    with pytest.raises(BaselineNotFound):
        store.promote(MODEL, "0123456789abcdef")
    with pytest.raises(BaselineNotFound):
        store.promote("unknown", "0123456789abcdef")
    with pytest.raises(BaselineNotFound):
        store.rollback("unknown")


# ------------------------------------------------------------------------------- audit log


def test_audit_log_records_every_action_in_order(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    v1 = store.save(MODEL, arrays(0), meta(), actor="trainer").version
    v2 = store.save(MODEL, arrays(1), meta(), actor="trainer").version
    w1 = store.save("other-model", arrays(), meta(), actor="trainer").version
    store.promote(MODEL, v2, actor="alice", reason="retrained on May")
    store.rollback(MODEL, actor="bob", reason="false alarms")

    rows = [(e["action"], e["model_id"], e["version"], e["previous"], e["actor"]) for e in store.audit_log()]
    assert rows == [
        ("save", MODEL, v1, None, "trainer"),
        ("promote", MODEL, v1, None, "trainer"),
        ("save", MODEL, v2, v1, "trainer"),
        ("save", "other-model", w1, None, "trainer"),
        ("promote", "other-model", w1, None, "trainer"),
        ("promote", MODEL, v2, v1, "alice"),
        ("rollback", MODEL, v1, v2, "bob"),
    ]
    log = store.audit_log(MODEL)
    assert [e["action"] for e in log] == ["save", "promote", "save", "promote", "rollback"]
    assert log[-1]["reason"] == "false alarms"
    assert all(set(e) == {"ts", "action", "model_id", "version", "previous", "actor", "reason"} for e in log)
    stamps = [datetime.fromisoformat(e["ts"]) for e in store.audit_log()]
    assert stamps == sorted(stamps)
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 7 and all(json.loads(line) for line in lines)


def test_audit_log_drops_a_line_torn_by_a_crash(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    v1 = store.save(MODEL, arrays(0), meta()).version
    with open(tmp_path / "audit.jsonl", "ab") as f:
        f.write(b'{"ts": "2024-01-01T00:00:00Z", "action": "prom')  # crashed writer
    assert len(store.audit_log()) == 2  # the unfinished line is not an entry
    v2 = store.save(MODEL, arrays(1), meta(), promote=True).version
    assert [(e["action"], e["version"]) for e in store.audit_log()][2:] == [("save", v2), ("promote", v2)]
    assert store.rollback(MODEL) == v1


# ------------------------------------------------------------------------------- names and lookups


@pytest.mark.parametrize(
    "bad_id", ["", "../etc", "a/b", ".hidden", "-x", "x" * 129, "model\n", "a b", "audit.jsonl", "é", 42]
)
def test_invalid_model_ids_are_rejected(tmp_path: Path, bad_id: Any) -> None:
    store = BaselineStore(tmp_path)
    with pytest.raises(ValueError, match="invalid model id"):
        store.save(bad_id, arrays(), meta())
    with pytest.raises(ValueError, match="invalid model id"):
        store.load(bad_id)
    assert list(tmp_path.iterdir()) == []


def test_valid_edge_case_ids_are_accepted(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    for model_id in ("a", "A.b_c-9", "x" * 128):
        assert store.save(model_id, arrays(), meta()).model_id == model_id
    assert store.list_models() == sorted(["a", "A.b_c-9", "x" * 128])


@pytest.mark.parametrize("bad_name", ["../x", "a/b", "", ".npy", "x\n"])
def test_invalid_array_names_are_rejected(tmp_path: Path, bad_name: str) -> None:
    with pytest.raises(ValueError, match="invalid array name"):
        BaselineStore(tmp_path).save(MODEL, {bad_name: np.zeros(3)}, meta())


def test_array_names_colliding_by_case_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differ only in case"):
        BaselineStore(tmp_path).save(MODEL, {"Edges": np.zeros(1), "edges": np.ones(1)}, meta())


def test_invalid_version_is_rejected_before_touching_the_disk(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.save(MODEL, arrays(), meta())
    with pytest.raises(ValueError, match="invalid version"):
        store.load(MODEL, "../../etc")


def test_list_versions_is_in_save_order(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    saved = [store.save(MODEL, arrays(float(i)), meta()).version for i in range(8)]
    assert sorted(saved) != saved  # versions are hashes: their own order is not the save order
    infos = store.list_versions(MODEL)
    assert [i.version for i in infos] == saved
    assert [i.created_at for i in infos] == sorted(i.created_at for i in infos)
    assert [i.active for i in infos] == [True] + [False] * 7


def test_unknown_model_and_version_raise_baseline_not_found(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "never-created")
    with pytest.raises(BaselineNotFound, match="no baseline for model nope") as exc:
        store.load("nope")
    assert isinstance(exc.value, BaselineError) and isinstance(exc.value, LookupError)
    with pytest.raises(BaselineNotFound):
        store.verify("nope")
    with pytest.raises(BaselineNotFound):
        store.list_versions("nope")
    assert store.active_version("nope") is None
    assert store.list_models() == []
    assert store.audit_log() == []
    with pytest.raises(BaselineNotFound, match="no baseline for model nope"):
        store.load("nope", "0123456789abcdef")
    assert not (tmp_path / "never-created").exists()  # reading creates nothing

    store.save(MODEL, arrays(), meta())
    with pytest.raises(BaselineNotFound, match=f"no version 0123456789abcdef of model {MODEL}"):
        store.load(MODEL, "0123456789abcdef")


def test_list_models_ignores_crash_leftovers_which_the_next_save_removes(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.save(MODEL, arrays(), meta())
    leftover = tmp_path / MODEL / ".tmp-deadbeef"
    leftover.mkdir()
    (leftover / "edges.npy").write_bytes(b"partial")
    (tmp_path / "empty-model").mkdir()

    assert store.list_models() == [MODEL]
    assert len(store.list_versions(MODEL)) == 1
    store.save(MODEL, arrays(1), meta())
    assert not leftover.exists()


# ------------------------------------------------------------------------------- concurrency


def test_writers_wait_for_the_store_lock(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.save(MODEL, arrays(0), meta())
    done = threading.Event()

    def save() -> None:
        store.save(MODEL, arrays(1), meta())
        done.set()

    fd = os.open(tmp_path / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer holds the lock
        t = threading.Thread(target=save)
        t.start()
        assert not done.wait(0.3), "save did not wait for the lock"
    finally:
        os.close(fd)
    t.join(10)
    assert done.is_set()


def test_concurrent_savers_leave_a_consistent_store(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            BaselineStore(tmp_path).save(MODEL, arrays(i % 4), meta(), promote=True)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    store = BaselineStore(tmp_path)
    assert errors == []
    assert len(store.list_versions(MODEL)) == 4
    assert [e["action"] for e in store.audit_log()].count("save") == 4
    assert all(store.verify(MODEL, i.version).ok for i in store.list_versions(MODEL))
    assert store.active_version(MODEL) in {i.version for i in store.list_versions(MODEL)}
