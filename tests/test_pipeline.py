"""The whole pipeline in memory: every detector on, chunking must not change what is detected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from baselines.build import build_baseline, infer_schema, load_baseline
from baselines.store import BaselineStore
from streams.config import Settings
from streams.decode import Decoder, parse_events
from streams.pipeline import Pipeline, Positions
from streams.synthetic import SyntheticStream


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    lines = list(SyntheticStream(labels=True, n_clients=20).lines(12_000, seed=1))
    objs, _, _ = parse_events(lines)
    schema = infer_schema(objs, "credit-risk")
    batch = Decoder({"credit-risk": schema}).decode(lines).batches[0].batch
    store = BaselineStore(tmp_path_factory.mktemp("store"))
    build_baseline(store, batch, schema)
    return load_baseline(store, "credit-risk")


def _stream() -> list[bytes]:
    """Outliers, then a null feature, then values in other units: every detector has work."""
    out = []
    for i, line in enumerate(SyntheticStream(n_clients=20).lines(16_000, seed=2)):
        e = orjson.loads(line)
        if 4_000 <= i < 8_000 and i % 15 == 0:
            e["features"]["f03"] = 9.0
        if i >= 10_000:
            e["features"]["f10"] = None
        if i >= 13_000:
            e["features"]["f04"] = e["features"]["f04"] * 1000
        out.append(orjson.dumps(e))
    return out


def _run(baseline: Any, lines: list[bytes], chunk: int) -> list[dict[str, Any]]:
    settings = Settings()
    pipe = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    alerts: list[dict[str, Any]] = []
    for a in range(0, len(lines), chunk):
        part = lines[a : a + chunk]
        alerts += pipe.process(part, Positions.file_lines("s.jsonl", a + 1, len(part))).alerts
    return alerts


def test_all_detectors_fire_and_chunking_does_not_matter(baseline: Any) -> None:
    assert baseline.anomaly is not None and baseline.adversarial is not None and baseline.performance is not None
    lines = _stream()
    big = _run(baseline, lines, 4_000)
    kinds = {(a["kind"], tuple(a["features"])) for a in big if a["status"] == "open"}
    assert ("input_violation", ("f10",)) in kinds
    assert ("input_violation", ("f04",)) in kinds
    assert any(k == "anomaly_rate" and "f03" in f for k, f in kinds)
    ids = {orjson.loads(x)["event_id"] for x in lines}
    assert all(a["event_id"] in ids for a in big)
    # Every alert fires at or after the first change of the stream.
    assert min(int(a["event_id"].rsplit("-", 1)[1]) for a in big) >= 4_000
    small = _run(baseline, lines, 733)
    assert [a["alert_id"] for a in small] == [a["alert_id"] for a in big]
    assert [a["source"]["line"] for a in small] == [a["source"]["line"] for a in big]


def test_snapshot_restore_mid_stream(baseline: Any, tmp_path: Path) -> None:
    lines = _stream()
    settings = Settings()
    expected = _run(baseline, lines, 2_000)
    first = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    got = first.process(lines[:9_000], Positions.file_lines("s.jsonl", 1, 9_000)).alerts
    state = {k: np.array(v) for k, v in first.snapshot().items()}
    second = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    assert second.restore(state) == ["credit-risk"]
    got += second.process(lines[9_000:], Positions.file_lines("s.jsonl", 9_001, 7_000)).alerts
    assert [a["alert_id"] for a in got] == [a["alert_id"] for a in expected]
