"""Dashboards and alerts (deploy/): the alert rules and their unit tests under `promtool`, the Grafana
dashboard's queries against the metric names the real service exports, their compose services, and
the freshness of silver that /metrics shows.

`promtool` comes with Debian's `prometheus` package. Without it the promtool tests skip, except
where CI or REQUIRE_PROMTOOL is set (as .ci/run does): there they fail, saying how to install it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from deltalake import DeltaTable
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.dependencies import current_settings
from app.application.runner import run_batch
from app.domain.batches import StreamRecord
from app.domain.schemas import SILVER_READINGS
from app.infrastructure.settings import Settings
from app.main import app
from app.wiring import open_platform
from tests.integration.conftest import NOW, write_csv

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "energy-platform.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "energy-platform.yml"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROFILE = "observability"

#: Set (as CI does) to fail rather than skip when promtool is missing.
REQUIRE_VARIABLES = ("CI", "REQUIRE_PROMTOOL")
#: Series Prometheus makes itself for each scrape target, which alert rules may use.
PROMETHEUS_SERIES = {"up"}

HEADER = "meter_id,timestamp,value"
SOURCES_TOML = (
    '[sources.hourly]\npath = "in"\nunit = "kWh"\ninterval_minutes = 60\n'
    '[sources.halfhourly]\npath = "in"\nunit = "kWh"\ninterval_minutes = 30\n'
)


# --- promtool --------------------------------------------------------------------------------------


def promtool_required() -> bool:
    """Whether CI or REQUIRE_PROMTOOL is set to something other than an explicit no."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no") for name in REQUIRE_VARIABLES)


def promtool() -> str:
    """The promtool on PATH; without it skip the test, or fail it where promtool is required."""
    found = shutil.which("promtool")
    if found is None:
        message = (
            "promtool is not installed, so the alert rules cannot be checked; install it with "
            "`apt-get install -y prometheus` (Debian's package provides it)"
        )
        if promtool_required():
            pytest.fail(f"{message}. {' or '.join(REQUIRE_VARIABLES)} is set, so it may not be skipped.", pytrace=False)
        pytest.skip(message)
    return found


def _promtool(*args: str) -> str:
    result = subprocess.run([promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_alert_rules_pass_promtool_check() -> None:
    output = _promtool("check", "rules", str(ALERTS.relative_to(ROOT)))
    assert "SUCCESS" in output, output


def test_prometheus_config_passes_promtool_check() -> None:
    output = _promtool("check", "config", str(PROMETHEUS_CONFIG.relative_to(ROOT)))
    assert "SUCCESS" in output, output


def test_alert_unit_tests_pass() -> None:
    output = _promtool("test", "rules", str(ALERT_TESTS.relative_to(ROOT)))
    assert "SUCCESS" in output, output


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_alert_has_unit_tests_that_fire_it_and_that_do_not() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert {
        "EnergyPlatformBatchFailed",
        "EnergyPlatformSourceStale",
        "EnergyPlatformQuarantineShareHigh",
    } <= alerts
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [ALERTS.name], "the unit tests must test the rules file Prometheus loads"
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts <= fired, f"no unit test fires {sorted(alerts - fired)}"
    assert alerts <= quiet, f"no unit test shows {sorted(alerts - quiet)} staying quiet"


def test_thresholds_are_recording_rules_the_alerts_use() -> None:
    rules = _rules()
    parameters = {rule["record"]: rule["expr"] for rule in rules if "record" in rule}
    assert set(parameters) == {
        "energy_platform:alert_failed_batch_window_seconds",
        "energy_platform:alert_stale_after_seconds",
        "energy_platform:alert_quarantine_ratio_max",
    }
    for name, expr in parameters.items():
        assert re.fullmatch(r"vector\([0-9.]+\)", expr.strip()), f"{name}: one number to edit, got {expr!r}"
    used = {name for rule in rules if "alert" in rule for name in metric_names(rule["expr"])}
    assert set(parameters) <= used, f"parameters no alert uses: {sorted(set(parameters) - used)}"


# --- PromQL metric names -----------------------------------------------------------------------------

#: Words of PromQL that are not metric names: operators, modifiers, and the like.
PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "start",
    "end",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana `label_values(...)` query) selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    text = re.sub(r"\blabel_values\(\s*([^,()]*(?:\{[^}]*\})?)\s*,\s*\w+\s*\)", r"\1", text)  # Grafana's query
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)  # Grafana variables
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, called = match.group(1), match.group(2)
        if not called and name not in PROMQL_WORDS:
            names.add(name)
    return names


def test_metric_names_finds_selected_metrics_only() -> None:
    expr = (
        'sum by (source, layer) (rate(foo_total{source=~"$source", x="bar_total"}[$__rate_interval])) '
        "/ on(source) group_left(kind) baz:recorded offset 5m > bool 1e3 and qux"
    )
    assert metric_names(expr) == {"foo_total", "baz:recorded", "qux"}
    assert metric_names("label_values(energy_platform_runs_total, source)") == {"energy_platform_runs_total"}
    assert metric_names("time() - last_success_seconds > on() group_left() vector(3600)") == {"last_success_seconds"}
    assert metric_names('absent(up{job="x"} == 0)') == {"up"}


# --- the names the service exports ----------------------------------------------------------------


def _client(settings: Settings) -> TestClient:
    app.dependency_overrides[current_settings] = lambda: settings
    return TestClient(app)


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Settings]:
    """A data directory with the sources of SOURCES_TOML declared; the API reads it."""
    (tmp_path / "sources.toml").write_text(SOURCES_TOML, encoding="utf-8")
    settings = Settings(data_dir=tmp_path / "lake", _env_file=None)  # type: ignore[call-arg]
    yield settings
    app.dependency_overrides.clear()


def _batch(settings: Settings, source: str, rows: list[str], name: str) -> None:
    config = settings.data_dir.parent / "sources.toml"
    path = write_csv(settings.data_dir.parent / "in" / f"{name}.csv", rows, header=HEADER)
    with open_platform(settings) as platform:
        result = run_batch(platform, source_name=source, config_file=config, input_path=str(path), now=NOW)
    assert result.status == "succeeded", result.error


@pytest.fixture
def exported(lake: Settings, tmp_path: Path) -> set[str]:
    """The sample names of /metrics over a lake where a batch succeeded (some rows quarantined),
    one failed, and a stream has run (recorded as another process would): every family has series."""
    rows = [f"A,2025-06-01T{h:02d}:00Z,{h}" for h in range(23)] + ["A,2025-06-01T23:00Z,abc"]
    _batch(lake, "hourly", rows, "good")
    bad = write_csv(tmp_path / "in" / "bad.csv", [], header="meter_id;timestamp;value")
    at = datetime.now(UTC)
    with open_platform(lake) as platform:
        failed = run_batch(
            platform, source_name="hourly", config_file=tmp_path / "sources.toml", input_path=str(bad), now=NOW
        )
        assert failed.status == "failed"
        platform.metadata.record_stream(
            StreamRecord(
                run_id="run-observability",
                source="feed",
                state="running",
                host="worker-1",
                pid=4242,
                trigger_seconds=10.0,
                started_at=at,
                heartbeat_at=at,
                lake=str(lake.data_dir),
                micro_batches=3,
                readings=120,
                last_duration_seconds=1.5,
                last_readings_per_second=80.0,
                last_latency_seconds=4.0,
                lag={"0": 7, "1": 0},
            )
        )
    response = _client(lake).get("/metrics")
    assert response.status_code == 200, response.text
    families = list(text_string_to_metric_families(response.text))
    empty = [family.name for family in families if not family.samples]
    assert not empty, f"families without a series in this setup: {empty}"
    return {sample.name for family in families for sample in family.samples}


def _dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
    return panels


def _dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    queries = [
        (f"panel {panel['title']!r} target {target.get('refId')}", target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            queries.append((f"variable {variable['name']!r}", query["query"] if isinstance(query, dict) else query))
    return queries


def test_dashboard_queries_name_only_metrics_the_service_exports(exported: set[str]) -> None:
    queries = _dashboard_queries(_dashboard())
    assert len(queries) >= 10
    unknown = {f"{where}: {name}" for where, expr in queries for name in metric_names(expr) if name not in exported}
    assert not unknown, f"the dashboard queries metrics /metrics does not export: {sorted(unknown)}"
    assert all(metric_names(expr) for _, expr in queries), "a query that selects no metric"


def test_dashboard_shows_runs_rows_quarantine_duration_freshness_and_lag(exported: set[str]) -> None:
    used = {name for _, expr in _dashboard_queries(_dashboard()) for name in metric_names(expr)}
    for needed in (
        "energy_platform_runs_total",
        "energy_platform_layer_records_out_total",
        "energy_platform_records_quarantined_total",
        "energy_platform_last_batch_quarantine_ratio",
        "energy_platform_batch_duration_seconds_sum",
        "energy_platform_batch_duration_seconds_count",
        "energy_platform_layer_duration_seconds_sum",
        "energy_platform_silver_freshness_seconds",
        "energy_platform_stream_consumer_lag_messages",
    ):
        assert needed in used, f"no panel shows {needed}"
        assert needed in exported


def test_alert_rules_name_only_exported_or_recorded_metrics(exported: set[str]) -> None:
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    known = exported | recorded | PROMETHEUS_SERIES
    unknown = {
        f"{rule.get('alert') or rule.get('record')}: {name}"
        for rule in rules
        for name in metric_names(rule["expr"])
        if name not in known
    }
    assert not unknown, f"the alert rules use metrics /metrics does not export: {sorted(unknown)}"


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    dashboard = _dashboard()
    [datasource] = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    assert datasource["type"] == "prometheus"
    panels = _panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']!r} is wider than the dashboard"
        for ref in [panel.get("datasource"), *(t.get("datasource") for t in panel.get("targets", []))]:
            if ref is not None:
                assert ref == {"type": "prometheus", "uid": datasource["uid"]}, f"{panel['title']!r}: {ref}"
    variables = dashboard["templating"]["list"]
    assert all(v["datasource"]["uid"] == datasource["uid"] for v in variables if v["type"] == "query")
    assert dashboard["uid"] and dashboard["title"]


# --- docker-compose.yml ----------------------------------------------------------------------------


def _bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """A service's bind mounts from the repository: container path -> the file or folder mounted."""
    mounts = {}
    for volume in service.get("volumes") or []:
        source, _, rest = str(volume).partition(":")
        if source.startswith("./"):
            mounts[rest.split(":")[0]] = (ROOT / source).resolve()
    return mounts


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    declared = set(compose.get("volumes") or {})
    for name in ("prometheus", "grafana"):
        service = compose["services"][name]
        named = {str(v).split(":")[0] for v in service.get("volumes") or [] if not str(v).startswith((".", "/"))}
        assert named <= declared, f"{name} mounts undeclared volumes {sorted(named - declared)}"
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def test_prometheus_and_grafana_run_behind_the_observability_profile(services: dict[str, dict[str, Any]]) -> None:
    for name in ("prometheus", "grafana"):
        service = services[name]
        assert service.get("profiles") == [PROFILE], f"{name}: profiles {service.get('profiles')}"
        image = str(service.get("image", ""))
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{name}: pin a version, got {image!r}"
    for name in ("app", "db"):
        assert not services[name].get("profiles"), f"{name} must still start with a plain `docker compose up`"


def test_prometheus_loads_the_config_and_rules_of_deploy(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    mounts = _bind_mounts(prometheus)
    flags = dict(arg.split("=", 1) for arg in prometheus.get("command", []) if "=" in arg)
    config_path = flags.get("--config.file", "/etc/prometheus/prometheus.yml")
    assert mounts.get(config_path) == PROMETHEUS_CONFIG, f"{config_path} is not deploy's prometheus.yml: {mounts}"
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    for rule_file in config["rule_files"]:
        in_container = str(Path(config_path).parent / rule_file)  # relative to the config file
        assert mounts.get(in_container) == (PROMETHEUS_CONFIG.parent / rule_file).resolve(), in_container
    assert ALERTS.resolve() in mounts.values()
    [job] = config["scrape_configs"]
    assert job["job_name"] == "energy-platform"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert "get" in app.openapi()["paths"]["/metrics"]
    [target] = [t for static in job["static_configs"] for t in static["targets"]]
    host, port = target.split(":")
    published = {str(p).split(":")[-1] for p in services["app"].get("ports", [])}
    assert host in services and port in published, f"{target} is not the app service's API port {published}"
    alert_jobs = {m.group(1) for m in re.finditer(r'job="([^"]+)"', ALERTS.read_text(encoding="utf-8"))}
    assert alert_jobs <= {job["job_name"]}, f"alerts name jobs Prometheus does not scrape: {alert_jobs}"


def test_grafana_is_provisioned_with_the_datasource_and_dashboard_of_deploy(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    mounts = _bind_mounts(grafana)
    assert mounts.get("/etc/grafana/provisioning") == (DEPLOY / "grafana" / "provisioning").resolve(), mounts
    [provider] = yaml.safe_load(DASHBOARD_PROVIDERS.read_text(encoding="utf-8"))["providers"]
    assert mounts.get(provider["options"]["path"]) == DASHBOARD.parent.resolve(), "the dashboards are not mounted"
    [datasource] = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    url = datasource["url"].removeprefix("http://")
    host, port = url.split(":")
    assert host == "prometheus" and f"{port}:{port}" in [str(p) for p in services["prometheus"]["ports"]]
    home = grafana.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


# --- freshness -------------------------------------------------------------------------------------


def _freshness(settings: Settings) -> tuple[dict[str, float], float, float]:
    """energy_platform_silver_freshness_seconds per source, and the Unix times before and after the scrape."""
    before = time.time()
    response = _client(settings).get("/metrics")
    after = time.time()
    assert response.status_code == 200
    values = {
        sample.labels["source"]: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "energy_platform_silver_freshness_seconds"
    }
    return values, before, after


def _silver_truth(settings: Settings) -> dict[str, datetime]:
    """Per source, the latest start + length in silver, from every row of it."""
    table = DeltaTable(str(settings.data_dir / "silver" / SILVER_READINGS.name)).to_pyarrow_table(
        columns=["source", "interval_start_utc", "interval_minutes"]
    )
    truth: dict[str, datetime] = {}
    for row in table.to_pylist():
        end = row["interval_start_utc"] + timedelta(minutes=row["interval_minutes"])
        truth[row["source"]] = max(truth.get(row["source"], end), end)
    return truth


def _assert_age(values: dict[str, float], before: float, after: float, source: str, end: datetime) -> None:
    assert source in values, f"no freshness for {source}: {values}"
    assert before - end.timestamp() <= values[source] <= after - end.timestamp(), (source, values[source], end)


def test_silver_freshness_is_the_age_of_each_sources_newest_interval(lake: Settings) -> None:
    # hourly: 2025-06-01 00:00-23:00Z, so its newest interval ends at 2025-06-02 00:00Z. halfhourly:
    # a newer month, 00:00-10:30Z on 2025-07-15, ending at 11:00Z.
    _batch(lake, "hourly", [f"A,2025-06-01T{h:02d}:00Z,1" for h in range(24)], "june")
    _batch(lake, "halfhourly", [f"B,2025-07-15T{m // 60:02d}:{m % 60:02d}Z,1" for m in range(0, 660, 30)], "july")
    hourly_end = datetime(2025, 6, 2, tzinfo=UTC)
    halfhourly_end = datetime(2025, 7, 15, 11, tzinfo=UTC)
    assert _silver_truth(lake) == {"hourly": hourly_end, "halfhourly": halfhourly_end}

    values, before, after = _freshness(lake)

    assert set(values) == {"hourly", "halfhourly"}
    _assert_age(values, before, after, "hourly", hourly_end)
    _assert_age(values, before, after, "halfhourly", halfhourly_end)

    # An older interval changes nothing; a newer one moves the source's end, and only its own.
    _batch(lake, "hourly", ["A,2025-05-01T00:00Z,1"], "may")
    values, before, after = _freshness(lake)
    _assert_age(values, before, after, "hourly", hourly_end)
    _batch(lake, "hourly", ["C,2025-08-01T05:00Z,1"], "august")
    values, before, after = _freshness(lake)
    assert _silver_truth(lake)["hourly"] == datetime(2025, 8, 1, 6, tzinfo=UTC)
    _assert_age(values, before, after, "hourly", datetime(2025, 8, 1, 6, tzinfo=UTC))
    _assert_age(values, before, after, "halfhourly", halfhourly_end)


def test_no_freshness_before_silver_has_rows(lake: Settings) -> None:
    values, _, _ = _freshness(lake)
    assert values == {}
    response = _client(lake).get("/metrics")
    assert "energy_platform_silver_freshness_seconds" in response.text  # the family, without series


def test_freshness_reads_only_the_files_that_can_hold_a_newest_interval(lake: Settings) -> None:
    """Months whose file statistics rule them out are not read: with their data files gone (the
    log still names them), the answer is the same; a full scan would fail on them."""
    for month in range(1, 7):
        _batch(lake, "hourly", [f"A,2025-{month:02d}-10T{h:02d}:00Z,1" for h in range(24)], f"h{month}")
    _batch(lake, "halfhourly", ["B,2025-06-20T10:00Z,1"], "hh")
    truth = _silver_truth(lake)
    silver = lake.data_dir / "silver" / SILVER_READINGS.name
    old = [path for path in silver.rglob("*.parquet") if "local_month=2025-06" not in str(path)]
    assert len(old) >= 5
    for path in old:
        path.unlink()

    values, before, after = _freshness(lake)

    assert set(values) == {"hourly", "halfhourly"}
    for source, end in truth.items():
        _assert_age(values, before, after, source, end)
    with pytest.raises(OSError, match="parquet"):  # a whole scan now fails: the pruning is what answered
        DeltaTable(str(silver)).to_pyarrow_table(columns=["source"])


def test_readme_lists_every_metric_the_service_exports(exported: set[str]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `(energy_platform_\w+)`(?:, `(energy_platform_\w+)`)?", readme, re.MULTILINE))
    names = {name for pair in listed for name in pair if name}
    families = {re.sub(r"_(?:sum|count)$", "", name) for name in exported}
    assert families <= names, f"README's /metrics table leaves out {sorted(families - names)}"
    assert names <= families, f"README's /metrics table lists what /metrics does not export: {sorted(names - families)}"
