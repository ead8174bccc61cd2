"""Numbers you can bill on: each case is a few lines of a real export's shape that once stored
wrong energy while the batch reported success."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from app.application.runner import run_batch
from app.wiring import LocalPlatform
from tests.integration.conftest import NOW, read_table


def _run(platform: LocalPlatform, tmp_path: Path, config: str, lines: list[str], *, name: str = "src") -> Any:
    (tmp_path / "in").mkdir(exist_ok=True)
    path = tmp_path / "in" / "export.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    toml = tmp_path / "sources.toml"
    toml.write_text(f'[sources.{name}]\npath = "in/*.csv"\n{config}', encoding="utf-8")
    return run_batch(platform, source_name=name, config_file=toml, input_path=str(path), now=NOW)


def _silver(platform: LocalPlatform) -> list[dict[str, Any]]:
    return sorted(read_table(platform, "silver_readings").to_pylist(), key=lambda r: r["interval_start_utc"])


REGISTER_DAILY = (
    'value_kind = "register"\nunit = "kWh"\ninterval_minutes = 1440\nmeter_id = "M1"\n'
    'columns = { timestamp = "date", value = "read" }\n'
)


def test_register_listed_newest_first_is_differenced_in_time_order(platform: LocalPlatform, tmp_path: Path) -> None:
    # Reproducer: gave three register_reset and 0 kWh; the truth is 10 kWh a day.
    lines = ["date,read", "2024-06-04,130", "2024-06-03,120", "2024-06-02,110", "2024-06-01,100"]
    result = _run(platform, tmp_path, REGISTER_DAILY + 'timestamp_format = "%Y-%m-%d"\n', lines)

    assert result.status == "succeeded", result.error
    assert "register_reset" not in result.rule_counts and result.rule_counts["register_start"] == 1
    silver = _silver(platform)
    # Start labels: the read of 06-01 is taken as that day begins, so 06-01 used 110 - 100.
    assert [(r["local_date"], r["energy_kwh"]) for r in silver] == [
        (date(2024, 6, 1), 10.0),
        (date(2024, 6, 2), 10.0),
        (date(2024, 6, 3), 10.0),
    ]
    assert all(r["estimation_method"] is None for r in silver)


def test_a_missing_register_read_spreads_its_difference_and_is_not_estimated(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    # Reproducer: 00:30 is missing; 2 kWh were booked on 00:45 and 00:30 was estimated as well
    # (5.5 kWh stored, 4.0 true).
    config = (
        'value_kind = "register"\nunit = "kWh"\ninterval_minutes = 15\ntimestamp_label = "end"\nmeter_id = "M1"\n'
        'columns = { timestamp = "time", value = "read" }\n'
    )
    lines = [
        "time,read",
        "2025-06-02T00:00Z,100",
        "2025-06-02T00:15Z,101",
        "2025-06-02T00:45Z,103",
        "2025-06-02T01:00Z,104",
    ]
    result = _run(platform, tmp_path, config, lines)

    assert result.status == "succeeded", result.error
    silver = _silver(platform)
    assert [(r["interval_start_utc"].strftime("%H:%M"), r["energy_kwh"], r["estimation_method"]) for r in silver] == [
        ("00:00", 1.0, None),
        ("00:15", 1.0, "register_spread"),
        ("00:30", 1.0, "register_spread"),
        ("00:45", 1.0, None),
    ]
    assert math.fsum(r["energy_kwh"] for r in silver) == 4.0
    assert result.estimates == {}
    # The two shares come from one line of the file, and they are reads, not estimates.
    assert {r["line_number"] for r in silver if r["estimation_method"]} == {4}
    assert {r["quality_flag"] for r in silver} == {"actual"}
    assert result.reconciliation.rows_spread == 1
    [gold] = read_table(platform, "gold_daily_meter_energy").to_pylist()
    assert (gold["energy_kwh"], gold["estimated_interval_count"]) == (4.0, 0)


def test_shares_of_an_uneven_difference_add_up_to_it(platform: LocalPlatform, tmp_path: Path) -> None:
    config = (
        'value_kind = "register"\nunit = "kWh"\ninterval_minutes = 15\ntimestamp_label = "end"\nmeter_id = "M1"\n'
        'columns = { timestamp = "time", value = "read" }\n'
    )
    lines = ["time,read", "2025-06-02T00:00Z,100.1", "2025-06-02T01:00Z,101.2"]
    result = _run(platform, tmp_path, config, lines)

    assert result.status == "succeeded", result.error
    shares = [r["energy_kwh"] for r in _silver(platform)]
    assert len(shares) == 4 and sum(shares) == pytest.approx(1.1, abs=1e-12)
    assert max(shares) - min(shares) < 1e-9


def test_a_quarantined_read_is_never_the_base_of_the_next_difference(platform: LocalPlatform, tmp_path: Path) -> None:
    config = (
        'value_kind = "register"\nunit = "kWh"\ninterval_minutes = 15\ntimestamp_label = "end"\nmeter_id = "M1"\n'
        'max_demand_kw = 100\ncolumns = { timestamp = "time", value = "read" }\n'
    )
    lines = [
        "time,read",
        "2025-06-02T00:00Z,100",
        "2025-06-02T00:15Z,101",
        "2025-06-02T00:30Z,abc",  # unparseable
        "2025-06-02T00:45Z,99999",  # 99,898 kWh in 30 minutes: a misread, not a reset
        "2025-06-02T01:00Z,104",
    ]
    result = _run(platform, tmp_path, config, lines)

    assert result.status == "succeeded", result.error
    assert {k: v for k, v in result.rule_counts.items() if k != "missing_intervals"} == {
        "register_start": 1,
        "value_unparseable": 1,
        "above_physical_max": 1,
    }
    silver = _silver(platform)
    # 101 -> 104 over three quarter-hours: the misread and the unparseable read are no bases.
    assert [(r["interval_start_utc"].strftime("%H:%M"), r["energy_kwh"]) for r in silver] == [
        ("00:00", 1.0),
        ("00:15", 1.0),
        ("00:30", 1.0),
        ("00:45", 1.0),
    ]


DST_DAILY = (
    'unit = "kWh"\ninterval_minutes = 1440\nmeter_id = "M1"\ntimestamp_format = "%Y-%m-%d"\n'
    'timestamp_timezone = "Europe/Amsterdam"\nseries_timezone = "Europe/Amsterdam"\n'
    'columns = { timestamp = "date", value = "read" }\n'
)


def test_daily_registers_labelled_at_the_day_end_across_spring_forward(platform: LocalPlatform, tmp_path: Path) -> None:
    # Reproducer: the read after the change was off-grid and its day lost (20 kWh stored, 30 true).
    lines = ["date,read", "2024-03-30,100", "2024-03-31,110", "2024-04-01,120", "2024-04-02,130"]
    result = _run(platform, tmp_path, DST_DAILY + 'value_kind = "register"\ntimestamp_label = "end"\n', lines)

    assert result.status == "succeeded", result.error
    silver = _silver(platform)
    assert [(r["local_date"], r["energy_kwh"]) for r in silver] == [
        (date(2024, 3, 30), 10.0),
        (date(2024, 3, 31), 10.0),  # 23 hours
        (date(2024, 4, 1), 10.0),
    ]
    gold = {r["local_date"]: r for r in read_table(platform, "gold_daily_meter_energy").to_pylist()}
    assert {d: (g["expected_interval_count"], g["completeness"]) for d, g in gold.items()} == {
        date(2024, 3, 30): (1, 1.0),
        date(2024, 3, 31): (1, 1.0),
        date(2024, 4, 1): (1, 1.0),
    }


@pytest.mark.parametrize("day", ["2024-03-31", "2024-10-27"])
def test_a_daily_interval_on_a_dst_day_is_the_whole_day(platform: LocalPlatform, tmp_path: Path, day: str) -> None:
    # Reproducer: expected_interval_count 0 and completeness 1.0435 (23 h) or 0.96 (25 h).
    first = date.fromisoformat(day) - timedelta(days=1)
    dates = [first + timedelta(days=i) for i in range(3)]
    lines = ["date,read", *(f"{d.isoformat()},24" for d in dates)]
    result = _run(platform, tmp_path, DST_DAILY, lines)

    assert result.status == "succeeded", result.error
    gold = read_table(platform, "gold_daily_meter_energy").to_pylist()
    assert [(g["local_date"], g["expected_interval_count"], g["completeness"]) for g in gold] == [
        (d, 1, 1.0) for d in dates
    ]
    change = next(g for g in gold if g["local_date"].isoformat() == day)
    hours = 23 if day.startswith("2024-03") else 25
    assert change["peak_demand_kw"] == pytest.approx(24 / hours)


def test_intervals_longer_than_an_hour_stay_out_of_the_hourly_load(platform: LocalPlatform, tmp_path: Path) -> None:
    # Reproducer: a daily read put a whole day's energy into one hour of the portfolio load.
    lines = ["date,read", "2025-06-02,24", "2025-06-03,24"]
    result = _run(platform, tmp_path, DST_DAILY, lines)

    assert result.status == "succeeded", result.error
    assert read_table(platform, "gold_daily_meter_energy").num_rows == 2
    hourly = read_table(platform, "gold_hourly_portfolio_load")
    assert hourly.num_rows == 0


def test_hourly_load_keeps_intervals_up_to_an_hour(platform: LocalPlatform, tmp_path: Path) -> None:
    config = 'unit = "kWh"\ninterval_minutes = 60\nmeter_id = "M1"\ncolumns = { timestamp = "t", value = "v" }\n'
    lines = ["t,v", *(f"2025-06-02T{h:02d}:00Z,1.5" for h in range(24))]
    result = _run(platform, tmp_path, config, lines)

    assert result.status == "succeeded", result.error
    hourly = read_table(platform, "gold_hourly_portfolio_load")
    assert hourly.num_rows == 24 and pc.sum(hourly["energy_kwh"]).as_py() == 36.0


def test_no_energy_is_invented_after_the_last_read(platform: LocalPlatform, tmp_path: Path) -> None:
    # Reproducer: a file ending at 05:00 had the day's other 19 hours estimated like-day from
    # the week before.
    config = 'unit = "kWh"\ninterval_minutes = 60\nmeter_id = "M1"\ncolumns = { timestamp = "t", value = "v" }\n'
    week_before = [f"2025-05-26T{h:02d}:00Z,2.0" for h in range(24)]
    first = _run(platform, tmp_path, config, ["t,v", *week_before])
    assert first.status == "succeeded", first.error
    (tmp_path / "in" / "export.csv").unlink()
    result = _run(platform, tmp_path, config, ["t,v", *(f"2025-06-02T{h:02d}:00Z,1.0" for h in range(5))])

    assert result.status == "succeeded", result.error
    assert result.estimates == {}
    day = [r for r in _silver(platform) if r["local_date"] == date(2025, 6, 2)]
    assert len(day) == 5 and sum(r["energy_kwh"] for r in day) == 5.0
    assert result.rule_counts["missing_intervals"] == 19


def test_interval_starts_are_utc(platform: LocalPlatform, tmp_path: Path) -> None:
    """Guard for the helpers above: silver keys are UTC instants."""
    config = 'unit = "kWh"\ninterval_minutes = 60\nmeter_id = "M1"\ncolumns = { timestamp = "t", value = "v" }\n'
    result = _run(platform, tmp_path, config, ["t,v", "2025-06-02T10:00+02:00,1"])
    assert result.status == "succeeded", result.error
    [row] = _silver(platform)
    assert row["interval_start_utc"] == datetime.fromisoformat("2025-06-02T08:00+00:00")


def test_readme_register_example(platform: LocalPlatform, tmp_path: Path) -> None:
    """The `portal_registers` file and config of README's register example, taken from README.md."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Worked example: a register export", 1)[1].split("\n## ", 1)[0]
    csv_text = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    toml_text = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert csv_text is not None and toml_text is not None
    landing = tmp_path / "landing" / "portal"
    landing.mkdir(parents=True)
    (landing / "export.csv").write_text(csv_text.group(1), encoding="utf-8")
    config = tmp_path / "sources.toml"
    config.write_text(toml_text.group(1), encoding="utf-8")

    result = run_batch(platform, source_name="portal_registers", config_file=config, now=NOW)

    assert result.status == "succeeded", result.error
    assert {k: v for k, v in result.rule_counts.items() if k != "missing_intervals"} == {"register_start": 1}
    silver = _silver(platform)
    assert [(r["local_date"].isoformat(), r["energy_kwh"], r["estimation_method"]) for r in silver] == [
        ("2024-05-31", pytest.approx(10.4), None),
        ("2024-06-01", pytest.approx(10.05), "register_spread"),
        ("2024-06-02", pytest.approx(10.05), "register_spread"),
        ("2024-06-03", pytest.approx(10.4), None),
    ]
    assert math.fsum(r["energy_kwh"] for r in silver) == pytest.approx(5130.5 - 5089.6)


# --- invariants: checked inside every batch, which fails and keeps nothing on a breach ------------

HOURLY = 'unit = "kWh"\ninterval_minutes = 60\nmeter_id = "M1"\ncolumns = { timestamp = "t", value = "v" }\n'


def _versions(platform: LocalPlatform) -> dict[str, int]:
    from deltalake import DeltaTable

    names = ("silver_readings", "gold_daily_meter_energy", "gold_hourly_portfolio_load", "quarantine_readings")
    return {n: DeltaTable(platform.store.location(n)).version() for n in names if platform.store.exists(n)}


def test_a_silver_key_stored_twice_fails_the_batch(platform: LocalPlatform, tmp_path: Path) -> None:
    from deltalake import DeltaTable, write_deltalake

    first = _run(platform, tmp_path, HOURLY, ["t,v", "2025-06-02T10:00Z,1"])
    assert first.status == "succeeded", first.error
    # A lake an older version (or a hand edit) left with one key twice.
    silver = DeltaTable(platform.store.location("silver_readings"))
    write_deltalake(silver, silver.to_pyarrow_table(), mode="append", partition_by=["local_month"])
    before = _versions(platform)

    result = _run(platform, tmp_path, HOURLY, ["t,v", "2025-06-02T11:00Z,2"])

    assert result.status == "failed"
    assert "the batch's tables would be wrong, so nothing is kept" in result.error
    assert "1 silver key(s) stored twice (e.g. meter M1)" in result.error
    after = _versions(platform)
    assert all(after[n] == before[n] + 2 for n in ("silver_readings", "gold_daily_meter_energy")), (before, after)
    assert read_table(platform, "silver_readings").num_rows == 2  # the two copies, the new read rolled back


def test_a_gold_day_over_complete_fails_the_batch(platform: LocalPlatform, tmp_path: Path) -> None:
    from deltalake import DeltaTable, write_deltalake

    first = _run(platform, tmp_path, HOURLY.replace('"M1"', '"M2"'), ["t,v", "2025-06-02T10:00Z,1"])
    assert first.status == "succeeded", first.error
    gold = DeltaTable(platform.store.location("gold_daily_meter_energy"))
    table = gold.to_pyarrow_table()
    table = table.set_column(table.column_names.index("completeness"), "completeness", pa.array([2.0]))
    write_deltalake(gold, table, mode="overwrite")

    result = _run(platform, tmp_path, HOURLY, ["t,v", "2025-06-02T11:00Z,2"])

    assert result.status == "failed"
    assert "1 gold day(s) with completeness above 1" in result.error and "meter M2" in result.error
    assert [r["meter_id"] for r in read_table(platform, "silver_readings").to_pylist()] == ["M2"]


def test_register_energy_that_does_not_add_up_fails_the_batch(
    platform: LocalPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.application import stages
    from app.domain.registers import spread_register_spans

    def losing_a_share(table: pa.Table, *, series_timezone: str) -> pa.Table:
        spread = spread_register_spans(table, series_timezone=series_timezone)
        return spread.slice(0, spread.num_rows - 1) if spread.num_rows > table.num_rows else spread

    monkeypatch.setattr(stages, "spread_register_spans", losing_a_share)
    config = (
        'value_kind = "register"\nunit = "kWh"\ninterval_minutes = 15\ntimestamp_label = "end"\nmeter_id = "M1"\n'
        'columns = { timestamp = "time", value = "read" }\n'
    )
    lines = ["time,read", "2025-06-02T00:00Z,100", "2025-06-02T00:15Z,101", "2025-06-02T01:00Z,104"]
    result = _run(platform, tmp_path, config, lines)

    assert result.status == "failed"
    assert "meter M1 (import): 3.000000 kWh booked but its register reads differ by 4.000000 kWh" in result.error
    assert not platform.store.exists("silver_readings") or read_table(platform, "silver_readings").num_rows == 0
