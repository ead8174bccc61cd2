"""Throwaway Kafka topics for integration tests, on the broker named by TEST_KAFKA_BOOTSTRAP."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

#: The bootstrap address (host:port) of a Kafka broker whose topics the tests may create and delete.
BOOTSTRAP_VARIABLE = "TEST_KAFKA_BOOTSTRAP"
#: Set (as CI does) to fail rather than skip when TEST_KAFKA_BOOTSTRAP is missing.
REQUIRE_VARIABLES = ("CI", "REQUIRE_KAFKA")
#: How long a broker has to answer the admin requests of a test.
TIMEOUT_SECONDS = 15.0

_HOW_TO_START = (
    f"start a private test broker and point the tests at it with "
    f"`export {BOOTSTRAP_VARIABLE}=$(scripts/kafka-test-server.sh | tail -n 1)` "
    "(stop it with `scripts/kafka-test-server.sh stop`)"
)


def kafka_required() -> bool:
    """Whether CI or REQUIRE_KAFKA is set to something other than an explicit no."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no") for name in REQUIRE_VARIABLES)


def bootstrap_servers() -> str:
    """The broker from TEST_KAFKA_BOOTSTRAP; without it skip the test, or fail it where Kafka is required."""
    raw = os.environ.get(BOOTSTRAP_VARIABLE, "").strip()
    if not raw:
        message = f"{BOOTSTRAP_VARIABLE} is not set, so this test cannot run on Kafka; {_HOW_TO_START}."
        if kafka_required():
            pytest.fail(f"{message} {' or '.join(REQUIRE_VARIABLES)} is set, so it may not be skipped.", pytrace=False)
        pytest.skip(message)
    if "://" in raw or any(":" not in server for server in raw.split(",")):
        pytest.fail(f"{BOOTSTRAP_VARIABLE} must be host:port[,host:port...], got {raw!r}", pytrace=False)
    return raw


def unique_topic(prefix: str = "energy-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _admin(servers: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": servers, "socket.timeout.ms": int(TIMEOUT_SECONDS * 1000)})


def delete_topic(servers: str, name: str) -> None:
    """Delete a topic if it exists; a test's leftovers must never fail the next test."""
    admin = _admin(servers)  # kept until the answer: a client that is gone fails its futures
    future = admin.delete_topics([name], operation_timeout=TIMEOUT_SECONDS)[name]
    try:
        future.result(timeout=TIMEOUT_SECONDS)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise


@contextmanager
def fresh_topic(servers: str, *, partitions: int = 1) -> Iterator[str]:
    """Create a topic with a unique name and `partitions` partitions, yield its name once every
    partition has a leader, and delete it afterwards.

    Each test gets its own topic, so offsets always start at 0 and no test reads another's
    messages; creating one on the single-node test broker takes a few hundredths of a second.
    """
    name = unique_topic()
    admin = _admin(servers)
    future = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)], operation_timeout=TIMEOUT_SECONDS
    )[name]
    try:
        future.result(timeout=TIMEOUT_SECONDS)
    except KafkaException as exc:
        pytest.fail(
            f"Cannot create a test topic on {servers}: {exc.args[0].str()}; is the broker running? To {_HOW_TO_START}.",
            pytrace=False,
        )
    try:
        _wait_for_leaders(admin, name, partitions)
        yield name
    finally:
        delete_topic(servers, name)


def _wait_for_leaders(admin: AdminClient, name: str, partitions: int) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        topic = admin.list_topics(name, timeout=TIMEOUT_SECONDS).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"topic {name} on the test broker has no leader for every partition after {TIMEOUT_SECONDS}s")
        time.sleep(0.05)
