"""Compiled BPF programs kept between runs, so a recording starts without clang.

bcc compiles the program every run (about a second: clang). The bytecode
depends only on what went into the compile, so it is kept, named by a
hash of all of it: the BPF sources, the -D flags, the running kernel
(release, build and machine), the kernel headers bcc used, the format of
the tracepoints the program reads, the CPU count (the perf buffer map has
one slot per CPU) and bcc itself. Anything different is another name:
a stale entry is never used, only left to be pruned.

The cache feeds programs to the kernel as root, so it is only read from,
and written to, a directory that nobody but root can change: every
component from / down is a real directory (no symbolic link is followed)
owned by root and not writable by group or others (a sticky directory
such as /tmp is allowed above it), and each entry is a regular root-owned
file of mode 0600. Anything else and the cache is not used: the program
is compiled as before. The kernel's verifier checks cached bytecode like
any other, so a damaged entry can only fail to load (then it is removed
and the program compiled again).
"""

import base64
import hashlib
import importlib.util
import json
import os
import platform
import stat
from collections.abc import Iterable
from pathlib import Path

from wtrec.capture.bpf_syscall import CompiledProgram, MapShape, possible_cpus

DEFAULT_CACHE_DIR = Path("/var/cache/wtrec/bpf")
CACHE_ENV = "WTREC_BPF_CACHE"  # "off", or a directory (checked like the default)
FORMAT = 1
SUFFIX = ".bpfo"
MAX_ENTRIES = 32  # older entries are removed when a new one is written
_TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


def cache_dir_from_environment(environ: dict[str, str] | os._Environ) -> Path | None:
    """Where the cache lives: WTREC_BPF_CACHE (a directory, or "off"), else the default."""
    value = environ.get(CACHE_ENV, "")
    if value == "off":
        return None
    return Path(value) if value else DEFAULT_CACHE_DIR


def cache_key(*, sources: Iterable[Path], cflags: list[str],
              tracepoints: Iterable[tuple[str, str]]) -> str:
    """The name of a compile: a hash of everything its bytecode depends on."""
    uname = os.uname()
    parts: dict[str, object] = {
        "format": FORMAT,
        "cflags": cflags,
        "sources": {path.name: path.read_text() for path in sorted(sources)},
        "kernel": [uname.release, uname.version, platform.machine()],
        "cpus": possible_cpus(),
        "headers": _stat_text(Path("/lib/modules") / uname.release / "build", follow=True),
        "bcc": _bcc_identity(),
        "tracepoints": {f"{category}:{event}": _tracepoint_format(category, event)
                        for category, event in tracepoints},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _stat_text(path: Path, follow: bool) -> str:
    try:
        real = path.resolve() if follow else path
        info = real.stat()
    except OSError:
        return "missing"
    return f"{real} {info.st_mtime_ns} {info.st_size}"


def _bcc_identity() -> str:
    try:
        spec = importlib.util.find_spec("bcc")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        return "missing"
    return _stat_text(Path(spec.origin), follow=True)


def _tracepoint_format(category: str, event: str) -> str:
    for tracefs in _TRACEFS:
        try:
            return (tracefs / "events" / category / event / "format").read_text()
        except OSError:
            continue
    return "missing"


def encode(program: CompiledProgram) -> bytes:
    return json.dumps({
        "format": FORMAT,
        "license": program.license,
        "maps": [[shape.name, shape.map_type, shape.key_size, shape.value_size,
                  shape.max_entries, shape.flags] for shape in program.maps],
        "functions": {name: base64.b64encode(code).decode()
                      for name, code in program.functions.items()},
    }).encode()


def decode(data: bytes) -> CompiledProgram | None:
    """The program in a cache entry, or None if it is not one."""
    try:
        document = json.loads(data)
        if document["format"] != FORMAT:
            return None
        maps = tuple(MapShape(str(name), int(kind), int(key), int(value), int(entries), int(flags))
                     for name, kind, key, value, entries, flags in document["maps"])
        functions = {str(name): base64.b64decode(code, validate=True)
                     for name, code in document["functions"].items()}
        license = str(document["license"])
    except (ValueError, KeyError, TypeError):
        return None
    if any(len(code) % 8 for code in functions.values()):
        return None
    return CompiledProgram(license, maps, functions)


class ProgramCache:
    """Entries in one trusted directory; every method fails quietly (then: compile)."""

    def __init__(self, directory: Path):
        self.directory = directory

    def _open_dir(self, create: bool) -> int | None:
        """An fd of the directory, if it and every parent is safe; None otherwise."""
        if not self.directory.is_absolute():
            return None
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        try:
            parts = self.directory.parts[1:]
            for number, part in enumerate(parts):
                child = self._open_child(fd, part, create)
                os.close(fd)
                fd = child
                if not _trusted(os.fstat(fd), last=number == len(parts) - 1):
                    return None
            result, fd = fd, -1
            return result
        except OSError:
            return None
        finally:
            if fd >= 0:
                os.close(fd)

    @staticmethod
    def _open_child(parent_fd: int, name: str, create: bool) -> int:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        try:
            return os.open(name, flags, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            pass
        return os.open(name, flags, dir_fd=parent_fd)

    def get(self, key: str) -> CompiledProgram | None:
        dir_fd = self._open_dir(create=False)
        if dir_fd is None:
            return None
        try:
            fd = os.open(key + SUFFIX, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        except OSError:
            return None
        finally:
            os.close(dir_fd)
        with os.fdopen(fd, "rb") as entry:
            info = os.fstat(entry.fileno())
            if (not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid()
                    or info.st_mode & 0o077):
                return None
            return decode(entry.read())

    def put(self, key: str, program: CompiledProgram) -> None:
        dir_fd = self._open_dir(create=True)
        if dir_fd is None:
            return
        temporary = f".{key}.{os.getpid()}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                         dir_fd=dir_fd)
            with os.fdopen(fd, "wb") as entry:
                entry.write(encode(program))
            os.rename(temporary, key + SUFFIX, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            self._prune(dir_fd)
        except OSError:
            try:
                os.unlink(temporary, dir_fd=dir_fd)
            except OSError:
                pass
        finally:
            os.close(dir_fd)

    def remove(self, key: str) -> None:
        dir_fd = self._open_dir(create=False)
        if dir_fd is None:
            return
        try:
            os.unlink(key + SUFFIX, dir_fd=dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)

    def _prune(self, dir_fd: int) -> None:
        entries = []
        for name in os.listdir(dir_fd):
            if name.endswith(SUFFIX):
                try:
                    entries.append((os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                                    .st_mtime_ns, name))
                except OSError:
                    continue
        for _mtime, name in sorted(entries)[:-MAX_ENTRIES]:
            try:
                os.unlink(name, dir_fd=dir_fd)
            except OSError:
                pass


def _trusted(info: os.stat_result, last: bool) -> bool:
    """Only root (or the caller) can change it: owned so, not writable by others.

    A root-owned sticky directory (/tmp) may be a parent, never the cache itself.
    """
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (0, os.geteuid()):
        return False
    if not info.st_mode & 0o022:
        return True
    return not last and bool(info.st_mode & stat.S_ISVTX) and info.st_uid == 0
