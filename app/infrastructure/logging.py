"""structlog set-up: JSON events for machines, or a console format for people."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure_logging(*, log_format: str = "json", level: str = "INFO") -> None:
    """Route structlog events to stderr with an ISO UTC timestamp on every event."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    if log_format == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    """A bound logger carrying `context` on every event."""
    return structlog.get_logger().bind(**context)
