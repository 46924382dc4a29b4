"""The recording loop without a kernel: a fake probe hands it kernel records."""

import io
import time

from kernel_bytes import encode_event, encode_fd_note

from wtrec.capture.fd_table import FdTable
from wtrec.capture.kernel_records import FLAG_FDS_STALE, FdNote
from wtrec.capture.probe import ProbeConfig, RecordCounts
from wtrec.format import CaptureReader, CaptureWriter
from wtrec.record import Recording, StopRule, boot_ns, recording_header, summary_warnings
from wtrec.records import End, FdIdentity, FdInfo, IoEvent, Lost


class FakeProbe:
    """Hands out prepared batches; counts like the BPF program does."""

    config = ProbeConfig()

    def __init__(self, batches: list[list[bytes]], lost: int = 0, unread: int = 0):
        self.batches = batches
        self.kernel_lost = lost
        self.sent_events = unread + sum(
            1 for batch in batches for raw in batch if raw[:4] == b"\x01\0\0\0")
        self.producing = True

    def read(self, max_bytes: int) -> list[bytes]:
        return self.batches.pop(0) if self.batches else []

    def stop_producing(self) -> None:
        self.producing = False

    def skip_unread(self) -> None:
        self.batches.clear()

    def lost(self) -> RecordCounts:
        return RecordCounts(events=self.kernel_lost)

    def handed_over(self) -> RecordCounts:
        return RecordCounts(events=self.sent_events)

    def unfollowed(self) -> int:
        return 0


def event(pid: int, fd: int = 3, data: bytes = b"hello", ts_ns: int = 1) -> IoEvent:
    return IoEvent(ts_ns=ts_ns, pid=pid, tid=pid, uid=0, comm=b"c", fd=fd, count=len(data),
                   data=data, ret=len(data))


def note(op: str, pid: int, fd: int = 3, path: bytes = b"", ts_ns: int = 1) -> bytes:
    return encode_fd_note(FdNote(op=op, ts_ns=ts_ns, ret=fd, pid=pid, tid=pid, fd=fd, fd2=-1,
                                 a0=0, a1=0, a2=0, blob=path))


def record(probe: FakeProbe, fds: FdTable | None = None) -> tuple[Recording, list]:
    out = io.BytesIO()
    writer = CaptureWriter(out, recording_header(ProbeConfig(), ()))
    recording = Recording(probe, writer, StopRule(), fds=fds, sleep=lambda _s: None)
    original_step = recording._step

    def step() -> int:  # stop once the prepared batches are used up
        taken = original_step()
        if not probe.batches:
            recording.stop()
        return taken

    recording._step = step  # type: ignore[method-assign]
    recording.run()
    return recording, list(CaptureReader(io.BytesIO(out.getvalue())))


def test_fd_state_of_exited_processes_is_freed():
    fds = FdTable(resolver=lambda _pid, _fd: None)
    now = boot_ns() - 10**9  # old enough for the reorder buffer to release
    batches = [[note("openat", pid, path=b"/tmp/f\0", ts_ns=now + 3 * pid),
                encode_event(event(pid, ts_ns=now + 3 * pid + 1)),
                note("exit", pid, fd=-1, ts_ns=now + 3 * pid + 2)] for pid in range(100, 1100)]
    recording, records = record(FakeProbe(batches), fds)
    assert len(fds) == 0 and recording._fd_written == {}
    infos = [r for r in records if isinstance(r, FdInfo)]
    assert len(infos) == 1000
    assert all(info.identity == FdIdentity("file", path="/tmp/f") for info in infos)


def test_a_reused_pid_does_not_inherit_a_dead_process_descriptors():
    now = boot_ns() - 10**9
    fds = FdTable(resolver=lambda _pid, _fd: None)
    batches = [[note("openat", 7, path=b"secretA.txt\0", ts_ns=now),
                encode_event(event(7, ts_ns=now + 1)),
                note("exit", 7, fd=-1, ts_ns=now + 2),
                encode_event(event(7, data=b"from B", ts_ns=now + 3))]]
    _recording, records = record(FakeProbe(batches), fds)
    infos = [r.identity for r in records if isinstance(r, FdInfo)]
    assert infos == [FdIdentity("file", path="secretA.txt"), FdIdentity("unknown")]


def test_records_sent_but_never_taken_are_counted_lost():
    now = boot_ns() - 10**9
    batches = [[encode_event(event(1, ts_ns=now + i)) for i in range(5)]]
    _recording, records = record(FakeProbe(batches, lost=2, unread=3))
    lost = sum(r.count for r in records if isinstance(r, Lost))
    end = records[-1]
    assert isinstance(end, End) and end.lost == lost == 5 and end.events == 5
    assert _recording.stats.unread_at_stop == 3  # the summary says why those were lost
    assert any("3 of the lost events were still in the kernel buffer" in line
               for line in summary_warnings(_recording.stats))


def test_a_signal_stops_a_recording_that_is_never_drained_within_the_budget():
    """However much the kernel still holds, the drain after a signal is time-boxed."""
    now = boot_ns() - 10**9

    class EndlessProbe(FakeProbe):
        def read(self, max_bytes: int) -> list[bytes]:
            self.sent_events += 1
            return [encode_event(event(1, ts_ns=now))]

    probe = EndlessProbe([])
    writer = CaptureWriter(io.BytesIO(), recording_header(ProbeConfig(), ()))
    recording = Recording(probe, writer, StopRule(), sleep=lambda _s: None)
    recording.stop()  # as the signal handler does
    started = time.monotonic()
    stats = recording.run()
    assert time.monotonic() - started < 1.0
    assert not probe.producing and stats.lost == 0  # everything handed over was taken


def test_after_a_lost_fd_note_a_process_descriptors_are_unknown_not_wrong():
    """The kernel flags the next event of a process whose fd note was lost; from
    then on its unnamed descriptors are "unknown (lost)", and /proc (which tells
    the present, not the time of the event) is not asked."""
    now = boot_ns() - 10**9
    fds = FdTable(resolver=lambda _pid, _fd: FdIdentity("file", path="/proc/says/now"))
    batches = [[note("openat", 7, fd=3, path=b"a.txt\0", ts_ns=now),
                encode_event(event(7, fd=3, ts_ns=now + 1)),
                # the openat of fd 4 (b.txt) was lost: the next event says so
                encode_event(event(7, fd=4, ts_ns=now + 3), flags=FLAG_FDS_STALE),
                encode_event(event(7, fd=3, ts_ns=now + 4)),
                note("openat", 7, fd=5, path=b"c.txt\0", ts_ns=now + 5),
                encode_event(event(7, fd=5, ts_ns=now + 6))]]
    _recording, records = record(FakeProbe(batches), fds)
    named = [(r.fd, r.identity.describe()) for r in records if isinstance(r, FdInfo)]
    assert named == [(3, "file a.txt"), (4, "unknown (fd notes lost)"),
                     (3, "unknown (fd notes lost)"), (5, "file c.txt")]
    assert FdIdentity("file", path="/proc/says/now") not in [
        r.identity for r in records if isinstance(r, FdInfo)]


def test_a_forked_child_inherits_its_parent_descriptors():
    now = boot_ns() - 10**9
    fds = FdTable(resolver=lambda _pid, _fd: None)  # both gone by the time /proc is asked
    fork = encode_fd_note(FdNote(op="inherit", ts_ns=now + 1, ret=0, pid=7, tid=7, fd=-1, fd2=8,
                                 a0=0, a1=0, a2=0, blob=b""))
    batches = [[note("openat", 7, fd=5, path=b"log.txt\0", ts_ns=now), fork,
                encode_event(event(8, fd=5, ts_ns=now + 2))]]
    _recording, records = record(FakeProbe(batches), fds)
    assert [(r.pid, r.identity.describe()) for r in records if isinstance(r, FdInfo)] == [
        (8, "file log.txt")]
