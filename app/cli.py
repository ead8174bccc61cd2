"""The `energy-platform` command line. Heavy modules are imported inside commands, so `--help` is quick."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from app.application.pipeline import BatchResult
    from app.application.runner import Platform

app = typer.Typer(
    help="Energy Data Platform: raw meter data to trustworthy tables.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
batches_app = typer.Typer(help="Inspect recorded batches.", no_args_is_help=True)
tables_app = typer.Typer(help="Inspect the lake's tables.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Inspect quarantined rows and replay them.", no_args_is_help=True)
app.add_typer(batches_app, name="batches")
app.add_typer(tables_app, name="tables")
app.add_typer(quarantine_app, name="quarantine")

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
def _platform() -> Iterator[Platform]:
    """Settings, logging and stores; a PlatformError ends the command with its message, exit 1."""
    from app.application.runner import open_platform
    from app.domain.errors import PlatformError
    from app.infrastructure.logging import configure_logging
    from app.infrastructure.settings import load_settings

    try:
        settings = load_settings()
        configure_logging(log_format=settings.log_format, level=settings.log_level)
        with open_platform(settings) as platform:
            yield platform
    except PlatformError as error:
        _error(error)
        raise typer.Exit(code=1) from None


def _progress() -> Callable[[str, str], None]:
    from rich.text import Text

    console = _console(stderr=True)

    def report(layer: str, message: str) -> None:
        console.print(Text(f"{layer:>7}", style="bold cyan") + Text(f" {message}"))

    return report


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
        )
    if result.rule_counts:
        rules = ", ".join(f"{k}={v}" for k, v in sorted(result.rule_counts.items()))
        console.print(f"rows per rule: {rules}")
    if result.estimates:
        methods = ", ".join(f"{k}={v}" for k, v in sorted(result.estimates.items()))
        console.print(f"estimated by method: {methods}")
    for name, location in result.tables.items():
        console.print(f"  {name}: {location}")
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
    """Run bronze -> silver -> gold for one source (default: the bundled sample)."""
    from app.application.runner import run_batch as run

    with _platform() as platform:
        result = run(
            platform,
            source_name=source,
            input_path=input_path,
            config_file=config,
            force=force,
            progress=_progress(),
            wait_seconds=wait,
        )
    _summary(result)
    if result.status == "failed":
        raise typer.Exit(code=1)


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
        page = quarantined_rows(platform.store, batch_id=batch_id, limit=limit, offset=0)
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
    from app.application.runner import replay_quarantine as replay

    with _platform() as platform:
        result = replay(platform, batch_id=batch_id, config_file=config, progress=_progress(), wait_seconds=wait)
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
    from rich.table import Table

    with _platform() as platform:
        records = platform.metadata.list_batches(limit=limit, source=source)
    table = Table(title="Batches")
    for column in ("batch_id", "source", "kind", "status", "started", "records", "files"):
        table.add_column(column, no_wrap=True)
    for r in records:
        table.add_row(
            r.batch_id,
            r.source,
            f"replay of {r.replay_of}" if r.replay_of else r.kind,
            r.status,
            f"{r.started_at:%Y-%m-%d %H:%M:%S}Z",
            f"{r.record_count:,}",
            str(len(r.files)),
        )
    _console().print(table)


@batches_app.command("show")
def show_batch(batch_id: str) -> None:
    """One batch: files, metrics per layer, reconciliation and rule counts."""
    from rich.table import Table

    with _platform() as platform:
        record = platform.metadata.get_batch(batch_id)
    console = _console()
    if record is None:
        _error(f"no batch {batch_id!r}; see `energy-platform batches list`")
        raise typer.Exit(code=1)
    console.print(
        f"batch {record.batch_id}: source={record.source} status={record.status} mode={record.execution_mode}"
    )
    console.print(
        f"started {record.started_at.isoformat()}  "
        f"finished {record.finished_at.isoformat() if record.finished_at else '-'}"
    )
    console.print(f"records {record.record_count:,}  checksum {record.checksum}  sequence {record.sequence}")
    if record.replay_of:
        console.print(f"replay of batch {record.replay_of}")
    if record.error:
        from app.infrastructure.logging import redact_text

        console.print(f"error: {redact_text(record.error)}")
    for f in record.files:
        console.print(f"  file {f.path} ({f.record_count:,} rows, sha256 {f.sha256[:16]}…)")
    layers = Table(title="Layers")
    for column in ("layer", "in", "out", "quarantined", "seconds", "errors"):
        layers.add_column(column)
    for m in record.layers:
        layers.add_row(
            m.layer,
            f"{m.records_in:,}",
            f"{m.records_out:,}",
            f"{m.quarantined:,}",
            f"{m.duration_seconds:.2f}",
            str(m.errors),
        )
    console.print(layers)
    if record.reconciliation:
        console.print(f"reconciliation: {record.reconciliation}")
    for rule, count in sorted(record.rule_counts.items()):
        console.print(f"  rule {rule}: {count:,}")


@tables_app.command("show")
def show_table(
    name: str,
    limit: Annotated[int, typer.Option(min=1, help="How many rows.")] = 10,
) -> None:
    """Print the first rows of a table, e.g. silver_readings or gold_daily_meter_energy."""
    with _platform() as platform:
        if not platform.store.exists(name):
            _error(f"no table {name!r} at {platform.store.location(name)}")
            raise typer.Exit(code=1)
        rows = platform.store.head(name, limit=limit)
        total = platform.store.count(name)
    _console().print(rows.to_pandas().to_string(index=False))
    _console().print(f"({total:,} rows in {name})")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="energy-platform")


if __name__ == "__main__":
    main()
