"""The batch's stages: read -> bronze -> validate -> VEE -> silver -> gold.

Each stage is a small function of the batch in hand (`Batch`) and what the stages before it
made, and returns a typed result. Stages know nothing of where their rows came from: a file
ingest, a quarantine replay and a stream's micro-batch are each a `RowSource` feeding them
(`app.application.row_sources`), and the unit of work that starts, commits, rolls back and
finishes a batch is the pipeline's (`app.application.pipeline`).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple, cast

import narwhals as nw
import pyarrow as pa

from app.application.ports import TableStore, UpsertCounts
from app.domain.batches import Reconciliation
from app.domain.errors import InvariantError, ReconciliationError, ValidationFailedError
from app.domain.parsing import parsed_readings, parsed_schema, raw_column
from app.domain.registers import (
    METHOD_REGISTER_SPREAD,
    RegisterParams,
    difference_registers,
    register_schema,
    spread_register_spans,
)
from app.domain.rules import (
    DUPLICATE_REPLACED,
    MALFORMED_ROW,
    MISSING_INTERVALS,
    SERIES_RULES,
    RuleParams,
    validated_readings,
)
from app.domain.schemas import (
    BRONZE_LINEAGE,
    GOLD_DAILY_METER_ENERGY,
    GOLD_HOURLY_PORTFOLIO_LOAD,
    KIND_MALFORMED,
    KIND_ROW,
    NARWHALS_TYPES,
    QUARANTINE_READINGS,
    SILVER_COMPARED,
    SILVER_READINGS,
    UTC_TIMESTAMP,
    TableSpec,
    bronze_spec,
)
from app.domain.sources import SourceConfig
from app.domain.transforms import (
    SilverParams,
    deduplicated_readings,
    gold_daily_meter_energy,
    gold_hourly_portfolio_load,
    local_day_minutes,
    quality_rank,
    silver_readings,
)
from app.domain.vee import (
    ESTIMATION_METHODS,
    ROLE_HEAD,
    ROLE_NEEDS_ROWS,
    ROLE_SUMMARY,
    VEE_RULES,
    VeeParams,
    apply_vee,
    rows_before,
    vee_schema,
)


@dataclass(frozen=True)
class Batch:
    """What every stage knows of the batch in hand."""

    source: SourceConfig
    batch_id: str
    #: The batch's place in the lake's order of commits (from the metadata store).
    sequence: int
    started: datetime
    store: TableStore
    #: Source positions the bronze commit records (a stream's micro-batch); {} for files.
    positions: Mapping[str, int] = field(default_factory=dict)
    #: A stream's watermark: the latest interval start it has stored (None: a batch, or nothing yet).
    watermark: datetime | None = None
    #: A stream's micro-batch (its VEE takes the newest interval seen as its clock).
    stream: bool = False


@dataclass(frozen=True)
class Read:
    """The read stage's rows: those split into the header's fields, and the malformed lines."""

    rows: nw.LazyFrame[Any]
    malformed: nw.LazyFrame[Any]
    header: list[str]
    #: Rows and malformed lines together.
    count: int

    @classmethod
    def of(cls, raw: nw.LazyFrame[Any], header: list[str], count: int) -> Read:
        """Split raw-read rows (a `kind` column per row) into rows and malformed lines."""
        return cls(
            rows=raw.filter(nw.col("kind") == KIND_ROW),
            malformed=raw.filter(nw.col("kind") == KIND_MALFORMED),
            header=header,
            count=count,
        )


@dataclass(frozen=True)
class Validated:
    """Every row typed and judged by the row rules, and the accepted ones (register spans booked
    on each of their intervals)."""

    rows: nw.LazyFrame[Any]
    accepted: nw.LazyFrame[Any]


@dataclass(frozen=True)
class RuleCounts:
    rules: dict[str, int]
    quarantined: int
    duplicates: int
    estimates: dict[str, int]
    #: Rows added by booking register spans on each of their intervals.
    spread: int = 0


@dataclass(frozen=True)
class Judged:
    """The VEE stage's rows (the batch's, the stored context, the estimates) and the rows per rule."""

    vee: nw.LazyFrame[Any]
    counts: RuleCounts


@dataclass(frozen=True)
class Silver:
    """The batch's silver rows, how many are reads and estimates, and the days and times they span."""

    frame: nw.LazyFrame[Any]
    reads: int
    estimated: int
    #: first_day, last_day (local dates) and first, last (interval starts); None if there are no rows.
    bounds: dict[str, Any] | None

    @property
    def merge_days(self) -> tuple[date, date] | None:
        """The local days a merge of these rows looks at: a key's stored local day can differ from
        this batch's by a day at most (if the source's zone changed)."""
        if self.bounds is None:
            return None
        return self.bounds["first_day"] - timedelta(days=1), self.bounds["last_day"] + timedelta(days=1)


# -- rows and frames shared by the stages -----------------------------------------------------


def _bronze_name(column: str, taken: set[str]) -> str:
    """File column -> a Delta-safe bronze column name that does not clash with lineage."""
    name = re.sub(r"[^0-9a-zA-Z_]+", "_", column.strip()).strip("_").lower() or "column"
    while name in taken:
        name += "_raw"
    taken.add(name)
    return name


def rejected_records(rejected: pa.Table, *, header: list[str], source: str, batch_id: str, at: datetime) -> pa.Table:
    """Rejected parsed rows -> quarantine rows, the raw record as JSON keyed by the file header."""
    raw_cols = [rejected[raw_column(i)].to_pylist() for i in range(len(header))]
    records = [
        json.dumps(dict(zip(header, values, strict=True)), ensure_ascii=False) for values in zip(*raw_cols, strict=True)
    ]
    return _quarantine_rows(rejected, rejected["rejection_rule"], records, source=source, batch_id=batch_id, at=at)


def malformed_records(malformed: pa.Table, *, source: str, batch_id: str, at: datetime) -> pa.Table:
    """Lines the reader could not split into the header's fields -> quarantine rows."""
    records = [json.dumps({"line": text}, ensure_ascii=False) for text in malformed["detail"].to_pylist()]
    rules = pa.repeat(MALFORMED_ROW, malformed.num_rows).cast(pa.string())
    return _quarantine_rows(malformed, rules, records, source=source, batch_id=batch_id, at=at)


def _quarantine_rows(
    rows: pa.Table, rules: Any, records: list[str], *, source: str, batch_id: str, at: datetime
) -> pa.Table:
    n = rows.num_rows
    return pa.table(
        {
            "batch_id": pa.repeat(batch_id, n).cast(pa.string()),
            "source": pa.repeat(source, n).cast(pa.string()),
            "source_file": rows["source_file"].cast(pa.string()),
            "line_number": rows["line_number"],
            "rule": rules,
            "raw_record": pa.array(records, pa.string()),
            "quarantined_at": pa.repeat(pa.scalar(at, QUARANTINE_READINGS.schema.field("quarantined_at").type), n),
        }
    ).cast(QUARANTINE_READINGS.schema)


#: Columns the VEE stage works on, besides the raw file columns carried for quarantine.
_VEE_FIELDS = pa.schema(
    [
        ("meter_id", pa.string()),
        ("direction", pa.string()),
        ("interval_start_utc", UTC_TIMESTAMP),
        ("interval_minutes", pa.int32()),
        ("local_date", pa.date32()),
        ("energy_kwh", pa.float64()),
        ("reported_kwh", pa.float64()),
        ("quality_flag", pa.string()),
        ("quality_rank", pa.int32()),
        ("rejection_rule", pa.string()),
        ("validation_flags", pa.string()),
        ("role", pa.string()),
        ("estimation_method", pa.string()),
        ("source_file", pa.string()),
        ("line_number", pa.int64()),
        ("row_order", pa.int64()),
        ("summary_intervals", pa.int64()),
    ]
)


def vee_input_schema() -> pa.Schema:
    """Schema of the VEE stage's input. The raw file columns stay behind: the few rows a series
    rule quarantines get them back by their key and read order."""
    return _VEE_FIELDS


def _vee_columns(
    frame: nw.LazyFrame[Any], schema: pa.Schema, *, reported: nw.Expr, energy: nw.Expr | None = None
) -> nw.LazyFrame[Any]:
    """Batch rows in the VEE input layout."""
    derived = {
        "energy_kwh": energy if energy is not None else nw.col("energy_kwh"),
        "reported_kwh": reported,
        "quality_flag": nw.col("quality"),
        "role": nw.lit("batch"),
        "summary_intervals": nw.lit(0, nw.Int64()),  # not null: pandas cannot cast a null literal to an integer
    }
    if "estimation_method" not in frame.collect_schema().names():  # set on register spans only
        derived["estimation_method"] = nw.lit(None, nw.String())
    return frame.select(
        *(
            (derived[n] if n in derived else nw.col(n)).cast(NARWHALS_TYPES[schema.field(n).type]).alias(n)
            for n in schema.names
        )
    )


def _history_columns(frame: nw.LazyFrame[Any], schema: pa.Schema) -> nw.LazyFrame[Any]:
    """Stored silver rows in the VEE input layout, as context."""
    columns = []
    for name in schema.names:
        dtype = NARWHALS_TYPES[schema.field(name).type]
        if name == "role":
            columns.append(nw.lit("history", nw.String()).alias(name))
        elif name == "validation_flags":
            columns.append(nw.lit("", nw.String()).alias(name))
        elif name in SILVER_READINGS.schema.names and name != "reported_kwh":
            columns.append(nw.col(name).cast(dtype).alias(name))
        elif name in ("row_order", "summary_intervals"):  # not null: pandas cannot cast a null literal to an integer
            columns.append(nw.lit(-1 if name == "row_order" else 0, dtype).alias(name))
        else:  # reported value, rejection, read order and raw columns: none for stored rows
            columns.append(nw.lit(None, dtype).alias(name))
    return frame.select(*columns)


def _summary_columns(
    history: nw.LazyFrame[Any], schema: pa.Schema, *, until: datetime | None = None
) -> nw.LazyFrame[Any]:
    """Stored silver rows as VEE's summarised days: per series, local day and interval length,
    the measured intervals and their total (`ROLE_SUMMARY`); with `until`, as the heads of their
    days that end there (`ROLE_HEAD`)."""
    days = (
        history.filter(~nw.col("energy_kwh").is_null())
        .group_by("meter_id", "direction", "local_date", "interval_minutes")
        .agg(
            nw.col("interval_start_utc").min(),  # any start of the day: VEE reads the day from it
            nw.col("energy_kwh").sum(),
            nw.col("quality_rank").max(),  # not null: pandas cannot cast a null literal to an integer
            nw.len().alias("summary_intervals"),
        )
    )
    if until is not None:
        days = days.with_columns(nw.lit(until).alias("interval_start_utc"))
    kept = set(days.collect_schema().names())
    columns = []
    for name in schema.names:
        dtype = NARWHALS_TYPES[schema.field(name).type]
        if name in kept:
            columns.append(nw.col(name).cast(dtype).alias(name))
        elif name == "role":
            columns.append(nw.lit(ROLE_SUMMARY if until is None else ROLE_HEAD, nw.String()).alias(name))
        elif name == "validation_flags":
            columns.append(nw.lit("", nw.String()).alias(name))
        elif pa.types.is_integer(schema.field(name).type):  # not null: pandas cannot cast a null literal to an integer
            columns.append(nw.lit(-1, dtype).alias(name))
        else:
            columns.append(nw.lit(None, dtype).alias(name))
    return days.select(*columns)


#: Silver columns the daily gold table is computed from.
_GOLD_DAILY_INPUT = (
    "meter_id",
    "direction",
    "local_date",
    "timezone",
    "energy_kwh",
    "interval_minutes",
    "quality_flag",
)
#: Parsed columns the rules read and nothing after them does.
_PARSE_ONLY = ("timestamp_status", "value", "value_status", "unit", "local_seconds")


#: Relative tolerance of the invariants' float comparisons.
_TOLERANCE = 1e-9


def _validated_schema(parsed: pa.Schema) -> pa.Schema:
    """Schema of `validated_readings` over parsed rows, without the columns only the rules read."""
    kept = [f for f in parsed if f.name not in _PARSE_ONLY]
    return pa.schema(
        [*kept, ("energy_kwh", pa.float64()), ("rejection_rule", pa.string()), ("validation_flags", pa.string())]
    )


def concat(frames: list[nw.LazyFrame[Any]]) -> nw.LazyFrame[Any]:
    """`nw.concat`, without pandas' warning about all-null columns (their types are declared)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The behavior of DataFrame concatenation", FutureWarning)
        return nw.concat(frames)


def _apply_vee(table: pa.Table, *, params: VeeParams, schema: pa.Schema) -> pa.Table:
    """`apply_vee` on rows typed as declared (an engine may hand over all-null columns untyped).
    Tables have no row order, so the output is not sorted."""
    return apply_vee(table.select(schema.names).cast(schema), params, ordered=False)


def register_params(source: SourceConfig, rules: RuleParams) -> RegisterParams:
    """How a register source's reads are differenced (interval ends make a read's time its end)."""
    ends_given = source.columns.interval_end is not None or source.columns.period is not None
    return RegisterParams(
        rules=rules, label="end" if ends_given else source.timestamp_label, series_timezone=source.series_timezone
    )


def vee_params(source: SourceConfig, now: datetime | None = None) -> VeeParams:
    """The source's series rules and estimation settings, for a batch started at `now`."""
    return VeeParams(
        series_timezone=source.series_timezone,
        validation=source.validation,
        estimation=source.estimation,
        severities={rule: source.severity(rule) for rule in VEE_RULES},
        now=now,
    )


def _placeable() -> nw.Expr:
    """A rejected row whose key can be trusted: VEE places it (its interval is estimated, its value kept)."""
    return (
        ~nw.col("rejection_rule").is_null()
        & (nw.col("meter_id") != "")
        & ~nw.col("interval_start_utc").is_null()
        & ~nw.col("interval_minutes").is_null()
        & nw.col("direction").is_in(["import", "export"])
    ).fill_null(value=False)


def vee_batch_rows(validated: nw.LazyFrame[Any], accepted: nw.LazyFrame[Any]) -> nw.LazyFrame[Any]:
    """The batch's rows in the VEE input layout: accepted reads de-duplicated, and the rejected
    rows VEE can place."""
    schema = vee_input_schema()
    rejected = validated.filter(_placeable()).with_columns(quality_rank=quality_rank())
    return concat(
        [
            _vee_columns(deduplicated_readings(accepted), schema, reported=nw.col("energy_kwh")),
            _vee_columns(rejected, schema, reported=nw.col("energy_kwh"), energy=nw.lit(None, nw.Float64())),
        ]
    )


def parse_rows(raw: pa.Table, *, source: SourceConfig, header: list[str]) -> pa.Table:
    """Raw-read rows -> typed rows; runs per Arrow batch on either engine."""
    return parsed_readings(raw, source, header).cast(parsed_schema(header))


def bronze_columns(header: list[str]) -> list[str]:
    """File columns -> Delta-safe bronze column names that do not clash with lineage."""
    taken = set(BRONZE_LINEAGE.names)
    return [_bronze_name(c, taken) for c in header]


# -- bronze -----------------------------------------------------------------------------------


def bronze(batch: Batch, read: Read) -> int:
    """Every row as received, with lineage, appended to the source's bronze table; the rows written."""
    names = bronze_columns(read.header)
    frame = read.rows.select(
        *(nw.col(c).alias(n) for c, n in zip(read.header, names, strict=True)),
        nw.lit(batch.batch_id, nw.String()).alias("batch_id"),
        nw.lit(batch.source.name, nw.String()).alias("source"),
        "source_file",
        "line_number",
        nw.lit(batch.started, nw.Datetime("us", "UTC")).alias("ingested_at"),
    )
    return batch.store.append(
        bronze_spec(batch.source.name, names),
        frame,
        batch_id=batch.batch_id,
        sequence=batch.sequence,
        positions=batch.positions or None,
    )


# -- validate ---------------------------------------------------------------------------------


def validate(batch: Batch, read: Read) -> Validated:
    """Raw rows -> every row typed and judged by the row rules, and the accepted ones.

    Register reads are differenced per series in time order first, and a difference that
    spans several intervals is booked on each of them among the accepted rows.
    """
    store, source = batch.store, batch.source
    schema = parsed_schema(read.header)
    parsed = store.map_arrow(read.rows, partial(parse_rows, source=source, header=read.header), schema)
    params = RuleParams.for_source(source, now_utc=batch.started, watermark=batch.watermark)
    register = source.value_kind == "register"
    if register:
        schema = register_schema(schema)
        differencing = partial(difference_registers, params=register_params(source, params))
        parsed = store.map_groups(parsed, ["meter_id", "direction"], differencing, schema)
    # Only what VEE, quarantine and the counts read next is kept.
    validated = store.cache(validated_readings(parsed, params).drop(*_PARSE_ONLY))
    accepted = validated.filter(nw.col("rejection_rule").is_null())
    if register:
        spread = partial(spread_register_spans, series_timezone=source.series_timezone)
        accepted = store.cache(store.map_arrow(accepted, spread, _validated_schema(schema)))
    return Validated(rows=validated, accepted=accepted)


# -- VEE --------------------------------------------------------------------------------------


def judge(batch: Batch, read: Read, validated: Validated) -> Judged:
    """Series rules and estimation over the batch's readings with stored silver as context, and
    the rows per rule."""
    vee = batch.store.cache(_vee(batch, validated))
    return Judged(vee=vee, counts=rule_counts(batch.store, validated, vee, read.malformed))


def stop_on_fail(batch: Batch, judged: Judged) -> None:
    """A rule of severity `fail` that matched stops the batch, before any table is written."""
    failures = {r: n for r, n in judged.counts.rules.items() if n and batch.source.severity(r) == "fail"}
    if failures:
        raise ValidationFailedError(failures)


class Context(NamedTuple):
    """Where VEE's stored context starts as rows: from local day `day`; with `until`, from that
    instant of it, the reads of `day` before it given as the day's head (its three highest as
    rows, the others as their count and total). Earlier days come as summaries."""

    day: date
    until: datetime | None = None


#: The reads of a head given as rows: the most a spike's judgement of their day needs (its highest
#: and third highest).
_HEAD_ROWS = 3
#: Fewer stored reads in a head than this go to VEE as rows: cheaper than ranking and summarising
#: them (a daily batch's head is the day before less its last reads, a stream micro-batch's late in
#: a day the day's reads of every meter).
HEAD_MIN_ROWS = 100_000


def rows_from(
    store: TableStore, history: nw.LazyFrame[Any], lengths: list[int], start: datetime, near: date
) -> Context:
    """A later start of stored rows than `near` where that gives VEE the same result: the
    earliest, over the series, of a series' last stored non-zero read before the batch's `start`
    (its first interval). No gap or zero run that touches the batch reaches back past that
    read (it ends a gap and a run of zeros alike), so its day's reads before it count only
    towards the day's total, count and highest values (its head), the days before it only as
    the summaries high/low and the interval length's majority read, and like-day asks for them
    as rows when it needs them. `near` itself when the batch has more than one interval length,
    a stored row in those days has another (a read of another length is no point of a series'
    grid), or a series has stored rows there and no non-zero read.

    One instant for all series (not one per series) keeps the stored rows' bounds constants,
    which prune files; a micro-batch that touches every meter's newest day then takes the reads
    since the last micro-batch's per meter instead of the reach of a gap."""
    if len(lengths) != 1:
        return Context(near)
    length = lengths[0]
    read = ~nw.col("energy_kwh").is_null() & (nw.col("energy_kwh") != 0)
    per_series = (
        history.filter((nw.col("local_date") >= near) & (nw.col("interval_start_utc") < start))
        .with_columns(
            nw.when(read).then(nw.col("local_date")).otherwise(None).alias("read_day"),
            nw.when(read).then(nw.col("interval_start_utc")).otherwise(None).alias("read_at"),
        )
        .group_by("meter_id", "direction")
        .agg(
            nw.col("read_day").max(),
            nw.col("read_at").max(),
            nw.col("interval_minutes").min().alias("shortest"),
            nw.col("interval_minutes").max().alias("longest"),
        )
    )
    found = store.collect(
        per_series.select(
            # The same series' read: a later instant is never on an earlier local day.
            nw.col("read_day").min().alias("earliest"),
            nw.col("read_at").min().alias("until"),
            nw.col("read_day").is_null().cast(nw.Int64()).sum().alias("unread"),
            nw.col("shortest").min(),
            nw.col("longest").max(),
        )
    ).to_pylist()[0]
    if found["earliest"] is None or found["unread"] or (found["shortest"], found["longest"]) != (length, length):
        return Context(near)
    return Context(cast(date, found["earliest"]), cast(datetime, found["until"]))


def _vee(batch: Batch, validated: Validated) -> nw.LazyFrame[Any]:
    """VEE over the batch's rows with stored silver as context: the stored days within a gap's
    reach of the batch's (`rows_before`), and from the last non-zero reads before it
    (`rows_from`), as rows, the reads of that day before them as its head (`_context_parts`);
    older ones back to the look-back as summaries. A series whose like-day estimate needs those
    days as rows is judged again with them."""
    store, source = batch.store, batch.source
    schema = vee_input_schema()
    rows = vee_batch_rows(validated.rows, validated.accepted)
    # The batch's days and series, from the rows that make up `rows`: accepted or placeable.
    in_batch = validated.rows.filter(nw.col("rejection_rule").is_null() | _placeable())
    days = store.collect(
        in_batch.select(
            nw.col("local_date").min().alias("first"),
            nw.col("local_date").max().alias("last"),
            nw.col("interval_start_utc").min().alias("start"),
            nw.col("interval_start_utc").max().alias("newest"),
        )
    ).to_pylist()[0]
    params = vee_params(source, _vee_clock(batch, days["newest"]))
    judge_rows = partial(_apply_vee, params=params, schema=schema)

    def judged(*parts: nw.LazyFrame[Any]) -> nw.LazyFrame[Any]:
        return store.map_groups(concat(list(parts)), ["meter_id", "direction"], judge_rows, vee_schema(schema))

    if days["first"] is None or not store.exists(SILVER_READINGS.name):
        return judged(rows)
    look_back = max(source.validation.lookback_days, source.estimation.like_day_weeks * 7)
    reach = source.estimation.max_gap_days + 1
    stored = store.read(
        SILVER_READINGS,
        where=[
            ("local_date", ">=", days["first"] - timedelta(days=look_back + reach)),
            ("local_date", "<=", days["last"] + timedelta(days=reach)),
        ],
    )
    series = in_batch.select("meter_id", "direction").unique()
    # Estimates are not context (their intervals are gaps to fill again); register shares are reads.
    measured = nw.col("estimation_method").is_null() | (nw.col("estimation_method") == METHOD_REGISTER_SPREAD)
    history = stored.filter(measured).join(series, on=["meter_id", "direction"], how="semi")
    lengths = store.collect(in_batch.select("interval_minutes").unique()).column(0).to_pylist()
    as_rows = max((rows_before(params, int(m)) for m in lengths if m), default=reach + 1)
    context = rows_from(
        store, history, [int(m) for m in lengths if m], days["start"], days["first"] - timedelta(days=as_rows)
    )
    vee = store.cache(judged(rows, *_context_parts(store, history, context, schema)))
    again = vee.filter(nw.col("role") == ROLE_NEEDS_ROWS).select("meter_id", "direction").unique()
    if store.count_rows(again) == 0:
        return vee
    again = store.cache(again)
    keys = ["meter_id", "direction"]
    redone = judged(
        rows.join(again, on=keys, how="semi"), _history_columns(history.join(again, on=keys, how="semi"), schema)
    )
    return concat([vee.join(again, on=keys, how="anti"), redone])


def _context_parts(
    store: TableStore, history: nw.LazyFrame[Any], context: Context, schema: pa.Schema
) -> list[nw.LazyFrame[Any]]:
    """Stored rows as VEE's context from `context` on, the days before as summaries; a head of
    fewer than `HEAD_MIN_ROWS` reads as rows."""
    parts = [_summary_columns(history.filter(nw.col("local_date") < context.day), schema)]
    if context.until is None:
        return [_history_columns(history.filter(nw.col("local_date") >= context.day), schema), *parts]
    head = history.filter(
        (nw.col("local_date") == context.day)
        & (nw.col("interval_start_utc") < context.until)
        & ~nw.col("energy_kwh").is_null()
    )
    if store.count_rows(head) < HEAD_MIN_ROWS:
        return [_history_columns(history.filter(nw.col("local_date") >= context.day), schema), *parts]
    keys = list(SILVER_READINGS.keys)
    highest = store.cache(store.highest(head, ["meter_id", "direction"], "energy_kwh", _HEAD_ROWS))
    return [
        _history_columns(history.filter(nw.col("interval_start_utc") >= context.until), schema),
        _history_columns(highest, schema),
        _summary_columns(head.join(highest.select(*keys), on=keys, how="anti"), schema, until=context.until),
        *parts,
    ]


def _vee_clock(batch: Batch, newest: datetime | None) -> datetime:
    """The instant before which an interval must have ended to be judged a gap: the batch's start;
    for a stream's micro-batch, the start of the newest interval the stream has seen (its
    watermark's, or this micro-batch's), if earlier. Reads of one interval reach a stream over a
    while (each meter sends its own, on partitions read side by side), so the newest interval is
    still arriving: a read not yet there for it, or for any later interval, is not missing yet.
    Judged otherwise, each micro-batch would estimate the interval for the meters whose read had
    not come yet, only for the next micro-batch to replace the estimate with the read."""
    if not batch.stream:
        return batch.started
    seen = [t for t in (batch.watermark, newest) if t is not None]
    if not seen:
        return batch.started
    return min(batch.started, max(seen))


def rule_counts(
    store: TableStore, validated: Validated, vee: nw.LazyFrame[Any], malformed: nw.LazyFrame[Any]
) -> RuleCounts:
    """Rows per rule (rejected or flagged), duplicates, and intervals estimated per method."""
    counts: dict[str, int] = {}
    quarantined = 0
    row_rejections = store.collect(
        validated.rows.filter(~nw.col("rejection_rule").is_null())
        .group_by("rejection_rule")
        .agg(nw.len().alias("rows"))
    ).to_pylist()
    for r in row_rejections:
        counts[r["rejection_rule"]] = counts.get(r["rejection_rule"], 0) + int(r["rows"])
        quarantined += int(r["rows"])
    malformed_rows = store.count_rows(malformed)
    if malformed_rows:
        counts[MALFORMED_ROW] = malformed_rows
        quarantined += malformed_rows
    series_rejected = 0
    batch_rows = vee.filter(nw.col("role") == "batch")
    judged = store.collect(
        batch_rows.group_by("rejection_rule", "validation_flags").agg(nw.len().alias("rows"))
    ).to_pylist()
    for r in judged:
        rule, n = r["rejection_rule"], int(r["rows"])
        if rule in SERIES_RULES:
            counts[rule] = counts.get(rule, 0) + n
            quarantined += n
            series_rejected += n
        for flag in filter(None, (r["validation_flags"] or "").split(";")):
            if flag != rule:  # a `fail` series rule both flags and rejects its row
                counts[flag] = counts.get(flag, 0) + n
    accepted = store.count_rows(validated.rows.filter(nw.col("rejection_rule").is_null()))
    # Register spans booked on several intervals add rows: one per further interval.
    spread = store.count_rows(validated.accepted) - accepted
    kept = store.count_rows(batch_rows.filter(nw.col("rejection_rule").is_null()))
    duplicates = accepted + spread - kept - series_rejected
    if duplicates:
        counts[DUPLICATE_REPLACED] = duplicates
    by_role = store.collect(
        vee.filter(nw.col("role") != "batch").group_by("role", "estimation_method").agg(nw.len().alias("rows"))
    ).to_pylist()
    estimates = {r["estimation_method"]: int(r["rows"]) for r in by_role if r["role"] == "estimate"}
    missing = sum(int(r["rows"]) for r in by_role)
    if missing:
        counts[MISSING_INTERVALS] = missing
    return RuleCounts(
        rules=dict(sorted(counts.items())),
        quarantined=quarantined,
        duplicates=duplicates,
        estimates=estimates,
        spread=spread,
    )


# -- quarantine and silver --------------------------------------------------------------------


def quarantine(batch: Batch, read: Read, validated: Validated, judged: Judged, *, under: str) -> nw.LazyFrame[Any]:
    """The rows the batch rejects as quarantine rows recorded under batch `under`: those a row
    rule rejected, those a series rule rejected (with their raw columns from the validated rows),
    and the malformed lines."""
    store = batch.store
    lineage: dict[str, Any] = {"source": batch.source.name, "batch_id": under, "at": batch.started}
    series_keys = ["meter_id", "direction", "interval_start_utc", "row_order"]
    series_rejected = validated.rows.drop("rejection_rule").join(
        judged.vee.filter((nw.col("role") == "batch") & nw.col("rejection_rule").is_in(SERIES_RULES)).select(
            *series_keys, "rejection_rule"
        ),
        on=series_keys,
        how="inner",
    )
    rejected = partial(rejected_records, header=read.header, **lineage)
    return concat(
        [
            store.map_arrow(
                validated.rows.filter(~nw.col("rejection_rule").is_null()), rejected, QUARANTINE_READINGS.schema
            ),
            store.map_arrow(series_rejected, rejected, QUARANTINE_READINGS.schema),
            store.map_arrow(read.malformed, partial(malformed_records, **lineage), QUARANTINE_READINGS.schema),
        ]
    )


def silver(batch: Batch, judged: Judged) -> Silver:
    """The batch's silver rows: accepted reads and estimates, a projection of the cached VEE rows."""
    store = batch.store
    frame = silver_readings(judged.vee, SilverParams(batch.source.name, batch.batch_id, batch.source.series_timezone))
    estimated = sum(judged.counts.estimates.values())
    reads = store.count_rows(frame) - estimated
    bounds = (
        store.collect(
            frame.select(
                nw.col("local_date").min().alias("first_day"),
                nw.col("local_date").max().alias("last_day"),
                nw.col("interval_start_utc").min().alias("first"),
                nw.col("interval_start_utc").max().alias("last"),
            )
        ).to_pylist()[0]
        if reads + estimated
        else None
    )
    if estimated and bounds is not None:
        frame = _stored_reported(store, frame, (bounds["first_day"], bounds["last_day"]))
    return Silver(frame=frame, reads=reads, estimated=estimated, bounds=bounds)


def _stored_reported(store: TableStore, frame: nw.LazyFrame[Any], days: tuple[date, date]) -> nw.LazyFrame[Any]:
    """Estimates that carry no reported value, each with the stored estimate's of its interval if
    it has one: the value of a read an earlier batch rejected there. Estimating the gap again
    does not see that read (stored estimates are no context), and the meter's value is kept.
    `days`: the first and last local day of the frame's rows."""
    if not store.exists(SILVER_READINGS.name):
        return frame
    estimate = nw.col("estimation_method").fill_null("").is_in(list(ESTIMATION_METHODS))
    bare = estimate & nw.col("reported_kwh").is_null()
    keys = list(SILVER_READINGS.keys)
    stored = (
        store.read(SILVER_READINGS, where=[("local_date", ">=", days[0]), ("local_date", "<=", days[1])])
        .filter(estimate & ~nw.col("reported_kwh").is_null())
        .select(*keys, nw.col("reported_kwh").alias("stored_reported_kwh"))
    )
    names = frame.collect_schema().names()
    kept = (
        frame.filter(bare)
        .join(stored, on=keys, how="left")
        .with_columns(nw.col("stored_reported_kwh").alias("reported_kwh"))
        .select(*names)
    )
    # Cached: the merge, the counts and gold each read the rows.
    return store.cache(concat([frame.filter(~bare), kept]))


def reconcile(
    batch: Batch, rows_read: int, judged: Judged, silver: Silver, merged: UpsertCounts | None = None
) -> Reconciliation:
    """Every row read is in silver, in quarantine, or a replaced duplicate; with the merge's
    counts, silver's inserted, updated and unchanged rows add up to what the batch brought."""
    counts = judged.counts
    reconciliation = Reconciliation(
        rows_read=rows_read,
        rows_accepted=silver.reads,
        rows_quarantined=counts.quarantined,
        duplicates_replaced=counts.duplicates,
        rows_estimated=silver.estimated,
        rows_spread=counts.spread,
        **(
            {}
            if merged is None
            else {
                "silver_inserted": merged.inserted,
                "silver_updated": merged.updated,
                "silver_unchanged": merged.unchanged,
            }
        ),
    )
    if rows_read + counts.spread != silver.reads + counts.quarantined + counts.duplicates:
        raise ReconciliationError(f"batch {batch.batch_id}: {reconciliation}")
    if merged is not None and not reconciliation.balanced:
        raise ReconciliationError(f"batch {batch.batch_id}: rows do not reconcile: {reconciliation}")
    return reconciliation


def merge_silver(batch: Batch, silver: Silver, *, replace_equal_rank: bool) -> UpsertCounts:
    """Upsert the batch's silver rows by key and quality rank. With `replace_equal_rank` off, a
    row fills what is missing or estimated and never overwrites a read of equal rank."""
    return batch.store.upsert(
        SILVER_READINGS,
        silver.frame,
        compare=SILVER_COMPARED,
        batch_id=batch.batch_id,
        local_days=silver.merge_days,
        rank="quality_rank",
        sequence=batch.sequence,
        replace_equal_rank=replace_equal_rank,
    )


# -- gold -------------------------------------------------------------------------------------


def gold(batch: Batch, silver: Silver) -> tuple[int, int]:
    """Recompute only the meter-days and hours the batch touched; (silver rows read, gold rows written)."""
    bounds = silver.bounds
    if bounds is None:
        return 0, 0
    store = batch.store
    days = (bounds["first_day"], bounds["last_day"])
    touched_keys = silver.frame.select("meter_id", "local_date").unique()
    in_days = store.read(SILVER_READINGS, where=[("local_date", ">=", days[0]), ("local_date", "<=", days[1])])
    touched = store.cache(
        in_days.join(touched_keys, on=["meter_id", "local_date"], how="semi").select(*_GOLD_DAILY_INPUT)
    )
    zones = store.collect(touched.select("local_date", "timezone").unique()).to_pylist()
    calendar = local_day_minutes((z["local_date"], z["timezone"]) for z in zones)
    daily = gold_daily_meter_energy(touched, store.frame(calendar))
    daily_counts = _upsert(batch, GOLD_DAILY_METER_ENERGY, daily, local_days=days)

    first = bounds["first"].replace(minute=0, second=0, microsecond=0)
    last = bounds["last"] + timedelta(hours=1)
    hours = store.read(
        SILVER_READINGS,
        where=[
            ("interval_start_utc", ">=", first),
            ("interval_start_utc", "<", last),
            # An hour's rows lie within a day of the batch's local days, whatever their zone.
            ("local_date", ">=", days[0] - timedelta(days=1)),
            ("local_date", "<=", days[1] + timedelta(days=1)),
        ],
    )
    hourly_counts = _upsert(batch, GOLD_HOURLY_PORTFOLIO_LOAD, gold_hourly_portfolio_load(hours))
    return store.count_rows(touched), daily_counts + hourly_counts


def _upsert(
    batch: Batch, spec: TableSpec, frame: nw.LazyFrame[Any], local_days: tuple[date, date] | None = None
) -> int:
    counts = batch.store.upsert(
        spec,
        frame,
        compare=spec.value_columns,
        batch_id=batch.batch_id,
        local_days=local_days,
        sequence=batch.sequence,
    )
    return counts.inserted + counts.updated + counts.unchanged


# -- invariants -------------------------------------------------------------------------------


def check_invariants(batch: Batch, validated: Validated, judged: Judged, silver: Silver) -> None:
    """What must hold after a batch's writes, over the local days it touched (so the cost follows
    the batch, not the lake): one silver row per key; every gold day complete at most once,
    with no more intervals than its grid has; and for registers, the energy booked equal to the
    differences of the chain of reads. A breach fails the batch, which rolls it back."""
    days_around = silver.merge_days
    if days_around is None:
        return
    store = batch.store
    days = [("local_date", ">=", days_around[0]), ("local_date", "<=", days_around[1])]
    problems: list[str] = []
    keys = list(SILVER_READINGS.keys)
    repeated = store.collect(
        store.read(SILVER_READINGS, where=days)
        .group_by(*keys)
        .agg(nw.len().alias("rows"))
        .filter(nw.col("rows") > 1)
        .select(nw.len().alias("keys"), nw.col("meter_id").min().alias("meter_id"))
    ).to_pylist()[0]
    if repeated["keys"]:
        problems.append(f"{repeated['keys']:,} silver key(s) stored twice (e.g. meter {repeated['meter_id']})")
    over = store.collect(
        store.read(GOLD_DAILY_METER_ENERGY, where=days)
        .filter(
            (nw.col("completeness") > 1 + _TOLERANCE) | (nw.col("interval_count") > nw.col("expected_interval_count"))
        )
        .select(
            nw.len().alias("days"),
            nw.col("meter_id").min().alias("meter_id"),
            nw.col("completeness").max().alias("completeness"),
        )
    ).to_pylist()[0]
    if over["days"]:
        problems.append(
            f"{over['days']:,} gold day(s) with completeness above 1 or more intervals than the day has "
            f"(e.g. meter {over['meter_id']}, completeness up to {over['completeness']})"
        )
    if batch.source.value_kind == "register":
        problems += _register_energy(store, validated.rows, judged.vee)
    if problems:
        raise InvariantError("the batch's tables would be wrong, so nothing is kept: " + "; ".join(problems))


def _register_energy(store: TableStore, reads: nw.LazyFrame[Any], vee: nw.LazyFrame[Any]) -> list[str]:
    """Per series, the energy a register batch booked against the differences of its chain of reads."""
    series = ["meter_id", "direction"]
    derived = (
        reads.filter(nw.col("register_chain") & nw.col("rejection_rule").is_null())
        .group_by(*series)
        .agg(nw.col("energy_kwh").sum().alias("derived_kwh"))
    )
    booked = (
        vee.filter(
            (nw.col("role") == "batch")
            & (nw.col("rejection_rule").is_null() | nw.col("rejection_rule").is_in(SERIES_RULES))
        )
        .with_columns(
            kwh=nw.when(nw.col("rejection_rule").is_null())
            .then(nw.col("energy_kwh"))
            .otherwise(nw.col("reported_kwh"))
            .fill_null(0.0)
        )
        .group_by(*series)
        .agg(nw.col("kwh").sum().alias("booked_kwh"))
    )
    compared = store.collect(derived.join(booked, on=series, how="left")).to_pylist()
    wrong = [
        r
        for r in compared
        if abs((r["booked_kwh"] or 0.0) - r["derived_kwh"]) > _TOLERANCE * max(1.0, abs(r["derived_kwh"]))
    ]
    return [
        f"meter {r['meter_id']} ({r['direction']}): {r['booked_kwh'] or 0.0:.6f} kWh booked but its register reads "
        f"differ by {r['derived_kwh']:.6f} kWh"
        for r in wrong[:3]
    ]
