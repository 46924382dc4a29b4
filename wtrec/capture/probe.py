"""The bcc glue: compiles and attaches bpf/write_tracer.bpf.c, hands out raw events.

The only module that imports bcc. Callbacks from bcc run inside ctypes, which
swallows exceptions, so they only copy bytes into a queue; decoding and error
handling happen in the recorder's loop.
"""

import ctypes
import os
import re
import tempfile
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from wtrec.capture.kernel_records import WRITE_FAMILY
from wtrec.errors import BccMissingError, KernelHeadersMissingError, ProbeError

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MAX_SNAPLEN_RINGBUF = 1 << 20
MAX_SNAPLEN_PERF = 1 << 20  # large captures go out in 16 KiB chunks
# Tail-called programs, in the order of the PROG_* indexes in the BPF source.
SHARED_PROGRAMS = (b"gather_and_emit", b"fd_exit")
# How many argument slots each syscall's entry needs: which enterN program
# serves it (a program may not read past the end of the shortest record).
ENTRY_SLOTS = {
    "write": 3, "writev": 3, "pwrite64": 3, "pwritev": 3, "pwritev2": 3, "sendto": 3,
    "sendmsg": 2, "read": 3, "readv": 3, "pread64": 3, "recvfrom": 3, "recvmsg": 2,
    "socket": 3, "connect": 3, "bind": 3, "accept": 3, "accept4": 3, "openat": 2, "open": 1,
    "close": 1, "pipe": 1, "pipe2": 1, "socketpair": 4, "dup": 1, "dup2": 1, "dup3": 1,
}
# Traced whatever --syscalls says: they name the descriptors.
FD_SYSCALLS = ("socket", "connect", "bind", "accept", "accept4", "openat", "open", "close",
               "pipe", "pipe2", "socketpair", "dup", "dup2", "dup3")
PERF_WAKEUP_EVENTS = 64


@dataclass(frozen=True)
class ProbeConfig:
    """What the BPF program is built for."""

    snaplen: int = 4096
    use_perf: bool = False
    trace_all: bool = False
    comms: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    follow: bool = False
    syscalls: tuple[str, ...] = WRITE_FAMILY
    buffer_bytes: int = 32 << 20
    self_tgid: int = field(default_factory=os.getpid)

    def buffer_pages(self) -> int:
        """Buffer size in pages, rounded up to a power of two as the kernel needs."""
        pages = max(1, -(-self.buffer_bytes // PAGE_SIZE))
        return 1 << (pages - 1).bit_length()

    def perf_pages_per_cpu(self) -> int:
        """The perf buffer is per CPU: split the budget, keep a power of two."""
        share = max(8, self.buffer_pages() // max(1, os.cpu_count() or 1))
        return 1 << (share.bit_length() - 1)

    def cflags(self) -> list[str]:
        return [
            f"-DWTREC_SNAPLEN={self.snaplen}",
            f"-DWTREC_USE_PERF={int(self.use_perf)}",
            f"-DWTREC_RINGBUF_PAGES={self.buffer_pages()}",
            f"-DWTREC_TRACE_ALL={int(self.trace_all)}",
            f"-DWTREC_FOLLOW={int(self.follow)}",
            f"-DWTREC_SELF_TGID={self.self_tgid}",
        ]

    def attachments(self) -> list[tuple[str, str]]:
        """(tracepoint, program) pairs: the chosen syscalls and the fd-naming ones."""
        pairs = []
        for name in dict.fromkeys(self.syscalls + FD_SYSCALLS):
            pairs.append((f"syscalls:sys_enter_{name}", f"enter{ENTRY_SLOTS[name]}"))
            if name != "close":
                pairs.append((f"syscalls:sys_exit_{name}", "exit_any"))
        return pairs


def bpf_source_path() -> Path:
    """The BPF C file, from a checkout or an installed package alike."""
    return Path(str(resources.files("wtrec.bpf").joinpath("write_tracer.bpf.c")))


def bpf_program_text(config: ProbeConfig) -> str:
    """What `--print-bpf` shows: the defines, then the source as loaded."""
    defines = "\n".join("#define " + flag[2:].replace("=", " ", 1) for flag in config.cflags())
    attached = "\n".join(f"//   {tp} -> {prog}" for tp, prog in config.attachments())
    return (f"// compiled with:\n{defines}\n// attached:\n{attached}\n\n"
            f"{bpf_source_path().read_text()}")


class _StderrCapture:
    """Collects what bcc/clang print on fd 2 so errors become one line."""

    def __enter__(self):
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()
        return False


def _tracepoint_exists(tracepoint: str) -> bool:
    from wtrec.capture.preflight import syscall_events_dir

    events = syscall_events_dir()
    category, name = tracepoint.split(":")
    return events is None or (events.parent / category / name).is_dir()


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "error" in line.lower():
            return re.sub(r"\s+", " ", line).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message from bcc"


class Probe:
    """The loaded program and its output buffer.

    `raw_events` fills with the bytes of each kernel record; `perf_lost`
    counts the records the perf buffer reported lost; `lost_events()` turns
    that and the BPF map of drops into lost events.
    """

    def __init__(self, config: ProbeConfig):
        try:
            from bcc import BPF
        except ImportError as exc:
            raise BccMissingError(
                f"cannot import bcc ({exc}): install python3-bpfcc") from None
        self.config = config
        self.raw_events: deque[bytes] = deque()
        self.perf_lost = 0
        failure: Exception | None
        with _StderrCapture() as captured:
            try:
                self._bpf = BPF(src_file=str(bpf_source_path()).encode(), cflags=config.cflags())
            except Exception as exc:
                failure = exc
            else:
                failure = None
        if failure is not None:
            detail = _first_error(captured.text + "\n" + str(failure))
            if "file not found" in detail or "kernel headers" in detail.lower():
                raise KernelHeadersMissingError(
                    f"bcc cannot find kernel headers ({detail}); see README: set-up")
            raise ProbeError(f"cannot load the BPF program: {detail}")
        try:
            with _StderrCapture() as captured:
                self._fill_filters()
                # Attach first, so capture starts as early as it can; the
                # tail-called programs follow within a fraction of a second
                # (until then a large or vectored capture is cut to 16 KiB).
                for tracepoint, program in config.attachments():
                    if not _tracepoint_exists(tracepoint):
                        continue  # e.g. open(2) and pipe(2) do not exist on arm64
                    self._bpf.attach_tracepoint(tp=tracepoint.encode(), fn_name=program.encode())
                programs = self._bpf["programs"]
                for index, name in enumerate(SHARED_PROGRAMS):
                    programs[ctypes.c_int(index)] = ctypes.c_int(
                        self._bpf.load_func(name, BPF.TRACEPOINT).fd)
        except Exception as exc:
            raise ProbeError(f"cannot load the BPF program: "
                             f"{_first_error(captured.text + chr(10) + str(exc))}") from None
        self._open_buffer()

    def _fill_filters(self) -> None:
        if self.config.trace_all:
            return
        one = ctypes.c_uint8(1)
        comms = self._bpf["comm_filter"]
        for comm in self.config.comms:
            key = comms.Key()
            key.name = comm.encode()[:15]
            comms[key] = one
        for pid in self.config.pids:
            self.add_pid(pid)

    def add_pid(self, pid: int) -> None:
        """Traces one more process (with follow: and its future children)."""
        pids = self._bpf["pid_filter"]
        pids[pids.Key(pid)] = ctypes.c_uint8(1)

    def _open_buffer(self) -> None:
        table = self._bpf["events"]
        queue = self.raw_events

        if self.config.use_perf:
            def on_perf(_cpu, data, size):
                queue.append(ctypes.string_at(data, size))

            def on_lost(count):
                self.perf_lost += count

            self._on_event, self._on_lost = on_perf, on_lost
            # Waking the reader for every event costs ~10 us a write; wake it
            # every PERF_WAKEUP_EVENTS and let poll() consume the stragglers.
            table.open_perf_buffer(on_perf, page_cnt=self.config.perf_pages_per_cpu(),
                                   lost_cb=on_lost, wakeup_events=PERF_WAKEUP_EVENTS)
        else:
            def on_ring(_ctx, data, size):
                queue.append(ctypes.string_at(data, size))
                return 0

            self._on_event = on_ring
            table.open_ring_buffer(on_ring)

    def poll(self, timeout_ms: int) -> None:
        """Moves whatever the kernel has into `raw_events`, waiting up to timeout_ms."""
        if self.config.use_perf:
            self._bpf.perf_buffer_poll(timeout_ms)
            self._bpf.perf_buffer_consume()
        else:
            self._bpf.ring_buffer_poll(timeout_ms)

    def lost_events(self) -> int:
        """Events lost so far, every cause, all CPUs, as the BPF program counted them.

        `perf_lost` (the perf buffer's own count of lost records) is kept for
        diagnosis only: it counts chunks and fd notes too, and reports late.
        """
        return int(sum(self._bpf["lost_counts"][ctypes.c_int(0)]))

    def close(self) -> None:
        self._bpf.cleanup()
