"""Series-level validation and estimation (VEE) over Arrow tables: pyarrow + numpy + zoneinfo only.

`apply_vee` takes the batch's rows of one or many series (`meter_id`, `direction`) together
with stored silver rows as context (`role` "history"), judges the local days the batch
touches against the series rules (spike, high/low, zero run), and fills the gaps of those
days by linear interpolation, like-day or flat fill. It runs unchanged over a whole table
(local mode) or per group (Spark `applyInArrow`): series are processed independently, and
the result does not depend on the order of the input rows (the output is sorted). All the
series of a call are judged at once, in arrays over one grid that holds each series' window
after the previous one's; no run, day or look-back crosses from one series into the next.

Documented choices (see also `VeeParams`):

- **Grid.** A series' expected intervals of a local day run from local midnight to the next
  local midnight in UTC steps of its interval length, so a day has 92/96/100 quarter-hours
  across DST. A daily series (1440 minutes or more) has one interval per local day, at
  local midnight. The interval length of a series is its most common `interval_minutes`;
  rows of another length are passed through as given and take no part in VEE.
- **Placed rows.** A rejected batch row marks its interval (as a judged day, and as the
  meter's reported value beside an estimate) only if its rule judged the value, not the
  key: rows rejected by `KEY_RULES` (unparseable, off-grid, future timestamps, missing meter
  or unknown direction) are passed through and otherwise ignored.
- **A rejected batch row over a stored value.** By default (`rejected_replaces_history`
  False) a rejected batch read never removes a stored, validated value: the history row
  keeps the interval present and nothing is estimated there; the rejected row still goes to
  quarantine. This holds for series rules too: a quarantined batch row over a stored value
  leaves the stored value in place. With `rejected_replaces_history` True the interval
  becomes a gap to estimate (the estimate carries the rejected read's reported value).
- **Gaps and neighbours.** A gap is a maximal run of non-present intervals on the series'
  grid that touches a judged day; its neighbours are the present intervals just before and
  after the run, on any day. The search reaches `max_gap_days` (+1 day) beyond the judged
  days; present rows further away only tell that the series' data continues, so the gap is
  then longer than `max_gap_days` and left missing. A side with no present row at all is
  the start or end of the series' known data, and nothing is extrapolated past it by more
  than `max_flat_minutes`: a gap up to that long is flat-filled from the other side, a longer
  one stays missing (no like-day profile is invented where no meter spoke). A gap of up to
  `max_gap_days` between two present intervals one of which is the batch's is filled on
  every day of it that has reads (stored or the batch's), not only the batch's: a late read
  or a later micro-batch that ends a gap has it estimated again as one gap (replacing the
  estimates made when only one side was known), so the result does not depend on how the
  reads were split into batches.
- **Rules.** All three rules judge the present values before any rejection (history and
  batch alike), simultaneously; only accepted batch rows are flagged or rejected. A spike
  flags every interval that equals the day's highest value (ties are all "the highest").
  A row failing several quarantining rules takes the first of spike, high_low, zero_run.
  Severity "fail" both flags and rejects the row, so the pipeline can count it either way.
- **Intervals to come.** An interval that has not ended at `now` is neither estimated nor
  counted missing: a day still under way has its reads so far, not a gap to its end. `now` is
  the batch's start; for a stream's micro-batch, the start of the newest interval the stream
  has seen, if earlier (that interval's reads are still arriving, so a read not there yet for
  it or for a later interval is not missing yet).
- **Summarised days.** Stored days more than `rows_before` days before a series' first judged
  day may come as one row each (role `summary`: the day's measured intervals of one length in
  `summary_intervals`, their total in `energy_kwh`) instead of their rows; so may the days
  before the day of a series' last stored non-zero read of its interval length before its first
  judged day. The result is the same: such days only count towards the interval length's
  majority, as reads before the window, and, when complete, towards the high/low look-back; gaps
  and zero runs never reach them (a gap that would is longer than `max_gap_days` either way, and
  a non-zero read ends a gap and a zero run alike). Likewise, of the day of a series' last
  stored non-zero read before its first batch interval, the reads before that read may come as
  the day's head (role `head`: its `interval_start_utc` the instant the head ends at, the head's
  reads not given as rows counted in `summary_intervals` and totalled in `energy_kwh`), with its
  highest three reads as rows: the day's completeness and total take them, a spike's judgement
  needs no more of them, and the head's intervals are neither gaps nor zeros to judge again (a
  gap next to a read the head does not tell lies before the batch's reads: it was judged when
  its later neighbour came, and its stored estimates stand). Only like-day reads their rows: a
  series with a like-day gap and summarised days or a head is named in a `needs_rows` row, to
  be judged again with those days as rows.
- **Output rows.** Estimate and missing rows carry the keys, `local_date` of the grid day,
  and `reported_kwh`: the value of a rejected batch row at that interval (a row quarantined
  by a series rule first, else the largest reported value among row-rule rejections). Missing
  rows keep it too, so the meter's value is never lost. `quality_flag` is "estimated" on
  estimates and null on missing rows; `validation_flags` is "" on both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.domain import catalog
from app.domain.parsing import local_time
from app.domain.sources import DEFAULT_SEVERITIES, Estimation, Validation

ROLE_BATCH, ROLE_HISTORY, ROLE_ESTIMATE, ROLE_MISSING = "batch", "history", "estimate", "missing"
#: A stored day of a series given as its measured intervals' count (`summary_intervals`) and total
#: (`energy_kwh`) instead of its rows; and the output row naming a series whose result needs its
#: summarised days as rows (see `apply_vee`).
ROLE_SUMMARY, ROLE_NEEDS_ROWS = "summary", "needs_rows"
#: The stored reads of a series' local day before an instant (its `interval_start_utc`), other
#: than those given as rows: their count (`summary_intervals`) and total (`energy_kwh`); see
#: "Summarised days".
ROLE_HEAD = "head"
#: Series rules judged here, in the order a row takes its rejection rule: the catalogue's series
#: rules that judge a kept reading, which are those that may quarantine it (the others,
#: duplicate_replaced and missing_intervals, are counted by the pipeline).
VEE_RULES: tuple[str, ...] = catalog.names("series", allows="quarantine")
METHOD_LINEAR, METHOD_LIKE_DAY, METHOD_FLAT = "linear", "like_day", "flat"
_METHODS: tuple[str | None, ...] = (None, METHOD_LINEAR, METHOD_LIKE_DAY, METHOD_FLAT)
#: The methods of VEE's estimates (a register's spread is a read's share, not an estimate of VEE's).
ESTIMATION_METHODS = (METHOD_LINEAR, METHOD_LIKE_DAY, METHOD_FLAT)
_MISSING, _LINEAR, _LIKE_DAY, _FLAT = range(4)
#: Row rules that say the row's key (meter, direction or interval) cannot be trusted.
KEY_RULES = frozenset(
    {
        "malformed_row",
        "meter_id_missing",
        "timestamp_unparseable",
        "timestamp_in_dst_gap",
        "timestamp_ambiguous",
        "timestamp_off_grid",
        "timestamp_in_future",
        "direction_unknown",
    }
)
#: Qualities a like-day estimate may be built from.
LIKE_DAY_QUALITIES = ("actual", "substituted")

REQUIRED_COLUMNS = (
    "meter_id",
    "direction",
    "interval_start_utc",
    "interval_minutes",
    "energy_kwh",
    "reported_kwh",
    "quality_flag",
    "rejection_rule",
    "role",
    "local_date",
    "validation_flags",
)
#: Columns VEE appends when the input lacks them.
_APPENDED = (("validation_flags", pa.string()), ("estimation_method", pa.string()), ("reported_kwh", pa.float64()))
#: Columns set on every generated row; the others become nullable.
_KEY_COLUMNS = ("meter_id", "direction", "interval_start_utc", "interval_minutes", "local_date", "role")

_US_PER_MINUTE = 60_000_000
_US_PER_DAY = 1440 * _US_PER_MINUTE
_SECONDS_PER_WEEK = 7 * 86_400
_FLAG_SEP = "\x1f"


@dataclass(frozen=True)
class VeeParams:
    """What VEE needs to know about the source's series."""

    series_timezone: str
    validation: Validation
    estimation: Estimation
    #: Rule -> "warn" | "quarantine" | "fail"; rules not named take DEFAULT_SEVERITIES.
    severities: dict[str, str] = field(default_factory=dict)
    #: True: a rejected batch read at an interval hides the stored value, making a gap.
    rejected_replaces_history: bool = False
    #: The batch's start: an interval that has not ended by then is no gap (it has not happened).
    now: datetime | None = None

    def severity(self, rule: str) -> str:
        return self.severities.get(rule, DEFAULT_SEVERITIES[rule])

    def zero_limit(self, interval_minutes: int) -> int:
        """Longest allowed run of zero intervals."""
        return self.validation.max_zero_intervals or max(1440 // interval_minutes, 1)


def vee_schema(input_schema: pa.Schema) -> pa.Schema:
    """The input schema (non-key columns made nullable) plus the columns VEE adds."""
    fields = [f if f.name in _KEY_COLUMNS else f.with_nullable(True) for f in input_schema]
    fields += [pa.field(name, kind) for name, kind in _APPENDED if name not in input_schema.names]
    return pa.schema(fields, metadata=input_schema.metadata)


# --- rows as numpy arrays ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    """The input's columns VEE works on, one numpy array each, in input order."""

    t: np.ndarray  # interval start, int64 microseconds since the epoch (0 where null)
    batch: np.ndarray  # bool
    accepted: np.ndarray  # bool: not rejected and has a value
    placed: np.ndarray  # bool: the row's key can be trusted
    energy: np.ndarray  # float64, NaN where null
    reported: np.ndarray  # float64, NaN where null
    like_day_usable: np.ndarray  # bool: quality actual or substituted
    minutes: np.ndarray  # int64 interval length, 0 where null
    day: np.ndarray  # int64 local date, days since the epoch
    series: np.ndarray  # int64 series code
    export: np.ndarray  # bool: an export channel
    summary: np.ndarray  # bool: a summarised stored day
    head: np.ndarray  # bool: a summarised head of a stored day (`t` is the instant it ends at)
    count: np.ndarray  # int64: a summarised day's measured intervals, 0 on other rows


def _bools(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(column, False).to_numpy(), dtype=bool)


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.cast(column, pa.float64()), math.nan).to_numpy(), dtype=np.float64)


def _ints(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy(), dtype=np.int64)


def _series_codes(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """One int code per (meter_id, direction), and whether both are set and non-empty."""
    codes = np.zeros(table.num_rows, dtype=np.int64)
    valid = np.ones(table.num_rows, dtype=bool)
    for name in ("meter_id", "direction"):
        column = table[name]
        values = pc.unique(column)
        codes = codes * len(values) + _ints(pc.index_in(column, value_set=values))
        valid &= _bools(pc.not_equal(column, ""))
    return codes, valid


def _rows(table: pa.Table, zone: str) -> _Rows:
    start = table["interval_start_utc"]
    if start.type != pa.timestamp("us", tz="UTC"):
        start = pc.cast(start, pa.timestamp("us", tz="UTC"))
    has_start = _bools(pc.is_valid(start))
    local_date, _ = local_time(start, zone)
    rule = table["rejection_rule"]
    energy = _floats(table["energy_kwh"])
    minutes = _ints(table["interval_minutes"])
    accepted = _bools(pc.is_null(rule)) & ~np.isnan(energy)
    judged_value = ~_bools(pc.is_in(rule, value_set=pa.array(sorted(KEY_RULES), pa.string())))
    series, keyed = _series_codes(table)
    summary = _bools(pc.equal(table["role"], ROLE_SUMMARY))
    head = _bools(pc.equal(table["role"], ROLE_HEAD))
    names = table.column_names
    count = _ints(table["summary_intervals"]) if "summary_intervals" in names else np.zeros(len(energy), np.int64)
    return _Rows(
        t=_ints(pc.cast(start, pa.int64())),
        batch=_bools(pc.equal(table["role"], ROLE_BATCH)),
        accepted=accepted,
        placed=has_start & keyed & (minutes > 0) & (accepted | judged_value) & ~summary & ~head,
        energy=energy,
        reported=_floats(table["reported_kwh"]),
        like_day_usable=_bools(pc.is_in(table["quality_flag"], value_set=pa.array(LIKE_DAY_QUALITIES))),
        minutes=minutes,
        day=_ints(pc.cast(local_date, pa.int32())),
        series=series,
        export=_bools(pc.equal(table["direction"], "export")),
        summary=summary,
        head=head,
        count=count,
    )


# --- the grid of expected intervals ---------------------------------------------------------------


class _DayStarts:
    """UTC start (microseconds) of each local day of a zone, for a range of days."""

    def __init__(self, zone: str, first_day: int, last_day: int) -> None:
        ZoneInfo(zone)  # raises on an unknown zone
        self.first_day = first_day
        midnights = np.arange(first_day, last_day + 2, dtype=np.int64) * _US_PER_DAY
        naive = pa.array(midnights, pa.int64()).cast(pa.timestamp("us"))
        # Like zoneinfo's fold=0: a midnight in a DST gap starts the day at the transition.
        local = pc.assume_timezone(naive, timezone=zone, ambiguous="earliest", nonexistent="latest")
        self.starts = _ints(pc.cast(local, pa.int64()))

    def at(self, days: np.ndarray) -> np.ndarray:
        """Start of each of `days` (local dates as days since the epoch)."""
        return self.starts[days - self.first_day]


@dataclass(frozen=True)
class _Grid:
    """The expected intervals of every series over its window of local days: the series one
    after another, each in time order.

    Arrays per series (indexed by series number), per grid day (one local day of one series)
    and per point (one expected interval). Runs of points never cross from one series into the
    next (`_runs`), and each rule and fill stays within a series.
    """

    minutes: np.ndarray  # per series: its interval length
    first_day: np.ndarray  # per series: its window's first local date
    last_day: np.ndarray  # per series: its window's last local date
    day_first: np.ndarray  # per series: its first grid day
    seg_start: np.ndarray  # per series: its first point
    seg_end: np.ndarray  # per series: one past its last point
    day_series: np.ndarray  # per grid day: its series
    local_day: np.ndarray  # per grid day: its local date, days since the epoch
    day_begin: np.ndarray  # per grid day: UTC microseconds at its local midnight
    day_point: np.ndarray  # per grid day: its first point
    expected: np.ndarray  # per grid day: its expected intervals
    times: np.ndarray  # per point: its UTC start, int64 microseconds
    day: np.ndarray  # per point: its grid day
    series: np.ndarray  # per point: its series
    opens: np.ndarray  # per point: the first of its series
    closes: np.ndarray  # per point: the last of its series

    @classmethod
    def build(cls, starts: _DayStarts, first_day: np.ndarray, last_day: np.ndarray, minutes: np.ndarray) -> _Grid:
        days = last_day - first_day + 1
        day_first = np.cumsum(days) - days
        day_series = np.repeat(np.arange(len(days), dtype=np.int64), days)
        local_day = first_day[day_series] + np.arange(int(days.sum()), dtype=np.int64) - day_first[day_series]
        begin, end = starts.at(local_day), starts.at(local_day + 1)
        length = minutes[day_series]
        step = length * _US_PER_MINUTE
        # Ceiling division: a day's last interval may be cut short by the next midnight.
        counts = np.where(length >= 1440, 1, -(-(end - begin) // step))
        day_point = np.cumsum(counts) - counts
        day = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        times = begin[day] + (np.arange(int(counts.sum()), dtype=np.int64) - day_point[day]) * step[day]
        series = day_series[day]
        seg_end = np.cumsum(np.bincount(series, minlength=len(days)))
        seg_start = seg_end - np.bincount(series, minlength=len(days))
        opens = np.zeros(len(times), dtype=bool)
        opens[seg_start] = True
        closes = np.zeros(len(times), dtype=bool)
        closes[seg_end - 1] = True
        return cls(
            minutes, first_day, last_day, day_first, seg_start, seg_end, day_series, local_day, begin, day_point,
            counts, times, day, series, opens, closes,
        )  # fmt: skip

    @property
    def size(self) -> int:
        return len(self.times)

    def grid_day(self, series: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The grid day of each (series, local date), and whether the series' window has it."""
        inside = (day >= self.first_day[series]) & (day <= self.last_day[series])
        return np.where(inside, self.day_first[series] + day - self.first_day[series], 0), inside

    def locate(self, series: np.ndarray, day: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Point of each row (its series, local date and start), and whether it lies on the grid."""
        grid_day, inside = self.grid_day(series, day)
        offset = t - self.day_begin[grid_day]
        step = self.minutes[series] * _US_PER_MINUTE
        position = offset // step
        on = inside & (offset >= 0) & (offset % step == 0) & (position < self.expected[grid_day])
        return np.where(on, self.day_point[grid_day] + position, 0), on

    def before(self, grid_day: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Mask of the points of each of `grid_day` that start before its `t`."""
        step = self.minutes[self.day_series[grid_day]] * _US_PER_MINUTE
        count = np.clip(-(-(t - self.day_begin[grid_day]) // step), 0, self.expected[grid_day])
        mask = np.zeros(self.size, dtype=bool)
        mask[_expand(self.day_point[grid_day], self.day_point[grid_day] + count)[0]] = True
        return mask

    def runs(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Starts and (exclusive) ends of the runs of True in `mask`, a run ending with its series."""
        if not len(mask):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        after_false = np.concatenate(([True], ~mask[:-1]))
        before_false = np.concatenate((~mask[1:], [True]))
        starts = np.flatnonzero(mask & (after_false | self.opens))
        return starts, np.flatnonzero(mask & (before_false | self.closes)) + 1

    def wall_seconds(self, points: np.ndarray, zone: str) -> np.ndarray:
        """Local wall-clock time of grid points as seconds since the epoch (repeated hours repeat)."""
        instants = pa.array(self.times[points], pa.int64()).cast(pa.timestamp("us", tz=zone))
        return _ints(pc.cast(pc.local_timestamp(instants), pa.int64())) // 1_000_000


def _expand(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every index of the runs [start, end), and the run each belongs to."""
    lengths = ends - starts
    run = np.repeat(np.arange(len(starts), dtype=np.int64), lengths)
    return starts[run] + np.arange(int(lengths.sum()), dtype=np.int64) - (np.cumsum(lengths) - lengths)[run], run


def _pick(size: int, points: np.ndarray, rows: np.ndarray, prefer: np.ndarray) -> np.ndarray:
    """Per grid point, the row (of `rows` at `points`) with the smallest `prefer`; -1 if none."""
    out = np.full(size, -1, dtype=np.int64)
    if len(rows) and np.bincount(points, minlength=size).max() == 1:
        out[points] = rows  # the usual case: one row per point
    elif len(rows):
        order = np.lexsort((prefer, points))
        sorted_points = points[order]
        first = np.concatenate(([True], sorted_points[1:] != sorted_points[:-1]))
        out[sorted_points[first]] = rows[order][first]
    return out


def _per_series(count: int, series: np.ndarray, values: np.ndarray, *, largest: bool) -> np.ndarray:
    """The smallest (or largest) of `values` per series; every series must have one."""
    out = np.full(count, np.iinfo(np.int64).min if largest else np.iinfo(np.int64).max, dtype=np.int64)
    (np.maximum if largest else np.minimum).at(out, series, values)
    return out


@dataclass(frozen=True)
class _Summaries:
    """The complete summarised days of each series (all before its grid), sorted by series and day."""

    series: np.ndarray
    day: np.ndarray  # local date, days since the epoch
    total: np.ndarray

    @classmethod
    def complete(
        cls, series: np.ndarray, day: np.ndarray, count: np.ndarray, total: np.ndarray, expected: np.ndarray
    ) -> _Summaries:
        keep = (count == expected) & (expected > 0)
        order = np.lexsort((day[keep], series[keep]))
        return cls(series[keep][order], day[keep][order], total[keep][order])

    def since(self, series: np.ndarray, first_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per (series, first day): how many complete summarised days of the series fall on or
        after that day, and their total."""
        if not len(self.series):
            return np.zeros(len(series), dtype=np.int64), np.zeros(len(series))
        low = int(self.day.min())
        span = int(self.day.max()) - low + 2
        key = self.series * span + (self.day - low)
        totals = np.concatenate(([0.0], np.cumsum(self.total)))
        start = np.searchsorted(key, series * span + np.clip(first_day - low, 0, span - 1))
        end = np.searchsorted(key, (series + 1) * span)
        return end - start, totals[end] - totals[start]


# --- series rules ---------------------------------------------------------------------------------


def _spike(present: np.ndarray, value: np.ndarray, judged: np.ndarray, grid: _Grid, v: Validation) -> np.ndarray:
    """Intervals equal to their day's highest, where highest / third-highest > spike_ratio."""
    points = np.flatnonzero(present & judged & ~np.isnan(value))
    day_high = np.full(len(grid.expected), math.nan)
    if len(points) >= 3:
        # Only a day with at most two values near its highest can be a spike's: with three at
        # least 1/spike_ratio of the highest (a hair more, against rounding), the third-highest
        # is too. Points run in day order, so a day's are contiguous.
        days = grid.day[points]
        first = np.flatnonzero(np.concatenate(([True], days[1:] != days[:-1])))
        lengths = np.diff(np.append(first, len(points)))
        high = np.maximum.reduceat(value[points], first)
        near = value[points] >= np.repeat(high / v.spike_ratio * (1 + 1e-9), lengths)
        few = np.add.reduceat(near.astype(np.int64), first) < 3
        points = points[np.repeat(few & (high > v.spike_min_kwh), lengths)]
    if len(points) >= 3:
        order = points[np.lexsort((-value[points], grid.day[points]))]
        days = grid.day[order]
        first = np.flatnonzero(np.concatenate(([True], days[1:] != days[:-1])))
        counts = np.diff(np.concatenate((first, [len(order)])))
        first = first[counts >= 3]
        high, third = value[order[first]], value[order[first + 2]]
        ratio = np.divide(high, third, out=np.zeros_like(high), where=third > 0)
        spiked = (third > 0) & (high > v.spike_min_kwh) & (ratio > v.spike_ratio)
        day_high[days[first][spiked]] = high[spiked]
    return present & judged & (value == day_high[grid.day])


def _high_low(
    present: np.ndarray, value: np.ndarray, judged_day: np.ndarray, grid: _Grid, v: Validation, series: _Series
) -> np.ndarray:
    """Every interval of a complete judged day whose total is far from the look-back mean (of the
    complete days before it, on the grid and summarised). A day's reads are its points' and its
    head's."""
    days = len(grid.expected)
    known = present & ~np.isnan(value)
    have = np.bincount(grid.day[known], minlength=days) + series.head_count
    total = np.bincount(grid.day[known], weights=value[known], minlength=days) + series.head_total
    complete = (have == grid.expected) & (grid.expected > 0)
    count_before = np.concatenate(([0], np.cumsum(complete)))
    total_before = np.concatenate(([0.0], np.cumsum(np.where(complete, total, 0.0))))
    day = np.arange(days)
    since = np.maximum(day - v.lookback_days, grid.day_first[grid.day_series])
    summarised, summarised_total = series.summaries.since(grid.day_series, grid.local_day - v.lookback_days)
    n = count_before[day] - count_before[since] + summarised
    sums = total_before[day] - total_before[since] + summarised_total
    mean = np.divide(sums, n, out=np.zeros(days), where=n > 0)
    judgeable = judged_day & complete & (n >= v.min_lookback_days) & (mean > 0)
    hit = judgeable & ((total > v.high_ratio * mean) | (total < v.low_ratio * mean))
    return present & hit[grid.day]


def _zero_run(present: np.ndarray, value: np.ndarray, limit: np.ndarray, grid: _Grid) -> np.ndarray:
    """Intervals of runs of consecutive present zeros longer than their series' `limit`."""
    starts, ends = grid.runs(present & (value == 0))
    long_runs = (ends - starts) > limit[grid.series[starts]]
    hit = np.zeros(len(value), dtype=bool)
    hit[_expand(starts[long_runs], ends[long_runs])[0]] = True
    return hit


# --- the series -----------------------------------------------------------------------------------


@dataclass
class _Output:
    """What VEE decided, over all series."""

    flag_rows: list[np.ndarray] = field(default_factory=list)
    flag_bits: list[np.ndarray] = field(default_factory=list)
    reject_rows: list[np.ndarray] = field(default_factory=list)
    reject_codes: list[np.ndarray] = field(default_factory=list)
    # generated rows
    series_row: list[np.ndarray] = field(default_factory=list)  # a row of the series, for its keys
    times: list[np.ndarray] = field(default_factory=list)
    days: list[np.ndarray] = field(default_factory=list)
    minutes: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    methods: list[np.ndarray] = field(default_factory=list)
    reported: list[np.ndarray] = field(default_factory=list)
    needs_rows: list[np.ndarray] = field(default_factory=list)  # a row of each such series


@dataclass(frozen=True)
class _State:
    """The grid's points: which row supplies each, and what is present."""

    batch: np.ndarray  # accepted batch row per point, -1 if none
    history: np.ndarray  # accepted history row per point, -1 if none
    rejected: np.ndarray  # rejected batch row per point (largest reported value), -1 if none
    headed: np.ndarray  # per point: before the end of its day's head (a stored read or none, not told)


@dataclass(frozen=True)
class _Series:
    """Per series (numbered 0..n-1): what the grid does not hold."""

    row: np.ndarray  # a row of the series, for its keys
    export: np.ndarray  # bool: an export channel
    outside_before: np.ndarray  # bool: an accepted read before its window
    outside_after: np.ndarray  # bool: an accepted read after its window
    summarised: np.ndarray  # bool: stored days given as summaries
    summaries: _Summaries
    head_count: np.ndarray  # per grid day: the reads of its head (0 if none)
    head_total: np.ndarray  # per grid day: their total


def _present(
    rows: _Rows, state: _State, quarantined: np.ndarray, replaces: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Present mask, the row supplying each point (-1 if none) and its value. A point of a day's
    head without a row is present, of a value not told (NaN): it is a stored read or an interval
    judged before, and neither a gap nor part of a zero run to judge again."""
    batch = np.where(quarantined, -1, state.batch)
    hidden = (state.rejected >= 0) | quarantined if replaces else np.zeros(len(batch), dtype=bool)
    from_history = (state.history >= 0) & (batch < 0) & ~hidden
    source = np.where(batch >= 0, batch, np.where(from_history, state.history, -1))
    supplied = source >= 0
    return supplied | state.headed, source, np.where(supplied, rows.energy[source], math.nan)


def _judge(
    rows: _Rows, state: _State, grid: _Grid, judged_day: np.ndarray, params: VeeParams, series: _Series
) -> tuple[np.ndarray, np.ndarray]:
    """Series rules over present values -> (flag bits, rejecting rule code) per grid point.

    Zero runs are judged on import channels only: an export channel (generation fed to
    the grid) is zero whenever nothing is generated, which says nothing about the meter.
    """
    present, _, value = _present(rows, state, np.zeros(grid.size, dtype=bool), params.rejected_replaces_history)
    judged = judged_day[grid.day]
    zero_limit = np.array([params.zero_limit(int(m)) for m in grid.minutes], dtype=np.int64)
    hits = (
        _spike(present, value, judged, grid, params.validation),
        _high_low(present, value, judged_day, grid, params.validation, series),
        _zero_run(present & ~series.export[grid.series], value, zero_limit, grid),
    )
    from_batch = state.batch >= 0
    bits = np.zeros(grid.size, dtype=np.int64)
    codes = np.zeros(grid.size, dtype=np.int64)
    for number, (rule, hit) in enumerate(zip(VEE_RULES, hits, strict=True)):
        severity = params.severity(rule)
        mine = hit & from_batch
        if severity in ("warn", "fail"):
            bits |= mine.astype(np.int64) << number
        if severity in ("quarantine", "fail"):
            codes = np.where((codes == 0) & mine, number + 1, codes)
    return bits, codes


@dataclass(frozen=True)
class _Gaps:
    """Maximal runs of non-present points that touch a judged day, and how each is filled."""

    starts: np.ndarray
    ends: np.ndarray
    method: np.ndarray  # per run: _MISSING, _LINEAR, _LIKE_DAY or _FLAT
    flat_from: np.ndarray  # per run: the neighbour a flat fill copies


def _gaps(present: np.ndarray, judged: np.ndarray, series: _Series, grid: _Grid, e: Estimation) -> _Gaps:
    size = grid.size
    starts, ends = grid.runs(~present)
    judged_at = np.flatnonzero(judged)
    touches = np.searchsorted(judged_at, ends) > np.searchsorted(judged_at, starts)
    starts, ends = starts[touches], ends[touches]
    first_judged = judged_at[np.searchsorted(judged_at, starts)] if len(starts) else starts
    last_judged = judged_at[np.searchsorted(judged_at, ends) - 1] if len(starts) else ends
    of = grid.series[starts] if len(starts) else starts
    prev_here, next_here = starts > grid.seg_start[of], ends < grid.seg_end[of]
    has_prev, has_next = prev_here | series.outside_before[of], next_here | series.outside_after[of]
    reach = e.max_gap_days * 1440
    minutes = grid.minutes[of]
    length = (ends - starts) * minutes
    method = np.full(len(starts), _MISSING, dtype=np.int64)
    if e.enabled:
        between = prev_here & next_here & (length <= reach)
        method[between] = np.where(length[between] <= e.max_linear_minutes, _LINEAR, _LIKE_DAY)
        # The part of a one-sided gap to fill: from its neighbour to the far judged interval.
        fill_prev = (last_judged - starts + 1) * minutes
        fill_next = (ends - first_judged) * minutes
        flat_prev = prev_here & ~has_next & (fill_prev <= reach)
        flat_next = next_here & ~has_prev & (fill_next <= reach)
        # Past the first or last read of the series nothing is known: a short gap carries the
        # neighbour's value; a gap longer than max_flat_minutes stays missing, never an invented profile.
        short = np.where(flat_prev, fill_prev, fill_next) <= e.max_flat_minutes
        method[(flat_prev | flat_next) & short] = _FLAT
        flat_from = np.where(flat_prev, starts - 1, ends)
    else:
        flat_from = ends
    return _Gaps(starts, ends, method, np.minimum(flat_from, max(size - 1, 0)))


def _like_day(
    targets: np.ndarray, usable: np.ndarray, value: np.ndarray, grid: _Grid, weeks: int, zone: str
) -> np.ndarray:
    """Mean over the previous weeks of the reads of the same series at the same local wall clock
    time; NaN if none."""
    candidates = np.flatnonzero(usable)
    wall = grid.wall_seconds(np.concatenate((candidates, targets)), zone)
    # One key per (series, wall clock time): each series in a band of its own, wide enough that
    # a target's weeks back stay in its series' band.
    base = int(wall.min(initial=0)) - weeks * _SECONDS_PER_WEEK
    width = int(wall.max(initial=0)) - base + 1
    points = np.concatenate((candidates, targets))
    key = grid.series[points] * width + (wall - base)
    keys, target_keys = key[: len(candidates)], key[len(candidates) :]
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], value[candidates][order]
    last = max(len(keys) - 1, 0)
    total = np.zeros(len(targets))
    found = np.zeros(len(targets))
    for week in range(1, weeks + 1):
        wanted = target_keys - week * _SECONDS_PER_WEEK
        low = np.searchsorted(keys, wanted, side="left")
        count = np.searchsorted(keys, wanted, side="right") - low
        week_sum = np.zeros(len(targets))
        for k in range(int(count.max(initial=0))):  # two reads at most: a repeated hour
            week_sum += np.where(count > k, values[np.minimum(low + k, last)], 0.0)
        has = count > 0
        total[has] += week_sum[has] / count[has]
        found += has
    return np.divide(total, found, out=np.full(len(targets), math.nan), where=found > 0)


def _estimate(
    gaps: _Gaps,
    points: np.ndarray,
    run: np.ndarray,
    value: np.ndarray,
    usable: np.ndarray,
    grid: _Grid,
    params: VeeParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Estimated value (NaN: missing) and method code of each gap point."""
    method = gaps.method[run]
    estimate = np.full(len(points), math.nan)
    last = max(grid.size - 1, 0)
    linear = method == _LINEAR
    if linear.any():
        start, end = gaps.starts[run[linear]], gaps.ends[run[linear]]
        before, after = value[np.maximum(start - 1, 0)], value[np.minimum(end, last)]
        k, n = points[linear] - start + 1, end - start
        estimate[linear] = before + (after - before) * k / (n + 1)
    flat = method == _FLAT
    estimate[flat] = value[gaps.flat_from[run[flat]]]
    like = method == _LIKE_DAY
    if like.any():
        weeks = params.estimation.like_day_weeks
        estimate[like] = _like_day(points[like], usable, value, grid, weeks, params.series_timezone)
    method = np.where(np.isnan(estimate), _MISSING, method)
    return estimate, method


def _all_series(rows: _Rows, placed: np.ndarray, params: VeeParams, out: _Output) -> None:
    """Judge and fill every series that has batch rows among `placed`, all at once."""
    codes = rows.series[placed]
    known = np.bincount(codes) > 0
    number_of_code = np.cumsum(known) - 1
    of = number_of_code[codes]
    count = int(known.sum())
    # Summarised days and heads count as the rows they stand for, for the series that have placed rows.
    summary = np.flatnonzero(rows.summary | rows.head)
    code = np.minimum(rows.series[summary], len(known) - 1)
    summary_of = np.where(known[code] & (rows.series[summary] < len(known)), number_of_code[code], -1)
    summary_minutes = rows.minutes[summary]
    # A series' interval length is its most common (the shortest of equally common ones).
    lengths = rows.minutes[placed]
    minutes = np.zeros(count, dtype=np.int64)
    most = np.zeros(count, dtype=np.int64)
    for length in np.union1d(lengths, summary_minutes[summary_of >= 0]):
        rows_of = np.bincount(of[lengths == length], minlength=count)
        summarised = (summary_of >= 0) & (summary_minutes == length)
        rows_of += np.bincount(summary_of[summarised], weights=rows.count[summary][summarised], minlength=count).astype(
            np.int64
        )
        minutes[rows_of > most] = length
        most = np.maximum(most, rows_of)
    series_row = np.zeros(count, dtype=np.int64)
    series_row[of] = placed  # any row of the series: they share its keys
    # Rows of another length take no part; nor do series without batch rows of their length.
    mine = lengths == minutes[of]
    selected, of = placed[mine], of[mine]
    batch = rows.batch[selected]
    judged = np.bincount(of[batch], minlength=count) > 0
    if not judged.all():
        number = np.cumsum(judged) - 1
        keep = judged[of]
        selected, of, batch = selected[keep], number[of[keep]], batch[keep]
        minutes, series_row = minutes[judged], series_row[judged]
        count = int(judged.sum())
        at = np.maximum(summary_of, 0)
        summary_of = np.where((summary_of >= 0) & judged[at], number[at], -1)
    if not count:
        return
    # The summarised days of each series' interval length, which stand for rows before its grid.
    mine_summary = (summary_of >= 0) & (summary_minutes == minutes[np.maximum(summary_of, 0)])
    summary, summary_of = summary[mine_summary], summary_of[mine_summary]
    day, t, accepted = rows.day[selected], rows.t[selected], rows.accepted[selected]
    margins = {int(m): _margins(params, int(m)) for m in np.unique(minutes)}
    before = np.array([margins[int(m)][0] for m in minutes], dtype=np.int64)
    after = np.array([margins[int(m)][1] for m in minutes], dtype=np.int64)
    window_first = _per_series(count, of[batch], day[batch], largest=False) - before
    window_last = _per_series(count, of[batch], day[batch], largest=True) + after
    # A head within the series' window lies on its grid; one outside it tells no more than that
    # the series has stored reads before the window (an incomplete day).
    is_head = rows.head[summary]
    head_in = is_head & (rows.day[summary] >= window_first[summary_of]) & (rows.day[summary] <= window_last[summary_of])
    head, head_of = summary[head_in], summary_of[head_in]
    summarised = np.bincount(summary_of[rows.count[summary] > 0], minlength=count) > 0
    summary, summary_of = summary[~is_head], summary_of[~is_head]
    summary_day = rows.day[summary]
    first_needed = min(int(window_first.min()), int(summary_day.min(initial=window_first.min())))
    starts = _DayStarts(params.series_timezone, first_needed, int(window_last.max()))
    step = minutes[summary_of] * _US_PER_MINUTE
    day_length = starts.at(summary_day + 1) - starts.at(summary_day)
    summary_expected = np.where(minutes[summary_of] >= 1440, 1, -(-day_length // np.maximum(step, 1)))
    opens, ends = starts.at(window_first), starts.at(window_last + 1)
    # The window is cut to the days the series has rows or a head on: the days cut have none, so
    # every gap they would extend is a gap at the start or end of the series' data either way.
    inside = (day >= window_first[of]) & (day <= window_last[of])
    on_days_of = np.concatenate((of[inside], head_of))
    on_days = np.concatenate((day[inside], rows.day[head]))
    grid = _Grid.build(
        starts,
        _per_series(count, on_days_of, on_days, largest=False),
        _per_series(count, on_days_of, on_days, largest=True),
        minutes,
    )
    head_day, _ = grid.grid_day(head_of, rows.day[head])
    series = _Series(
        row=series_row,
        export=rows.export[series_row],
        # Summarised days are stored reads before the grid.
        outside_before=(np.bincount(of[accepted & (t < opens[of])], minlength=count) > 0) | summarised,
        outside_after=np.bincount(of[accepted & (t >= ends[of])], minlength=count) > 0,
        summarised=summarised,
        summaries=_Summaries.complete(
            summary_of, summary_day, rows.count[summary], rows.energy[summary], summary_expected
        ),
        head_count=np.bincount(head_day, weights=rows.count[head], minlength=len(grid.expected)).astype(np.int64),
        head_total=np.bincount(head_day, weights=np.nan_to_num(rows.energy[head]), minlength=len(grid.expected)),
    )
    judged_day = np.zeros(len(grid.expected), dtype=bool)
    judged_day[grid.grid_day(of[batch], day[batch])[0]] = True
    index, on = grid.locate(of, day, t)
    selected, index = selected[on], index[on]
    batch, accepted = rows.batch[selected], rows.accepted[selected]
    reported = rows.reported[selected]
    largest_reported = np.where(np.isnan(reported), math.inf, -reported)

    def pick(mask: np.ndarray, prefer: np.ndarray) -> np.ndarray:
        return _pick(grid.size, index[mask], selected[mask], prefer[mask])

    state = _State(
        batch=pick(batch & accepted, rows.energy[selected]),
        history=pick(~batch & accepted, rows.energy[selected]),
        rejected=pick(batch & ~accepted, largest_reported),
        headed=grid.before(head_day, rows.t[head]),
    )
    bits, codes = _judge(rows, state, grid, judged_day, params, series)
    out.flag_rows.append(state.batch[bits > 0])
    out.flag_bits.append(bits[bits > 0])
    out.reject_rows.append(state.batch[codes > 0])
    out.reject_codes.append(codes[codes > 0])
    _fill(rows, state, grid, (judged_day, codes > 0), series, params, out)


def rows_before(params: VeeParams, minutes: int) -> int:
    """Days before a series' first judged day (of interval length `minutes`) that VEE needs as
    rows: the reach of a gap or a zero run, and a day. Older stored days may come as summaries
    (`ROLE_SUMMARY`): the look-back of high/low needs only their totals; like-day needs their
    rows, and a series that needed them is named in a `ROLE_NEEDS_ROWS` row."""
    return _margins(params, minutes)[1]


def _margins(params: VeeParams, minutes: int) -> tuple[int, int]:
    """Days of context a series' grid needs before and after its judged days."""
    zero_days = math.ceil(params.zero_limit(minutes) * minutes / 1440) + 1
    reach = max(params.estimation.max_gap_days + 1, zero_days)
    look_back = max(params.validation.lookback_days, 7 * params.estimation.like_day_weeks)
    return max(reach, look_back) + 1, reach + 1


def _renewed(judged: np.ndarray, present: np.ndarray, from_batch: np.ndarray, grid: _Grid, days: int) -> np.ndarray:
    """The points whose gaps are filled: those of the judged days, and the points of a gap of
    at most `days` between two present points of its series one of which the batch supplies,
    on the days the series has a present point (stored or the batch's). Such a gap was filled
    (or left) when only one side was known, by flat fill or not at all; the batch gives it its
    second neighbour, so it is estimated again as one gap, the way one batch of all the reads
    would (which judges every day it has reads for, and no day without). A gap with no present
    point on one side stays limited to the judged days (nothing is known past the end of the
    data), and a longer gap is left missing anyway."""
    starts, ends = grid.runs(~present)
    of = grid.series[starts]
    limit = days * 1440 // grid.minutes[of]
    inside = (starts > grid.seg_start[of]) & (ends < grid.seg_end[of]) & (ends - starts <= limit)
    starts, ends = starts[inside], ends[inside]
    renewed = from_batch[starts - 1] | from_batch[ends]
    if not renewed.any():
        return judged
    points, _ = _expand(starts[renewed], ends[renewed])
    read_days = np.bincount(grid.day[present], minlength=len(grid.expected)) > 0
    judged = judged.copy()
    judged[points[read_days[grid.day[points]]]] = True
    return judged


def _beside_head(untold: np.ndarray, present: np.ndarray, grid: _Grid) -> np.ndarray:
    """The points of the gaps next to a point of a head whose value is not told. Such a gap lies
    before every batch read of its series (a head ends at or before the series' last non-zero
    read before them): it was judged when its later neighbour was stored, and its stored
    estimates stand."""
    starts, ends = grid.runs(~present)
    of = grid.series[starts]
    last = max(grid.size - 1, 0)
    beside = ((starts > grid.seg_start[of]) & untold[np.maximum(starts - 1, 0)]) | (
        (ends < grid.seg_end[of]) & untold[np.minimum(ends, last)]
    )
    mask = np.zeros(grid.size, dtype=bool)
    mask[_expand(starts[beside], ends[beside])[0]] = True
    return mask


def _fill(
    rows: _Rows,
    state: _State,
    grid: _Grid,
    judgement: tuple[np.ndarray, np.ndarray],
    series: _Series,
    params: VeeParams,
    out: _Output,
) -> None:
    """Estimate or mark missing every gap interval of the judged days.

    `judgement`: judged grid days and points quarantined by a series rule.
    """
    judged_day, quarantined = judgement
    present, source, value = _present(rows, state, quarantined, params.rejected_replaces_history)
    judged = judged_day[grid.day]
    if params.estimation.enabled:
        from_batch = (state.batch >= 0) & ~quarantined
        judged = _renewed(judged, present, from_batch, grid, params.estimation.max_gap_days)
    if params.now is not None:
        ended = grid.times + grid.minutes[grid.series] * _US_PER_MINUTE
        judged = judged & (ended <= int(params.now.timestamp() * 1_000_000))
    if state.headed.any():
        judged = judged & ~_beside_head(present & np.isnan(value), present, grid)
    gaps = _gaps(present, judged, series, grid, params.estimation)
    # Like-day reads the weeks before a gap: a series whose stored days before its grid came as
    # summaries must be judged again with them as rows.
    like_day = grid.series[gaps.starts[gaps.method == _LIKE_DAY]]
    out.needs_rows.append(series.row[np.unique(like_day[series.summarised[like_day]])])
    points, run = _expand(gaps.starts, gaps.ends)
    keep = judged[points]
    points, run = points[keep], run[keep]
    usable = (source >= 0) & rows.like_day_usable[source]
    estimate, method = _estimate(gaps, points, run, value, usable, grid, params)
    # The meter's value beside the estimate: a series-quarantined read first, else a rejected one.
    series_read = np.where(quarantined, state.batch, -1)[points]
    rejected_read = state.rejected[points]
    reported = np.where(
        series_read >= 0,
        np.where(np.isnan(rows.reported[series_read]), rows.energy[series_read], rows.reported[series_read]),
        np.where(rejected_read >= 0, rows.reported[rejected_read], math.nan),
    )
    of = grid.series[points]
    out.series_row.append(series.row[of])
    out.times.append(grid.times[points])
    out.days.append(grid.local_day[grid.day[points]])
    out.minutes.append(grid.minutes[of])
    out.values.append(estimate)
    out.methods.append(method)
    out.reported.append(reported)


# --- the table ------------------------------------------------------------------------------------


def _check_columns(table: pa.Table) -> None:
    absent = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if absent:
        raise ValueError(f"VEE input lacks columns: {', '.join(absent)}")


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def _merged_flags(existing: str, bits: int) -> str:
    if not bits:
        return existing
    # Row rules' flags first, in rule order as validation wrote them, then series rules'.
    names = [name for name in existing.split(";") if name]
    names += [rule for number, rule in enumerate(VEE_RULES) if bits >> number & 1 and rule not in names]
    return ";".join(names)


def _nullable(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    return pa.array(values, pa.float64(), mask=np.isnan(values)).cast(kind)


def _batch_part(table: pa.Table, rows: _Rows, out: _Output, schema: pa.Schema) -> pa.Table:
    """Batch rows with series flags and rejections applied."""
    bits = np.zeros(table.num_rows, dtype=np.int64)
    bits[_cat(out.flag_rows, np.int64)] = _cat(out.flag_bits, np.int64)
    codes = np.zeros(table.num_rows, dtype=np.int64)
    codes[_cat(out.reject_rows, np.int64)] = _cat(out.reject_codes, np.int64)
    keep = np.flatnonzero(rows.batch)
    part = table if len(keep) == table.num_rows else table.take(pa.array(keep, pa.int64()))
    bits, codes = bits[keep], codes[keep]
    columns = {name: part[name] for name in part.column_names}
    existing = pc.fill_null(part["validation_flags"].cast(pa.string()), "")
    flagged = bits > 0
    if flagged.any():  # merged once per distinct (existing flags, new bits) of the flagged rows
        at = pa.array(np.flatnonzero(flagged), pa.int64())
        key = pc.binary_join_element_wise(
            pc.take(existing, at), pc.cast(pa.array(bits[flagged], pa.int64()), pa.string()), _FLAG_SEP
        )
        distinct = pc.unique(key)
        merged = [_merged_flags(*_split_key(k)) for k in distinct.to_pylist()]
        new_flags = pc.take(pa.array(merged, pa.string()), pc.index_in(key, value_set=distinct))
        columns["validation_flags"] = pc.replace_with_mask(_array(existing), pa.array(flagged), _array(new_flags))
    else:  # no series rule flagged a row: the row rules' flags stand
        columns["validation_flags"] = existing
    rejected = pa.array(codes > 0)
    names = pa.array([None, *VEE_RULES], pa.string())
    rule = pc.take(names, pa.array(codes, pa.int64()))
    columns["rejection_rule"] = pc.if_else(rejected, rule, part["rejection_rule"].cast(pa.string()))
    energy = part["energy_kwh"]
    columns["energy_kwh"] = pc.if_else(rejected, pa.scalar(None, energy.type), energy)
    reported = part["reported_kwh"]
    columns["reported_kwh"] = pc.if_else(pc.and_(rejected, pc.is_null(reported)), energy, reported)
    if "estimation_method" not in part.column_names:  # register shares keep theirs
        columns["estimation_method"] = pa.nulls(part.num_rows, pa.string())
    return _as_schema(columns, part.num_rows, schema)


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _split_key(key: str) -> tuple[str, int]:
    existing, bits = key.rsplit(_FLAG_SEP, 1)
    return existing, int(bits)


def _generated_part(table: pa.Table, out: _Output, schema: pa.Schema) -> pa.Table:
    """Estimate and missing rows."""
    series_row = _cat(out.series_row, np.int64)
    n = len(series_row)
    method = _cat(out.methods, np.int64)
    estimated = pa.array(method > 0)
    take = pa.array(series_row, pa.int64())
    columns = {
        "meter_id": pc.take(table["meter_id"], take),
        "direction": pc.take(table["direction"], take),
        "interval_start_utc": pa.array(_cat(out.times, np.int64), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "interval_minutes": pa.array(_cat(out.minutes, np.int64), pa.int64()),
        "local_date": pa.array(_cat(out.days, np.int64), pa.int64()).cast(pa.int32()).cast(pa.date32()),
        "energy_kwh": _nullable(_cat(out.values, np.float64), pa.float64()),
        "reported_kwh": _nullable(_cat(out.reported, np.float64), pa.float64()),
        "quality_flag": pc.if_else(estimated, "estimated", pa.scalar(None, pa.string())),
        "estimation_method": pc.take(pa.array(list(_METHODS), pa.string()), pa.array(method, pa.int64())),
        "rejection_rule": pa.nulls(n, pa.string()),
        "validation_flags": pa.array([""] * n, pa.string()),
        "role": pc.if_else(estimated, ROLE_ESTIMATE, ROLE_MISSING),
    }
    return _as_schema(columns, n, schema)


def _needs_rows_part(table: pa.Table, series_row: np.ndarray, schema: pa.Schema) -> pa.Table:
    """One row per series to judge again with its summarised days as rows: a row of the series
    with role ROLE_NEEDS_ROWS."""
    part = table.take(pa.array(series_row, pa.int64()))
    columns = {name: part[name] for name in _KEY_COLUMNS if name != "role"}
    columns["role"] = pa.array([ROLE_NEEDS_ROWS] * len(series_row), pa.string())
    return _as_schema(columns, len(series_row), schema)


def _as_schema(columns: dict[str, pa.Array | pa.ChunkedArray], n: int, schema: pa.Schema) -> pa.Table:
    arrays = [columns[f.name].cast(f.type) if f.name in columns else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def apply_vee(table: pa.Table, params: VeeParams, *, ordered: bool = True) -> pa.Table:
    """Series rules and estimation over one or many series; see the module docstring.

    With `ordered`, rows come out sorted by series, interval start and role; without, batch rows
    keep their input order and generated rows follow (the same rows, without the cost of a sort).
    History and summary rows are context: they are not in the output. A series named by a
    `ROLE_NEEDS_ROWS` row needs its summarised days as rows (see "Summarised days"); its other
    output rows are not final.
    """
    _check_columns(table)
    schema = vee_schema(table.schema)
    rows = _rows(table, params.series_timezone)
    out = _Output()
    placed = np.flatnonzero(rows.placed)
    judged = placed[rows.batch[placed]]
    if len(judged):
        _all_series(rows, placed, params, out)
    parts = [_batch_part(table, rows, out, schema), _generated_part(table, out, schema)]
    if out.needs_rows:
        parts.append(_needs_rows_part(table, _cat(out.needs_rows, np.int64), schema))
    result = pa.concat_tables(parts)
    if not ordered:
        return result
    keys = ["meter_id", "direction", "interval_start_utc", "role", "rejection_rule", "reported_kwh", "energy_kwh"]
    # Nulls sort last (Arrow's default).
    return result.take(pc.sort_indices(result, sort_keys=[(name, "ascending") for name in keys]))
