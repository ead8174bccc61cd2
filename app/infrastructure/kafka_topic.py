"""One Apache Kafka topic as a `TopicReader` (app.application.ports), with confluent-kafka.

The consumer never joins a consumer group's rebalancing and never reads the group's committed
offsets: `seek` assigns every partition of the topic itself, from the positions the caller keeps
(the lake's transaction identifiers). It reads committed messages only (`isolation.level` is
always `read_committed`), so messages of aborted transactions never arrive; offsets then have gaps
where transaction markers and aborted messages are. `commit` records positions as the group's
offsets for lag monitoring (e.g. a broker's consumer-group tools) and nothing else.

A broker that goes away and comes back is librdkafka's business: it reconnects by itself, and
`poll` logs the transient errors it sees meanwhile (no broker reachable, a connection lost) and
returns what it read, often nothing, rather than raising. Not thread-safe: one thread per instance.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_END, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException, TopicPartition

from app.application.ports import Message
from app.domain.errors import ConfigurationError, PlatformError
from app.infrastructure.logging import get_logger

#: Consumer settings the adapter sets itself and a caller may not change.
FIXED_SETTINGS: dict[str, str | bool] = {
    "isolation.level": "read_committed",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
}
#: Defaults a caller's `consumer` settings may override.
DEFAULT_SETTINGS: dict[str, str | int | bool] = {
    # A position that is no longer in the log (retention deleted it) reads from the oldest message kept.
    "auto.offset.reset": "earliest",
    # Fetch ahead as many messages as a micro-batch takes by default (librdkafka keeps 100,000):
    # a poll then fills a whole micro-batch instead of waiting for the next fetches.
    "queued.min.messages": 200_000,
}
#: Constructor arguments, with librdkafka's alias of the first: not to be given again in `consumer`.
ARGUMENT_SETTINGS = {
    "bootstrap.servers": "bootstrap_servers",
    "metadata.broker.list": "bootstrap_servers",
    "group.id": "group_id",
}
#: Errors that end when the broker is back or the network recovers: librdkafka retries by itself.
TRANSIENT_ERRORS = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError._WAIT_COORD,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)
_MISSING_TOPIC = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.UNKNOWN_TOPIC_ID})


def _is_false(value: str | int | bool) -> bool:
    return str(value).strip().lower() in ("false", "0")


def _transient(error: KafkaError) -> bool:
    return not error.fatal() and (error.code() in TRANSIENT_ERRORS or error.retriable())


def consumer_settings(
    bootstrap_servers: str, group_id: str, consumer: Mapping[str, str | int | bool] | None
) -> dict[str, str | int | bool]:
    """The consumer's librdkafka settings: the caller's `consumer` settings over the defaults,
    under the settings the adapter fixes; ConfigurationError naming a setting that would change
    those or repeat a constructor argument."""
    settings: dict[str, str | int | bool] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        **DEFAULT_SETTINGS,
    }
    for key, value in (consumer or {}).items():
        name = key.strip()
        if name in ARGUMENT_SETTINGS:
            raise ConfigurationError(
                f"consumer setting {name!r} repeats the {ARGUMENT_SETTINGS[name]} argument; give it only there"
            )
        if name == "isolation.level" and str(value).strip() != FIXED_SETTINGS[name]:
            raise ConfigurationError(
                f"consumer setting 'isolation.level' = {value!r} is refused: the topic is read as "
                "'read_committed' only, so that messages of aborted transactions never reach the lake"
            )
        if name in ("enable.auto.commit", "enable.auto.offset.store") and not _is_false(value):
            raise ConfigurationError(
                f"consumer setting {name!r} = {value!r} is refused: positions are kept by the lake, "
                "and offsets are committed only by commit(), for lag monitoring"
            )
        settings[name] = value
    settings.update(FIXED_SETTINGS)
    return settings


class KafkaTopic:
    """A `TopicReader` over one Kafka topic; see the module's docstring."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        group_id: str,
        consumer: Mapping[str, str | int | bool] | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        """`timeout_seconds`: how long `partitions`, `seek` and `lag` wait for a broker's answer."""
        self._topic = topic
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.timeout_seconds = timeout_seconds
        self._log = get_logger(topic=topic, bootstrap_servers=bootstrap_servers)
        settings: dict[str, Any] = consumer_settings(bootstrap_servers, group_id, consumer)
        settings["error_cb"] = self._on_error
        settings["on_commit"] = self._on_commit
        #: A fatal error the error callback saw, raised by the next call.
        self._fatal: KafkaError | None = None
        #: Per assigned partition, the offset of the last message read (-1: none yet).
        self._read: dict[int, int] = {}
        self._assigned = False
        self._closed = False
        try:
            self._consumer = Consumer(settings)
        except KafkaException as exc:
            raise ConfigurationError(f"Kafka consumer settings for topic {topic!r} are invalid: {exc}") from exc

    @property
    def topic(self) -> str:
        return self._topic

    def _where(self) -> str:
        return f"topic {self._topic!r} on {self.bootstrap_servers}"

    def _on_error(self, error: KafkaError) -> None:
        # Called by librdkafka from within poll, consume, list_topics and the like, in this thread.
        if error.fatal():
            self._fatal = error
            self._log.error("kafka_fatal_error", code=error.name(), error=error.str())
        else:
            self._log.warning("kafka_error", code=error.name(), error=error.str())

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            self._log.warning("kafka_commit_failed", code=error.name(), error=error.str())

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise PlatformError(
                f"the Kafka consumer of {self._where()} failed for good ({self._fatal.name()}: "
                f"{self._fatal.str()}); restart the stream"
            )

    def _unreachable(self, what: str, detail: object) -> PlatformError:
        return PlatformError(
            f"no Kafka broker at {self.bootstrap_servers} answered {what} for topic {self._topic!r} "
            f"({detail}; waited at most {self.timeout_seconds:g}s); is the broker running and the address right?"
        )

    def partitions(self) -> list[int]:
        """The topic's partition numbers; ConfigurationError when there is no such topic, and
        PlatformError when no broker answers within `timeout_seconds`."""
        self._raise_fatal()
        try:
            metadata = self._consumer.list_topics(self._topic, timeout=self.timeout_seconds)
        except KafkaException as exc:
            raise self._unreachable("a metadata request", exc.args[0] if exc.args else exc) from exc
        found = metadata.topics.get(self._topic)
        error: KafkaError | None = found.error if found is not None else None
        if found is None or (error is not None and error.code() in _MISSING_TOPIC):
            raise ConfigurationError(
                f"Kafka topic {self._topic!r} does not exist on {self.bootstrap_servers}; "
                "create it, or correct the topic's name or the bootstrap servers"
            )
        if error is not None and not (_transient(error) and found.partitions):
            raise PlatformError(f"Kafka refused the metadata of {self._where()}: {error.name()}: {error.str()}")
        return sorted(found.partitions)

    def seek(self, positions: dict[int, int]) -> None:
        """Read each partition from the offset after its position (-1 or absent: from the start,
        offset 0, or the oldest message retention kept). Every partition of the topic is assigned;
        a position of a partition the topic does not have is a ConfigurationError."""
        partitions = self.partitions()
        unknown = sorted(set(positions) - set(partitions))
        if unknown:
            raise ConfigurationError(
                f"positions name partition(s) {unknown} that {self._where()} does not have "
                f"(it has {len(partitions)}); is it the topic these positions were read from?"
            )
        self._read = {p: positions.get(p, -1) for p in partitions}
        self._consumer.assign([TopicPartition(self._topic, p, self._read[p] + 1) for p in partitions])
        self._assigned = True

    def poll(self, *, max_messages: int, timeout_seconds: float) -> list[Message]:
        """Up to `max_messages` committed messages, in offset order per partition: waits at most
        `timeout_seconds` for the first, then takes what has already arrived without waiting
        more; [] when none came. Transient errors (a broker out of reach) are logged, not raised."""
        if not self._assigned:
            raise RuntimeError(f"KafkaTopic.poll of {self._where()} before seek(): seek the positions first")
        if max_messages < 1:
            return []
        deadline = time.monotonic() + max(0.0, timeout_seconds)
        messages: list[Message] = []
        # One message, waited for; then what the consumer has already fetched. consume(n, t) alone
        # would wait the whole timeout whenever fewer than n messages are there.
        while not messages:
            remaining = deadline - time.monotonic()
            messages += self._consume(1, max(0.0, remaining))
            if remaining <= 0:
                break
        if messages and max_messages > 1:
            messages += self._consume(max_messages - 1, 0.0)
        return messages

    def _consume(self, count: int, timeout: float) -> list[Message]:
        self._raise_fatal()
        try:
            batch = self._consumer.consume(num_messages=count, timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is None or not _transient(error):
                raise PlatformError(f"reading {self._where()} failed: {exc}") from exc
            self._log.warning("kafka_error", code=error.name(), error=error.str())
            return []
        self._raise_fatal()
        messages: list[Message] = []
        add, last = messages.append, self._read
        for item in batch:
            error = item.error()
            if error is not None:  # an event, not a message
                self._event(error, item.partition())
                continue
            # The way of every message, kept short: a stream takes tens of thousands a second.
            partition, offset = item.partition(), item.offset()
            if partition is None or offset is None:  # only error events lack them
                continue
            kind, millis = item.timestamp()
            stamp = millis if kind != TIMESTAMP_NOT_AVAILABLE and millis >= 0 else None
            add(Message(partition, offset, item.key(), item.value(), stamp))
            if offset > last.get(partition, -1):
                last[partition] = offset
        return messages

    def _event(self, error: KafkaError, partition: int | None) -> None:
        """An error event among the messages: the end of a partition and transient errors go by
        (the latter logged); the topic gone is a ConfigurationError, anything else a PlatformError."""
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if _transient(error):
            self._log.warning("kafka_error", code=error.name(), error=error.str(), partition=partition)
            return
        if error.code() in _MISSING_TOPIC:
            raise ConfigurationError(
                f"Kafka topic {self._topic!r} is gone from {self.bootstrap_servers} ({error.str()})"
            )
        raise PlatformError(f"reading {self._where()} failed: {error.name()}: {error.str()}")

    def commit(self, positions: dict[int, int]) -> None:
        """Record positions (the last offsets taken) as the group's offsets, position + 1 each,
        asynchronously; for lag monitoring only, so a failure is logged, never raised."""
        offsets = [TopicPartition(self._topic, p, position + 1) for p, position in sorted(positions.items())]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            self._log.warning("kafka_commit_failed", error=str(exc))

    def lag(self) -> dict[int, int]:
        """Per partition, the partition's end minus where reading stands: the offset after the
        last message read (or after the position `seek` started from), or the consumer's position
        when that is further.

        The end is asked of the broker in one request for all partitions (a ListOffsets for the
        latest offsets, at isolation level read_committed, as `get_watermark_offsets(cached=False)`
        asks it one partition at a time): the last stable offset, i.e. the high watermark, but
        before the first message of a transaction still open, which is not counted until it commits.
        The broker answers it after the consumer's pending fetch, so it takes up to `fetch.wait.max.ms`
        (500 ms by default).

        With transactions that end counts records that are never delivered: each transaction's
        commit or abort marker (one per partition it wrote) and the messages of aborted
        transactions. The consumer's position moves past those only once a poll has gone over them,
        so right after the last message of a partition is read its lag is typically 1 or 2 (the
        markers after it; more when the last transactions were aborted), and 0 after a poll that
        found nothing more. Alert on lag that grows, not on lag above 0."""
        self._raise_fatal()
        partitions = sorted(self._read) if self._assigned else self.partitions()
        try:
            # An offset of -1 (OFFSET_END) asks for the latest offset, as a timestamp of -1 means in ListOffsets.
            ends = self._consumer.offsets_for_times(
                [TopicPartition(self._topic, p, OFFSET_END) for p in partitions], timeout=self.timeout_seconds
            )
        except KafkaException as exc:
            raise self._unreachable("the partitions' end offsets", exc.args[0] if exc.args else exc) from exc
        # The position is local (no broker request); a partition not polled yet has none (a negative offset).
        positions = (
            {
                tp.partition: tp.offset
                for tp in self._consumer.position([TopicPartition(self._topic, p) for p in partitions])
            }
            if self._assigned
            else {}
        )
        lags: dict[int, int] = {}
        for end in ends:
            if end.error is not None or end.offset < 0:
                detail = end.error.str() if end.error is not None else "no offset"
                raise self._unreachable(f"the end offset of partition {end.partition}", detail)
            reached = max(self._read.get(end.partition, -1) + 1, positions.get(end.partition, -1))
            lags[end.partition] = max(0, end.offset - reached)
        return lags

    def close(self) -> None:
        """Leave the topic; closing again does nothing."""
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def __enter__(self) -> KafkaTopic:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
