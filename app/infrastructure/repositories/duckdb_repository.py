"""Local table storage on DuckDB: the same Delta tables as `PandasDeltaStore`, frames as DuckDB relations.

DuckDB runs the narwhals transformations on all cores and spills to disk past its memory
limit; the Arrow functions (parsing, VEE, quarantine records) stream over record batches, and
their output goes to Parquet files in a work folder that DuckDB then scans. So a batch's
memory is bounded by the limit and the batch size, not by the number of rows.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import narwhals as nw
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable, WriterProperties

from app.application.ports import ArrowBatchFunction, RowFilter
from app.domain.errors import InputFileError, TableStoreError
from app.domain.schemas import NARWHALS_TYPES, TableSpec
from app.domain.sources import SourceConfig
from app.infrastructure.readers import raw_read_table, read_schema
from app.infrastructure.repositories.base import (
    COMPARISONS,
    sql_identifier,
    with_partition_bounds,
)
from app.infrastructure.repositories.pandas_repository import PandasDeltaStore

#: Parquet row groups of Delta writes: the writer holds one open group per partition in memory.
_WRITER = WriterProperties(max_row_group_size=65_536)
#: Data file size of Delta writes: the writer holds a file in memory until it is complete.
_FILE_BYTES = 32 * 1024 * 1024


#: The column that orders rows by group in `map_groups`.
_GROUP_HASH = "_group_hash"
#: Rows per Arrow batch handed to a mapped function.
BATCH_ROWS = 250_000
#: Rows of whole groups handed to one call of a grouped function (more when one hash part is larger).
GROUP_ROWS = 200_000


class DuckDBDeltaStore(PandasDeltaStore):
    """Tables under `root/<layer>/<table>`; frames are DuckDB relations, every write one Delta commit."""

    engine = "duckdb"

    def __init__(self, root: Path, *, memory_limit: str = "256MB") -> None:
        super().__init__(root)
        self._memory_limit = memory_limit
        self._con: duckdb.DuckDBPyConnection | None = None
        self._work: Path | None = None
        self._names = itertools.count()
        self._stored: set[int] = set()
        self._relations: list[duckdb.DuckDBPyRelation] = []  # keeps the ids in `_stored` unique

    # Session ----------------------------------------------------------------------------

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The batch's DuckDB database, opened on first use and dropped by `release`."""
        if self._con is None:
            self._work = Path(tempfile.mkdtemp(prefix="energy-platform-"))
            config: dict[str, Any] = {
                "memory_limit": self._memory_limit,
                "temp_directory": str(self._work / "spill"),
                # Row order carries no meaning here (read order is a column), and keeping it
                # halves the speed of materialising a result.
                "preserve_insertion_order": False,
            }
            self._con = duckdb.connect(":memory:", config=config)
            self._con.execute("SET TimeZone = 'UTC'")
        return self._con

    def _name(self) -> str:
        """A name for a table, view or work file of this session: `t<n>`, never outside text."""
        return f"t{next(self._names)}"

    def release(self) -> None:
        self._stored.clear()
        self._relations.clear()
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    # Frames -----------------------------------------------------------------------------

    def frame(self, data: pa.Table) -> nw.LazyFrame[Any]:
        name = self._name()
        self.con.from_arrow(data).to_table(name)
        return self._keep(self.con.table(name))

    def to_arrow(self, frame: nw.LazyFrame[Any]) -> pa.Table:
        return frame.to_native().to_arrow_table()

    def collect(self, frame: nw.LazyFrame[Any]) -> pa.Table:
        return self.to_arrow(frame)

    def count_rows(self, frame: nw.LazyFrame[Any]) -> int:
        return int(frame.to_native().aggregate("count(*)").fetchall()[0][0])

    def cache(self, frame: nw.LazyFrame[Any]) -> nw.LazyFrame[Any]:
        if id(frame.to_native()) in self._stored:  # a table or a spooled file already
            return frame
        name = self._name()
        frame.to_native().to_table(name)
        return self._keep(self.con.table(name))

    def _keep(self, relation: duckdb.DuckDBPyRelation) -> nw.LazyFrame[Any]:
        """A frame over stored rows (a table or a spooled file), which `cache` need not copy."""
        self._stored.add(id(relation))
        self._relations.append(relation)
        return nw.from_native(relation)

    def _batches(self, frame: nw.LazyFrame[Any], rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        yield from frame.to_native().to_arrow_reader(rows)

    def _spooled(self, batches: Iterator[pa.Table], schema: pa.Schema) -> nw.LazyFrame[Any]:
        """Tables of `schema` -> one Parquet file in the work folder, scanned as a frame."""
        assert self._work is not None
        path = self._work / f"{self._name()}.parquet"
        # Each table is written on a second thread while the next one is computed.
        with (
            pq.ParquetWriter(path, schema, compression="lz4", use_dictionary=False) as writer,
            ThreadPoolExecutor(max_workers=1) as pool,
        ):
            pending: Future[None] | None = None
            for table in batches:
                typed = table.select(schema.names).cast(schema)
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.write_table, typed)
            if pending is not None:
                pending.result()
        return self._keep(self.con.read_parquet(str(path)))

    # Files ------------------------------------------------------------------------------

    def read_files(self, paths: list[str], source: SourceConfig, header: list[str]) -> nw.LazyFrame[Any]:
        def tables() -> Iterator[pa.Table]:
            for index, path in enumerate(paths):
                try:
                    data = Path(path).read_bytes()
                except OSError as error:
                    raise InputFileError(path, f"cannot be read: {error.strerror}") from None
                yield raw_read_table(index, path, data, source, header)

        self.con  # noqa: B018 - opens the work folder
        return self._spooled(tables(), read_schema(header))

    def map_arrow(self, frame: nw.LazyFrame[Any], function: ArrowBatchFunction, schema: pa.Schema) -> nw.LazyFrame[Any]:
        def tables() -> Iterator[pa.Table]:
            for batch in self._batches(frame):
                yield function(pa.Table.from_batches([batch]))

        return self._spooled(tables(), schema)

    def highest(self, frame: nw.LazyFrame[Any], keys: Sequence[str], column: str, n: int) -> nw.LazyFrame[Any]:
        # A plain row_number in QUALIFY, which DuckDB runs as a top-n per group (a rank that keeps
        # nulls apart, as narwhals writes it, takes several times longer).
        partition = ", ".join(sql_identifier(k) for k in keys)
        query = (
            f"SELECT * FROM rows WHERE {sql_identifier(column)} IS NOT NULL QUALIFY row_number() OVER "
            f"(PARTITION BY {partition} ORDER BY {sql_identifier(column)} DESC) <= {int(n)}"
        )
        return nw.from_native(frame.to_native().query("rows", query))

    def map_groups(
        self, frame: nw.LazyFrame[Any], keys: Sequence[str], function: ArrowBatchFunction, schema: pa.Schema
    ) -> nw.LazyFrame[Any]:
        """The rows streamed in order of a hash of `keys` (an integer sort, which DuckDB spills
        past its memory limit), cut into calls of about GROUP_ROWS rows where the hash changes,
        so `function` sees every group whole."""
        # Materialised first: sorting the query itself (de-duplication's joins and windows,
        # stored silver scanned for history) ran out of DuckDB's memory where a table sorts.
        native = self.cache(frame).to_native()
        # Built with DuckDB's expression API: column names are values, never SQL text.
        group_hash = duckdb.FunctionExpression("hash", *(duckdb.ColumnExpression(k) for k in keys))
        ordered = native.select(duckdb.StarExpression(), group_hash.alias(_GROUP_HASH)).sort(
            duckdb.ColumnExpression(_GROUP_HASH)
        )

        def groups() -> Iterator[pa.Table]:
            pending: list[pa.Table] = []
            size = 0
            for batch in ordered.to_arrow_reader(BATCH_ROWS):
                pending.append(pa.Table.from_batches([batch]))
                size += batch.num_rows
                if size < GROUP_ROWS:
                    continue
                rows = pa.concat_tables(pending)
                hashes = rows[_GROUP_HASH]
                cut = pc.index(hashes, hashes[-1]).as_py()  # the last group may go on in the next batch
                if cut == 0:
                    continue
                yield rows.slice(0, cut).drop_columns([_GROUP_HASH])
                pending, size = [rows.slice(cut)], rows.num_rows - cut
            if size:
                yield pa.concat_tables(pending).drop_columns([_GROUP_HASH])

        def tables() -> Iterator[pa.Table]:
            # The next rows are fetched on a second thread while `function` runs on this one.
            with ThreadPoolExecutor(max_workers=1) as pool:
                source = groups()
                ahead = pool.submit(next, source, None)
                while (rows := ahead.result()) is not None:
                    ahead = pool.submit(next, source, None)
                    yield function(rows)

        self.con  # noqa: B018 - opens the work folder
        return self._spooled(tables(), schema)

    # Tables -----------------------------------------------------------------------------

    def read(self, spec: TableSpec, *, where: RowFilter | None = None) -> nw.LazyFrame[Any]:
        """The table's current version as a lazy scan of its data files. Files whose partition
        or column statistics rule out `where` are not listed; DuckDB reads only the columns and
        row groups a query needs."""
        if not self.exists(spec.name):
            return self.frame(spec.schema.empty_table())
        conditions = with_partition_bounds(spec, where)
        for column, _, _ in conditions:
            if column not in spec.schema.names:
                raise ValueError(f"{spec.name} has no column {column!r}")
        table = self._table(spec.name)
        if _plain_parquet(table):
            pruning = [(c, op, list(v) if op == "in" else v) for c, op, v in conditions]
            files = table.file_uris(file_pruning_predicate=pruning or None)
            if not files:
                return self.frame(spec.schema.empty_table())
            relation = self.con.read_parquet(files, hive_partitioning=True, union_by_name=True)
        else:  # deletion vectors or column mapping: Delta's own reader
            name = self._name()
            self.con.register(name, table.to_pyarrow_dataset())
            relation = self.con.view(name)
        frame = nw.from_native(relation)
        for column, op, value in conditions:
            term = nw.col(column).is_in(list(value)) if op == "in" else COMPARISONS[op](nw.col(column), value)
            frame = frame.filter(term)
        names = frame.collect_schema().names()
        return frame.select(
            (nw.col(n) if n in names else nw.lit(None)).cast(NARWHALS_TYPES[spec.schema.field(n).type]).alias(n)
            for n in spec.schema.names
        )

    _write_options: ClassVar[dict[str, Any]] = {"writer_properties": _WRITER, "target_file_size": _FILE_BYTES}
    _merge_options: ClassVar[dict[str, Any]] = {"writer_properties": _WRITER}

    def _source(self, spec: TableSpec, frame: nw.LazyFrame[Any]) -> tuple[Any, Callable[[], int]]:
        """The frame as a stream of batches; rows are counted as the writer reads them."""
        counter = [0]
        return self._stream(spec, frame, counter), lambda: counter[0]

    def _stream(self, spec: TableSpec, frame: nw.LazyFrame[Any], counter: list[int]) -> pa.RecordBatchReader:
        """The frame's rows as `spec` declares them (in `spec.cluster_by` order), counted into
        `counter` as they pass."""
        native = frame.to_native()
        missing = [n for n in spec.schema.names if n not in native.columns]
        if missing:
            raise TableStoreError(f"{spec.name}: frame lacks column(s) {', '.join(missing)}")

        ordered = frame.select(*spec.schema.names)
        if spec.cluster_by:
            ordered = ordered.sort(*spec.cluster_by)

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in self._batches(ordered):
                counter[0] += batch.num_rows
                yield from pa.Table.from_batches([batch]).cast(spec.schema).to_batches()

        return pa.RecordBatchReader.from_batches(spec.schema, batches())


def _plain_parquet(table: DeltaTable) -> bool:
    """Whether the table's rows are exactly its data files' rows, as a Parquet reader sees them:
    no deletion vectors and no column mapping."""
    features = set(table.protocol().reader_features or ())
    mapped = table.metadata().configuration.get("delta.columnMapping.mode", "none") != "none"
    return not mapped and not features & {"deletionVectors", "columnMapping"}
