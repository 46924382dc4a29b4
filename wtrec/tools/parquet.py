"""Events as Arrow columns, and Parquet files of them: the one module that imports pyarrow.

One row per event; the fd's identity is split into columns (kind, local and
remote address and port, path) so a query engine can group by them, and the
payload stays binary. docs/PARQUET.md is the schema's specification; keep the
two in step. pyarrow is an optional extra (`pip install 'wtrec[parquet]'`):
without it every entry point raises MissingExtraError naming the extra.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from wtrec.errors import MissingExtraError
from wtrec.records import FdIdentity, Header
from wtrec.tools.render import header_dict

if TYPE_CHECKING:
    import pandas
    import pyarrow

    from wtrec.api import Event

# A row group is what a query engine reads (and parallelises) as one piece,
# and what the writer holds in memory before writing it. 122,880 rows is
# DuckDB's own row-group size; the byte cap keeps a group of big payloads
# (snaplen up to 64 KiB and more) to tens of MiB, not gigabytes.
ROW_GROUP_ROWS = 122_880
ROW_GROUP_BYTES = 64 << 20
BATCH_ROWS = 8_192  # events held as Python objects at once while building columns

SCHEMA_VERSION = "2"  # 2: layer, tls_library (record --tls)
METADATA_KEY = b"wtrec.header"  # the capture's header as JSON (for a series, the first's)

_COLUMNS = (
    # name, arrow type factory, nullable
    ("time_ns", "int64", False),
    ("time", "timestamp", False),
    ("boot_ns", "int64", False),
    ("seq", "int64", True),
    ("pid", "int32", False),
    ("tid", "int32", False),
    ("uid", "int64", False),
    ("comm", "string", False),
    ("fd", "int32", False),
    ("syscall", "string", False),
    ("direction", "string", False),
    ("layer", "string", False),
    ("tls_library", "string", True),
    ("count", "int64", False),
    ("ret", "int64", True),
    ("truncated", "bool", False),
    ("fd_kind", "string", True),
    ("local_addr", "string", True),
    ("local_port", "int32", True),
    ("remote_addr", "string", True),
    ("remote_port", "int32", True),
    ("fd_path", "string", True),
    ("host", "string", False),
    ("capture_start", "timestamp", False),
    ("data", "binary", False),
)
COLUMN_NAMES = tuple(name for name, _, _ in _COLUMNS)


def _pyarrow() -> Any:
    try:
        return importlib.import_module("pyarrow")
    except ImportError:
        raise MissingExtraError("pyarrow", "parquet") from None


def schema() -> pyarrow.Schema:
    """The Arrow schema of an events table (docs/PARQUET.md)."""
    pa = _pyarrow()
    types = {"int64": pa.int64(), "int32": pa.int32(), "string": pa.string(),
             "bool": pa.bool_(), "binary": pa.binary(),
             "timestamp": pa.timestamp("ns", tz="UTC")}
    return pa.schema([pa.field(name, types[kind], nullable=nullable)
                      for name, kind, nullable in _COLUMNS])


def split_address(text: str | None) -> tuple[str | None, int | None]:
    """'127.0.0.1:80' -> ('127.0.0.1', 80), '[::1]:80' -> ('::1', 80); anything else kept whole."""
    if not text:
        return None, None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return text, None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _identity_columns(identity: FdIdentity | None) -> tuple:
    if identity is None:
        return None, None, None, None, None, None
    local_addr, local_port = split_address(identity.local)
    remote_addr, remote_port = split_address(identity.remote)
    return identity.kind, local_addr, local_port, remote_addr, remote_port, identity.path


def iter_row_groups(events: Iterable[Event], *, rows: int = ROW_GROUP_ROWS,
                    max_bytes: int = ROW_GROUP_BYTES) -> Iterator[list[pyarrow.RecordBatch]]:
    """The events as row groups: lists of record batches, `rows` rows or ~`max_bytes` each.

    Python objects are held for one batch of at most BATCH_ROWS events; a
    row group waits as Arrow arrays, which are compact.
    """
    arrow_schema = schema()
    group: list = []
    group_rows = group_bytes = 0
    chunk: list[Event] = []
    for event in events:
        chunk.append(event)
        group_bytes += len(event.data)
        if (len(chunk) >= BATCH_ROWS or group_rows + len(chunk) >= rows
                or group_bytes >= max_bytes):
            group.append(_batch(arrow_schema, chunk))
            group_rows += len(chunk)
            chunk = []
            if group_rows >= rows or group_bytes >= max_bytes:
                yield group
                group, group_rows, group_bytes = [], 0, 0
    if chunk:
        group.append(_batch(arrow_schema, chunk))
    if group:
        yield group


def _batch(arrow_schema: Any, events: list[Event]) -> Any:
    """One record batch; each column is built in one pass over the events."""
    pa = _pyarrow()
    identities: dict[FdIdentity | None, tuple] = {}  # few descriptors, many events
    split = [identities.get(e.identity) or identities.setdefault(
        e.identity, _identity_columns(e.identity)) for e in events]
    columns = {
        "time_ns": [e.wall_ns for e in events],
        "boot_ns": [e.ts_ns for e in events],
        "seq": [e.seq for e in events],
        "pid": [e.pid for e in events],
        "tid": [e.tid for e in events],
        "uid": [e.uid for e in events],
        "comm": [e.comm for e in events],
        "fd": [e.fd for e in events],
        "syscall": [e.syscall for e in events],
        "direction": [e.direction for e in events],
        "layer": [e.layer for e in events],
        "tls_library": [e.library for e in events],
        "count": [e.count for e in events],
        "ret": [e.ret for e in events],
        "truncated": [e.truncated for e in events],
        "host": [e.host for e in events],
        "capture_start": [e.capture_start_ns for e in events],
        "data": [e.data for e in events],
    }
    columns["time"] = columns["time_ns"]
    for n, name in enumerate(("fd_kind", "local_addr", "local_port", "remote_addr",
                              "remote_port", "fd_path")):
        columns[name] = [row[n] for row in split]
    arrays = [pa.array(columns[f.name], type=f.type) for f in arrow_schema]
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema)


def _metadata(header: Header | None) -> dict[bytes, bytes]:
    meta = {b"wtrec.schema": SCHEMA_VERSION.encode()}
    if header is not None:
        meta[METADATA_KEY] = json.dumps(header_dict(header), ensure_ascii=True).encode()
    return meta


def events_table(events: Iterable[Event], header: Header | None = None) -> pyarrow.Table:
    """All the events as one Table (in memory)."""
    pa = _pyarrow()
    arrow_schema = schema().with_metadata(_metadata(header))
    batches = [batch.replace_schema_metadata(arrow_schema.metadata)
               for group in iter_row_groups(events) for batch in group]
    return pa.Table.from_batches(batches, schema=arrow_schema)


def events_frame(events: Iterable[Event], header: Header | None = None) -> pandas.DataFrame:
    """All the events as a pandas DataFrame (payloads as bytes objects)."""
    try:
        importlib.import_module("pandas")
    except ImportError:
        raise MissingExtraError("pandas", "pandas") from None
    return events_table(events, header).to_pandas()


def write_parquet(out: BinaryIO, events: Iterable[Event], header: Header | None = None, *,
                  rows_per_group: int = ROW_GROUP_ROWS, bytes_per_group: int = ROW_GROUP_BYTES) -> int:
    """Streams the events into a Parquet file on `out`, a row group per batch; returns the rows.

    `out` stays open: the caller owns it. Only one row group is in memory at once.
    """
    pa = _pyarrow()
    parquet = importlib.import_module("pyarrow.parquet")
    arrow_schema = schema().with_metadata(_metadata(header))
    rows = 0
    # Dictionary encoding pays for the repetitive text columns, never for payloads.
    dictionary = ["comm", "syscall", "direction", "layer", "tls_library", "fd_kind",
                  "local_addr", "remote_addr", "fd_path", "host"]
    with parquet.ParquetWriter(out, arrow_schema, compression="zstd",
                               use_dictionary=dictionary) as writer:
        for group in iter_row_groups(events, rows=rows_per_group, max_bytes=bytes_per_group):
            table = pa.Table.from_batches(group, schema=schema())
            writer.write_table(table.replace_schema_metadata(arrow_schema.metadata),
                               row_group_size=rows_per_group)
            rows += table.num_rows
    return rows
