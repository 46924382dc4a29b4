"""Finds 32-bit programs, whose syscalls wtrec does not capture.

On x86-64 a 32-bit (compat) process makes syscalls with other numbers and
argument layouts; the BPF program tells them apart and leaves them alone,
so such a process writes without being traced, and `record` warns.
"""

from pathlib import Path

ELFCLASS32 = 1


def is_32bit_elf(path: str | Path) -> bool:
    try:
        with open(path, "rb") as binary:
            head = binary.read(5)
    except OSError:
        return False
    return head[:4] == b"\x7fELF" and head[4] == ELFCLASS32


def pids_with_comm(comms: tuple[str, ...], proc: Path = Path("/proc")) -> list[int]:
    found = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().rstrip("\n") in comms:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def compat_processes(pids: list[int], proc: Path = Path("/proc")) -> list[int]:
    """Which of these processes run a 32-bit executable."""
    return [pid for pid in pids if is_32bit_elf(proc / str(pid) / "exe")]
