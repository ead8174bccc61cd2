"""VEE through the whole pipeline: severities, quality-aware replacement, series rules, registers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest

from app.application.runner import run_batch
from app.wiring import LocalPlatform
from tests.integration.conftest import NOW, read_table, write_csv

DAY = datetime(2025, 6, 10, tzinfo=UTC)  # a summer Tuesday; Europe/London is UTC+1


def _config(tmp_path: Path, body: str) -> Path:
    config = tmp_path / "sources.toml"
    config.write_text(
        '[sources.meters]\npath = "in/*.csv"\ncolumns = { unit = "unit", quality = "quality" }\n'
        'series_timezone = "UTC"\n' + body,
        encoding="utf-8",
    )
    return config


def _day(values: list[float], *, quality: str = "actual", meter: str = "M1", day: datetime = DAY) -> list[str]:
    """One UTC day of half-hourly reads, `values` from 00:00 on."""
    return [f"{meter},{(day + timedelta(minutes=30 * i)).isoformat()},{v},kWh,{quality}" for i, v in enumerate(values)]


HEADER = "meter_id,timestamp,value,unit,quality"


def _run(platform: LocalPlatform, config: Path, path: Path) -> object:
    return run_batch(platform, source_name="meters", config_file=config, input_path=str(path), now=NOW)


def test_a_fail_rule_stops_the_batch_and_writes_nothing(platform: LocalPlatform, tmp_path: Path) -> None:
    config = _config(tmp_path, 'rules = { negative_import = { severity = "fail" } }\n')
    rows = _day([0.5] * 48)
    rows[7] = rows[7].replace(",0.5,", ",-0.2,")
    rows[9] = rows[9].replace(",0.5,", ",-0.1,")
    path = write_csv(tmp_path / "in" / "a.csv", rows, header=HEADER)

    result = _run(platform, config, path)

    assert result.status == "failed"  # type: ignore[attr-defined]
    assert "negative_import (2 row(s))" in result.error and "nothing was written" in result.error  # type: ignore[attr-defined]
    for table in ("bronze_meters", "silver_readings", "quarantine_readings", "gold_daily_meter_energy"):
        assert not platform.store.exists(table), table
    [batch] = platform.metadata.list_batches()
    assert batch.status == "failed" and batch.rule_counts == {"negative_import": 2, "missing_intervals": 2}


def test_warn_keeps_the_row_with_its_flag(platform: LocalPlatform, tmp_path: Path) -> None:
    config = _config(tmp_path, 'rules = { negative_import = { severity = "warn" } }\n')
    rows = _day([0.5] * 48)
    rows[7] = rows[7].replace(",0.5,", ",-0.2,")
    path = write_csv(tmp_path / "in" / "a.csv", rows, header=HEADER)

    result = _run(platform, config, path)

    assert result.status == "succeeded" and result.rule_counts == {"negative_import": 1}  # type: ignore[attr-defined]
    silver = read_table(platform, "silver_readings")
    flagged = silver.filter(pc.equal(silver["validation_flags"], "negative_import")).to_pylist()
    assert [(r["line_number"], r["energy_kwh"]) for r in flagged] == [(9, -0.2)]
    assert not platform.store.exists("quarantine_readings") or read_table(platform, "quarantine_readings").num_rows == 0


def test_a_quarantined_spike_is_estimated_and_the_reported_value_kept(platform: LocalPlatform, tmp_path: Path) -> None:
    config = _config(tmp_path, 'rules = { spike = { severity = "quarantine" } }\n')
    values = [0.5] * 48
    values[20] = 9.0  # 18x the third-highest (0.5): a spike
    path = write_csv(tmp_path / "in" / "a.csv", _day(values), header=HEADER)

    result = _run(platform, config, path)

    assert result.status == "succeeded", result.error  # type: ignore[attr-defined]
    assert result.rule_counts == {"spike": 1, "missing_intervals": 1}  # type: ignore[attr-defined]
    assert result.estimates == {"linear": 1}  # type: ignore[attr-defined]
    [quarantined] = read_table(platform, "quarantine_readings").to_pylist()
    assert (quarantined["rule"], quarantined["line_number"]) == ("spike", 22)
    silver = read_table(platform, "silver_readings")
    [estimate] = silver.filter(pc.is_valid(silver["estimation_method"])).to_pylist()
    assert estimate["interval_start_utc"] == DAY + timedelta(hours=10)
    assert (estimate["energy_kwh"], estimate["reported_kwh"], estimate["quality_flag"]) == (0.5, 9.0, "estimated")
    [gold] = read_table(platform, "gold_daily_meter_energy").to_pylist()
    assert (gold["interval_count"], gold["estimated_interval_count"], gold["actual_interval_count"]) == (48, 1, 47)
    assert gold["estimated_share"] == pytest.approx(1 / 48) and gold["completeness"] == pytest.approx(47 / 48)
    assert gold["energy_kwh"] == pytest.approx(48 * 0.5)


def test_a_later_read_replaces_only_with_equal_or_better_quality(platform: LocalPlatform, tmp_path: Path) -> None:
    config = _config(tmp_path, "")
    first = write_csv(tmp_path / "in" / "1.csv", _day([0.5] * 48), header=HEADER)
    assert _run(platform, config, first).status == "succeeded"  # type: ignore[attr-defined]

    # The source's own estimates for four intervals: worse than the stored reads.
    worse = write_csv(tmp_path / "in" / "2.csv", _day([9.0] * 4, quality="estimated"), header=HEADER)
    result = _run(platform, config, worse)
    assert result.reconciliation.silver_updated == 0  # type: ignore[attr-defined]
    assert result.reconciliation.silver_unchanged == 4  # type: ignore[attr-defined]
    # A corrected actual read replaces.
    better = write_csv(tmp_path / "in" / "3.csv", _day([0.7] * 2), header=HEADER)
    assert _run(platform, config, better).reconciliation.silver_updated == 2  # type: ignore[attr-defined]

    silver = {r["interval_start_utc"]: r for r in read_table(platform, "silver_readings").to_pylist()}
    assert [silver[DAY + timedelta(minutes=30 * i)]["energy_kwh"] for i in range(4)] == [0.7, 0.7, 0.5, 0.5]
    assert {r["quality_flag"] for r in silver.values()} == {"actual"}


def test_a_stored_estimate_is_replaced_by_the_late_read(platform: LocalPlatform, tmp_path: Path) -> None:
    config = _config(tmp_path, "")
    values = [0.5] * 48
    rows = _day(values)
    del rows[10]  # 05:00 missing: linear estimate
    first = write_csv(tmp_path / "in" / "1.csv", rows, header=HEADER)
    assert _run(platform, config, first).estimates == {"linear": 1}  # type: ignore[attr-defined]

    late = write_csv(tmp_path / "in" / "2.csv", [_day(values)[10].replace(",0.5,", ",0.8,")], header=HEADER)
    result = _run(platform, config, late)

    assert result.reconciliation.silver_updated == 1 and result.estimates == {}  # type: ignore[attr-defined]
    silver = {r["interval_start_utc"]: r for r in read_table(platform, "silver_readings").to_pylist()}
    read = silver[DAY + timedelta(hours=5)]
    assert (read["energy_kwh"], read["quality_flag"], read["estimation_method"]) == (0.8, "actual", None)
    [gold] = read_table(platform, "gold_daily_meter_energy").to_pylist()
    assert (gold["estimated_interval_count"], gold["completeness"]) == (0, 1.0)


def test_cumulative_register_reads_become_interval_energy_and_resets_are_estimated(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    config = tmp_path / "sources.toml"
    config.write_text(
        '[sources.registers]\npath = "in/*.csv"\nvalue_kind = "register"\nunit = "kWh"\n'
        'interval_minutes = 60\nseries_timezone = "UTC"\ncolumns = { meter_id = "meter", timestamp = "time", '
        'value = "register" }\n',
        encoding="utf-8",
    )
    reads = [100.0, 101.0, 102.5, 104.0, 0.5, 1.5, 3.0]  # the meter was replaced before 04:00
    rows = [f"R1,{(DAY + timedelta(hours=i)).isoformat()},{v}" for i, v in enumerate(reads)]
    path = write_csv(tmp_path / "in" / "r.csv", rows, header="meter,time,register")

    result = run_batch(platform, source_name="registers", config_file=config, input_path=str(path), now=NOW)

    assert result.status == "succeeded", result.error
    assert {k: v for k, v in result.rule_counts.items() if k != "missing_intervals"} == {
        "register_start": 1,
        "register_reset": 1,
    }
    silver = {r["interval_start_utc"].hour: r for r in read_table(platform, "silver_readings").to_pylist()}
    read = {h: r["energy_kwh"] for h, r in silver.items() if r["estimation_method"] is None}
    # Start labels: a read is taken at its timestamp, so the difference of the 00:00 and 01:00
    # reads is the energy of 00:00-01:00. The reset read at 04:00 opens a new meter's count.
    assert read == {0: 1.0, 1: 1.5, 2: 1.5, 4: 1.0, 5: 1.5}
    # The reset hour is a gap between 1.5 and 1.0: interpolated. After the last read (06:00)
    # the day's 18 hours have no read: longer than max_flat_minutes, so nothing is invented.
    assert (silver[3]["estimation_method"], silver[3]["energy_kwh"]) == ("linear", pytest.approx(1.25))
    assert sorted(silver) == [0, 1, 2, 3, 4, 5]
    # What the meter said is kept as received: the cumulative reads in bronze, and the
    # reset read in quarantine.
    assert [r["register"] for r in read_table(platform, "bronze_registers").sort_by("line_number").to_pylist()] == [
        str(v) for v in reads
    ]
    quarantine = {
        r["rule"]: json.loads(r["raw_record"]) for r in read_table(platform, "quarantine_readings").to_pylist()
    }
    assert quarantine["register_reset"]["register"] == "0.5" and quarantine["register_start"]["register"] == "100.0"
