"""Finding TLS entry points: the ELF symbol reader and the library search (no root, no eBPF).

Checked against the real libraries on this machine (libssl.so.3, libgnutls.so.30,
libwolfssl, node) and against programs compiled here: a statically linked
wolfSSL program, a library with aliased entry points, damaged files.
"""

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wtrec.capture import tls_libraries
from wtrec.capture.elf_symbols import ElfError, ElfFile
from wtrec.capture.tls_libraries import (
    ENTRY_POINT_BY_SYMBOL,
    entry_points_in,
    ldconfig_libraries,
    linked_libraries,
    programs_named,
    search_executable,
    search_process,
    search_system,
)
from wtrec.errors import UsageError

LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
OPENSSL = ["SSL_write", "SSL_write_ex", "SSL_read", "SSL_read_ex"]
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip on a laptop without the piece; under CI (the bootstrap installs it) fail."""
    if not condition:
        if CI:
            pytest.fail(reason)
        pytest.skip(reason)


def library(pattern: str) -> Path:
    found = sorted(LIBDIR.glob(pattern))
    need(bool(found), f"no {LIBDIR}/{pattern} (scripts/bootstrap setup installs it)")
    return found[0]


def compile_c(tmp_path: Path, source: str, *flags: str, name: str = "prog") -> Path:
    need(shutil.which("cc") is not None, "cc is needed")
    (tmp_path / f"{name}.c").write_text(source)
    out = tmp_path / name
    done = subprocess.run(["cc", "-O1", "-o", str(out), str(tmp_path / f"{name}.c"), *flags],
                          capture_output=True, text=True)
    need(done.returncode == 0, f"cannot compile {name}: {done.stderr[-500:]}")
    return out


def symbols_of(targets) -> list[str]:
    return [target.symbol for target in targets]


def readelf_functions(path: Path) -> set[str]:
    """Defined global/weak functions per binutils, to check the reader against."""
    out = subprocess.run(["readelf", "-W", "--dyn-syms", str(path)], capture_output=True, text=True,
                         check=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[3] in ("FUNC", "IFUNC") and parts[4] in ("GLOBAL", "WEAK") \
                and parts[6] != "UND":
            names.add(parts[7].split("@")[0])
    return names


# --- the real libraries -----------------------------------------------------

def test_libssl_exports_the_four_openssl_entry_points():
    path = library("libssl.so.3")
    targets = entry_points_in(str(path))
    assert symbols_of(targets) == OPENSSL
    assert {target.family for target in targets} == {"openssl"}
    # a shared library's code lies where its addresses say
    assert all(target.file_offset is not None for target in targets)


def test_reader_agrees_with_readelf():
    need(shutil.which("readelf") is not None, "readelf (binutils) is needed")
    for path in (library("libssl.so.3"), library("libgnutls.so.30"), library("libwolfssl.so*")):
        expected = readelf_functions(path) & set(ENTRY_POINT_BY_SYMBOL)
        with ElfFile(str(path)) as elf:
            assert {symbol.name for symbol in elf.defined_functions(ENTRY_POINT_BY_SYMBOL)} == expected


def test_reader_offsets_match_the_code_bytes():
    # The file offset is where a uprobe goes: the bytes there are the function's
    # first instruction, the same bytes objdump shows at the symbol's address.
    need(shutil.which("objdump") is not None, "objdump (binutils) is needed")
    path = library("libssl.so.3")
    target = entry_points_in(str(path))[0]
    with ElfFile(str(path)) as elf:
        address = next(s.address for s in elf.defined_functions([target.symbol]))
    dump = subprocess.run(["objdump", "-d", f"--start-address={address:#x}",
                           f"--stop-address={address + 4:#x}", str(path)],
                          capture_output=True, text=True, check=True).stdout
    first = [line for line in dump.splitlines() if line.strip().startswith(f"{address:x}:")][0]
    shown = bytes.fromhex("".join(first.split("\t")[1].split()))
    assert target.file_offset is not None
    assert path.read_bytes()[target.file_offset:target.file_offset + len(shown)] == shown


def test_gnutls_and_wolfssl():
    gnutls = entry_points_in(str(library("libgnutls.so.30")))
    assert symbols_of(gnutls) == ["gnutls_record_send", "gnutls_record_recv"]
    assert {target.entry.returns for target in gnutls} == {"ssize"}
    wolfssl = entry_points_in(str(library("libwolfssl.so*")))
    assert symbols_of(wolfssl) == ["wolfSSL_write", "wolfSSL_read"]
    assert {target.family for target in wolfssl} == {"wolfssl"}


def test_the_ex_forms_take_their_length_from_the_out_parameter():
    assert ENTRY_POINT_BY_SYMBOL["SSL_write_ex"].length == "out_param"
    assert ENTRY_POINT_BY_SYMBOL["SSL_read"].length == "return"
    assert [e.direction for e in map(ENTRY_POINT_BY_SYMBOL.get, OPENSSL)] == ["out", "out", "in", "in"]


def test_a_program_without_tls_has_none():
    assert entry_points_in(os.path.realpath(sys.executable)) == []
    assert entry_points_in("/bin/true") == []


# --- processes --------------------------------------------------------------

def running(command: list[str]) -> subprocess.Popen:
    """A process that waits on stdin; returned once its libraries are mapped."""
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.readline()  # each command prints a line once it is ready
    return process


def stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(10)


def test_python_with_ssl_maps_libssl():
    process = running([sys.executable, "-c", "import ssl, sys; print(flush=True); sys.stdin.read()"])
    try:
        search = search_process(process.pid)
    finally:
        stop(process)
    libssl = [target for target in search.targets if "libssl.so" in target.path]
    assert symbols_of(libssl) == OPENSSL
    assert any(line.startswith("--tls: ") and "libssl.so" in line and "SSL_write_ex" in line
               for line in search.describe())


def test_node_has_openssl_built_in_or_linked():
    need(shutil.which("node") is not None, "node is needed (scripts/bootstrap setup installs nodejs)")
    process = running(["node", "-e", "console.log(''); process.stdin.resume()"])
    try:
        search = search_process(process.pid)
    finally:
        stop(process)
    # nodesource's node carries OpenSSL in the executable (found there, as
    # for any static program); Debian's links libssl.so.3.
    assert sorted(symbols_of(search.targets)) == sorted(OPENSSL)
    assert search.targets[0].path.endswith(("/node", "libssl.so.3"))


STATIC_WOLFSSL = r"""
#include <stdio.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
int main(void)
{
    wolfSSL_Init();
    WOLFSSL *ssl = wolfSSL_new(wolfSSL_CTX_new(wolfTLSv1_3_client_method()));
    char buf[4];
    puts("ready");
    fflush(stdout);
    if (getchar() == 'x' && ssl) {  /* never: the calls only need to be linked in */
        wolfSSL_write(ssl, "x", 1);
        wolfSSL_read(ssl, buf, sizeof(buf));
    }
    return 0;
}
"""


def test_statically_linked_wolfssl_program(tmp_path):
    need(Path(LIBDIR / "libwolfssl.a").exists(), "libwolfssl.a is needed (libwolfssl-dev)")
    program = compile_c(tmp_path, STATIC_WOLFSSL, "-static", "-l:libwolfssl.a", "-lm", "-lpthread")
    with ElfFile(str(program)) as elf:
        assert {s.table for s in elf.defined_functions(["wolfSSL_write"])} == {".symtab"}
    process = running([str(program)])
    try:
        search = search_process(process.pid)
    finally:
        stop(process)
    assert [(t.path, t.symbol) for t in search.targets] == [(str(program), "wolfSSL_write"),
                                                           (str(program), "wolfSSL_read")]


def test_none_found_is_said_clearly():
    process = running(["sh", "-c", "echo; exec sleep 60"])
    try:
        search = search_process(process.pid)
    finally:
        stop(process)
    assert search.targets == []
    (line,) = search.describe()
    assert line.startswith(f"--tls: no TLS library found in pid {process.pid}")
    assert line.endswith("objects); syscalls only")


def test_gone_process_is_a_usage_error():
    process = subprocess.Popen(["true"])
    process.wait()
    with pytest.raises(UsageError, match=f"pid {process.pid}"):
        search_process(process.pid)


def test_mapped_file_replaced_on_disk_is_skipped_with_a_reason(tmp_path):
    library_copy = tmp_path / "libssl-copy.so"
    shutil.copy(library("libssl.so.3"), library_copy)
    script = (f"import ctypes, sys; ctypes.CDLL({str(library_copy)!r}); print(flush=True); "
              "sys.stdin.read()")
    process = running([sys.executable, "-c", script])
    try:
        library_copy.unlink()
        search = search_process(process.pid)
    finally:
        stop(process)
    assert not any(target.path == str(library_copy) for target in search.targets)
    assert any(path.startswith(str(library_copy)) for path, _ in search.skipped)


# --- the system's libraries -------------------------------------------------

def test_system_search_finds_each_family_once():
    for pattern in ("libssl.so.3", "libgnutls.so.30", "libwolfssl.so*"):
        library(pattern)  # installed by the bootstrap; skipped without it
    search = search_system()
    families = {target.family for target in search.targets}
    assert {"openssl", "gnutls", "wolfssl"} <= families
    # /lib and /usr/lib are one directory here: one file is searched once
    inodes = [os.stat(path).st_ino for path in search.searched]
    assert len(inodes) == len(set(inodes))
    libssl = [t for t in search.targets if os.path.basename(t.path) == "libssl.so.3"]
    assert symbols_of(libssl) == OPENSSL


def test_ldconfig_listing_is_filtered_to_tls_libraries():
    listing = ("1290 libs found in cache `/etc/ld.so.cache'\n"
               "\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1\n"
               "\tlibssl.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl.so.3\n"
               "\tlibssl.so.3 (libc6) => /lib/i386-linux-gnu/libssl.so.3\n"
               "\tlibgnutls.so.30 (libc6,x86-64) => /lib/x86_64-linux-gnu/libgnutls.so.30\n"
               "\tlibwolfssl.so.35 (libc6,x86-64) => /lib/x86_64-linux-gnu/libwolfssl.so.35\n"
               "\tlibsslcommon.so (libc6,x86-64) => /x/libsslcommon.so\n"
               "\tlibnss3.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libnss3.so\n")
    assert ldconfig_libraries(listing) == [
        "/lib/x86_64-linux-gnu/libssl.so.3", "/lib/i386-linux-gnu/libssl.so.3",
        "/lib/x86_64-linux-gnu/libgnutls.so.30", "/lib/x86_64-linux-gnu/libwolfssl.so.35"]


def test_tls_lib_path_is_searched_and_bad_ones_refused(tmp_path):
    need(Path(LIBDIR / "libwolfssl.a").exists(), "libwolfssl.a is needed (libwolfssl-dev)")
    program = compile_c(tmp_path, STATIC_WOLFSSL, "-static", "-l:libwolfssl.a", "-lm", "-lpthread")
    search = search_system([str(program)])
    assert [(t.path, t.symbol) for t in search.targets[:2]] == [(str(program), "wolfSSL_write"),
                                                               (str(program), "wolfSSL_read")]
    text = tmp_path / "notes.txt"
    text.write_text("not a library\n" * 10)
    for path, message in ((tmp_path / "missing.so", "no such file"), (text, "not an ELF file"),
                          (Path("/bin/true"), "defines none of SSL_write")):
        with pytest.raises(UsageError, match=f"--tls-lib {path}: {message}"):
            search_system([str(path)])


def test_aliased_entry_points_are_attached_once(tmp_path):
    source = ("int wolfSSL_write(void *s, const void *b, int n) { (void)s; (void)b; return n; }\n"
              "int SSL_write(void *, const void *, int) __attribute__((alias(\"wolfSSL_write\")));\n")
    shared = compile_c(tmp_path, source, "-shared", "-fPIC", name="libalias.so")
    targets = entry_points_in(str(shared))
    # one code address: one uprobe, or every call would be seen twice
    assert symbols_of(targets) == ["SSL_write"]


def test_foreign_machine_is_refused(tmp_path):
    libssl = library("libssl.so.3")
    foreign = tmp_path / "libssl-arm.so"
    data = bytearray(libssl.read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # e_machine = aarch64
    foreign.write_bytes(bytes(data))
    with pytest.raises(ElfError, match="built for aarch64"):
        entry_points_in(str(foreign))


# --- damaged files: only ElfError comes out -----------------------------------

def test_damaged_libraries_raise_only_elf_error(tmp_path):
    original = library("libssl.so.3").read_bytes()
    damaged = tmp_path / "damaged.so"
    rng = random.Random(11)
    cuts = [0, 3, 16, 63, 64, 100, 4096, len(original) // 2, len(original) - 1]
    cases = [original[:cut] for cut in cuts]
    for _ in range(150):
        data = bytearray(original[:1 << 16] if rng.random() < 0.5 else original)
        for _ in range(rng.randint(1, 40)):
            # hit the headers often: that is where the offsets and sizes are
            position = rng.randrange(64) if rng.random() < 0.3 else rng.randrange(len(data))
            data[position] = rng.randrange(256)
        cases.append(bytes(data))
    outcomes = {"ok": 0, "error": 0}
    for data in cases:
        damaged.write_bytes(data)
        try:
            entry_points_in(str(damaged))
            outcomes["ok"] += 1
        except ElfError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0 and outcomes["ok"] > 0


def test_absurd_section_header_counts_are_refused(tmp_path):
    data = bytearray(library("libssl.so.3").read_bytes())
    data[0x28:0x30] = (len(data) - 10).to_bytes(8, "little")  # e_shoff near the end
    damaged = tmp_path / "absurd.so"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ElfError, match="runs past the end"):
        entry_points_in(str(damaged))


def test_module_owns_no_bcc():
    assert "bcc" not in Path(tls_libraries.__file__).read_text()


# ---------------------------------------------------------------- a command's own libraries

def build_tree_wolfssl(tmp_path: Path) -> Path:
    """A copy of libwolfssl in a "build tree" the loader finds only through RPATH/LD_LIBRARY_PATH."""
    system = library("libwolfssl.so.*")
    tree = tmp_path / "wolfssl-build" / "lib"
    tree.mkdir(parents=True)
    shutil.copy(system, tree / system.name)
    (tree / "libwolfssl.so").symlink_to(system.name)
    return tree / system.name


def test_the_loader_names_a_library_in_a_build_tree(tmp_path):
    copy = build_tree_wolfssl(tmp_path)
    by_rpath = compile_c(tmp_path, STATIC_WOLFSSL, f"-L{copy.parent}", f"-Wl,-rpath,{copy.parent}",
                         "-lwolfssl", name="by_rpath")
    plain = compile_c(tmp_path, STATIC_WOLFSSL, f"-L{copy.parent}", "-lwolfssl", name="plain")
    env = {"PATH": os.environ.get("PATH", "/usr/bin")}
    found = linked_libraries(str(by_rpath), env=env, user=None, group=None)
    assert str(copy) in found
    assert str(copy) not in linked_libraries(str(plain), env=env, user=None, group=None)
    assert str(copy) in linked_libraries(str(plain), env={**env, "LD_LIBRARY_PATH": str(copy.parent)},
                                         user=None, group=None)
    search = search_executable(str(by_rpath), found)
    assert {(t.path, t.symbol) for t in search.targets} >= {(str(copy), "wolfSSL_write"),
                                                            (str(copy), "wolfSSL_read")}


def test_a_static_program_is_not_asked_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    program = compile_c(tmp_path, f"""
#include <stdio.h>
int main(void) {{ fclose(fopen("{marker}", "w")); return 0; }}
""", "-static", name="static_marker")
    assert linked_libraries(str(program), env={}, user=None, group=None) == []
    assert not marker.exists()
    with ElfFile(str(program)) as elf:
        assert elf.interpreter() is None
    with ElfFile(str(library("libwolfssl.so.*"))) as elf:
        assert elf.interpreter() is None  # a library names no interpreter
    assert linked_libraries(str(tmp_path / "missing"), env={}, user=None, group=None) == []


def test_a_comm_names_the_program_on_path_and_what_running_processes_execute(tmp_path):
    assert os.path.realpath(shutil.which("sh")) in programs_named(["sh"])
    sleeper = tmp_path / "zzsleeper"  # not on PATH: found only as a running process
    shutil.copy(shutil.which("sleep"), sleeper)
    process = subprocess.Popen([str(sleeper), "30"])
    try:
        # Popen may return (vfork) before the kernel names the new program.
        comm = Path(f"/proc/{process.pid}/comm")
        for _ in range(500):
            if comm.read_text() == "zzsleeper\n":
                break
            time.sleep(0.01)
        assert programs_named(["zzsleeper"]) == [str(sleeper)]
    finally:
        process.kill()
        process.wait()
    assert programs_named(["no-such-comm-x"]) == []
