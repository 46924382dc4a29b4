"""`wtrec export --format parquet`: read back by DuckDB and pyarrow, against `wtrec info`."""

import io
import json
import re
import subprocess
import sys
from collections import defaultdict

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import DATA, ROOT, build_capture, make_header, wtrec_cmd
from typer.testing import CliRunner

import wtrec
from wtrec.cli.app import app
from wtrec.records import FdIdentity, FdInfo, IoEvent
from wtrec.tools import parquet

runner = CliRunner()


def export(source, target, *options: str) -> None:
    result = runner.invoke(app, ["export", "--format", "parquet", "-o", str(target),
                                 str(source), *options])
    assert result.exit_code == 0, result.output


def info_json(path) -> dict:
    result = runner.invoke(app, ["info", "--json", str(path)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def totals_by_comm(info: dict) -> dict[str, tuple[int, int]]:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for process in info["processes"]:
        for direction in ("out", "in"):
            totals[process["comm"]][0] += process[direction]["events"]
            totals[process["comm"]][1] += process[direction]["bytes"]
    return {comm: (events, size) for comm, (events, size) in totals.items()}


def many_processes_capture(host: str, seed: int) -> bytes:
    """Three programs, both directions, tcp and unix descriptors, some payload sizes."""
    records = []
    for n in range(300):
        pid = 100 + (n * seed) % 3
        comm = (b"curl", b"redis-cli", b"py\xffthon")[pid - 100]
        fd = 3 + n % 2
        if n < 6:
            records.append(FdInfo(1_000_000_000 + n, pid, fd,
                                  FdIdentity("tcp", "127.0.0.1:40000", f"[::1]:{6379 + fd}")
                                  if fd == 3 else FdIdentity("unix", path="/run/app.sock")))
        data = bytes([65 + n % 26]) * (n * seed % 200)
        direction = "in" if n % 5 == 0 else "out"
        records.append(IoEvent(1_000_000_100 + n * 1000, pid, pid, 1000, comm, fd, len(data),
                               data, syscall="read" if direction == "in" else "write",
                               ret=len(data), seq=n, direction=direction))
    return build_capture(records, header=make_header(host=host, format_minor=2))


def test_duckdb_group_by_comm_equals_info(tmp_path):
    capture = tmp_path / "run.wtrace"
    capture.write_bytes(many_processes_capture("alpha", 7))
    target = tmp_path / "run.parquet"
    export(capture, target)
    rows = duckdb.sql(f"SELECT comm, count(*), sum(octet_length(data)) FROM '{target}' "
                      "GROUP BY comm").fetchall()
    assert {comm: (n, size) for comm, n, size in rows} == totals_by_comm(info_json(capture))
    assert len(rows) == 3


def test_a_glob_over_two_exports_is_one_query(tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    expected = {}
    for host, seed in (("alpha", 7), ("beta", 11)):
        capture = tmp_path / f"{host}.wtrace"
        capture.write_bytes(many_processes_capture(host, seed))
        export(capture, exports / f"{host}.parquet")
        info = info_json(capture)
        expected[host] = (info["events"]["events"], info["events"]["bytes"])
    rows = duckdb.sql(f"SELECT host, count(*), sum(octet_length(data)) FROM "
                      f"'{exports}/*.parquet' GROUP BY host ORDER BY host").fetchall()
    assert {host: (n, size) for host, n, size in rows} == expected
    ports = duckdb.sql(f"SELECT DISTINCT fd_kind, remote_addr, remote_port, fd_path FROM "
                       f"'{exports}/*.parquet' ORDER BY ALL").fetchall()
    assert ports == [("tcp", "::1", 6382, None), ("unix", None, None, "/run/app.sock")]


def test_the_v10_capture_exports_with_null_identity_and_seq(tmp_path):
    target = tmp_path / "old.parquet"
    export(DATA / "v1.0-client.wtrace", target)
    table = pq.read_table(target)
    assert table.num_rows == 9
    assert set(table.column("seq").to_pylist()) == {None}
    assert set(table.column("fd_kind").to_pylist()) == {None}
    assert table.column("host").to_pylist() == ["vm"] * 9


def test_every_column_round_trips_against_the_api(tmp_path):
    capture = tmp_path / "sample.wtrace"
    capture.write_bytes(build_capture())
    target = tmp_path / "sample.parquet"
    export(capture, target)
    rows = pq.read_table(target).to_pylist()
    cap = wtrec.open(capture)
    events = list(cap.events())
    assert len(rows) == len(events) == 4
    for row, event in zip(rows, events, strict=True):
        assert row["time_ns"] == event.wall_ns and row["boot_ns"] == event.ts_ns
        assert row["time"].timestamp() == pytest.approx(event.wall_ns / 1e9, abs=1e-6)
        assert row["capture_start"].timestamp() == pytest.approx(cap.header.start_ns / 1e9)
        for name in ("seq", "pid", "tid", "uid", "comm", "fd", "syscall", "direction", "count",
                     "ret", "truncated", "data", "host"):
            assert row[name] == getattr(event, name), name
        identity = event.identity
        assert row["fd_kind"] == identity.kind
        assert (row["local_addr"], row["local_port"]) == parquet.split_address(identity.local)
        assert (row["remote_addr"], row["remote_port"]) == parquet.split_address(identity.remote)
        assert row["fd_path"] == identity.path


def test_export_filters_choose_events(tmp_path):
    capture = tmp_path / "sample.wtrace"
    capture.write_bytes(build_capture())
    target = tmp_path / "tty.parquet"
    export(capture, target, "--fd", "1", "--pid", "4242")
    assert pq.read_table(target).column("seq").to_pylist() == [2]


def documented_columns() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "PARQUET.md").read_text()
    return re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", text, re.MULTILINE)


def test_docs_list_exactly_the_columns_and_types_written(tmp_path):
    capture = tmp_path / "sample.wtrace"
    capture.write_bytes(build_capture())
    target = tmp_path / "sample.parquet"
    export(capture, target)
    arrow_schema = pq.read_schema(target)
    written = [(f.name, str(f.type)) for f in arrow_schema]
    assert documented_columns() == written
    assert arrow_schema.metadata[b"wtrec.schema"] == parquet.SCHEMA_VERSION.encode()


def test_row_groups_are_capped_by_rows_and_by_bytes(tmp_path):
    def events(n, size):
        header = make_header()
        for i in range(n):
            yield wtrec.api.as_event(IoEvent(1_000_000_000 + i, 1, 1, 0, b"x", 3, size,
                                             b"z" * size, ret=size, seq=i), header, None)

    by_rows = tmp_path / "rows.parquet"
    with open(by_rows, "wb") as out:
        assert parquet.write_parquet(out, events(250, 10), rows_per_group=100) == 250
    assert [pq.ParquetFile(by_rows).metadata.row_group(i).num_rows for i in range(3)] == \
        [100, 100, 50]
    by_bytes = tmp_path / "bytes.parquet"
    with open(by_bytes, "wb") as out:
        parquet.write_parquet(out, events(10, 1000), bytes_per_group=3000)
    meta = pq.ParquetFile(by_bytes).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [3, 3, 3, 1]


def test_addresses_split_into_host_and_port():
    assert parquet.split_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parquet.split_address("[::1]:6379") == ("::1", 6379)
    assert parquet.split_address("[fe80::1%eth0]:22") == ("fe80::1%eth0", 22)
    assert parquet.split_address("?") == ("?", None)
    assert parquet.split_address(None) == (None, None)
    assert parquet.split_address("") == (None, None)


def test_without_pyarrow_export_names_the_extra(tmp_path, monkeypatch):
    capture = tmp_path / "sample.wtrace"
    capture.write_bytes(build_capture())
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    result = runner.invoke(app, ["export", "--format", "parquet", "-o",
                                 str(tmp_path / "x.parquet"), str(capture)])
    assert result.exit_code == 12
    assert "pip install 'wtrec[parquet]'" in result.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_a_truncated_capture_exports_its_events_and_says_so(tmp_path):
    capture = tmp_path / "cut.wtrace"
    capture.write_bytes(build_capture(end=False))
    target = tmp_path / "cut.parquet"
    result = runner.invoke(app, ["export", "--format", "parquet", "-o", str(target),
                                 str(capture)])
    assert result.exit_code == 0, result.output
    assert "ends early" in result.stderr
    assert pq.read_table(target).num_rows == 4


def test_hostile_input_leaves_no_parquet_file(tmp_path):
    capture = tmp_path / "bad.wtrace"
    capture.write_bytes(build_capture()[:30] + b"\xff" * 100)
    result = runner.invoke(app, ["export", "--format", "parquet", "-o",
                                 str(tmp_path / "bad.parquet"), str(capture)])
    assert result.exit_code == 10, result.output
    assert not (tmp_path / "bad.parquet").exists()


def test_export_reads_stdin_and_writes_stdout(tmp_path):
    capture = build_capture()
    done = subprocess.run(wtrec_cmd("export", "--format", "parquet", "-o", "-", "-"),
                          input=capture, capture_output=True, timeout=120, check=True)
    table = pq.read_table(io.BytesIO(done.stdout))
    assert table.column("seq").to_pylist() == [0, 1, 2, 3]
