"""The cache of compiled BPF programs and the bpf() loader's bytecode relocation.

Rootless parts (keys, encoding, relocation, which directories are trusted)
run anywhere; loading from the cache, and falling back to a compile when a
cached program is refused, are live.
"""

import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest

from wtrec.capture import bpf_cache, probe
from wtrec.capture.bpf_cache import ProgramCache, cache_dir_from_environment, cache_key, decode, encode
from wtrec.capture.bpf_syscall import CompiledProgram, MapShape, map_references, with_map_fds
from wtrec.capture.probe import Probe, ProbeConfig
from wtrec.errors import ProbeError

LD_IMM64 = 0x18


def insn(code: int, dst: int = 0, src: int = 0, offset: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, offset, imm)


def sample_program() -> CompiledProgram:
    # r1 = map 1 (ld_imm64 with src 1 = BPF_PSEUDO_MAP_FD, two slots), r0 = 0, exit
    code = (insn(LD_IMM64, dst=1, src=1, imm=1) + insn(0) + insn(0xB7, dst=0, imm=0)
            + insn(0x95))
    return CompiledProgram("GPL", (MapShape("first", 2, 4, 8, 1, 0),
                                   MapShape("second", 1, 4, 1, 16, 0)), {"on_x": code})


@pytest.fixture
def trusted_dir():
    """A cache directory owned by the caller, mode 0700, under a private parent."""
    parent = tempfile.mkdtemp(prefix="wtrec-cache-")
    yield Path(parent) / "bpf"
    shutil.rmtree(parent)


def test_map_references_are_relocated_by_index():
    program = sample_program()
    code = program.functions["on_x"]
    assert map_references(code) == [(0, 1)]
    patched = with_map_fds(code, [10, 42])
    assert map_references(patched) == [(0, 42)]
    assert patched[8:] == code[8:]  # nothing else moves
    with pytest.raises(ProbeError):
        with_map_fds(code, [10])  # refers to a map it does not have


def test_encode_decode_round_trip_and_damage():
    program = sample_program()
    assert decode(encode(program)) == program
    data = encode(program)
    for damaged in (data[:len(data) // 2], b"", b"{}", data.replace(b'"format": 1', b'"format": 9'),
                    b"\xff" * 40):
        assert decode(damaged) is None


def test_key_changes_with_sources_flags_and_tracepoints(tmp_path):
    source = tmp_path / "a.bpf.c"
    source.write_text("int x;")
    key = cache_key(sources=[source], cflags=["-DA=1"], tracepoints=[])
    assert key == cache_key(sources=[source], cflags=["-DA=1"], tracepoints=[])
    assert key != cache_key(sources=[source], cflags=["-DA=2"], tracepoints=[])
    assert key != cache_key(sources=[source], cflags=["-DA=1"],
                            tracepoints=[("sched", "sched_process_fork")])
    source.write_text("int y;")
    assert key != cache_key(sources=[source], cflags=["-DA=1"], tracepoints=[])


def test_key_changes_with_the_kernel(tmp_path, monkeypatch):
    source = tmp_path / "a.bpf.c"
    source.write_text("int x;")
    key = cache_key(sources=[source], cflags=[], tracepoints=[])
    real = os.uname()
    other = os.uname_result((real.sysname, real.nodename, real.release, real.version + " again",
                             real.machine))
    monkeypatch.setattr(bpf_cache.os, "uname", lambda: other)
    assert key != cache_key(sources=[source], cflags=[], tracepoints=[])


def test_put_then_get(trusted_dir):
    cache = ProgramCache(trusted_dir)
    assert cache.get("k") is None
    cache.put("k", sample_program())
    assert cache.get("k") == sample_program()
    info = os.stat(trusted_dir / ("k" + bpf_cache.SUFFIX))
    assert info.st_mode & 0o777 == 0o600
    assert os.stat(trusted_dir).st_mode & 0o777 == 0o700
    cache.remove("k")
    assert cache.get("k") is None


def test_entries_open_to_others_are_ignored(trusted_dir):
    cache = ProgramCache(trusted_dir)
    cache.put("k", sample_program())
    entry = trusted_dir / ("k" + bpf_cache.SUFFIX)
    os.chmod(entry, 0o666)
    assert cache.get("k") is None
    os.chmod(entry, 0o600)
    os.chmod(trusted_dir, 0o777)  # the directory itself writable by all
    assert cache.get("k") is None


def test_symbolic_links_are_never_followed(trusted_dir):
    cache = ProgramCache(trusted_dir)
    cache.put("k", sample_program())
    entry = trusted_dir / ("k" + bpf_cache.SUFFIX)
    os.rename(entry, trusted_dir / "real")
    os.symlink(trusted_dir / "real", entry)
    assert cache.get("k") is None
    # A link in place of the directory: not used, not written through.
    linked = trusted_dir.parent / "linked"
    os.symlink(trusted_dir, linked)
    assert ProgramCache(linked).get("real") is None
    ProgramCache(linked / "sub").put("k", sample_program())
    assert not (trusted_dir / "sub").exists()


def test_a_directory_of_another_user_is_not_trusted(trusted_dir):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory away")
    cache = ProgramCache(trusted_dir)
    cache.put("k", sample_program())
    os.chown(trusted_dir, 65534, 65534)
    assert cache.get("k") is None
    cache.put("other", sample_program())
    assert not (trusted_dir / ("other" + bpf_cache.SUFFIX)).exists()


def test_old_entries_are_pruned(trusted_dir, monkeypatch):
    monkeypatch.setattr(bpf_cache, "MAX_ENTRIES", 2)
    cache = ProgramCache(trusted_dir)
    for number in range(4):
        cache.put(f"k{number}", sample_program())
        os.utime(trusted_dir / f"k{number}{bpf_cache.SUFFIX}", ns=(number, number))
    cache.put("k4", sample_program())
    left = sorted(path.name for path in trusted_dir.iterdir())
    assert len(left) == 2 and "k4" + bpf_cache.SUFFIX in left


def test_cache_dir_from_environment():
    assert cache_dir_from_environment({}) == bpf_cache.DEFAULT_CACHE_DIR
    assert cache_dir_from_environment({"WTREC_BPF_CACHE": "off"}) is None
    assert cache_dir_from_environment({"WTREC_BPF_CACHE": "/x/y"}) == Path("/x/y")


def test_cached_program_loads_without_a_compile(live, trusted_dir, monkeypatch):
    config = ProbeConfig(comms=("wtrec-no-such",))
    first = Probe(config, cache_dir=trusted_dir)
    first.close()
    assert len(list(trusted_dir.iterdir())) == 1

    def no_compile(_config):
        raise AssertionError("compiled although the cache holds this program")

    monkeypatch.setattr(probe, "compile_program", no_compile)
    second = Probe(config, cache_dir=trusted_dir)
    try:
        assert set(second.program_stats()) >= {"on_sys_enter", "on_sys_exit", "gather_and_emit"}
    finally:
        second.close()
    # Other flags are another program: compiled, not taken from the cache.
    with pytest.raises(AssertionError, match="compiled although"):
        Probe(ProbeConfig(comms=("wtrec-no-such",), snaplen=8192), cache_dir=trusted_dir)


def test_a_cached_program_the_kernel_refuses_is_compiled_again(live, trusted_dir):
    config = ProbeConfig(comms=("wtrec-no-such",))
    Probe(config, cache_dir=trusted_dir).close()
    (entry,) = trusted_dir.iterdir()
    cache = ProgramCache(trusted_dir)
    key = entry.name.removesuffix(bpf_cache.SUFFIX)
    program = cache.get(key)
    assert program is not None
    # Valid as a cache entry, refused by the verifier: on_sys_exit jumps out of itself.
    broken = dict(program.functions, on_sys_exit=insn(0x05, offset=100) + insn(0x95))
    cache.put(key, CompiledProgram(program.license, program.maps, broken))
    loaded = Probe(config, cache_dir=trusted_dir)
    try:
        assert loaded.program_stats()["on_sys_exit"][1] >= 0
    finally:
        loaded.close()
    assert cache.get(key) == program  # replaced by a fresh compile
