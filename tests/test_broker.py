"""Integration tests against the real Apache Kafka broker (scripts/kafka-broker.sh, tests/conftest.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

TopicFactory = Callable[..., str]  # the kafka_topic_factory fixture of tests/conftest.py

pytestmark = pytest.mark.kafka

N_MESSAGES = 1_000
CONSUME_TIMEOUT_S = 60.0


def _payload(i: int) -> bytes:
    # Varying lengths, so a truncated or shifted payload cannot pass by accident.
    return f"event-{i:04d}:".encode() + bytes([i % 256]) * (i % 37)


def test_produce_then_consume_1000_messages_in_order(kafka_bootstrap: str, kafka_topic_factory: TopicFactory) -> None:
    topic = kafka_topic_factory(partitions=1)

    delivered: list[tuple[int | None, int | None]] = []
    delivery_errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            delivery_errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset()))

    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 30_000,
        }
    )
    for i in range(N_MESSAGES):
        producer.produce(
            topic,
            key=str(i).encode(),
            value=_payload(i),
            headers=[("seq", str(i).encode())],
            on_delivery=on_delivery,
        )
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still queued after flush"
    assert delivery_errors == []
    assert delivered == [(0, offset) for offset in range(N_MESSAGES)]

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"test-broker-{uuid.uuid4().hex[:12]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: list[Message] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(received) < N_MESSAGES and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=1.0):
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                received.append(msg)
        # Nothing beyond the 1,000 messages (no duplicates from retries).
        extra = consumer.consume(num_messages=10, timeout=1.0)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    assert len(received) == N_MESSAGES, f"got {len(received)} of {N_MESSAGES} in {CONSUME_TIMEOUT_S} s"
    assert extra == []
    assert all(msg.topic() == topic and msg.partition() == 0 for msg in received)
    assert [msg.offset() for msg in received] == list(range(N_MESSAGES))
    assert [msg.key() for msg in received] == [str(i).encode() for i in range(N_MESSAGES)]
    assert [msg.value() for msg in received] == [_payload(i) for i in range(N_MESSAGES)]
    assert [msg.headers() for msg in received] == [[("seq", str(i).encode())] for i in range(N_MESSAGES)]


def test_topic_factory_creates_requested_partitions(
    kafka_admin: AdminClient, kafka_topic_factory: TopicFactory
) -> None:
    first = kafka_topic_factory(partitions=3)
    second = kafka_topic_factory(partitions=3)
    assert first != second
    topics = kafka_admin.list_topics(timeout=10).topics
    assert sorted(topics[first].partitions) == [0, 1, 2]
    assert sorted(topics[second].partitions) == [0, 1, 2]
