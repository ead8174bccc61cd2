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
from app.application.runner import Platform, run_batch
from app.domain.rules import RULE_NAMES

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


def _load(platform: Platform, source: str, path: Path | None = None) -> BatchResult:
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


def _table(platform: Platform, name: str, version: int | None = None) -> pd.DataFrame:
    return DeltaTable(platform.store.location(name), version=version).to_pyarrow_table().to_pandas()


def _quarantined(platform: Platform, result: BatchResult) -> dict[str, int]:
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


def _estimated(platform: Platform) -> pd.DataFrame:
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


def test_fluvius_electricity(platform: Platform) -> None:
    # examples/data/fluvius: patrickvorgers/Home-Assistant-Import-Energy-Data @ 3d2ee18, MIT.
    path = FLUVIUS / "Consumption_history_electricity_541448820052377134_20231022_20250426_15 minute totals.csv"
    rows = _records(path, delimiter=";", encoding="utf-8-sig")
    directions = SOURCES["fluvius_electricity"]["direction_values"]

    result = _load(platform, "fluvius_electricity")

    assert _rows_read(result) == len(rows) == 13_640
    # An empty Volume (the two "No consumption" rows) is one of the default missing-value markers.
    empty = [r for r in rows if r["Volume"] == ""]
    assert _quarantined(platform, result) == {"value_missing": len(empty)} == {"value_missing": 2}
    # Both empty volumes are the file's first quarter-hour (22/10/2023 00:00, one per direction):
    # one-sided gaps at the start of each series, flat-filled from the 00:15 read.
    assert {(r["From (date)"], r["From (time)"]) for r in empty} == {("22/10/2023", "00:00:00")}
    _assert_estimates(result, {"flat": 2})
    next_read = {
        directions[r["Register"]]: _number(r["Volume"])
        for r in rows
        if (r["From (date)"], r["From (time)"]) == ("22/10/2023", "00:15:00")
    }
    first_start = _midnight_utc(date(2023, 10, 22), "Europe/Brussels")
    estimated = _estimated(platform)
    assert {(r.direction, r.interval_start_utc.to_pydatetime()) for r in estimated.itertuples()} == {
        ("import", first_start),
        ("export", first_start),
    }
    for r in estimated.itertuples():
        assert r.energy_kwh == pytest.approx(next_read[r.direction])

    gold = _table(platform, "gold_daily_meter_energy")
    # Offtake registers are import, Injection registers export: gold daily has both, every day of the file.
    days = {datetime.strptime(r["From (date)"], "%d/%m/%Y").date() for r in rows}
    for direction in ("import", "export"):
        mine = gold[gold.direction == direction]
        assert set(mine.local_date) == days and len(days) == 71
        read_kwh = sum(_number(r["Volume"]) for r in rows if directions[r["Register"]] == direction and r["Volume"])
        assert mine.energy_kwh.sum() == pytest.approx(read_kwh + next_read[direction])
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


def test_fluvius_electricity_nl(platform: Platform) -> None:
    # examples/data/fluvius: patrickvorgers/Home-Assistant-Import-Energy-Data @ 3d2ee18, MIT.
    path = FLUVIUS / "Verbruikshistoriek_elektriciteit_123456789123456789_20211012_20240929_kwartiertotalen.csv"
    rows = _records(path, delimiter=";", encoding="utf-8-sig")

    result = _load(platform, "fluvius_electricity_nl")

    assert _rows_read(result) == len(rows) == 3_848
    # "Geen verbruik" rows carry an empty Volume, a default missing-value marker: two thirds of the file.
    empty = [r for r in rows if r["Volume"] == ""]
    assert {r["Validatiestatus"] for r in empty} == {"Geen verbruik"}
    assert _quarantined(platform, result) == {"value_missing": len(empty)} == {"value_missing": 2_566}
    # Estimation tries to fill the empty slots. Most are gaps longer than 3 h between reads, so like-day:
    # the mean of the reads at the same clock time on the same weekday 1-4 weeks earlier. The file starts
    # on 12/10/2021, so the first week has no earlier week, and the empty slots mostly recur at the same
    # clock times every week (night register, no consumption), so only 53 find a read. 35 of them are the
    # export of Monday 25/10 (no injection read that day; Monday 18/10 had 35 at those times).
    _assert_estimates(result, {"like_day": 53})
    estimated = _estimated(platform)
    assert estimated.groupby(["direction", "local_date"]).size().to_dict() == {
        ("export", date(2021, 10, 19)): 2,
        ("export", date(2021, 10, 21)): 3,
        ("export", date(2021, 10, 25)): 35,
        ("export", date(2021, 10, 27)): 1,
        ("export", date(2021, 10, 28)): 1,
        ("export", date(2021, 10, 29)): 3,
        ("import", date(2021, 10, 19)): 2,
        ("import", date(2021, 10, 21)): 3,
        ("import", date(2021, 10, 28)): 1,
        ("import", date(2021, 10, 29)): 2,
    }

    silver = _table(platform, "silver_readings")
    # "Geschat" (the operator's estimate) maps to quality "estimated" without an estimation method.
    by_source = silver[(silver.quality_flag == "estimated") & silver.estimation_method.isna()]
    assert len(by_source) == sum(r["Validatiestatus"] == "Geschat" for r in rows) == 354
    gold = _table(platform, "gold_daily_meter_energy")
    imports = gold[gold.direction == "import"]
    # A meter-day with no value at all has no gold row: 16-17 and 30-31/10 are all "Geen verbruik".
    offtake_days = {
        datetime.strptime(r["Van datum"], "%d-%m-%Y").date()
        for r in rows
        if r["Register"].startswith("Afname") and r["Volume"]
    }
    assert set(imports.local_date) == offtake_days and len(offtake_days) == 16
    # Completeness counts read minutes: on 12/10 the 36 validated offtake quarter-hours of 96.
    read_12 = sum(
        r["Van datum"] == "12-10-2021" and r["Register"].startswith("Afname") and r["Volume"] != "" for r in rows
    )
    assert imports[imports.local_date == date(2021, 10, 12)].completeness.item() == pytest.approx(read_12 / 96)
    assert read_12 == 36


def test_fluvius_gas(platform: Platform) -> None:
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


def test_dsmr_hourly(platform: Platform) -> None:
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
    # 24 h from 2020-08-03 05:00Z and 25 h on the fall-back day 2023-11-05 (like-day 115) + 5 h after
    # the file's last hour that still belong to New York's 2024-12-31 (like-day: 120).
    "eia930_pjm": ({"value_missing": 116, "above_physical_max": 3}, {"linear": 4, "like_day": 120}, 0),
    # SEC: 181 EMPTY + 58 MISSING; negative demand on an import channel. 1,543 bad hours: the runs of up
    # to 3 h hold 576 (linear); the longer runs hold 967, of which 437 are filled like-day (+5 h after
    # the file's end = 442). The other 530 stay missing: the runs of January 2020, 87 h from the file's
    # first hour (no read before), 67 h from 2020-01-04 16:00Z (no read a week earlier), 207 h from
    # 2020-01-07 12:00Z and 169 h from 2020-01-16 05:00Z (longer than max_gap_days = 7 days).
    "eia930_sec": ({"value_missing": 239, "negative_import": 1_304}, {"linear": 576, "like_day": 442}, 530),
    # TVA: 48 EMPTY in two 24 h runs (2020-10-31 and 2021-11-06 06:00Z: like-day) + 6 h after the
    # file's end (Chicago is UTC-6) = 54; six single hours (4 negative, 9,931,754 MW on 2024-01-21 and
    # 949,163 MW on 2024-04-13) are linear.
    "eia930_tva": (
        {"value_missing": 48, "negative_import": 4, "above_physical_max": 2},
        {"linear": 6, "like_day": 54},
        0,
    ),
}


@pytest.mark.parametrize("source", sorted(EIA))
def test_eia930(platform: Platform, source: str) -> None:
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
    # local day, and the rest of the day is filled like-day (a one-sided gap longer than 3 h).
    hour = [datetime.fromisoformat(r["date_time"]).replace(tzinfo=UTC) for r in rows]
    runs = _runs((hour[line - 2] for line in bad), HOUR)
    derived = _between_reads(runs, HOUR)
    derived["like_day"] += _rest_of_day(hour[-1] + HOUR, config["series_timezone"], HOUR) - unfilled
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


def test_aemo_demand(platform: Platform) -> None:
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


def test_nem12(platform: Platform) -> None:
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


def test_greenbutton(platform: Platform) -> None:
    # examples/data/greenbutton: vladistan/greenbutton_objects @ 0724a47, tests/data/, Apache-2.0.
    zone = SOURCES["greenbutton"]["series_timezone"]
    files = {p.name: p for p in sorted((DATA / "greenbutton").glob("*.xml"))}
    parsed = {name: _interval_readings(path) for name, path in files.items()}
    coastal = "Coastal_Multi_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_5.xml"
    hourly = (coastal, "TestGBDataHourlyNineDaysBinnedDaily.xml")

    result = _load(platform, "greenbutton")

    assert _rows_read(result) == sum(len(r) for r, _ in parsed.values()) == 8_760 + 216 + 36
    # A reading's length must be whole minutes dividing a day: the gas file's monthly readings
    # (29-33 days) fail interval_invalid before their (absent) energy unit is looked at.
    invalid = [d for readings, _ in parsed.values() for _, d, _ in readings if d % 60 or 1440 % (d // 60)]
    assert _quarantined(platform, result) == {"interval_invalid": len(invalid)} == {"interval_invalid": 36}
    # The Coastal file runs 2011-01-01T08:00Z .. 2012-01-01T08:00Z: midnight to midnight in its own zone
    # (LocalTimeParameters tzOffset -28800, Pacific), but the source declares America/New_York. Its first
    # New York day lacks 05:00-07:00Z (3 h, one-sided: flat) and the last reading (07:00Z = 02:00 New York
    # on 2012-01-01) touches a day whose other 21 hours are filled like-day from the weeks before.
    starts = sorted(datetime.fromtimestamp(s, UTC) for s, _, _ in parsed[coastal][0])
    head = (starts[0] - _midnight_utc(starts[0].astimezone(ZoneInfo(zone)).date(), zone)) // HOUR
    tail = _rest_of_day(starts[-1] + HOUR, zone, HOUR)
    assert head * 60 <= MAX_FLAT_MINUTES < tail * 60
    _assert_estimates(result, {"flat": head, "like_day": tail})
    assert (head, tail) == (3, 21)
    estimated = _estimated(platform)
    assert set(estimated.local_date) == {date(2011, 1, 1), date(2012, 1, 1)}

    # uom 72 is Wh with powerOfTenMultiplier 0: Wh / 1000 = kWh, at the epoch-second UTC starts.
    silver = _table(platform, "silver_readings")
    for name in hourly:
        readings, units = parsed[name]
        assert units == {("72", "0")}
        mine = silver[(silver.source_file == str(files[name])) & silver.line_number.notna()]
        assert sorted(_utc(mine.interval_start_utc)) == sorted(datetime.fromtimestamp(s, UTC) for s, _, _ in readings)
        assert mine.energy_kwh.sum() == pytest.approx(sum(v for _, _, v in readings) / 1000)
    first = silver[silver.interval_start_utc == pd.Timestamp("2011-01-01T08:00Z")]
    assert first.energy_kwh.tolist() == [pytest.approx(parsed[coastal][0][0][2] / 1000)] == [pytest.approx(0.45)]


# --- TenneT and TransnetBW wind -------------------------------------------------------------------

TSO = DATA / "tso_wind"


def test_tennet_wind(platform: Platform) -> None:
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


def test_transnetbw_wind_corrected_reissue_replaces_the_original(platform: Platform) -> None:
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


def test_uci_household(platform: Platform) -> None:
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
    # (314 minutes per series) is a one-sided gap filled like-day from the days before.
    times = [start(r) for r in complete]
    assert all(b - a == MINUTE for a, b in itertools.pairwise(times))
    linear: Counter[str] = Counter()
    for s in series:
        linear += _between_reads(_runs([t for m, t in missing if m == s["meter_id"]], MINUTE), MINUTE)
    tail = _rest_of_day(times[-1] + MINUTE, zone, MINUTE)
    _assert_estimates(result, {"linear": linear["linear"], "like_day": tail * len(series)})
    assert result.estimates == {"linear": 8, "like_day": 314 * 4}

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


def test_readme_worked_example(platform: Platform, tmp_path: Path) -> None:
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
