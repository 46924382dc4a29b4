"""The probe: bpf/write_tracer.bpf.c compiled, loaded and attached; raw records out.

The only module that imports bcc, and bcc is only the compiler here
(`compile_program`): its bytecode and map shapes are kept between runs by
wtrec.capture.bpf_cache, and loaded and attached through the bpf() system
call by wtrec.capture.bpf_syscall, whichever way they came. Two raw
tracepoints (sys_enter, sys_exit) carry every syscall, a third sees
processes exit; two plain tracepoints note TCP connections and (with
follow) forks. Records are taken in batches of bounded size:

- ring buffer: read straight from the buffer's mapped pages (`RingReader`),
  so each step takes at most a given number of bytes and the rest waits in
  the kernel (bcc's poll keeps draining while data arrives, which leaves the
  caller deaf and its memory unbounded under a writer that never pauses);
- perf buffer (the fallback for kernels before 5.8): libbcc's perf reader
  calls back per record, and the callback only queues the bytes; past
  `MAX_QUEUED_BYTES` waiting it drops and counts instead, so memory stays
  bounded. Slower per event.

The BPF program submits without waking the reader; `Probe.read` is called
on a short timer.
"""
import ctypes
import mmap
import os
import re
import struct
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from wtrec.capture.bpf_cache import ProgramCache, cache_dir_from_environment, cache_key
from wtrec.capture.bpf_syscall import (
    PROG_TYPE_KPROBE,
    PROG_TYPE_RAW_TRACEPOINT,
    PROG_TYPE_TRACEPOINT,
    CompiledProgram,
    MapShape,
    create_map,
    load_program,
    map_lookup,
    map_references,
    map_shape,
    map_update,
    percpu_value_size,
    raw_tracepoint_open,
    tracepoint_attach,
    uprobe_attach,
    with_map_fds,
)
from wtrec.capture.kernel_records import (
    KIND_EVENT,
    KIND_FD,
    KIND_TLS,
    RINGBUF_BUSY_BIT,
    RINGBUF_DISCARD_BIT,
    RINGBUF_HEADER,
    SYSCALL_IDS,
    WRITE_FAMILY,
)
from wtrec.errors import BccMissingError, KernelHeadersMissingError, ProbeError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wtrec.capture.tls_libraries import AttachTarget

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MAX_SNAPLEN_RINGBUF = 1 << 20
MAX_SNAPLEN_PERF = 1 << 20  # large captures go out in 16 KiB chunks
# Tail-called programs, in the order of the PROG_* indexes in the BPF source.
SHARED_PROGRAMS = ("gather_and_emit", "fd_exit")
RAW_TRACEPOINTS = (("sys_enter", "on_sys_enter"), ("sys_exit", "on_sys_exit"),
                   ("sched_process_exit", "on_process_exit"))
# Tracepoints the program reads (TRACEPOINT_PROBE): their format is compiled in.
TRACEPOINTS = ("sock:inet_sock_set_state", "sched:sched_process_fork")
# Traced whatever --syscalls says: they name the descriptors.
FD_SYSCALLS = ("socket", "connect", "bind", "accept", "accept4", "openat", "open", "close",
               "pipe", "pipe2", "socketpair", "dup", "dup2", "dup3")
# Seen with follow, to tell a new process from a new thread.
CLONE_SYSCALLS = ("clone", "clone3", "fork", "vfork")
DEFAULT_PID_TABLE = 16384
COMM_LIST_MAX = 8  # as in the BPF source
PERF_WAKEUP_EVENTS = 64
# Perf buffer mode: bytes queued in Python before the callback drops.
MAX_QUEUED_BYTES = 16 << 20
# Slots of the BPF program's counts array (COUNT_* in wtrec_records.h).
COUNT_LOST_EVENTS, COUNT_LOST_FD_NOTES, COUNT_SENT_EVENTS, COUNT_SENT_FD_NOTES = 0, 1, 2, 3
COUNT_UNFOLLOWED = 4

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")


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
    pid_table: int = DEFAULT_PID_TABLE  # most processes traced by pid at once
    self_tgid: int = field(default_factory=os.getpid)
    tls: bool = False  # TLS library calls too (the BPF source's last section); see attach_tls
    tls_libs: tuple[str, ...] = ()  # --tls-lib: files to probe besides those found

    def buffer_pages(self) -> int:
        """Buffer size in pages, rounded up to a power of two as the kernel needs."""
        pages = max(1, -(-self.buffer_bytes // PAGE_SIZE))
        return 1 << (pages - 1).bit_length()

    def perf_pages_per_cpu(self) -> int:
        """The perf buffer is per CPU: split the budget, keep a power of two."""
        share = max(8, self.buffer_pages() // max(1, os.cpu_count() or 1))
        return 1 << (share.bit_length() - 1)

    def pid_filter(self) -> bool:
        """Whether processes may be traced by pid: -p, or followed children (-- CMD)."""
        return bool(self.pids) or self.follow

    def comm_list_size(self) -> int:
        """How many comms the program compares one by one (0: it looks them up in a hash)."""
        return len(self.comms) if len(self.comms) <= COMM_LIST_MAX else 0

    def cflags(self) -> list[str]:
        """The -D settings the program is compiled with (the recorder's pid is a map)."""
        return [
            f"-DWTREC_SNAPLEN={self.snaplen}",
            f"-DWTREC_USE_PERF={int(self.use_perf)}",
            f"-DWTREC_RINGBUF_PAGES={self.buffer_pages()}",
            f"-DWTREC_TRACE_ALL={int(self.trace_all)}",
            f"-DWTREC_PID_FILTER={int(self.pid_filter())}",
            f"-DWTREC_COMM_FILTER={int(bool(self.comms))}",
            f"-DWTREC_COMM_LIST={self.comm_list_size()}",
            f"-DWTREC_FOLLOW={int(self.follow)}",
            f"-DWTREC_PID_TABLE={self.pid_table}",
        ] + (["-DWTREC_TLS=1"] if self.tls else [])

    def wanted_syscalls(self) -> tuple[str, ...]:
        """The chosen data syscalls and the fd-naming ones, as the `wanted` map holds them."""
        return tuple(dict.fromkeys(self.syscalls + FD_SYSCALLS
                                   + (CLONE_SYSCALLS if self.follow else ())))


def bpf_dir() -> Path:
    """The folder of the BPF C files, from a checkout or an installed package alike."""
    return Path(str(resources.files("wtrec.bpf")))


def bpf_source_path() -> Path:
    return bpf_dir() / "write_tracer.bpf.c"


def bpf_program_text(config: ProbeConfig) -> str:
    """What `--print-bpf` shows: the defines, the wanted syscalls, then the sources as loaded."""
    defines = "\n".join("#define " + flag[2:].replace("=", " ", 1) for flag in config.cflags())
    wanted = ", ".join(config.wanted_syscalls())
    header = (bpf_dir() / "wtrec_records.h").read_text()
    tls = ("// with --tls: uprobes tls_enter_*/tls_leave_* on the TLS entry points found at "
           "start\n" if config.tls else "")
    return (f"// compiled with:\n{defines}\n// wanted map: {wanted}\n"
            f"// settings map: recorder pid {config.self_tgid}\n"
            f"// attached: raw_tracepoint sys_enter, sys_exit, sched_process_exit; tracepoint "
            f"sock:inet_sock_set_state, sched:sched_process_fork (with follow)\n"
            f"{tls}\n// ---- wtrec_records.h\n{header}\n// ---- write_tracer.bpf.c\n"
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


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "error" in line.lower():
            return re.sub(r"\s+", " ", line).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message from bcc"


@dataclass
class RecordCounts:
    """How many event records and fd notes (sent, lost, taken...)."""

    events: int = 0
    fd_notes: int = 0


class RingReader:
    """Reads a BPF ring buffer through its mapped pages, a bounded batch at a time.

    The kernel maps the consumer position (one writable page), then the
    producer position and the data pages twice in a row, so a record that
    wraps is still contiguous. A batch is copied out in one piece before the
    consumer position moves past it (after that the kernel may reuse it).
    """

    def __init__(self, map_fd: int, data_bytes: int):
        self._mask = data_bytes - 1
        self._consumer = mmap.mmap(map_fd, PAGE_SIZE, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(map_fd, PAGE_SIZE + 2 * data_bytes, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=PAGE_SIZE)
        # The consumer position is stored by one 8-byte write: the kernel reads it
        # at every reservation. struct.pack_into zeroes its target before packing,
        # and a kernel that read that 0 saw a full ring and refused reservations
        # with the ring nearly empty: a few events lost at any rate.
        self._consumer_pos = ctypes.c_uint64.from_buffer(self._consumer)

    def _spans(self, max_bytes: int) -> tuple[int, int, list[tuple[int, int]]]:
        """(consumer position, end position, [(start, length)] of committed records)."""
        consumer = self._consumer_pos.value
        producer = U64.unpack_from(self._producer, 0)[0]
        data, mask = self._producer, self._mask
        position = consumer
        spans = []
        limit = consumer + max_bytes
        while position < producer and position < limit:
            start = PAGE_SIZE + (position & mask)
            length = U32.unpack_from(data, start)[0]
            if length & RINGBUF_BUSY_BIT:
                break  # reserved, not yet submitted: later records wait for it
            size = length & ~(RINGBUF_BUSY_BIT | RINGBUF_DISCARD_BIT)
            if not length & RINGBUF_DISCARD_BIT:
                spans.append((position - consumer + RINGBUF_HEADER, size))
            position += (size + RINGBUF_HEADER + 7) & ~7
        return consumer, position, spans

    def read(self, max_bytes: int) -> list[memoryview]:
        """Up to about `max_bytes` of committed records, oldest first, copied out."""
        consumer, end, spans = self._spans(max_bytes)
        if end == consumer:
            return []
        start = PAGE_SIZE + (consumer & self._mask)
        batch = memoryview(self._producer[start:start + (end - consumer)])
        self._consumer_pos.value = end
        return [batch[offset:offset + size] for offset, size in spans]

    def peek(self, max_bytes: int) -> bytes:
        """A copy of what the kernel has committed or is writing, from the consumer position:
        about `max_bytes` (at least the first record whole), in the kernel's layout.

        Nothing is released: `advance` says how much of it was used.
        """
        consumer = self._consumer_pos.value
        available = U64.unpack_from(self._producer, 0)[0] - consumer
        if available <= 0:
            return b""
        start = PAGE_SIZE + (consumer & self._mask)
        first = U32.unpack_from(self._producer, start)[0] & ~(RINGBUF_BUSY_BIT
                                                               | RINGBUF_DISCARD_BIT)
        size = min(available, max(max_bytes, (first + RINGBUF_HEADER + 7) & ~7))
        return self._producer[start:start + size]

    def advance(self, used: int) -> None:
        """Releases the first `used` bytes of what `peek` gave (whole records) to the kernel."""
        if used:
            self._consumer_pos.value += used

    def skip_all(self) -> None:
        """Releases every record without reading it."""
        self._consumer_pos.value = U64.unpack_from(self._producer, 0)[0]

    def close(self) -> None:
        del self._consumer_pos  # the mmap cannot close while ctypes holds its buffer
        self._consumer.close()
        self._producer.close()


def compile_program(config: ProbeConfig) -> CompiledProgram:
    """Compiles the BPF source with bcc (clang) into maps and bytecode, loading nothing.

    bcc creates the maps while it compiles and writes their fds into the
    bytecode; those fds are traded for map indexes, so the result can be
    loaded by any process (and kept, see wtrec.capture.bpf_cache).
    """
    try:
        from bcc import BPF
        from bcc.libbcc import lib
    except ImportError as exc:
        raise BccMissingError(f"cannot import bcc ({exc}): install python3-bpfcc") from None

    class CompileOnly(BPF):
        """bcc would attach TRACEPOINT_PROBE programs as it compiles: that is the loader's."""

        def _trace_autoload(self) -> None:
            pass

    failure: Exception | None
    cflags = [*config.cflags(), f"-I{bpf_dir()}"]
    with _StderrCapture() as captured:
        try:
            compiled = CompileOnly(src_file=str(bpf_source_path()).encode(), cflags=cflags)
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
        module = compiled.module
        shapes: list[MapShape] = []
        index_of_fd: dict[int, int] = {}  # bcc's map fd -> index in shapes
        functions: dict[str, bytes] = {}
        for number in range(lib.bpf_num_functions(module)):
            name = lib.bpf_function_name(module, number)
            code = ctypes.string_at(lib.bpf_function_start(module, name),
                                    lib.bpf_function_size(module, name))
            for _index, fd in map_references(code):
                if fd not in index_of_fd:
                    index_of_fd[fd] = len(shapes)
                    shapes.append(map_shape(fd))
            # with_map_fds puts table[immediate] into each reference: here
            # the table maps bcc's fds to indexes.
            table = [-1] * (max(index_of_fd, default=0) + 1)
            for fd, index in index_of_fd.items():
                table[fd] = index
            functions[name.decode()] = with_map_fds(code, table)
        names = [shape.name for shape in shapes]
        if len(set(names)) != len(names):
            raise ProbeError(f"BPF map names must differ in their first 15 bytes: {names}")
        return CompiledProgram(lib.bpf_module_license(module).decode(), tuple(shapes), functions)
    finally:
        compiled.cleanup()


def program_for(config: ProbeConfig,
                cache: ProgramCache | None) -> tuple[CompiledProgram, str, bool]:
    """(the compiled program, its cache key, whether it came from the cache).

    From the cache if it holds this exact compile, else from bcc (then kept).
    """
    key = cache_key(sources=bpf_dir().glob("*.[ch]"), cflags=config.cflags(),
                    tracepoints=[(tp.partition(":")[0], tp.partition(":")[2]) for tp in TRACEPOINTS])
    program = cache.get(key) if cache is not None else None
    if program is not None:
        return program, key, True
    program = compile_program(config)
    if cache is not None:
        cache.put(key, program)
    return program, key, False


class Probe:
    """The loaded program and its output buffer.

    `read()` takes a bounded batch of raw records; `stop_producing()`
    detaches the programs, so what follows is a drain of what was captured
    while recording; `lost()` says what the kernel (and, in perf mode, the
    bounded queue) could not hand over, `handed_over()` what it did, taken
    by the recorder or not.

    The program is compiled by bcc or taken from the cache
    (wtrec.capture.bpf_cache), then loaded and attached through the bpf()
    system call (wtrec.capture.bpf_syscall): one path either way.
    """

    def __init__(self, config: ProbeConfig, *, cache_dir: Path | None = None,
                 use_cache: bool = True):
        """Loads and attaches the program; `cache_dir` (default: WTREC_BPF_CACHE or
        /var/cache/wtrec/bpf) keeps compiled programs unless `use_cache` is False."""
        self.config = config
        self._queue: deque[bytes] = deque()
        self._queued_bytes = [0]  # a cell the perf callback updates
        self._dropped = RecordCounts()
        self._ring: RingReader | None = None
        self._perf: PerfReaders | None = None
        self._detaching: ThreadPoolExecutor | None = None
        self._map_fds: dict[str, int] = {}
        self._shapes: dict[str, MapShape] = {}
        self._program_fds: dict[str, int] = {}
        self._raw_links: list[int] = []
        self._tracepoint_links: list[int] = []  # tracepoints and uprobes: slow to detach
        self._unloaded: dict[str, bytes] = {}  # functions loaded when attached (uprobes)
        self._license = ""
        if cache_dir is None and use_cache:
            cache_dir = cache_dir_from_environment(os.environ)
        cache = ProgramCache(cache_dir) if use_cache and cache_dir is not None else None
        program, key, cached = program_for(config, cache)
        try:
            try:
                self._load(program)
            except ProbeError:
                if cache is None or not cached:
                    raise
                # A cached program this kernel refuses: compile it afresh, once.
                self.close()
                cache.remove(key)
                program = compile_program(config)
                self._load(program)
                cache.put(key, program)
        except BaseException:
            self.close()
            raise

    def _load(self, program: CompiledProgram) -> None:
        fds = []
        for shape in program.maps:
            fd = create_map(shape)
            fds.append(fd)
            self._map_fds[shape.name] = fd
            self._shapes[shape.name] = shape
        # Raw tracepoint and tracepoint programs are loaded now; any other
        # function (a uprobe's) when attach_uprobe names it, with its type.
        raw_tracepoint_programs = {name for _tp, name in RAW_TRACEPOINTS} | set(SHARED_PROGRAMS)
        loaded: dict[str, int] = {}
        self._license = program.license
        for name, code in program.functions.items():
            if name.startswith("tracepoint__"):
                prog_type = PROG_TYPE_TRACEPOINT
            elif name in raw_tracepoint_programs:
                prog_type = PROG_TYPE_RAW_TRACEPOINT
            else:
                self._unloaded[name] = with_map_fds(code, fds)
                continue
            loaded[name] = load_program(name, prog_type, with_map_fds(code, fds), program.license)
            self._program_fds[name] = loaded[name]
        missing = [name for _tp, name in RAW_TRACEPOINTS if name not in loaded]
        missing += [name for name in SHARED_PROGRAMS if name not in loaded]
        if missing:
            raise ProbeError(f"the BPF program has no function {', '.join(missing)}")
        self._fill_maps()
        # Everything is loaded and the tail-called programs are in place
        # before the first attach: capture is whole from its first event.
        for index, name in enumerate(SHARED_PROGRAMS):
            self._update("programs", U32.pack(index), U32.pack(loaded[name]))
        for name, fd in loaded.items():
            if name.startswith("tracepoint__"):
                category, event = name[len("tracepoint__"):].split("__", 1)
                self._tracepoint_links.append(tracepoint_attach(category, event, fd))
        for tracepoint, name in RAW_TRACEPOINTS:
            self._raw_links.append(raw_tracepoint_open(tracepoint, loaded[name]))
        self._open_buffer()

    def _update(self, table: str, key: bytes, value: bytes) -> None:
        try:
            map_update(self._map_fds[table], key, value)
        except KeyError:
            raise ProbeError(f"the BPF program has no map {table}") from None
        except OSError as exc:
            raise ProbeError(f"cannot update BPF map {table}: {exc.strerror}") from None

    def _fill_maps(self) -> None:
        one = b"\x01"
        self._update("settings", U32.pack(0), U32.pack(self.config.self_tgid))
        for name in self.config.wanted_syscalls():
            self._update("wanted", U32.pack(SYSCALL_IDS[name]), one)
        if self.config.trace_all:
            return
        table = "comm_list" if self.config.comm_list_size() else "comm_filter"
        for index, comm in enumerate(self.config.comms):
            key = comm.encode()[:15].ljust(16, b"\0")
            if table == "comm_list":
                self._update(table, U32.pack(index), key)
            else:
                self._update(table, key, one)
        for pid in self.config.pids:
            self.add_pid(pid)

    def attach_uprobe(self, path: str, offset: int, function: str, *,
                      retprobe: bool = False, pid: int = -1) -> None:
        """Runs `function` (a uprobe program of the BPF source) at a file offset of an
        ELF file (see wtrec.capture.elf_symbols), in every process that maps it, or
        with `pid` in that process alone.

        Detached by stop_producing(), like the tracepoints.
        """
        if function not in self._program_fds:
            code = self._unloaded.get(function)
            if code is None:
                raise ProbeError(f"the BPF program has no uprobe function {function}")
            self._program_fds[function] = load_program(function, PROG_TYPE_KPROBE, code,
                                                       self._license)
        self._tracepoint_links.append(
            uprobe_attach(path, offset, self._program_fds[function], retprobe=retprobe,
                          pid=pid))

    def attach_tls(self, targets: "Sequence[AttachTarget]",
                   pids: "Sequence[int]" = ()) -> list[str]:
        """Places a uprobe and a uretprobe on each TLS entry point; returns what failed.

        At the entry point's file offset (tls_libraries/elf_symbols), for
        every process mapping the file (the BPF side applies the session's
        filters, which also covers children and later programs), or with
        `pids` (-p alone) in those processes only, so that other processes
        using the library pay no trap (~10 us a call on this VM).
        Detached by stop_producing(), like the tracepoints.
        """
        failures = []
        for target in targets:
            program = target.symbol.lower()
            try:
                if target.file_offset is None:
                    raise ProbeError("no file offset for the symbol")
                for pid in pids or (-1,):
                    self.attach_uprobe(target.path, target.file_offset,
                                       f"tls_enter_{program}", pid=pid)
                    self.attach_uprobe(target.path, target.file_offset,
                                       f"tls_leave_{program}", retprobe=True, pid=pid)
            except ProbeError as exc:
                failures.append(f"{target.path} {target.symbol}: {exc.message}")
        return failures

    def add_pid(self, pid: int) -> None:
        """Traces one more process (with follow: and its future children)."""
        if not self.config.pid_filter():
            raise ProbeError("this probe was built without a pid filter (no -p, no follow)")
        self._update("pid_filter", U32.pack(pid), b"\x01")

    def _open_buffer(self) -> None:
        events = self._map_fds["events"]
        if not self.config.use_perf:
            self._ring = RingReader(events, self.config.buffer_pages() * PAGE_SIZE)
            return
        queue, queued, dropped = self._queue, self._queued_bytes, self._dropped

        def on_perf(data: int, size: int) -> None:
            if queued[0] < MAX_QUEUED_BYTES:
                queue.append(ctypes.string_at(data, size))
                queued[0] += size
                return
            # Full: what cannot be taken is counted lost, like the kernel does.
            # A dropped chunk needs no count: its event arrives incomplete.
            kind = ctypes.cast(data, ctypes.POINTER(ctypes.c_uint32))[0] if size >= 4 else 0
            if kind in (KIND_EVENT, KIND_TLS):  # a TLS call is an event too
                dropped.events += 1
            elif kind == KIND_FD:
                dropped.fd_notes += 1

        # Waking the reader for every event costs ~10 us a write; wake it
        # every PERF_WAKEUP_EVENTS and let the timer consume the stragglers.
        self._perf = PerfReaders(on_perf, page_count=self.config.perf_pages_per_cpu(),
                                 wakeup_events=PERF_WAKEUP_EVENTS)
        for cpu, fd in self._perf.fds_by_cpu():
            self._update("events", U32.pack(cpu), U32.pack(fd))

    def read(self, max_bytes: int) -> list[memoryview] | list[bytes]:
        """Raw records the kernel has handed over, about `max_bytes` at most, oldest first.

        Never waits: the caller sleeps between calls when little arrived.
        """
        if self._ring is not None:
            return self._ring.read(max_bytes)
        if self._perf is not None and self._queued_bytes[0] < MAX_QUEUED_BYTES:
            self._perf.consume()
        taken: list[bytes] = []
        size = 0
        queue = self._queue
        while queue and size < max_bytes:
            raw = queue.popleft()
            taken.append(raw)
            size += len(raw)
        self._queued_bytes[0] -= size
        return taken

    def peek_ring(self, max_bytes: int) -> bytes | None:
        """Ring buffer mode: about `max_bytes` of the kernel's bytes, as RingReader.peek;
        None in perf buffer mode (then `read`). `release_ring` says what was used."""
        return None if self._ring is None else self._ring.peek(max_bytes)

    def release_ring(self, used: int) -> None:
        if self._ring is not None:
            self._ring.advance(used)

    def stop_producing(self) -> None:
        """Detaches the syscall programs: no event is captured after this returns.

        The tracepoints (tcp, fork) are detached in the background: each
        detach waits ~0.1 s or more in the kernel, time the drain can use.
        """
        for fd in self._raw_links:
            os.close(fd)
        self._raw_links = []
        links, self._tracepoint_links = self._tracepoint_links, []
        self._detaching = ThreadPoolExecutor(max_workers=max(1, len(links)))
        for fd in links:
            self._detaching.submit(os.close, fd)

    def skip_unread(self) -> None:
        """Releases what is still waiting (for a stop that cannot wait for it)."""
        if self._ring is not None:
            self._ring.skip_all()
        self._queue.clear()
        self._queued_bytes[0] = 0

    def _count(self, slot: int) -> int:
        shape = self._shapes["counts"]
        raw = map_lookup(self._map_fds["counts"], U32.pack(slot), percpu_value_size(shape))
        return sum(value for (value,) in U64.iter_unpack(raw)) if raw else 0

    def lost(self) -> RecordCounts:
        """Events and fd notes lost so far, every cause, all CPUs."""
        return RecordCounts(
            events=self._count(COUNT_LOST_EVENTS) + self._dropped.events,
            fd_notes=self._count(COUNT_LOST_FD_NOTES) + self._dropped.fd_notes)

    def unfollowed(self) -> int:
        """New processes that were not traced because the process table was full."""
        return self._count(COUNT_UNFOLLOWED)

    def handed_over(self) -> RecordCounts:
        """Event records and fd notes sent to user space and not dropped there."""
        return RecordCounts(
            events=self._count(COUNT_SENT_EVENTS) - self._dropped.events,
            fd_notes=self._count(COUNT_SENT_FD_NOTES) - self._dropped.fd_notes)

    def program_stats(self) -> dict[str, tuple[int, int]]:
        """Per program: (run_time_ns, run_cnt), counted while kernel.bpf_stats_enabled is 1.

        A tail-called program's time is part of its caller's.
        """
        stats = {}
        for name, fd in self._program_fds.items():
            fields = dict(line.split(":", 1) for line in
                          Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines() if ":" in line)
            stats[name] = (int(fields.get("run_time_ns", "0")), int(fields.get("run_cnt", "0")))
        return stats

    def close(self) -> None:
        """Detaches what is still attached and frees the programs, maps and buffer."""
        if self._raw_links or self._tracepoint_links:
            self.stop_producing()
        if self._detaching is not None:
            self._detaching.shutdown(wait=True)
            self._detaching = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._perf is not None:
            self._perf.close()
            self._perf = None
        for fd in [*self._program_fds.values(), *self._map_fds.values()]:
            os.close(fd)
        self._program_fds = {}
        self._map_fds = {}


class PerfReaders:
    """The perf buffer's per-CPU readers, through libbcc's perf reader (no compile).

    `on_record(address, size)` is called for each record as it is consumed.
    """

    _RAW_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.py_object, ctypes.c_void_p, ctypes.c_int)
    _LOST_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.py_object, ctypes.c_ulonglong)

    class _Options(ctypes.Structure):
        _fields_ = [("pid", ctypes.c_int), ("cpu", ctypes.c_int), ("wakeup_events", ctypes.c_int)]

    def __init__(self, on_record, *, page_count: int, wakeup_events: int):
        try:
            lib = ctypes.CDLL("libbcc.so.0")
        except OSError as exc:
            raise BccMissingError(f"cannot load libbcc ({exc}): install python3-bpfcc") from None
        lib.bpf_open_perf_buffer_opts.restype = ctypes.c_void_p
        lib.bpf_open_perf_buffer_opts.argtypes = [
            self._RAW_CALLBACK, self._LOST_CALLBACK, ctypes.py_object, ctypes.c_int,
            ctypes.POINTER(self._Options)]
        lib.perf_reader_consume.restype = ctypes.c_int
        lib.perf_reader_consume.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
        lib.perf_reader_free.restype = None
        lib.perf_reader_free.argtypes = [ctypes.c_void_p]
        lib.perf_reader_fd.restype = ctypes.c_int
        lib.perf_reader_fd.argtypes = [ctypes.c_void_p]
        self._lib = lib
        # Kept referenced: libbcc calls it for as long as the readers live.
        self._callback = self._RAW_CALLBACK(lambda _cookie, data, size: on_record(data, size))
        self._no_lost = self._LOST_CALLBACK()  # NULL: the BPF side counts losses
        self._readers: list[tuple[int, int]] = []
        for cpu in _online_cpus():
            options = self._Options(pid=-1, cpu=cpu, wakeup_events=wakeup_events)
            reader = lib.bpf_open_perf_buffer_opts(self._callback, self._no_lost, None,
                                                   page_count, ctypes.byref(options))
            if not reader:
                self.close()
                raise ProbeError(f"cannot open the perf buffer of CPU {cpu}")
            self._readers.append((cpu, reader))
        self._array = (ctypes.c_void_p * len(self._readers))(*[r for _c, r in self._readers])

    def fds_by_cpu(self) -> list[tuple[int, int]]:
        return [(cpu, self._lib.perf_reader_fd(reader)) for cpu, reader in self._readers]

    def consume(self) -> None:
        self._lib.perf_reader_consume(len(self._readers), self._array)

    def close(self) -> None:
        for _cpu, reader in self._readers:
            self._lib.perf_reader_free(reader)
        self._readers = []


def _online_cpus() -> list[int]:
    cpus: list[int] = []
    for part in Path("/sys/devices/system/cpu/online").read_text().strip().split(","):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus
