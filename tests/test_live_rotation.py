"""Live: `record -C/-G/-W` under a paced load of known writes.

A Python writer makes N known writes to /dev/null in bursts; the recording
rotates through several files. Every file must read clean, indexed and
closed on its own; across the files every write is there once, in order,
with sequence numbers running on and none twice.
"""

import glob
import os
import subprocess
import sys

import pytest
from conftest import wtrec_cmd
from live_helpers import run_recorded

import wtrec
from wtrec.format import CaptureReader
from wtrec.records import End, FdInfo, Header, IoEvent, Lost

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("live")]

NOBODY = 65534
PACED_WRITER = r"""
import os, random, sys, time
bursts, per, size = map(int, sys.argv[1:4])
fd = os.open(os.devnull, os.O_WRONLY)   # opened once: every later file must name it again
for b in range(bursts):
    for i in range(per):
        n = b * per + i
        assert os.write(fd, n.to_bytes(4, "big") + random.Random(n).randbytes(size - 4)) == size
    time.sleep(0.1)                     # the pace: files fill over seconds, not at once
"""


def payload(n: int, size: int) -> bytes:
    import random
    return n.to_bytes(4, "big") + random.Random(n).randbytes(size - 4)


def check_series(paths: list[str]) -> list[IoEvent]:
    """Each file whole on its own; returns all events, in series order."""
    events: list[IoEvent] = []
    series_id = None
    for path in paths:
        shown = subprocess.run(wtrec_cmd("info", path), capture_output=True, text=True,
                               timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert ", indexed" in shown.stdout and "closed      cleanly" in shown.stdout, shown.stdout
        with open(path, "rb") as f:
            records = list(CaptureReader(f))
        header, end = records[0], records[-1]
        assert isinstance(header, Header) and header.series is not None
        series_id = series_id or header.series.id
        assert header.series.id == series_id
        assert header.series.index == int(path.rsplit(".", 2)[1])
        named = set()
        own = []
        for record in records:
            if isinstance(record, FdInfo):
                named.add((record.pid, record.fd))
            elif isinstance(record, IoEvent):
                assert (record.pid, record.fd) in named, (path, record.seq)
                own.append(record)
        assert isinstance(end, End)
        assert not [r for r in records if isinstance(r, Lost)] and end.lost == 0
        assert (end.events, end.bytes) == (len(own), sum(len(e.data) for e in own))
        events += own
    return events


def test_size_rotation_keeps_every_write_once_in_order(workdir):
    bursts, per, size = 20, 10, 4000
    out = os.path.join(workdir, "run.wtrace")
    result = run_recorded(out, [sys.executable, "-c", PACED_WRITER, str(bursts), str(per),
                                str(size)], "-C", "100K", "-s", "4096")
    assert result.returncode == 0, result.stderr
    paths = sorted(glob.glob(os.path.join(workdir, "run.*.wtrace")))
    assert len(paths) >= 3, (paths, result.stderr)
    assert paths[0].endswith("run.000.wtrace") and not os.path.exists(out)
    events = check_series(paths)
    seqs = [e.seq for e in events]
    assert seqs == list(range(len(events)))  # contiguous, none twice, across files
    with wtrec.open(paths) as capture:
        written = [e.data for e in capture.events() if e.identity and
                   e.identity.path == "/dev/null"]
    assert written == [payload(n, size) for n in range(bursts * per)]
    for path in paths[:-1]:
        assert os.path.getsize(path) >= 100 << 10  # each passed -C before the next began
    merged = os.path.join(workdir, "all.wtrace")
    done = subprocess.run(wtrec_cmd("merge", "-o", merged, *reversed(paths)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with open(merged, "rb") as f:
        assert [r.seq for r in CaptureReader(f) if isinstance(r, IoEvent)] == seqs


def test_time_rotation_with_a_file_count_keeps_the_newest_files(workdir):
    """-G 1 -W 2 under a simulated sudo: the files are the user's; only the last two stay."""
    os.chown(workdir, NOBODY, NOBODY)
    bursts, per, size = 35, 5, 1000
    out = os.path.join(workdir, "run.wtrace")
    result = run_recorded(out, [sys.executable, "-c", PACED_WRITER, str(bursts), str(per),
                                str(size)], "-G", "1", "-W", "2",
                          env={"SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY)})
    assert result.returncode == 0, result.stderr
    assert "older ones removed (-W 2)" in result.stderr, result.stderr
    paths = sorted(glob.glob(os.path.join(workdir, "run.*.wtrace")),
                   key=lambda p: int(p.rsplit(".", 2)[1]))
    assert len(paths) == 2, paths
    last = int(paths[1].rsplit(".", 2)[1])
    assert last >= 2 and int(paths[0].rsplit(".", 2)[1]) == last - 1
    assert all(os.stat(p).st_uid == NOBODY for p in paths)
    events = check_series(paths)
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # the newest, contiguous
    assert seqs[0] > 0  # older events went with the removed files
    assert payload(bursts * per - 1, size) in [e.data for e in events]  # the last write
