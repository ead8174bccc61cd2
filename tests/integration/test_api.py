"""The HTTP service over a real SQLite metadata file and real Delta tables: every route and error path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.dependencies import current_settings, run_service
from app.application.runner import run_batch
from app.infrastructure.settings import Settings
from app.main import app
from app.wiring import open_platform
from tests.integration.conftest import NOW, write_csv

KEY = "test-key-1234"
ROWS = [
    "M1,2025-06-10T00:00:00+01:00,0.5,kWh",
    "M1,2025-06-10T00:30:00+01:00,0.7,kWh",
    "M1,2025-06-10T01:00:00+01:00,abc,kWh",
    "M2,2025-06-10T00:00:00+01:00,1.5,kWh",
    "M2,2025-06-10T00:30:00+01:00,-1,kWh",
]


def _client(settings: Settings) -> TestClient:
    app.dependency_overrides[current_settings] = lambda: settings
    return TestClient(app)


@pytest.fixture
def keyed(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "lake", api_key=KEY, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def loaded(keyed: Settings, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """A lake with one batch of two meters, one of whose rows each rule rejects."""
    with open_platform(keyed) as platform:
        result = run_batch(platform, input_path=str(write_csv(tmp_path / "in.csv", ROWS)), now=NOW)
    assert result.batch_id is not None
    yield _client(keyed), result.batch_id
    app.dependency_overrides.clear()


# --- health --------------------------------------------------------------------------------------


def test_health_reports_every_check(settings: Settings) -> None:
    response = _client(settings).get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["failed_checks"] == []
    checks = body["checks"]
    assert checks["metadata_database"]["status"] == "ok" and checks["metadata_database"]["latency_ms"] >= 0
    assert checks["table_storage"]["status"] == "ok"
    assert checks["execution_mode"]["value"] == "local" and checks["version"]["value"]


def test_health_is_503_naming_the_database_when_it_is_unreachable(tmp_path: Path) -> None:
    url = "postgresql+psycopg://energy:s3cret-pw@127.0.0.1:1/energy"
    settings = Settings(data_dir=tmp_path, metadata_db_url=url, _env_file=None)  # type: ignore[call-arg]
    response = _client(settings).get("/health")
    assert response.status_code == 503
    assert response.json()["failed_checks"] == ["metadata_database"]
    assert "s3cret-pw" not in response.text


def test_health_is_503_naming_storage_when_it_is_not_writable(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    meta = f"sqlite:///{tmp_path / 'm.db'}"
    settings = Settings(data_dir=blocked, metadata_db_url=meta, _env_file=None)  # type: ignore[call-arg]
    response = _client(settings).get("/health")
    assert response.status_code == 503 and response.json()["failed_checks"] == ["table_storage"]


# --- runs ----------------------------------------------------------------------------------------


def _landing_file(settings: Settings) -> None:
    write_csv(settings.landing_root / "meters" / "a.csv", ["M9,2025-06-10T00:00:00+01:00,0.5,kWh"])


def test_post_runs_starts_a_run_in_the_background_and_reports_it(keyed: Settings) -> None:
    _landing_file(keyed)
    client = _client(keyed)
    response = client.post("/runs", json={"input_path": "meters/*.csv"}, headers={"X-API-Key": KEY})
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    detail = client.get(f"/runs/{run_id}").json()
    assert detail["status"] == "succeeded" and detail["record_count"] == 1
    assert [m["layer"] for m in detail["layers"]] == ["bronze", "silver", "gold"]
    assert detail["reconciliation"]["rows_accepted"] == 1
    assert [r["run_id"] for r in client.get("/runs").json()] == [run_id]
    assert run_service().running is None


def test_a_failed_run_reports_its_error(keyed: Settings) -> None:
    write_csv(keyed.landing_root / "bad.csv", [], header="meter_id;timestamp;value;unit")
    client = _client(keyed)
    run_id = client.post("/runs", json={"input_path": "bad.csv"}, headers={"X-API-Key": KEY}).json()["run_id"]
    detail = client.get(f"/runs/{run_id}").json()
    assert detail["status"] == "failed" and "wrong delimiter" in detail["error"]


@pytest.mark.parametrize(
    ("headers", "status"), [({}, 401), ({"X-API-Key": "wrong"}, 401), ({"X-API-Key": KEY.upper()}, 401)]
)
def test_post_runs_needs_the_right_key(keyed: Settings, headers: dict[str, str], status: int) -> None:
    assert _client(keyed).post("/runs", json={}, headers=headers).status_code == status


def test_post_runs_is_refused_when_no_key_is_configured(settings: Settings) -> None:
    response = _client(settings).post("/runs", json={}, headers={"X-API-Key": "anything"})
    assert response.status_code == 403 and "API_KEY" in response.json()["detail"]


@pytest.mark.parametrize("path", ["../outside.csv", "/etc/passwd", "meters/../../x.csv", "link/*.csv"])
def test_post_runs_confines_inputs_to_the_landing_directory(keyed: Settings, tmp_path: Path, path: str) -> None:
    keyed.landing_root.mkdir(parents=True, exist_ok=True)
    (keyed.landing_root / "link").symlink_to(tmp_path)  # a link that leads out of landing
    response = _client(keyed).post("/runs", json={"input_path": path}, headers={"X-API-Key": KEY})
    assert response.status_code == 422 and "landing directory" in response.json()["detail"]


def test_a_second_run_while_one_runs_is_409_naming_it(keyed: Settings) -> None:
    service = run_service()
    held = service.submit(keyed, source="meter_readings", input_path=None)
    try:
        response = _client(keyed).post("/runs", json={}, headers={"X-API-Key": KEY})
        assert response.status_code == 409 and held.run_id in response.json()["detail"]
        assert _client(keyed).get(f"/runs/{held.run_id}").json()["status"] == "queued"
    finally:
        service.execute(keyed, held)  # runs the bundled sample and releases the service
    assert service.running is None and service.runs[held.run_id].status == "succeeded"


def test_post_runs_with_an_unknown_source_is_422_listing_the_declared_ones(keyed: Settings) -> None:
    response = _client(keyed).post("/runs", json={"source": "nope"}, headers={"X-API-Key": KEY})
    assert response.status_code == 422 and "meter_readings" in response.json()["detail"]
    assert run_service().running is None


def test_unknown_run_is_404(settings: Settings) -> None:
    assert _client(settings).get("/runs/nope").status_code == 404


# --- batches, quality, quarantine ------------------------------------------------------------------


def test_batches_list_and_detail(loaded: tuple[TestClient, str]) -> None:
    client, batch_id = loaded
    [batch] = client.get("/batches").json()
    assert batch["batch_id"] == batch_id and batch["record_count"] == 5 and len(batch["checksum"]) == 64
    assert batch["files"][0]["path"].endswith("in.csv") and batch["ingestion_time"]
    assert client.get(f"/batches/{batch_id}").json() == batch
    assert client.get("/batches/nope").status_code == 404
    assert client.get("/batches", params={"limit": 0}).status_code == 422


def test_quality_counts_rows_per_rule(loaded: tuple[TestClient, str]) -> None:
    client, batch_id = loaded
    body = client.get("/quality", params={"batch_id": batch_id}).json()
    # Two local days of 48 half-hours hold the 3 accepted reads: 93 intervals without a read.
    assert body["rule_counts"] == {"negative_import": 1, "value_unparseable": 1, "missing_intervals": 93}
    assert body["reconciliation"]["rows_read"] == 5
    assert client.get("/quality").status_code == 422
    assert client.get("/quality", params={"batch_id": "nope"}).status_code == 404


def test_quarantine_is_paged(loaded: tuple[TestClient, str]) -> None:
    client, batch_id = loaded
    first = client.get("/quarantine", params={"batch_id": batch_id, "limit": 1}).json()
    second = client.get("/quarantine", params={"batch_id": batch_id, "limit": 1, "offset": 1}).json()
    assert first["total"] == second["total"] == 2
    assert [first["items"][0]["line_number"], second["items"][0]["line_number"]] == [4, 6]
    assert first["items"][0]["rule"] == "value_unparseable" and '"abc"' in first["items"][0]["raw_record"]
    assert client.get("/quarantine", params={"batch_id": batch_id, "limit": 5000}).status_code == 422


# --- gold ------------------------------------------------------------------------------------------


def test_meter_daily_returns_gold_rows(loaded: tuple[TestClient, str]) -> None:
    client, _ = loaded
    body = client.get("/meters/M1/daily", params={"start": "2025-06-01", "end": "2025-06-30"}).json()
    assert body["total"] == 1
    [row] = body["items"]
    assert row["local_date"] == "2025-06-10" and row["energy_kwh"] == pytest.approx(1.2)
    assert row["interval_count"] == 2 and row["expected_interval_count"] == 48
    empty = client.get("/meters/M1/daily", params={"start": "2025-07-01", "end": "2025-07-31"}).json()
    assert empty["total"] == 0


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/meters/NOPE/daily", {"start": "2025-06-01", "end": "2025-06-30"}, 404),
        ("/meters/M1/daily", {"start": "2025-06-31", "end": "2025-06-30"}, 422),
        ("/meters/M1/daily", {"start": "2025-06-30", "end": "2025-06-01"}, 422),
        ("/meters/M1/daily", {"start": "2025-06-01"}, 422),
        ("/portfolio/hourly", {"start": "yesterday", "end": "2025-06-11T00:00:00Z"}, 422),
        ("/portfolio/hourly", {"start": "2025-06-11T00:00:00Z", "end": "2025-06-10T00:00:00Z"}, 422),
        # Reproducer: an offset past 64 bits was taken, and writing it back in the page failed (500).
        ("/portfolio/hourly", {"start": "2000-01-01T00:00Z", "end": "2000-01-01T00:00Z", "offset": 2**64}, 422),
    ],
)
def test_gold_routes_reject_bad_parameters(
    loaded: tuple[TestClient, str], path: str, params: dict, status: int
) -> None:
    assert loaded[0].get(path, params=params).status_code == status


def test_portfolio_hourly_sums_meters_per_hour(loaded: tuple[TestClient, str]) -> None:
    client, _ = loaded
    body = client.get(
        "/portfolio/hourly", params={"start": "2025-06-09T00:00:00Z", "end": "2025-06-10T00:00:00"}
    ).json()
    assert body["total"] == 1
    [row] = body["items"]
    assert row["hour_utc"].startswith("2025-06-09T23:00") and row["meter_count"] == 2
    assert row["energy_kwh"] == pytest.approx(0.5 + 0.7 + 1.5)


def test_gold_reads_as_of_a_past_version_and_the_change_feed(
    loaded: tuple[TestClient, str], keyed: Settings, tmp_path: Path
) -> None:
    client, _ = loaded
    with open_platform(keyed) as platform:
        later = ["M1,2025-06-10T00:00:00+01:00,2.5,kWh", "M3,2025-06-10T00:00:00+01:00,1.0,kWh"]
        result = run_batch(platform, input_path=str(write_csv(tmp_path / "later.csv", later)), now=NOW)
    assert result.status == "succeeded", result.error
    days = {"start": "2025-06-01", "end": "2025-06-30"}

    def energy(params: dict[str, str]) -> float:
        response = client.get("/meters/M1/daily", params=params)
        assert response.status_code == 200, response.text
        return float(response.json()["items"][0]["energy_kwh"])

    assert energy(days) == pytest.approx(3.2)
    assert energy({**days, "as_of": "0"}) == pytest.approx(1.2)
    hours = {"start": "2025-06-09T00:00:00Z", "end": "2025-06-10T00:00:00Z"}
    now = client.get("/portfolio/hourly", params=hours).json()
    then = client.get("/portfolio/hourly", params={**hours, "as_of": "0"}).json()
    assert now["items"][0]["meter_count"] == 3 and then["items"][0]["meter_count"] == 2
    assert then["version"] == 0 and now["version"] == 1
    assert client.get("/meters/M3/daily", params={**days, "as_of": "0"}).status_code == 404  # not there then
    assert client.get("/meters/M1/daily", params={**days, "as_of": "7"}).status_code == 404
    assert client.get("/meters/M1/daily", params={**days, "as_of": "2020-01-01"}).status_code == 404
    assert client.get("/meters/M1/daily", params={**days, "as_of": "last week"}).status_code == 422

    changes = client.get("/tables/silver_readings/changes", params={"since_version": 1}).json()
    assert changes["total"] == 2
    assert sorted((r["change"], r["meter_id"], r["energy_kwh"]) for r in changes["items"]) == [
        ("insert", "M3", 1.0),
        ("update", "M1", 2.5),
    ]
    assert client.get("/tables/bronze_meter_readings/changes", params={"since_version": 0}).status_code == 404
    assert client.get("/tables/silver_readings/changes", params={"since_version": -1}).status_code == 422


# --- metrics, access, docs -------------------------------------------------------------------------


def test_metrics_in_prometheus_text_format(loaded: tuple[TestClient, str]) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST
    from prometheus_client.parser import text_string_to_metric_families

    response = loaded[0].get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    ingest = (("kind", "ingest"), ("source", "meter_readings"), ("status", "succeeded"))
    assert samples[("energy_platform_runs_total", ingest)] == 1
    assert samples[("energy_platform_records_processed_total", (("source", "meter_readings"),))] == 5
    assert samples[("energy_platform_records_quarantined_total", (("source", "meter_readings"),))] == 2
    assert samples[("energy_platform_last_success_timestamp_seconds", (("source", "meter_readings"),))] > 0


def test_reads_can_be_closed_by_a_setting(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_key=KEY, api_protect_reads=True, _env_file=None)  # type: ignore[call-arg]
    client = _client(settings)
    assert client.get("/runs").status_code == 401
    assert client.get("/runs", headers={"X-API-Key": KEY}).status_code == 200
    assert client.get("/health").status_code == 200  # health stays open for probes


def test_openapi_docs_have_examples(settings: Settings) -> None:
    client = _client(settings)
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert schema["components"]["schemas"]["RunRequest"]["properties"]["input_path"]["examples"]
    assert "X-API-Key" in str(schema["components"]["securitySchemes"])


def test_an_empty_api_key_setting_means_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    from app.infrastructure.settings import load_settings

    settings = load_settings()
    assert settings.api_key is None
    assert _client(settings).post("/runs", json={}, headers={"X-API-Key": ""}).status_code == 403


def test_the_service_builds_its_platform_once_not_per_request(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migrations run when the service starts (here: the lifespan), never again per request."""
    from app.infrastructure.repositories.metadata import SqlMetadataStore

    migrations: list[str] = []
    migrate = SqlMetadataStore.migrate

    def counted(store: SqlMetadataStore) -> None:
        migrations.append(store.url_for_display)
        migrate(store)

    monkeypatch.setattr(SqlMetadataStore, "migrate", counted)
    app.dependency_overrides[current_settings] = lambda: settings
    try:
        with TestClient(app) as client:
            assert len(migrations) == 1  # at start, before any request
            for path in ("/runs", "/batches", "/health", "/metrics", "/runs?limit=5", "/batches"):
                assert client.get(path).status_code == 200, path
    finally:
        app.dependency_overrides.clear()
    assert len(migrations) == 1
