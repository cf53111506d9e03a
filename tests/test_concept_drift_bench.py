"""Smoke test of benchmarks/bench_concept_drift.py on a tiny stream (the full run is the benchmark itself)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_concept_drift", ROOT / "benchmarks/bench_concept_drift.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_real_drift_is_seen_by_performance_only() -> None:
    # STAGGER 0 -> 1 changes only the labelling rule: the model's accuracy falls from 1.0 to ~0.4, the
    # inputs keep their distribution, so performance_drop must fire and input drift must not.
    b = _bench()
    from river.datasets import synth

    holder: list[object] = []

    def make(seed: int) -> object:
        return b._concept_drift(
            lambda: holder[0].position,  # type: ignore[attr-defined]
            1,
            synth.STAGGER(0, seed=seed),
            synth.STAGGER(1, seed=seed + 1),
            seed,
        )

    spec = b.StreamSpec("tiny_stagger", "STAGGER 0 -> 1", "real", make, train=500, reference=500, stream=3_000,
                        drift_at=1_000, categorical=("size", "color", "shape"))  # fmt: skip
    holder.append(spec)
    run = b.run_one(spec, 7, kswin=False)
    summary = b.summarize(spec, [run])["detectors"]
    perf = summary["performance_drop"]
    assert perf["detected"] == 1 and perf["false_alerts"] == 0
    assert 0 <= perf["median_delay"] <= 1_000
    assert summary["feature_drift"]["detected"] == 0 and summary["feature_drift"]["false_alerts"] == 0
    assert run["accuracy"]["before_drift"] > 0.95 > 0.7 > run["accuracy"]["after_drift"]
    assert summary["DDM(error)"]["detected"] == 1


def test_consensus_change_points() -> None:
    b = _bench()
    assert b.consensus_change_points({"a": [10, 50], "b": [12], "c": [90]}) == [11]
    assert b.consensus_change_points({"a": [10], "b": [30]}) == []
