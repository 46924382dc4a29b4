"""`wtrec doctor`: can `record` work here, and if not, the exact command that fixes each problem.

Each check is a function of what it looks at (paths, the kernel release,
facts about a Python interpreter), injected so a test can show it any
machine; `run_checks()` looks at this one. Checks only look: doctor changes
nothing. A check fails only when `record` would fail because of it; things
record can do without (BTF, uprobes, the ring buffer) are warnings.
bcc is never imported here (that is probe.py's job): whether it imports is
asked of the interpreter in a child process, which also proves libbcc loads.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from wtrec.capture.preflight import (
    CAP_BPF,
    CAP_PERFMON,
    CAP_SYS_ADMIN,
    TRACEFS_MOUNTS,
    effective_caps,
    kernel_has_ringbuf,
)

OK, WARN, FAIL = "ok", "warn", "fail"
SYSTEM_PYTHON = "/usr/bin/python3"
MIN_KERNEL = (4, 7)  # BPF programs on tracepoints arrived in 4.7


@dataclass(frozen=True)
class Check:
    """One finding: what was looked at, what was found, and the command that fixes it."""

    name: str
    status: str  # ok, warn or fail
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PythonFacts:
    """What an interpreter is, and whether `import bcc` works in it (None: it does)."""

    executable: str
    base_prefix: str
    prefix: str
    bcc_error: str | None


def kernel_version(release: str) -> tuple[int, int] | None:
    try:
        major, minor = (int(part) for part in release.split("-")[0].split(".")[:2])
    except ValueError:
        return None
    return major, minor


def check_kernel(release: str) -> Check:
    version = kernel_version(release)
    if version is None:
        return Check("kernel", WARN, f"{release}: cannot tell the version from this release name")
    if version < MIN_KERNEL:
        return Check("kernel", FAIL, f"{release}: BPF on tracepoints needs Linux 4.7 or later",
                     "boot a kernel of Linux 4.7 or later (5.8 or later for the ring buffer)")
    return Check("kernel", OK, f"{release} ({platform.machine() or 'unknown machine'})")


def check_btf(vmlinux: Path = Path("/sys/kernel/btf/vmlinux")) -> Check:
    if vmlinux.exists():
        return Check("btf", OK, f"{vmlinux} present")
    return Check("btf", WARN, f"{vmlinux} is missing; record does not need it (its probe reads "
                 "no kernel structs), other BPF tools may", "boot a kernel built with "
                 "CONFIG_DEBUG_INFO_BTF=y")


def check_bcc(this: PythonFacts, system: PythonFacts | None) -> Check:
    """bcc comes from the system's python3-bpfcc, for the system's python3 only.

    The trap: a pyenv (or other) Python, or a venv made without
    --system-site-packages, cannot see it even though it is installed.
    """
    if this.bcc_error is None:
        return Check("bcc", OK, f"importable from {this.executable}")
    in_venv = this.prefix != this.base_prefix
    same_base = system is not None and (os.path.realpath(this.base_prefix)
                                        == os.path.realpath(system.base_prefix))
    if system is None or system.bcc_error is not None:
        install = "apt install python3-bpfcc"
        if same_base:
            return Check("bcc", FAIL, f"bcc is not installed ({this.bcc_error})", install)
        return Check("bcc", FAIL, f"bcc is not installed, and {this.executable} is not the "
                     f"system's python3 that python3-bpfcc is packaged for",
                     f"{install} && {_new_venv()}")
    if same_base and in_venv:
        config = Path(this.prefix) / "pyvenv.cfg"
        return Check("bcc", FAIL, f"bcc is installed for {SYSTEM_PYTHON}, but the venv "
                     f"{this.prefix} was made without --system-site-packages",
                     f"sed -i 's/^include-system-site-packages = false/"
                     f"include-system-site-packages = true/' {config}")
    if same_base:
        return Check("bcc", FAIL, f"bcc is installed but does not import: {this.bcc_error}",
                     "apt install --reinstall python3-bpfcc libbpfcc")
    return Check("bcc", FAIL, f"bcc is installed for {SYSTEM_PYTHON} only, and this wtrec runs "
                 f"on another interpreter, {this.executable} (based on {this.base_prefix}: "
                 "pyenv, conda or a hand-built Python?)", _new_venv())


def _new_venv() -> str:
    return (f"{SYSTEM_PYTHON} -m venv --system-site-packages .venv && "
            ".venv/bin/pip install .   # in the wtrec checkout; then use .venv/bin/wtrec")


def check_kernel_headers(release: str, *, modules: Path = Path("/lib/modules"),
                         sources: Path = Path("/usr/src"),
                         kheaders: Path = Path("/sys/kernel/kheaders.tar.xz"),
                         environ: Mapping[str, str] = os.environ) -> Check:
    """bcc compiles the probe against /lib/modules/RELEASE/build (as preflight checks)."""
    override = environ.get("BCC_KERNEL_SOURCE")
    if override and Path(override).is_dir():
        return Check("headers", OK, f"BCC_KERNEL_SOURCE={override}")
    build = modules / release / "build"
    if (build / "include").is_dir():
        target = os.path.realpath(build)
        if build.is_symlink() and release not in os.path.basename(target):
            return Check("headers", OK, f"{build} -> {target}: another kernel's headers, "
                         "which work (wtrec reads only UAPI structs)")
        return Check("headers", OK, f"{build} -> {target}" if build.is_symlink() else str(build))
    if kheaders.exists():
        return Check("headers", OK, f"{kheaders} (the kernel's own headers)")
    found = _header_trees(sources)
    problem = (f"{build} points to {os.readlink(build)}, which is gone" if build.is_symlink()
               else f"{build} is missing")
    if found:
        tree = found[-1]
        common = tree.with_name(tree.name.rsplit("-", 1)[0] + "-common")
        source = common if common.is_dir() else tree
        return Check("headers", FAIL, f"{problem}; {tree} holds another kernel's headers, which "
                     "work (wtrec reads only UAPI structs) once linked",
                     f"mkdir -p {modules / release} && ln -sfn {tree} {build} && "
                     f"ln -sfn {source} {modules / release / 'source'}")
    return Check("headers", FAIL, f"{problem} and no headers are under {sources}",
                 f"apt install linux-headers-{release} || apt install linux-headers-"
                 "$(dpkg --print-architecture)   # then run wtrec doctor again for the link")


def _header_trees(sources: Path) -> list[Path]:
    """Header trees a build can use (with a Makefile, not the -common halves), oldest first."""
    try:
        trees = [p for p in sources.glob("linux-headers-*")
                 if not p.name.endswith("-common") and (p / "Makefile").exists()]
    except OSError:
        return []
    return sorted(trees, key=lambda p: _version_key(p.name))


def _version_key(name: str) -> list:
    return [(0, int(part)) if part.isdigit() else (1, part)
            for part in name.replace("-", ".").split(".")]


def tracefs_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Path]:
    """Where tracefs is mounted, from mountinfo (readable without root, unlike tracefs)."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        fstype = line.split(" - ", 1)[1].split()[0]
        if fstype == "tracefs":
            found.append(Path(fields[4].replace("\\040", " ")))
    return found


def check_tracefs(mounted: Iterable[Path], euid: int) -> Check:
    """The syscall tracepoints, under a mounted tracefs."""
    mount_fix = f"mount -t tracefs nodev {TRACEFS_MOUNTS[0]}"
    for mount in mounted:
        enter_write = mount / "events" / "syscalls" / "sys_enter_write"
        try:
            os.stat(enter_write)
        except PermissionError:
            return Check("tracefs", OK, f"mounted at {mount} (only root can look inside)")
        except OSError:
            if (mount / "events").is_dir():
                return Check("tracefs", FAIL, f"mounted at {mount}, but this kernel has no syscall "
                             "tracepoints", "boot a kernel built with CONFIG_FTRACE_SYSCALLS=y")
            continue
        return Check("tracefs", OK, f"mounted at {mount}, syscall tracepoints present")
    return Check("tracefs", FAIL, "tracefs is not mounted" + (
        " (record tries to mount it when run as root)" if euid == 0 else ""), mount_fix)


def check_ringbuf(release: str) -> Check:
    if kernel_has_ringbuf(release):
        return Check("ringbuf", OK, "BPF ring buffer available (Linux 5.8+)")
    return Check("ringbuf", WARN, "no BPF ring buffer before Linux 5.8: record uses the per-CPU "
                 "perf buffer instead", "boot Linux 5.8 or later for the ring buffer")


def check_uprobes(device: Path = Path("/sys/bus/event_source/devices/uprobe")) -> Check:
    if device.exists():
        return Check("uprobes", OK, f"{device} present")
    return Check("uprobes", WARN, f"{device} is missing: no uprobes (record's syscall tracing "
                 "does not need them)", "boot a kernel built with CONFIG_UPROBE_EVENTS=y")


def check_privileges(euid: int, caps: int, wtrec_path: str) -> Check:
    """Root, or CAP_BPF with CAP_PERFMON (or CAP_SYS_ADMIN), as preflight demands."""
    if euid == 0:
        return Check("privileges", OK, "running as root")

    def has(bit: int) -> bool:
        return bool(caps >> bit & 1)

    if has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON)):
        return Check("privileges", OK, "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) held")
    # sudo resets PATH, so a venv's wtrec must be named by its full path.
    return Check("privileges", FAIL, "recording needs root or CAP_BPF and CAP_PERFMON; "
                 "the other checks may see less without root",
                 f"sudo {wtrec_path} record ...   (and sudo {wtrec_path} doctor)")


def python_facts(python: str, timeout: float = 30.0) -> PythonFacts | None:
    """Asks an interpreter what it is and whether bcc imports there; None if it cannot run."""
    script = ("import sys; print(sys.executable); print(sys.base_prefix); print(sys.prefix)\n"
              "try:\n import bcc\nexcept Exception as exc:\n print(type(exc).__name__ + ': ' "
              "+ str(exc))")
    try:
        done = subprocess.run([python, "-c", script], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.splitlines()
    if done.returncode != 0 or len(lines) < 3:
        return None
    return PythonFacts(lines[0], lines[1], lines[2], lines[3] if len(lines) > 3 else None)


def run_checks(*, release: str | None = None,
               facts: Callable[[str], PythonFacts | None] = python_facts) -> list[Check]:
    """Every check, on this machine, in the order a user would fix them."""
    release = release or platform.release()
    this = facts(sys.executable) or PythonFacts(sys.executable, sys.base_prefix, sys.prefix,
                                                "the interpreter could not be asked")
    system = None
    if this.bcc_error is not None and Path(SYSTEM_PYTHON).exists():
        system = facts(SYSTEM_PYTHON)
    wtrec_path = os.path.join(os.path.dirname(sys.executable), "wtrec")
    if not os.path.exists(wtrec_path):
        wtrec_path = f"{sys.executable} -m wtrec"
    return [
        check_privileges(os.geteuid(), effective_caps(), wtrec_path),
        check_kernel(release),
        check_bcc(this, system),
        check_kernel_headers(release),
        check_tracefs(tracefs_mounts(), os.geteuid()),
        check_ringbuf(release),
        check_uprobes(),
        check_btf(),
    ]


def record_would_work(checks: Iterable[Check]) -> bool:
    return all(check.status != FAIL for check in checks)
