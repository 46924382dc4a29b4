"""The bpf() loader on its own: maps, a hand-assembled program, and a uprobe (live)."""

import os
import struct
import subprocess

import pytest

from wtrec.capture import bpf_syscall
from wtrec.capture.bpf_syscall import MapShape
from wtrec.capture.elf_symbols import ElfFile

MAP_TYPE_ARRAY = 2
HELPER_MAP_LOOKUP_ELEM = 1

COUNTED_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((noinline)) int hit(int n) { __asm__ volatile("" ::: "memory"); return n + 1; }
int main(int argc, char **argv) {
    int total = 0;
    for (int i = 0; i < atoi(argv[1]); i++) total += hit(i);
    printf("%d\n", total);
    return 0;
}
"""


def insn(code: int, dst: int = 0, src: int = 0, offset: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, offset, imm)


def counting_program() -> bytes:
    """counts[0] += 1; return 0 (the map reference holds map index 0)."""
    return b"".join([
        insn(0x62, dst=10, offset=-4, imm=0),               # *(u32 *)(r10 - 4) = 0
        insn(0xBF, dst=2, src=10),                          # r2 = r10
        insn(0x07, dst=2, imm=-4),                          # r2 += -4
        insn(0x18, dst=1, src=1, imm=0), insn(0),           # r1 = map 0
        insn(0x85, imm=HELPER_MAP_LOOKUP_ELEM),             # r0 = lookup(r1, r2)
        insn(0x15, dst=0, offset=2, imm=0),                 # if r0 == 0 goto exit
        insn(0xB7, dst=1, imm=1),                           # r1 = 1
        insn(0xDB, dst=0, src=1, offset=0, imm=0),          # lock *(u64 *)(r0 + 0) += r1
        insn(0xB7, dst=0, imm=0),                           # r0 = 0
        insn(0x95),                                         # exit
    ])


def test_map_update_and_lookup(live):
    fd = bpf_syscall.create_map(MapShape("wtrec_test", MAP_TYPE_ARRAY, 4, 8, 2, 0))
    try:
        bpf_syscall.map_update(fd, struct.pack("<I", 1), struct.pack("<Q", 77))
        assert bpf_syscall.map_lookup(fd, struct.pack("<I", 1), 8) == struct.pack("<Q", 77)
        assert bpf_syscall.map_lookup(fd, struct.pack("<I", 0), 8) == bytes(8)
        assert bpf_syscall.map_shape(fd) == MapShape("wtrec_test", MAP_TYPE_ARRAY, 4, 8, 2, 0)
    finally:
        os.close(fd)


@pytest.mark.parametrize("retprobe", [False, True])
def test_uprobe_runs_the_program_at_each_call(live, tmp_path, retprobe):
    source = tmp_path / "counted.c"
    source.write_text(COUNTED_PROGRAM)
    binary = tmp_path / "counted"
    subprocess.run(["cc", "-O1", "-o", str(binary), str(source)], check=True)
    with ElfFile(str(binary)) as elf:
        (symbol,) = elf.defined_functions(["hit"])
    assert symbol.file_offset is not None
    counts = bpf_syscall.create_map(MapShape("wtrec_counts", MAP_TYPE_ARRAY, 4, 8, 1, 0))
    program = bpf_syscall.load_program(
        "count_hits", bpf_syscall.PROG_TYPE_KPROBE,
        bpf_syscall.with_map_fds(counting_program(), [counts]), "GPL")
    try:
        link = bpf_syscall.uprobe_attach(str(binary), symbol.file_offset, program,
                                         retprobe=retprobe)
        subprocess.run([str(binary), "5"], check=True, capture_output=True)
        os.close(link)
        subprocess.run([str(binary), "5"], check=True, capture_output=True)  # detached
        (hits,) = struct.unpack("<Q", bpf_syscall.map_lookup(counts, bytes(4), 8) or b"")
        assert hits == 5
    finally:
        os.close(program)
        os.close(counts)


@pytest.mark.parametrize("others", [0, 1, 2, 3, 4, 5, 6, 7, 8])
def test_comm_filter_with_few_and_many_comms(live, tmp_path, others):
    """Up to 8 comms are compared in place, more are looked up in a hash: both match."""
    from wtrec.capture.probe import Probe, ProbeConfig

    name = "wtrec-cmtest"
    program = tmp_path / name
    program.symlink_to("/usr/bin/printf")
    comms = tuple(f"other{number}" for number in range(others)) + (name,)
    probe = Probe(ProbeConfig(comms=comms), use_cache=False)
    try:
        assert probe.config.comm_list_size() == (len(comms) if len(comms) <= 8 else 0)
        subprocess.run([str(program), "hello-from-the-test"], check=True, capture_output=True)
        subprocess.run(["/usr/bin/printf", "not-this-one"], check=True, capture_output=True)
        probe.stop_producing()
        records = probe.read(1 << 20)
    finally:
        probe.close()
    events = [bytes(raw) for raw in records if struct.unpack_from("<I", raw)[0] == 1]
    assert [raw[64:80].rstrip(b"\0") for raw in events] == [name.encode()]
    (captured,) = struct.unpack_from("<I", events[0], 56)  # wtrec_event_header.captured
    assert events[0][80:80 + captured] == b"hello-from-the-test"


def test_map_creation_refused_for_locked_memory_raises_the_limit_once(monkeypatch):
    """Kernels before 5.11 count BPF maps against RLIMIT_MEMLOCK: raised, then one retry."""
    calls, limits = [], []

    def fake_bpf(command, attr):
        calls.append(command)
        if len(calls) == 1:
            raise PermissionError(1, "Operation not permitted")
        return 42

    monkeypatch.setattr(bpf_syscall, "_bpf", fake_bpf)
    monkeypatch.setattr(bpf_syscall.resource, "setrlimit", lambda which, value: limits.append(which))
    assert bpf_syscall.create_map(MapShape("m", MAP_TYPE_ARRAY, 4, 8, 1, 0)) == 42
    assert len(calls) == 2 and limits == [bpf_syscall.resource.RLIMIT_MEMLOCK]
    calls.clear()
    monkeypatch.setattr(bpf_syscall, "_bpf", lambda command, attr: (_ for _ in ()).throw(
        PermissionError(1, "Operation not permitted")))
    with pytest.raises(bpf_syscall.ProbeError, match="cannot create BPF map m"):
        bpf_syscall.create_map(MapShape("m", MAP_TYPE_ARRAY, 4, 8, 1, 0))
