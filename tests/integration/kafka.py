"""Throwaway Kafka topics for integration tests, on the broker named by TEST_KAFKA_BOOTSTRAP; a
transactional producer that commits or aborts each transaction; and a private broker of a test's
own (scripts/kafka-test-server.sh in a directory and on ports of its own) to stop and start."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
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


# -- producing in transactions ------------------------------------------------------------------

#: One message as a producer sends it: (key, value).
Record = tuple[bytes | None, bytes]


def produce_transactions(
    servers: str, topic: str, transactions: Iterable[tuple[Sequence[Record], bool]], *, transactional_id: str
) -> tuple[int, int]:
    """Send each transaction's records, flush them to the broker, then commit the transaction
    (True) or abort it (False); returns the records (committed, aborted).

    An aborted transaction's records are flushed before the abort, so they are in the log and
    take offsets there, as a producer that fails mid-transaction leaves them: a reader at
    isolation level read_committed must skip them, not merely never see them sent."""
    producer = Producer(
        {
            "bootstrap.servers": servers,
            "transactional.id": transactional_id,
            "linger.ms": 5,
            "transaction.timeout.ms": 60_000,
        }
    )
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            failures.append(error)

    producer.init_transactions(TIMEOUT_SECONDS)
    committed = aborted = 0
    for records, commit in transactions:
        producer.begin_transaction()
        for key, value in records:
            while True:
                try:
                    producer.produce(topic, key=key, value=value, on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries make room
                    producer.poll(0.1)
        remaining = producer.flush(TIMEOUT_SECONDS)
        if remaining or failures:
            raise AssertionError(f"producing to {topic} failed: {remaining} unsent, errors {failures[:3]}")
        if commit:
            producer.commit_transaction(TIMEOUT_SECONDS)
            committed += len(records)
        else:
            producer.abort_transaction(TIMEOUT_SECONDS)
            aborted += len(records)
    return committed, aborted


# -- a private broker, to stop and start ---------------------------------------------------------

#: The script that starts and stops a single-node test broker.
SERVER_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka-test-server.sh"
#: Where the shared test broker keeps Kafka's jars (the script's default directory).
SHARED_DIR = Path("/tmp/energy-platform-kafka")


def free_port_pair(first: int = 59192) -> int:
    """A port p with p and p + 1 (the script's controller port) both free on 127.0.0.1, from a
    random even offset of at most 400 after `first` on (so that two test workers seldom try the same)."""
    start = first + 2 * random.randrange(200)
    for port in [*range(start, first + 800, 2), *range(first, start, 2)]:
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    pytest.fail(f"no two free ports in a row on 127.0.0.1 from {first} to {first + 800}")


class PrivateBroker:
    """A broker of this test's own, in its own directory and on its own ports, started and stopped
    with scripts/kafka-test-server.sh; the shared test broker is never touched."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"

    def _script(self, *args: str) -> str:
        environment = {**os.environ, "KAFKATEST_DIR": str(self.directory), "KAFKATEST_PORT": str(self.port)}
        done = subprocess.run(
            ["bash", str(SERVER_SCRIPT), *args], env=environment, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            pytest.fail(f"kafka-test-server.sh {' '.join(args)} failed:\n{done.stderr[-3000:]}", pytrace=False)
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""

    def start(self) -> None:
        address = self._script("start")
        assert address == self.bootstrap, address

    def stop(self) -> None:
        self._script("stop")


@contextmanager
def private_broker(directory: Path, port: int | None = None) -> Iterator[PrivateBroker]:
    """Start a private broker in `directory` (its jars linked from the shared broker's directory
    when that has them all, else fetched by the script), yield it, and stop it afterwards, always."""
    directory.mkdir(parents=True, exist_ok=True)
    shared = Path(os.environ.get("KAFKATEST_DIR") or SHARED_DIR) / "libs"
    if (shared / ".complete").is_file() and not (directory / "libs").exists():
        (directory / "libs").symlink_to(shared, target_is_directory=True)
    broker = PrivateBroker(directory, port or free_port_pair())
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
