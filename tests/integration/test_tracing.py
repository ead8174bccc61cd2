"""OpenTelemetry spans of batches, their layers and stages, and HTTP requests: recorded by the
SDK's in-memory exporter, and once end to end, exported by the CLI over OTLP/HTTP to a receiver on
the loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.api.dependencies import current_settings
from app.application.runner import run_batch
from app.domain.errors import ConfigurationError
from app.infrastructure.settings import Settings
from app.infrastructure.tracing import tracing_wanted
from app.main import app
from app.wiring import open_platform
from tests.integration.conftest import NOW, write_csv

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["read", "validate", "vee", "bronze", "quarantine", "silver", "gold", "invariants"]
ROWS = [
    "M1,2025-06-01T00:00:00Z,1.5,kWh",
    "M1,2025-06-01T00:30:00Z,abc,kWh",
    "M2,2025-06-01T00:00:00Z,2.0,kWh",
]
_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> Iterator[None]:
    """The SDK's provider with the in-memory exporter, installed once for the process (the global
    provider can be set once; the test process has no OTEL_* settings, so nothing else set one).
    Shut down after this module, the exporter keeps no span of later tests."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        installed = TracerProvider()
        installed.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(installed)
    yield
    _EXPORTER.shutdown()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _named(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    [span] = [s for s in finished if s.name == name]
    return span


def test_a_batch_has_a_span_with_its_layers_and_stages_as_children(
    settings: Settings, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    with open_platform(settings) as platform:
        result = run_batch(platform, input_path=str(write_csv(tmp_path / "in.csv", ROWS)), now=NOW)
    finished = spans.get_finished_spans()

    batch = _named(finished, "batch")
    assert batch.attributes is not None and batch.context is not None
    assert batch.attributes["energy_platform.batch_id"] == result.batch_id
    assert batch.attributes["energy_platform.source"] == "meter_readings"
    assert batch.attributes["energy_platform.status"] == "succeeded"
    assert batch.attributes["energy_platform.rows_read"] == 3
    assert batch.attributes["energy_platform.quarantined"] == 1
    children = [s for s in finished if s.parent is not None and s.parent.span_id == batch.context.span_id]
    assert sorted(s.name for s in children) == sorted(
        [f"stage {name}" for name in STAGES] + ["layer bronze", "layer silver", "layer gold"]
    )
    assert {s.context.trace_id for s in children if s.context} == {batch.context.trace_id}
    silver = _named(finished, "layer silver")
    assert silver.attributes is not None
    assert (silver.attributes["energy_platform.rows_in"], silver.attributes["energy_platform.quarantined"]) == (3, 1)
    gold = _named(finished, "stage gold")
    assert gold.attributes is not None and gold.attributes["energy_platform.rows_out"] > 0


def test_a_failed_batch_span_is_an_error(settings: Settings, tmp_path: Path, spans: InMemorySpanExporter) -> None:
    config = tmp_path / "sources.toml"
    config.write_text(
        "[sources.strict]\n"
        'path = "in"\n'
        "interval_minutes = 30\n"
        'columns = { unit = "unit" }\n'
        'rules = { value_unparseable = { severity = "fail" } }\n',
        encoding="utf-8",
    )
    with open_platform(settings) as platform:
        result = run_batch(
            platform,
            source_name="strict",
            config_file=config,
            input_path=str(write_csv(tmp_path / "in.csv", ROWS)),
            now=NOW,
        )
    assert result.status == "failed"

    batch = _named(spans.get_finished_spans(), "batch")
    assert batch.status.status_code == trace.StatusCode.ERROR
    assert batch.attributes is not None and batch.attributes["energy_platform.status"] == "failed"


def test_each_request_has_a_server_span_named_by_its_route(settings: Settings, spans: InMemorySpanExporter) -> None:
    app.dependency_overrides[current_settings] = lambda: settings
    try:
        client = TestClient(app)
        assert client.get("/health").status_code in (200, 503)
        daily = client.get("/meters/M1/daily", params={"start": "2025-06-01", "end": "2025-06-02"})
    finally:
        app.dependency_overrides.clear()

    finished = {s.name: s for s in spans.get_finished_spans()}
    span = finished["GET /meters/{meter_id}/daily"]
    assert span.kind == trace.SpanKind.SERVER and span.attributes is not None
    assert span.attributes["url.path"] == "/meters/M1/daily"
    assert span.attributes["http.response.status_code"] == daily.status_code
    assert "GET /health" in finished


def test_only_otel_variables_configure_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    assert tracing_wanted() == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing_wanted() == ["otlp"]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing_wanted() == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,console")
    assert tracing_wanted() == ["otlp", "console"]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigurationError, match="grpc"):
        tracing_wanted()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    with pytest.raises(ConfigurationError, match="jaeger is not a trace exporter"):
        tracing_wanted()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing_wanted() == []


class _Receiver(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).requests.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"")

    def log_message(self, *_: Any) -> None:
        pass


@pytest.mark.slow
def test_the_cli_exports_a_batchs_spans_over_otlp_http(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(
            DATA_DIR=str(tmp_path / "lake"),
            LOG_FORMAT="json",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
            OTEL_SERVICE_NAME="energy-platform-test",
        )
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "run-batch", "--input", str(write_csv(tmp_path / "in.csv", ROWS))],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    finally:
        server.shutdown()

    assert {path for path, _ in _Receiver.requests} == {"/v1/traces"}
    spans: dict[str, Any] = {}
    services = set()
    for _, body in _Receiver.requests:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            services |= {a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"}
            for scope_spans in resource_spans.scope_spans:
                spans.update({s.name: s for s in scope_spans.spans})
    assert services == {"energy-platform-test"}
    assert {"batch", "layer bronze", "layer silver", "layer gold"} | {f"stage {s}" for s in STAGES} <= set(spans)
    attributes = {a.key: a.value for a in spans["batch"].attributes}
    assert attributes["energy_platform.batch_id"].string_value in done.stdout
    assert attributes["energy_platform.rows_read"].int_value == 3
