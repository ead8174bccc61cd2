"""OpenTelemetry traces, configured only through the standard `OTEL_*` environment variables.

With none of them set nothing is exported and the spans the platform opens cost next to nothing
(the API's no-op tracer). A trace exporter is installed when `OTEL_TRACES_EXPORTER` names one or an
OTLP endpoint is given:

- `OTEL_EXPORTER_OTLP_ENDPOINT` (`http://collector:4318`, `/v1/traces` appended) or
  `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is): OTLP over HTTP with protobuf, the exporter
  reading its own settings (`OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `_COMPRESSION`, ...);
- `OTEL_TRACES_EXPORTER`: `otlp` (the default once an endpoint is set), `console` (spans as JSON
  on stderr), `none`, or several, comma-separated;
- `OTEL_SERVICE_NAME` (default `energy-platform`) and `OTEL_RESOURCE_ATTRIBUTES`;
- `OTEL_SDK_DISABLED=true` turns it all off.

OTLP over gRPC is refused by name (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`): its exporter is not
installed; collectors take HTTP on port 4318.
"""

from __future__ import annotations

import os
import sys
import threading

from opentelemetry import trace

from app.domain.errors import ConfigurationError

_configured = threading.Lock()
_done = False
DEFAULT_SERVICE_NAME = "energy-platform"


def _setting(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() if value and value.strip() else None


def tracing_wanted() -> list[str]:
    """The trace exporters the environment asks for ([] for none), refusing what is not supported."""
    if (_setting("OTEL_SDK_DISABLED") or "").lower() == "true":
        return []
    endpoint = _setting("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _setting("OTEL_EXPORTER_OTLP_ENDPOINT")
    named = _setting("OTEL_TRACES_EXPORTER")
    if named is None:
        return ["otlp"] if endpoint else []
    exporters = [e.strip().lower() for e in named.split(",") if e.strip()]
    unknown = [e for e in exporters if e not in ("otlp", "console", "none")]
    if unknown:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={named!r}: {', '.join(unknown)} is not a trace exporter here; "
            "use otlp (OTLP over HTTP), console or none"
        )
    if "otlp" in exporters:
        protocol = _setting("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _setting("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol not in (None, "http/protobuf"):
            raise ConfigurationError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: traces go over OTLP/HTTP "
                "(http/protobuf, port 4318 on a collector)"
            )
    return [e for e in exporters if e != "none"]


def configure_tracing() -> bool:
    """Install a tracer provider with the exporters `OTEL_*` asks for, once per process; whether
    one was installed. Spans still buffered are sent when the process exits."""
    global _done
    with _configured:
        if _done:
            return isinstance(trace.get_tracer_provider(), _sdk_provider_type())
        exporters = tracing_wanted()
        _done = True
        if not exporters:
            return False
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        defaults = {} if _setting("OTEL_SERVICE_NAME") else {SERVICE_NAME: DEFAULT_SERVICE_NAME}
        provider = TracerProvider(resource=Resource.create(defaults))
        for name in exporters:
            if name == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            else:
                provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        trace.set_tracer_provider(provider)
        return True


def _sdk_provider_type() -> type:
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider
