"""Series-level VEE on tiny hand-built Arrow tables: rules, estimation, DST-aware grids."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from app.domain.schemas import UTC_TIMESTAMP
from app.domain.sources import Estimation, Validation
from app.domain.vee import VeeParams, apply_vee, vee_schema

LONDON, BRUSSELS = "Europe/London", "Europe/Brussels"
#: A Monday in summer (BST): local midnight is 23:00 UTC the day before.
MONDAY = date(2025, 6, 16)

SCHEMA = pa.schema(
    [
        ("meter_id", pa.string()),
        ("direction", pa.string()),
        ("interval_start_utc", UTC_TIMESTAMP),
        ("interval_minutes", pa.int32()),
        ("energy_kwh", pa.float64()),
        ("reported_kwh", pa.float64()),
        ("quality_flag", pa.string()),
        ("rejection_rule", pa.string()),
        ("role", pa.string()),
        ("local_date", pa.date32()),
        ("validation_flags", pa.string()),
        ("source_file", pa.string()),
    ]
)

Value = float | Callable[[int, datetime], float] | list[float]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def day_starts(day: date, zone: str, minutes: int) -> list[datetime]:
    """The expected UTC interval starts of a local day, stepped with zoneinfo."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(), tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), tz).astimezone(UTC)
    starts = []
    while start < end:
        starts.append(start)
        start += timedelta(minutes=minutes)
    return starts


def reading(
    start: datetime,
    value: float | None,
    *,
    role: str = "batch",
    meter: str = "M1",
    direction: str = "import",
    minutes: int = 30,
    zone: str = LONDON,
    rule: str | None = None,
    quality: str = "actual",
    flags: str = "",
) -> dict[str, Any]:
    return {
        "meter_id": meter,
        "direction": direction,
        "interval_start_utc": start,
        "interval_minutes": minutes,
        "energy_kwh": None if rule else value,
        "reported_kwh": value,
        "quality_flag": quality,
        "rejection_rule": rule,
        "role": role,
        "local_date": start.astimezone(ZoneInfo(zone)).date(),
        "validation_flags": flags,
        "source_file": "in.csv" if role == "batch" else None,
    }


def day_rows(
    day: date,
    values: Value = 1.0,
    *,
    skip: set[int] | range = frozenset(),
    zone: str = LONDON,
    minutes: int = 30,
    **kw: Any,
) -> list[dict[str, Any]]:
    """One local day of readings; `values` a constant, a list by position, or f(position, start)."""
    rows = []
    for i, start in enumerate(day_starts(day, zone, minutes)):
        if i in skip:
            continue
        if callable(values):
            value = values(i, start)
        elif isinstance(values, list):
            value = values[i]
        else:
            value = values
        rows.append(reading(start, value, zone=zone, minutes=minutes, **kw))
    return rows


def history(days: list[date], values: Value = 1.0, **kw: Any) -> list[dict[str, Any]]:
    return [row for day in days for row in day_rows(day, values, role="history", **kw)]


def table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def params(
    zone: str = LONDON, *, validation: Validation | None = None, estimation: Estimation | None = None, **extra: Any
) -> VeeParams:
    severities = {rule: extra.pop(rule) for rule in ("spike", "high_low", "zero_run") if rule in extra}
    return VeeParams(zone, validation or Validation(), estimation or Estimation(), severities, **extra)


def run(rows: list[dict[str, Any]], p: VeeParams | None = None) -> pa.Table:
    result = apply_vee(table(rows), p or params())
    assert result.schema == vee_schema(SCHEMA)
    assert set(result["role"].to_pylist()) <= {"batch", "estimate", "missing"}
    return result


def role(result: pa.Table, name: str) -> list[dict[str, Any]]:
    return result.filter(pc.equal(result["role"], name)).to_pylist()


def estimates(result: pa.Table) -> list[tuple[datetime, float, str]]:
    return [(r["interval_start_utc"], r["energy_kwh"], r["estimation_method"]) for r in role(result, "estimate")]


def missing(result: pa.Table, day: date | None = None) -> list[datetime]:
    """Missing interval starts, of local day `day` only if given."""
    return [r["interval_start_utc"] for r in role(result, "missing") if day is None or r["local_date"] == day]


def flags(result: pa.Table) -> dict[datetime, str]:
    return {r["interval_start_utc"]: r["validation_flags"] for r in role(result, "batch") if r["validation_flags"]}


def at(day: date, index: int, zone: str = LONDON, minutes: int = 30) -> datetime:
    return day_starts(day, zone, minutes)[index]


# --- estimation ----------------------------------------------------------------------------------


def test_linear_fill_of_a_two_interval_gap() -> None:
    values = [1.0] * 48
    values[12] = 4.0
    result = run(day_rows(MONDAY, values, skip={10, 11}))

    assert estimates(result) == [(utc(2025, 6, 16, 4, 0), 2.0, "linear"), (utc(2025, 6, 16, 4, 30), 3.0, "linear")]
    assert missing(result) == []
    assert len(role(result, "batch")) == 46
    first = role(result, "estimate")[0]
    assert first == {
        "meter_id": "M1",
        "direction": "import",
        "interval_start_utc": utc(2025, 6, 16, 4, 0),
        "interval_minutes": 30,
        "energy_kwh": 2.0,
        "reported_kwh": None,
        "quality_flag": "estimated",
        "rejection_rule": None,
        "role": "estimate",
        "local_date": MONDAY,
        "validation_flags": "",
        "source_file": None,
        "estimation_method": "linear",
    }
    batch = role(result, "batch")
    assert {r["source_file"] for r in batch} == {"in.csv"}
    assert {r["estimation_method"] for r in batch} == {None}


def test_like_day_fills_a_six_hour_gap_with_the_mean_of_previous_weeks() -> None:
    gap = range(20, 32)  # local 10:00-16:00: 360 minutes, longer than linear's 180
    rows = [
        *day_rows(MONDAY, 5.0, skip=gap),
        *history([MONDAY - timedelta(days=7)], lambda i, _: float(i)),
        *history([MONDAY - timedelta(days=14)], lambda i, _: float(i) + 2.0),
    ]
    result = run(rows)

    assert estimates(result) == [(at(MONDAY, i), float(i) + 1.0, "like_day") for i in gap]
    assert missing(result) == []


def test_like_day_ignores_estimated_history_and_uses_the_configured_weeks() -> None:
    gap = range(20, 32)
    rows = [
        *day_rows(MONDAY, 5.0, skip=gap),
        *history([MONDAY - timedelta(days=7)], 1.0),
        *history([MONDAY - timedelta(days=14)], 3.0, quality="substituted"),
        *history([MONDAY - timedelta(days=21)], 100.0, quality="estimated"),
        *history([MONDAY - timedelta(days=28)], 7.0),
    ]
    result = run(rows, params(estimation=Estimation(like_day_weeks=3)))

    assert {value for _, value, _ in estimates(result)} == {2.0}


def test_like_day_without_history_leaves_the_gap_missing() -> None:
    gap = range(20, 32)
    result = run(day_rows(MONDAY, 5.0, skip=gap))

    assert estimates(result) == []
    assert missing(result) == [at(MONDAY, i) for i in gap]
    row = role(result, "missing")[0]
    assert (row["energy_kwh"], row["estimation_method"], row["quality_flag"], row["local_date"]) == (
        None,
        None,
        None,
        MONDAY,
    )


def test_flat_fill_at_the_start_and_end_of_the_known_data() -> None:
    values = [1.0] * 48
    values[2], values[44] = 7.0, 9.0
    result = run(day_rows(MONDAY, values, skip={0, 1, 45, 46, 47}))

    assert estimates(result) == [
        (at(MONDAY, 0), 7.0, "flat"),
        (at(MONDAY, 1), 7.0, "flat"),
        (at(MONDAY, 45), 9.0, "flat"),
        (at(MONDAY, 46), 9.0, "flat"),
        (at(MONDAY, 47), 9.0, "flat"),
    ]


def test_gap_longer_than_max_gap_days_is_missing() -> None:
    later = MONDAY + timedelta(days=2)
    rows = [*day_rows(MONDAY, skip=range(24, 48)), *day_rows(later, skip=range(24))]
    result = run(rows, params(estimation=Estimation(max_gap_days=1)))

    assert estimates(result) == []
    assert missing(result) == [at(MONDAY, i) for i in range(24, 48)] + [at(later, i) for i in range(24)]
    # Within a longer reach the same gap is like-day, and without history still missing.
    wider = run(rows, params(estimation=Estimation(max_gap_days=3)))
    assert missing(wider) == missing(result)


def test_a_gap_across_midnight_is_estimated_again_on_both_days_when_its_second_side_arrives() -> None:
    """Reproducer: a stream stored Monday's reads to 22:00, whose last hour was flat-filled
    then; Tuesday's reads from 01:00 arrive in a later micro-batch. The gap 22:00-01:00 is now
    one gap between two reads (linear), on both days, as one batch of all the reads gives."""
    tuesday = MONDAY + timedelta(days=1)
    monday_values = [float(i) for i in range(48)]
    stored = history([MONDAY], monday_values, skip=range(44, 48))
    arriving = day_rows(tuesday, 10.0, skip=range(2))
    streamed = run([*stored, *arriving])
    at_once = run([*day_rows(MONDAY, monday_values, skip=range(44, 48)), *arriving])

    gap = [at(MONDAY, i) for i in range(44, 48)] + [at(tuesday, i) for i in range(2)]
    step = (10.0 - 43.0) / 7
    expected = [(start, pytest.approx(43.0 + step * (k + 1)), "linear") for k, start in enumerate(gap)]
    assert estimates(streamed) == expected
    assert estimates(at_once) == expected
    assert missing(streamed) == []
    # Without the batch's side, Monday's tail stays as it was judged then: not a gap of this batch.
    later = run([*stored, *history([tuesday], 10.0, skip=range(2)), *day_rows(tuesday + timedelta(days=1))])
    assert estimates(later) == []


def test_gap_towards_data_beyond_the_reach_is_missing_not_flat() -> None:
    """Data after the gap, further than max_gap_days: the series continues, so no flat fill."""
    rows = [*day_rows(MONDAY, skip=range(24, 48)), *history([MONDAY + timedelta(days=5)])]
    result = run(rows, params(estimation=Estimation(max_gap_days=2)))

    assert estimates(result) == []
    assert missing(result) == [at(MONDAY, i) for i in range(24, 48)]


def test_estimation_disabled_leaves_gaps_missing() -> None:
    values = [1.0] * 48
    values[12] = 4.0
    result = run(day_rows(MONDAY, values, skip={10, 11}), params(estimation=Estimation(enabled=False)))

    assert estimates(result) == []
    assert missing(result) == [utc(2025, 6, 16, 4, 0), utc(2025, 6, 16, 4, 30)]


def test_rejected_rows_reported_value_is_kept_beside_the_estimate() -> None:
    values = [1.0] * 48
    values[12] = 4.0
    rows = [
        *day_rows(MONDAY, values, skip={10, 11}),
        reading(at(MONDAY, 10), -0.5, rule="negative_import"),
        # Two rejected reads of an interval: the largest reported value is kept.
        reading(at(MONDAY, 11), 5.0, rule="above_physical_max"),
        reading(at(MONDAY, 11), None, rule="value_missing"),
        reading(at(MONDAY, 11), 2.0, rule="above_physical_max"),
        # A rejected read beside an accepted one: the interval is present.
        reading(at(MONDAY, 20), 999.0, rule="above_physical_max"),
    ]
    result = run(rows)

    assert [(r["energy_kwh"], r["reported_kwh"]) for r in role(result, "estimate")] == [(2.0, -0.5), (3.0, 5.0)]
    rejected = [r for r in role(result, "batch") if r["rejection_rule"]]
    assert [(r["interval_start_utc"], r["rejection_rule"], r["energy_kwh"], r["reported_kwh"]) for r in rejected] == [
        (at(MONDAY, 10), "negative_import", None, -0.5),
        (at(MONDAY, 11), "above_physical_max", None, 2.0),
        (at(MONDAY, 11), "above_physical_max", None, 5.0),
        (at(MONDAY, 11), "value_missing", None, None),
        (at(MONDAY, 20), "above_physical_max", None, 999.0),
    ]
    assert len(role(result, "batch")) == 51


def test_rows_rejected_for_their_key_do_not_make_a_day_judged() -> None:
    rows = [*day_rows(MONDAY), reading(at(MONDAY + timedelta(days=1), 3), 1.0, rule="timestamp_in_future")]
    result = run(rows)

    assert estimates(result) == [] and missing(result) == []
    assert len(role(result, "batch")) == 49


def test_history_row_fills_an_interval() -> None:
    rows = [*day_rows(MONDAY, skip={10, 11}), reading(at(MONDAY, 10), 2.0, role="history")]
    rows.append(reading(at(MONDAY, 11), 2.0, role="history"))
    result = run(rows)

    assert estimates(result) == [] and missing(result) == []
    assert len(result) == 46


def test_rejected_batch_read_over_a_stored_value() -> None:
    """Default: a failed re-read never removes a stored, validated value; optionally it does."""
    values = [1.0] * 48
    values[11] = 3.0
    rows = [
        *day_rows(MONDAY, values, skip={10}),
        reading(at(MONDAY, 10), None, rule="value_missing"),
        reading(at(MONDAY, 10), 2.5, role="history"),
    ]
    kept = run(rows)
    assert estimates(kept) == [] and missing(kept) == []
    assert len(kept) == 48

    replaced = run(rows, params(rejected_replaces_history=True))
    assert estimates(replaced) == [(at(MONDAY, 10), 2.0, "linear")]


# --- series rules --------------------------------------------------------------------------------


def spiky_day() -> list[dict[str, Any]]:
    values = [1.0] * 48
    values[20] = 50.0
    rows = day_rows(MONDAY, values)
    rows[20]["validation_flags"] = "duplicate_replaced"
    return rows


def test_spike_with_warn_is_flagged() -> None:
    result = run(spiky_day(), params(spike="warn"))

    assert flags(result) == {at(MONDAY, 20): "duplicate_replaced;spike"}
    assert estimates(result) == []
    row = role(result, "batch")[20]
    assert (row["energy_kwh"], row["rejection_rule"]) == (50.0, None)


def test_spike_with_quarantine_is_rejected_and_estimated() -> None:
    result = run(spiky_day(), params(spike="quarantine"))

    row = role(result, "batch")[20]
    assert (row["rejection_rule"], row["energy_kwh"], row["reported_kwh"], row["validation_flags"]) == (
        "spike",
        None,
        50.0,
        "duplicate_replaced",
    )
    assert estimates(result) == [(at(MONDAY, 20), 1.0, "linear")]
    assert role(result, "estimate")[0]["reported_kwh"] == 50.0


def test_spike_with_fail_is_flagged_and_rejected() -> None:
    result = run(spiky_day(), params(spike="fail"))

    row = role(result, "batch")[20]
    assert (row["rejection_rule"], row["validation_flags"]) == ("spike", "duplicate_replaced;spike")


def test_spike_is_not_judged_when_the_third_highest_is_zero() -> None:
    values = [0.0] * 48
    values[0], values[1] = 50.0, 5.0
    result = run(day_rows(MONDAY, values))

    assert flags(result) == {}


def test_spike_respects_the_minimum_and_ignores_history_days() -> None:
    values = [0.1] * 48
    values[20] = 2.0
    assert flags(run(day_rows(MONDAY, values), params(validation=Validation(spike_min_kwh=2.0)))) == {}
    # A spike on a stored day is not judged: only the batch's days are.
    rows = [*day_rows(MONDAY), *history([MONDAY - timedelta(days=1)], values)]
    assert flags(run(rows)) == {}


LOOK_BACK = Validation(lookback_days=7, min_lookback_days=7)


@pytest.mark.parametrize(
    ("value", "skip", "flagged"),
    [
        pytest.param(4.0, set(), True, id="high"),
        pytest.param(0.05, set(), True, id="low"),
        pytest.param(1.0, set(), False, id="normal"),
        pytest.param(2.9, set(), False, id="just-below-high"),
        pytest.param(4.0, {5}, False, id="incomplete-day-not-judged"),
    ],
)
def test_high_low_against_a_seven_day_look_back(value: float, skip: set[int], flagged: bool) -> None:
    rows = [*day_rows(MONDAY, value, skip=skip), *history([MONDAY - timedelta(days=d) for d in range(1, 8)])]
    result = run(rows, params(validation=LOOK_BACK))

    expected = {r["interval_start_utc"]: "high_low" for r in role(result, "batch")} if flagged else {}
    assert flags(result) == expected
    assert len(expected) in (0, 48)


def test_high_low_is_not_judged_with_too_few_look_back_days() -> None:
    rows = [*day_rows(MONDAY, 4.0), *history([MONDAY - timedelta(days=d) for d in range(1, 7)])]
    result = run(rows, params(validation=LOOK_BACK))

    assert flags(result) == {}


def test_high_low_look_back_skips_incomplete_days() -> None:
    complete = [MONDAY - timedelta(days=d) for d in range(2, 9)]
    incomplete = history([MONDAY - timedelta(days=1)], 100.0)[1:]
    rows = [*day_rows(MONDAY, 4.0), *history(complete), *incomplete]
    result = run(rows, params(validation=LOOK_BACK))

    # Days 2..7 back are complete (6 days), day 1 is not: too few look-back days.
    assert flags(result) == {}
    # With 8 days of look-back the seventh complete day counts and the high day is flagged.
    wider = run(rows, params(validation=Validation(lookback_days=8, min_lookback_days=7)))
    assert set(flags(wider).values()) == {"high_low"}


@pytest.mark.parametrize(("zeros", "flagged"), [(5, True), (4, False)])
def test_zero_run_longer_than_the_limit_is_flagged(zeros: int, flagged: bool) -> None:
    values = [1.0] * 48
    values[10 : 10 + zeros] = [0.0] * zeros
    result = run(day_rows(MONDAY, values), params(validation=Validation(max_zero_intervals=4)))

    assert flags(result) == ({at(MONDAY, i): "zero_run" for i in range(10, 15)} if flagged else {})


def test_zero_run_default_limit_is_one_day() -> None:
    rows = day_rows(MONDAY, 0.0)
    assert flags(run(rows)) == {}
    rows.append(reading(at(MONDAY - timedelta(days=1), 47), 0.0, role="history"))
    assert set(flags(run(rows)).values()) == {"zero_run"}


@pytest.mark.parametrize(("stored_gap", "flagged"), [(False, True), (True, False)])
def test_zero_run_across_midnight_counts_history(stored_gap: bool, flagged: bool) -> None:
    yesterday = MONDAY - timedelta(days=1)
    stored = day_rows(yesterday, [1.0] * 45 + [0.0] * 3, role="history", skip={46} if stored_gap else set())
    today = day_rows(MONDAY, [0.0, 0.0] + [1.0] * 46)
    result = run([*stored, *today], params(validation=Validation(max_zero_intervals=4)))

    assert flags(result) == ({at(MONDAY, 0): "zero_run", at(MONDAY, 1): "zero_run"} if flagged else {})


def test_zero_run_quarantine_rejects_only_batch_rows() -> None:
    yesterday = MONDAY - timedelta(days=1)
    stored = day_rows(yesterday, [1.0] * 45 + [0.0] * 3, role="history")
    today = day_rows(MONDAY, [0.0, 0.0] + [1.0] * 46)
    result = run([*stored, *today], params(validation=Validation(max_zero_intervals=4), zero_run="quarantine"))

    rejected = [r["interval_start_utc"] for r in role(result, "batch") if r["rejection_rule"] == "zero_run"]
    assert rejected == [at(MONDAY, 0), at(MONDAY, 1)]
    # Neighbours: the stored zero at 23:30 and today's 01:00 read.
    assert estimates(result) == [(at(MONDAY, 0), 1 / 3, "linear"), (at(MONDAY, 1), 2 / 3, "linear")]


# --- many series, any order ----------------------------------------------------------------------


def three_series() -> list[list[dict[str, Any]]]:
    linear_and_spike = [1.0] * 48
    linear_and_spike[30] = 60.0
    week_before = MONDAY - timedelta(days=7)
    zeros = [1.0] * 48
    zeros[5:12] = [0.0] * 7
    return [
        [*day_rows(MONDAY, linear_and_spike, skip={3, 4})],
        [
            *day_rows(MONDAY, 2.0, skip=range(10, 30), direction="export"),
            *history([week_before], lambda i, _: float(i), direction="export"),
        ],
        [
            *day_rows(MONDAY, zeros, meter="M2", skip={40}),
            reading(at(MONDAY, 40), 7.5, meter="M2", rule="value_unparseable"),
            *history([week_before], 3.0, meter="M2"),
        ],
    ]


SORT = ["meter_id", "direction", "interval_start_utc", "role", "rejection_rule", "reported_kwh", "energy_kwh"]


def test_many_series_in_one_table_give_the_same_result_as_each_alone() -> None:
    p = params(spike="quarantine", validation=Validation(max_zero_intervals=6))
    parts = three_series()
    together = run([row for part in parts for row in part], p)
    alone = pa.concat_tables([run(part, p) for part in parts]).sort_by([(c, "ascending") for c in SORT])

    assert together.equals(alone)
    assert len(role(together, "estimate")) == 2 + 1 + 20 + 1
    assert {r["rejection_rule"] for r in role(together, "batch")} == {None, "spike", "value_unparseable"}
    assert set(flags(together).values()) == {"zero_run"}


def test_series_judged_together_never_run_into_each_other() -> None:
    """All series are judged in one pass over one grid, one series after the other: a run of
    zeros or a gap at the end of one series must not join the next series' first intervals."""
    ends_in_zeros = [1.0] * 24 + [0.0] * 24
    starts_in_zeros = [0.0] * 24 + [1.0] * 24
    parts = [
        day_rows(MONDAY, ends_in_zeros, meter="M0"),
        day_rows(MONDAY + timedelta(days=1), starts_in_zeros, meter="M1"),
        day_rows(MONDAY, 1.0, meter="M2", skip=range(44, 48)),
        day_rows(MONDAY + timedelta(days=1), 5.0, meter="M3", minutes=60),
    ]
    p = params(zero_run="quarantine", validation=Validation(max_zero_intervals=30))
    together = run([row for part in parts for row in part], p)
    alone = pa.concat_tables([run(part, p) for part in parts]).sort_by([(c, "ascending") for c in SORT])

    assert together.equals(alone)
    assert not [r for r in role(together, "batch") if r["rejection_rule"]]
    # M2's last intervals have no read after them in M2: flat from its last read, not a line to M3's.
    tail = [(r["energy_kwh"], r["estimation_method"]) for r in role(together, "estimate") if r["meter_id"] == "M2"]
    assert tail == [(1.0, "flat")] * 4


def test_result_does_not_depend_on_row_order() -> None:
    p = params(spike="quarantine", validation=Validation(max_zero_intervals=6))
    rows = [row for part in three_series() for row in part]
    expected = run(rows, p)
    for seed in range(3):
        shuffled = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
        assert run(shuffled, p).equals(expected)


def test_empty_input_gives_an_empty_result() -> None:
    result = run([])
    assert result.num_rows == 0


# --- DST ------------------------------------------------------------------------------------------

DST_DAYS = [
    pytest.param(LONDON, date(2025, 3, 30), 92, (3, 4), id="london-spring"),
    pytest.param(LONDON, date(2025, 10, 26), 100, (7, 8), id="london-autumn"),
    pytest.param(BRUSSELS, date(2025, 3, 30), 92, (7, 8), id="brussels-spring"),
    pytest.param(BRUSSELS, date(2025, 10, 26), 100, (11, 12), id="brussels-autumn"),
]


@pytest.mark.parametrize(("zone", "day", "count", "removed"), DST_DAYS)
def test_a_full_dst_day_has_no_missing_intervals(zone: str, day: date, count: int, removed: tuple[int, int]) -> None:
    rows = day_rows(day, zone=zone, minutes=15)
    assert len(rows) == count
    result = run(rows, params(zone))

    assert result.num_rows == count
    assert estimates(result) == [] and missing(result) == []


@pytest.mark.parametrize(("zone", "day", "count", "removed"), DST_DAYS)
def test_gap_at_the_dst_change_is_estimated_at_the_right_utc_starts(
    zone: str, day: date, count: int, removed: tuple[int, int]
) -> None:
    rows = day_rows(day, lambda i, _: float(i), zone=zone, minutes=15, skip=set(removed))
    result = run(rows, params(zone))

    # Both zones change clocks at 01:00 UTC: the gap spans the change in each.
    assert estimates(result) == [
        (datetime(day.year, day.month, day.day, 0, 45, tzinfo=UTC), float(removed[0]), "linear"),
        (datetime(day.year, day.month, day.day, 1, 0, tzinfo=UTC), float(removed[1]), "linear"),
    ]
    assert {r["local_date"] for r in role(result, "estimate")} == {day}
    assert missing(result) == []
    assert result.num_rows == count


@pytest.mark.parametrize(
    ("zone", "day", "minutes", "count", "removed", "starts"),
    [
        pytest.param(
            LONDON, date(2025, 3, 30), 30, 46, (1, 2), [utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1, 0)], id="30min"
        ),
        pytest.param(
            BRUSSELS,
            date(2025, 10, 26),
            5,
            300,
            (35, 36, 37),
            [utc(2025, 10, 26, 0, 55), utc(2025, 10, 26, 1, 0), utc(2025, 10, 26, 1, 5)],
            id="5min",
        ),
    ],
)
def test_other_interval_lengths(
    zone: str, day: date, minutes: int, count: int, removed: tuple[int, ...], starts: list[datetime]
) -> None:
    full = day_rows(day, lambda i, _: float(i), zone=zone, minutes=minutes)
    assert len(full) == count
    assert run(full, params(zone)).num_rows == count
    result = run(day_rows(day, lambda i, _: float(i), zone=zone, minutes=minutes, skip=set(removed)), params(zone))

    assert estimates(result) == [(s, float(i), "linear") for s, i in zip(starts, removed, strict=True)]
    assert {r["interval_minutes"] for r in role(result, "estimate")} == {minutes}


def utc_clock(_: int, start: datetime) -> float:
    """A history value that names its UTC hour and minute: 23:30 UTC -> 2330."""
    return float(start.hour * 100 + start.minute)


def test_like_day_after_the_autumn_change_matches_local_wall_clock() -> None:
    """Sunday 2 Nov (GMT) from 26 Oct (25 hours) and 19 Oct (BST): same local time, other UTC hours."""
    target = date(2025, 11, 2)
    stored = [date(2025, 10, 19), date(2025, 10, 26), date(2025, 11, 1)]
    rows = [*day_rows(target, skip=range(12)), *history(stored, utc_clock)]
    result = run(rows, params(estimation=Estimation(like_day_weeks=2)))

    # Local 01:xx on 26 Oct happened twice (00:xx and 01:xx UTC): their mean counts.
    expected = [2300, 2330, 25, 55, 150, 180, 250, 280, 350, 380, 450, 480]
    assert estimates(result) == [
        (utc(2025, 11, 2, i // 2, 30 * (i % 2)), float(v), "like_day") for i, v in enumerate(expected)
    ]


def test_like_day_after_the_spring_change_matches_local_wall_clock() -> None:
    """Sunday 6 Apr (CEST) from 30 Mar (23 hours, no 02:xx) and 23 Mar (CET)."""
    target = date(2025, 4, 6)
    stored = [date(2025, 3, 23), date(2025, 3, 30), date(2025, 4, 5)]
    rows = [*day_rows(target, skip=range(12), zone=BRUSSELS), *history(stored, utc_clock, zone=BRUSSELS)]
    result = run(rows, params(BRUSSELS, estimation=Estimation(like_day_weeks=2)))

    expected = [2300, 2330, 0, 30, 100, 130, 150, 180, 250, 280, 350, 380]
    first = utc(2025, 4, 5, 22)
    assert estimates(result) == [
        (first + timedelta(minutes=30 * i), float(v), "like_day") for i, v in enumerate(expected)
    ]
    assert {r["local_date"] for r in role(result, "estimate")} == {target}


def test_like_day_on_a_25_hour_day_gives_both_repeated_intervals_the_same_clock_time() -> None:
    target = date(2025, 10, 26)
    gap = range(2, 16)  # local 01:00 BST .. 07:00 GMT, 14 half-hours of a 50-interval day
    stored = [date(2025, 10, 19), date(2025, 10, 25)]
    rows = [*day_rows(target, skip=gap), *history(stored, utc_clock)]
    result = run(rows, params(estimation=Estimation(like_day_weeks=1)))

    values = [v for _, v, _ in estimates(result)]
    # 19 Oct is BST: local hh:mm was (hh-1):mm UTC.
    assert values[:6] == [0.0, 30.0, 0.0, 30.0, 100.0, 130.0]
    assert len(values) == 14


# --- one-sided gaps: flat up to max_flat_minutes, missing beyond ------------------------------------


def by_position(i: int, _: datetime) -> float:
    return float(i)


def test_a_long_gap_after_the_last_read_is_flat_for_max_flat_minutes_then_missing_even_with_history() -> None:
    # Reproducer: the file's last read is at local 11:30; the 19 hours after it were filled
    # like-day from the previous weeks, inventing energy where no meter spoke.
    gap = range(24, 48)  # local 12:00-24:00: 720 minutes with no read after them
    rows = [
        *day_rows(MONDAY, 5.0, skip=gap),
        *history([MONDAY - timedelta(days=7)], by_position),
        *history([MONDAY - timedelta(days=14)], lambda i, _: float(i) + 2.0),
    ]
    result = run(rows)

    # 720 minutes is more than max_flat_minutes (180): nothing is extrapolated.
    assert estimates(result) == []
    assert missing(result, MONDAY) == [at(MONDAY, i) for i in gap]


def test_a_long_gap_at_the_start_of_the_data_is_left_missing_not_flat() -> None:
    values = [1.0] * 48
    values[10] = 7.0
    result = run(day_rows(MONDAY, values, skip=range(10)))  # 300 minutes before the first read

    assert estimates(result) == []
    assert missing(result) == [at(MONDAY, i) for i in range(10)]


@pytest.mark.parametrize(
    ("minutes", "skipped", "flat"),
    [
        pytest.param(30, 6, True, id="30min-180-flat"),
        pytest.param(30, 7, False, id="30min-210-like-day"),
        pytest.param(15, 12, True, id="15min-180-flat"),
        pytest.param(15, 13, False, id="15min-195-like-day"),
    ],
)
def test_one_sided_gap_at_the_limit_is_flat_and_beyond_it_missing(minutes: int, skipped: int, flat: bool) -> None:
    count = 1440 // minutes
    gap = range(count - skipped, count)
    batch = day_rows(MONDAY, 5.0, skip=gap, minutes=minutes)
    with_history = run([*batch, *history([MONDAY - timedelta(days=7)], by_position, minutes=minutes)])
    without = run(batch)

    starts = [at(MONDAY, i, minutes=minutes) for i in gap]
    if flat:
        # Within the limit flat fill is used even where a like-day exists.
        expected = [(s, 5.0, "flat") for s in starts]
        assert estimates(with_history) == expected
        assert estimates(without) == expected
        assert missing(without) == []
        assert missing(with_history, MONDAY) == []
    else:  # even where a like-day exists
        assert estimates(with_history) == estimates(without) == []
        assert missing(with_history, MONDAY) == missing(without) == starts


@pytest.mark.parametrize("skipped", [6, 7])
def test_one_sided_gap_at_the_start_at_the_limit_is_flat_and_beyond_it_missing(skipped: int) -> None:
    values = [1.0] * 48
    values[skipped] = 7.0
    result = run(day_rows(MONDAY, values, skip=range(skipped)))

    if skipped * 30 <= 180:
        assert estimates(result) == [(at(MONDAY, i), 7.0, "flat") for i in range(skipped)]
        assert missing(result) == []
    else:
        assert estimates(result) == []
        assert missing(result) == [at(MONDAY, i) for i in range(skipped)]


@pytest.mark.parametrize(
    ("max_flat_minutes", "method"),
    [(90, "flat"), (60, None), (0, None)],
)
def test_max_flat_minutes_is_configurable(max_flat_minutes: int, method: str | None) -> None:
    gap = range(45, 48)  # 90 minutes at the end of the data
    rows = [*day_rows(MONDAY, 5.0, skip=gap), *history([MONDAY - timedelta(days=7)], by_position)]
    result = run(rows, params(estimation=Estimation(max_flat_minutes=max_flat_minutes)))

    if method == "flat":
        assert estimates(result) == [(at(MONDAY, i), 5.0, "flat") for i in gap]
    else:
        assert (estimates(result), missing(result, MONDAY)) == ([], [at(MONDAY, i) for i in gap])


def test_two_sided_gap_longer_than_max_flat_minutes_is_unaffected() -> None:
    """The limit is for one-sided gaps: a 210-minute gap between reads is like-day as before."""
    gap = range(20, 27)
    rows = [*day_rows(MONDAY, 5.0, skip=gap), *history([MONDAY - timedelta(days=7)], by_position)]
    result = run(rows, params(estimation=Estimation(max_flat_minutes=0, max_linear_minutes=180)))

    assert estimates(result) == [(at(MONDAY, i), float(i), "like_day") for i in gap]


def test_zero_runs_are_not_judged_on_export_channels() -> None:
    """Generation fed to the grid is zero whenever nothing is generated (nights, no sun)."""
    zeros = [0.0] * 48
    strict = params(validation=Validation(max_zero_intervals=4))
    imported = run(day_rows(MONDAY, zeros), strict)
    exported = run(day_rows(MONDAY, zeros, direction="export"), strict)

    assert {r["validation_flags"] for r in imported.to_pylist() if r["role"] == "batch"} == {"zero_run"}
    assert {r["validation_flags"] for r in exported.to_pylist() if r["role"] == "batch"} == {""}


def test_intervals_that_have_not_ended_at_the_batch_start_are_neither_estimated_nor_missing() -> None:
    """A day still under way: reads up to 10:00 local, the batch started at 12:10. The two
    hours since are a gap (flat from the last read, the rest of the day is not: it has not
    happened yet), and nothing after 12:00 is estimated or counted missing."""
    now = at(MONDAY, 24) + timedelta(minutes=10)  # 12:10 local
    rows = day_rows(MONDAY, 1.0, skip=range(20, 48))
    result = run(rows, params(estimation=Estimation(max_flat_minutes=120), now=now))

    assert [start for start, _, _ in estimates(result)] == [at(MONDAY, i) for i in (20, 21, 22, 23)]
    assert missing(result) == []
    without_now = run(rows, params(estimation=Estimation(max_flat_minutes=120)))
    assert len(missing(without_now)) == 28  # a batch with no clock: the rest of the day is missing
