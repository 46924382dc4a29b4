"""Live: a real capture read through the Python API and exported to Parquet for DuckDB."""

import json
import os
import subprocess

import duckdb
import pytest
from conftest import wtrec_cmd
from live_helpers import Recorder, Server, run_client
from test_api import as_show_json
from test_parquet import totals_by_comm

import wtrec
from wtrec.records import Lost

LINES = [f"notebook line {i:02d}: {'=' * i}\n".encode() for i in range(23)]

pytestmark = pytest.mark.usefixtures("live")


def wtrec_json(*args: str) -> list[dict]:
    done = subprocess.run(wtrec_cmd(*args), capture_output=True, text=True, timeout=120,
                          check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_recorded_capture_through_the_api_show_and_duckdb(samples, workdir):
    server = Server(samples)
    try:
        capture = os.path.join(workdir, "client.wtrace")
        recorder = Recorder("-c", "client-tcp", "-o", capture)
        pid, fd = run_client(samples, server.port, LINES)
        recorder.stop()
        assert recorder.proc.returncode == 0
    finally:
        server.stop()

    with wtrec.open(capture) as cap:
        sent = list(cap.events(pid=pid, fd=fd, direction="out"))
        assert [e.data for e in sent] == LINES
        assert all(e.comm == "client-tcp" and e.count == e.ret == len(e.data) for e in sent)
        identity = sent[0].identity
        assert identity is not None and identity.kind == "tcp"
        assert identity.remote == f"127.0.0.1:{server.port}"
        assert not any(isinstance(r, Lost) for r in cap.records())
        shown = [o for o in wtrec_json("show", "--json", capture) if o["type"] != "fd"]
        assert [as_show_json(e) for e in cap.events()] == shown

    target = os.path.join(workdir, "client.parquet")
    subprocess.run(wtrec_cmd("export", "--format", "parquet", "-o", target, capture),
                   check=True, capture_output=True, timeout=120)
    rows = duckdb.sql(f"SELECT comm, count(*), sum(octet_length(data)) FROM '{target}' "
                      "GROUP BY comm").fetchall()
    info = wtrec_json("info", "--json", capture)[0]
    assert {comm: (n, size) for comm, n, size in rows} == totals_by_comm(info)
    port = duckdb.sql(f"SELECT DISTINCT remote_port FROM '{target}' WHERE fd = {fd} "
                      f"AND pid = {pid}").fetchall()
    assert port == [(server.port,)]
