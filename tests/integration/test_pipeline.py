"""The batch pipeline end to end on real Delta tables in tmp_path and a real SQLite metadata file."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from app.application.runner import run_batch
from app.domain.rules import RULE_NAMES, SERIES_RULES
from app.wiring import LocalPlatform
from tests.integration.conftest import NOW, read_table, write_csv

GOLD = ("gold_daily_meter_energy", "gold_hourly_portfolio_load")


def _half_hours(day: date, meter: str = "M1", value: str = "0.5") -> list[str]:
    """Every half-hour of a London local day as ISO timestamps with the local offset."""
    from zoneinfo import ZoneInfo

    london = ZoneInfo("Europe/London")
    start = datetime.combine(day, datetime.min.time(), london).astimezone(ZoneInfo("UTC"))
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), london).astimezone(ZoneInfo("UTC"))
    rows, t = [], start
    while t < end:
        rows.append(f"{meter},{t.astimezone(london).isoformat()},{value},kWh")
        t += timedelta(minutes=30)
    return rows


@pytest.mark.slow
def test_bundled_sample_reconciles_and_quarantines_every_bad_row(platform: LocalPlatform) -> None:
    result = run_batch(platform, now=NOW)

    assert result.status == "succeeded", result.error
    rec = result.reconciliation
    assert rec is not None and rec.balanced
    assert rec.rows_read == rec.rows_accepted + rec.rows_quarantined + rec.duplicates_replaced
    assert rec.duplicates_replaced > 0
    silver = read_table(platform, "silver_readings")
    assert silver.num_rows == rec.rows_accepted + rec.rows_estimated == rec.silver_inserted
    estimated = silver.filter(pc.is_valid(silver["estimation_method"]))
    assert estimated.num_rows == rec.rows_estimated == sum(result.estimates.values()) > 0
    assert set(estimated["quality_flag"].to_pylist()) == {"estimated"}
    quarantine = read_table(platform, "quarantine_readings")
    assert quarantine.num_rows == rec.rows_quarantined
    assert set(result.rule_counts) <= set(RULE_NAMES) | set(SERIES_RULES)
    assert {"timestamp_in_dst_gap", "unit_unknown", "negative_import", "value_unparseable"} <= set(result.rule_counts)
    # Every quarantined row points at the line of the file it came from, as received.
    for row in quarantine.to_pylist():
        line = Path(row["source_file"]).read_text(encoding="utf-8").splitlines()[row["line_number"] - 1]
        raw = json.loads(row["raw_record"])
        assert raw["timestamp"] in line and raw["meter_id"] in line
    # Meter ids appear once per interval and direction.
    keys = silver.select(["meter_id", "interval_start_utc", "direction"])
    assert keys.group_by(keys.column_names).aggregate([]).num_rows == silver.num_rows
    # Bronze keeps every parsed row as strings, with lineage.
    bronze = DeltaTable(platform.store.location("bronze_meter_readings")).to_pyarrow_table()
    assert bronze.num_rows == rec.rows_read
    assert bronze.schema.field("value").type == "string"
    assert set(bronze.column_names) >= {"batch_id", "source", "source_file", "line_number", "ingested_at"}
    # The spring-forward day has 46 half-hours in London, the others 48.
    daily = read_table(platform, "gold_daily_meter_energy").to_pandas()
    spring = daily[daily.local_date == date(2025, 3, 30)]
    assert set(spring.expected_interval_count) == {46}
    assert set(daily[daily.local_date == date(2025, 3, 29)].expected_interval_count) == {48}
    # MTR-0007 has a gap in April: its completeness drops below 1 on those days only.
    gap = daily[(daily.meter_id == "MTR-0007") & (daily.completeness < 1)]
    assert sorted(gap.local_date) == [date(2025, 4, 10), date(2025, 4, 11)]
    # Gold energy equals silver energy: nothing lost or double counted on the way.
    assert daily.energy_kwh.sum() == pytest.approx(pc.sum(silver["energy_kwh"]).as_py(), rel=1e-9)
    hourly = read_table(platform, "gold_hourly_portfolio_load")
    assert pc.sum(hourly["energy_kwh"]).as_py() == pytest.approx(pc.sum(silver["energy_kwh"]).as_py(), rel=1e-9)
    assert pc.max(hourly["meter_count"]).as_py() == 36


@pytest.mark.slow
def test_rerun_skips_ingested_files_and_forced_rerun_changes_nothing(platform: LocalPlatform) -> None:
    first = run_batch(platform, now=NOW)
    before = {name: read_table(platform, name) for name in ("silver_readings", *GOLD)}

    skipped = run_batch(platform, now=NOW)
    assert skipped.batch_id is None and len(skipped.skipped_files) == 2

    forced = run_batch(platform, force=True, now=NOW)
    assert forced.status == "succeeded"
    assert forced.reconciliation is not None and first.reconciliation is not None
    assert (
        forced.reconciliation.silver_unchanged
        == first.reconciliation.rows_accepted + first.reconciliation.rows_estimated
    )
    assert forced.reconciliation.silver_inserted == forced.reconciliation.silver_updated == 0
    for name, table in before.items():
        assert read_table(platform, name).equals(table), name
    batches = platform.metadata.list_batches()
    assert [b.status for b in batches] == ["succeeded", "succeeded"]


def test_later_batch_replaces_a_read_and_gold_matches_a_full_recompute(platform: LocalPlatform, tmp_path: Path) -> None:
    day = date(2025, 6, 10)
    first = write_csv(tmp_path / "in" / "day.csv", _half_hours(day) + _half_hours(day, meter="M2"))
    assert run_batch(platform, input_path=str(first), now=NOW).status == "succeeded"
    correction = write_csv(tmp_path / "in" / "fix.csv", ["M1,2025-06-10T12:00:00+01:00,2.5,kWh"])

    result = run_batch(platform, input_path=str(correction), now=NOW)

    assert result.reconciliation is not None
    assert (result.reconciliation.silver_updated, result.reconciliation.silver_inserted) == (1, 0)
    daily = {(r["meter_id"], r["local_date"]): r for r in read_table(platform, "gold_daily_meter_energy").to_pylist()}
    assert daily[("M1", day)]["energy_kwh"] == pytest.approx(47 * 0.5 + 2.5)
    assert daily[("M1", day)]["peak_demand_kw"] == pytest.approx(5.0)
    assert daily[("M2", day)]["energy_kwh"] == pytest.approx(48 * 0.5)
    hourly = {
        r["hour_utc"].hour: r["energy_kwh"] for r in read_table(platform, "gold_hourly_portfolio_load").to_pylist()
    }
    assert hourly[11] == pytest.approx(0.5 + 2.5 + 1.0)  # 12:00 BST = 11:00 UTC


def test_both_dst_transitions_keep_every_interval(platform: LocalPlatform, tmp_path: Path) -> None:
    spring, autumn = date(2025, 3, 30), date(2025, 10, 26)
    path = write_csv(tmp_path / "dst.csv", _half_hours(spring) + _half_hours(autumn))

    result = run_batch(platform, input_path=str(path), now=NOW)

    assert result.status == "succeeded" and result.rule_counts == {}
    daily = {r["local_date"]: r for r in read_table(platform, "gold_daily_meter_energy").to_pylist()}
    assert (daily[spring]["interval_count"], daily[spring]["expected_interval_count"]) == (46, 46)
    assert (daily[autumn]["interval_count"], daily[autumn]["expected_interval_count"]) == (50, 50)
    assert daily[autumn]["energy_kwh"] == pytest.approx(25.0)  # the repeated hour is real energy
    assert daily[spring]["completeness"] == daily[autumn]["completeness"] == 1.0


def test_naive_local_times_use_the_source_zone_and_quarantine_the_repeated_hour(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    config = tmp_path / "sources.toml"
    config.write_text(
        """
[sources.berlin_meters]
path = "berlin/*.csv"
delimiter = ";"
timestamp_format = "%d.%m.%Y %H:%M"
timestamp_timezone = "Europe/Berlin"
series_timezone = "Europe/Berlin"
interval_minutes = 60
unit = "Wh"
[sources.berlin_meters.columns]
meter_id = "zaehler"
timestamp = "zeit"
value = "wert"
""",
        encoding="utf-8",
    )
    rows = ["B1;26.10.2025 01:00;1000", "B1;26.10.2025 02:00;1000", "B1;26.10.2025 02:00;1000", "B1;30.03.2025 02:00;5"]
    write_csv(tmp_path / "berlin" / "a.csv", rows, header="zaehler;zeit;wert")

    result = run_batch(platform, source_name="berlin_meters", config_file=config, now=NOW)

    assert result.status == "succeeded"
    # 26 October has 25 hours and one read: 24 without one. The hour before it (local
    # midnight, 22:00 UTC) is flat-filled; the 23 after it are too long for flat fill and
    # have no history for like-day, so they stay missing.
    assert result.rule_counts == {"timestamp_ambiguous": 2, "timestamp_in_dst_gap": 1, "missing_intervals": 24}
    silver = read_table(platform, "silver_readings").to_pylist()
    assert [(r["interval_start_utc"].isoformat(), r["energy_kwh"], r["estimation_method"]) for r in silver] == [
        ("2025-10-25T22:00:00+00:00", 1.0, "flat"),
        ("2025-10-25T23:00:00+00:00", 1.0, None),
    ]


def test_a_changed_series_zone_updates_rows_whose_local_day_moves(platform: LocalPlatform, tmp_path: Path) -> None:
    """Merges look only at the batch's local days (±1): a row whose stored day differs by one is still found."""
    from app.application.pipeline import BatchPipeline
    from app.domain.sources import builtin_meter_readings
    from app.infrastructure.logging import get_logger

    path = write_csv(tmp_path / "noon.csv", ["M1,2025-06-10T12:00:00Z,0.5,kWh"])
    pipeline = BatchPipeline(
        store=platform.store,
        metadata=platform.metadata,
        reader=platform.reader,
        execution_mode="local",
        logger=get_logger(),
    )
    results = []
    for zone in ("UTC", "Pacific/Kiritimati"):  # UTC+14: noon UTC is 02:00 the next local day
        source = builtin_meter_readings(str(path)).model_copy(update={"series_timezone": zone})
        results.append(pipeline.run(source, [path], force=True, now=NOW))

    assert [r.status for r in results] == ["succeeded", "succeeded"]
    assert results[1].reconciliation is not None and results[1].reconciliation.silver_updated == 1
    silver = read_table(platform, "silver_readings").to_pylist()
    read = [r for r in silver if r["estimation_method"] is None]
    assert [(r["local_date"], r["timezone"]) for r in read] == [(date(2025, 6, 11), "Pacific/Kiritimati")]
    # Local midnight at UTC+14 is 10:00 UTC: the two hours before the read are flat-filled.
    assert [r["interval_start_utc"].hour for r in silver if r["estimation_method"] == "flat"] == [10, 10, 11, 11]
