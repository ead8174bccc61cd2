"""Every example source of examples/sources.toml, loaded through the shipped config in local mode.

The files in examples/data are real public files, exactly as published; provenance and licences
(examples/data/README.md):

- ``fluvius/``: patrickvorgers/Home-Assistant-Import-Energy-Data @ 3d2ee1837114072293998836c14643c9fd8dffc9,
  ``Datasources/Fluvius/Sample files/`` (MIT).
- ``nem12/``: the same repository and commit, ``Datasources/NEM12/Sample files/power-redacted.csv`` (MIT).
- ``dsmr/``: the same repository and commit,
  ``Datasources/DSMR-reader/Sample files/dsmrreader-data-export-hour.csv`` (MIT).
- ``eia930/``: truggles/EIA_Cleaned_Hourly_Electricity_Demand_Data @ b80145df5f92aba56c52ed45281831b93543fb3b,
  ``data/release_2025_Jan_include_subregions/original_eia_files/`` (CC BY 4.0).
- ``aemo/``: ReLIFE-Project-EU/relife-data-structure @ 82db14747fb9f9edb0de75210d72fd6a2ea190cb,
  ``samples/aemo_price_demand/`` (source AEMO; reuse allowed with attribution).
- ``tso_wind/``: Open-Power-System-Data/time_series @ cc7ef860c5e1d7886a2f4568263a99bc0252a7b1, ``downloads/``
  (MIT for the repository; the operators' terms apply).
- ``uci_household/``: LucasGigli/HVAC-Anomaly-detection @ af1abe3eb2b1b10d78b1df7fd4369be002292fa7,
  ``household_power_consumption.txt``, the first 1 MiB of UCI's file (CC BY 4.0, UCI).
- ``greenbutton/``: vladistan/greenbutton_objects @ 0724a4731c2640972cddcf099ab24ab36c6c44e2, ``tests/data/``
  (Apache-2.0).

Each test counts the rows read from the file's own text (never from a run), derives the quarantined
rows per rule from the text where it can and otherwise pins the figure with the reason, pins the
estimated intervals per method with where the gaps are, and reads facts back from the Delta tables.
The README's worked example (``acme``) is parsed out of README.md and run, so the README stays true.
"""

from __future__ import annotations

import glob
import itertools
import re
import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from deltalake import DeltaTable

from app.application.pipeline import BatchResult
from app.application.runner import run_batch
from app.domain.rules import RULE_NAMES
from app.wiring import LocalPlatform

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "sources.toml"
DATA = CONFIG.parent / "data"
SOURCES: dict[str, dict[str, Any]] = tomllib.loads(CONFIG.read_text(encoding="utf-8"))["sources"]
#: After the last reading of every file, so no interval is in the future.
NOW = datetime(2026, 1, 1, tzinfo=UTC)
#: README "Declaring a source": the default missing-value markers.
DEFAULT_MISSING = {"", "N/A", "NA", "n/a", "?", "-", "null", "NULL", "NaN", "nan"}
#: README "What the pipeline checks": gaps up to `max_linear_minutes` (default 180) between two reads
#: are interpolated linearly, longer ones filled like-day; one-sided gaps up to 180 minutes flat.
MAX_LINEAR_MINUTES = MAX_FLAT_MINUTES = 180
HOUR, QUARTER, MINUTE = timedelta(hours=1), timedelta(minutes=15), timedelta(minutes=1)


# --- running a source and reading the lake -------------------------------------------------------


def _load(platform: LocalPlatform, source: str, path: Path | None = None) -> BatchResult:
    """One batch of `source` through examples/sources.toml (optionally one file); it must succeed and balance."""
    # glob.escape: a path holding `[` is taken as a glob even when the file exists, and
    # `TransnetBW_wind_8[mwindeinsp_ist_prognose_2015_03.csv].csv` then matches nothing (see resolve_inputs).
    input_path = None if path is None else glob.escape(str(path))
    result = run_batch(platform, source_name=source, input_path=input_path, config_file=CONFIG, now=NOW)
    assert result.status == "succeeded", result.error
    rec = result.reconciliation
    assert rec is not None and rec.balanced, rec
    return result


def _rows_read(result: BatchResult) -> int:
    assert result.reconciliation is not None
    return result.reconciliation.rows_read


def _table(platform: LocalPlatform, name: str, version: int | None = None) -> pd.DataFrame:
    return DeltaTable(platform.store.location(name), version=version).to_pyarrow_table().to_pandas()


def _quarantined(platform: LocalPlatform, result: BatchResult) -> dict[str, int]:
    """Quarantined rows per rule of the batch; the quarantine table holds exactly those, with the rule."""
    counts = {rule: n for rule, n in result.rule_counts.items() if rule in RULE_NAMES}
    quarantine = _table(platform, "quarantine_readings")
    assert quarantine[quarantine.batch_id == result.batch_id].rule.value_counts().to_dict() == counts
    assert result.reconciliation is not None
    assert result.reconciliation.rows_quarantined == sum(counts.values())
    return counts


def _assert_estimates(result: BatchResult, expected: dict[str, int]) -> None:
    assert result.reconciliation is not None
    assert (result.estimates, result.reconciliation.rows_estimated) == (expected, sum(expected.values()))


def _estimated(platform: LocalPlatform) -> pd.DataFrame:
    silver = _table(platform, "silver_readings")
    return silver[silver.estimation_method.notna()]


def _utc(values: Iterable[pd.Timestamp]) -> list[datetime]:
    return [v.to_pydatetime() for v in values]


# --- reading the files' text ---------------------------------------------------------------------


def _records(path: Path, *, delimiter: str, encoding: str = "utf-8", skip: int = 0) -> list[dict[str, str]]:
    """The data rows of a delimited file as header -> field (none of these files quotes a delimiter).

    A trailing delimiter on the header line (an empty last column name) drops that column on every row.
    """
    lines = path.read_text(encoding=encoding).splitlines()[skip:]
    header = lines[0].split(delimiter)
    if header[-1] == "":
        header = header[:-1]
    records = []
    for line in lines[1:]:
        if line:
            fields = line.split(delimiter)
            assert len(fields) >= len(header) and not any(fields[len(header) :]), line
            records.append(dict(zip(header, fields[: len(header)], strict=True)))
    return records


def _number(text: str) -> float:
    """A decimal comma or point (none of these files uses a thousands separator)."""
    return float(text.replace(",", "."))


def _midnight_utc(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(), ZoneInfo(zone)).astimezone(UTC)


def _grid(first: date, last: date, zone: str, step: timedelta) -> list[datetime]:
    """Interval starts (UTC) of the local days first..last in `zone`: 92/96/100 quarter-hours across DST."""
    start, end, out = _midnight_utc(first, zone), _midnight_utc(last + timedelta(days=1), zone), []
    while start < end:
        out.append(start)
        start += step
    return out


def _rest_of_day(end: datetime, zone: str, step: timedelta) -> int:
    """Intervals from `end` (the end of a file's last interval) to the end of that interval's local day."""
    day = (end - step).astimezone(ZoneInfo(zone)).date()
    return (_midnight_utc(day + timedelta(days=1), zone) - end) // step


def _in_gap(wall: datetime, zone: str) -> bool:
    """A naive wall time that does not exist in `zone` (the spring-forward hour)."""
    there = wall.replace(tzinfo=ZoneInfo(zone))
    return there.astimezone(UTC).astimezone(ZoneInfo(zone)).replace(tzinfo=None) != wall


def _ambiguous(wall: datetime, zone: str) -> bool:
    """A naive wall time that exists twice in `zone` (the fall-back hour)."""
    z = ZoneInfo(zone)
    return (
        not _in_gap(wall, zone)
        and wall.replace(tzinfo=z, fold=0).utcoffset() != wall.replace(tzinfo=z, fold=1).utcoffset()
    )


def _runs(times: Iterable[datetime], step: timedelta) -> list[tuple[datetime, int]]:
    """Maximal runs of consecutive times `step` apart: (first, length)."""
    runs: list[tuple[datetime, int]] = []
    for t in sorted(set(times)):
        if runs and runs[-1][0] + runs[-1][1] * step == t:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((t, 1))
    return runs


def _between_reads(runs: Iterable[tuple[datetime, int]], step: timedelta) -> Counter[str]:
    """Intervals per fill method of gaps with a read on both sides (README: linear up to 180 minutes)."""
    methods: Counter[str] = Counter()
    for _, length in runs:
        methods["linear" if length * step <= timedelta(minutes=MAX_LINEAR_MINUTES) else "like_day"] += length
    return methods


# --- Fluvius --------------------------------------------------------------------------------------

FLUVIUS = DATA / "fluvius"


def _fluvius_starts(rows: list[dict[str, str]], source: str) -> list[datetime]:
    """Each row's UTC interval start, as the source declares it: Belgian wall time, ambiguous_time = "order".

    Of a register's rows with the same wall time in the fall-back hour, the first is the earlier instant.
    """
    config = SOURCES[source]
    columns, zone = config["columns"], config["timestamp_timezone"]
    seen: Counter[tuple[str, datetime]] = Counter()
    starts = []
    for r in rows:
        wall = datetime.strptime(" ".join(r[c] for c in columns["timestamp"]), config["timestamp_format"])
        key = (r[columns["direction"]], wall)
        fold = min(seen[key], 1) if _ambiguous(wall, zone) else 0
        seen[key] += 1
        starts.append(wall.replace(tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC))
    return starts


def _assert_every_quarter_hour(rows: list[dict[str, str]], source: str, days: set[date]) -> None:
    """Each quarter-hour of the local days `days` (first..last, DST-aware) is in the file once per direction."""
    config = SOURCES[source]
    register, directions = config["columns"]["direction"], config["direction_values"]
    keys = list(zip((directions[r[register]] for r in rows), _fluvius_starts(rows, source), strict=True))
    grid = _grid(min(days), max(days), config["series_timezone"], QUARTER)
    assert len(keys) == len(set(keys)) and set(keys) == {(d, t) for d in ("import", "export") for t in grid}


def _assert_zero_reads(platform: LocalPlatform, rows: list[dict[str, str]], source: str) -> int:
    """The file's empty volumes, all of a `zero_when_quality` status, as 0 kWh reads in silver; how many.

    Each is the silver row of its file line, at its interval: quality actual, no estimation method.
    """
    config = SOURCES[source]
    columns, directions = config["columns"], config["direction_values"]
    expected = {
        (line, directions[r[columns["direction"]]], start)
        for line, r, start in zip(itertools.count(2), rows, _fluvius_starts(rows, source))
        if r[columns["value"]] == ""
    }
    assert all(r[columns["quality"]] in config["zero_when_quality"] for r in rows if r[columns["value"]] == "")
    silver = _table(platform, "silver_readings")
    zero = silver[silver.line_number.isin([line for line, _, _ in expected])]
    assert (
        set(zip(zero.line_number.astype(int), zero.direction, _utc(zero.interval_start_utc), strict=True)) == expected
    )
    assert len(zero) == len(expected)
    assert set(zero.energy_kwh) == {0.0} and set(zero.quality_flag) == {"actual"}
    assert zero.estimation_method.isna().all()
    return len(expected)


def test_fluvius_electricity(platform: LocalPlatform) -> None:
    # examples/data/fluvius: patrickvorgers/Home-Assistant-Import-Energy-Data @ 3d2ee18, MIT.
    path = FLUVIUS / "Consumption_history_electricity_541448820052377134_20231022_20250426_15 minute totals.csv"
    rows = _records(path, delimiter=";", encoding="utf-8-sig")
    config = SOURCES["fluvius_electricity"]
    directions = config["direction_values"]

    result = _load(platform, "fluvius_electricity")

    assert _rows_read(result) == len(rows) == 13_640
    # zero_when_quality = ["No consumption"]: an empty Volume marked so is 0 kWh (nothing flowed), an
    # actual read, not a missing value (an empty Volume is otherwise a default missing-value marker:
    # value_missing). The file's only empty volumes are its two "No consumption" rows, the first
    # quarter-hour (22/10/2023 00:00) of the Offtake Night and Injection Night registers: nothing is
    # quarantined, and silver has a 0 kWh read at each.
    empty = [r for r in rows if r["Volume"] == ""]
    assert {r["Validation status"] for r in empty} == set(config["zero_when_quality"]) == {"No consumption"}
    assert sorted((r["From (date)"], r["From (time)"], r["Register"]) for r in empty) == [
        ("22/10/2023", "00:00:00", "Injection Night"),
        ("22/10/2023", "00:00:00", "Offtake Night"),
    ]
    assert _quarantined(platform, result) == {}
    assert _assert_zero_reads(platform, rows, "fluvius_electricity") == len(empty) == 2
    # With those two read, every quarter-hour of the file's 71 days is a read, once per direction (96 a
    # day, 100 on the fall-back day): no gap, so nothing is estimated (read as missing, the two would be
    # one-sided gaps at the start of each series, flat-filled from 00:15).
    days = {datetime.strptime(r["From (date)"], "%d/%m/%Y").date() for r in rows}
    assert len(days) == 71 and max(days) - min(days) == timedelta(days=70)
    _assert_every_quarter_hour(rows, "fluvius_electricity", days)
    _assert_estimates(result, {})
    assert _estimated(platform).empty

    gold = _table(platform, "gold_daily_meter_energy")
    # Offtake registers are import, Injection registers export: gold daily has both, every day of the file,
    # each day complete and all of it read (the two zeros are reads, of quality actual).
    for direction in ("import", "export"):
        mine = gold[gold.direction == direction]
        assert set(mine.local_date) == days
        read_kwh = sum(_number(r["Volume"]) for r in rows if directions[r["Register"]] == direction and r["Volume"])
        assert mine.energy_kwh.sum() == pytest.approx(read_kwh)
    assert set(gold.completeness) == {1.0} and set(gold.estimated_interval_count) == {0}
    # The fall-back day 29/10/2023: 02:00-02:45 twice per register in the file, resolved by order into
    # 100 distinct quarter-hours, which is the day's DST-aware count.
    on_fall_back = Counter(directions[r["Register"]] for r in rows if r["From (date)"] == "29/10/2023")
    assert on_fall_back == {"import": 100, "export": 100}
    fall_back = gold[gold.local_date == date(2023, 10, 29)]
    assert sorted(
        zip(fall_back.direction, fall_back.interval_count, fall_back.expected_interval_count, strict=True)
    ) == [
        ("export", 100, 100),
        ("import", 100, 100),
    ]


def test_fluvius_electricity_nl(platform: LocalPlatform) -> None:
    # examples/data/fluvius: patrickvorgers/Home-Assistant-Import-Energy-Data @ 3d2ee18, MIT.
    path = FLUVIUS / "Verbruikshistoriek_elektriciteit_123456789123456789_20211012_20240929_kwartiertotalen.csv"
    rows = _records(path, delimiter=";", encoding="utf-8-sig")
    config = SOURCES["fluvius_electricity_nl"]
    directions = config["direction_values"]

    result = _load(platform, "fluvius_electricity_nl")

    assert _rows_read(result) == len(rows) == 3_848
    # "Geen verbruik" rows carry an empty Volume (otherwise a default missing-value marker): two thirds of
    # the file. zero_when_quality = ["Geen verbruik"] reads each as 0 kWh, actual: none is quarantined
    # (they would be 2,566 value_missing), and silver has a 0 kWh read at each.
    empty = [r for r in rows if r["Volume"] == ""]
    assert {r["Validatiestatus"] for r in empty} == set(config["zero_when_quality"]) == {"Geen verbruik"}
    assert all(r["Volume"] == "" for r in rows if r["Validatiestatus"] == "Geen verbruik")
    assert len(empty) == 2_566
    assert _quarantined(platform, result) == {}
    assert _assert_zero_reads(platform, rows, "fluvius_electricity_nl") == len(empty)
    # Each quarter-hour of 12-31/10/2021 is in the file once per direction (a Dag or a Nacht register):
    # 19 days x 96 + 100 on the fall-back day 31/10 = 1,924 per direction. With the "Geen verbruik" rows
    # read there is no gap, so nothing is estimated (read as missing, their slots would be gaps, 53 of
    # them filled like-day).
    days = {datetime.strptime(r["Van datum"], "%d-%m-%Y").date() for r in rows}
    assert (min(days), max(days), len(days)) == (date(2021, 10, 12), date(2021, 10, 31), 20)
    _assert_every_quarter_hour(rows, "fluvius_electricity_nl", days)
    assert len(rows) == 2 * (19 * 96 + 100)
    _assert_estimates(result, {})
    assert _estimated(platform).empty

    silver = _table(platform, "silver_readings")
    # "Geschat" (the operator's estimate) maps to quality "estimated" without an estimation method.
    by_source = silver[(silver.quality_flag == "estimated") & silver.estimation_method.isna()]
    assert len(by_source) == sum(r["Validatiestatus"] == "Geschat" for r in rows) == 354
    # The zeros make zero_run flags (warn: rows kept), runs of more than max_zero_intervals consecutive zero
    # quarter-hours (default a day's worth, 96), on import channels only. Injection is 0 all month
    # ("Geen verbruik", or 0,000 "Gevalideerd"), one run of 1,924, and is not judged: export is zero
    # whenever nothing is generated. Offtake is 0 over the three weekends, Friday afternoon to Monday
    # morning: 15/10 15:45-18/10 07:15 (255, "Geen verbruik"), 22/10 16:00-25/10 06:45 (252, of which 197
    # are 0,000 "Geschat") and 29/10 15:45 to the file's end (229): 736.
    zero_limit = 1440 // config["interval_minutes"]
    starts = _fluvius_starts(rows, "fluvius_electricity_nl")
    flagged: Counter[str] = Counter()
    for direction in ("import",):
        zeros = [
            t
            for r, t in zip(rows, starts, strict=True)
            if directions[r["Register"]] == direction and (r["Volume"] == "" or _number(r["Volume"]) == 0)
        ]
        flagged[direction] = sum(n for _, n in _runs(zeros, QUARTER) if n > zero_limit)
    zero_run = silver[silver.validation_flags.str.split(";").apply(lambda flags: "zero_run" in flags)]
    assert zero_run.direction.value_counts().to_dict() == dict(flagged) == {"import": 736}
    assert result.rule_counts["zero_run"] == len(zero_run)

    gold = _table(platform, "gold_daily_meter_energy")
    # Every meter-day has a gold row, those all "Geen verbruik" too (offtake 16-17 and 30-31/10, which
    # would have none with their volumes missing): 0 kWh, complete, every quarter-hour of quality actual.
    for direction in ("import", "export"):
        mine = gold[gold.direction == direction]
        assert set(mine.local_date) == days
        read_kwh = sum(_number(r["Volume"]) for r in rows if directions[r["Register"]] == direction and r["Volume"])
        assert mine.energy_kwh.sum() == pytest.approx(read_kwh)
    imports = gold[gold.direction == "import"].set_index("local_date")
    no_use = {
        day
        for day in days
        if all(
            r["Volume"] == ""
            for r in rows
            if r["Register"].startswith("Afname") and r["Van datum"] == f"{day:%d-%m-%Y}"
        )
    }
    assert no_use == {date(2021, 10, d) for d in (16, 17, 30, 31)}
    quiet = imports[imports.index.isin(no_use)]
    assert len(quiet) == len(no_use) and set(quiet.energy_kwh) == {0.0} and set(quiet.completeness) == {1.0}
    # Completeness counts the quarter-hours of quality actual: on 12/10 the 36 validated offtake
    # quarter-hours and the 60 "Geen verbruik" ones, 96 of 96 (with the empty volumes missing, 36 of 96).
    on_12 = Counter(
        r["Validatiestatus"] for r in rows if r["Van datum"] == "12-10-2021" and r["Register"].startswith("Afname")
    )
    assert on_12 == {"Gevalideerd": 36, "Geen verbruik": 60}
    assert {config["quality_values"][status] for status in on_12} == {"actual"}
    day_12 = imports.loc[date(2021, 10, 12)]
    assert (day_12.interval_count, day_12.actual_interval_count, day_12.expected_interval_count) == (96, 96, 96)
    assert day_12.completeness == pytest.approx(sum(on_12.values()) / 96) == 1.0


def test_fluvius_gas(platform: LocalPlatform) -> None:
    # examples/data/fluvius: patrickvorgers/Home-Assistant-Import-Energy-Data @ 3d2ee18, MIT.
    path = FLUVIUS / "Consumption_history_gas_541448860018322037_20231022_20250426_hourly totals.csv"
    rows = _records(path, delimiter=";", encoding="utf-8-sig")
    kwh = [r for r in rows if r["Unit"] == "kWh"]

    result = _load(platform, "fluvius_gas")

    assert _rows_read(result) == len(rows) == 3_398
    # Each hour twice: in m³ (a volume, not energy: unit_unknown) and in kWh.
    cubic = sum(r["Unit"] == "m³" for r in rows)
    assert _quarantined(platform, result) == {"unit_unknown": cubic} == {"unit_unknown": 1_699}
    assert cubic + len(kwh) == len(rows)
    # The only day short of hours is the first, 22/10/2023, whose data start at 06:00: a one-sided gap of
    # 6 h, longer than the 3 h of a flat fill, with no earlier week for like-day, so it stays missing.
    _assert_estimates(result, {})

    silver = _table(platform, "silver_readings")
    assert len(silver) == len(kwh)
    assert silver.energy_kwh.sum() == pytest.approx(sum(_number(r["Volume"]) for r in kwh))
    gold = _table(platform, "gold_daily_meter_energy").set_index("local_date")
    first_day = sum(r["From (date)"] == "22/10/2023" for r in kwh)
    assert first_day == 18 and gold.loc[date(2023, 10, 22), "completeness"] == pytest.approx(first_day / 24)
    # The fall-back day has 25 hours, 02:00 twice in the file.
    assert sum(r["From (date)"] == "29/10/2023" for r in kwh) == 25
    assert gold.loc[date(2023, 10, 29), ["interval_count", "expected_interval_count"]].tolist() == [25, 25]


# --- DSMR -----------------------------------------------------------------------------------------


def test_dsmr_hourly(platform: LocalPlatform) -> None:
    # examples/data/dsmr: patrickvorgers/Home-Assistant-Import-Energy-Data @ 3d2ee18,
    # Datasources/DSMR-reader/Sample files/dsmrreader-data-export-hour.csv, MIT.
    path = DATA / "dsmr" / "dsmrreader-data-export-hour.csv"
    rows = _records(path, delimiter=",")
    series = SOURCES["dsmr_hourly"]["series"]
    starts = [datetime.fromisoformat(r["Hour Start"]).astimezone(UTC) for r in rows]

    result = _load(platform, "dsmr_hourly")

    assert _rows_read(result) == len(rows) * len(series) == 8_754 * 4
    assert _quarantined(platform, result) == {}
    # The file skips hours: a 30 h jump from 2024-03-16 11:00Z (29 hours missing: like-day) and a 2 h jump
    # at 2024-03-21 05:00Z (1 hour: linear), in each of the 4 series.
    gaps = [(start, length) for start, length in _runs(_missing_hours(starts), HOUR)]
    assert [(s.isoformat(), n) for s, n in gaps] == [
        ("2024-03-16T12:00:00+00:00", 29),
        ("2024-03-21T05:00:00+00:00", 1),
    ]
    derived = {method: n * len(series) for method, n in _between_reads(gaps, HOUR).items()}
    _assert_estimates(result, derived)
    assert derived == {"like_day": 116, "linear": 4}
    estimated = _estimated(platform)
    assert Counter(_utc(estimated.interval_start_utc)) == {t: len(series) for t in _missing_hours(starts)}

    silver = _table(platform, "silver_readings")
    # The fall-back hour: 02:00+02:00 then 02:00+01:00 are two distinct UTC hours.
    tariff1 = silver[(silver.meter_id == "dsmr:tariff1") & (silver.direction == "import")].set_index(
        "interval_start_utc"
    )
    repeated = [r for r in rows if r["Hour Start"].startswith("2024-10-27T02:00:00")]
    assert [r["Hour Start"] for r in repeated] == ["2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00"]
    for r, hour in zip(repeated, (0, 1), strict=True):
        value = _number(r["Electricity 1 (Dutch Users: Low Tariff)"])
        assert tariff1.loc[pd.Timestamp(2024, 10, 27, hour, tz="UTC"), "energy_kwh"] == pytest.approx(value)
    gold = _table(platform, "gold_daily_meter_energy")
    for day, hours in ((date(2024, 3, 31), 23), (date(2024, 10, 27), 25)):
        that_day = gold[gold.local_date == day]
        assert len(that_day) == 4 and set(that_day.interval_count) == set(that_day.expected_interval_count) == {hours}


def _missing_hours(present: list[datetime]) -> list[datetime]:
    """Hours between the first and last present hour that the file does not have."""
    have, out = set(present), []
    t, last = min(present), max(present)
    while t < last:
        if t not in have:
            out.append(t)
        t += HOUR
    return out


# --- EIA-930 --------------------------------------------------------------------------------------

# Per source: (quarantined per rule, estimates per method, bad hours like-day cannot fill).
EIA = {
    # PJM: 115 EMPTY + 1 MISSING; above 500,000 MW: the 2,147,480,000 placeholder at 2021-10-19 04:00Z
    # and its neighbours 1,527,760,000 and 431,044,000 MW. Runs of bad hours: 3 h on 2021-10-19 and 1 h
    # on 2022-11-07 (linear 4); 22 h on each spring-forward day (2020-03-08, 2022-03-13, 2024-03-10),
    # 24 h from 2020-08-03 05:00Z and 25 h on the fall-back day 2023-11-05 (like-day 115). The 5 h after
    # the file's last hour that still belong to New York's 2024-12-31 stay missing (nothing is
    # extrapolated past the data beyond max_flat_minutes).
    "eia930_pjm": ({"value_missing": 116, "above_physical_max": 3}, {"linear": 4, "like_day": 115}, 0),
    # SEC: 181 EMPTY + 58 MISSING; negative demand on an import channel. 1,543 bad hours: the runs of up
    # to 3 h hold 576 (linear); the longer runs hold 967, of which 437 are filled like-day (the 5 h after
    # the file's end stay missing). The other 530 stay missing: the runs of January 2020, 87 h from the file's
    # first hour (no read before), 67 h from 2020-01-04 16:00Z (no read a week earlier), 207 h from
    # 2020-01-07 12:00Z and 169 h from 2020-01-16 05:00Z (longer than max_gap_days = 7 days).
    "eia930_sec": ({"value_missing": 239, "negative_import": 1_304}, {"linear": 576, "like_day": 437}, 530),
    # TVA: 48 EMPTY in two 24 h runs (2020-10-31 and 2021-11-06 06:00Z: like-day; the 6 h after the
    # file's end, Chicago being UTC-6, stay missing); six single hours (4 negative, 9,931,754 MW on 2024-01-21 and
    # 949,163 MW on 2024-04-13) are linear.
    "eia930_tva": (
        {"value_missing": 48, "negative_import": 4, "above_physical_max": 2},
        {"linear": 6, "like_day": 48},
        0,
    ),
}


@pytest.mark.parametrize("source", sorted(EIA))
def test_eia930(platform: LocalPlatform, source: str) -> None:
    # examples/data/eia930: truggles/EIA_Cleaned_Hourly_Electricity_Demand_Data @ b80145d,
    # data/release_2025_Jan_include_subregions/original_eia_files/, CC BY 4.0.
    config = SOURCES[source]
    path = CONFIG.parent / config["path"]
    rows = _records(path, delimiter=",")
    expected_rejected, expected_estimates, unfilled = EIA[source]
    # Demand (MW) over an hour: kW = MW x 1000 against max_demand_kw.
    max_mw = config["max_demand_kw"] / 1000
    bad: dict[int, str] = {}  # file line -> rule
    for line, r in enumerate(rows, start=2):
        value = r["demand (MW)"]
        if value in config["missing_values"]:
            bad[line] = "value_missing"
        elif float(value) < 0:
            bad[line] = "negative_import"
        elif float(value) > max_mw:
            bad[line] = "above_physical_max"

    result = _load(platform, source)

    assert _rows_read(result) == len(rows) == 43_848  # 2020-2024, every UTC hour
    assert _quarantined(platform, result) == dict(Counter(bad.values())) == expected_rejected
    # Bad hours -> gaps between reads; the file also ends at 2024-12-31 23:00Z, before the end of that
    # local day, and the rest of the day stays missing (a one-sided gap longer than 3 h is not invented).
    hour = [datetime.fromisoformat(r["date_time"]).replace(tzinfo=UTC) for r in rows]
    runs = _runs((hour[line - 2] for line in bad), HOUR)
    derived = _between_reads(runs, HOUR)
    derived["like_day"] -= unfilled
    tail = _rest_of_day(hour[-1] + HOUR, config["series_timezone"], HOUR)
    assert tail in (5, 6) and result.rule_counts["missing_intervals"] >= tail
    _assert_estimates(result, expected_estimates)
    assert derived == expected_estimates

    quarantine = _table(platform, "quarantine_readings")
    assert dict(zip(quarantine.line_number, quarantine.rule, strict=True)) == bad
    placeholder = [line for line, r in enumerate(rows, start=2) if r["demand (MW)"] == "2147480000"]
    # The 2,147,480,000 MW placeholder (PJM only) fails above_physical_max.
    assert len(placeholder) == (source == "eia930_pjm")
    assert all(bad[line] == "above_physical_max" for line in placeholder)
    silver = _table(platform, "silver_readings")
    reads = silver[silver.line_number.notna()]
    # MW over one hour -> kWh: MW x 1000, every read line.
    text = {line: float(r["demand (MW)"]) * 1000 for line, r in enumerate(rows, start=2) if line not in bad}
    assert sorted(reads.line_number.astype(int)) == sorted(text)
    by_line = reads.set_index(reads.line_number.astype(int)).energy_kwh
    assert by_line.loc[list(text)].to_numpy() == pytest.approx(list(text.values()))


# --- AEMO -----------------------------------------------------------------------------------------


def test_aemo_demand(platform: LocalPlatform) -> None:
    # examples/data/aemo: ReLIFE-Project-EU/relife-data-structure @ 82db147, samples/aemo_price_demand/,
    # source AEMO, reuse allowed with attribution.
    files = sorted((DATA / "aemo").glob("*.csv"))
    rows = [r for path in files for r in _records(path, delimiter=",")]
    market = timezone(timedelta(hours=10))  # timestamp_timezone "+10:00": NEM market time, no DST
    assert SOURCES["aemo_demand"]["timestamp_timezone"] == "+10:00"

    result = _load(platform, "aemo_demand")

    assert _rows_read(result) == len(rows) == 8_928 + 8_928 + 8_064
    assert _quarantined(platform, result) == {}
    # SETTLEMENTDATE is the interval END: each file covers whole local days (00:05 .. next day's 00:00),
    # 288 five-minute intervals each, so nothing is missing and nothing is estimated.
    starts = Counter(
        (r["REGION"], (datetime.strptime(r["SETTLEMENTDATE"], "%Y/%m/%d %H:%M:%S") - timedelta(minutes=5)).date())
        for r in rows
    )
    assert set(starts.values()) == {288}
    _assert_estimates(result, {})

    silver = _table(platform, "silver_readings")
    nsw = silver[silver.meter_id == "NSW1"].sort_values("interval_start_utc").iloc[0]
    first = next(r for r in rows if r["REGION"] == "NSW1")
    assert first["SETTLEMENTDATE"] == "2025/01/01 00:05:00"
    # End label minus 5 minutes at +10:00: 2025-01-01 00:00+10:00 = 2024-12-31T14:00Z.
    end = datetime.strptime(first["SETTLEMENTDATE"], "%Y/%m/%d %H:%M:%S").replace(tzinfo=market)
    assert (
        nsw.interval_start_utc.to_pydatetime() == end - timedelta(minutes=5) == datetime(2024, 12, 31, 14, tzinfo=UTC)
    )
    assert nsw.energy_kwh == pytest.approx(float(first["TOTALDEMAND"]) * 1000 * 5 / 60)  # MW over 5 minutes
    gold = _table(platform, "gold_daily_meter_energy")
    assert Counter(zip(gold.meter_id, gold.local_date, strict=True)) == Counter(dict.fromkeys(starts, 1))
    assert set(gold.interval_count) == set(gold.expected_interval_count) == {288}
    assert set(gold.completeness) == {1.0}


# --- NEM12 ----------------------------------------------------------------------------------------


@dataclass
class _Nem12:
    values: int = 0
    meters: set[tuple[str, str]] = field(default_factory=set)
    substituted: set[tuple[str, datetime, int]] = field(default_factory=set)  # meter, start, 300 line


def _nem12(path: Path) -> _Nem12:
    """Values per 300 record (1440 / the 200 record's interval length) and the F/S quality ranges of 400s."""
    out, meter, minutes, day, line_300 = _Nem12(), "", 0, date.min, 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        f = line.split(",")
        if f[0] == "200":  # 200,NMI,config,register,suffix,stream,serial,UOM,interval length,...
            meter, minutes = f"{f[1]}_{f[4]}", int(f[8])
            out.meters.add((meter, "import" if f[4].startswith("E") else "export"))
        elif f[0] == "300":
            out.values += 1440 // minutes
            day, line_300 = datetime.strptime(f[1], "%Y%m%d").date(), number
        elif f[0] == "400" and f[3][:1] in ("F", "S"):  # 400,first,last,quality method,...
            midnight = datetime.combine(day, time(), ZoneInfo("Australia/Brisbane")).astimezone(UTC)
            for i in range(int(f[1]), int(f[2]) + 1):
                out.substituted.add((meter, midnight + (i - 1) * timedelta(minutes=minutes), line_300))
    return out


def test_nem12(platform: LocalPlatform) -> None:
    # examples/data/nem12: patrickvorgers/Home-Assistant-Import-Energy-Data @ 3d2ee18,
    # Datasources/NEM12/Sample files/power-redacted.csv, MIT.
    nem = _nem12(DATA / "nem12" / "power-redacted.csv")

    result = _load(platform, "nem12")

    assert _rows_read(result) == nem.values == 212 * 288
    assert _quarantined(platform, result) == {}
    # Every 300 record is a whole day of 288 five-minute values, with no day missing in between.
    _assert_estimates(result, {})

    silver = _table(platform, "silver_readings")
    assert set(zip(silver.meter_id, silver.direction, strict=True)) == nem.meters
    # A 300 record of quality V takes its intervals' quality from 400 records: F19 (final substitute)
    # on intervals 1-98 of 2023-10-19, twice (E1 and B1 channels).
    substituted = silver[silver.quality_flag == "substituted"]
    assert len(nem.substituted) == 196
    assert (
        set(
            zip(
                substituted.meter_id,
                _utc(substituted.interval_start_utc),
                substituted.line_number.astype(int),
                strict=True,
            )
        )
        == nem.substituted
    )
    assert silver.quality_flag.value_counts().to_dict() == {"actual": nem.values - 196, "substituted": 196}


# --- Green Button ---------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _interval_readings(path: Path) -> tuple[list[tuple[float, int, float]], set[tuple[str, str]]]:
    """(start epoch seconds, duration seconds, value) of every IntervalReading, and (uom, powerOfTen) seen."""
    readings, units = [], set()
    for _, element in ET.iterparse(path):
        name = _local(element.tag)
        if name == "IntervalReading":
            fields = {_local(e.tag): e.text or "" for e in element.iter()}
            readings.append((float(fields["start"]), int(fields["duration"]), float(fields["value"])))
        elif name == "ReadingType":
            fields = {_local(e.tag): e.text or "" for e in element.iter()}
            units.add((fields.get("uom", ""), fields.get("powerOfTenMultiplier", "")))
    return readings, units


def _tz_offsets(path: Path) -> set[int]:
    """The tzOffset of the file's LocalTimeParameters: seconds from UTC, standard time."""
    return {int(e.text or "") for _, e in ET.iterparse(path) if _local(e.tag) == "tzOffset"}


def test_greenbutton(platform: LocalPlatform) -> None:
    # examples/data/greenbutton: vladistan/greenbutton_objects @ 0724a47, tests/data/, Apache-2.0.
    coastal = "Coastal_Multi_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_5.xml"
    nist = "TestGBDataHourlyNineDaysBinnedDaily.xml"
    gas = "ngma_gas_provider_2024-07-16.xml"
    sources = ("greenbutton", "greenbutton_eastern")
    # One source per local zone; each source's files as its `path` glob selects them.
    files = {s: {p.name: p for p in sorted(CONFIG.parent.glob(SOURCES[s]["path"]))} for s in sources}
    assert {s: set(names) for s, names in files.items()} == {
        "greenbutton": {coastal},
        "greenbutton_eastern": {nist, gas},
    }
    path = {name: p for names in files.values() for name, p in names.items()}
    parsed = {name: _interval_readings(p) for name, p in path.items()}
    zone = {s: SOURCES[s]["series_timezone"] for s in sources}
    # LocalTimeParameters tzOffset is the standard-time offset: -28800 (UTC-8) in the Coastal file,
    # -18000 (UTC-5) in the NIST file, Los Angeles and New York in winter. (The NGMA gas sample writes
    # +18000; all its readings are quarantined below, so no zone applies to them.)
    for source, name in (("greenbutton", coastal), ("greenbutton_eastern", nist)):
        standard = ZoneInfo(zone[source]).utcoffset(datetime(2011, 1, 1))
        assert standard is not None and _tz_offsets(path[name]) == {int(standard.total_seconds())}
    assert (zone["greenbutton"], zone["greenbutton_eastern"]) == ("America/Los_Angeles", "America/New_York")
    assert _tz_offsets(path[gas]) == {18_000}

    pacific = _load(platform, "greenbutton")
    eastern = _load(platform, "greenbutton_eastern")

    # One row per IntervalReading of the source's files.
    assert _rows_read(pacific) == len(parsed[coastal][0]) == 8_760
    assert _rows_read(eastern) == len(parsed[nist][0]) + len(parsed[gas][0]) == 216 + 36
    # A reading's length must be whole minutes dividing a day: the gas file's monthly readings
    # (28-33 days) fail interval_invalid before their (absent) energy unit is looked at.
    invalid = {
        s: [d for name in files[s] for _, d, _ in parsed[name][0] if d % 60 or 1440 % (d // 60)] for s in sources
    }
    assert {d // 86_400 for d in invalid["greenbutton_eastern"]} == set(range(28, 34))
    assert _quarantined(platform, pacific) == {} and invalid["greenbutton"] == []
    assert _quarantined(platform, eastern) == {"interval_invalid": len(invalid["greenbutton_eastern"])}
    assert len(invalid["greenbutton_eastern"]) == len(parsed[gas][0]) == 36
    # Each hourly file is whole local days of its source's zone, every hour read: the Coastal file
    # 2011-01-01T08:00Z .. 2012-01-01T07:00Z is Pacific midnight 1/1/2011 to midnight 1/1/2012, the NIST
    # file 2014-01-01T05:00Z .. 2014-01-10T04:00Z Eastern midnight to midnight, 9 days. No gap, so nothing
    # is estimated.
    hours: dict[str, Counter[date]] = {}
    for source, name in (("greenbutton", coastal), ("greenbutton_eastern", nist)):
        starts = sorted(datetime.fromtimestamp(s, UTC) for s, _, _ in parsed[name][0])
        local = ZoneInfo(zone[source])
        first_day, last_day = starts[0].astimezone(local).date(), starts[-1].astimezone(local).date()
        assert starts == _grid(first_day, last_day, zone[source], HOUR)
        hours[name] = Counter(t.astimezone(local).date() for t in starts)
    assert (min(hours[coastal]), max(hours[coastal])) == (date(2011, 1, 1), date(2011, 12, 31))
    assert (min(hours[nist]), max(hours[nist]), len(hours[nist])) == (date(2014, 1, 1), date(2014, 1, 9), 9)
    # Read in New York time instead, the Coastal file would leave its first and last New York days short:
    # 05:00-07:00Z before its first reading (3 h, one-sided: flat) and the 21 hours of 1/1/2012 after its
    # last (like-day), estimates that a Pacific zone does not need.
    eastern_zone = zone["greenbutton_eastern"]
    coastal_starts = sorted(datetime.fromtimestamp(s, UTC) for s, _, _ in parsed[coastal][0])
    first_eastern_day = coastal_starts[0].astimezone(ZoneInfo(eastern_zone)).date()
    head = coastal_starts[0] - _midnight_utc(first_eastern_day, eastern_zone)
    tail = _rest_of_day(coastal_starts[-1] + HOUR, eastern_zone, HOUR)
    assert (head // HOUR, tail) == (3, 21) and head <= timedelta(minutes=MAX_FLAT_MINUTES) < tail * HOUR
    _assert_estimates(pacific, {})
    _assert_estimates(eastern, {})
    assert _estimated(platform).empty

    # uom 72 is Wh with powerOfTenMultiplier 0: Wh / 1000 = kWh, at the epoch-second UTC starts.
    silver = _table(platform, "silver_readings")
    meter: dict[str, str] = {}
    for source, name in (("greenbutton", coastal), ("greenbutton_eastern", nist)):
        readings, units = parsed[name]
        assert units == {("72", "0")}
        mine = silver[(silver.source_file == str(path[name])) & silver.line_number.notna()]
        assert set(mine.source) == {source}
        assert sorted(_utc(mine.interval_start_utc)) == sorted(datetime.fromtimestamp(s, UTC) for s, _, _ in readings)
        assert mine.energy_kwh.sum() == pytest.approx(sum(v for _, _, v in readings) / 1000)
        (meter[name],) = set(mine.meter_id)  # the UsagePoint of the file's readings
    first = silver[silver.interval_start_utc == pd.Timestamp("2011-01-01T08:00Z")]
    assert first.energy_kwh.tolist() == [pytest.approx(parsed[coastal][0][0][2] / 1000)] == [pytest.approx(0.45)]

    gold = _table(platform, "gold_daily_meter_energy")
    # Each meter's days are local days of its own source's zone.
    assert dict(zip(gold.meter_id, gold.timezone, strict=True)) == {
        meter[coastal]: "America/Los_Angeles",
        meter[nist]: "America/New_York",
    }
    # Every Pacific day of 2011 has all its hours, 24 of 24, except the DST days: 23 on 13 March (02:00
    # is skipped) and 25 on 6 November (01:00 twice). The file has 8,760 readings = 365 x 24.
    year = [date(2011, 1, 1) + timedelta(days=i) for i in range(365)]
    assert list(hours[coastal]) == year and all(
        hours[coastal][d] == len(_grid(d, d, zone["greenbutton"], HOUR)) for d in year
    )
    assert {d: n for d, n in hours[coastal].items() if n != 24} == {date(2011, 3, 13): 23, date(2011, 11, 6): 25}
    for name in (coastal, nist):
        mine = gold[gold.meter_id == meter[name]]
        assert sorted(
            zip(
                mine.local_date,
                mine.interval_count,
                mine.actual_interval_count,
                mine.expected_interval_count,
                strict=True,
            )
        ) == [(day, n, n, n) for day, n in sorted(hours[name].items())]
        assert set(mine.completeness) == {1.0}
    assert set(hours[nist].values()) == {24}


# --- TenneT and TransnetBW wind -------------------------------------------------------------------

TSO = DATA / "tso_wind"


def test_tennet_wind(platform: LocalPlatform) -> None:
    # examples/data/tso_wind: Open-Power-System-Data/time_series @ cc7ef86, downloads/, MIT (repository),
    # the operators' terms apply.
    config = SOURCES["tennet_wind"]
    zone = config["series_timezone"]
    rows = []
    for path in sorted(TSO.glob("TenneT_*.csv")):
        current = ""
        for r in _records(path, delimiter=";", encoding="latin-1", skip=3):
            current = r["Datum"] or current  # the date only on a day's first row
            rows.append({**r, "Datum": current})
    series = config["series"]

    result = _load(platform, "tennet_wind")

    assert _rows_read(result) == len(rows) * len(series) == (31 * 96 + 30 * 96 + 100) * 2
    # On the spring-forward day (92 quarter-hours) positions 9-12 are the zero-filled placeholders for
    # 02:00-02:45, a wall time that does not exist: 4 positions x 2 series.
    in_gap = [
        r
        for r in rows
        if _in_gap(datetime.fromisoformat(r["Datum"]) + (int(r["Position"]) - 1) * QUARTER, zone)
        and len(_grid(date.fromisoformat(r["Datum"]), date.fromisoformat(r["Datum"]), zone, QUARTER)) == 92
    ]
    assert {(r["Datum"], r["Position"]) for r in in_gap} == {("2006-03-26", str(p)) for p in range(9, 13)}
    assert _quarantined(platform, result) == {"timestamp_in_dst_gap": len(in_gap) * len(series)}
    assert len(in_gap) * len(series) == 8
    # Those placeholders are not missing intervals: every day, DST days included, is complete.
    _assert_estimates(result, {})

    gold = _table(platform, "gold_daily_meter_energy")
    for day, quarter_hours in ((date(2006, 3, 26), 92), (date(2006, 10, 29), 100)):
        assert len(_grid(day, day, zone, QUARTER)) == quarter_hours
        that_day = gold[gold.local_date == day]
        assert len(that_day) == 2
        assert set(that_day.interval_count) == set(that_day.expected_interval_count) == {quarter_hours}
    # Position 1 of 2006-03-01 is local midnight; MW over a quarter-hour -> kWh = MW x 250.
    silver = _table(platform, "silver_readings").set_index(["meter_id", "interval_start_utc"])
    first = rows[0]
    assert (first["Datum"], first["Position"]) == ("2006-03-01", "1")
    for s in series:
        kwh = silver.loc[(s["meter_id"], pd.Timestamp(_midnight_utc(date(2006, 3, 1), zone))), "energy_kwh"]
        assert kwh == pytest.approx(_number(first[s["column"]]) * 250)


@dataclass
class _Tso:
    """A TransnetBW file read as the source declares it: (meter, UTC start) -> MW, the later row winning."""

    rows: int
    missing: int
    duplicates: int
    values: dict[tuple[str, datetime], float]


def _transnetbw(path: Path) -> _Tso:
    config = SOURCES["transnetbw_wind"]
    zone = ZoneInfo(config["timestamp_timezone"])
    records = _records(path, delimiter=";")
    seen: Counter[datetime] = Counter()
    missing = duplicates = 0
    values: dict[tuple[str, datetime], float] = {}
    for r in records:
        wall = datetime.strptime(f"{r['Datum von']} {r['Uhrzeit von']}", config["timestamp_format"])
        # ambiguous_time = "order": in the repeated hour the first occurrence is the earlier one.
        fold = min(seen[wall], 1) if _ambiguous(wall, config["timestamp_timezone"]) else 0
        seen[wall] += 1
        start = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        for s in config["series"]:
            if r[s["column"]] == "":
                missing += 1
                continue
            duplicates += (s["meter_id"], start) in values
            values[(s["meter_id"], start)] = _number(r[s["column"]])
    return _Tso(len(records), missing, duplicates, values)


def _tso_gaps(tso: _Tso, first: date, last: date) -> Counter[str]:
    """Estimates per method for the quarter-hours of first..last that the file has no value for."""
    zone = SOURCES["transnetbw_wind"]["series_timezone"]
    grid = _grid(first, last, zone, QUARTER)
    methods: Counter[str] = Counter()
    for s in SOURCES["transnetbw_wind"]["series"]:
        methods += _between_reads(_runs((t for t in grid if (s["meter_id"], t) not in tso.values), QUARTER), QUARTER)
    return methods


def test_transnetbw_wind_corrected_reissue_replaces_the_original(platform: LocalPlatform) -> None:
    # examples/data/tso_wind: Open-Power-System-Data/time_series @ cc7ef86, downloads/, MIT (repository),
    # the operators' terms apply.
    original = TSO / "TransnetBW_wind_8[mwindeinsp_ist_prognose_2015_03.csv].csv"
    corrected = TSO / "TransnetBW_wind_8(mwindeinsp_ist_prognose_2015_03.csv)_KORRIGIERT.csv"
    october = TSO / "TransnetBW_wind_1[mwindeinsp_ist_prognose_2015_10.csv].csv"
    zone = SOURCES["transnetbw_wind"]["series_timezone"]
    n_series = len(SOURCES["transnetbw_wind"]["series"])
    old, new = _transnetbw(original), _transnetbw(corrected)

    first = _load(platform, "transnetbw_wind", original)

    assert _rows_read(first) == old.rows * n_series == 2_972 * 2
    # Prognose is empty for the whole of 29.03.2015 (92 quarter-hours) in both files.
    assert _quarantined(platform, first) == {"value_missing": old.missing} == {"value_missing": 92}
    # The original's quirk: on 29.03 the rows for 03:45-04:45 are labelled "Uhrzeit von" 05:45, 05:00,
    # 05:15, 05:30, 05:45 ("Uhrzeit bis" is right). So 05:00-05:30 come twice and 05:45 three times
    # (5 duplicates; the later row, the true one, wins) and 03:45-04:45 are missing: a 75-minute gap in
    # the actual series, interpolated linearly. The forecast's empty day is filled like-day (92).
    assert first.reconciliation is not None and first.reconciliation.duplicates_replaced == old.duplicates == 5
    march = (date(2015, 3, 1), date(2015, 3, 31))
    _assert_estimates(first, dict(_tso_gaps(old, *march)))
    assert first.estimates == {"linear": 5, "like_day": 92}
    version = DeltaTable(platform.store.location("silver_readings")).version()

    second = _load(platform, "transnetbw_wind", corrected)

    rec = second.reconciliation
    assert rec is not None and _rows_read(second) == new.rows * n_series == 2_972 * 2
    assert _quarantined(platform, second) == {"value_missing": new.missing} == {"value_missing": 92}
    assert rec.duplicates_replaced == new.duplicates == 0
    # The re-issue changes no value at an interval both files have (after decimal-comma parsing; the
    # original writes "105,00", the re-issue "105"); it only relabels the 5 rows above.
    changed = {k for k, v in new.values.items() if k in old.values and old.values[k] != v}
    relabelled = set(new.values) - set(old.values)
    assert changed == set() and set(old.values) <= set(new.values)
    assert sorted(t.isoformat() for _, t in relabelled) == [
        f"2015-03-29T{h}:00+00:00" for h in ("01:45", "02:00", "02:15", "02:30", "02:45")
    ]
    # The forecast's empty day is estimated again, to the same values (unchanged, not updated).
    _assert_estimates(second, {"like_day": 92})
    before, after = (_table(platform, "silver_readings", v) for v in (version, None))
    keys = ["meter_id", "direction", "interval_start_utc"]
    both = before.merge(after, on=keys, suffixes=("_before", "_after"), validate="one_to_one")
    assert len(both) == len(before) == len(after) and rec.silver_inserted == 0
    value_changed = both[both.energy_kwh_before != both.energy_kwh_after]
    # Exactly the relabelled intervals get new values: the reads replace batch 1's linear estimates.
    assert set(zip(value_changed.meter_id, _utc(value_changed.interval_start_utc), strict=True)) == relabelled
    assert {k: v * 250 for k, v in new.values.items() if k in relabelled} == pytest.approx(
        dict(
            zip(
                zip(value_changed.meter_id, _utc(value_changed.interval_start_utc), strict=True),
                value_changed.energy_kwh_after,
                strict=True,
            )
        )
    )
    # silver_updated is 92, not 5: with its 5 gaps read, 29.03 of the actual series is now a complete day,
    # so high_low judges it (9.8 GWh, 4.4x the mean of the 28 days before, above high_ratio 3) and flags
    # all its 92 quarter-hours; a changed validation_flags is an update too.
    updated = both[both.batch_id_after == second.batch_id]
    day_29 = _grid(date(2015, 3, 29), date(2015, 3, 29), zone, QUARTER)
    assert set(zip(updated.meter_id, _utc(updated.interval_start_utc), strict=True)) == {
        ("transnetbw:wind_actual", t) for t in day_29
    }
    assert rec.silver_updated == len(updated) == len(day_29) == 92
    flags_only = updated[updated.energy_kwh_before == updated.energy_kwh_after]
    assert len(flags_only) == 92 - len(relabelled)
    assert set(flags_only.validation_flags_before) == {""} and set(flags_only.validation_flags_after) == {"high_low"}
    assert rec.silver_unchanged == rec.rows_accepted - rec.silver_updated + rec.rows_estimated

    oct_ = _transnetbw(october)
    third = _load(platform, "transnetbw_wind", october)

    assert _rows_read(third) == oct_.rows * n_series == (31 * 96 + 4) * 2
    assert _quarantined(platform, third) == {}
    # The fall-back day 25.10.2015: 02:00-02:30 twice, resolved by order; the second 02:45 is labelled
    # 03:45, so 03:45 comes twice (1 duplicate per series, the later, true 03:45 wins) and the second
    # 02:45 (01:45Z) is missing: one quarter-hour per series, interpolated linearly.
    assert third.reconciliation is not None and third.reconciliation.duplicates_replaced == oct_.duplicates == 2
    _assert_estimates(third, dict(_tso_gaps(oct_, date(2015, 10, 1), date(2015, 10, 31))))
    assert third.estimates == {"linear": 2}
    gold = _table(platform, "gold_daily_meter_energy")
    fall_back = gold[gold.local_date == date(2015, 10, 25)]
    assert len(_grid(date(2015, 10, 25), date(2015, 10, 25), zone, QUARTER)) == 100
    assert sorted(
        zip(fall_back.interval_count, fall_back.actual_interval_count, fall_back.expected_interval_count, strict=True)
    ) == [
        (100, 99, 100),
        (100, 99, 100),
    ]


# --- UCI household --------------------------------------------------------------------------------


def test_uci_household(platform: LocalPlatform) -> None:
    # examples/data/uci_household: LucasGigli/HVAC-Anomaly-detection @ af1abe3,
    # household_power_consumption.txt (the first 1 MiB of UCI's file), CC BY 4.0 (UCI).
    config = SOURCES["uci_household"]
    zone = config["series_timezone"]
    lines = (CONFIG.parent / config["path"]).read_text(encoding="utf-8").splitlines()
    header = lines[0].split(";")
    split = [line.split(";") for line in lines[1:]]
    complete = [dict(zip(header, f, strict=True)) for f in split if len(f) == len(header)]
    cut = [f for f in split if len(f) != len(header)]
    series = config["series"]
    markers = set(config.get("missing_values", DEFAULT_MISSING))

    def start(r: dict[str, str]) -> datetime:
        wall = datetime.strptime(f"{r['Date']} {r['Time']}", config["timestamp_format"])
        return wall.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)

    result = _load(platform, "uci_household")

    # Each complete line is one row per series; the cut last line is one malformed row.
    assert _rows_read(result) == len(complete) * len(series) + len(cut) == 15_922 * 4 + 1
    missing = [(s["meter_id"], start(r)) for r in complete for s in series if r[s["column"]] in markers]
    assert _quarantined(platform, result) == {"value_missing": len(missing), "malformed_row": len(cut)}
    assert (len(missing), len(cut)) == (8, 1)  # 21/12/2006 11:23 and 11:24: `?` x 3 and an empty Sub_metering_3
    # Every minute from the first line to the last complete one is in the file; the `?` minutes are 2-minute
    # gaps between reads (linear). The file is cut at 27/12/2006 18:46, so the rest of that local day
    # (314 minutes per series) is a one-sided gap longer than max_flat_minutes: left missing, not
    # invented from the days before.
    times = [start(r) for r in complete]
    assert all(b - a == MINUTE for a, b in itertools.pairwise(times))
    linear: Counter[str] = Counter()
    for s in series:
        linear += _between_reads(_runs([t for m, t in missing if m == s["meter_id"]], MINUTE), MINUTE)
    tail = _rest_of_day(times[-1] + MINUTE, zone, MINUTE)
    _assert_estimates(result, {"linear": linear["linear"]})
    assert result.estimates == {"linear": 8}
    # The first day before its first line is missing too, as before.
    assert tail == 314 and result.rule_counts["missing_intervals"] > tail * len(series)

    # Minute averages: kW over 1 minute -> kWh = kW / 60; sub-metering Wh -> kWh = Wh / 1000.
    silver = _table(platform, "silver_readings").set_index(["meter_id", "interval_start_utc"])
    first = complete[0]
    t0 = pd.Timestamp(start(first))
    assert t0 == pd.Timestamp("2006-12-16T16:24Z")  # 17:24 in Paris (UTC+1)
    assert silver.loc[("uci:active_power", t0), "energy_kwh"] == pytest.approx(float(first["Global_active_power"]) / 60)
    assert silver.loc[("uci:sub_metering_3", t0), "energy_kwh"] == pytest.approx(float(first["Sub_metering_3"]) / 1000)
    reads = silver[silver.line_number.notna()].loc["uci:active_power"]
    kw = [float(r["Global_active_power"]) for r in complete if r["Global_active_power"] not in markers]
    assert reads.energy_kwh.sum() == pytest.approx(sum(kw) / 60)


# --- README worked example ------------------------------------------------------------------------


def test_readme_worked_example(platform: LocalPlatform, tmp_path: Path) -> None:
    """The `acme` file and config of README's "Worked example" section, taken from README.md itself."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.split(r"\n#{2,3} ", readme.split("### Worked example", 1)[1], maxsplit=1)[0]
    csv_text = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    toml_text = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert csv_text is not None and toml_text is not None
    config_file = tmp_path / "sources.toml"
    config_file.write_text(toml_text.group(1), encoding="utf-8")
    acme = tomllib.loads(toml_text.group(1))["sources"]["acme"]
    landing = tmp_path / "landing" / "acme"
    landing.mkdir(parents=True)
    (landing / "acme_2025-06.csv").write_text(csv_text.group(1), encoding="utf-8")
    # The README's reading: the time labels the interval END, in German local time.
    expected = set()
    for r in _records(landing / "acme_2025-06.csv", delimiter=acme["delimiter"]):
        columns = acme["columns"]
        end = datetime.strptime(" ".join(r[c] for c in columns["timestamp"]), acme["timestamp_format"])
        end_utc = end.replace(tzinfo=ZoneInfo(acme["timestamp_timezone"])).astimezone(UTC)
        expected.add(
            (
                r[columns["meter_id"]].removeprefix('="').removesuffix('"'),
                end_utc - timedelta(minutes=acme["interval_minutes"]),
                acme["quality_values"][r[columns["quality"]]],
                _number(r[columns["value"]]),
            )
        )

    result = run_batch(platform, source_name="acme", config_file=config_file, now=NOW)

    assert result.status == "succeeded", result.error
    assert result.reconciliation is not None and result.reconciliation.balanced
    assert _rows_read(result) == len(expected) == 2
    assert _quarantined(platform, result) == {}
    silver = _table(platform, "silver_readings")
    loaded = sorted(
        zip(silver.meter_id, _utc(silver.interval_start_utc), silver.quality_flag, silver.energy_kwh, strict=True)
    )
    assert [row[:3] for row in loaded] == [row[:3] for row in sorted(expected)]
    assert [row[3] for row in loaded] == pytest.approx([row[3] for row in sorted(expected)])
    assert sorted(expected) == [
        ("DE0001", datetime(2025, 5, 31, 22, 0, tzinfo=UTC), "actual", 0.25),  # 01.06.2025 00:15 CEST, an end
        ("DE0001", datetime(2025, 5, 31, 22, 15, tzinfo=UTC), "substituted", 0.231),
    ]
    assert set(silver.direction) == {"import"} and set(silver.local_date) == {date(2025, 6, 1)}
