"""Shared helpers: captures built with the writer, and the live-eBPF gate."""

import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from wtrec.format import CaptureWriter
from wtrec.records import End, FdIdentity, FdInfo, Filters, Header, IoEvent, Lost

ROOT = Path(__file__).resolve().parent.parent

# Run through `sudo`, the suite would lend its caller's SUDO_UID to every
# recorder it starts; the tests that simulate sudo set these themselves.
for _name in ("SUDO_UID", "SUDO_GID", "SUDO_USER"):
    os.environ.pop(_name, None)
DATA = Path(__file__).resolve().parent / "data"
GOLDEN = Path(__file__).resolve().parent / "golden"


def make_header(**changes) -> Header:
    fields = dict(
        format_major=1, format_minor=0, tool_version="0.1.0", host="testhost",
        kernel="6.18.0-test", start_ns=1_700_000_000_000_000_000,
        anchor_boot_ns=1_000_000_000, anchor_real_ns=1_700_000_000_000_000_000,
        argv=("wtrec", "record", "-c", "client-tcp", "-o", "t.wtrace"),
        filters=Filters(comms=("client-tcp",)), snaplen=4096, buffer="ringbuf")
    fields.update(changes)
    return Header(**fields)


def sample_records() -> list:
    """A small capture with every record type and awkward payloads."""
    base = 1_000_000_000
    events = [
        IoEvent(base + 1_500, 4242, 4242, 1000, b"client-tcp", 3, 6, b"hello\n",
                syscall="write", ret=6, seq=0),
        IoEvent(base + 2_000_000, 4242, 4243, 1000, b"client-tcp", 3, 27,
                b"\x1b[31mred\x1b[0m\ttab\r\n\x00\x7f\xff\"q\\", syscall="writev", ret=27, seq=1),
        IoEvent(base + 3_000_000, 4242, 4242, 1000, b"client-tcp", 1, 8192,
                bytes(range(48)), syscall="write", ret=-11, seq=2),
        IoEvent(base + 4_000_000, 77, 77, 0, b"\x1bevil", 5, 4096, "é€".encode()[:3],
                syscall="recvfrom", ret=3, seq=3, direction="in"),
    ]
    return [
        FdInfo(base, 4242, 3, FdIdentity("tcp", "127.0.0.1:52144", "127.0.0.1:11111")),
        events[0], events[1], Lost(base + 2_500_000, 7, "ringbuf"),
        FdInfo(base + 3_000_000, 4242, 1, FdIdentity("tty", path="/dev/pts/0")),
        events[2],
        FdInfo(base + 4_000_000, 77, 5, FdIdentity("unix", path="/run/\x1b.sock")),
        events[3],
    ]


def build_capture(records=None, header=None, end=True, index=True) -> bytes:
    """Bytes of a capture written by the real writer."""
    records = sample_records() if records is None else records
    out = io.BytesIO()
    writer = CaptureWriter(out, header or make_header())
    events = [r for r in records if isinstance(r, IoEvent)]
    for record in records:
        writer.write(record)
    if end:
        writer.close(End(ts_ns=2_000_000_000, events=len(events),
                         bytes=sum(len(e.data) for e in events),
                         lost=sum(r.count for r in records if isinstance(r, Lost))),
                     index=index)
    else:
        writer.flush()
    return out.getvalue()


def wtrec_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "wtrec", *args]


def _live_problem() -> str | None:
    if os.geteuid() != 0:
        return "live eBPF tests need root"
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        return f"bcc is not importable ({exc}); install python3-bpfcc"
    from wtrec.capture import preflight
    from wtrec.errors import WtrecError
    try:
        preflight.check_recording_possible()
    except WtrecError as exc:
        return exc.message
    if not shutil.which("make") or not shutil.which("cc"):
        return "make and cc are needed to build samples/"
    return None


@pytest.fixture(scope="session")
def live():
    """Gate for tests that attach real BPF programs: skip on a laptop, fail under CI."""
    problem = _live_problem()
    if problem:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"live eBPF test cannot run under CI: {problem}")
        pytest.skip(problem)
    subprocess.run(["make", "-s", "-C", str(ROOT / "samples")], check=True)
    return ROOT / "samples"


@pytest.fixture(scope="module")
def samples(live):
    """The built samples/ directory, for tests that run its programs under the live gate."""
    return live


@pytest.fixture
def utc(monkeypatch):
    """Times print in UTC, so golden files hold on any machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def workdir():
    """A directory others can enter, for unprivileged readers and commands."""
    path = tempfile.mkdtemp(prefix="wtrec-live-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def pytest_collection_modifyitems(items):
    """Any test behind the live gate is marked live, so `-m "not live"` is the rootless suite."""
    for item in items:
        if "live" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("live"):
            item.add_marker(pytest.mark.live)
