"""The bpf() and perf_event_open() system calls wtrec needs, through ctypes.

Loads a compiled program (`CompiledProgram`: its maps' shapes and each
function's bytecode) without bcc: creates the maps, puts their fds into
the bytecode's map references, loads the functions, attaches them to raw
tracepoints (BPF_RAW_TRACEPOINT_OPEN) or tracepoints (a perf event with
PERF_EVENT_IOC_SET_BPF), and reads and writes map entries. The kernel's
verifier checks every program as it would bcc's; this module only moves
bytes. Where the program comes from (bcc's compile, or the cache of an
earlier one) is wtrec.capture.probe's business.
"""

import ctypes
import errno
import os
import platform
import re
import resource
import struct
from dataclasses import dataclass
from pathlib import Path

from wtrec.errors import ProbeError

_NR_BPF = {"x86_64": 321, "aarch64": 280}
_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}

# bpf() commands (include/uapi/linux/bpf.h).
_MAP_CREATE, _MAP_LOOKUP_ELEM, _MAP_UPDATE_ELEM = 0, 1, 2
_PROG_LOAD, _OBJ_GET_INFO_BY_FD, _RAW_TRACEPOINT_OPEN = 5, 15, 17
PROG_TYPE_KPROBE = 2  # kprobes and uprobes
PROG_TYPE_TRACEPOINT = 5
PROG_TYPE_RAW_TRACEPOINT = 17
MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY, MAP_TYPE_LRU_PERCPU_HASH = 5, 6, 10
_PERCPU_MAPS = {MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY, MAP_TYPE_LRU_PERCPU_HASH}
_PSEUDO_MAP_FD = 1
_LD_IMM64 = 0x18
_INSN = struct.Struct("<BBhi")  # code, dst:4|src:4, offset, imm

# perf_event_open for a tracepoint, then attach the program to it.
_PERF_TYPE_TRACEPOINT = 2
_PERF_SAMPLE_RAW = 1 << 10
_PERF_FLAG_FD_CLOEXEC = 1 << 3
_PERF_EVENT_IOC_ENABLE = 0x2400
_PERF_EVENT_IOC_SET_BPF = 0x40042408
_TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
_UPROBE_PMU = Path("/sys/bus/event_source/devices/uprobe")
_LOG_BYTES = 1 << 20
_VERIFIER_NOISE = re.compile(r"\d+: |processed |verification time|stack depth|cur state|old state"
                             r"|from \d+ to \d+|last_idx|regs=|parent didn't")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@dataclass(frozen=True)
class MapShape:
    """What BPF_MAP_CREATE needs to make a map again."""

    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True)
class CompiledProgram:
    """A compiled BPF object: maps, and each function's bytecode.

    In `functions`, a map reference's immediate holds the map's index in
    `maps` (not an fd: fds belong to the process that made them).
    """

    license: str
    maps: tuple[MapShape, ...]
    functions: dict[str, bytes]


def _arch_number(table: dict[str, int]) -> int:
    machine = platform.machine()
    if machine not in table:
        raise ProbeError(f"wtrec loads BPF programs on x86_64 and arm64 only, not {machine}")
    return table[machine]


def _bpf(command: int, attr: ctypes.Array) -> int:
    result = _libc.syscall(_arch_number(_NR_BPF), command, ctypes.byref(attr), ctypes.sizeof(attr))
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return int(result)


def _attr(size: int = 128) -> ctypes.Array:
    return ctypes.create_string_buffer(size)


def map_shape(fd: int) -> MapShape:
    """The shape of an existing map, as the kernel holds it."""
    info = ctypes.create_string_buffer(88)
    attr = _attr()
    struct.pack_into("<IIQ", attr, 0, fd, len(info), ctypes.addressof(info))
    _bpf(_OBJ_GET_INFO_BY_FD, attr)
    map_type, _id, key_size, value_size, max_entries, flags = struct.unpack_from("<6I", info, 0)
    name = info.raw[24:40].split(b"\0", 1)[0].decode()
    return MapShape(name, map_type, key_size, value_size, max_entries, flags)


def create_map(shape: MapShape) -> int:
    attr = _attr()
    struct.pack_into("<5I", attr, 0, shape.map_type, shape.key_size, shape.value_size,
                     shape.max_entries, shape.flags)
    struct.pack_into("16s", attr, 28, shape.name.encode()[:15])
    try:
        return _bpf(_MAP_CREATE, attr)
    except PermissionError:
        # Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK (bcc raised
        # it when it loaded; so does libbpf): raise it and try once more.
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK,
                               (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            return _bpf(_MAP_CREATE, attr)
        except (OSError, ValueError) as exc:
            raise ProbeError(f"cannot create BPF map {shape.name}: {exc}") from None
    except OSError as exc:
        raise ProbeError(f"cannot create BPF map {shape.name}: {exc.strerror}") from None


def possible_cpus() -> int:
    """How many CPUs a per-CPU map holds a value for (0-N in the kernel's list)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


def map_update(fd: int, key: bytes, value: bytes) -> None:
    key_buffer = ctypes.create_string_buffer(key, len(key))
    value_buffer = ctypes.create_string_buffer(value, len(value))
    attr = _attr()
    struct.pack_into("<IIQQQ", attr, 0, fd, 0, ctypes.addressof(key_buffer),
                     ctypes.addressof(value_buffer), 0)
    _bpf(_MAP_UPDATE_ELEM, attr)


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value at `key` (per-CPU maps: all CPUs' values, each padded to 8 bytes)."""
    key_buffer = ctypes.create_string_buffer(key, len(key))
    value_buffer = ctypes.create_string_buffer(value_size)
    attr = _attr()
    struct.pack_into("<IIQQQ", attr, 0, fd, 0, ctypes.addressof(key_buffer),
                     ctypes.addressof(value_buffer), 0)
    try:
        _bpf(_MAP_LOOKUP_ELEM, attr)
    except FileNotFoundError:
        return None
    return value_buffer.raw


def percpu_value_size(shape: MapShape) -> int:
    return ((shape.value_size + 7) & ~7) * possible_cpus()


def map_references(code: bytes) -> list[tuple[int, int]]:
    """(instruction index, immediate) of each map reference (ld_imm64 of a map fd)."""
    found = []
    for index in range(0, len(code) // 8):
        opcode, registers, _offset, imm = _INSN.unpack_from(code, index * 8)
        if opcode == _LD_IMM64 and registers >> 4 == _PSEUDO_MAP_FD:
            found.append((index, imm))
    return found


def with_map_fds(code: bytes, fds: list[int]) -> bytes:
    """Bytecode whose map references, holding map indexes, hold fds[index] instead."""
    patched = bytearray(code)
    for index, map_index in map_references(code):
        if not 0 <= map_index < len(fds) or fds[map_index] < 0:
            raise ProbeError(f"BPF bytecode refers to map {map_index}, which it does not have")
        struct.pack_into("<i", patched, index * 8 + 4, fds[map_index])
    return bytes(patched)


def load_program(name: str, prog_type: int, code: bytes, license: str) -> int:
    """Loads one function; on refusal, the verifier's last words are in the error."""
    code_buffer = ctypes.create_string_buffer(code, len(code))
    license_buffer = ctypes.create_string_buffer(license.encode())

    def attempt(log: ctypes.Array | None) -> int:
        attr = _attr()
        struct.pack_into("<IIQQIIQ", attr, 0, prog_type, len(code) // 8,
                         ctypes.addressof(code_buffer), ctypes.addressof(license_buffer),
                         1 if log is not None else 0, len(log) if log is not None else 0,
                         ctypes.addressof(log) if log is not None else 0)
        struct.pack_into("16s", attr, 48, name.encode()[:15])
        return _bpf(_PROG_LOAD, attr)

    for _ in range(3):
        try:
            return attempt(None)
        except InterruptedError:
            continue  # the verifier stops on a signal; that is no verdict
        except OSError as exc:
            if exc.errno != errno.EACCES and exc.errno != errno.EINVAL:
                raise ProbeError(f"cannot load BPF program {name}: {exc.strerror}") from None
            break
    log = ctypes.create_string_buffer(_LOG_BYTES)
    try:
        return attempt(log)
    except OSError as exc:
        # The verifier's verdict is its last line that is not an instruction,
        # a register state or a statistic.
        lines = [line for line in log.value.decode("utf-8", "replace").splitlines()
                 if line and not _VERIFIER_NOISE.match(line)]
        detail = lines[-1] if lines else exc.strerror
        raise ProbeError(f"the kernel refused BPF program {name}: {detail}") from None


def raw_tracepoint_open(tracepoint: str, prog_fd: int) -> int:
    """Attaches to a raw tracepoint; closing the returned fd detaches."""
    name = ctypes.create_string_buffer(tracepoint.encode())
    attr = _attr()
    struct.pack_into("<QI", attr, 0, ctypes.addressof(name), prog_fd)
    try:
        return _bpf(_RAW_TRACEPOINT_OPEN, attr)
    except OSError as exc:
        raise ProbeError(f"cannot attach to raw tracepoint {tracepoint}: {exc.strerror}") from None


def _perf_event_attach(attr: ctypes.Array, prog_fd: int, what: str, pid: int = -1) -> int:
    """Opens a perf event and runs the program on it; closing the returned fd detaches.

    pid -1: any process, CPU 0 (a BPF program runs on every CPU); a pid:
    that process only, on any CPU (a uprobe then fires in that process
    alone, and other processes mapping the file pay no trap)."""
    cpu = 0 if pid < 0 else -1
    fd = _libc.syscall(_arch_number(_NR_PERF_EVENT_OPEN), ctypes.byref(attr), pid, cpu, -1,
                       _PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        error = ctypes.get_errno()
        raise ProbeError(f"cannot open {what}: {os.strerror(error)}")
    for request, argument in ((_PERF_EVENT_IOC_SET_BPF, prog_fd), (_PERF_EVENT_IOC_ENABLE, 0)):
        if _libc.ioctl(fd, ctypes.c_ulong(request), ctypes.c_int(argument)) < 0:
            error = ctypes.get_errno()
            os.close(fd)
            raise ProbeError(f"cannot attach to {what}: {os.strerror(error)}")
    return int(fd)


def uprobe_attach(path: str, offset: int, prog_fd: int, *, retprobe: bool = False,
                  pid: int = -1) -> int:
    """Attaches a uprobe (or uretprobe) at a file offset of an ELF file, for every
    process that maps it (or, with `pid`, for that process alone, its threads
    included, not its children); closing the returned fd detaches."""
    try:
        pmu_type = int((_UPROBE_PMU / "type").read_text())
        # "config:0": the bit of attr.config that makes it a return probe.
        retprobe_bit = int((_UPROBE_PMU / "format" / "retprobe").read_text().split(":")[1])
    except (OSError, ValueError, IndexError):
        raise ProbeError("this kernel has no uprobe perf events") from None
    path_buffer = ctypes.create_string_buffer(os.fsencode(path))
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQQ", attr, 0, pmu_type, 128, (1 << retprobe_bit) if retprobe else 0,
                     1, _PERF_SAMPLE_RAW)
    struct.pack_into("<QQ", attr, 56, ctypes.addressof(path_buffer), offset)  # config1, config2
    # The kernel copies the path during perf_event_open: the buffer need not outlive it.
    where = "" if pid < 0 else f" in pid {pid}"
    return _perf_event_attach(attr, prog_fd, f"uprobe {path}+{offset:#x}{where}", pid)


def tracepoint_attach(category: str, event: str, prog_fd: int) -> int:
    """Attaches to a tracepoint through a perf event; closing the returned fd detaches."""
    for tracefs in _TRACEFS:
        id_file = tracefs / "events" / category / event / "id"
        if id_file.exists():
            break
    else:
        raise ProbeError(f"tracepoint {category}:{event} not found in tracefs")
    attr = ctypes.create_string_buffer(128)  # struct perf_event_attr, PERF_ATTR_SIZE_VER7
    struct.pack_into("<IIQQQ", attr, 0, _PERF_TYPE_TRACEPOINT, 128,
                     int(id_file.read_text()), 1, _PERF_SAMPLE_RAW)
    return _perf_event_attach(attr, prog_fd, f"tracepoint {category}:{event}")
