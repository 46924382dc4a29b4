"""Shared helpers: captures built with the writer, and the live-eBPF gate."""

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wtrec.format import CaptureWriter
from wtrec.records import End, Filters, Header, Lost, WriteEvent

ROOT = Path(__file__).resolve().parent.parent
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
    events = [
        WriteEvent(1_000_000_000 + 1_500, 4242, 4242, 1000, b"client-tcp", 3, 6, b"hello\n"),
        WriteEvent(1_000_000_000 + 2_000_000, 4242, 4243, 1000, b"client-tcp", 3, 27,
                   b"\x1b[31mred\x1b[0m\ttab\r\n\x00\x7f\xff\"q\\"),
        WriteEvent(1_000_000_000 + 3_000_000, 4242, 4242, 1000, b"client-tcp", 1, 8192,
                   bytes(range(48))),
        WriteEvent(1_000_000_000 + 4_000_000, 77, 77, 0, b"\x1bevil", 5, 3, "é€".encode()[:3]),
    ]
    return [events[0], events[1], Lost(1_000_000_000 + 2_500_000, 7, "ringbuf"),
            events[2], events[3]]


def build_capture(records=None, header=None, end=True) -> bytes:
    """Bytes of a capture written by the real writer."""
    records = sample_records() if records is None else records
    out = io.BytesIO()
    writer = CaptureWriter(out, header or make_header())
    events = [r for r in records if isinstance(r, WriteEvent)]
    for record in records:
        writer.write(record)
    if end:
        writer.close(End(ts_ns=2_000_000_000, events=len(events),
                         bytes=sum(len(e.data) for e in events),
                         lost=sum(r.count for r in records if isinstance(r, Lost))))
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
    from wtrec import preflight
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
