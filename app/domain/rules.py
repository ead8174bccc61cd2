"""Validation rules, first set: each is a name and a narwhals expression that is true on failure.

Rules run on any narwhals backend. A row takes the name of the first rule it fails;
rows that fail one go to quarantine with that name, never silently away.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import narwhals as nw

from app.domain.parsing import TS_AMBIGUOUS, TS_DST_GAP, TS_UNPARSEABLE, VALUE_MISSING, VALUE_UNPARSEABLE
from app.domain.sources import UNITS, SourceConfig

#: Rejected by the reader before typing: the line does not have the header's field count.
MALFORMED_ROW = "malformed_row"


@dataclass(frozen=True)
class RuleParams:
    """What the rules need to know about the source and the moment of the run."""

    now_utc: datetime
    interval_minutes: int
    series_timezone: str
    max_demand_kw: float
    bidirectional: bool

    @classmethod
    def for_source(cls, source: SourceConfig, *, now_utc: datetime) -> RuleParams:
        return cls(
            now_utc=now_utc,
            interval_minutes=source.interval_minutes,
            series_timezone=source.series_timezone,
            max_demand_kw=source.max_demand_kw,
            bidirectional=source.bidirectional,
        )


def energy_kwh(interval_minutes: int) -> nw.Expr:
    """`value` in its `unit` -> kWh over the interval (null for an unknown unit)."""
    hours = interval_minutes / 60
    value, unit = nw.col("value"), nw.col("unit")
    expr = None
    for name, (quantity, factor) in UNITS.items():
        scale = factor * hours if quantity == "power" else factor
        expr = (nw.when(unit == name) if expr is None else expr.when(unit == name)).then(value * scale)
    assert expr is not None
    return expr.otherwise(nw.lit(None, nw.Float64()))


def rule_checks(params: RuleParams) -> list[tuple[str, nw.Expr]]:
    """The first-set rules in the order they are tried; expressions are true where a row fails."""
    interval_seconds = params.interval_minutes * 60
    latest_start = params.now_utc - timedelta(minutes=params.interval_minutes)
    demand_kw = nw.col("energy_kwh").abs() * (60 / params.interval_minutes)
    seconds_of_day = nw.col("local_seconds")  # in the series' zone, from parsing
    negative = nw.col("energy_kwh") < 0
    if not params.bidirectional:
        negative = negative & (nw.col("direction") == "import")
    else:
        negative = negative & nw.lit(value=False)
    return [
        ("meter_id_missing", nw.col("meter_id") == ""),
        ("timestamp_unparseable", nw.col("timestamp_status") == TS_UNPARSEABLE),
        ("timestamp_in_dst_gap", nw.col("timestamp_status") == TS_DST_GAP),
        ("timestamp_ambiguous", nw.col("timestamp_status") == TS_AMBIGUOUS),
        (
            "timestamp_off_grid",
            # a // b * b instead of %: modulo is missing on some Arrow-backed pandas dtypes.
            (seconds_of_day // interval_seconds * interval_seconds != seconds_of_day)
            | (nw.col("interval_start_utc").dt.microsecond() != 0),
        ),
        ("timestamp_in_future", nw.col("interval_start_utc") > nw.lit(latest_start)),
        ("value_missing", nw.col("value_status") == VALUE_MISSING),
        ("value_unparseable", nw.col("value_status") == VALUE_UNPARSEABLE),
        ("unit_unknown", nw.col("energy_kwh").is_null()),
        ("direction_unknown", ~nw.col("direction").is_in(["import", "export"])),
        ("negative_import", negative),
        ("above_physical_max", demand_kw > params.max_demand_kw),
    ]


RULE_NAMES: tuple[str, ...] = (
    MALFORMED_ROW,
    *(name for name, _ in rule_checks(RuleParams(datetime(2000, 1, 1), 30, "UTC", 1.0, False))),
)


def validated_readings(parsed: nw.LazyFrame, params: RuleParams) -> nw.LazyFrame:
    """Parsed rows + `energy_kwh` and `rejection_rule` (null where every rule passes)."""
    with_energy = parsed.with_columns(energy_kwh=energy_kwh(params.interval_minutes))
    checks = rule_checks(params)
    first_name, first_check = checks[0]
    chain = nw.when(first_check.fill_null(value=False)).then(nw.lit(first_name))
    for name, check in checks[1:]:
        chain = chain.when(check.fill_null(value=False)).then(nw.lit(name))
    return with_energy.with_columns(rejection_rule=chain.otherwise(nw.lit(None, nw.String())))
