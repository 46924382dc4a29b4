"""Finds the TLS library functions `record --tls` attaches uprobes to.

Owns which functions count as TLS entry points (`ENTRY_POINTS`: OpenSSL and
what BoringSSL and LibreSSL name alike, GnuTLS, wolfSSL) and where to look
for them: in what a process maps (its executable and shared libraries, from
/proc/PID/maps, so node's built-in OpenSSL or a wolfSSL linked in statically
is found), or for -c/--all in the system's libraries (`ldconfig -p`) plus the
paths named with --tls-lib. Returns attach targets (file, symbol, family,
file offset) and the lines that tell the user what was found; the probe
module turns targets into uprobes. Plain Python, testable without root.
"""

import os
import platform
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from wtrec.capture.elf_symbols import ElfError, ElfFile, is_elf
from wtrec.errors import UsageError

PROC = Path("/proc")


@dataclass(frozen=True)
class EntryPoint:
    """One TLS library function and how its arguments and result are read.

    `length` says where the plaintext's length is after the call: "return"
    (the return value, when positive) or "out_param" (the _ex forms return
    1 on success and store the length through their 4th argument).
    `returns` is the C return type's width: "int" (upper half of the
    register is not the callee's to set) or "ssize".
    """

    symbol: str
    family: str
    direction: str  # "out" (write) or "in" (read)
    length: str = "return"
    returns: str = "int"


ENTRY_POINTS = (
    EntryPoint("SSL_write", "openssl", "out"),
    EntryPoint("SSL_write_ex", "openssl", "out", length="out_param"),
    EntryPoint("SSL_read", "openssl", "in"),
    EntryPoint("SSL_read_ex", "openssl", "in", length="out_param"),
    EntryPoint("gnutls_record_send", "gnutls", "out", returns="ssize"),
    EntryPoint("gnutls_record_recv", "gnutls", "in", returns="ssize"),
    EntryPoint("wolfSSL_write", "wolfssl", "out"),
    EntryPoint("wolfSSL_read", "wolfssl", "in"),
)
ENTRY_POINT_BY_SYMBOL = {entry.symbol: entry for entry in ENTRY_POINTS}
FAMILY_NAMES = {"openssl": "OpenSSL", "gnutls": "GnuTLS", "wolfssl": "wolfSSL"}

# For -c/--all only libraries whose file name says TLS are read (reading all
# ~1000 system libraries would take seconds); --tls-lib names any other file.
SYSTEM_LIBRARY_NAME = re.compile(r"^lib(ssl|gnutls|wolfssl)[.\-0-9]")

_MACHINE_NAMES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
                  "i686": "i386", "i386": "i386", "riscv64": "riscv"}


@dataclass(frozen=True)
class AttachTarget:
    """A uprobe to place: entry point `symbol` at `file_offset` in `path`."""

    path: str
    symbol: str
    family: str
    file_offset: int | None

    @property
    def entry(self) -> EntryPoint:
        return ENTRY_POINT_BY_SYMBOL[self.symbol]


@dataclass
class TlsSearch:
    """What a search found: targets, the objects it read, and what it had to skip."""

    where: str
    targets: list[AttachTarget] = field(default_factory=list)
    searched: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    read_files: set[tuple[int, int]] = field(default_factory=set, repr=False)  # (device, inode)

    def describe(self) -> list[str]:
        """Lines for stderr: each library with its entry points, or a clear none-found."""
        if not self.targets:
            families = ", ".join(FAMILY_NAMES.values())
            lines = [f"--tls: no TLS library found in {self.where} (looked for {families} entry points "
                     f"in {len(self.searched)} objects); syscalls only"]
        else:
            lines = []
            by_path: dict[str, list[AttachTarget]] = {}
            for target in self.targets:
                by_path.setdefault(target.path, []).append(target)
            for path, targets in by_path.items():
                symbols = " ".join(target.symbol for target in targets)
                lines.append(f"--tls: {path} ({FAMILY_NAMES[targets[0].family]}): {symbols}")
        lines += [f"--tls: skipped {path}: {reason}" for path, reason in self.skipped]
        return lines


def host_machine() -> str:
    """The ELF machine name of the running system (uprobes go into same-machine code only)."""
    machine = platform.machine()
    return _MACHINE_NAMES.get(machine, machine)


def entry_points_in(path: str) -> list[AttachTarget]:
    """The TLS entry points `path` defines, one target per code address.

    Two names at one address (an alias) would fire one uprobe twice per call,
    so only the first name in ENTRY_POINTS order is kept. Raises ElfError.
    """
    with ElfFile(path) as elf:
        if elf.machine_name != host_machine():
            raise ElfError(f"built for {elf.machine_name}, this system is {host_machine()}")
        symbols = elf.defined_functions(ENTRY_POINT_BY_SYMBOL)
    order = {entry.symbol: index for index, entry in enumerate(ENTRY_POINTS)}
    targets = []
    addresses: set[int] = set()
    for symbol in sorted(symbols, key=lambda symbol: order[symbol.name]):
        if symbol.address in addresses:
            continue
        addresses.add(symbol.address)
        targets.append(AttachTarget(path, symbol.name, ENTRY_POINT_BY_SYMBOL[symbol.name].family,
                                    symbol.file_offset))
    return targets


def mapped_files(pid: int) -> list[tuple[str, int, int]]:
    """(path, device, inode) of each file a process maps, in map order, once each."""
    try:
        text = (PROC / str(pid) / "maps").read_text()
    except OSError as exc:
        raise UsageError(f"pid {pid}: cannot read its memory map ({exc.strerror})") from exc
    seen: dict[str, tuple[str, int, int]] = {}
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        path, device, inode = parts[5], parts[3], parts[4]
        try:
            major, minor = (int(number, 16) for number in device.split(":"))
            inode_number = int(inode)
        except ValueError:
            continue
        if inode_number and path not in seen:
            seen[path] = (path, os.makedev(major, minor), inode_number)
    return list(seen.values())


def _path_for(pid: int, path: str, device: int, inode: int) -> str | None:
    """A path to the very file the process maps, as seen from here.

    The process may live in another mount namespace (a container) or map a
    file since replaced on disk (an upgraded library): the mapped path is
    used when it still names the same inode, else the process's own root.
    """
    if path.endswith(" (deleted)"):
        return None
    for candidate in (path, f"/proc/{pid}/root{path}"):
        try:
            stat = os.stat(candidate)
        except OSError:
            continue
        if stat.st_ino == inode and stat.st_dev == device:
            return candidate
    return None


def search_process(pid: int) -> TlsSearch:
    """The TLS entry points in the executable and libraries process `pid` maps."""
    search = TlsSearch(where=f"pid {pid}")
    for path, device, inode in mapped_files(pid):
        usable = _path_for(pid, path, device, inode)
        if usable is None:
            if is_elf(path) or path.endswith(" (deleted)"):
                search.skipped.append((path, "the mapped file is gone or replaced on disk"))
            continue
        _read_into(search, usable, quiet_if_not_elf=True)
    return search


def ldconfig_libraries(listing: str) -> list[str]:
    """Paths of TLS-named libraries in `ldconfig -p` output, for this machine's ABI."""
    paths = []
    for line in listing.splitlines():
        match = re.match(r"\s+(\S+) \(([^)]*)\) => (\S.*)$", line)
        if match and SYSTEM_LIBRARY_NAME.match(match.group(1)):
            paths.append(match.group(3).strip())
    return paths


def search_paths(paths: Iterable[str]) -> TlsSearch:
    """The TLS entry points in each --tls-lib path.

    A path that is missing, not ELF, for another machine or without any
    entry point is a UsageError: the user named it, so silence would hide
    a typo.
    """
    search = TlsSearch(where="--tls-lib")
    for path in paths:
        if not os.path.isfile(path):
            raise UsageError(f"--tls-lib {path}: no such file")
        try:
            targets = entry_points_in(path)
        except ElfError as exc:
            raise UsageError(f"--tls-lib {path}: {exc.reason}") from exc
        if not targets:
            raise UsageError(f"--tls-lib {path}: defines none of "
                             f"{', '.join(entry.symbol for entry in ENTRY_POINTS)}")
        _add(search, path, targets)
    return search


def search_system(extra_paths: Iterable[str] = ()) -> TlsSearch:
    """The TLS entry points in the system's TLS libraries and in each --tls-lib path."""
    search = search_paths(extra_paths)
    search.where = "the system's libraries"
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        search.skipped.append(("ldconfig -p", f"cannot list the system's libraries ({exc})"))
        listing = ""
    for path in ldconfig_libraries(listing):
        _read_into(search, path, quiet_if_not_elf=False, quiet_if_foreign=True)
    return search


def search_executable(path: str, libraries: Iterable[str] = ()) -> TlsSearch:
    """The TLS entry points in one program (a command to start: node, a static build)
    and in the shared libraries it will load (see linked_libraries)."""
    search = TlsSearch(where=path)
    _read_into(search, path, quiet_if_not_elf=True)
    for library in libraries:
        _read_into(search, library, quiet_if_not_elf=True, quiet_if_foreign=True)
    return search


def programs_named(comms: Iterable[str]) -> list[str]:
    """The executables a `-c COMM` may name: the one on PATH, and what running processes
    of that comm execute (node carries OpenSSL inside its own executable)."""
    wanted = {comm[:15] for comm in comms}
    found = [path for path in (shutil.which(comm) for comm in wanted) if path]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", encoding="utf-8", errors="replace") as file:
                if file.read().rstrip("\n") not in wanted:
                    continue
            executable = os.readlink(f"/proc/{entry}/exe")
        except OSError:  # gone, or a kernel thread
            continue
        if not executable.endswith(" (deleted)"):
            found.append(executable)
    return list(dict.fromkeys(os.path.realpath(path) for path in found))


def linked_libraries(program: str, *, env: dict[str, str], user: int | None,
                     group: int | None) -> list[str]:
    """The shared libraries a dynamically linked program will load, as its loader resolves
    them (RPATH, RUNPATH, LD_LIBRARY_PATH, the cache): a libwolfssl in a build tree too.

    Asks the program's own interpreter (`ld.so --list`), as the user and with
    the environment the command will run with; the program itself never
    runs (a static program has no interpreter and is not asked: ld.so would
    run it). Whatever goes wrong gives no libraries: the system's are
    searched anyway.
    """
    try:
        with ElfFile(program) as elf:
            interpreter = elf.interpreter()
    except ElfError:
        return []
    if interpreter is None or not os.path.isabs(interpreter):
        return []
    try:
        listing = subprocess.run([interpreter, "--list", program], env=env, user=user,
                                 group=group, extra_groups=[] if user is not None else None,
                                 capture_output=True, text=True, errors="replace", timeout=10,
                                 stdin=subprocess.DEVNULL, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    paths = []
    for line in listing.splitlines():
        match = re.match(r"\s*\S+ => (/\S.*?) \(0x[0-9a-f]+\)$", line)
        if match:
            paths.append(match.group(1))
    return paths


def combine(where: str, searches: Iterable[TlsSearch]) -> TlsSearch:
    """One search from several: each file (by inode) once, what was skipped kept."""
    combined = TlsSearch(where=where)
    for search in searches:
        for path in search.searched:
            _add(combined, path, [t for t in search.targets if t.path == path])
        combined.skipped += [item for item in search.skipped if item not in combined.skipped]
    return combined


def _read_into(search: TlsSearch, path: str, *, quiet_if_not_elf: bool,
               quiet_if_foreign: bool = False) -> None:
    if quiet_if_not_elf and not is_elf(path):
        return  # fonts, locale archives, caches: mapped, but not code
    try:
        targets = entry_points_in(path)
    except ElfError as exc:
        if not (quiet_if_foreign and exc.reason.startswith("built for")):
            search.skipped.append((path, exc.reason))
        return
    _add(search, path, targets)


def _add(search: TlsSearch, path: str, targets: list[AttachTarget]) -> None:
    """Adds a file's targets unless the same file (by inode) was added already.

    /lib and /usr/lib name one file on merged-/usr systems; a uprobe is
    placed on the inode, so attaching through both would count every call twice.
    """
    try:
        stat = os.stat(path)
    except OSError as exc:
        search.skipped.append((path, exc.strerror or str(exc)))
        return
    if (stat.st_dev, stat.st_ino) in search.read_files:
        return
    search.read_files.add((stat.st_dev, stat.st_ino))
    search.searched.append(path)
    search.targets.extend(targets)
