"""The alert record: the JSON contract of the alerts topic, with deterministic ids."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from detector.decision import AlertDecision

#: Every alert kind of the contract (later detectors add to what is emitted, never to this list).
ALERT_KINDS = (
    "feature_drift",
    "prediction_drift",
    "confidence_drift",
    "multivariate_drift",
    "performance_drop",
    "anomaly_rate",
    "input_violation",
    "model_extraction",
    "evasion_probing",
    "query_flood",
)


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


def alert_record(
    decision: AlertDecision,
    *,
    model_id: str,
    baseline_version: str,
    config_digest: str,
    event_id: str,
    event_ts: int,
    source: Mapping[str, Any],
) -> dict[str, Any]:
    """The alert as published, from a core decision and where it happened.

    ``alert_id`` depends only on the model, baseline, detection settings, the incident and the pane
    at which the record was decided: the same events processed again give the same id, so
    consumers drop duplicates after a retry, a restart or a replay. ``incident_id`` ties the
    ``open``, ``update`` and ``resolved`` records of one incident.
    """
    columns = ",".join(decision.columns) or decision.kind
    client_id = decision.client_id
    scope = (model_id, baseline_version, config_digest, decision.kind, columns, client_id)
    incident_id = _digest(*scope, decision.incident)
    return {
        "alert_id": _digest(*scope, decision.incident, decision.status, decision.pane),
        "incident_id": incident_id,
        "status": decision.status,
        "kind": decision.kind,
        "severity": decision.severity,
        "model_id": model_id,
        "baseline_version": baseline_version,
        "event_id": event_id,
        "event_ts": event_ts,
        "window": {
            "start_ts": decision.window_start_ts,
            "end_ts": decision.window_end_ts,
            "events": decision.window_events,
        },
        "features": list(decision.columns),
        "client_id": client_id,
        "statistic": decision.statistic,
        "value": decision.value,
        "threshold": decision.threshold,
        "p_value": decision.p_value,
        "message": decision.message,
        "evidence": dict(decision.evidence),
        "source": dict(source),
    }
