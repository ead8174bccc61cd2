"""The audit trail: who did what to the lake, when, and how it ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

#: How an action ended: done, tried and failed, or refused before anything was written (a
#: setting or an argument the platform does not accept).
AuditOutcome = Literal["succeeded", "failed", "refused"]
#: Through what the actor acted: the command line (an OS user), the HTTP service (an API key's
#: name), a running stream on its own (its compactions), or the platform itself.
ActorKind = Literal["cli", "api", "stream", "service"]

#: The actions recorded, by the name of the command that runs them.
RUN_BATCH = "run-batch"
QUARANTINE_REPLAY = "quarantine replay"
STREAM_START = "stream start"
STREAM_STOP = "stream stop"
STREAM_COMPACT = "stream compact"
TABLES_OPTIMIZE = "tables optimize"
TABLES_VACUUM = "tables vacuum"
TABLES_RESTORE = "tables restore"
UNDO = "batches undo"
RECOVER = "recover"
RETENTION_APPLY = "retention apply"
METERS_FORGET = "meters forget"

#: Names of API keys (`API_KEYS`, `API_KEY_NAME`): what the audit trail shows for their requests.
KEY_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"


@dataclass(frozen=True)
class Actor:
    """Who acts: an OS user (`cli`), an API key's name (`api`), a stream (`stream`), the platform (`service`)."""

    name: str
    kind: ActorKind


@dataclass(frozen=True)
class AuditRecord:
    """One action as the audit trail keeps it."""

    #: When the action was asked for (UTC)
    at: datetime
    actor: str
    actor_kind: ActorKind
    #: What was done, e.g. `run-batch`, `tables vacuum` (the constants above)
    action: str
    outcome: AuditOutcome
    #: What it was done to: a source, a table (None: every table), a batch id
    target: str | None = None
    #: The arguments, and what it did (batch id, files deleted, ...): a JSON object
    details: dict[str, Any] = field(default_factory=dict)
    #: Why it failed or was refused
    error: str | None = None
    #: The store's number for it (None until recorded)
    id: int | None = None
