"""The `energy-platform` command line. Heavy modules are imported inside commands, so `--help` is quick."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from app.application.pipeline import BatchResult
    from app.application.source_check import SourceCheck
    from app.domain.audit import AuditRecord
    from app.infrastructure.settings import Settings
    from app.wiring import LocalPlatform

app = typer.Typer(
    help="Energy Data Platform: raw meter data to trustworthy tables.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
batches_app = typer.Typer(help="Inspect recorded batches.", no_args_is_help=True)
tables_app = typer.Typer(help="Inspect the lake's tables.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Inspect quarantined rows and replay them.", no_args_is_help=True)
sources_app = typer.Typer(
    help="Get a source's config right: check it on its files, or draft one from a file.", no_args_is_help=True
)
app.add_typer(batches_app, name="batches")
app.add_typer(tables_app, name="tables")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(sources_app, name="sources")
db_app = typer.Typer(help="The metadata database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
audit_app = typer.Typer(
    help="The audit trail of mutating actions: who did what, when, and how it ended.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")
retention_app = typer.Typer(help="Delete what is older than each layer's retention.", no_args_is_help=True)
app.add_typer(retention_app, name="retention")
meters_app = typer.Typer(help="One meter's data.", no_args_is_help=True)
app.add_typer(meters_app, name="meters")

#: How long a run waits for another run on the same data directory to finish.
WaitOption = Annotated[
    float,
    typer.Option(
        "--wait",
        min=0,
        help="Seconds to wait for another run on the same data directory to finish (default: refuse at once).",
    ),
]


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    # No markup: paths and messages are printed as they are ("[" is common in file names).
    return Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False)


def _error(message: object) -> None:
    """`error: <message>` on stderr, the message verbatim but for secrets, which are masked."""
    from rich.text import Text

    from app.infrastructure.logging import redact_text

    _console(stderr=True).print(Text("error: ", style="bold red") + Text(redact_text(str(message))))


@contextmanager
def _reported() -> Iterator[None]:
    """A PlatformError raised inside ends the command with its one-line message, exit 1."""
    from app.domain.errors import PlatformError

    try:
        yield
    except PlatformError as error:
        _error(error)
        raise typer.Exit(code=1) from None


@contextmanager
def _settings() -> Iterator[Settings]:
    """Settings and logging, without opening the lake or the metadata database."""
    from app.infrastructure.logging import configure_logging
    from app.infrastructure.settings import load_settings
    from app.infrastructure.tracing import configure_tracing

    with _reported():
        settings = load_settings()
        log_format, level = settings.logging_setup(terminal=sys.stderr.isatty())
        configure_logging(log_format=log_format, level=level)
        configure_tracing()
        yield settings


@contextmanager
def _platform() -> Iterator[LocalPlatform]:
    """Settings, logging and stores; a PlatformError ends the command with its message, exit 1."""
    from app.wiring import open_platform

    with _settings() as settings, open_platform(settings) as platform:
        yield platform


def _progress() -> Callable[[str, str], None]:
    from rich.text import Text

    console = _console(stderr=True)

    def report(layer: str, message: str) -> None:
        console.print(Text(f"{layer:>7}", style="bold cyan") + Text(f" {message}"))

    return report


#: What a run works on once a layer is done.
_NEXT_LAYER = {"bronze": "silver: VEE, quarantine and merge", "silver": "gold: daily and hourly", "gold": "checks"}


class _LiveProgress:
    """A run's progress on stderr. In a terminal, a live line at the bottom (a spinner, the layer
    in hand, the time so far) under the lines of the layers done (rows in and out, rows per
    second); elsewhere (a pipe, a file, CI), or when JSON events share the terminal
    (`events_for_people` False), the same lines, one per event, and no live line."""

    def __init__(self, *, events_for_people: bool) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = _console(stderr=True)
        self.lines = _progress()
        self.live = (
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            if self.console.is_terminal and events_for_people
            else None
        )
        self.task = self.live.add_task("starting", total=None) if self.live else None

    def __enter__(self) -> _LiveProgress:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.live is not None:
            self.live.stop()

    def __call__(self, layer: str, message: str) -> None:
        self.lines(layer, message)  # in a terminal, printed above the live line
        if self.live is not None and self.task is not None:
            done = layer in _NEXT_LAYER and message.endswith("rows/s)")
            self.live.update(self.task, description=_NEXT_LAYER[layer] if done else f"{layer}: {message}")


def _summary(result: BatchResult) -> None:
    from rich.table import Table

    console = _console()
    for path, batch_id in result.skipped_files:
        console.print(f"skipped {path}: already ingested by batch {batch_id} (use --force to ingest again)")
    if result.batch_id is None:
        console.print("Nothing to do: every input file was already ingested.")
        return
    table = Table(title=f"Batch {result.batch_id} ({result.source}): {result.status}")
    for column in ("layer", "records in", "records out", "quarantined", "duration (s)"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for m in result.layers:
        table.add_row(
            m.layer,
            f"{m.records_in:,}",
            f"{m.records_out:,}",
            f"{m.quarantined:,}",
            f"{m.duration_seconds:.2f}",
        )
    console.print(table)
    rec = result.reconciliation
    if rec is not None:
        console.print(
            f"reconciliation: {rec.rows_read:,} read = {rec.rows_accepted:,} accepted + "
            f"{rec.rows_quarantined:,} quarantined + {rec.duplicates_replaced:,} duplicates replaced"
            f"; silver {rec.silver_inserted:,} inserted, {rec.silver_updated:,} updated, "
            f"{rec.silver_unchanged:,} unchanged; {rec.rows_estimated:,} intervals estimated"
            + (f"; {rec.rows_spread:,} more intervals from register reads spanning several" if rec.rows_spread else "")
        )
    if result.rule_counts:
        rules = ", ".join(f"{k}={v}" for k, v in sorted(result.rule_counts.items()))
        console.print(f"rows per rule: {rules}")
    if result.estimates:
        methods = ", ".join(f"{k}={v}" for k, v in sorted(result.estimates.items()))
        console.print(f"estimated by method: {methods}")
    for name, location in result.tables.items():
        console.print(f"  {name}: {location}")
    for name, (before, after) in result.compacted.items():
        console.print(f"compacted {name}: {before:,} -> {after:,} data files (COMPACT_SMALL_FILES_THRESHOLD)")
    console.print(f"total {result.duration_seconds:.2f}s")
    if result.error:
        _error(result.error)


@app.command("run-batch")
def run_batch(
    source: Annotated[str, typer.Option(help="Source name from the config.")] = "meter_readings",
    input_path: Annotated[
        str | None, typer.Option("--input", help="File, folder or glob; default: the source's path.")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file declaring sources.")] = None,
    force: Annotated[bool, typer.Option(help="Ingest files even if their checksum was ingested before.")] = False,
    wait: WaitOption = 0.0,
) -> None:
    """Run bronze -> silver -> gold for one source (default: the bundled sample).

    With PROCESSING_MODE=streaming this runs the source as a stream instead (`stream`)."""
    from app.application.audit import cli_actor
    from app.application.runner import run_batch as run

    with _platform() as platform:
        if platform.settings.processing_mode == "streaming":
            if force:
                _error("--force does not apply with PROCESSING_MODE=streaming: a stream takes each file once")
                raise typer.Exit(code=1)
            _stream(platform, source=source, config=config, input_path=input_path)
            return
        log_format, _ = platform.settings.logging_setup(terminal=sys.stderr.isatty())
        with _LiveProgress(events_for_people=log_format == "console") as progress:
            result = run(
                platform,
                source_name=source,
                input_path=input_path,
                config_file=config,
                force=force,
                progress=progress,
                wait_seconds=wait,
                actor=cli_actor(),
            )
    _summary(result)
    if result.status == "failed":
        raise typer.Exit(code=1)


def _stream(
    platform: LocalPlatform,
    *,
    source: str,
    config: Path | None,
    input_path: str | None,
    trigger: float = 10.0,
    available_now: bool = False,
    max_files: int = 100,
    max_messages: int = 200_000,
    compact_every: int = 20,
) -> None:
    """Run a stream until SIGTERM or Ctrl-C (the micro-batch in hand finishes and commits first;
    a second Ctrl-C stops at once), or with `available_now` until what was there is taken."""
    import signal
    import threading

    from app.application.audit import StreamAudit, cli_actor
    from app.application.streaming import run_stream

    stop = threading.Event()
    console = _console(stderr=True)

    def stopping(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        console.print(f"stopping: {signal.Signals(signum).name}; finishing the micro-batch in hand")
        stop.set()

    # pyarrow would otherwise cancel a CSV read or compute call in hand when a signal with a Python
    # handler arrives ("Operation cancelled. Detail: received signal 15"): the micro-batch failed
    # instead of finishing.
    import pyarrow as pa

    pa.enable_signal_handlers(False)
    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGTERM, signal.SIGINT)}

    def micro_batch(result: BatchResult) -> None:
        if result.batch_id is None:  # Spark ran again a micro-batch the lake already holds
            console.print(f"micro-batch already committed: {result.status}, nothing written again")
            return
        rows = result.reconciliation.rows_read if result.reconciliation else 0
        files = f"{len(result.files)} file(s), " if result.files else ""
        line = f"micro-batch {result.batch_id}: {result.status}, {files}{rows:,} readings"
        console.print(line + (f", {result.duration_seconds:.2f}s" if result.duration_seconds else ""))
        if result.error:
            _error(result.error)

    options = {"config": config, "input": input_path, "trigger_seconds": trigger, "available_now": available_now}
    options |= {"max_files": max_files, "max_messages": max_messages, "compact_every": compact_every}
    audit = StreamAudit(platform.metadata, cli_actor(), source, options)
    try:
        with _reported(), audit.until_started():
            if not available_now:
                console.print(f"streaming source {source}: trigger {trigger:g}s; Ctrl-C or SIGTERM stops")
            summary = run_stream(
                platform,
                source_name=source,
                config_file=config,
                input_path=input_path,
                trigger_seconds=trigger,
                available_now=available_now,
                max_files=max_files,
                max_messages=max_messages,
                compact_every=compact_every,
                stop=stop,
                progress=_progress(),
                on_micro_batch=micro_batch,
                audit=audit,
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _console().print(
        f"Stream of {summary.source} stopped: {len(summary.micro_batches)} micro-batch(es), "
        f"{summary.readings:,} readings, {summary.failed} failed"
    )


@app.command("stream")
def stream(
    source: Annotated[str, typer.Option(help="Source name from the config.")] = "meter_readings",
    config: Annotated[Path | None, typer.Option(help="TOML file declaring sources.")] = None,
    input_path: Annotated[
        str | None, typer.Option("--input", help="Landing folder or glob; default: the source's path.")
    ] = None,
    trigger: Annotated[float, typer.Option(min=0, help="The micro-batch interval in seconds, start to start.")] = 10.0,
    available_now: Annotated[
        bool, typer.Option("--available-now", help="Take what is there now in micro-batches, then exit 0.")
    ] = False,
    max_files: Annotated[int, typer.Option(min=1, help="Files one micro-batch takes at most.")] = 100,
    max_messages: Annotated[
        int, typer.Option(min=1, help="Messages one micro-batch of a Kafka source takes at most.")
    ] = 200_000,
    compact_every: Annotated[
        int,
        typer.Option(min=0, help="Compact and checkpoint the tables written every N micro-batches (0: never)."),
    ] = 20,
) -> None:
    """Run a source as a stream: each new file in its landing folder once, in arrival order, in
    micro-batches through the same stages as a batch. SIGTERM or Ctrl-C: finish the micro-batch
    in hand, commit, exit 0."""
    with _platform() as platform:
        _stream(
            platform,
            source=source,
            config=config,
            input_path=input_path,
            trigger=trigger,
            available_now=available_now,
            max_files=max_files,
            max_messages=max_messages,
            compact_every=compact_every,
        )


@app.command("recover")
def recover_lake(wait: WaitOption = 0.0) -> None:
    """Roll back and mark failed the batches a killed run left running (runs and replays do this
    first on their own; reads never do)."""
    from app.application.audit import audited, cli_actor
    from app.domain.audit import RECOVER
    from app.wiring import recover

    with _platform() as platform, audited(platform.metadata, cli_actor(), RECOVER) as audit:
        recovered = recover(platform, wait_seconds=wait)
        audit.details["recovered"] = recovered
    if recovered:
        _console().print(f"Recovered {len(recovered)} interrupted batch(es): {', '.join(recovered)}")
    else:
        _console().print("Nothing to recover: no batch of this data directory was left running.")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the metadata database's schema migrations (every command and the service also do
    this once when they start); does nothing when the schema is current."""
    from app.wiring import metadata_store

    with _settings() as settings:
        store = metadata_store(settings)
        try:
            version = store.schema_version()
        finally:
            store.dispose()
    _console().print(f"The metadata database {store.url_for_display} is at schema version {version}.")


@quarantine_app.command("list")
def list_quarantine(
    batch_id: Annotated[
        str | None, typer.Option("--batch-id", help="Show this batch's quarantined rows instead of the totals.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many rows of one batch.")] = 20,
) -> None:
    """Quarantined rows per batch and rule, with the replays each batch had; or one batch's rows."""
    from rich.table import Table

    from app.application.queries import quarantine_totals, quarantined_rows

    with _platform() as platform:
        if batch_id is None:
            totals = quarantine_totals(platform.store, platform.metadata)
            table = Table(title="Quarantine")
            for column in ("batch_id", "source", "rule", "rows", "replays"):
                table.add_column(column, no_wrap=True, justify="right" if column == "rows" else "left")
            for t in totals:
                table.add_row(t.batch_id, t.source, t.rule, f"{t.rows:,}", ", ".join(t.replays) or "-")
            _console().print(table)
            if not totals:
                _console().print("The quarantine is empty.")
            return
        if platform.metadata.get_batch(batch_id) is None:
            _error(f"no batch {batch_id!r}; see `energy-platform batches list`")
            raise typer.Exit(code=1)
        page = quarantined_rows(platform.reads, batch_id=batch_id, limit=limit, offset=0)
    table = Table(title=f"Quarantine of batch {batch_id}: {page.total:,} row(s)")
    for column in ("file", "line", "rule", "record"):
        table.add_column(column, overflow="fold")
    for row in page.items:
        table.add_row(row["source_file"], str(row["line_number"]), row["rule"], row["raw_record"])
    _console().print(table)


@quarantine_app.command("replay")
def replay_quarantine(
    batch_id: Annotated[str, typer.Option("--batch-id", help="The batch whose quarantined rows to re-run.")],
    config: Annotated[Path | None, typer.Option(help="TOML file declaring sources.")] = None,
    wait: WaitOption = 0.0,
) -> None:
    """Re-run a batch's quarantined rows through its source's current config and rules: rows that
    now pass reach silver and gold once; the rest stay in quarantine. Recorded as a replay batch."""
    from app.application.audit import cli_actor
    from app.application.runner import replay_quarantine as replay

    with _platform() as platform:
        result = replay(
            platform, batch_id=batch_id, config_file=config, progress=_progress(), wait_seconds=wait, actor=cli_actor()
        )
    if result.batch_id is None:
        _console().print(f"Nothing to do: {result.error}.")
        return
    _summary(result)
    if result.status == "failed":
        raise typer.Exit(code=1)


@batches_app.command("list")
def list_batches(
    limit: Annotated[int, typer.Option(min=1, help="How many batches.")] = 20,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
) -> None:
    """Recent batches, newest first."""
    from rich import box
    from rich.table import Table

    with _platform() as platform:
        records = platform.metadata.list_batches(limit=limit, source=source)
    rows = [
        (
            r.batch_id,
            r.source,
            f"replay of {r.replay_of}" if r.replay_of else r.kind,
            "undone" if r.undone_by else r.status,
            f"{r.started_at:%Y-%m-%d %H:%M:%S}Z",
            f"{r.record_count:,}",
            str(len(r.files)),
        )
        for r in records
    ]
    # Batch ids are what a user copies into the next command: never cut, also at 80 columns (no
    # vertical rules, to leave room). Short values keep their width; the source, the kind (a
    # replay names its batch) and the start time (date, then time) wrap.
    table = Table(title="Batches", box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    for index, column in enumerate(("batch_id", "source", "kind", "status", "started", "records", "files")):
        widest = max([len(column), *(len(row[index]) for row in rows)])
        if column in ("batch_id", "status", "records", "files"):
            table.add_column(column, no_wrap=True, min_width=widest, justify="right" if index > 4 else "left")
        else:
            table.add_column(column, overflow="fold", min_width=10 if column == "started" else None)
    for row in rows:
        table.add_row(*row)
    _console().print(table)


@batches_app.command("show")
def show_batch(batch_id: str) -> None:
    """One batch: files, metrics per layer, reconciliation and rule counts."""
    from rich.table import Table

    with _platform() as platform:
        record = platform.metadata.get_batch(batch_id)
        undid = platform.metadata.undone_batches([batch_id]).get(batch_id, [])
    console = _console()
    if record is None:
        _error(f"no batch {batch_id!r}; see `energy-platform batches list`")
        raise typer.Exit(code=1)
    console.print(
        f"batch {record.batch_id}: source={record.source} status={record.status} mode={record.execution_mode}"
    )
    if undid:
        console.print(f"undo of batch(es) {', '.join(undid)}")
    console.print(
        f"started {record.started_at.isoformat()}  "
        f"finished {record.finished_at.isoformat() if record.finished_at else '-'}"
    )
    console.print(f"records {record.record_count:,}  checksum {record.checksum}  sequence {record.sequence}")
    if record.replay_of:
        console.print(f"replay of batch {record.replay_of}")
    if record.undone_by:
        console.print(f"undone by batch {record.undone_by}: its rows are out of the lake, its files ingestible again")
    if record.positions:
        offsets = ", ".join(f"{p}: {o}" for p, o in sorted(record.positions.items(), key=lambda i: int(i[0])))
        console.print(f"positions (partition: last offset taken) {offsets}")
    if record.error:
        from app.infrastructure.logging import redact_text

        console.print(f"error: {redact_text(record.error)}")
    for f in record.files:
        console.print(f"  file {f.path} ({f.record_count:,} rows, sha256 {f.sha256[:16]}…)")
    layers = Table(title="Layers")
    for column in ("layer", "in", "out", "quarantined", "seconds"):
        layers.add_column(column)
    for m in record.layers:
        layers.add_row(
            m.layer,
            f"{m.records_in:,}",
            f"{m.records_out:,}",
            f"{m.quarantined:,}",
            f"{m.duration_seconds:.2f}",
        )
    console.print(layers)
    if record.reconciliation:
        console.print(f"reconciliation: {record.reconciliation}")
    for rule, count in sorted(record.rule_counts.items()):
        console.print(f"  rule {rule}: {count:,}")


@batches_app.command("undo")
def undo_batch(
    batch_id: Annotated[str, typer.Argument(help="The batch to take out of the lake.")],
    cascade: Annotated[
        bool, typer.Option("--cascade", help="Undo the later batches that depend on it too (newest first).")
    ] = False,
    wait: WaitOption = 0.0,
) -> None:
    """Take a batch's rows out of every table (bronze, quarantine, silver, gold) as a new batch
    of kind `undo`; its files can then be ingested again. Refused, naming them, when later
    batches depend on it, unless --cascade."""
    from app.application.audit import cli_actor
    from app.application.undo import UndoPlan
    from app.application.undo import undo_batch as undo

    console = _console()

    def announce(plan: UndoPlan) -> None:
        if plan.cascaded:
            console.print(f"Undoing batch {batch_id} and the {len(plan.cascaded)} later batch(es) that depend on it:")
        for batch in plan.batches:
            why = plan.reasons.get(batch.batch_id, "the batch asked for")
            console.print(f"  {batch.batch_id} ({batch.kind}, {batch.started_at:%Y-%m-%d %H:%M:%S}Z): {why}")

    with _platform() as platform:
        result = undo(
            platform,
            batch_id,
            cascade=cascade,
            announce=announce,
            progress=_progress(),
            wait_seconds=wait,
            actor=cli_actor(),
        )
    console.print(f"Undo {result.undo_id}: undid {', '.join(result.undone)} (newest first)")
    for table, counts in result.tables.items():
        console.print(
            f"  {table}: {counts.deleted:,} deleted, {counts.inserted:,} inserted, {counts.updated:,} updated"
        )
    for path in result.files:
        console.print(f"  can be ingested again: {path}")


@tables_app.command("show")
def show_table(
    name: str,
    limit: Annotated[int, typer.Option(min=1, help="How many rows.")] = 10,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="A past version: its number (see `tables history`), or an ISO 8601 time such as 2025-06-01T12:00Z.",
        ),
    ] = None,
) -> None:
    """Print the first rows of a table, e.g. silver_readings or gold_daily_meter_energy."""
    from app.application.lake_ops import checked_as_of, existing_tables, parse_as_of

    with _platform() as platform:
        [table] = existing_tables(platform, name)
        version = checked_as_of(platform, table, parse_as_of(as_of)) if as_of is not None else None
        rows = platform.store.head(table, limit=limit, as_of=version)
        total = platform.store.count(table) if version is None else None
    _console().print(rows.to_pandas().to_string(index=False))
    _console().print(f"({total:,} rows in {name})" if total is not None else f"(first rows of {name} as of {as_of})")


@tables_app.command("history")
def table_history(
    name: str,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the newest N versions.")] = None,
) -> None:
    """List a table's versions, newest first: time, operation, batch and rows changed."""
    from rich.table import Table

    from app.application.lake_ops import table_history as history

    with _platform() as platform:
        versions = history(platform, name, limit=limit)
    from rich import box

    view = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for column in ("version", "time (UTC)", "operation", "batch", "added", "updated", "removed"):
        view.add_column(
            column, no_wrap=True, justify="left" if column in ("time (UTC)", "operation", "batch") else "right"
        )
    for v in versions:
        view.add_row(
            str(v.version),
            v.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
            v.operation,
            v.batch_id or "",
            f"{v.rows_added:,}",
            f"{v.rows_updated:,}",
            f"{v.rows_removed:,}",
        )
    console = _console()
    if not console.is_terminal:  # a pipe or a file: whole lines, not the 80 columns rich assumes
        console.width = 140
    console.print(view)


@tables_app.command("changes")
def table_changes(
    name: str,
    since_version: Annotated[int, typer.Option("--since-version", min=0, help="The first version to include.")],
    limit: Annotated[int | None, typer.Option(min=1, help="Print at most N rows.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per row (JSON Lines).")] = False,
) -> None:
    """Rows a silver or gold table's versions inserted, updated and deleted since a version."""
    from app.application.lake_ops import table_changes as changes

    with _platform() as platform:
        rows = changes(platform, name, since_version=since_version)
    shown = rows.slice(0, limit) if limit is not None else rows
    if as_json:
        import json

        for row in shown.to_pylist():
            print(json.dumps(row, default=str))
        return
    _console().print(shown.to_pandas().to_string(index=False) if shown.num_rows else "no changes")
    _console().print(f"({rows.num_rows:,} changed rows in {name} since version {since_version})")


@tables_app.command("optimize")
def optimize_tables(
    name: Annotated[str | None, typer.Argument(help="One table (default: every table of the lake).")] = None,
    zorder: Annotated[
        list[str] | None, typer.Option("--zorder", help="Cluster rows by this column (repeatable), e.g. meter_id.")
    ] = None,
    wait: WaitOption = 0.0,
) -> None:
    """Compact small files (or Z-order them) and checkpoint the log; no row changes."""
    from app.application.audit import cli_actor
    from app.application.lake_ops import optimize_tables as optimize

    with _platform() as platform:
        files = optimize(platform, name=name, zorder=zorder or (), wait_seconds=wait, actor=cli_actor())
    for table, (before, after) in files.items():
        _console().print(f"{table}: {before:,} -> {after:,} data files")


@tables_app.command("vacuum")
def vacuum_tables(
    name: Annotated[str | None, typer.Argument(help="One table (default: every table of the lake).")] = None,
    retain_hours: Annotated[
        float, typer.Option("--retain-hours", min=0, help="Keep the files of versions younger than this.")
    ] = 168.0,
    force: Annotated[bool, typer.Option("--force", help="Allow a retention shorter than 168 hours.")] = False,
    wait: WaitOption = 0.0,
) -> None:
    """Delete the data files only versions older than --retain-hours read (default 168, Delta's own)."""
    from app.application.audit import cli_actor
    from app.application.lake_ops import vacuum_tables as vacuum

    with _platform() as platform:
        deleted = vacuum(
            platform, name=name, retain_hours=retain_hours, force=force, wait_seconds=wait, actor=cli_actor()
        )
    for table, count in deleted.items():
        _console().print(f"{table}: {count:,} files deleted")


@tables_app.command("restore")
def restore_table(
    name: str,
    version: Annotated[int, typer.Option("--version", min=0, help="The version to go back to (see `tables history`).")],
    force: Annotated[
        bool, typer.Option("--force", help="Restore even though another layer would disagree with this table.")
    ] = False,
    wait: WaitOption = 0.0,
) -> None:
    """Restore one table to a past version (Delta RESTORE, as a new version). Refused, naming
    them, while batches it takes out (or brings back) stay in (or are missing from) another
    table, unless --force; `batches undo` takes a batch out of every table instead."""
    from app.application.audit import cli_actor
    from app.application.undo import restore_table as restore

    with _platform() as platform:
        result = restore(platform, name, version=version, force=force, wait_seconds=wait, actor=cli_actor())
    _console().print(
        f"{result.table}: restored to version {result.version} (it was at version {result.from_version}; "
        f"commit tagged {result.restore_id})"
    )
    for disagreement in result.disagreements:
        _console().print(f"  forced: {disagreement.describe()}")


def _audit_row(record: AuditRecord) -> dict[str, Any]:
    from dataclasses import asdict

    from app.infrastructure.logging import redact_text

    row = {"id": record.id, **asdict(record)}
    row["at"] = record.at.isoformat()
    row["error"] = redact_text(record.error) if record.error else None
    return row


@audit_app.command("list")
def list_audit(
    limit: Annotated[int, typer.Option(min=1, help="How many records.")] = 20,
    action: Annotated[
        str | None, typer.Option(help='Only this action, e.g. "run-batch", "tables vacuum", "stream start".')
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor: an OS user or an API key's name.")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only actions at or after this ISO 8601 time with offset (a date alone: its midnight UTC)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per record (JSON Lines).")] = False,
) -> None:
    """Recorded mutating actions, newest first: when (UTC), who, what, on what, and how it ended."""
    import json

    from rich import box
    from rich.table import Table

    from app.application.audit import audit_trail, parse_since

    with _platform() as platform:
        records = audit_trail(
            platform.metadata,
            limit=limit,
            action=action,
            actor=actor,
            since=parse_since(since) if since is not None else None,
        )
    rows = [_audit_row(record) for record in records]
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str, ensure_ascii=False))
        return
    console = _console()
    if not rows:
        console.print("No recorded actions" + (" match." if action or actor or since else " yet."))
        return
    if not console.is_terminal:  # a pipe or a file: whole lines, not the 80 columns rich assumes
        console.width = 160
    view = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for column in ("time (UTC)", "actor", "action", "target", "outcome", "details"):
        view.add_column(column, overflow="fold", no_wrap=column in ("time (UTC)", "outcome"))
    for record, row in zip(records, rows, strict=True):
        details = json.dumps(row["details"], default=str, ensure_ascii=False, separators=(",", ":"))
        view.add_row(
            f"{record.at:%Y-%m-%d %H:%M:%S}",
            f"{row['actor']} ({row['actor_kind']})",
            row["action"],
            row["target"] or "-",
            row["outcome"],
            details + (f" error: {row['error']}" if row["error"] else ""),
        )
    console.print(view)


@retention_app.command("apply")
def apply_retention(wait: WaitOption = 0.0) -> None:
    """Delete the rows older than each layer's retention (RETENTION_BRONZE_DAYS by ingestion time,
    RETENTION_QUARANTINE_DAYS by quarantine time, RETENTION_SILVER_DAYS and RETENTION_GOLD_DAYS by
    the day or hour the rows describe; unset: kept), record what went in the audit trail, then
    vacuum those tables with Delta's safe retention of 168 hours."""
    from app.application.audit import cli_actor
    from app.application.retention import RetentionPolicy
    from app.application.retention import apply_retention as apply

    with _platform() as platform:
        settings = platform.settings
        policy = RetentionPolicy(
            bronze_days=settings.retention_bronze_days,
            quarantine_days=settings.retention_quarantine_days,
            silver_days=settings.retention_silver_days,
            gold_days=settings.retention_gold_days,
        )
        result = apply(platform, policy, wait_seconds=wait, actor=cli_actor())
    console = _console()
    if not result.cutoffs:
        console.print("No retention is set (RETENTION_BRONZE_DAYS, ...): every layer is kept; nothing was deleted.")
        return
    for layer, cutoff in result.cutoffs.items():
        console.print(f"{layer}: rows before {cutoff:%Y-%m-%d %H:%M:%S}Z go")
    for table, rows in result.deleted.items():
        console.print(f"{table}: {rows:,} rows deleted, {result.vacuumed.get(table, 0):,} files vacuumed")
    if not result.deleted:
        console.print("No table of those layers exists yet.")
    console.print(
        "Files of the deleted rows leave the disk once no version of the last 168 hours reads them "
        "(the next retention apply or tables vacuum after that)."
    )


@meters_app.command("forget")
def forget_meter(
    meter_id: Annotated[str, typer.Argument(metavar="METER_ID", help="The meter whose data to erase.")],
    wait: WaitOption = 0.0,
) -> None:
    """Erase one meter's data from every layer and the quarantine (right to erasure), recompute
    the portfolio load without it, and purge the history of the tables that hold meter ids: their
    time travel and undo end here. The audit trail records the SHA-256 of the id, never the id."""
    from app.application.audit import cli_actor
    from app.application.erasure import forget_meter as forget

    with _platform() as platform:
        erasure = forget(platform, meter_id, wait_seconds=wait, actor=cli_actor())
    console = _console()
    console.print(f"Meter {erasure.meter} erased; no file under the lake holds its id.")
    for table, rows in erasure.deleted.items():
        console.print(f"  {table}: {rows:,} rows deleted")
    console.print(
        f"  gold_hourly_portfolio_load: {erasure.portfolio.get('recomputed', 0):,} hour rows recomputed, "
        f"{erasure.portfolio.get('removed', 0):,} removed"
    )
    for table, files in erasure.purged.items():
        console.print(f"  {table}: history purged ({files:,} files deleted)")
    if erasure.metadata_rows:
        console.print(f"  metadata database: {erasure.metadata_rows:,} rows now name the meter by its digest")


def _first_rows_table(check: SourceCheck) -> Any:
    """The first rows as parsed, in as few columns as tell them apart (files numbered when several)."""
    from rich import box
    from rich.table import Table

    numbers = {path: n for n, (path, _) in enumerate(check.files, start=1)}
    several = len(check.files) > 1
    directions = any(row.direction != "import" for row in check.first_rows)
    judged = any(row.rule or row.flags for row in check.first_rows)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    table.add_column("file:line" if several else "line", no_wrap=True)
    table.add_column(
        "meter", overflow="fold", min_width=min(max((len(r.meter_id) for r in check.first_rows), default=5), 24)
    )
    if directions:
        table.add_column("direction", overflow="fold")
    table.add_column("in the file", overflow="fold", min_width=10)
    table.add_column("local time", no_wrap=True)
    table.add_column("UTC", no_wrap=True)
    table.add_column("kWh", no_wrap=True, justify="right")
    if judged:
        table.add_column("rule", overflow="fold")
    for row in check.first_rows:
        cells = [f"{numbers.get(row.file, 0)}:{row.line}" if several else str(row.line), row.meter_id]
        cells += [row.direction] if directions else []
        cells += [row.timestamp_text, row.local_time or "-", row.utc or "-"]
        cells += ["-" if row.energy_kwh is None else f"{row.energy_kwh:,.6g}"]
        cells += [row.rule or row.flags] if judged else []
        table.add_row(*cells)
    return table


def _check_report(check: SourceCheck) -> None:
    """`sources check` for people: the first rows, rules, DST days, series and hints."""
    from rich import box
    from rich.table import Table

    console = _console()
    files = f"{len(check.files)} file(s), {check.rows_read:,} rows read"
    console.print(f"source {check.source}: {files}; nothing was written")
    for number, (path, rows) in enumerate(check.files, start=1):
        console.print(f"  {number}. {path} ({rows:,} rows)")
    console.print(f"\nFirst rows as parsed (local time in {check.series_timezone}):")
    console.print(_first_rows_table(check))
    rules = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for column in ("rule", "severity", "rows"):
        rules.add_column(column, justify="right" if column == "rows" else "left")
    for rule, rows in check.rule_counts.items():
        rules.add_row(rule, check.severities[rule], f"{rows:,}")
    console.print("\nRows per rule:" if check.rule_counts else "\nRows per rule: none failed a rule.")
    if check.rule_counts:
        console.print(rules)
    estimated = ", ".join(f"{method}={n:,}" for method, n in check.estimated.items()) or "none"
    console.print(
        f"A run would read {check.rows_read:,} rows = {check.accepted:,} accepted + {check.quarantined:,} quarantined "
        f"+ {check.duplicates_replaced:,} duplicates replaced; intervals estimated: {estimated}."
    )
    if check.failures:
        failed = ", ".join(f"{rule} ({rows:,} rows)" for rule, rows in check.failures.items())
        console.print(f"A run would stop before writing anything: rules of severity 'fail' failed: {failed}.")
    _check_days_and_series(check)
    console.print()
    for hint in check.hints:
        console.print(f"hint ({hint.key}): {hint.message}")
    if not check.hints:
        console.print("No hints: none of the usual mistakes (unit, time zone, day/month, register order) was seen.")


#: Series listed in the `sources check` table; --json lists all.
_SERIES_SHOWN = 20


def _check_days_and_series(check: SourceCheck) -> None:
    from rich import box
    from rich.table import Table

    console = _console()
    if check.dst_days:
        console.print("\nDST change days in the data (read intervals per series):")
        for day in check.dst_days:
            for line in day.describe():
                console.print(f"  {line}")
    else:
        console.print(f"\nDST change days in the data: none in {check.series_timezone} on the data's days.")
    console.print("\nSeries: accepted reads, and the intervals estimation would fill:")
    series = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    meters = min(max((len(s.meter_id) for s in check.series), default=5), 24)
    for column in ("meter", "direction", "from", "to", "minutes", "reads", "kWh", "estimated"):
        left = column in ("meter", "direction")
        width = meters if column == "meter" else None
        series.add_column(
            column, overflow="fold", no_wrap=not left, justify="left" if left else "right", min_width=width
        )
    for s in check.series[:_SERIES_SHOWN]:
        series.add_row(
            s.meter_id,
            s.direction,
            str(s.first_day),
            str(s.last_day),
            str(s.interval_minutes),
            f"{s.intervals:,}",
            f"{s.energy_kwh:,.3f}",
            f"{s.estimated_intervals:,}",
        )
    console.print(series)
    if len(check.series) > _SERIES_SHOWN:
        console.print(f"... and {len(check.series) - _SERIES_SHOWN:,} more series (--json lists them all)")


@sources_app.command("check")
def check_source_files(
    source: Annotated[str, typer.Option(help="Source name from the config.")],
    config: Annotated[Path | None, typer.Option(help="TOML file declaring sources.")] = None,
    input_path: Annotated[
        str | None, typer.Option("--input", help="File, folder or glob; default: the source's path.")
    ] = None,
    rows: Annotated[int, typer.Option("--rows", min=0, help="How many parsed rows to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON, for machines.")] = False,
) -> None:
    """Show what a run of a source would do with its files, writing nothing.

    The first rows as parsed (meter, local time, UTC, kWh), rows per rule, the DST change days in
    the data with their intervals per series, totals per series, and hints for the usual mistakes.
    Exit 0 when the files could be read (even with hints), 1 with a one-line error otherwise."""
    import json
    from datetime import UTC, datetime

    from app.application.source_check import check_source, find_source
    from app.infrastructure.source_config import load_sources
    from app.wiring import file_reader

    with _settings() as settings:
        declared = find_source(load_sources(config or settings.sources_config), source)
        readers = file_reader()
        paths = readers.resolve_inputs(input_path or declared.path, declared.format)
        result = check_source(readers, declared, paths, now=datetime.now(UTC), sample_rows=rows)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    else:
        _check_report(result)


@sources_app.command("infer")
def infer_source_config(
    file: Annotated[Path, typer.Argument(help="The file to draft a source config from.")],
    name: Annotated[str | None, typer.Option(help="Source name; default: from the file name.")] = None,
) -> None:
    """Draft a source config (a sources.NAME table in TOML) from a file.

    Format, encoding, delimiter, decimal mark, preamble, timestamp columns and format, interval,
    units, long or wide layout; each key commented, guesses marked "check this". Save the output
    and try it with `energy-platform sources check`."""
    from app.application.inference import infer_source
    from app.wiring import file_reader

    with _reported():
        drafted = infer_source(file_reader(), file, name=name)
    typer.echo(drafted.toml(), nl=False)


@app.command("report")
def quality_report(
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write (one file, charts included).")],
    source: Annotated[str | None, typer.Option("--source", help="Only this source's meters and batches.")] = None,
    first: Annotated[
        str | None, typer.Option("--from", help="First local day (YYYY-MM-DD); default 90 days before --to.")
    ] = None,
    last: Annotated[
        str | None, typer.Option("--to", help="Last local day (YYYY-MM-DD); default the newest day in gold.")
    ] = None,
    meter: Annotated[
        str | None, typer.Option("--meter", help="The meter whose intervals to draw (default: the least complete).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Sources file (default: SOURCES_CONFIG).")] = None,
) -> None:
    """Write the data-quality report: completeness per meter and day, estimates, load, a meter's
    intervals, quarantine and the batch timeline, as one self-contained HTML file."""
    import os

    from app.application.report import source_report
    from app.infrastructure.report_html import render_report

    with _platform() as platform:
        zones = {name: s.series_timezone for name, s in platform.sources(config).items()}
        report = source_report(
            platform.store, platform.metadata, zones, source=source, first=first, last=last, meter=meter
        )
        page = render_report(report)
        partial = out.with_name(f".{out.name}.partial")
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, out)
        summary = report.summary()
        _console().print(
            f"report: {out} ({len(page) / 1e6:.1f} MB): {summary['meters']:,} meters, "
            f"{report.first_day} to {report.last_day}, {summary['quarantine']['rows']:,} quarantined rows, "
            f"{len(report.batches):,} batches"
        )


def main() -> None:
    """Console-script entry point."""
    app(prog_name="energy-platform")


if __name__ == "__main__":
    main()
