"""Contract tests for SqlMetadataStore against real databases: a SQLite file and a PostgreSQL server.

The PostgreSQL runs need TEST_POSTGRES_URL (see tests/integration/postgres.py and
scripts/postgres-test-server.sh); without it they skip, except in CI, where they fail.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from app.domain.batches import (
    BatchRecord,
    BatchStatus,
    InputFile,
    LayerMetrics,
    Reconciliation,
)
from app.domain.errors import MetadataStoreError
from app.infrastructure.repositories.metadata import METADATA, MIGRATIONS_DIR, SqlMetadataStore, files_checksum

ROOT = Path(__file__).resolve().parents[2]

T0 = datetime(2024, 3, 31, 0, 30, tzinfo=UTC)


@pytest.fixture
def metadata_store(metadata_url: str) -> Iterator[SqlMetadataStore]:
    """Yield a migrated store; tests use unique ids and sources so a shared database works."""
    store = SqlMetadataStore(metadata_url)
    store.migrate()
    yield store
    store.dispose()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _sha() -> str:
    return uuid.uuid4().hex * 2


def _record(
    *,
    source: str = "nem12",
    started_at: datetime = T0,
    files: list[InputFile] | None = None,
) -> BatchRecord:
    return BatchRecord(
        batch_id=_unique("batch"),
        source=source,
        execution_mode="local",
        status="running",
        started_at=started_at,
        ingestion_time=started_at,
        files=files if files is not None else [InputFile("in/a.csv", _sha(), 120)],
    )


def _ping(url: str) -> float:
    store = SqlMetadataStore(url)
    try:
        return store.ping()
    finally:
        store.dispose()


def _finish(store: SqlMetadataStore, record: BatchRecord, status: BatchStatus = "succeeded") -> None:
    store.finish_batch(
        batch_id=record.batch_id,
        status=status,
        finished_at=record.started_at + timedelta(seconds=5),
        record_count=0,
        reconciliation=None,
        layers=[],
        rule_counts={},
    )


def test_migrate_is_idempotent_and_matches_the_table_definitions(
    metadata_store: SqlMetadataStore, metadata_url: str
) -> None:
    metadata_store.migrate()
    metadata_store.migrate()

    engine = create_engine(metadata_url)
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            tables = set(inspector.get_table_names())
            checks = {check["name"] for check in inspector.get_check_constraints("batches")}
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
            drift = compare_metadata(MigrationContext.configure(connection), METADATA)
    finally:
        engine.dispose()
    assert {"batches", "batch_files", "layer_metrics", "rule_counts", "streams", "audit"} <= tables
    assert [tuple(row) for row in versions] == [(ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head(),)]
    assert drift == []
    assert checks == {"ck_batches_status"}


def test_the_schema_exists_only_after_migrate(metadata_url: str) -> None:
    store = SqlMetadataStore(metadata_url)
    try:
        with pytest.raises(MetadataStoreError, match="migrations"):
            store.list_batches()
    finally:
        store.dispose()


def test_start_and_finish_round_trip(metadata_store: SqlMetadataStore) -> None:
    paris = timezone(timedelta(hours=2))
    started = datetime(2024, 3, 31, 3, 15, 7, 123456, tzinfo=paris)
    files = [InputFile("in/a.csv", _sha(), 1200), InputFile("in/b.csv", _sha(), 3400)]
    record = _record(started_at=started, files=files)
    record.record_count = 10
    record.lake = "/lakes/one"
    sequence = metadata_store.start_batch(record)

    running = metadata_store.get_batch(record.batch_id)
    assert running is not None
    assert running.status == "running"
    assert running.sequence == sequence
    assert running.finished_at is None
    assert running.reconciliation is None
    assert running.checksum == files_checksum(files)

    reconciliation = Reconciliation(
        rows_read=100,
        rows_accepted=90,
        rows_quarantined=6,
        duplicates_replaced=4,
        silver_inserted=80,
        silver_updated=7,
        silver_unchanged=3,
    )
    layers = [
        LayerMetrics("gold", 90, 3, 0, 0.25),
        LayerMetrics("bronze", 100, 100, 0, 1.5),
        LayerMetrics("silver", 100, 90, 6, 2.125),
    ]
    counted_files = [
        InputFile("in/a.csv", files[0].sha256, 1200, record_count=40),
        InputFile("in/b.csv", files[1].sha256, 3400, record_count=60),
    ]
    finished = started + timedelta(minutes=2)
    metadata_store.finish_batch(
        batch_id=record.batch_id,
        status="succeeded",
        finished_at=finished,
        record_count=100,
        reconciliation=reconciliation,
        layers=layers,
        rule_counts={"negative": 2, "spike": 4},
        files=counted_files,
    )

    stored = metadata_store.get_batch(record.batch_id)
    assert stored == BatchRecord(
        batch_id=record.batch_id,
        source="nem12",
        execution_mode="local",
        status="succeeded",
        started_at=started,
        ingestion_time=started,
        files=counted_files,
        finished_at=finished,
        record_count=100,
        checksum=files_checksum(files),
        reconciliation=reconciliation,
        layers=[layers[1], layers[2], layers[0]],
        rule_counts={"negative": 2, "spike": 4},
        sequence=sequence,
        lake="/lakes/one",
    )
    for moment in (stored.started_at, stored.ingestion_time, stored.finished_at):
        assert moment is not None
        assert moment.utcoffset() == timedelta(0)
        assert moment.tzinfo == UTC


def test_finish_twice_replaces_metrics_and_records_the_error(
    metadata_store: SqlMetadataStore,
) -> None:
    record = _record()
    metadata_store.start_batch(record)
    _finish(metadata_store, record)
    metadata_store.finish_batch(
        batch_id=record.batch_id,
        status="failed",
        finished_at=T0 + timedelta(minutes=1),
        record_count=0,
        reconciliation=None,
        layers=[LayerMetrics("bronze", 5, 0, 0, 0.1)],
        rule_counts={"timestamp": 5},
        error="in/a.csv, line 3: unparseable timestamp",
    )

    stored = metadata_store.get_batch(record.batch_id)
    assert stored is not None
    assert stored.status == "failed"
    assert stored.error == "in/a.csv, line 3: unparseable timestamp"
    assert stored.layers == [LayerMetrics("bronze", 5, 0, 0, 0.1)]
    assert stored.rule_counts == {"timestamp": 5}


def test_an_error_quoting_nul_bytes_is_recorded_with_them_escaped(metadata_store: SqlMetadataStore) -> None:
    # PostgreSQL's text columns refuse NUL, which would leave the batch "running" for ever.
    record = _record()
    metadata_store.start_batch(record)
    metadata_store.finish_batch(
        batch_id=record.batch_id,
        status="failed",
        finished_at=T0 + timedelta(minutes=1),
        record_count=0,
        reconciliation=None,
        layers=[],
        rule_counts={},
        error="in/a.csv, line 1: header repeats column(s) x\x00",
    )

    stored = metadata_store.get_batch(record.batch_id)
    assert stored is not None
    assert stored.status == "failed"
    assert stored.error == "in/a.csv, line 1: header repeats column(s) x\\x00"


def test_a_value_too_long_for_its_column_is_refused(metadata_store: SqlMetadataStore, metadata_url: str) -> None:
    if metadata_url.startswith("sqlite"):
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    record = _record(source="s" * 256)
    with pytest.raises(MetadataStoreError, match=r"refused to start batch .*too long"):
        metadata_store.start_batch(record)
    assert metadata_store.get_batch(record.batch_id) is None


def test_finishing_an_unknown_batch_is_refused(metadata_store: SqlMetadataStore) -> None:
    with pytest.raises(MetadataStoreError, match="never started"):
        _finish(metadata_store, _record())


def test_starting_a_batch_id_twice_is_refused(metadata_store: SqlMetadataStore) -> None:
    record = _record()
    metadata_store.start_batch(record)
    with pytest.raises(MetadataStoreError, match="refused"):
        metadata_store.start_batch(record)


def test_each_batch_gets_the_next_sequence_number(metadata_store: SqlMetadataStore) -> None:
    first = metadata_store.start_batch(_record())
    second = metadata_store.start_batch(_record())
    assert second == first + 1


def test_running_batches_lists_only_the_lakes_unfinished_ones(metadata_store: SqlMetadataStore) -> None:
    lake = f"/lakes/{_unique('lake')}"
    running, finished, elsewhere = _record(), _record(), _record()
    for record, where in ((running, lake), (finished, lake), (elsewhere, lake + "-other")):
        record.lake = where
        metadata_store.start_batch(record)
    _finish(metadata_store, finished)
    assert [r.batch_id for r in metadata_store.running_batches(lake=lake)] == [running.batch_id]


def test_naive_timestamps_are_rejected(metadata_store: SqlMetadataStore) -> None:
    record = _record(started_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        metadata_store.start_batch(record)
    assert metadata_store.get_batch(record.batch_id) is None


def test_get_batch_returns_none_for_an_unknown_id(metadata_store: SqlMetadataStore) -> None:
    assert metadata_store.get_batch(_unique("missing")) is None


def test_successful_checksums_ignore_failed_and_running_batches(
    metadata_store: SqlMetadataStore,
) -> None:
    ok, failed, running, unseen = _sha(), _sha(), _sha(), _sha()
    first = _record(files=[InputFile("a.csv", ok, 1)])
    again = _record(started_at=T0 + timedelta(hours=1), files=[InputFile("a.csv", ok, 1)])
    broken = _record(files=[InputFile("b.csv", failed, 1)])
    pending = _record(files=[InputFile("c.csv", running, 1)])
    for record in (again, first, broken, pending):
        metadata_store.start_batch(record)
    _finish(metadata_store, again)
    _finish(metadata_store, first)
    _finish(metadata_store, broken, status="failed")

    found = metadata_store.successful_checksums([ok, failed, running, unseen])

    assert found == {ok: first.batch_id}
    assert metadata_store.successful_checksums([]) == {}


def test_list_batches_newest_first_with_limit_and_source(
    metadata_store: SqlMetadataStore,
) -> None:
    source, other = _unique("source"), _unique("source")
    records = [_record(source=source, started_at=T0 + timedelta(hours=h)) for h in (2, 0, 1)]
    for record in [*records, _record(source=other, started_at=T0 + timedelta(hours=3))]:
        metadata_store.start_batch(record)
    newest_first = [records[0].batch_id, records[2].batch_id, records[1].batch_id]

    listed = metadata_store.list_batches(source=source)
    limited = metadata_store.list_batches(source=source, limit=2)
    unfiltered = metadata_store.list_batches(limit=3)

    assert [record.batch_id for record in listed] == newest_first
    assert [record.batch_id for record in limited] == newest_first[:2]
    assert listed[0].files == records[0].files
    assert len(unfiltered) == 3
    starts = [record.started_at for record in unfiltered]
    assert starts == sorted(starts, reverse=True)
    with pytest.raises(ValueError, match="limit"):
        metadata_store.list_batches(limit=0)


def test_ping_returns_a_positive_latency(metadata_store: SqlMetadataStore) -> None:
    latency = metadata_store.ping()
    assert isinstance(latency, float)
    assert latency > 0


def test_ping_on_a_missing_sqlite_directory_raises(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'absent' / 'metadata.db'}"
    store = SqlMetadataStore(url, create_dirs=False)
    try:
        with pytest.raises(MetadataStoreError, match="unable to open database file") as info:
            store.ping()
    finally:
        store.dispose()
    assert url in str(info.value)


def test_an_uncreatable_sqlite_directory_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(MetadataStoreError, match="Cannot create the directory"):
        SqlMetadataStore(f"sqlite:///{blocker / 'metadata.db'}")


def test_unreachable_postgres_error_hides_the_password() -> None:
    url = "postgresql+psycopg://user:s3cret@127.0.0.1:1/db"
    # Without psycopg the store fails at construction, with it at the first round trip.
    with pytest.raises(MetadataStoreError) as info:
        _ping(url)
    message = str(info.value)
    assert "s3cret" not in message
    assert "postgresql+psycopg://user:***@127.0.0.1:1/db" in message


def test_an_unparseable_url_raises_without_echoing_it() -> None:
    with pytest.raises(MetadataStoreError, match="cannot be parsed") as info:
        SqlMetadataStore("not a url with s3cret")
    assert "s3cret" not in str(info.value)


def test_url_for_display_is_the_url_with_the_password_masked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shown.db'}"
    store = SqlMetadataStore(url)
    try:
        assert store.url_for_display == url
    finally:
        store.dispose()
    with pytest.raises(MetadataStoreError, match="not valid") as info:
        SqlMetadataStore(f"sqlite://user:s3cret@/{tmp_path / 'masked.db'}")
    assert "s3cret" not in str(info.value)
    assert "user:***@" in str(info.value)


def test_metric_totals_aggregate_every_batch_by_source(metadata_store: SqlMetadataStore) -> None:
    # Only this test's sources are looked at, and the running count as a difference: the database may be shared.
    source, other = _unique("source"), _unique("source")
    running_before = metadata_store.metric_totals().running
    reconciliation = Reconciliation(rows_read=10, rows_accepted=7, rows_quarantined=3, duplicates_replaced=0)
    estimated = Reconciliation(
        rows_read=5, rows_accepted=5, rows_quarantined=0, duplicates_replaced=0, rows_estimated=2
    )
    outcomes: list[tuple[str, BatchStatus, Reconciliation | None, float]] = [
        (source, "succeeded", reconciliation, 1.25),
        (source, "succeeded", estimated, 2.5),
        (source, "failed", None, 9.0),
        (other, "skipped", None, 0.5),
    ]
    for hour, (batch_source, status, counts, seconds) in enumerate(outcomes):
        record = _record(source=batch_source, started_at=T0 + timedelta(hours=hour))
        metadata_store.start_batch(record)
        metadata_store.finish_batch(
            batch_id=record.batch_id,
            status=status,
            finished_at=record.started_at + timedelta(seconds=seconds),
            record_count=counts.rows_read if counts else 0,
            reconciliation=counts,
            layers=[],
            rule_counts={},
        )
    replay = _record(source=source, started_at=T0 + timedelta(hours=9))
    replay.kind, replay.replay_of = "replay", "b-1"
    metadata_store.start_batch(replay)  # still running

    totals = metadata_store.metric_totals()

    mine = {source, other}
    assert {key: n for key, n in totals.runs.items() if key[0] in mine} == {
        (source, "ingest", "succeeded"): 2,
        (source, "ingest", "failed"): 1,
        (other, "ingest", "skipped"): 1,
    }
    assert totals.running - running_before == 1
    assert mine <= set(totals.sources)
    assert totals.records_processed[source] == 15 and other not in totals.records_processed
    assert totals.records_quarantined[source] == 3
    assert totals.rows_estimated[source] == 2
    assert totals.duration_count[source] == 2
    assert totals.duration_seconds[source] == pytest.approx(3.75)
    assert totals.last_success[source] == T0 + timedelta(hours=1, seconds=2.5)
    assert totals.last_success[source].tzinfo == UTC
    assert other not in totals.last_success


def test_each_migration_files_revision_is_its_number_and_follows_the_one_before() -> None:
    """`migrate` recognises an up-to-date database by the newest file's number without loading
    Alembic: that holds only while every file `NNNN_name.py` has revision "NNNN" and revises
    the number before it."""
    import re

    files = sorted((MIGRATIONS_DIR / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
    previous = None
    for path in files:
        source = path.read_text(encoding="utf-8")
        revision = re.search(r'^revision: str = "(\d{4})"', source, re.M)
        down = re.search(r"^down_revision: .*= (None|\"(\d{4})\")", source, re.M)
        assert revision is not None and revision.group(1) == path.name[:4], path.name
        assert down is not None and down.group(2) == previous, path.name
        previous = path.name[:4]


def test_an_up_to_date_database_starts_without_loading_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'metadata.db'}"
    SqlMetadataStore(url).migrate()
    script = (
        "import sys\n"
        "from app.infrastructure.repositories.metadata import SqlMetadataStore\n"
        f"SqlMetadataStore({url!r}).migrate()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


def test_pseudonymise_replaces_a_value_in_every_free_text_field(metadata_url: str) -> None:
    from app.domain.audit import AuditRecord

    store = SqlMetadataStore(metadata_url)
    store.migrate()
    at = datetime(2025, 6, 1, tzinfo=UTC)
    store.record_audit(
        AuditRecord(
            at=at,
            actor="ops",
            actor_kind="cli",
            action="batches undo",
            outcome="refused",
            target="MTR-9_%x",
            details={"meters": ["MTR-9_%x", "MTR-1"]},
            error="later batches wrote meter(s) MTR-9_%x",
        )
    )
    store.record_audit(AuditRecord(at=at, actor="ops", actor_kind="cli", action="run-batch", outcome="succeeded"))

    changed = store.pseudonymise("MTR-9_%x", "sha256:ab")

    assert changed == 3  # the first record's target, error and details; the second holds nothing
    [second, first] = store.list_audit(limit=10)
    assert (first.target, first.error) == ("sha256:ab", "later batches wrote meter(s) sha256:ab")
    assert first.details == {"meters": ["sha256:ab", "MTR-1"]}
    assert second.target is None and second.details == {}
    assert store.pseudonymise("MTR-9_%x", "sha256:ab") == 0
