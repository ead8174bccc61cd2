"""Row validation rules: each is a name and a narwhals expression that is true on failure.

Rules run on any narwhals backend. Names, order and severities come from the rule catalogue
(`catalog.RULES`); each rule has a severity per source (default `sources.DEFAULT_SEVERITIES`):
`warn` flags the row and keeps it, `quarantine` moves it to quarantine under the rule's name,
`fail` stops the batch before anything is written. Series rules (spike, zero run, ...) need a
meter's whole day and live in `vee`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import narwhals as nw

from app.domain import catalog
from app.domain.parsing import (
    TS_AMBIGUOUS,
    TS_DST_GAP,
    TS_UNPARSEABLE,
    VALUE_MISSING,
    VALUE_UNPARSEABLE,
)
from app.domain.sources import DEFAULT_SEVERITIES, QUALITY_RANK, UNITS, Severity, SourceConfig

#: Value statuses of register reads that give no interval energy (set by the reader).
VALUE_REGISTER_START, VALUE_REGISTER_RESET = "register_start", "register_reset"

#: Rejected by the reader before typing: the line does not have the header's field count.
MALFORMED_ROW = catalog.rule("malformed_row").name
#: Series rules the pipeline counts itself: a reading replaced by a duplicate, an interval not read.
DUPLICATE_REPLACED = catalog.rule("duplicate_replaced").name
MISSING_INTERVALS = catalog.rule("missing_intervals").name


@dataclass(frozen=True)
class RuleParams:
    """What the rules need to know about the source and the moment of the run."""

    now_utc: datetime
    interval_minutes: int
    series_timezone: str
    max_demand_kw: float
    bidirectional: bool
    #: Rule name -> severity where it differs from DEFAULT_SEVERITIES.
    severities: Mapping[str, Severity] = field(default_factory=dict)
    #: Register sources: a row's energy spans `span_minutes` (from the previous read), which
    #: the demand check divides by.
    spans: bool = False
    #: In a stream: intervals starting before this are late_beyond_horizon (None: no watermark yet).
    late_before: datetime | None = None

    @classmethod
    def for_source(cls, source: SourceConfig, *, now_utc: datetime, watermark: datetime | None = None) -> RuleParams:
        return cls(
            late_before=None if watermark is None else watermark - source.allowed_lateness,
            now_utc=now_utc,
            interval_minutes=source.interval_minutes,
            series_timezone=source.series_timezone,
            max_demand_kw=source.max_demand_kw,
            bidirectional=source.bidirectional,
            severities={name: setting.severity for name, setting in source.rules.items()},
            spans=source.value_kind == "register",
        )

    def severity(self, rule: str) -> Severity:
        return self.severities.get(rule, DEFAULT_SEVERITIES[rule])


def energy_kwh() -> nw.Expr:
    """`value` in its `unit` -> kWh over the row's interval (null for an unknown unit)."""
    hours = nw.col("interval_minutes").cast(nw.Float64()) / 60
    value, unit = nw.col("value"), nw.col("unit")
    expr = None
    for name, (quantity, factor) in UNITS.items():
        scaled = value * factor * hours if quantity == "power" else value * factor
        expr = (nw.when(unit == name) if expr is None else expr.when(unit == name)).then(scaled)
    assert expr is not None
    return expr.otherwise(nw.lit(None, nw.Float64()))


#: Before any reading: the horizon of a batch, which has no watermark.
_NO_WATERMARK = datetime(1900, 1, 1, tzinfo=UTC)


def rule_checks(params: RuleParams) -> list[tuple[str, nw.Expr]]:
    """The row rules in the order they are tried; expressions are true where a row fails."""
    interval_seconds = nw.col("interval_minutes").cast(nw.Int64()) * 60
    # An interval is in the future until it has ended (by the source's declared length).
    latest_start = params.now_utc - timedelta(minutes=params.interval_minutes)
    duration = nw.col("span_minutes" if params.spans else "interval_minutes").cast(nw.Float64())
    demand_kw = nw.col("energy_kwh").abs() * 60 / duration
    seconds_of_day = nw.col("local_seconds")  # in the series' zone, from parsing
    below_zero = nw.col("energy_kwh") < 0
    # A channel declared bidirectional may run either way; otherwise energy flows one way per direction.
    one_way = nw.lit(value=not params.bidirectional)
    negative = below_zero & (nw.col("direction") == "import") & one_way
    negative_export = below_zero & (nw.col("direction") == "export") & one_way
    checks = {
        "meter_id_missing": nw.col("meter_id") == "",
        "timestamp_unparseable": nw.col("timestamp_status") == TS_UNPARSEABLE,
        "timestamp_in_dst_gap": nw.col("timestamp_status") == TS_DST_GAP,
        "timestamp_ambiguous": nw.col("timestamp_status") == TS_AMBIGUOUS,
        "interval_invalid": nw.col("interval_minutes").is_null(),
        # a // b * b instead of %: modulo is missing on some Arrow-backed pandas dtypes.
        "timestamp_off_grid": (seconds_of_day // interval_seconds * interval_seconds != seconds_of_day)
        | (nw.col("interval_start_utc").dt.microsecond() != 0),
        "timestamp_in_future": nw.col("interval_start_utc") > nw.lit(latest_start),
        # Without a watermark nothing is late; still a column expression, which every engine can flag.
        "late_beyond_horizon": nw.col("interval_start_utc") < nw.lit(params.late_before or _NO_WATERMARK),
        "value_missing": nw.col("value_status") == VALUE_MISSING,
        "value_unparseable": nw.col("value_status") == VALUE_UNPARSEABLE,
        "register_start": nw.col("value_status") == VALUE_REGISTER_START,
        "register_reset": nw.col("value_status") == VALUE_REGISTER_RESET,
        "unit_unknown": nw.col("energy_kwh").is_null(),
        "direction_unknown": ~nw.col("direction").is_in(["import", "export"]),
        "quality_unknown": ~nw.col("quality").is_in(list(QUALITY_RANK)),
        "negative_import": negative,
        "negative_export": negative_export,
        "above_physical_max": demand_kw > params.max_demand_kw,
    }
    # In the catalogue's order, which is the order they are tried.
    return catalog.in_order(checks, "row")


#: The rules a row is tried against, in order: the reader's (malformed_row), then `rule_checks`.
RULE_NAMES: tuple[str, ...] = catalog.names(("file", "row"))

#: Series (VEE) rules, judged per meter and day after the row rules.
SERIES_RULES: tuple[str, ...] = catalog.names("series")


def validated_readings(parsed: nw.LazyFrame, params: RuleParams) -> nw.LazyFrame:
    """Parsed rows + `energy_kwh`, `rejection_rule` and `validation_flags`.

    A row takes the name of the first rule of severity `quarantine` or `fail` it fails
    (null where it fails none); rules of severity `warn` add their names to
    `validation_flags` (";"-joined, "" when none) and keep the row.
    """
    with_energy = parsed.with_columns(energy_kwh=energy_kwh())
    checks = [(name, check.fill_null(value=False)) for name, check in rule_checks(params)]
    rejecting = [(n, c) for n, c in checks if params.severity(n) != "warn"]
    warning = [(n, c) for n, c in checks if params.severity(n) == "warn"]
    chain: Any = None
    for name, check in rejecting:
        chain = nw.when(check).then(nw.lit(name)) if chain is None else chain.when(check).then(nw.lit(name))
    rule = chain.otherwise(nw.lit(None, nw.String())) if chain is not None else nw.lit(None, nw.String())
    if warning:
        flags = nw.concat_str(
            [nw.when(check).then(nw.lit(name)).otherwise(nw.lit("")) for name, check in warning], separator=";"
        )
        # Squeeze the separators of rules that did not fire.
        flags = flags.str.replace_all(";+", ";").str.strip_chars(";")
    else:
        flags = nw.lit("")
    return with_energy.with_columns(rejection_rule=rule, validation_flags=flags)
