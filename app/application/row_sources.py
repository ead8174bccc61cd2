"""Where a batch's rows come from. The stages are the same for each: a `RowSource` reads the
rows, says whether they land in bronze, and keeps the quarantine the batch makes of them."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

import narwhals as nw
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from app.application import stages
from app.application.ports import FileReader, Message
from app.application.stages import Batch, Read
from app.domain.batches import InputFile, batch_checksum, replay_checksum
from app.domain.errors import InputFileError
from app.domain.schemas import KIND_ERROR, KIND_MALFORMED, KIND_ROW, QUARANTINE_READINGS, read_schema


class RowSource(Protocol):
    """Rows into the stages, and what the batch records of where they came from."""

    @property
    def kind(self) -> str:
        """The batch's kind in the metadata store: ingest, replay, stream."""
        ...

    @property
    def replay_of(self) -> str | None:
        """The batch whose quarantine this one replays, if any."""
        ...

    @property
    def replace_equal_rank(self) -> bool:
        """Whether a row replaces a silver row of equal quality rank (the later read wins)."""
        ...

    @property
    def files(self) -> list[InputFile]:
        """The files read, with their row counts once read."""
        ...

    @property
    def checksum(self) -> str:
        """One checksum of the batch's input, for the metadata store."""
        ...

    @property
    def recorded_positions(self) -> dict[str, int]:
        """Source positions the batch's bronze commit records (application id -> offset); {} for files."""
        ...

    def describe(self) -> str:
        """What is being read, for progress output."""
        ...

    def read(self, batch: Batch) -> Read:
        """The rows; a file-level error fails the batch here, before any write."""
        ...

    def land(self, batch: Batch, read: Read) -> int | None:
        """Land the rows in bronze and return how many; None if they are in bronze already."""
        ...

    def quarantine_under(self, batch: Batch) -> str:
        """The batch the rows rejected now are recorded under."""
        ...

    def keep_quarantine(self, batch: Batch, rows: nw.LazyFrame[Any]) -> int:
        """Store the batch's quarantine rows; return how many of them were written."""
        ...


def append_quarantine(batch: Batch, rows: nw.LazyFrame[Any]) -> int:
    """Append the batch's quarantine rows under the batch itself."""
    return batch.store.append(QUARANTINE_READINGS, rows, batch_id=batch.batch_id, sequence=batch.sequence)


@dataclass
class FileRows:
    """A batch of files, read on the engine."""

    reader: FileReader
    files: list[InputFile]
    kind: str = "ingest"
    replay_of: str | None = None
    replace_equal_rank: bool = True

    @property
    def checksum(self) -> str:
        return batch_checksum(f.sha256 for f in self.files)

    @property
    def recorded_positions(self) -> dict[str, int]:
        return {}

    def describe(self) -> str:
        return f"reading {len(self.files)} file(s)"

    def read(self, batch: Batch) -> Read:
        store, source = batch.store, batch.source
        paths = [f.path for f in self.files]
        # Headers first, from each file's first bytes, so both engines agree on the columns.
        headers = [self.reader.read_header(p, self.reader.read_head(Path(p)), source) for p in paths]
        header = list(dict.fromkeys(c for h in headers for c in h))
        raw = store.cache(store.read_files(paths, source, header))
        per_file = store.collect(
            raw.group_by("file_index", "kind").agg(nw.len().alias("rows"), nw.col("line_number").min().alias("line"))
        ).to_pylist()
        errors = sorted((r["file_index"], r["line"]) for r in per_file if r["kind"] == KIND_ERROR)
        if errors:
            index = errors[0][0]
            detail = store.collect(
                raw.filter((nw.col("kind") == KIND_ERROR) & (nw.col("file_index") == index)).select("detail")
            )["detail"][0].as_py()
            raise InputFileError(paths[index], detail, line=errors[0][1])
        counts = [0] * len(paths)
        for r in per_file:
            counts[r["file_index"]] += r["rows"]
        self.files = [
            InputFile(path=f.path, sha256=f.sha256, size_bytes=f.size_bytes, record_count=n)
            for f, n in zip(self.files, counts, strict=True)
        ]
        return Read.of(raw, header, sum(counts))

    def land(self, batch: Batch, read: Read) -> int | None:
        return stages.bronze(batch, read)

    def quarantine_under(self, batch: Batch) -> str:
        return batch.batch_id

    def keep_quarantine(self, batch: Batch, rows: nw.LazyFrame[Any]) -> int:
        return append_quarantine(batch, rows)


@dataclass
class QuarantineRows:
    """The quarantine rows of batch `replay_of`, re-read as the rows they were. Rows that now pass
    reach silver and gold; the rest stay in quarantine under the original batch, with `kept`
    (its malformed lines, which no rule can change)."""

    replay_of: str
    #: The quarantine rows to replay, in file order (of two reads of one interval, the later line wins).
    rows: pa.Table
    kept: pa.Table
    kind: str = "replay"
    files: list[InputFile] = field(default_factory=list)
    # A replayed read fills what its batch could not (an estimate, a gap), and never
    # overwrites a read a later batch delivered.
    replace_equal_rank: bool = False

    @property
    def checksum(self) -> str:
        return replay_checksum(self.replay_of, self.rows.num_rows)

    @property
    def recorded_positions(self) -> dict[str, int]:
        return {}

    def describe(self) -> str:
        return f"replaying the quarantine of batch {self.replay_of}"

    def read(self, batch: Batch) -> Read:
        """Quarantine rows as raw-read rows under the header their records were keyed by."""
        rows = self.rows
        records = [json.loads(text) for text in rows["raw_record"].to_pylist()]
        header = list(dict.fromkeys(column for record in records for column in record))
        n = rows.num_rows
        columns: dict[str, Any] = {c: pa.array([r.get(c) for r in records], pa.string()) for c in header}
        columns.update(
            file_index=pa.repeat(pa.scalar(0, pa.int32()), n),
            source_file=rows["source_file"],
            line_number=rows["line_number"],
            row_order=pa.array(range(n), pa.int64()),
            kind=pa.repeat(KIND_ROW, n).cast(pa.string()),
            detail=pa.nulls(n, pa.string()),
            occurrence=pa.repeat(pa.scalar(0, pa.int32()), n),
        )
        return Read.of(batch.store.frame(pa.table(columns).cast(read_schema(header))), header, n)

    def land(self, batch: Batch, read: Read) -> int | None:
        return None  # the rows are in bronze since the original batch

    def quarantine_under(self, batch: Batch) -> str:
        return self.replay_of

    def keep_quarantine(self, batch: Batch, rows: nw.LazyFrame[Any]) -> int:
        """Replace the original batch's quarantine with what still fails, and the kept rows."""
        kept = batch.store.frame(self.kept.cast(QUARANTINE_READINGS.schema))
        written = batch.store.replace(
            QUARANTINE_READINGS,
            stages.concat([rows, kept]),
            batch_of=self.replay_of,
            batch_id=batch.batch_id,
            sequence=batch.sequence,
        )
        return written - self.kept.num_rows


def _field_text(value: Any) -> str | None:
    """A JSON field as the text a file would hold: numbers as written, null as missing."""
    kind = type(value)
    if kind is str:
        return value
    if kind is float and math.isfinite(value):
        return repr(value)  # what json.dumps writes, without its dispatch
    if kind is int:
        return str(value)
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False)


_NONE = type(None)


def _column_text(values: list[Any]) -> pa.Array:
    """One field of every message as text (`_field_text` of each). A field of one JSON type is
    converted in one pass: texts as they are, numbers by repr and str as `_field_text` does."""
    kinds = set(map(type, values))
    if kinds <= {str, _NONE}:
        return pa.array(values, pa.string())
    if kinds == {int} or (kinds == {float} and all(map(math.isfinite, values))):
        return pa.array(list(map(repr, values)), pa.string())  # repr is str for an int
    return pa.array(list(map(_field_text, values)), pa.string())


#: Digits all read as 0, so that a run of digits is a run of zeros: `bytes.translate` and `in`
#: find one several times faster than a regular expression.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
#: A run of digits orjson may read as a float (an integer past 64 bits, e.g. a long meter id).
_LONG_DIGITS = b"0" * 19
#: The fields of a message whose value is not a JSON object: none.
_NO_FIELDS: dict[str, Any] = {}


def _has_long_digits(raw: bytes) -> bool:
    return _LONG_DIGITS in raw.translate(_DIGITS_AS_ZERO)


def _json_value(raw: bytes) -> Any:
    """A message value parsed as JSON, None if it is not JSON. orjson, unless Python's json reads
    it otherwise: a long integer stays exact (orjson turns one past 64 bits into a float), and
    what orjson refuses (NaN, bytes that are not UTF-8, replaced) is read as json reads it."""
    if not _has_long_digits(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return None


def _json_objects(values: list[bytes]) -> list[dict[str, Any] | None]:
    """Each message value as a JSON object, None where it is not one: what `_json_value` reads,
    the fast way when it can. No value holds a long run of digits (one look over them all) and
    orjson takes every one: then that is what `_json_value` would read too."""
    parsed: list[Any] | None = None
    if not _has_long_digits(b"\n".join(values)):
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = list(map(orjson.loads, values))
    if parsed is None:
        parsed = [_json_value(v) for v in values]
    return [p if type(p) is dict else None for p in parsed]


@dataclass
class MessageRows:
    """A stream's micro-batch of messages, each value one reading as a JSON object whose fields
    the source's `columns` name (as a file's header would). A message without the meter field
    takes its key as the meter id. A value that is not a JSON object is a malformed row,
    quarantined with its text. Lineage: `source_file` is `kafka:<topic>/<partition>` and
    `line_number` the offset."""

    topic: str
    messages: list[Message]
    #: Prefix of the application ids its positions are recorded under: `<stream id>:<partition>`.
    stream_id: str = ""
    #: The field a message's key fills when its value has none (the source's meter column).
    key_field: str | None = "meter_id"
    kind: str = "stream"
    replay_of: str | None = None
    replace_equal_rank: bool = True
    files: list[InputFile] = field(default_factory=list)

    @cached_property
    def _spans(self) -> dict[int, tuple[int, int]]:
        """The first and last offset per partition this micro-batch holds."""
        offsets = pa.table(
            {"partition": [m.partition for m in self.messages], "offset": [m.offset for m in self.messages]},
            schema=pa.schema([("partition", pa.int64()), ("offset", pa.int64())]),
        )
        spans = offsets.group_by("partition").aggregate([("offset", "min"), ("offset", "max")]).to_pydict()
        return {
            p: (first, last)
            for p, first, last in zip(spans["partition"], spans["offset_min"], spans["offset_max"], strict=True)
        }

    @property
    def checksum(self) -> str:
        return batch_checksum(f"{self.topic}/{p}:{first}-{last}" for p, (first, last) in sorted(self._spans.items()))

    @property
    def positions(self) -> dict[int, int]:
        """The last offset per partition this micro-batch holds."""
        return {p: last for p, (_, last) in self._spans.items()}

    @property
    def recorded_positions(self) -> dict[str, int]:
        return {f"{self.stream_id}:{p}": offset for p, offset in self.positions.items()} if self.stream_id else {}

    def describe(self) -> str:
        return f"{len(self.messages):,} message(s) of topic {self.topic}"

    def read(self, batch: Batch) -> Read:
        messages = self.messages
        n = len(messages)
        values = [m.value or b"" for m in messages]
        objects = _json_objects(values)
        malformed = [
            None if o is not None else v.decode("utf-8", errors="replace") for o, v in zip(objects, values, strict=True)
        ]
        records = [o if o is not None else _NO_FIELDS for o in objects]
        # Fields in the order they first appear: one key tuple per shape of object, usually one.
        shapes = dict.fromkeys(map(tuple, records))
        header = list(dict.fromkeys(chain.from_iterable(shapes)))
        if len(shapes) == 1:  # every object has every field: taken without a lookup that may miss
            columns: dict[str, Any] = {c: _column_text(list(map(itemgetter(c), records))) for c in header}
        else:
            columns = {c: _column_text([r.get(c) for r in records]) for c in header}
        if self.key_field:
            keyed = columns.get(self.key_field)
            if keyed is None or keyed.null_count:
                keys = pa.array(
                    [
                        None if m.key is None or o is None else m.key.decode("utf-8", errors="replace")
                        for m, o in zip(messages, objects, strict=True)
                    ],
                    pa.string(),
                )
                if keyed is not None:
                    columns[self.key_field] = pc.coalesce(keyed, keys)
                elif keys.null_count < n:  # no value has the field, some keys do
                    columns[self.key_field] = keys
                    header.append(self.key_field)
        partitions = pa.array([m.partition for m in messages], pa.int32())
        columns.update(
            file_index=pa.repeat(pa.scalar(0, pa.int32()), n),
            source_file=pc.binary_join_element_wise(f"kafka:{self.topic}/", partitions.cast(pa.string()), ""),
            line_number=pa.array([m.offset for m in messages], pa.int64()),
            row_order=pa.array(range(n), pa.int64()),
            kind=pa.array([KIND_ROW if o is not None else KIND_MALFORMED for o in objects], pa.string()),
            detail=pa.array(malformed, pa.string()),
            occurrence=pa.repeat(pa.scalar(0, pa.int32()), n),
        )
        return Read.of(batch.store.frame(pa.table(columns).cast(read_schema(header))), header, n)

    def land(self, batch: Batch, read: Read) -> int | None:
        return stages.bronze(batch, read)

    def quarantine_under(self, batch: Batch) -> str:
        return batch.batch_id

    def keep_quarantine(self, batch: Batch, rows: nw.LazyFrame[Any]) -> int:
        return append_quarantine(batch, rows)
