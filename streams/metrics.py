"""Prometheus metrics of the service, registered on a registry the caller passes in."""

from __future__ import annotations

import math
from collections.abc import Mapping

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
        self.set_drift(out.drift)

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
