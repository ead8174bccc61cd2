"""`batches undo` and `tables restore` in local mode, on real Delta tables and a real SQLite file.

An undone batch must leave every table as a lake that never saw it has them: each test builds
that second lake by running only the other batches (same files, same batch ids) and compares
bronze, quarantine, silver and both gold tables row by row.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from app.application.lake_ops import optimize_tables, vacuum_tables
from app.application.ports import ChangeCounts
from app.application.runner import pipeline_under_lock, replay_quarantine, run_batch
from app.application.undo import UndoPlan, restore_table, undo_batch
from app.domain.audit import TABLES_RESTORE, UNDO, Actor
from app.domain.errors import ConfigurationError, PlatformError, TableStoreError
from app.domain.schemas import GOLD_HOURLY_PORTFOLIO_LOAD, TableSpec
from app.infrastructure.settings import Settings
from app.wiring import LocalPlatform, open_platform
from tests.integration.conftest import NOW, read_table, write_csv

CONFIG = '[sources.feed]\npath = "in"\nunit = "kWh"\ninterval_minutes = 60\n'
ALICE = Actor("alice", "cli")
TABLES = (
    "bronze_feed",
    "quarantine_readings",
    "silver_readings",
    "gold_daily_meter_energy",
    "gold_hourly_portfolio_load",
)


def _hours(meter: str, value: float, day: int = 1, hours: range = range(24)) -> list[str]:
    return [f"{meter},2025-06-{day:02d}T{h:02d}:00Z,{value}" for h in hours]


#: The batches the tests combine, by batch id: each one file's rows.
FILES: dict[str, list[str]] = {
    # Meters A and D, day 1.
    "b1": _hours("A", 1.0) + _hours("D", 2.0),
    # Meter C, new, with hour 5 missing (estimated) and a row no rule lets through (quarantined);
    # meter D's hours 0-5 read again with other values (updates of b1's rows).
    "b2": _hours("C", 3.0, hours=range(5))
    + _hours("C", 3.5, hours=range(6, 24))
    + ["C,2025-06-01Tnope,1"]
    + _hours("D", 9.0, hours=range(6)),
    # Meter A's hours 10-20 read again and meter B's day 2: none of b2's meters, some of its hours.
    "b3": _hours("A", 5.0, hours=range(10, 21)) + _hours("B", 4.0, day=2),
    # Meter D's day 2 with its first hour missing: it builds on b2's rows of meter D.
    "b4": _hours("D", 6.0, day=2, hours=range(1, 24)),
}


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Any]:
    """Opens lakes under `tmp_path` by name, all reading the same input files."""
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    for batch_id, rows in FILES.items():
        write_csv(tmp_path / "in" / f"{batch_id}.csv", rows, header="meter_id,timestamp,value")
    opened: list[Any] = []

    def open_lake(name: str) -> LocalPlatform:
        settings = Settings(data_dir=tmp_path / name, _env_file=None)  # type: ignore[call-arg]
        context = open_platform(settings)
        opened.append(context)
        return context.__enter__()

    yield open_lake
    for context in reversed(opened):
        context.__exit__(None, None, None)


def _run(platform: LocalPlatform, batch_id: str, *, as_id: str | None = None) -> Any:
    root = Path(platform.settings.data_dir).parent
    result = run_batch(
        platform,
        source_name="feed",
        config_file=root / "sources.toml",
        input_path=str(root / "in" / f"{batch_id}.csv"),
        now=NOW,
        batch_id=as_id or batch_id,
    )
    assert result.status == "succeeded", result.error
    return result


def _rows(platform: LocalPlatform, table: str) -> list[dict[str, Any]]:
    """A table's rows, sorted, floats rounded (sums over rows may differ in their last bits)."""
    if not platform.store.exists(table):
        return []
    rows = read_table(platform, table).to_pylist()
    return [{k: round(v, 9) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def _assert_same_lake(undone: LocalPlatform, control: LocalPlatform) -> None:
    for table in TABLES:
        assert _rows(undone, table) == _rows(control, table), table


def _versions(platform: LocalPlatform) -> dict[str, int]:
    return {t: platform.store.history(t, limit=1)[0].version for t in platform.store.tables()}


def test_undo_of_a_middle_batch_leaves_the_lake_of_the_other_batches_and_its_file_can_come_back(lake: Any) -> None:
    undone, control = lake("undone"), lake("control")
    for batch_id in ("b1", "b2", "b3"):
        _run(undone, batch_id)
    for batch_id in ("b1", "b3"):
        _run(control, batch_id)
    silver = _rows(undone, "silver_readings")
    assert {r["estimation_method"] for r in silver if r["meter_id"] == "C"} == {None, "linear"}
    assert [r["energy_kwh"] for r in silver if r["meter_id"] == "D"][:6] == [9.0] * 6
    assert _rows(undone, "quarantine_readings") != []
    announced: list[UndoPlan] = []

    result = undo_batch(undone, "b2", announce=announced.append, actor=ALICE)

    assert [b.batch_id for b in announced[0].batches] == ["b2"]
    assert result.undone == ["b2"] and result.undo_id.startswith("undo_")
    assert result.tables["silver_readings"].deleted == 24  # meter C's 23 reads and 1 estimate
    assert result.tables["silver_readings"].updated == 6  # meter D's hours 0-5, back to b1's reads
    assert result.tables["quarantine_readings"].deleted == 1
    assert result.files == [str(Path(undone.settings.data_dir).parent / "in" / "b2.csv")]
    _assert_same_lake(undone, control)
    # The undo is a batch of its own, b2 is recorded as undone by it, and the trail has both.
    b2, undo = undone.metadata.get_batch("b2"), undone.metadata.get_batch(result.undo_id)
    assert b2 is not None and undo is not None
    assert (b2.status, b2.undone_by) == ("succeeded", result.undo_id)
    assert (undo.kind, undo.status, undo.source) == ("undo", "succeeded", "feed")
    [record] = undone.metadata.list_audit(1, action=UNDO)
    assert (record.actor, record.outcome, record.target) == ("alice", "succeeded", "b2")
    assert record.details["undone"] == ["b2"] and record.details["undo_batch_id"] == result.undo_id
    history = undone.store.history("silver_readings", limit=1)[0]
    assert (history.batch_id, history.operation) == (result.undo_id, "MERGE")

    # b2's file is taken again, not skipped, and ends where a lake that ran it last ends.
    again = _run(undone, "b2", as_id="b2-again")
    assert again.skipped_files == []
    _run(control, "b2", as_id="b2-again")
    _assert_same_lake(undone, control)
    with pytest.raises(ConfigurationError, match="b2 was undone already, by batch undo_"):
        undo_batch(undone, "b2")


def test_undo_refuses_naming_the_batches_that_depend_on_it_and_cascades_newest_first(lake: Any) -> None:
    undone, control = lake("undone"), lake("control")
    for batch_id in ("b1", "b2", "b3", "b4"):
        _run(undone, batch_id)
    for batch_id in ("b1", "b3"):
        _run(control, batch_id)
    before = {t: _rows(undone, t) for t in TABLES}
    versions = _versions(undone)

    with pytest.raises(ConfigurationError) as refused:
        undo_batch(undone, "b2", actor=ALICE)
    message = str(refused.value)
    assert "batch b2 cannot be undone alone: later batches depend on it: b4 (wrote meter(s) D" in message
    assert "b3" not in message and "--cascade" in message
    assert _versions(undone) == versions and {t: _rows(undone, t) for t in TABLES} == before
    [record] = undone.metadata.list_audit(1, action=UNDO)
    assert (record.outcome, record.target) == ("refused", "b2") and "b4" in (record.error or "")
    assert [b.batch_id for b in undone.metadata.list_batches(limit=10) if b.kind == "undo"] == []

    announced: list[list[str]] = []
    result = undo_batch(
        undone, "b2", cascade=True, announce=lambda plan: announced.append([b.batch_id for b in plan.batches])
    )

    assert announced == [["b4", "b2"]] and result.undone == ["b4", "b2"]
    _assert_same_lake(undone, control)
    assert {b.batch_id: b.undone_by for b in undone.metadata.list_batches(limit=10) if b.kind == "ingest"} == {
        "b1": None,
        "b2": result.undo_id,
        "b3": None,
        "b4": result.undo_id,
    }
    seen = undone.reader.sha256_of(Path(undone.settings.data_dir).parent / "in" / "b4.csv")
    assert undone.metadata.successful_checksums([seen]) == {}


def test_undos_out_of_order_end_where_a_lake_of_the_batches_left_ends(lake: Any) -> None:
    undone, first, only_b1 = lake("undone"), lake("first"), lake("only_b1")
    for batch_id in ("b1", "b2", "b3", "b4"):
        _run(undone, batch_id)
    for batch_id in ("b1", "b2", "b4"):
        _run(first, batch_id)
    _run(only_b1, "b1")

    # b3 (meters A and B) goes first, though b4 came after it: b4's hours of June 2nd had b3's
    # meter B in them before b4, which the undo of b4 must not take for rows to keep.
    undo_batch(undone, "b3")
    _assert_same_lake(undone, first)
    undo_batch(undone, "b2", cascade=True)
    _assert_same_lake(undone, only_b1)


def test_an_undo_that_fails_is_rolled_back_and_changes_nothing(lake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = lake("lake")
    for batch_id in ("b1", "b2", "b3"):
        _run(platform, batch_id)
    before = {t: _rows(platform, t) for t in TABLES}
    store = platform.store
    merge = store.merge_changes

    def failing(spec: TableSpec, frame: Any, **options: Any) -> Any:
        if spec.name == GOLD_HOURLY_PORTFOLIO_LOAD.name:  # after bronze, quarantine, silver and daily gold
            raise TableStoreError("disk full")
        return merge(spec, frame, **options)

    monkeypatch.setattr(store, "merge_changes", failing)
    with pytest.raises(TableStoreError, match="disk full"):
        undo_batch(platform, "b2")

    assert {t: _rows(platform, t) for t in TABLES} == before
    [undo] = [b for b in platform.metadata.list_batches(limit=10) if b.kind == "undo"]
    assert undo.status == "failed" and "rolled back" in (undo.error or "")
    b2 = platform.metadata.get_batch("b2")
    assert b2 is not None and b2.undone_by is None
    monkeypatch.undo()
    assert undo_batch(platform, "b2").undone == ["b2"]


def test_undo_brings_back_no_row_something_else_deleted_since(lake: Any) -> None:
    platform = lake("lake")
    _run(platform, "b1")
    _run(platform, "b2")
    # An untagged delete, as retention or a meter's erasure makes: meter D leaves silver.
    DeltaTable(platform.store.location("silver_readings")).delete("meter_id = 'D'")

    undo_batch(platform, "b2")

    silver = _rows(platform, "silver_readings")
    assert {r["meter_id"] for r in silver} == {"A"} and len(silver) == 24
    # Gold keeps the day silver had rows for before b2 (retention can keep gold longer); C's goes.
    daily = _rows(platform, "gold_daily_meter_energy")
    assert sorted(r["meter_id"] for r in daily) == ["A", "D"]


def test_undo_of_a_replay_puts_the_quarantine_back_and_the_replayed_batch_waits_for_it(
    lake: Any, tmp_path: Path
) -> None:
    undone, control = lake("undone"), lake("control")
    # Meter E's hour 5 reads 2,000 kWh: above the default 1,000 kW, quarantined (and estimated).
    write_csv(
        tmp_path / "in" / "e.csv",
        [*_hours("E", 1.0, hours=range(5)), "E,2025-06-01T05:00Z,2000", *_hours("E", 1.0, hours=range(6, 24))],
        header="meter_id,timestamp,value",
    )
    for platform in (undone, control):
        _run(platform, "b1")
        _run(platform, "e")
    (tmp_path / "raised.toml").write_text(CONFIG + "max_demand_kw = 5000\n", encoding="utf-8")
    replay = replay_quarantine(undone, batch_id="e", config_file=tmp_path / "raised.toml", now=NOW)
    assert replay.status == "succeeded" and replay.batch_id is not None
    assert [r["energy_kwh"] for r in _rows(undone, "silver_readings") if r["meter_id"] == "E"][5] == 2000.0
    assert _rows(undone, "quarantine_readings") == []

    with pytest.raises(ConfigurationError, match=f"depend on it: {replay.batch_id} \\(wrote meter\\(s\\) E"):
        undo_batch(undone, "e")
    result = undo_batch(undone, replay.batch_id)

    assert result.tables["quarantine_readings"] == ChangeCounts(inserted=1, updated=0, deleted=0)
    _assert_same_lake(undone, control)
    assert undo_batch(undone, "e").undone == ["e"]  # the replay is undone: nothing depends on e now


def _micro_batch(platform: LocalPlatform, name: str, rows: list[str], watermark: datetime | None) -> Any:
    """A stream's micro-batch of one file, as a folder stream runs it: under the lock, of kind
    `stream`, judged against the stream's watermark."""
    root = Path(platform.settings.data_dir).parent
    path = write_csv(root / "in" / f"{name}.csv", rows, header="meter_id,timestamp,value")
    source = platform.source("feed", root / "sources.toml")
    with platform.lock(f"stream {name}") as lock:
        result = pipeline_under_lock(platform, lock, None).run(
            source, [path], kind="stream", now=NOW, batch_id=name, watermark=watermark
        )
    assert result.status == "succeeded", result.error
    return result


def test_a_micro_batch_that_judged_reads_late_against_the_undone_batchs_watermark_goes_with_it(lake: Any) -> None:
    undone, control = lake("undone"), lake("control")
    for platform in (undone, control):
        _run(platform, "b1")
    # s1 reads meter F on June 20th: the stream's watermark moves there, and s2's reads of meter G
    # on June 1st are late (more than the allowed 7 days before it); s3's of meter H are not.
    s1 = _micro_batch(undone, "s1", _hours("F", 1.0, day=20), watermark=None)
    s2 = _micro_batch(undone, "s2", _hours("G", 1.0), watermark=s1.latest_interval)
    assert s2.rule_counts == {"late_beyond_horizon": 24}
    s3 = _micro_batch(undone, "s3", _hours("H", 1.0, day=18), watermark=s1.latest_interval)
    assert s3.rule_counts == {}

    with pytest.raises(
        ConfigurationError, match="depend on it: s2 \\(judged 24 read\\(s\\) late_beyond_horizon against"
    ):
        undo_batch(undone, "s1")
    assert undo_batch(undone, "s1", cascade=True).undone == ["s2", "s1"]

    _micro_batch(control, "s3", _hours("H", 1.0, day=18), watermark=None)
    _assert_same_lake(undone, control)


def test_an_undo_past_a_vacuum_stops_with_the_tables_error_and_changes_nothing(lake: Any) -> None:
    platform = lake("lake")
    for batch_id in ("b1", "b2", "b3"):
        _run(platform, batch_id)
    vacuum_tables(platform, retain_hours=0, force=True)  # the files of the versions before b2 go
    before = {t: _rows(platform, t) for t in TABLES}

    with pytest.raises(PlatformError, match="silver_readings: version 0 cannot be read \\(a vacuum may have"):
        undo_batch(platform, "b2")

    assert {t: _rows(platform, t) for t in TABLES} == before
    b2 = platform.metadata.get_batch("b2")
    assert b2 is not None and b2.undone_by is None


def test_undo_refuses_what_it_cannot_undo(lake: Any) -> None:
    platform = lake("lake")
    _run(platform, "b1")
    with pytest.raises(ConfigurationError, match="there is no batch 'nope'"):
        undo_batch(platform, "nope")
    with pytest.raises(ConfigurationError, match="invalid batch id"):
        undo_batch(platform, "../b1")
    result = undo_batch(platform, "b1")
    with pytest.raises(ConfigurationError, match="is an undo; an undo cannot be undone"):
        undo_batch(platform, result.undo_id)
    # The first batch's undo leaves its tables empty, not gone.
    assert all(platform.store.count(t) == 0 for t in TABLES if platform.store.exists(t))


def test_restore_is_refused_while_another_layer_would_disagree_and_allowed_with_force(lake: Any) -> None:
    platform = lake("lake")
    _run(platform, "b1")
    silver_b1 = platform.store.history("silver_readings", limit=1)[0].version
    rows_b1 = read_table(platform, "silver_readings")
    _run(platform, "b2")
    before = _versions(platform)

    with pytest.raises(ConfigurationError) as refused:
        restore_table(platform, "silver_readings", version=silver_b1, actor=ALICE)
    assert str(refused.value) == (
        f"restoring silver_readings to version {silver_b1} would leave the layers disagreeing: batch b2 (its "
        "rows stay in bronze_feed, gold_daily_meter_energy, gold_hourly_portfolio_load, quarantine_readings). "
        "Undo a batch in every table with `energy-platform batches undo BATCH_ID`, or add --force to restore "
        "this table alone"
    )
    assert _versions(platform) == before
    [record] = platform.metadata.list_audit(1, action=TABLES_RESTORE)
    assert (record.outcome, record.target) == ("refused", "silver_readings")

    result = restore_table(platform, "silver_readings", version=silver_b1, force=True, actor=ALICE)

    assert read_table(platform, "silver_readings") == rows_b1
    assert [d.batch_id for d in result.disagreements] == ["b2"] and result.from_version == before["silver_readings"]
    latest = platform.store.history("silver_readings", limit=1)[0]
    assert (latest.operation, latest.batch_id, latest.restored_to) == ("RESTORE", result.restore_id, silver_b1)
    [record] = platform.metadata.list_audit(1, action=TABLES_RESTORE)
    assert record.outcome == "succeeded" and record.details["disagreements"] == {
        "b2": ["bronze_feed", "gold_daily_meter_energy", "gold_hourly_portfolio_load", "quarantine_readings"]
    }
    # Going back to b2's version brings b2 back in silver, where the other layers have it: no disagreement.
    back = restore_table(platform, "silver_readings", version=before["silver_readings"])
    assert back.disagreements == [] and platform.store.count("silver_readings") == 24 * 3  # A, C, D


def test_restore_of_commits_of_no_batch_needs_no_force_and_bad_versions_are_named(lake: Any) -> None:
    platform = lake("lake")
    _run(platform, "b1")
    _run(platform, "b3")
    rows = read_table(platform, "silver_readings")
    compacted = platform.store.history("silver_readings", limit=1)[0].version
    optimize_tables(platform, name="silver_readings", zorder=["meter_id"])

    result = restore_table(platform, "silver_readings", version=compacted)

    assert result.disagreements == [] and read_table(platform, "silver_readings") == rows
    with pytest.raises(ConfigurationError, match="has no version 99; it has versions 0 to"):
        restore_table(platform, "silver_readings", version=99)
    with pytest.raises(ConfigurationError, match="there is no table 'silver'"):
        restore_table(platform, "silver", version=0)
    now = platform.store.history("silver_readings", limit=1)[0].version
    with pytest.raises(ConfigurationError, match=f"at version {now} already"):
        restore_table(platform, "silver_readings", version=now)


def test_a_restore_past_an_undone_batch_and_its_undo_needs_no_force(lake: Any) -> None:
    platform = lake("lake")
    _run(platform, "b1")
    silver_b1 = platform.store.history("silver_readings", limit=1)[0].version
    rows_b1 = read_table(platform, "silver_readings")
    _run(platform, "b2")
    undo = undo_batch(platform, "b2").undo_id
    undone = platform.store.history("silver_readings", limit=1)[0].version

    # b2 and the undo of it go together: the other layers hold both, so neither has b2's rows.
    assert restore_table(platform, "silver_readings", version=silver_b1).disagreements == []
    assert read_table(platform, "silver_readings") == rows_b1
    # Back to between b2 and its undo would bring b2's rows back in silver alone.
    with pytest.raises(ConfigurationError, match=r"batch b2 \(its rows would come back, while they are missing from"):
        restore_table(platform, "silver_readings", version=undone - 1)
    assert restore_table(platform, "silver_readings", version=undone).disagreements == []
    assert platform.store.history("silver_readings", limit=2)[1].batch_id != undo  # the restores are tagged apart


def test_the_command_line_undoes_with_cascade_and_restores(lake: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import app

    platform = lake("lake")
    for batch_id in ("b1", "b2"):
        _run(platform, batch_id)
    before_b3 = str(platform.store.history("silver_readings", limit=1)[0].version)
    for batch_id in ("b3", "b4"):
        _run(platform, batch_id)
    env = {"DATA_DIR": str(platform.settings.data_dir)}
    runner = CliRunner()

    refused = runner.invoke(app, ["batches", "undo", "b2"], env=env)
    assert refused.exit_code == 1
    assert "error: batch b2 cannot be undone alone: later batches depend on it: b4" in refused.output

    done = runner.invoke(app, ["batches", "undo", "b2", "--cascade"], env=env)
    assert done.exit_code == 0, done.output
    out = done.output
    plan = out.index("Undoing batch b2 and the 1 later batch(es) that depend on it:")
    assert plan < out.index("  b4 (ingest") < out.index("  b2 (ingest") < out.index("Undo undo_")
    assert f"can be ingested again: {tmp_path / 'in' / 'b4.csv'}" in out
    listed = runner.invoke(app, ["batches", "list"], env=env)
    assert listed.output.count("undone") == 2 and " undo " in listed.output
    undo_id = out[out.index("Undo undo_") + 5 :].split(":")[0]
    assert "undone by batch undo_" in runner.invoke(app, ["batches", "show", "b2"], env=env).output
    assert "undo of batch(es) b2, b4" in runner.invoke(app, ["batches", "show", undo_id], env=env).output

    # Back to before b3: b3's rows would go from silver alone.
    restore = ["tables", "restore", "silver_readings", "--version", before_b3]
    refused = runner.invoke(app, restore, env=env)
    assert refused.exit_code == 1 and "would leave the layers disagreeing: batch b2 " in refused.output
    assert "; batch b3 (its rows stay in bronze_feed" in refused.output
    forced = runner.invoke(app, [*restore, "--force"], env=env)
    assert forced.exit_code == 0, forced.output
    assert f"silver_readings: restored to version {before_b3}" in forced.output
    assert "forced: batch b3 (its rows stay in bronze_feed" in forced.output
