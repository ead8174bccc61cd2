"""One writer per lake: an exclusive lock on a file in the data directory.

The lock is an `flock` on `<data_dir>/.energy-platform.lock`, so the kernel releases it when
its process ends, however it ends. The file also says who holds it (process, host, batch),
which a refused run names, and which the next holder reads to learn that the previous one
died without finishing: that batch is then recovered (see `app.application.recovery`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from app.domain.errors import PlatformError

LOCK_FILE = ".energy-platform.lock"
#: How often a waiting run tries the lock again.
_POLL_SECONDS = 0.2


class LakeBusyError(PlatformError):
    """Another run holds the lake's lock."""

    def __init__(self, lake: Path, holder: Holder | None) -> None:
        self.holder = holder
        if holder is None:
            who = "another run"
        else:
            batch = f"batch {holder.batch_id}" if holder.batch_id else "a run that has not started its batch yet"
            who = f"{batch} ({holder.command}, process {holder.pid} on {holder.host}, since {holder.since})"
        super().__init__(
            f"the data directory {lake} is in use by {who}; wait for it to finish, or pass --wait SECONDS to queue"
        )


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) the lock."""

    pid: int
    host: str
    since: str
    command: str
    batch_id: str | None = None
    #: False while the holder works; True once it released the lock in the normal way
    released: bool = False

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            data: Any = json.loads(text)
            return cls(**data) if isinstance(data, dict) else None
        except (ValueError, TypeError):
            return None


class LakeLock:
    """Held with `with LakeLock(data_dir, command=...) as lock:`; `lock.stale` is the holder
    before this one if it died holding the lock (its `released` is False)."""

    def __init__(self, lake: Path, *, command: str, wait_seconds: float = 0.0) -> None:
        self.lake = lake
        self.path = lake / LOCK_FILE
        self.command = command
        self.wait_seconds = wait_seconds
        self.stale: Holder | None = None
        self._file: IO[str] | None = None
        self._holder: Holder | None = None

    def __enter__(self) -> LakeLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        self.lake.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._read(handle)
                    handle.close()
                    raise LakeBusyError(self.lake, holder) from None
                time.sleep(_POLL_SECONDS)
        self._file = handle
        previous = self._read(handle)
        self.stale = previous if previous is not None and not previous.released else None
        self._write(
            Holder(
                pid=os.getpid(),
                host=socket.gethostname(),
                since=datetime.now(UTC).isoformat(timespec="seconds"),
                command=self.command,
            )
        )

    def hold_batch(self, batch_id: str) -> None:
        """Name the batch this run is writing, before its first write."""
        assert self._holder is not None, "the lock is not held"
        self._write(Holder(**{**asdict(self._holder), "batch_id": batch_id}))

    def release(self) -> None:
        if self._file is None:
            return
        if self._holder is not None:
            self._write(Holder(**{**asdict(self._holder), "released": True}))
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def _write(self, holder: Holder) -> None:
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(asdict(holder)))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._holder = holder

    @staticmethod
    def _read(handle: IO[str]) -> Holder | None:
        handle.seek(0)
        return Holder.parse(handle.read())


def holder_of(lake: Path) -> Holder | None:
    """Who holds the lake's lock now, or None if nobody does (the lock is free)."""
    path = lake / LOCK_FILE
    if not path.exists():
        return None
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            return Holder.parse(handle.read())
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return None
