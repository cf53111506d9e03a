"""Shared fixtures: a real Apache Kafka broker for the tests marked ``@pytest.mark.kafka``.

``kafka_bootstrap`` uses ``$INFERWATCH_BOOTSTRAP`` when set (e.g. ``eval "$(scripts/kafka-broker.sh env)"``);
otherwise it starts a dedicated single-node broker with ``scripts/kafka-broker.sh start`` in a pytest
temporary directory and stops it at the end of the session. Tests create their own uniquely named topics with
``kafka_topic_factory`` rather than relying on topic auto-creation.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

# The documented path confluent_kafka.admin.NewTopic is an implicit re-export that mypy --strict rejects.
from confluent_kafka.cimpl import NewTopic

REPO_ROOT = Path(__file__).resolve().parent.parent
BROKER_SCRIPT = REPO_ROOT / "scripts" / "kafka-broker.sh"
# The first start on a fresh machine also downloads the broker jars from Maven Central.
BROKER_START_TIMEOUT_S = 600
BROKER_READY_TIMEOUT_S = 30.0
TOPIC_READY_TIMEOUT_S = 30.0

TopicFactory = Callable[..., str]


def _broker_script(command: str, run_dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INFERWATCH_KAFKA_RUN_DIR": str(run_dir)}
    return subprocess.run(
        ["bash", str(BROKER_SCRIPT), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _wait_for_metadata(bootstrap: str) -> None:
    """One successful metadata round trip: "Kafka Server started" alone is not readiness for clients."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + BROKER_READY_TIMEOUT_S
    while True:
        try:
            if admin.list_topics(timeout=5).brokers:
                return
            problem = "metadata lists no brokers"
        except KafkaException as exc:
            problem = str(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka broker at {bootstrap} not ready after {BROKER_READY_TIMEOUT_S} s: {problem}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path | None]]:
    """Bootstrap address (``host:port``) of a running Apache Kafka broker, and the run directory of the one
    started here (its ``pid`` file inside), or None for a broker given by ``$INFERWATCH_BOOTSTRAP``."""
    external = os.environ.get("INFERWATCH_BOOTSTRAP")
    if external:
        _wait_for_metadata(external)
        yield external, None
        return

    run_dir = tmp_path_factory.mktemp("kafka-broker")
    started = _broker_script("start", run_dir, BROKER_START_TIMEOUT_S)
    if started.returncode != 0:
        pytest.fail(
            f"scripts/kafka-broker.sh start failed (exit {started.returncode}); run dir {run_dir}\n{started.stderr}",
            pytrace=False,
        )
    words = started.stdout.split()
    if not words:
        pytest.fail(f"scripts/kafka-broker.sh start printed no address; run dir {run_dir}", pytrace=False)
    bootstrap = words[-1]
    try:
        _wait_for_metadata(bootstrap)
        yield bootstrap, run_dir
    finally:
        stopped = _broker_script("stop", run_dir, 60)
        if stopped.returncode != 0:
            print(f"warning: stopping the test broker in {run_dir} failed:\n{stopped.stderr}")


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: tuple[str, Path | None]) -> str:
    """Bootstrap address (``host:port``) of a running Apache Kafka broker."""
    return kafka_broker[0]


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    """An ``AdminClient`` connected to the test broker."""
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def kafka_topic_factory(kafka_admin: AdminClient, request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """Create uniquely named topics, wait until they are visible, and delete them after the test.

    ``kafka_topic_factory(partitions=1, prefix=None, config=None) -> str`` returns the topic name.
    """
    created: list[str] = []
    test_name = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:80].strip("-.")

    def create(partitions: int = 1, prefix: str | None = None, config: dict[str, str] | None = None) -> str:
        name = f"{prefix or test_name}-{uuid.uuid4().hex[:12]}"
        futures = kafka_admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=TOPIC_READY_TIMEOUT_S,
            request_timeout=TOPIC_READY_TIMEOUT_S,
        )
        futures[name].result(timeout=TOPIC_READY_TIMEOUT_S)
        created.append(name)
        _wait_for_topic(kafka_admin, name, partitions)
        return name

    yield create

    if created:
        for future in kafka_admin.delete_topics(created, operation_timeout=10).values():
            with contextlib.suppress(KafkaException):  # best effort: the session broker is thrown away anyway
                future.result(timeout=15)


def _wait_for_topic(admin: AdminClient, name: str, partitions: int) -> None:
    """Wait until metadata shows the topic with all its partitions led (creation is asynchronous)."""
    deadline = time.monotonic() + TOPIC_READY_TIMEOUT_S
    while True:
        topic = admin.list_topics(topic=name, timeout=5).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 and p.error is None for p in topic.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name!r} not ready after {TOPIC_READY_TIMEOUT_S} s: {topic}")
        time.sleep(0.1)
