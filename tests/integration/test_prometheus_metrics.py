"""/metrics as prometheus_client renders it, from totals the metadata database aggregates.

On a real SQLite file and a real PostgreSQL database (TEST_POSTGRES_URL; skipped without it, except
in CI): the counters equal the truth of the batches table over more batches than any page, never go
down as batches are added, and the output parses as the Prometheus text format.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, insert, text
from sqlalchemy.pool import NullPool

from app.application import prometheus
from app.domain.batches import BatchRecord, BatchStatus, InputFile, LayerMetrics, Reconciliation
from app.infrastructure.repositories.metadata import SqlMetadataStore, batches
from tests.integration.postgres import fresh_database, server_url

T0 = datetime(2025, 1, 1, tzinfo=UTC)
#: More batches than any page the store or the API reads (IN-list chunks of 500, pages of 1000).
MANY = 2_500
SOURCES = ("meter_readings", "nem12", 'odd "source"\\ with\nnewline')

#: (metric sample name, labels) -> value
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlMetadataStore]:
    """A migrated store on an empty database: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        opened = SqlMetadataStore(f"sqlite:///{tmp_path / 'metadata.db'}", retry_seconds=2)
        opened.migrate()
        yield opened
        opened.dispose()
        return
    with fresh_database(server_url()) as url:
        opened = SqlMetadataStore(url, retry_seconds=2)
        opened.migrate()
        yield opened
        opened.dispose()


def _url(store: SqlMetadataStore) -> str:
    return store._url.render_as_string(hide_password=False)


def _samples(body: bytes) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"{key} twice"
            samples[key] = sample.value
    return samples


def _types(body: bytes) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(body.decode("utf-8"))}


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def _rows(count: int, seed: int) -> list[dict[str, Any]]:
    """Batch rows of every source, kind and status; times to the millisecond, some counts missing."""
    chooser = random.Random(seed)
    rows = []
    for index in range(count):
        status = chooser.choice(["succeeded", "succeeded", "succeeded", "failed", "skipped", "running"])
        started = T0 + timedelta(minutes=index, milliseconds=chooser.randrange(60_000))
        finished = None if status == "running" else started + timedelta(milliseconds=chooser.randrange(1, 600_000))
        reconciled = status != "running" and chooser.random() < 0.9
        rows.append(
            {
                "batch_id": f"bulk-{seed}-{index:05d}",
                "source": chooser.choice(SOURCES),
                "execution_mode": "local",
                "status": status,
                "started_at": started,
                "finished_at": finished,
                "ingestion_time": started,
                "record_count": chooser.randrange(0, 200_000),
                "rows_read": chooser.randrange(0, 10) if reconciled else None,
                "rows_quarantined": chooser.randrange(0, 5_000) if reconciled else None,
                "rows_estimated": chooser.randrange(0, 500) if reconciled else None,
                "sequence": seed * 1_000_000 + index + 1,
                "kind": chooser.choice(["ingest", "ingest", "replay"]),
            }
        )
    return rows


def _bulk_insert(store: SqlMetadataStore, rows: list[dict[str, Any]]) -> None:
    engine = create_engine(_url(store), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(insert(batches), rows)
    finally:
        engine.dispose()


def _expected(rows: list[dict[str, Any]]) -> Samples:
    """What /metrics must say about `rows`, computed here in Python from the rows themselves."""
    runs: Counter[tuple[str, str, str]] = Counter()
    sums: defaultdict[str, Counter[str]] = defaultdict(Counter)
    durations: defaultdict[str, float] = defaultdict(float)
    last: dict[str, datetime] = {}
    failed: dict[str, datetime] = {}
    #: source -> ((finished_at, batch_id), ratio) of its latest succeeded batch that read rows
    latest: dict[str, tuple[tuple[datetime, str], float]] = {}
    running = 0
    for row in rows:
        source, status = row["source"], row["status"]
        if status == "running":
            running += 1
            continue
        runs[(source, row["kind"], status)] += 1
        if status == "failed":
            failed[source] = max(failed.get(source, row["finished_at"]), row["finished_at"])
        if status != "succeeded":
            continue
        order = (row["finished_at"], row["batch_id"])
        if row["record_count"] > 0 and (source not in latest or latest[source][0] < order):
            latest[source] = (order, (row["rows_quarantined"] or 0) / row["record_count"])
        sums[source]["processed"] += row["record_count"]
        sums[source]["quarantined"] += row["rows_quarantined"] or 0
        sums[source]["estimated"] += row["rows_estimated"] or 0
        sums[source]["count"] += 1
        durations[source] += (row["finished_at"] - row["started_at"]).total_seconds()
        last[source] = max(last.get(source, row["finished_at"]), row["finished_at"])
    expected: Samples = {_key("energy_platform_batches_running"): running}
    for source, kind in {(source, kind) for source, kind, _ in runs}:
        for status in ("succeeded", "failed", "skipped"):
            expected[_key("energy_platform_runs_total", source=source, kind=kind, status=status)] = runs[
                (source, kind, status)
            ]
    for source in {source for source, _, _ in runs}:
        totals = sums[source]
        expected[_key("energy_platform_records_processed_total", source=source)] = totals["processed"]
        expected[_key("energy_platform_records_quarantined_total", source=source)] = totals["quarantined"]
        expected[_key("energy_platform_rows_estimated_total", source=source)] = totals["estimated"]
        expected[_key("energy_platform_batch_duration_seconds_count", source=source)] = totals["count"]
        expected[_key("energy_platform_batch_duration_seconds_sum", source=source)] = durations[source]
    for source, finished in last.items():
        expected[_key("energy_platform_last_success_timestamp_seconds", source=source)] = finished.timestamp()
    for source, finished in failed.items():
        expected[_key("energy_platform_last_failure_timestamp_seconds", source=source)] = finished.timestamp()
    for source, (_, ratio) in latest.items():
        expected[_key("energy_platform_last_batch_quarantine_ratio", source=source)] = ratio
    return expected


def test_counters_equal_the_truth_of_the_batches_table_over_many_batches(store: SqlMetadataStore) -> None:
    rows = _rows(MANY, seed=1)
    _bulk_insert(store, rows)
    engine = create_engine(_url(store), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT count(*), sum(record_count) FROM batches")).one()
            succeeded = connection.execute(
                text("SELECT sum(record_count) FROM batches WHERE status = 'succeeded'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert stored[0] == MANY

    body = prometheus.render(store)

    samples = _samples(body)
    expected = _expected(rows)
    assert samples.keys() == expected.keys()
    for key, value in expected.items():
        assert samples[key] == pytest.approx(value, rel=1e-9, abs=1e-6), key
    processed = sum(v for (name, _), v in samples.items() if name == "energy_platform_records_processed_total")
    assert processed == succeeded
    # Sources keep their exact names through label escaping.
    assert {dict(labels)["source"] for name, labels in samples if "source" in dict(labels)} == set(SOURCES)


def test_the_output_is_the_prometheus_text_format(store: SqlMetadataStore) -> None:
    _bulk_insert(store, _rows(50, seed=2))

    body = prometheus.render(store)

    assert isinstance(body, bytes)
    assert prometheus.CONTENT_TYPE == prometheus_client.CONTENT_TYPE_LATEST
    assert _types(body) == {
        "energy_platform_runs": "counter",
        "energy_platform_batches_running": "gauge",
        "energy_platform_records_processed": "counter",
        "energy_platform_records_quarantined": "counter",
        "energy_platform_rows_estimated": "counter",
        "energy_platform_batch_duration_seconds": "summary",
        "energy_platform_last_success_timestamp_seconds": "gauge",
        "energy_platform_last_failure_timestamp_seconds": "gauge",
        "energy_platform_last_batch_quarantine_ratio": "gauge",
        "energy_platform_layer_records_in": "counter",
        "energy_platform_layer_records_out": "counter",
        "energy_platform_layer_duration_seconds": "summary",
    }
    text_body = body.decode("utf-8")
    assert "# TYPE energy_platform_runs_total counter" in text_body
    assert "# TYPE energy_platform_batch_duration_seconds summary" in text_body


def test_an_empty_store_renders_only_the_running_gauge(store: SqlMetadataStore) -> None:
    assert _samples(prometheus.render(store)) == {_key("energy_platform_batches_running"): 0}


def _start(store: SqlMetadataStore, source: str, at: datetime) -> BatchRecord:
    record = BatchRecord(
        batch_id=f"batch-{uuid.uuid4().hex}",
        source=source,
        execution_mode="local",
        status="running",
        started_at=at,
        ingestion_time=at,
        files=[InputFile("in/a.csv", uuid.uuid4().hex * 2, 10)],
    )
    store.start_batch(record)
    return record


def _finish(
    store: SqlMetadataStore,
    record: BatchRecord,
    status: BatchStatus,
    rows: int,
    layers: list[LayerMetrics] | None = None,
    quarantined: int | None = None,
) -> None:
    quarantined = rows // 10 if quarantined is None else quarantined
    store.finish_batch(
        batch_id=record.batch_id,
        status=status,
        finished_at=record.started_at + timedelta(seconds=rows / 10),
        record_count=rows,
        reconciliation=Reconciliation(rows, rows - quarantined, quarantined, 0, rows_estimated=rows // 7),
        layers=layers or [],
        rule_counts={},
    )


def test_no_counter_ever_goes_down_as_batches_are_added(store: SqlMetadataStore) -> None:
    _bulk_insert(store, _rows(300, seed=3))
    previous = _samples(prometheus.render(store))
    counters = (
        "energy_platform_runs_total",
        "energy_platform_records_processed_total",
        "energy_platform_records_quarantined_total",
        "energy_platform_rows_estimated_total",
        "energy_platform_batch_duration_seconds_sum",
        "energy_platform_batch_duration_seconds_count",
    )
    chooser = random.Random(4)
    at = T0 + timedelta(days=30)
    increased: set[str] = set()
    for step in range(12):
        record = _start(store, chooser.choice(["meter_readings", f"new-{step % 3}"]), at + timedelta(hours=step))
        running = _samples(prometheus.render(store))
        assert running[_key("energy_platform_batches_running")] == previous[_key("energy_platform_batches_running")] + 1
        _finish(store, record, chooser.choice(["succeeded", "succeeded", "failed"]), rows=chooser.randrange(10, 999))
        for current in (running, _samples(prometheus.render(store))):
            for key, value in previous.items():
                if key[0] in counters:
                    assert key in current, f"{key} vanished"
                    assert current[key] >= value, f"{key} went down from {value} to {current[key]}"
                    if current[key] > value:
                        increased.add(key[0])
            previous = current
    assert increased == set(counters)


def _layers(scale: int) -> list[LayerMetrics]:
    return [
        LayerMetrics("bronze", 10 * scale, 10 * scale, 0, 0.5 * scale),
        LayerMetrics("silver", 10 * scale, 9 * scale, scale, 1.25 * scale),
        LayerMetrics("gold", 9 * scale, 3 * scale, 0, 0.25 * scale),
    ]


def test_layer_totals_sum_the_layers_of_succeeded_batches_only(store: SqlMetadataStore) -> None:
    for scale, (source, status) in enumerate(
        [("a", "succeeded"), ("a", "succeeded"), ("a", "failed"), ("b", "succeeded"), ("b", "skipped")], start=1
    ):
        record = _start(store, source, T0 + timedelta(hours=scale))
        _finish(store, record, status, rows=10 * scale, layers=_layers(scale))  # type: ignore[arg-type]

    samples = _samples(prometheus.render(store))

    layers = {
        (name, dict(labels)["source"], dict(labels)["layer"]): value
        for (name, labels), value in samples.items()
        if name.startswith("energy_platform_layer_")
    }
    expected: dict[tuple[str, str, str], float] = {}
    for source, scales in (("a", (1, 2)), ("b", (4,))):
        for layer in _layers(1):
            n = layer.layer
            expected[("energy_platform_layer_records_in_total", source, n)] = sum(layer.records_in * k for k in scales)
            expected[("energy_platform_layer_records_out_total", source, n)] = sum(
                layer.records_out * k for k in scales
            )
            expected[("energy_platform_layer_duration_seconds_sum", source, n)] = sum(
                layer.duration_seconds * k for k in scales
            )
            expected[("energy_platform_layer_duration_seconds_count", source, n)] = len(scales)
    assert layers == pytest.approx(expected)


def test_last_failure_and_the_last_batch_quarantine_ratio(store: SqlMetadataStore) -> None:
    at = T0 + timedelta(days=2)
    # "a": a good batch, then one that quarantined a quarter of its rows, then a failure, then a
    # batch that read nothing (an undo-like run): the ratio is the quarter's, the failure the last.
    _finish(store, _start(store, "a", at), "succeeded", rows=100, quarantined=0)
    _finish(store, _start(store, "a", at + timedelta(hours=1)), "succeeded", rows=200, quarantined=50)
    _finish(store, _start(store, "a", at + timedelta(hours=2)), "failed", rows=0)
    _finish(store, _start(store, "a", at + timedelta(hours=3)), "succeeded", rows=0, quarantined=0)
    # "b" only ever failed: a failure time, no ratio, no last success.
    failed = _start(store, "b", at)
    _finish(store, failed, "failed", rows=40)

    samples = _samples(prometheus.render(store))

    assert samples[_key("energy_platform_last_batch_quarantine_ratio", source="a")] == pytest.approx(0.25)
    assert _key("energy_platform_last_batch_quarantine_ratio", source="b") not in samples
    assert samples[_key("energy_platform_last_failure_timestamp_seconds", source="a")] == pytest.approx(
        (at + timedelta(hours=2)).timestamp()
    )
    assert samples[_key("energy_platform_last_failure_timestamp_seconds", source="b")] == pytest.approx(
        (at + timedelta(seconds=4)).timestamp()
    )
    assert _key("energy_platform_last_success_timestamp_seconds", source="b") not in samples
    # A later good batch brings the ratio down again.
    _finish(store, _start(store, "a", at + timedelta(hours=4)), "succeeded", rows=50, quarantined=1)
    assert _samples(prometheus.render(store))[
        _key("energy_platform_last_batch_quarantine_ratio", source="a")
    ] == pytest.approx(0.02)
