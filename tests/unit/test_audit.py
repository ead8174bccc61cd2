"""The audit helpers against an in-memory metadata store: outcomes, refusals, a write that fails,
the stream's records, the OS user, and the named API keys of the settings."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from pathlib import Path

import pytest
import structlog
from fastapi import HTTPException

from app.api.dependencies import _check_key
from app.application import audit as audit_module
from app.application.audit import (
    StreamAudit,
    audit_trail,
    audited,
    cli_actor,
    default_actor,
    jsonable,
    os_user,
    parse_since,
    record_action,
    recorded_on_error,
)
from app.application.streaming import StreamMonitor, monitored
from app.domain.audit import Actor, AuditRecord
from app.domain.batches import StreamRecord
from app.domain.errors import ConfigurationError, MetadataStoreError, RunInProgressError
from app.infrastructure.settings import Settings, load_settings, parse_api_keys

OPS = Actor("ops", "api")


@dataclass
class FakeMetadata:
    """Keeps the audit records written; refuses writes while `down`."""

    records: list[AuditRecord] = field(default_factory=list)
    down: bool = False

    def record_audit(self, record: AuditRecord) -> int:
        if self.down:
            raise MetadataStoreError("the metadata database is down")
        self.records.append(record)
        return len(self.records)

    def list_audit(
        self, limit: int, *, action: str | None = None, actor: str | None = None, since: datetime | None = None
    ) -> list[AuditRecord]:
        return [r for r in reversed(self.records) if action in (None, r.action) and actor in (None, r.actor)][:limit]

    def record_stream(self, record: StreamRecord) -> None:
        pass


# --- audited -------------------------------------------------------------------------------------


def test_a_block_that_ends_is_recorded_as_succeeded_with_what_it_added() -> None:
    metadata = FakeMetadata()
    before = datetime.now(UTC)
    with audited(metadata, OPS, "tables vacuum", target="silver_readings", details={"retain_hours": 168}) as entry:  # type: ignore[arg-type]
        entry.details["deleted"] = {"silver_readings": 3}
    [record] = metadata.records
    assert (record.actor, record.actor_kind, record.action, record.target) == (
        "ops",
        "api",
        "tables vacuum",
        "silver_readings",
    )
    assert record.outcome == "succeeded" and record.error is None
    assert record.details["retain_hours"] == 168 and record.details["deleted"] == {"silver_readings": 3}
    assert record.details["duration_seconds"] >= 0 and before <= record.at <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("error", "outcome", "text"),
    [
        (ConfigurationError("--retain-hours is too short"), "refused", "--retain-hours is too short"),
        (RunInProgressError("run-1"), "refused", "run run-1 is in progress; start another when it has finished"),
        (MetadataStoreError("the database is down"), "failed", "the database is down"),
        (RuntimeError("boom"), "failed", "RuntimeError: boom"),
        (KeyboardInterrupt(), "failed", "KeyboardInterrupt"),
    ],
)
def test_an_error_is_recorded_as_refused_or_failed_and_goes_on(error: BaseException, outcome: str, text: str) -> None:
    metadata = FakeMetadata()
    with pytest.raises(type(error)), audited(metadata, OPS, "run-batch", target="feed"):  # type: ignore[arg-type]
        raise error
    [record] = metadata.records
    assert (record.outcome, record.error, record.target) == (outcome, text, "feed")


def test_a_block_may_say_it_failed_without_raising() -> None:
    metadata = FakeMetadata()
    with audited(metadata, OPS, "run-batch") as entry:  # type: ignore[arg-type]
        entry.failed("rule(s) of severity 'fail' failed")
    assert [(r.outcome, r.error) for r in metadata.records] == [("failed", "rule(s) of severity 'fail' failed")]


def test_without_an_actor_the_process_user_acts_as_the_platform() -> None:
    metadata = FakeMetadata()
    with audited(metadata, None, "tables optimize"):  # type: ignore[arg-type]
        pass
    [record] = metadata.records
    assert (record.actor, record.actor_kind) == (os_user(), "service") == (default_actor().name, "service")


def test_a_record_the_store_refuses_is_logged_and_the_action_stands() -> None:
    metadata = FakeMetadata(down=True)
    with structlog.testing.capture_logs() as logs, audited(metadata, OPS, "run-batch", target="feed") as entry:  # type: ignore[arg-type]
        entry.details["batch_id"] = "b1"
    [warning] = logs
    assert warning["event"] == "audit_not_recorded" and warning["log_level"] == "warning"
    assert (warning["action"], warning["actor"], warning["outcome"], warning["target"]) == (
        "run-batch",
        "ops",
        "succeeded",
        "feed",
    )
    assert "database is down" in warning["error"]
    assert record_action(metadata, OPS, "x", outcome="failed") is None  # type: ignore[arg-type]


def test_recorded_on_error_records_only_an_error() -> None:
    metadata = FakeMetadata()
    with recorded_on_error(metadata, OPS, "run-batch", target="feed"):  # type: ignore[arg-type]
        pass
    with pytest.raises(ConfigurationError), recorded_on_error(metadata, OPS, "run-batch", details={"input": "../x"}):  # type: ignore[arg-type]
        raise ConfigurationError("input_path leads outside the landing directory")
    [record] = metadata.records
    assert (record.outcome, record.details) == ("refused", {"input": "../x"})


def test_details_are_kept_as_json() -> None:
    class Color(Enum):
        RED = "red"

    value = {
        "path": Path("/in/a.csv"),
        "when": datetime(2025, 6, 1, tzinfo=UTC),
        "day": date(2025, 6, 1),
        "files": {"silver": (4, 1)},
        "tables": {"b", "a"},
        "color": Color.RED,
        1: None,
        "other": object,
    }
    assert jsonable(value) == {
        "path": "/in/a.csv",
        "when": "2025-06-01T00:00:00+00:00",
        "day": "2025-06-01",
        "files": {"silver": [4, 1]},
        "tables": ["a", "b"],
        "color": "red",
        "1": None,
        "other": str(object),
    }


# --- who -----------------------------------------------------------------------------------------


def test_the_cli_actor_is_the_os_user() -> None:
    assert cli_actor() == Actor(getpass.getuser(), "cli")


@pytest.mark.parametrize("error", [KeyError("getpwuid(): uid not found: 1000770000"), OSError("no user")])
def test_a_user_without_a_name_is_its_uid(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def nameless() -> str:
        raise error

    monkeypatch.setattr(audit_module.getpass, "getuser", nameless)
    assert os_user() == f"uid:{os.getuid()}"


def test_since_takes_a_time_with_offset_or_a_date() -> None:
    assert parse_since("2025-06-01T12:00:00+02:00") == datetime(2025, 6, 1, 10, tzinfo=UTC)
    assert parse_since("2025-06-01") == datetime(2025, 6, 1, tzinfo=UTC)
    with pytest.raises(ConfigurationError, match="no UTC offset"):
        parse_since("2025-06-01T12:00")
    with pytest.raises(ConfigurationError, match="not an ISO 8601 time"):
        parse_since("yesterday")
    with pytest.raises(ConfigurationError, match="--limit"):
        audit_trail(FakeMetadata(), limit=0)  # type: ignore[arg-type]


# --- a stream's records --------------------------------------------------------------------------


def test_a_stream_records_its_start_and_stop_through_its_monitor() -> None:
    metadata = FakeMetadata()
    audit = StreamAudit(metadata, Actor("alice", "cli"), "feed", {"trigger_seconds": 5})  # type: ignore[arg-type]
    monitor = StreamMonitor(metadata, "feed", trigger_seconds=5, audit=audit)  # type: ignore[arg-type]

    def failing_stream() -> None:
        with audit.until_started(), monitored(monitor):
            monitor.record.micro_batches, monitor.record.readings = 3, 144
            raise RuntimeError("broker gone")

    with pytest.raises(RuntimeError):
        failing_stream()
    start, stop = metadata.records
    assert (start.action, start.outcome, start.target) == ("stream start", "succeeded", "feed")
    assert start.details == {"run_id": monitor.record.run_id, "trigger_seconds": 5}
    assert (stop.action, stop.outcome, stop.error) == ("stream stop", "failed", "RuntimeError: broker gone")
    assert stop.details == {"run_id": monitor.record.run_id, "micro_batches": 3, "readings": 144}
    assert (stop.actor, stop.actor_kind) == ("alice", "cli")


def test_a_stream_stopped_on_request_succeeded_and_its_compactions_are_its_own() -> None:
    metadata = FakeMetadata()
    audit = StreamAudit(metadata, Actor("alice", "cli"), "feed")  # type: ignore[arg-type]
    monitor = StreamMonitor(metadata, "feed", trigger_seconds=5, audit=audit)  # type: ignore[arg-type]
    with audit.until_started(), monitored(monitor):
        audit.compacted({"silver_readings": (9, 1)}, {"silver_readings": 0})
    start, compact, stop = metadata.records
    assert (compact.action, compact.actor, compact.actor_kind) == ("stream compact", "alice", "stream")
    assert compact.details == {
        "run_id": start.details["run_id"],
        "files": {"silver_readings": [9, 1]},
        "vacuumed": {"silver_readings": 0},
    }
    assert (stop.outcome, stop.error) == ("succeeded", None)


def test_a_stream_refused_before_it_starts_is_a_refused_start() -> None:
    metadata = FakeMetadata()
    audit = StreamAudit(metadata, Actor("alice", "cli"), "feed", {"max_files": 0})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError), audit.until_started():
        raise ConfigurationError("--max-files must be at least 1")
    [record] = metadata.records
    assert (record.action, record.outcome, record.details) == ("stream start", "refused", {"max_files": 0})
    assert record.error == "--max-files must be at least 1" and audit.run_id is None


def test_a_stream_record_written_after_start_is_not_a_second_start() -> None:
    metadata = FakeMetadata()
    audit = StreamAudit(metadata, None, "feed")  # type: ignore[arg-type]
    record = StreamRecord(
        run_id="r1",
        source="feed",
        state="running",
        host="h",
        pid=1,
        trigger_seconds=1,
        started_at=datetime.now(UTC) - timedelta(minutes=1),
        heartbeat_at=datetime.now(UTC),
    )

    def failing_stream() -> None:
        with audit.until_started():
            audit.started("r1")
            record.state, record.error = "failed", "RuntimeError: x"
            audit.stopped(record)
            raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        failing_stream()
    assert [(r.action, r.outcome, r.actor_kind) for r in metadata.records] == [
        ("stream start", "succeeded", "service"),
        ("stream stop", "failed", "service"),
    ]


# --- named API keys ------------------------------------------------------------------------------


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_api_keys_are_named_pairs_or_a_json_object() -> None:
    assert parse_api_keys(" ops = k1 , billing=k2==,") == {"ops": "k1", "billing": "k2=="}
    assert parse_api_keys('{"ops": "k1", "billing.team@x": "k2"}') == {"ops": "k1", "billing.team@x": "k2"}
    assert parse_api_keys("") == parse_api_keys(None) == {}
    settings = _settings(api_key="single", api_keys="ops=k1,billing=k2")
    assert {name: key.get_secret_value() for name, key in settings.named_api_keys.items()} == {
        "api-key": "single",
        "ops": "k1",
        "billing": "k2",
    }
    assert sorted(settings.secret_values()) == ["k1", "k2", "single"]
    assert "k1" not in repr(settings) and "single" not in repr(settings)
    renamed = _settings(api_key="single", api_key_name="deploy-bot")
    assert list(renamed.named_api_keys) == ["deploy-bot"]


@pytest.mark.parametrize(
    ("keys", "single", "message"),
    [
        ("ops=s3cret-1,ops=s3cret-2", None, "ops are given more than once"),
        ("ops", None, "expected name=KEY pairs"),
        ("bad name=s3cret-1", None, "invalid key name 'bad name'"),
        ("a=s3cret-1,b=s3cret-1", None, "the keys named a, b are the same key"),
        ("a=", None, "the key named 'a' is empty"),
        ('{"a": 1}', None, "the key named 'a' is empty or not text"),
        ('{"a": "s3cret-1"', None, "not a valid JSON object"),
        ("api-key=s3cret-1", "s3cret-single", "the name of API_KEY"),
        ("a=s3cret-single", "s3cret-single", "is API_KEY's key"),
    ],
)
def test_bad_api_keys_are_refused_naming_the_names_never_the_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keys: str, single: str | None, message: str
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("API_KEYS", keys)
    if single is not None:
        monkeypatch.setenv("API_KEY", single)
    else:
        monkeypatch.delenv("API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="API_KEYS") as refused:
        load_settings()
    assert message in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_a_request_is_named_by_the_key_it_used() -> None:
    settings = _settings(api_key="single", api_keys="ops=k1,billing=k2")
    assert [_check_key(settings, key) for key in ("single", "k1", "k2")] == ["api-key", "ops", "billing"]
    for wrong in (None, "", "k3", "K1", "k1 "):
        with pytest.raises(HTTPException) as refused:
            _check_key(settings, wrong)
        assert refused.value.status_code == 401
    with pytest.raises(HTTPException) as disabled:
        _check_key(_settings(), "k1")
    assert disabled.value.status_code == 403
