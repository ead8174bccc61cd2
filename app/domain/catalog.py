"""The validation rule catalogue: one entry per rule, from which everything else is derived.

A rule's name, where it is judged, its default severity, the severities a source may give it,
what it checks and the source settings it reads are written here once. The severities a source
may set and their defaults (`sources`), the row and series rule names (`rules`, `vee`), the
error listing the known rules and README's rule table all come from `RULES`. Adding a rule
means an entry here and its check in the one function that judges its scope:

- `file`: the reader, on a line as split from the file, before typing (`readers`);
- `row`: `rules.rule_checks`, on each typed reading, in catalogue order (a row takes the first
  rule of severity quarantine or fail it fails);
- `series`: per meter and local day after the row rules: `vee._judge` for the rules that judge
  a kept reading (in catalogue order), the pipeline's counts for the others.

`python -m app.domain.catalog --markdown` prints README's table.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, get_args

Severity = Literal["warn", "quarantine", "fail"]
Scope = Literal["file", "row", "series"]

SEVERITIES: tuple[Severity, ...] = get_args(Severity)
#: Every severity; rules whose failure leaves a reading to keep and a row to quarantine.
_ANY: tuple[Severity, ...] = ("warn", "quarantine", "fail")
#: No value to keep: the reading cannot be flagged and kept, only quarantined (or the batch failed).
_NO_WARN: tuple[Severity, ...] = ("quarantine", "fail")
#: No row of the batch to quarantine (a reading the source did not keep, or none at all).
_NO_QUARANTINE: tuple[Severity, ...] = ("warn", "fail")

T = TypeVar("T")


@dataclass(frozen=True)
class Rule:
    """One validation rule."""

    name: str
    #: Where it is judged: `file` (the reader, on a line), `row` (a typed reading) or `series`
    #: (a meter's local day).
    scope: Scope
    default_severity: Severity
    #: The severities a source may set in `rules`, in the order warn, quarantine, fail.
    allowed_severities: tuple[Severity, ...]
    #: One sentence: when a reading fails it.
    checks: str
    #: The source-config keys the check reads (dotted for nested ones: `validation.spike_ratio`).
    settings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.default_severity not in self.allowed_severities:
            raise ValueError(f"rule {self.name!r}: default {self.default_severity!r} is not an allowed severity")
        if tuple(s for s in SEVERITIES if s in self.allowed_severities) != self.allowed_severities:
            raise ValueError(f"rule {self.name!r}: allowed severities must be distinct, in the order {SEVERITIES}")


_RULES = (
    Rule(
        "malformed_row",
        "file",
        "quarantine",
        _NO_WARN,
        "the line's field count differs from the header's",
        ("trim_trailing_delimiters",),
    ),
    Rule("meter_id_missing", "row", "quarantine", _NO_WARN, "the meter id is empty"),
    Rule(
        "timestamp_unparseable",
        "row",
        "quarantine",
        _NO_WARN,
        "not a valid timestamp in the declared format (2025-02-30 or 30/02/2025 included)",
        ("timestamp_format",),
    ),
    Rule(
        "timestamp_in_dst_gap",
        "row",
        "quarantine",
        _NO_WARN,
        "a wall time inside the spring-forward gap (also with a non-UTC offset that claims it)",
        ("timestamp_timezone",),
    ),
    Rule(
        "timestamp_ambiguous",
        "row",
        "quarantine",
        _NO_WARN,
        'a wall time in the repeated fall-back hour, no offset, `ambiguous_time = "reject"`',
        ("timestamp_timezone", "ambiguous_time"),
    ),
    Rule(
        "interval_invalid",
        "row",
        "quarantine",
        _NO_WARN,
        "a per-row interval length that is not a whole number of minutes dividing a day, or (with interval "
        "ends or periods) not the declared interval: a daily source's rows must span one local day",
        ("interval_minutes",),
    ),
    Rule(
        "timestamp_off_grid",
        "row",
        "quarantine",
        _NO_WARN,
        "the interval start is not on the interval grid of the local day",
        ("interval_minutes", "series_timezone"),
    ),
    Rule(
        "timestamp_in_future",
        "row",
        "quarantine",
        _ANY,
        "the interval has not ended yet at the run's start",
        ("interval_minutes",),
    ),
    Rule(
        "late_beyond_horizon",
        "row",
        "warn",
        _ANY,
        "in a stream, the interval starts before the latest interval the stream has stored (its watermark) "
        "minus the source's `allowed_lateness`: a late read, kept (warn) but counted",
        ("allowed_lateness",),
    ),
    Rule(
        "value_missing",
        "row",
        "quarantine",
        _NO_WARN,
        "one of the source's missing-value markers",
        ("missing_values", "zero_when_quality"),
    ),
    Rule(
        "value_unparseable",
        "row",
        "quarantine",
        _NO_WARN,
        "not a number, or not finite (`1e309`)",
        ("decimal",),
    ),
    Rule(
        "register_start",
        "row",
        "quarantine",
        _NO_WARN,
        "the first cumulative read of a series in a batch, in time order (no span before it)",
        ("value_kind",),
    ),
    Rule(
        "register_reset",
        "row",
        "quarantine",
        _NO_WARN,
        "a cumulative read below the previous one in time order (meter reset, rollover or exchange); the "
        "reads after it are taken against it",
        ("value_kind",),
    ),
    Rule(
        "unit_unknown",
        "row",
        "quarantine",
        _NO_WARN,
        "a unit other than Wh, kWh, MWh, GWh, therm, W, kW, MW",
        ("unit", "unit_values"),
    ),
    Rule(
        "direction_unknown",
        "row",
        "quarantine",
        _NO_WARN,
        "a direction other than import or export",
        ("direction_values",),
    ),
    Rule(
        "quality_unknown",
        "row",
        "quarantine",
        _NO_WARN,
        "a quality the source's `quality_values` does not map",
        ("quality_values",),
    ),
    Rule(
        "negative_import",
        "row",
        "quarantine",
        _ANY,
        "below zero on an import channel not declared bidirectional",
        ("bidirectional",),
    ),
    Rule(
        "negative_export",
        "row",
        "quarantine",
        _ANY,
        "below zero on an export channel not declared bidirectional (an export delivered as negative "
        "numbers: set `value_scale = -1`)",
        ("bidirectional",),
    ),
    Rule(
        "above_physical_max",
        "row",
        "quarantine",
        _ANY,
        "interval energy implies a demand above `max_demand_kw`",
        ("max_demand_kw",),
    ),
    Rule(
        "duplicate_replaced",
        "series",
        "warn",
        _NO_QUARANTINE,
        "a reading of the same meter, interval and direction was read again; the read of better quality "
        "wins, then the later one",
    ),
    Rule(
        "missing_intervals",
        "series",
        "warn",
        _NO_QUARANTINE,
        "the day has fewer read intervals than its DST-aware count (92/96/100 quarter-hours)",
        ("interval_minutes", "series_timezone"),
    ),
    Rule(
        "spike",
        "series",
        "warn",
        _ANY,
        "the day's highest interval is more than `spike_ratio` x its third-highest",
        ("validation.spike_ratio", "validation.spike_min_kwh"),
    ),
    Rule(
        "high_low",
        "series",
        "warn",
        _ANY,
        "a complete day's total is above `high_ratio` x or below `low_ratio` x the average of the previous "
        "`lookback_days` complete days",
        ("validation.high_ratio", "validation.low_ratio", "validation.lookback_days", "validation.min_lookback_days"),
    ),
    Rule(
        "zero_run",
        "series",
        "warn",
        _ANY,
        "more than `max_zero_intervals` consecutive zero intervals on an import channel (export is zero "
        "whenever nothing is generated)",
        ("validation.max_zero_intervals",),
    ),
)

#: Rule name -> rule, in the order they are tried: file and row rules (a row takes the first it
#: fails), then series rules.
RULES: dict[str, Rule] = {r.name: r for r in _RULES}
if len(RULES) != len(_RULES):
    raise ValueError("rule names must differ")


def rule(name: str) -> Rule:
    """The catalogue's rule `name`; a KeyError names the known rules."""
    try:
        return RULES[name]
    except KeyError:
        raise KeyError(f"unknown rule {name!r}; known: {', '.join(RULES)}") from None


def names(scope: Scope | Sequence[Scope] | None = None, *, allows: Severity | None = None) -> tuple[str, ...]:
    """Rule names in catalogue order, of one scope or several, optionally only those that may take
    severity `allows`."""
    scopes = None if scope is None else ((scope,) if isinstance(scope, str) else tuple(scope))
    return tuple(
        r.name
        for r in RULES.values()
        if (scopes is None or r.scope in scopes) and (allows is None or allows in r.allowed_severities)
    )


def default_severities() -> dict[str, Severity]:
    """Rule name -> default severity, in catalogue order."""
    return {r.name: r.default_severity for r in RULES.values()}


def severity_error(name: str, severity: str) -> str | None:
    """Why a source may not give rule `name` this severity; None when it may."""
    found = RULES.get(name)
    if found is None:
        return f"unknown rule {name!r}; known: {', '.join(RULES)}"
    if severity in found.allowed_severities:
        return None
    allowed = " or ".join(f"'{s}'" for s in found.allowed_severities)
    if severity == "quarantine":
        return f"rule {name!r} has no row to quarantine; use {allowed}"
    if severity == "warn":
        return f"rule {name!r} leaves no value to keep; use {allowed}"
    return f"rule {name!r} cannot be {severity!r}; use {allowed}"


def in_order(checks: Mapping[str, T], scope: Scope | Sequence[Scope]) -> list[tuple[str, T]]:
    """`checks` (rule name -> its check) as (name, check) pairs in catalogue order; the names
    must be exactly the catalogue's of `scope`."""
    expected = names(scope)
    if set(checks) != set(expected):
        extra, absent = sorted(set(checks) - set(expected)), [n for n in expected if n not in checks]
        raise ValueError(f"checks and the rule catalogue differ: not in the catalogue {extra}, no check {absent}")
    return [(name, checks[name]) for name in expected]


def _settings_cell(settings: tuple[str, ...]) -> str:
    return ", ".join(f"`{key}`" for key in settings) or "—"


def markdown_table() -> str:
    """README's rule table, one line per rule in catalogue order."""
    lines = [
        "| rule | scope | fails when | default | may be set to | settings |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in RULES.values():
        allowed = ", ".join(r.allowed_severities)
        cells = (f"`{r.name}`", r.scope, r.checks, r.default_severity, allowed, _settings_cell(r.settings))
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["--markdown"]:
        print("usage: python -m app.domain.catalog --markdown", file=sys.stderr)
        return 2
    sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
