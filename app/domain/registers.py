"""Cumulative register reads -> interval energy, per series in time order.

A register (a meter reading, a "stand") counts up. The energy between two reads is their
difference, and it belongs to the span of time between them:

- **The read's instant.** With `timestamp_label = "end"` a read's timestamp is the end of
  its interval, so the read is taken at that end; with `"start"` the read is taken at the
  timestamp itself. The read closes the span that began at the series' previous read.
- **Time order.** Reads are differenced per series (meter and direction) in time order,
  whatever order the files list them in. Of several reads at one instant the one that
  de-duplication keeps (best quality, then the latest read) is the base of the next read.
- **Only good reads are bases.** A read that fails a row rule on its own merits (its
  timestamp, its value, its unit or quality) is quarantined under that rule and is never the
  base of the next difference; the rules on the energy of an interval (negative,
  above the physical maximum) judge the difference, not the read.
- **The first read of a series in a batch** has no span before it (`register_start`); a read
  below the previous one is a reset, a rollover or a meter exchange (`register_reset`), and
  becomes the base of the reads after it.
- **A span of several intervals** (a missing read) is one measured quantity: the read carries
  it whole through validation (so a demand check sees its true average), and
  `spread_register_spans` then books it in equal shares on every interval of the span, each
  marked `estimation_method = "register_spread"`, the shares adding up to the difference.

Daily reads step by local calendar days of the series' zone (23 or 25 hours at DST changes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import narwhals as nw
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.domain.parsing import VALUE_OK, VALUE_REGISTER_RESET, VALUE_REGISTER_START, local_time
from app.domain.rules import RuleParams, validated_readings
from app.domain.schemas import UTC_TIMESTAMP
from app.domain.sources import QUALITY_RANK, UNITS

#: Estimation method of intervals whose energy is a share of one register difference.
METHOD_REGISTER_SPREAD = "register_spread"
#: Row rules that judge an interval's energy: for registers they judge the difference, so a
#: read failing them on its cumulative value is still a base.
ENERGY_RULES = frozenset({"negative_import", "negative_export", "above_physical_max"})
#: Columns the differencing adds: where a read's span starts, and how long it is.
SPAN_FIELDS = (
    pa.field("span_start_utc", UTC_TIMESTAMP),
    pa.field("span_minutes", pa.int64()),
    pa.field("estimation_method", pa.string()),
    # The read's difference is a link of its series' chain of reads: the differences of a
    # batch's chain add up to its last read minus its first, resets aside.
    pa.field("register_chain", pa.bool_()),
)

_US_PER_MINUTE = 60_000_000
_US_PER_DAY = 1440 * _US_PER_MINUTE
_DAILY = 1440


@dataclass(frozen=True)
class RegisterParams:
    """What differencing needs: the row rules, the label convention, the series' zone."""

    rules: RuleParams
    label: str
    series_timezone: str


def register_schema(parsed: pa.Schema) -> pa.Schema:
    """Schema of parsed rows after differencing."""
    return pa.schema([*parsed, *SPAN_FIELDS])


def _ints(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy(), dtype=np.int64)


def _local_midnights(instants: np.ndarray, zone: str, days: np.ndarray) -> np.ndarray:
    """UTC microseconds of the local midnight `days` local days after each instant's local date."""
    if not len(instants):
        return instants
    stamps = pa.array(instants, pa.int64()).cast(UTC_TIMESTAMP)
    local_date, _ = local_time(stamps, zone)
    midnight = (_ints(pc.cast(local_date, pa.int32())) + days) * _US_PER_DAY
    naive = pa.array(midnight, pa.int64()).cast(pa.timestamp("us"))
    return _ints(
        pc.cast(pc.assume_timezone(naive, timezone=zone, ambiguous="earliest", nonexistent="latest"), pa.int64())
    )


def _step(starts: np.ndarray, minutes: np.ndarray, zone: str, direction: int) -> np.ndarray:
    """Each interval start moved one interval forward (1) or back (-1); a daily interval is a local day."""
    moved = starts + direction * minutes * _US_PER_MINUTE
    daily = minutes >= _DAILY
    if daily.any():
        moved[daily] = _local_midnights(starts[daily], zone, np.full(int(daily.sum()), direction))
    return moved


def _series_codes(table: pa.Table) -> np.ndarray:
    codes = np.zeros(table.num_rows, dtype=np.int64)
    for name in ("meter_id", "direction"):
        column = pc.fill_null(table[name], "")
        values = pc.unique(column)
        codes = codes * len(values) + _ints(pc.index_in(column, value_set=values))
    return codes


def _priors(rows: np.ndarray, series: np.ndarray, instants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by series, instant and preference: the row each is differenced against
    (the winner of the series' previous instant; -1 for its first instant), and which rows win
    their instant (the last of it)."""
    if not len(rows):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    s, t = series[rows], instants[rows]
    new_instant = np.r_[True, (s[1:] != s[:-1]) | (t[1:] != t[:-1])]
    instant_of = np.cumsum(new_instant) - 1
    winner = np.r_[new_instant[1:], True]
    winners, winner_series = rows[winner], s[winner]
    same_series = np.r_[False, winner_series[1:] == winner_series[:-1]]
    return np.where(same_series, np.r_[-1, winners[:-1]], -1)[instant_of], winner


def difference_registers(parsed: pa.Table, params: RegisterParams) -> pa.Table:
    """Parsed cumulative reads of whole series -> rows carrying interval energy; see the module docstring.

    Every row stays (as received, for bronze and quarantine); a good read's `value` becomes its
    difference to the previous good read (in its own unit), and the row's interval becomes the
    last interval of its span, `span_start_utc` and `span_minutes` saying where the span began
    and how long it is.
    """
    n = parsed.num_rows
    # The reads judged on their own merits (no span yet: the energy rules do not decide here).
    rules = replace(params.rules, spans=False)
    judged = validated_readings(nw.from_native(parsed).lazy(), rules).collect().to_native()
    rule = judged["rejection_rule"]
    energy_rule = pc.is_in(rule, value_set=pa.array(sorted(ENERGY_RULES), pa.string()))
    base = np.asarray(pc.fill_null(pc.or_(pc.is_null(rule), energy_rule), False).to_numpy(), dtype=bool)
    starts = _ints(parsed["interval_start_utc"])
    minutes = _ints(parsed["interval_minutes"])
    zone = params.series_timezone
    # The read's instant, and the start of the interval that ends there.
    instants = starts.copy()
    if params.label == "end":
        instants[base] = _step(starts[base], minutes[base], zone, 1)
    carrier = starts.copy()
    carrier[base] = _step(instants[base], minutes[base], zone, -1)

    values = np.asarray(pc.fill_null(parsed["value"], 0.0).to_numpy(), dtype=np.float64)
    units = pc.fill_null(parsed["unit"], "").to_pylist()
    factors = np.array([UNITS.get(u, ("energy", 1.0))[1] for u in units], dtype=np.float64)
    ranks = np.array([QUALITY_RANK.get(q, 0) for q in pc.fill_null(parsed["quality"], "").to_pylist()])
    order_of_read = _ints(parsed["row_order"]) if "row_order" in parsed.column_names else np.arange(n)
    series = _series_codes(parsed)

    delta = np.full(n, np.nan)
    span_start = np.zeros(n, dtype=np.int64)
    has_span = np.zeros(n, dtype=bool)
    first = np.zeros(n, dtype=bool)
    reset = np.zeros(n, dtype=bool)
    chain = np.zeros(n, dtype=bool)
    implausible = np.zeros(n, dtype=bool)
    sort_keys = (order_of_read, ranks, instants, series)
    limit = params.rules.max_demand_kw if params.rules.severity("above_physical_max") != "warn" else math.inf
    while True:
        # Series, then instant; within an instant the winner (best quality, then latest read) last.
        rows = np.flatnonzero(base & ~implausible)
        rows = rows[np.lexsort(tuple(key[rows] for key in sort_keys))]
        prior, winner = _priors(rows, series, instants)
        later = prior >= 0
        here, there = rows[later], prior[later]
        # In the read's own unit; the previous read converted where the unit differs.
        difference = values[here] - values[there] * factors[there] / factors[here]
        up = difference >= 0
        minutes_between = (instants[here] - instants[there]) / _US_PER_MINUTE
        demand = np.divide(
            difference * factors[here] * 60, minutes_between, where=minutes_between > 0, out=np.zeros(len(here))
        )
        # A read whose difference implies an impossible demand is quarantined for it and is no
        # base: the next read is taken against the last plausible one.
        wrong = up & (demand > limit)
        delta[here[up]] = np.round(difference[up], 9) + 0.0
        span_start[here[up]] = instants[there[up]]
        if not wrong.any():
            break
        implausible[here[wrong]] = True
        has_span[here[wrong]] = True
    first[rows[~later]] = True
    reset[here[~up]] = True
    has_span[here[up]] = True
    chain[rows[winner & later]] = True
    chain &= has_span
    status = pc.fill_null(parsed["value_status"], "").to_numpy(zero_copy_only=False).astype(object)
    status[first] = VALUE_REGISTER_START
    status[reset] = VALUE_REGISTER_RESET

    differenced = np.isin(status, [VALUE_REGISTER_START, VALUE_REGISTER_RESET]) | has_span
    value = pc.if_else(pa.array(has_span), pa.array(delta, pa.float64()), pa.scalar(None, pa.float64()))
    value = pc.if_else(pa.array(differenced), value, parsed["value"])
    status = pc.if_else(pa.array(has_span), VALUE_OK, pa.array(status.tolist(), pa.string()))
    span_minutes = np.where(has_span, (instants - span_start) // _US_PER_MINUTE, minutes)
    table = parsed.set_column(parsed.column_names.index("value"), "value", value)
    table = table.set_column(table.column_names.index("value_status"), "value_status", status)
    start_column = pa.array(carrier, pa.int64()).cast(UTC_TIMESTAMP)
    start_column = pc.if_else(pc.is_valid(parsed["interval_start_utc"]), start_column, parsed["interval_start_utc"])
    table = table.set_column(table.column_names.index("interval_start_utc"), "interval_start_utc", start_column)
    local_date, local_seconds = local_time(table["interval_start_utc"], zone)
    table = table.set_column(table.column_names.index("local_date"), "local_date", local_date)
    table = table.set_column(table.column_names.index("local_seconds"), "local_seconds", local_seconds)
    span = pa.array(np.where(has_span, span_start, carrier), pa.int64()).cast(UTC_TIMESTAMP)
    table = table.append_column(SPAN_FIELDS[0], pc.if_else(pc.is_valid(start_column), span, start_column))
    table = table.append_column(SPAN_FIELDS[1], pa.array(span_minutes, pa.int64()))
    table = table.append_column(SPAN_FIELDS[2], pa.nulls(n, pa.string()))
    return table.append_column(SPAN_FIELDS[3], pa.array(chain, pa.bool_()))


def _shares(totals: np.ndarray, rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each row's total in `counts` equal shares, the last share what is left, row after row."""
    share = np.repeat(totals[rows] / counts, counts)
    last = np.cumsum(counts) - 1
    share[last] = totals[rows] - (totals[rows] / counts) * (counts - 1)
    return share


def spread_register_spans(table: pa.Table, *, series_timezone: str) -> pa.Table:
    """Rows whose span covers several intervals -> one row per interval of the span.

    Each interval gets an equal share of the difference, the last interval what is left, so
    the shares add up to the difference; all of them are marked `register_spread`. Other rows
    pass unchanged. The output has the input's columns.
    """
    starts = _ints(table["interval_start_utc"])
    span = _ints(table["span_start_utc"])
    minutes = _ints(table["interval_minutes"])
    accepted = pc.and_(pc.is_null(table["rejection_rule"]), pc.is_valid(table["energy_kwh"]))
    wide = np.flatnonzero((span < starts) & np.asarray(pc.fill_null(accepted, False).to_numpy(), dtype=bool))
    if not len(wide):
        return table
    points: list[np.ndarray] = []
    for row in wide:
        if minutes[row] >= _DAILY:
            count = 1
            first = np.array([span[row]], dtype=np.int64)
            days = [first]
            while days[-1][0] < starts[row]:
                days.append(_local_midnights(days[-1], series_timezone, np.ones(1, dtype=np.int64)))
                count += 1
            points.append(np.concatenate(days[:count]))
        else:
            points.append(np.arange(span[row], starts[row] + 1, minutes[row] * _US_PER_MINUTE, dtype=np.int64))
    counts = np.array([len(p) for p in points], dtype=np.int64)
    take = np.repeat(wide, counts)
    expanded = table.take(pa.array(take, pa.int64()))
    energy = np.asarray(table["energy_kwh"].to_numpy(zero_copy_only=False), dtype=np.float64)
    shares = _shares(energy, wide, counts)
    new_starts = pa.array(np.concatenate(points), pa.int64()).cast(UTC_TIMESTAMP)
    columns = {
        "interval_start_utc": new_starts,
        "span_start_utc": new_starts,
        "span_minutes": pa.array(np.repeat(minutes[wide], counts), pa.int64()),
        "energy_kwh": pa.array(shares, pa.float64()),
        "estimation_method": pa.repeat(pa.scalar(METHOD_REGISTER_SPREAD), len(take)),
    }
    if "value" in table.column_names:  # the value in its unit, where the table still has it
        value = np.asarray(pc.fill_null(table["value"], 0.0).to_numpy(), dtype=np.float64)
        columns["value"] = pa.array(_shares(value, wide, counts), pa.float64())
    local_date, local_seconds = local_time(new_starts, series_timezone)
    columns.update(local_date=local_date, local_seconds=local_seconds)
    for name, column in columns.items():
        if name in expanded.column_names:
            index = expanded.column_names.index(name)
            expanded = expanded.set_column(index, name, column.cast(expanded.schema.field(name).type))
    keep = np.ones(table.num_rows, dtype=bool)
    keep[wide] = False
    return pa.concat_tables([table.filter(pa.array(keep)), expanded])
