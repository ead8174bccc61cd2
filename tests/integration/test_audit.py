"""The audit trail: the metadata store's contract on SQLite and PostgreSQL, the use cases that
record themselves (runs, replays, optimize, vacuum, streams), the HTTP service (the key's name,
GET /audit behind the key) and the command line (the OS user, `audit list`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import structlog
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect

from app.api.dependencies import current_settings
from app.application.audit import StreamAudit
from app.application.lake_ops import optimize_tables, vacuum_tables
from app.application.runner import replay_quarantine, run_batch
from app.application.streaming import run_stream
from app.domain.audit import Actor, AuditRecord
from app.domain.errors import ConfigurationError
from app.infrastructure.logging import register_secrets
from app.infrastructure.repositories.metadata import MIGRATIONS_DIR, MetadataUnavailableError, SqlMetadataStore
from app.infrastructure.settings import Settings
from app.main import app
from app.wiring import LocalPlatform
from tests.integration.conftest import NOW, write_csv
from tests.integration.test_reliability import day_rows, write_day

T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
ALICE = Actor("alice", "cli")
CONFIG = '[sources.feed]\npath = "landing"\nunit = "kWh"\ninterval_minutes = 60\n'


# --- the metadata store's contract ---------------------------------------------------------------


@pytest.fixture
def store(metadata_url: str) -> Iterator[SqlMetadataStore]:
    opened = SqlMetadataStore(metadata_url)
    opened.migrate()
    yield opened
    opened.dispose()


def _record(at: datetime = T0, **fields: object) -> AuditRecord:
    values: dict[str, object] = {
        "at": at,
        "actor": "alice",
        "actor_kind": "cli",
        "action": "run-batch",
        "outcome": "succeeded",
        "target": "meter_readings",
        "details": {"batch_id": "b1", "files": {"silver_readings": [4, 1]}, "force": False, "input": None},
    }
    return AuditRecord(**(values | fields))  # type: ignore[arg-type]


def test_a_record_round_trips_and_the_trail_lists_newest_first(store: SqlMetadataStore) -> None:
    paris = T0.astimezone(ZoneInfo("Europe/Paris"))
    first = store.record_audit(_record(at=paris))
    second = store.record_audit(
        _record(
            at=T0 + timedelta(seconds=1),
            actor="ops",
            actor_kind="api",
            action="tables vacuum",
            outcome="refused",
            target=None,
            details={},
            error="--retain-hours 1 is shorter than Delta's safe default",
        )
    )
    same_time = store.record_audit(_record(at=T0 + timedelta(seconds=1), action="tables optimize"))

    listed = store.list_audit(10)

    assert first < second < same_time
    assert [r.id for r in listed] == [same_time, second, first]  # by time, then by id
    stored = listed[-1]
    assert stored == _record(id=first)  # the same instant, read back in UTC, details as JSON
    assert stored.at.tzinfo is UTC or stored.at.utcoffset() == timedelta(0)
    assert listed[1].details == {} and listed[1].target is None and listed[1].outcome == "refused"
    assert listed[1].error is not None and "shorter" in listed[1].error


def test_the_trail_filters_by_action_actor_and_time_and_limits(store: SqlMetadataStore) -> None:
    for minute, (actor, action) in enumerate(
        [("alice", "run-batch"), ("ops", "run-batch"), ("alice", "tables vacuum"), ("ops", "stream start")]
    ):
        store.record_audit(_record(at=T0 + timedelta(minutes=minute), actor=actor, action=action))

    assert [r.actor for r in store.list_audit(10, action="run-batch")] == ["ops", "alice"]
    assert [r.action for r in store.list_audit(10, actor="alice")] == ["tables vacuum", "run-batch"]
    assert [r.action for r in store.list_audit(10, since=T0 + timedelta(minutes=2))] == [
        "stream start",
        "tables vacuum",
    ]
    assert [r.action for r in store.list_audit(10, actor="ops", since=T0 + timedelta(minutes=1))] == [
        "stream start",
        "run-batch",
    ]
    assert len(store.list_audit(2)) == 2
    assert store.list_audit(10, actor="nobody") == []
    with pytest.raises(ValueError, match="limit must be at least 1"):
        store.list_audit(0)
    with pytest.raises(ValueError, match="since must be timezone-aware"):
        store.list_audit(10, since=datetime(2026, 1, 1))


def test_a_record_refuses_naive_times_and_unknown_outcomes_or_kinds(store: SqlMetadataStore) -> None:
    with pytest.raises(ValueError, match="at must be timezone-aware"):
        store.record_audit(_record(at=datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="unknown audit outcome"):
        store.record_audit(_record(outcome="maybe"))
    with pytest.raises(ValueError, match="unknown actor kind"):
        store.record_audit(_record(actor_kind="robot"))
    assert store.list_audit(10) == []


def test_secrets_and_nul_bytes_are_stored_masked(store: SqlMetadataStore) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    register_secrets(secret)
    store.record_audit(
        _record(details={"input": f"in/{secret}.csv", "nested": [{"why": "a\x00b"}]}, error=f"token={secret}\x00")
    )
    [stored] = store.list_audit(1)
    assert secret not in repr(stored)
    assert stored.details["nested"] == [{"why": "a\\x00b"}]
    assert stored.error is not None and "\x00" not in stored.error


def test_the_audit_table_goes_with_a_downgrade_and_comes_back(store: SqlMetadataStore, metadata_url: str) -> None:
    store.record_audit(_record())
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", metadata_url.replace("%", "%%"))
    command.downgrade(config, "0006")
    engine = create_engine(metadata_url)
    try:
        with engine.connect() as connection:
            assert "audit" not in inspect(connection).get_table_names()
    finally:
        engine.dispose()
    store.migrate()
    assert store.list_audit(10) == []
    assert store.schema_version() == ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def test_a_record_retried_after_its_answer_was_lost_is_written_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'm.db'}", retry_seconds=10)
    store.migrate()
    real = SqlMetadataStore._record_audit
    calls: list[bool] = []

    def committed_then_lost(self: SqlMetadataStore, values: dict[str, object], *, retry: bool) -> int:
        calls.append(retry)
        written = real(self, values, retry=retry)
        if len(calls) == 1:
            raise MetadataUnavailableError("the connection was lost before the commit was acknowledged")
        return written

    monkeypatch.setattr(SqlMetadataStore, "_record_audit", committed_then_lost)
    try:
        written = store.record_audit(_record())
        listed = store.list_audit(10)
    finally:
        store.dispose()
    assert calls == [False, True]
    assert [r.id for r in listed] == [written]


# --- the use cases record themselves ---------------------------------------------------------------


def _trail(platform: LocalPlatform, **filters: str) -> list[AuditRecord]:
    return platform.metadata.list_audit(50, **filters)  # type: ignore[arg-type]


def test_a_run_is_recorded_with_its_actor_batch_and_outcome(platform: LocalPlatform, tmp_path: Path) -> None:
    good = write_day(tmp_path / "in" / "day1.csv", day_rows(1))
    bad = write_csv(tmp_path / "bad.csv", [], header="meter_id;timestamp;value;unit")

    done = run_batch(platform, input_path=str(good), now=NOW, actor=ALICE)
    failed = run_batch(platform, input_path=str(bad), now=NOW, actor=ALICE)
    with pytest.raises(ConfigurationError, match="unknown source"):
        run_batch(platform, source_name="prices", actor=ALICE)
    run_batch(platform, input_path=str(good), now=NOW)  # no actor given: the process's user, as the platform

    unnamed, refused, failure, success = _trail(platform, action="run-batch")
    assert (success.actor, success.actor_kind, success.target, success.outcome) == (
        "alice",
        "cli",
        "meter_readings",
        "succeeded",
    )
    assert success.details["batch_id"] == done.batch_id and success.details["status"] == "succeeded"
    assert success.details["input"] == str(good) and success.details["rows_read"] == done.reconciliation.rows_read  # type: ignore[union-attr]
    assert success.details["duration_seconds"] >= 0 and success.error is None
    assert (failure.outcome, failure.details["batch_id"]) == ("failed", failed.batch_id)
    assert failure.error is not None and "wrong delimiter" in failure.error
    assert (refused.outcome, refused.target) == ("refused", "prices")
    assert refused.error is not None and "unknown source 'prices'" in refused.error
    assert unnamed.actor_kind == "service" and unnamed.actor and unnamed.details["status"] == "skipped"


def test_a_replay_is_recorded_against_the_batch_it_replays(platform: LocalPlatform, tmp_path: Path) -> None:
    original = run_batch(platform, input_path=str(write_day(tmp_path / "in" / "d.csv", day_rows(1))), now=NOW)
    assert original.batch_id is not None

    replay = replay_quarantine(platform, batch_id=original.batch_id, now=NOW, actor=ALICE)
    with pytest.raises(ConfigurationError, match="there is no batch"):
        replay_quarantine(platform, batch_id="nope", actor=ALICE)

    missing, replayed = _trail(platform, action="quarantine replay")
    assert (replayed.target, replayed.outcome, replayed.actor) == (original.batch_id, "succeeded", "alice")
    assert replayed.details["batch_id"] == replay.batch_id and replayed.details["source"] == "meter_readings"
    assert (missing.target, missing.outcome) == ("nope", "refused")


def test_optimize_and_vacuum_are_recorded_and_a_short_retention_as_refused(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    for day in (1, 2):
        run_batch(platform, input_path=str(write_day(tmp_path / "in" / f"{day}.csv", day_rows(day))), now=NOW)

    files = optimize_tables(platform, name="silver_readings", actor=ALICE)
    with pytest.raises(ConfigurationError, match="shorter than Delta's safe default"):
        vacuum_tables(platform, name="silver_readings", retain_hours=1, actor=ALICE)
    deleted = vacuum_tables(platform, name="silver_readings", retain_hours=0, force=True, actor=ALICE)
    with pytest.raises(ConfigurationError, match="there is no table"):
        vacuum_tables(platform, name="silver", actor=ALICE)

    [optimized] = _trail(platform, action="tables optimize")
    assert (optimized.target, optimized.outcome, optimized.actor) == ("silver_readings", "succeeded", "alice")
    assert optimized.details["files"] == {t: list(n) for t, n in files.items()} and optimized.details["zorder"] == []
    no_table, forced, refused = _trail(platform, action="tables vacuum")
    assert (refused.outcome, refused.target, refused.details["retain_hours"]) == ("refused", "silver_readings", 1)
    assert refused.error is not None and "shorter than Delta's safe default of 168 hours" in refused.error
    assert refused.details["deleted"] == {}  # nothing was deleted
    assert (forced.outcome, forced.details["force"], forced.details["deleted"]) == ("succeeded", True, deleted)
    assert (no_table.outcome, no_table.target) == ("refused", "silver")


def test_a_stream_records_its_start_and_its_stop_with_the_micro_batches(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    for day in (1, 2):
        write_csv(
            tmp_path / "landing" / f"{day}.csv",
            [f"A,2025-06-0{day}T{h:02d}:00Z,1" for h in range(24)],
            header="meter_id,timestamp,value",
        )
    audit = StreamAudit(platform.metadata, ALICE, "feed", {"trigger_seconds": 0})
    with audit.until_started():
        summary = run_stream(
            platform,
            source_name="feed",
            config_file=tmp_path / "sources.toml",
            available_now=True,
            max_files=1,
            compact_every=2,
            now=lambda: NOW,
            audit=audit,
        )
    refused = StreamAudit(platform.metadata, ALICE, "feed")
    with pytest.raises(ConfigurationError, match="--max-files"), refused.until_started():
        run_stream(platform, source_name="feed", config_file=tmp_path / "sources.toml", max_files=0, audit=refused)

    trail = _trail(platform)
    assert [(r.action, r.outcome) for r in trail] == [
        ("stream start", "refused"),
        ("stream stop", "succeeded"),
        ("stream compact", "succeeded"),
        ("stream start", "succeeded"),
    ]
    no_start, stop, compact, start = trail
    assert start.details == {"run_id": audit.run_id, "trigger_seconds": 0} and start.target == "feed"
    assert stop.details["run_id"] == audit.run_id and stop.details["micro_batches"] == len(summary.micro_batches) == 2
    assert stop.details["readings"] == 48 and stop.actor == "alice" and stop.actor_kind == "cli"
    assert (compact.actor, compact.actor_kind) == ("alice", "stream") and "silver_readings" in compact.details["files"]
    assert no_start.error is not None and "--max-files" in no_start.error


def test_a_failed_audit_write_is_logged_and_the_action_stands(
    platform: LocalPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(record: AuditRecord) -> int:
        raise MetadataUnavailableError("the metadata database is down")

    monkeypatch.setattr(platform.metadata, "record_audit", refused)
    with structlog.testing.capture_logs() as logs:
        result = run_batch(platform, input_path=str(write_day(tmp_path / "d.csv", day_rows(1))), now=NOW, actor=ALICE)
    assert result.status == "succeeded"
    [warning] = [entry for entry in logs if entry["event"] == "audit_not_recorded"]
    assert warning["log_level"] == "warning" and warning["action"] == "run-batch" and warning["actor"] == "alice"
    assert warning["outcome"] == "succeeded" and "database is down" in warning["error"]


# --- the HTTP service ------------------------------------------------------------------------------

OPS_KEY = "ops-key-0123456789"
BILLING_KEY = "billing-key-9876543210"


@pytest.fixture
def named(tmp_path: Path) -> Iterator[Settings]:
    keys = f"ops={OPS_KEY},billing={BILLING_KEY}"
    settings = Settings(data_dir=tmp_path / "lake", api_keys=keys, _env_file=None)  # type: ignore[call-arg, arg-type]
    yield settings
    app.dependency_overrides.clear()


def _client(settings: Settings) -> TestClient:
    app.dependency_overrides[current_settings] = lambda: settings
    return TestClient(app)


def test_post_runs_is_recorded_under_the_name_of_the_key(named: Settings, tmp_path: Path) -> None:
    write_csv(named.landing_root / "meters" / "a.csv", ["M9,2025-06-10T00:00:00+01:00,0.5,kWh"])
    client = _client(named)

    run_id = client.post("/runs", json={"input_path": "meters/*.csv"}, headers={"X-API-Key": OPS_KEY}).json()["run_id"]
    outside = client.post("/runs", json={"input_path": "../x.csv"}, headers={"X-API-Key": BILLING_KEY})
    trail = client.get("/audit", headers={"X-API-Key": BILLING_KEY})

    assert outside.status_code == 422 and trail.status_code == 200
    refused, ran = trail.json()
    assert (ran["actor"], ran["actor_kind"], ran["action"], ran["outcome"]) == ("ops", "api", "run-batch", "succeeded")
    assert ran["target"] == "meter_readings" and ran["details"]["batch_id"] == run_id
    assert datetime.fromisoformat(ran["at"]).tzinfo is not None
    assert (refused["actor"], refused["outcome"]) == ("billing", "refused")
    assert "landing directory" in refused["error"] and refused["details"] == {"input": "../x.csv"}
    only_ops = client.get("/audit", params={"actor": "ops"}, headers={"X-API-Key": OPS_KEY}).json()
    assert [r["id"] for r in only_ops] == [ran["id"]]
    assert client.get("/audit", params={"action": "tables vacuum"}, headers={"X-API-Key": OPS_KEY}).json() == []
    later = (datetime.now(UTC) + timedelta(minutes=1)).replace(tzinfo=None).isoformat()
    assert client.get("/audit", params={"since": later}, headers={"X-API-Key": OPS_KEY}).json() == []
    # The keys themselves are in no record, no answer and nowhere in the metadata database.
    database = (named.data_dir / "metadata.db").read_bytes()
    for key in (OPS_KEY, BILLING_KEY):
        assert key not in trail.text and key.encode() not in database


@pytest.mark.parametrize(("headers", "status"), [({}, 401), ({"X-API-Key": "wrong"}, 401)])
def test_get_audit_needs_a_key(named: Settings, headers: dict[str, str], status: int) -> None:
    assert _client(named).get("/audit", headers=headers).status_code == status


def test_get_audit_is_refused_without_keys_and_open_to_api_key_by_its_name(tmp_path: Path) -> None:
    bare = Settings(data_dir=tmp_path / "a", _env_file=None)  # type: ignore[call-arg]
    single = Settings(data_dir=tmp_path / "b", api_key="single-key-123", _env_file=None)  # type: ignore[call-arg, arg-type]
    try:
        refused = _client(bare).get("/audit", headers={"X-API-Key": "anything"})
        assert refused.status_code == 403 and "API_KEY" in refused.json()["detail"]
        client = _client(single)
        assert (
            client.post("/runs", json={"source": "prices"}, headers={"X-API-Key": "single-key-123"}).status_code == 422
        )
        [record] = client.get("/audit", headers={"X-API-Key": "single-key-123"}).json()
        assert (record["actor"], record["outcome"], record["target"]) == ("api-key", "refused", "prices")
    finally:
        app.dependency_overrides.clear()


# --- the command line ------------------------------------------------------------------------------


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    outer = ("EXECUTION_MODE", "PROCESSING_MODE", "METADATA_DB_URL", "SOURCES_CONFIG", "LOCAL_ENGINE", "STORAGE_PATH")
    environment = {k: v for k, v in os.environ.items() if k not in outer}
    environment |= {"DATA_DIR": str(tmp_path / "lake"), "LOG_FORMAT": "json", "COLUMNS": "200"}
    environment |= {"LOGNAME": "audit-tester", "USER": "audit-tester"}  # what getpass.getuser() reads first
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_the_command_line_records_runs_and_vacuums_under_the_os_user(tmp_path: Path) -> None:
    day = write_day(tmp_path / "in" / "day1.csv", day_rows(1))
    assert _cli(tmp_path, "run-batch", "--input", str(day)).returncode == 0
    refused = _cli(tmp_path, "tables", "vacuum", "--retain-hours", "1")
    assert refused.returncode == 1 and "shorter than Delta's safe default" in refused.stderr
    assert _cli(tmp_path, "tables", "vacuum", "silver_readings").returncode == 0

    listed = _cli(tmp_path, "audit", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    vacuumed, refusal, ran = [json.loads(line) for line in listed.stdout.splitlines()]
    for record in (vacuumed, refusal, ran):
        assert (record["actor"], record["actor_kind"]) == ("audit-tester", "cli")
    assert (ran["action"], ran["outcome"], ran["target"]) == ("run-batch", "succeeded", "meter_readings")
    assert ran["details"]["input"] == str(day) and ran["details"]["batch_id"]
    assert (refusal["action"], refusal["outcome"], refusal["target"]) == ("tables vacuum", "refused", None)
    assert "168 hours" in refusal["error"] and refusal["details"]["retain_hours"] == 1
    assert (vacuumed["outcome"], vacuumed["details"]["deleted"]) == ("succeeded", {"silver_readings": 0})

    table = _cli(tmp_path, "audit", "list", "--action", "tables vacuum", "--limit", "1")
    assert table.returncode == 0 and "audit-tester (cli)" in table.stdout and "succeeded" in table.stdout
    assert "refused" not in table.stdout and "run-batch" not in table.stdout
    none = _cli(tmp_path, "audit", "list", "--actor", "nobody", "--since", "2020-01-01")
    assert none.returncode == 0 and "No recorded actions match." in none.stdout
    naive = _cli(tmp_path, "audit", "list", "--since", "2020-01-01T10:00")
    assert naive.returncode == 1 and "no UTC offset" in naive.stderr
