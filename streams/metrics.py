"""Prometheus metrics of the service, registered on a registry the caller passes in."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from streams.pipeline import ChunkResult


class Metrics:
    """Every metric inferwatch exports.

    Examples
    --------
    >>> reg = CollectorRegistry()
    >>> m = Metrics(reg)
    >>> m.events_consumed.labels(model_id="m").inc(3)
    >>> reg.get_sample_value("inferwatch_events_consumed_total", {"model_id": "m"})
    3.0
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_consumed = Counter(
            "inferwatch_events_consumed", "Events decoded and given to the detectors", ["model_id"], registry=registry
        )
        self.events_invalid = Counter(
            "inferwatch_events_invalid", "Messages sent to the dead letters, by reason", ["reason"], registry=registry
        )
        self.feature_violations = Counter(
            "inferwatch_feature_violations",
            "Feature-level problems of accepted events (missing, wrong_type, non_finite, unexpected)",
            ["reason", "feature"],
            registry=registry,
        )
        self.alerts = Counter(
            "inferwatch_alerts", "Alert records published", ["model_id", "kind", "status"], registry=registry
        )
        self.consumer_lag = Gauge(
            "inferwatch_consumer_lag",
            "Messages behind the end of the partition",
            ["topic", "partition"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "inferwatch_batch_seconds",
            "Wall time to process one consumed batch (decode, detect, deliver)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.batch_events = Histogram(
            "inferwatch_batch_events",
            "Messages per consumed batch",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000),
            registry=registry,
        )
        self.drift = Gauge(
            "inferwatch_drift_statistic",
            "Latest drift statistic per monitored column (psi, p_value)",
            ["model_id", "column", "statistic"],
            registry=registry,
        )
        self.delivery_failures = Counter(
            "inferwatch_delivery_failures",
            "Batches whose alerts or dead letters Kafka did not acknowledge",
            registry=registry,
        )
        self.checkpoints = Counter("inferwatch_checkpoints", "Checkpoints written", registry=registry)
        self.labels = Counter("inferwatch_feedback_labels", "Feedback labels received", registry=registry)
        self.performance = Gauge(
            "inferwatch_performance",
            "Latest windowed performance per metric (accuracy, log_loss, roc_auc, mae, rmse, estimated_accuracy)",
            ["model_id", "metric"],
            registry=registry,
        )
        self.label_join = Gauge(
            "inferwatch_label_join", "Label join counters (joined, expired, unknown, duplicate_label, pending...)",
            ["model_id", "counter"], registry=registry,
        )  # fmt: skip
        self.label_lag = Gauge(
            "inferwatch_label_lag_ms", "Mean lag between an event and its label", ["model_id"], registry=registry
        )
        self.violation_rate = Gauge(
            "inferwatch_violation_rate", "Share of the last validation window's events with a violation",
            ["model_id", "reason", "feature"], registry=registry,
        )  # fmt: skip

    def observe_chunk(self, out: ChunkResult) -> None:
        """Count what one processed chunk produced."""
        for model_id, n in out.events_by_model.items():
            self.events_consumed.labels(model_id=model_id).inc(n)
        for dead, _ in out.dead:
            self.events_invalid.labels(reason=dead.reason).inc()
        for (reason, feature), n in out.violations.items():
            self.feature_violations.labels(reason=reason, feature=feature).inc(n)
        for a in out.alerts:
            self.alerts.labels(model_id=a["model_id"], kind=a["kind"], status=a["status"]).inc()
        if out.labels:
            self.labels.inc(out.labels)
        self.set_drift(out.drift)

    def observe_monitors(self, monitors: Mapping[str, Any]) -> None:
        """Read the detectors' current state into gauges (called once per batch)."""
        for model_id, mon in monitors.items():
            if mon.performance is not None:
                for metric, value in mon.performance.metrics.items():
                    if not math.isnan(value):
                        self.performance.labels(model_id=model_id, metric=metric).set(value)
            if mon.labels is not None:
                for counter, value in mon.labels.counters.items():
                    self.label_join.labels(model_id=model_id, counter=counter).set(value)
                if not math.isnan(mon.labels.mean_lag_ms):
                    self.label_lag.labels(model_id=model_id).set(mon.labels.mean_lag_ms)
            if mon.validator is not None:
                for (reason, feature), rate in mon.validator.rates.items():
                    self.violation_rate.labels(model_id=model_id, reason=reason, feature=feature).set(rate)

    def set_drift(self, drift: Mapping[str, Mapping[str, Mapping[str, float]]]) -> None:
        for model_id, stats in drift.items():
            for statistic, per_column in stats.items():
                for column, value in per_column.items():
                    if not math.isnan(value):
                        self.drift.labels(model_id=model_id, column=column, statistic=statistic).set(value)


def serve(registry: CollectorRegistry, host: str, port: int) -> int:
    """Expose ``registry`` over HTTP on ``host:port`` (0 picks a free port); returns the port."""
    server, _ = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
