"""Checks that recording can work here, each failure naming its fix.

Run before anything is created, so a refused `record` leaves no file behind.
"""

import importlib.util
import os
import platform
import subprocess
from pathlib import Path

from wtrec.errors import (
    BccMissingError,
    KernelHeadersMissingError,
    NotPrivilegedError,
    TracefsUnavailableError,
)

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39
TRACEFS_MOUNTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


def effective_caps(status_path: Path = Path("/proc/self/status")) -> int:
    """The CapEff bit mask of this process (0 if it cannot be read)."""
    try:
        for line in status_path.read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_privileges() -> None:
    """Root, or CAP_BPF with CAP_PERFMON (or CAP_SYS_ADMIN)."""
    if os.geteuid() == 0:
        return
    caps = effective_caps()

    def has(bit: int) -> bool:
        return bool(caps >> bit & 1)

    if has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON)):
        return
    raise NotPrivilegedError(
        "recording needs root (run it with sudo) or CAP_BPF and CAP_PERFMON")


def check_bcc() -> None:
    """bcc is a system package, so a venv without system site-packages lacks it."""
    if importlib.util.find_spec("bcc") is None:
        raise BccMissingError(
            "the bcc Python module is missing: install python3-bpfcc (Debian/Ubuntu) and "
            "run wtrec from a venv made with --system-site-packages")


def check_kernel_headers(release: str | None = None) -> None:
    """bcc compiles the probe against /lib/modules/RELEASE/build."""
    release = release or platform.release()
    build = Path("/lib/modules") / release / "build"
    if os.environ.get("BCC_KERNEL_SOURCE") and Path(os.environ["BCC_KERNEL_SOURCE"]).is_dir():
        return
    if (build / "include").is_dir() or Path("/sys/kernel/kheaders.tar.xz").exists():
        return
    raise KernelHeadersMissingError(
        f"kernel headers for {release} are missing: apt install linux-headers-{release}, or "
        f"link the distribution's headers as /lib/modules/{release}/build and source "
        "(scripts/bootstrap does it)")


def syscall_events_dir() -> Path | None:
    """The tracefs directory of the syscall tracepoints, if mounted."""
    for mount in TRACEFS_MOUNTS:
        events = mount / "events" / "syscalls"
        if (events / "sys_enter_write").is_dir():
            return events
    return None


def ensure_tracefs() -> Path:
    """Finds the syscall tracepoints, mounting tracefs once if needed."""
    found = syscall_events_dir()
    if found:
        return found
    if not (TRACEFS_MOUNTS[0] / "events").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS_MOUNTS[0])],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    found = syscall_events_dir()
    if found:
        return found
    if (TRACEFS_MOUNTS[0] / "events").is_dir():
        raise TracefsUnavailableError(
            "this kernel has no syscall tracepoints (CONFIG_FTRACE_SYSCALLS is off)")
    raise TracefsUnavailableError(
        "tracefs is not mounted and mounting it failed: "
        "mount -t tracefs nodev /sys/kernel/tracing")


def kernel_has_ringbuf(release: str | None = None) -> bool:
    """BPF ring buffers arrived in Linux 5.8."""
    release = release or platform.release()
    try:
        major, minor = (int(part) for part in release.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= (5, 8)


def check_recording_possible() -> None:
    """All of the above, in the order a user would fix them."""
    check_privileges()
    check_bcc()
    check_kernel_headers()
    ensure_tracefs()
