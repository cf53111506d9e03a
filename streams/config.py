"""One configuration tree, loaded from a JSON or TOML file with environment overrides.

Environment variables ``INFERWATCH__SECTION__KEY=value`` override file values
(e.g. ``INFERWATCH__KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092``); values are parsed as JSON when
they can be (numbers, booleans, lists) and taken as strings otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from streams.errors import ConfigError

ENV_PREFIX = "INFERWATCH__"

Scalar = str | int | float | bool
# Settings that change when the live service acts, not what is detected: outside the digest.
_SERVICE_ONLY: dict[str, set[str]] = {"drift": {"idle_timeout_s"}, "anomaly": {"scores_topic"}}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Frozen):
    """Kafka connection and topics. ``consumer`` / ``producer`` pass librdkafka keys through as given."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topics: list[str] = Field(default_factory=lambda: ["inferwatch.events"])
    group_id: str = "inferwatch"
    alerts_topic: str = "inferwatch.alerts"
    dead_letter_topic: str = "inferwatch.dead-letters"
    batch_size: int = Field(5000, ge=1, le=1_000_000)
    batch_timeout_s: float = Field(0.5, gt=0)
    #: Decode in a second process while this one detects; ``None``: when the machine has 2+ cores
    #: and the anomaly or adversarial detector is on (with drift alone it does not pay).
    decode_ahead: bool | None = None
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    consumer: dict[str, Scalar] = Field(default_factory=dict)
    producer: dict[str, Scalar] = Field(default_factory=dict)

    def common(self) -> dict[str, Scalar]:
        """librdkafka keys shared by the consumer and the producer (secrets included: never log this)."""
        conf: dict[str, Scalar] = {"bootstrap.servers": self.bootstrap_servers}
        if self.security_protocol:
            conf["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        return conf


class DriftSettings(_Frozen):
    """Sliding windows and decision thresholds of the drift detectors.

    ``idle_timeout_s`` is for ``inferwatch run`` only: with ``window="time"``, a model's open pane
    is closed and evaluated once none of its events arrived for that many seconds of processing
    (wall-clock) time, so the last events before a quiet period are not left unevaluated. It is not
    part of the detection digest: replays flush at their end instead, deterministically.
    """

    window: Literal["count", "time"] = "count"
    size: int = Field(2000, ge=1, description="events (count) or milliseconds (time)")
    step: int = Field(200, ge=1, description="pane length: the window is evaluated every step")
    min_events: int = Field(100, ge=1)
    false_alarm_rate: float = Field(1e-3, gt=0, lt=1)
    psi_warning: float = Field(0.1, gt=0)
    psi_critical: float = Field(0.25, gt=0)
    psi_resolve: float = Field(0.05, gt=0)
    idle_timeout_s: float | None = Field(
        30.0, gt=0, description="live service: close an idle model's open time pane after this (None: never)"
    )

    def monitor_args(self) -> dict[str, Any]:
        """The window and decision settings, as keyword arguments of the model monitor."""
        return self.model_dump(exclude=_SERVICE_ONLY["drift"])

    @model_validator(mode="after")
    def _check(self) -> DriftSettings:
        if self.size % self.step:
            raise ValueError(f"drift.size ({self.size}) must be a multiple of drift.step ({self.step})")
        if not self.psi_resolve <= self.psi_warning <= self.psi_critical:
            raise ValueError("drift thresholds must satisfy psi_resolve <= psi_warning <= psi_critical")
        return self


class _Windowed(_Frozen):
    """What every detector that alerts on a sliding window of events is configured with."""

    _section: ClassVar[str]

    enabled: bool = True
    size: int = Field(2000, ge=1, description="events per window")
    step: int = Field(200, ge=1, description="the window is evaluated every step events")
    min_events: int = Field(100, ge=1, description="events needed before the first evaluation")
    false_alarm_rate: float = Field(1e-3, gt=0, lt=1, description="false alarms per window length of a stable stream")

    @model_validator(mode="after")
    def _check_window(self) -> Self:
        if self.size % self.step:
            name = self._section
            raise ValueError(f"{name}.size ({self.size}) must be a multiple of {name}.step ({self.step})")
        return self


class ValidationSettings(_Windowed):
    """Input validation against the baseline: ranges, categories, missing values, decoder problems."""

    _section = "validation"
    margin: float = Field(0.1, ge=0, description="allowed excess beyond the reference range, as a share of it")
    min_increase: float = Field(0.01, gt=0, lt=1, description="violation rate above the reference rate to alert")


class PerformanceSettings(_Windowed):
    """Performance against the baseline once labels arrive (inline or on the feedback topic)."""

    _section = "performance"
    size: int = Field(2000, ge=1, description="labelled events per window")
    feedback_topic: str | None = None
    join_horizon_ms: int = Field(86_400_000, ge=1, description="labels later than this are not joined")
    join_capacity: int = Field(200_000, ge=1, description="predictions kept waiting for labels, per model")
    tolerance: float = Field(0.02, ge=0, description="accuracy drop tolerated before alerting")
    # Absolute floors of the tolerated rise of the loss metrics (which otherwise tolerate 5% of the
    # reference): 0.05 nats of log loss is what 2% more errors at 90% confidence cost (0.02 * ln 10), in
    # line with ``tolerance``; MAE/RMSE are in the target's units, so no floor by default.
    log_loss_tolerance: float = Field(0.05, ge=0, description="log loss rise (nats) always tolerated")
    error_tolerance: float = Field(0.0, ge=0, description="MAE/RMSE rise (target units) always tolerated")


class AnomalySettings(_Windowed):
    """Per-event anomaly scores (fitted into the baseline) and the anomaly_rate alert."""

    _section = "anomaly"
    learned: Literal["loda", "iforest", "none"] = Field("loda", description="learned detector fitted at build")
    fpr: float = Field(1e-3, gt=0, lt=0.5, description="calibrated flag rate on reference data (build time)")
    min_ratio: float = Field(3.0, gt=1, description="flag rate over the calibrated rate needed to alert")
    scores_topic: str | None = Field(
        None, description="inferwatch run: publish every event's score, flag and top features to this topic"
    )


class AdversarialSettings(_Frozen):
    """Per-client detection of model extraction, evasion search and floods."""

    enabled: bool = True
    max_clients: int = Field(1_000_000, ge=1, description="clients tracked at once (about 1.6 KB each at 64 features)")
    salt: SecretStr = Field(
        SecretStr("inferwatch-default-salt"), description="salt of the near-duplicate index: set your own"
    )
    pseudonymize_key: SecretStr | None = Field(None, description="HMAC key: client ids in alerts are pseudonyms")
    campaign_interval_s: float = Field(
        2.0, ge=0, description="accounts joining a split-extraction campaign are named at most this often"
    )
    ignore_clients: list[str] = Field(
        default_factory=list, description="client ids skipped by this detector (internal batch jobs, load tests)"
    )


class BaselineSettings(_Frozen):
    """Where baselines are stored and how they are verified."""

    store: Path = Path("baselines-store")
    signing_key: SecretStr | None = None
    key_id: str = "default"
    n_bins: int = Field(20, ge=2, le=200)


class MetricsSettings(_Frozen):
    """Prometheus endpoint; ``port=0`` disables it."""

    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)


class CheckpointSettings(_Frozen):
    """Detector state and offsets are written here together, so a restart continues exactly."""

    dir: Path = Path("inferwatch-state")
    interval_s: float = Field(2.0, ge=0)


class LoggingSettings(_Frozen):
    """Log level and format (JSON lines for log shippers)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = False


class Settings(_Frozen):
    """The whole configuration of an inferwatch process.

    Examples
    --------
    >>> s = Settings.model_validate({"drift": {"size": 1000, "step": 100}})
    >>> s.drift.size, s.kafka.alerts_topic
    (1000, 'inferwatch.alerts')
    """

    kafka: KafkaSettings = Field(default_factory=lambda: KafkaSettings())
    drift: DriftSettings = Field(default_factory=lambda: DriftSettings())
    validation: ValidationSettings = Field(default_factory=lambda: ValidationSettings())
    performance: PerformanceSettings = Field(default_factory=lambda: PerformanceSettings())
    anomaly: AnomalySettings = Field(default_factory=lambda: AnomalySettings())
    adversarial: AdversarialSettings = Field(default_factory=lambda: AdversarialSettings())
    baselines: BaselineSettings = Field(default_factory=lambda: BaselineSettings())
    metrics: MetricsSettings = Field(default_factory=lambda: MetricsSettings())
    checkpoint: CheckpointSettings = Field(default_factory=lambda: CheckpointSettings())
    logging: LoggingSettings = Field(default_factory=lambda: LoggingSettings())
    max_message_bytes: int = Field(1_048_576, ge=64)
    max_future_ms: int | None = Field(
        3_600_000, ge=0, description="events dated more than this after their Kafka message are dead letters"
    )

    def detection_digest(self) -> str:
        """Digest of the settings that change what is detected; part of every alert id."""
        sections = ("drift", "validation", "performance", "anomaly")
        parts: dict[str, Any] = {
            k: getattr(self, k).model_dump(mode="json", exclude=_SERVICE_ONLY.get(k)) for k in sections
        }
        a = self.adversarial
        # The salt and the pseudonymization key change fingerprints and client names in alerts; they
        # enter the digest only through a keyed hash of a fixed message, so alert ids never carry them.
        parts["adversarial"] = {
            "enabled": a.enabled,
            "max_clients": a.max_clients,
            "salt": _secret_tag(a.salt),
            "pseudonymize_key": None if a.pseudonymize_key is None else _secret_tag(a.pseudonymize_key),
            "campaign_interval_s": a.campaign_interval_s,
        }
        if a.ignore_clients:  # (absent when empty: the digests, and so alert ids, of earlier configurations hold)
            parts["adversarial"]["ignore_clients"] = sorted(a.ignore_clients)
        payload = json.dumps(parts, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _secret_tag(secret: SecretStr) -> str:
    return hmac.new(secret.get_secret_value().encode(), b"inferwatch detection digest", "sha256").hexdigest()[:16]


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        node = tree.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot override {'.'.join(path)}: {key} is not a section")
        tree = node
    tree[path[-1]] = value


def _parse_env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load settings from ``path`` (``.toml`` or ``.json``), then environment, then ``overrides``.

    ``overrides`` maps dotted keys (``"kafka.bootstrap_servers"``) to values, for CLI flags.
    Raises :class:`~streams.errors.ConfigError` with one readable message on any problem.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read configuration file {p}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"configuration file {p} is not UTF-8 text") from None
        try:
            tree = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"configuration file {p} is not valid {p.suffix.lstrip('.') or 'JSON'}: {e}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"configuration file {p} must hold an object at the top level")
    for key, raw in sorted((os.environ if env is None else env).items()):
        if key.startswith(ENV_PREFIX):
            _set_path(tree, key[len(ENV_PREFIX) :].lower().split("__"), _parse_env_value(raw))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(tree, dotted.split("."), value)
    try:
        return Settings.model_validate(tree)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid configuration: {problems}") from None
