"""The rule catalogue: README's table is generated from it, everything that names rules derives
from it, and every rule name the code emits is in it (and every rule is emitted by some input)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import BaseModel, ValidationError

from app.application.source_check import check_source
from app.domain import catalog
from app.domain.catalog import RULES, Rule
from app.domain.parsing import (
    TS_AMBIGUOUS,
    TS_DST_GAP,
    TS_UNPARSEABLE,
    VALUE_MISSING,
    VALUE_REGISTER_RESET,
    VALUE_REGISTER_START,
    VALUE_UNPARSEABLE,
    parsed_schema,
    with_local_time,
)
from app.domain.rules import (
    DUPLICATE_REPLACED,
    MALFORMED_ROW,
    MISSING_INTERVALS,
    RULE_NAMES,
    SERIES_RULES,
    RuleParams,
    rule_checks,
    validated_readings,
)
from app.domain.schemas import UTC_TIMESTAMP
from app.domain.sources import (
    DEFAULT_SEVERITIES,
    NO_QUARANTINE,
    NO_WARN,
    ColumnMapping,
    Estimation,
    SourceConfig,
    Validation,
)
from app.domain.vee import KEY_RULES, VEE_RULES, VeeParams, apply_vee
from app.infrastructure import readers
from tests.unit.test_rules import _row

README = Path(__file__).resolve().parents[2] / "README.md"
NOW = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)

# --- the catalogue and README ---------------------------------------------------------------------


def test_readme_rule_table_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    found = re.findall(r"<!-- rules:start -->\n(.*?)<!-- rules:end -->", text, flags=re.DOTALL)
    assert len(found) == 1, "README needs one <!-- rules:start --> ... <!-- rules:end --> block"
    assert found[0] == catalog.markdown_table(), "run `python -m app.domain.catalog --markdown` and paste it"


def test_the_module_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert catalog.main(["--markdown"]) == 0
    assert capsys.readouterr().out == catalog.markdown_table()
    assert catalog.main([]) == 2


def test_the_table_has_one_line_per_rule_in_catalogue_order() -> None:
    lines = catalog.markdown_table().splitlines()[2:]
    assert [line.split(" | ")[0].strip("| `") for line in lines] == list(RULES)
    assert all(line.count(" | ") == 5 for line in lines)


def test_every_rule_is_well_formed() -> None:
    for name, rule in RULES.items():
        assert rule.name == name
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
        assert rule.scope in ("file", "row", "series")
        assert rule.default_severity in rule.allowed_severities
        assert rule.checks and rule.checks[0].islower() and "\n" not in rule.checks
        assert not rule.checks.endswith(".")


def test_a_rule_refuses_a_default_it_does_not_allow() -> None:
    with pytest.raises(ValueError, match="not an allowed severity"):
        Rule("x", "row", "warn", ("quarantine", "fail"), "x")
    with pytest.raises(ValueError, match="in the order"):
        Rule("x", "row", "warn", ("fail", "warn"), "x")


def test_file_and_row_rules_come_first_then_series_rules() -> None:
    scopes = [rule.scope for rule in RULES.values()]
    assert scopes == sorted(scopes, key=["file", "row", "series"].index)


def _field(model: type[BaseModel], dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    info = model.model_fields.get(head)
    if info is None:
        return False
    if not rest:
        return True
    nested = info.annotation
    return isinstance(nested, type) and issubclass(nested, BaseModel) and _field(nested, rest)


@pytest.mark.parametrize("name", list(RULES))
def test_settings_are_source_config_keys(name: str) -> None:
    for key in RULES[name].settings:
        assert _field(SourceConfig, key), f"{name}: {key!r} is not a SourceConfig key"


# --- what derives from it --------------------------------------------------------------------------


def test_rule_name_sets_derive_from_the_catalogue() -> None:
    assert list(DEFAULT_SEVERITIES) == list(RULES)
    assert {name: rule.default_severity for name, rule in RULES.items()} == DEFAULT_SEVERITIES
    assert catalog.names(("file", "row")) == RULE_NAMES
    assert [name for name, _ in rule_checks(RuleParams(NOW, 30, "UTC", 1.0, False))] == list(catalog.names("row"))
    assert MALFORMED_ROW in catalog.names("file")
    assert catalog.names("series") == SERIES_RULES
    assert {DUPLICATE_REPLACED, MISSING_INTERVALS} <= set(SERIES_RULES)
    assert set(VEE_RULES) <= set(SERIES_RULES)
    assert set(RULE_NAMES) >= KEY_RULES  # the row rules vee takes as saying a row's key is untrusted
    assert set(NO_QUARANTINE) == {n for n, r in RULES.items() if "quarantine" not in r.allowed_severities}
    assert set(NO_WARN) == {n for n, r in RULES.items() if "warn" not in r.allowed_severities}


def test_checks_must_match_the_catalogue() -> None:
    row = dict.fromkeys(catalog.names("row"), 0)
    assert [name for name, _ in catalog.in_order(row, "row")] == list(catalog.names("row"))
    with pytest.raises(ValueError, match=r"not in the catalogue \['made_up'\]"):
        catalog.in_order({**row, "made_up": 0}, "row")
    with pytest.raises(ValueError, match=r"no check \['meter_id_missing'\]"):
        catalog.in_order({k: v for k, v in row.items() if k != "meter_id_missing"}, "row")


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("severity", ["warn", "quarantine", "fail"])
def test_a_source_may_set_exactly_the_allowed_severities(name: str, severity: str) -> None:
    def declare() -> SourceConfig:
        declared = {"name": "s", "path": "x.csv", "unit": "kWh", "rules": {name: {"severity": severity}}}
        return SourceConfig.model_validate(declared)

    if severity in RULES[name].allowed_severities:
        assert declare().severity(name) == severity
    else:
        with pytest.raises(ValidationError, match=f"rule '{name}' .*; use '"):
            declare()


def test_an_unknown_rule_is_refused_with_every_known_name_in_order() -> None:
    with pytest.raises(ValidationError) as error:
        SourceConfig.model_validate(
            {"name": "s", "path": "x.csv", "unit": "kWh", "rules": {"spikes": {"severity": "warn"}}}
        )
    assert f"unknown rule 'spikes'; known: {', '.join(RULES)}" in str(error.value)
    with pytest.raises(KeyError, match="unknown rule 'spikes'"):
        catalog.rule("spikes")


# --- every name the code emits is in the catalogue, and every rule is emitted ----------------------


#: Rows crafted to trip the row rules, each as parsing (and register differencing) types it.
CRAFTED_ROWS = [
    _row(),
    _row(meter_id=""),
    _row(timestamp_status=TS_UNPARSEABLE, interval_start_utc=None),
    _row(timestamp_status=TS_DST_GAP, interval_start_utc=None),
    _row(timestamp_status=TS_AMBIGUOUS, interval_start_utc=None),
    _row(interval_minutes=None),
    _row(interval_start_utc=datetime(2025, 6, 1, 10, 17, tzinfo=UTC)),
    _row(interval_start_utc=NOW + timedelta(days=1)),
    _row(value=None, value_status=VALUE_MISSING),
    _row(value=None, value_status=VALUE_UNPARSEABLE),
    _row(value=None, value_status=VALUE_REGISTER_START),
    _row(value=None, value_status=VALUE_REGISTER_RESET),
    _row(unit="kvarh"),
    _row(direction="sideways"),
    _row(quality="V"),
    _row(value=-0.1),
    _row(value=-0.1, direction="export"),
    _row(value=50.0),
    _row(interval_start_utc=datetime(2025, 5, 1, tzinfo=UTC)),  # before the watermark's horizon below
]


def _emitted(table: pa.Table) -> set[str]:
    """Rule names in `rejection_rule` and `validation_flags`."""
    names = {rule for rule in table["rejection_rule"].to_pylist() if rule}
    for flags in table["validation_flags"].to_pylist():
        names |= set(filter(None, (flags or "").split(";")))
    return names


def test_the_row_rules_emit_catalogue_names_and_every_row_rule_is_emitted(engine: Any) -> None:
    params = RuleParams(
        now_utc=NOW,
        interval_minutes=30,
        series_timezone="UTC",
        max_demand_kw=10.0,
        bidirectional=False,
        late_before=datetime(2025, 5, 20, tzinfo=UTC),
    )
    parsed = with_local_time(pa.Table.from_pylist(CRAFTED_ROWS, schema=parsed_schema([])), "UTC")
    validated = engine.to_arrow(validated_readings(engine.frame(parsed), params))
    emitted = _emitted(validated)
    assert emitted <= set(RULES)
    assert emitted == set(catalog.names("row"))
    # Warning instead of rejecting, the rules that may warn write their names as flags.
    warn = {name: "warn" for name in catalog.names("row", allows="warn")}
    flagged = engine.to_arrow(
        validated_readings(engine.frame(parsed), RuleParams(**{**vars(params), "severities": warn}))
    )
    flags = {f for value in flagged["validation_flags"].to_pylist() for f in value.split(";") if f}
    assert flags == set(warn)


VEE_SCHEMA = pa.schema(
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
    ]
)


def _day(meter: str, day: date, values: list[float], role: str = "batch") -> list[dict[str, Any]]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return [
        {
            "meter_id": meter,
            "direction": "import",
            "interval_start_utc": start + timedelta(minutes=30 * i),
            "interval_minutes": 30,
            "energy_kwh": value,
            "reported_kwh": value,
            "quality_flag": "actual",
            "rejection_rule": None,
            "role": role,
            "local_date": day,
            "validation_flags": "",
        }
        for i, value in enumerate(values)
    ]


def _vee_input() -> pa.Table:
    day = date(2025, 6, 16)
    rows = [
        *_day("spike", day, [0.1] * 47 + [5.0]),
        *_day("zeros", day, [0.0] * 48),
        *_day("zeros", day + timedelta(days=1), [0.0] * 48),
        *_day("high", day, [10.0] * 48),
    ]
    for back in range(1, 9):
        rows += _day("high", day - timedelta(days=back), [1.0] * 48, role="history")
    return pa.Table.from_pylist(rows, schema=VEE_SCHEMA)


@pytest.mark.parametrize("severity", ["warn", "quarantine", "fail"])
def test_the_series_rules_emit_catalogue_names_and_each_is_emitted(severity: str) -> None:
    params = VeeParams("UTC", Validation(), Estimation(), dict.fromkeys(VEE_RULES, severity))
    emitted = _emitted(apply_vee(_vee_input(), params))
    assert emitted <= set(RULES)
    # The series rules VEE judges; the pipeline counts the other two (see the check below).
    assert emitted == set(VEE_RULES) == set(SERIES_RULES) - {DUPLICATE_REPLACED, MISSING_INTERVALS}


def _csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _long_lines() -> list[str]:
    """Lines of a long CSV that trip every file and row rule of an interval source, and the series rules."""
    ok = "M1,2025-06-01T10:00:00,0.5,kWh,import,A,30"
    lines = [
        "meter_id,timestamp,value,unit,direction,quality,minutes",
        ok,
        ok,  # read again: duplicate_replaced
        ok + ",extra",  # malformed_row
        ",2025-06-01T10:30:00,0.5,kWh,import,A,30",
        "M1,2025-06-01T25:00:00,0.5,kWh,import,A,30",
        "M1,2025-03-30T01:30:00,0.5,kWh,import,A,30",  # in London's spring-forward gap
        "M1,2025-10-26T01:30:00,0.5,kWh,import,A,30",  # in London's repeated hour
        "M1,2025-06-01T11:00:00,0.5,kWh,import,A,7",
        "M1,2025-06-01T11:17:00,0.5,kWh,import,A,30",
        "M1,2099-06-01T11:00:00,0.5,kWh,import,A,30",
        "M1,2025-06-01T11:30:00,,kWh,import,A,30",
        "M1,2025-06-01T12:00:00,abc,kWh,import,A,30",
        "M1,2025-06-01T12:30:00,0.5,kvarh,import,A,30",
        "M1,2025-06-01T13:00:00,0.5,kWh,sideways,A,30",
        "M1,2025-06-01T13:30:00,0.5,kWh,import,V,30",
        "M1,2025-06-01T14:00:00,-0.5,kWh,import,A,30",
        "M1,2025-06-01T14:30:00,-0.5,kWh,export,A,30",
        "M1,2025-06-01T15:00:00,1000,kWh,import,A,30",
    ]
    start = datetime(2025, 6, 2)

    def day(meter: str, offset: int, values: list[float]) -> list[str]:
        first = start + timedelta(days=offset)
        return [
            f"{meter},{(first + timedelta(minutes=30 * i)).isoformat()},{value},kWh,import,A,30"
            for i, value in enumerate(values)
        ]

    lines += day("SPIKE", 0, [0.1] * 47 + [5.0])
    lines += day("ZEROS", 0, [0.0] * 48) + day("ZEROS", 1, [0.0] * 48)
    for offset in range(8):
        lines += day("HIGH", offset, [1.0] * 48)
    lines += day("HIGH", 8, [10.0] * 48)
    return lines


def test_a_check_of_crafted_files_counts_only_catalogue_names_and_every_rule(tmp_path: Path) -> None:
    """The counts a run reports (here as `sources check` computes them, with the pipeline's pieces)."""
    long = SourceConfig(
        name="crafted",
        path=str(tmp_path / "long.csv"),
        columns=ColumnMapping(unit="unit", direction="direction", quality="quality", interval_minutes="minutes"),
        quality_values={"A": "actual"},
        timestamp_timezone="Europe/London",
        series_timezone="Europe/London",
        max_demand_kw=100.0,
    )
    registers = SourceConfig(name="registers", path=str(tmp_path / "registers.csv"), unit="kWh", value_kind="register")
    register_lines = [
        "meter_id,timestamp,value",
        *(f"R1,2025-06-01T0{h}:00:00Z,{v}" for h, v in enumerate([5, 6, 2, 3])),
    ]
    counted: set[str] = set()
    for source, lines in ((long, _long_lines()), (registers, register_lines)):
        path = _csv(Path(source.path), lines)
        check = check_source(readers, source, [path], now=NOW)
        assert set(check.rule_counts) <= set(RULES), sorted(set(check.rule_counts) - set(RULES))
        counted |= set(check.rule_counts)
    # A check has no stream, so no watermark: late_beyond_horizon is judged in streams only.
    assert counted == set(RULES) - {"late_beyond_horizon"}, sorted(set(RULES) - counted)
