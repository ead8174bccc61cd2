"""A span per HTTP request (OpenTelemetry; a no-op unless tracing is configured through OTEL_*)."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.propagate import extract

_tracer = trace.get_tracer("energy_platform.api")

Scope = dict[str, Any]


class TracingMiddleware:
    """ASGI middleware: one server span per request, named after its route template (`GET
    /meters/{meter_id}/daily`, not the path itself), with the method, path, route and status; a
    `traceparent` header the client sent makes it a child of the client's span."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", [])}
        status: dict[str, int] = {}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        with _tracer.start_as_current_span(
            f"{method} {path}",
            context=extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        ) as span:
            try:
                await self.app(scope, receive, sending)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                if "code" in status:
                    span.set_attribute("http.response.status_code", status["code"])
                    if status["code"] >= 500:
                        span.set_status(trace.Status(trace.StatusCode.ERROR))
