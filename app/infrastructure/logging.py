"""structlog set-up: JSON events for machines, or a console format for people; secrets redacted from both."""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any
from urllib.parse import quote, unquote

import structlog

#: What a redacted secret is replaced with.
MASK = "***"
#: Configured secrets shorter than this are not searched for in free text (they would mask ordinary
#: words and numbers); in URLs and `key=value` text they are still masked by position.
MIN_SECRET_LENGTH = 4

#: A key (event key, settings key, Spark conf key) whose value is a secret when its letters and
#: digits, lower-cased, contain one of these.
_SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "authorization",
    "credential",
    "privatekey",
    "accesskey",
    "accountkey",
    "cookie",
)
_SECRET_KEY_NAMES = frozenset({"pwd", "pw", "auth"})

#: `scheme://user:PASSWORD@host` in free text (the password ends at the last non-space before `@`).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)(?P<password>[^\s@]+)@")
#: `password=x`, `sslpassword: x`, `"api_key": "x"`, `access_token=x&` ... in free text.
_ASSIGNED_SECRET = re.compile(
    r"(?i)(?P<head>[\w.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|account[_\-]?key"
    r"|private[_\-]?key|authorization)[\"']?\s*[=:]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s\"'&;,)}\]]+)"
)
#: `Bearer <token>` / `Basic <credentials>` in free text.
_AUTH_SCHEME = re.compile(r"(?i)\b(?P<scheme>bearer|basic)\s+[\w.~+/=\-]{6,}")
#: The userinfo password of a whole URL, as SQLAlchemy reads it (`[^@]*` after the first `:`).
_WHOLE_URL_PASSWORD = re.compile(r"^(?P<head>[^:/?#\s]+://[^:/@]*:)(?P<password>[^@]*)@")

#: Event keys the processor leaves alone: exception info the renderer formats (then redacted whole).
_UNTOUCHED = frozenset({"exc_info", "stack_info"})

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_secrets_pattern: re.Pattern[str] | None = None


def is_secret_key(key: object) -> bool:
    """Whether a key names a secret: password, token, secret, api_key, authorization, ..."""
    folded = re.sub(r"[^a-z0-9]", "", str(key).lower())
    return folded in _SECRET_KEY_NAMES or any(part in folded for part in _SECRET_KEY_PARTS)


def mask_url(url: str) -> str:
    """A URL with the password of its userinfo and of its query (`?password=`) masked."""
    masked = _WHOLE_URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@" if m["password"] else m[0], url, count=1)
    return _ASSIGNED_SECRET.sub(_mask_assigned, masked)


def url_password(url: str) -> str:
    """The password in a URL's userinfo, as SQLAlchemy reads it; empty when there is none."""
    found = _WHOLE_URL_PASSWORD.match(url)
    return found["password"] if found else ""


def register_secrets(*values: str | None) -> None:
    """Secret values to mask wherever they appear in a log event (settings register theirs when loaded)."""
    global _secrets, _secrets_pattern
    found: set[str] = set()
    for value in values:
        if not value or len(value) < MIN_SECRET_LENGTH:
            continue
        # As configured, and as it would appear inside a URL (percent-encoded) or after decoding.
        found.update(form for form in (value, quote(value, safe=""), unquote(value)) if len(form) >= MIN_SECRET_LENGTH)
    with _lock:
        if found <= _secrets:
            return
        _secrets = _secrets | found
        # Longest first, so a secret that contains another is masked whole.
        alternatives = "|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True))
        _secrets_pattern = re.compile(alternatives)


def redact_text(text: str) -> str:
    """`text` with URL passwords, `key=value` secrets, auth headers and registered secrets masked."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m['scheme']} {MASK}", text)
    text = _ASSIGNED_SECRET.sub(_mask_assigned, text)
    pattern = _secrets_pattern
    return pattern.sub(MASK, text) if pattern is not None else text


def _mask_assigned(match: re.Match[str]) -> str:
    value = match["value"]
    quote_char = value[0] if value[0] in "\"'" else ""
    return f"{match['head']}{quote_char}{MASK}{quote_char}"


def _redact(key: object, value: Any) -> Any:
    if value is None:
        return None
    if is_secret_key(key):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact("", v) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact("", v) for v in value)
    return value  # rendered later by repr/str: the renderer's output is redacted as a whole


def redact_secrets(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: secret-named keys masked, and secrets inside every string value."""
    return {key: value if key in _UNTOUCHED else _redact(key, value) for key, value in event_dict.items()}


class _RedactedRenderer:
    """A renderer whose output is redacted too: it catches secrets in objects rendered by repr
    and in tracebacks the console renderer formats itself (with their local variables)."""

    def __init__(self, renderer: Any) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> str:
        return redact_text(str(self._renderer(logger, method, event_dict)))


def configure_logging(*, log_format: str = "json", level: str = "INFO") -> None:
    """Route structlog events to stderr with an ISO UTC timestamp on every event, secrets redacted."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    if log_format == "console":
        # Plain tracebacks: rich ones show local variables and wrap long lines, which would
        # split a secret across lines where the redaction cannot find it.
        console = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        processors += [redact_secrets, _RedactedRenderer(console)]
    else:
        processors += [
            structlog.processors.format_exc_info,
            redact_secrets,
            _RedactedRenderer(structlog.processors.JSONRenderer()),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    """A bound logger carrying `context` on every event."""
    return structlog.get_logger().bind(**context)
