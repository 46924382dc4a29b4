"""`wtrec doctor`: each check on injected paths and facts, then on this machine, broken on purpose."""

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT, wtrec_cmd
from typer.testing import CliRunner

from wtrec.capture import doctor
from wtrec.capture.doctor import FAIL, OK, WARN, Check, PythonFacts
from wtrec.cli import doctor_command
from wtrec.cli.app import app

runner = CliRunner()
RELEASE = "6.18.44-test"


# ---- kernel headers ----

def header_tree(root: Path, name: str) -> Path:
    tree = root / "usr" / "src" / name
    (tree / "include").mkdir(parents=True)
    (tree / "Makefile").write_text("")
    return tree


def headers(root: Path, **environ: str) -> Check:
    return doctor.check_kernel_headers(RELEASE, modules=root / "lib" / "modules",
                                       sources=root / "usr" / "src",
                                       kheaders=root / "kheaders.tar.xz", environ=environ)


def test_headers_of_this_kernel(tmp_path):
    (tmp_path / "lib" / "modules" / RELEASE / "build" / "include").mkdir(parents=True)
    assert headers(tmp_path).status == OK


def test_headers_linked_from_another_kernel_are_fine_and_said(tmp_path):
    tree = header_tree(tmp_path, "linux-headers-6.1.0-56-amd64")
    (tmp_path / "lib" / "modules" / RELEASE).mkdir(parents=True)
    (tmp_path / "lib" / "modules" / RELEASE / "build").symlink_to(tree)
    check = headers(tmp_path)
    assert check.status == OK and "another kernel's headers" in check.detail


def test_missing_headers_with_another_kernels_tree_give_the_link_command(tmp_path):
    header_tree(tmp_path, "linux-headers-5.10.0-9-amd64")
    newest = header_tree(tmp_path, "linux-headers-6.1.0-56-amd64")
    common = tmp_path / "usr" / "src" / "linux-headers-6.1.0-56-common"
    (common / "include").mkdir(parents=True)  # Debian's split layout; not a build tree itself
    check = headers(tmp_path)
    modules = tmp_path / "lib" / "modules" / RELEASE
    assert check.status == FAIL and f"{modules}/build is missing" in check.detail
    assert check.fix == (f"mkdir -p {modules} && ln -sfn {newest} {modules}/build && "
                         f"ln -sfn {common} {modules}/source")


def test_fix_for_headers_actually_fixes_them(tmp_path):
    header_tree(tmp_path, "linux-headers-6.1.0-56-amd64")
    check = headers(tmp_path)
    subprocess.run(check.fix, shell=True, check=True)
    assert headers(tmp_path).status == OK


def test_a_dangling_link_is_named(tmp_path):
    modules = tmp_path / "lib" / "modules" / RELEASE
    modules.mkdir(parents=True)
    (modules / "build").symlink_to(tmp_path / "gone")
    check = headers(tmp_path)
    assert check.status == FAIL and "which is gone" in check.detail
    assert check.fix.startswith(f"apt install linux-headers-{RELEASE}")


def test_kheaders_or_bcc_kernel_source_will_do(tmp_path):
    assert headers(tmp_path, BCC_KERNEL_SOURCE=str(tmp_path)).status == OK
    (tmp_path / "kheaders.tar.xz").write_bytes(b"")
    assert headers(tmp_path).status == OK


# ---- tracefs ----

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
42 23 0:13 / /sys/kernel/tracing rw,relatime - tracefs nodev rw
43 23 0:14 / /mnt/odd\\040place rw,relatime shared:5 - tracefs tracefs rw
"""


def test_tracefs_mounts_are_read_from_mountinfo(tmp_path):
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    assert doctor.tracefs_mounts(tmp_path / "mountinfo") == [
        Path("/sys/kernel/tracing"), Path("/mnt/odd place")]
    assert doctor.tracefs_mounts(tmp_path / "none") == []


def test_tracefs_with_syscall_tracepoints(tmp_path):
    (tmp_path / "events" / "syscalls" / "sys_enter_write").mkdir(parents=True)
    assert doctor.check_tracefs([tmp_path], euid=0).status == OK


def test_tracefs_without_syscall_tracepoints_names_the_kernel_option(tmp_path):
    (tmp_path / "events" / "sched").mkdir(parents=True)
    check = doctor.check_tracefs([tmp_path], euid=0)
    assert check.status == FAIL and "CONFIG_FTRACE_SYSCALLS=y" in check.fix


def test_tracefs_unmounted_gives_the_mount_command():
    check = doctor.check_tracefs([], euid=1000)
    assert check.status == FAIL
    assert check.fix == "mount -t tracefs nodev /sys/kernel/tracing"


# ---- bcc and the interpreter ----

SYSTEM = PythonFacts("/usr/bin/python3", "/usr", "/usr", None)


def test_bcc_importable():
    assert doctor.check_bcc(PythonFacts("/v/bin/python", "/usr", "/v", None), None).status == OK


def test_the_pyenv_trap_says_to_make_the_venv_from_the_system_python():
    pyenv = PythonFacts("/home/u/.venv/bin/python", "/home/u/.pyenv/versions/3.12.1",
                        "/home/u/.venv", "ModuleNotFoundError: No module named 'bcc'")
    check = doctor.check_bcc(pyenv, SYSTEM)
    assert check.status == FAIL and "/home/u/.pyenv/versions/3.12.1" in check.detail
    assert check.fix.startswith("/usr/bin/python3 -m venv --system-site-packages .venv")


def test_a_venv_without_system_site_packages_gets_its_config_fixed():
    venv = PythonFacts("/v/bin/python", "/usr", "/v", "ModuleNotFoundError: No module named 'bcc'")
    check = doctor.check_bcc(venv, SYSTEM)
    assert check.status == FAIL and "--system-site-packages" in check.detail
    assert check.fix == ("sed -i 's/^include-system-site-packages = false/"
                         "include-system-site-packages = true/' /v/pyvenv.cfg")


def test_bcc_not_installed_anywhere():
    missing = "ModuleNotFoundError: No module named 'bcc'"
    check = doctor.check_bcc(PythonFacts("/usr/bin/python3", "/usr", "/usr", missing),
                             PythonFacts("/usr/bin/python3", "/usr", "/usr", missing))
    assert check.status == FAIL and check.fix == "apt install python3-bpfcc"
    other = doctor.check_bcc(PythonFacts("/opt/py/bin/python3", "/opt/py", "/opt/py", missing),
                             PythonFacts("/usr/bin/python3", "/usr", "/usr", missing))
    assert other.fix.startswith("apt install python3-bpfcc && /usr/bin/python3 -m venv")


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="no /usr/bin/python3")
def test_a_real_venv_without_system_site_packages_is_caught(tmp_path):
    system = doctor.python_facts("/usr/bin/python3")
    if system is None or system.bcc_error is not None:
        pytest.skip("bcc is not installed for /usr/bin/python3")
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(tmp_path / "v")],
                   check=True)
    this = doctor.python_facts(str(tmp_path / "v" / "bin" / "python"))
    assert this is not None and this.bcc_error and "bcc" in this.bcc_error
    check = doctor.check_bcc(this, system)
    assert check.fix.endswith(f"{tmp_path}/v/pyvenv.cfg")
    subprocess.run(check.fix, shell=True, check=True)
    fixed = doctor.python_facts(str(tmp_path / "v" / "bin" / "python"))
    assert fixed is not None and fixed.bcc_error is None
    assert doctor.check_bcc(fixed, system).status == OK


def test_python_facts_of_something_that_is_not_python(tmp_path):
    assert doctor.python_facts(str(tmp_path / "nothing")) is None
    assert doctor.python_facts("/bin/false") is None


# ---- kernel, ring buffer, uprobes, BTF, privileges ----

def test_kernel_versions():
    assert doctor.kernel_version("6.18.44-fc-v595") == (6, 18)
    assert doctor.kernel_version("5.4.0-150-generic") == (5, 4)
    assert doctor.check_kernel("4.4.0-1-generic").status == FAIL
    assert doctor.check_kernel("weird").status == WARN
    assert doctor.check_kernel("6.1.0-56-amd64").status == OK


def test_ring_buffer_needs_5_8_else_perf_buffer():
    assert doctor.check_ringbuf("5.8.0").status == OK
    old = doctor.check_ringbuf("5.4.0-150-generic")
    assert old.status == WARN and "perf buffer" in old.detail


def test_uprobes_and_btf_are_warnings_when_missing(tmp_path):
    assert doctor.check_uprobes(tmp_path).status == OK
    assert doctor.check_uprobes(tmp_path / "uprobe").status == WARN
    assert doctor.check_btf(tmp_path / "vmlinux").status == WARN
    (tmp_path / "vmlinux").write_bytes(b"")
    assert doctor.check_btf(tmp_path / "vmlinux").status == OK


def test_privileges():
    assert doctor.check_privileges(0, 0, "wtrec").status == OK
    bpf_and_perfmon = 1 << doctor.CAP_BPF | 1 << doctor.CAP_PERFMON
    assert doctor.check_privileges(1000, bpf_and_perfmon, "wtrec").status == OK
    assert doctor.check_privileges(1000, 1 << doctor.CAP_SYS_ADMIN, "wtrec").status == OK
    check = doctor.check_privileges(1000, 1 << doctor.CAP_BPF, "/v/bin/wtrec")
    assert check.status == FAIL and check.fix.startswith("sudo /v/bin/wtrec record")


def test_run_checks_asks_the_system_python_only_when_bcc_is_missing():
    asked = []

    def facts(python):
        asked.append(python)
        return PythonFacts(python, "/opt/py", "/opt/py", "ModuleNotFoundError")

    checks = doctor.run_checks(release="6.18.0", facts=facts)
    assert [c.name for c in checks] == ["privileges", "kernel", "bcc", "headers", "tracefs",
                                        "ringbuf", "uprobes", "btf"]
    assert asked[0] == sys.executable
    assert asked[1:] == (["/usr/bin/python3"] if os.path.exists("/usr/bin/python3") else [])
    assert not doctor.record_would_work(checks)


# ---- the command ----

def test_command_exit_codes_and_output(monkeypatch):
    good = [Check("kernel", OK, "6.18"), Check("btf", WARN, "missing", "boot another")]
    monkeypatch.setattr(doctor_command, "run_checks", lambda: good)
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0 and "record would work here" in result.stdout
    assert "fix: boot another" in result.stdout
    bad = good + [Check("tracefs", FAIL, "not mounted", "mount -t tracefs nodev /x")]
    monkeypatch.setattr(doctor_command, "run_checks", lambda: bad)
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == doctor_command.EXIT_PROBLEMS == 1
    assert "FAIL  tracefs     not mounted\n" in result.stdout
    assert "fix: mount -t tracefs nodev /x" in result.stdout
    result = runner.invoke(app, ["doctor", "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and report["record_would_work"] is False
    assert report["checks"][2] == {"name": "tracefs", "status": "fail", "detail": "not mounted",
                                   "fix": "mount -t tracefs nodev /x"}


# ---- this machine (root), and broken on purpose in a private mount namespace ----

def run_doctor(shell_prefix: str = "") -> tuple[int, dict]:
    command = " ".join(wtrec_cmd("doctor", "--json"))
    done = subprocess.run(["unshare", "-m", "sh", "-c", f"{shell_prefix}{command}"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def failures(report: dict) -> dict[str, Check]:
    return {c["name"]: Check(**c) for c in report["checks"] if c["status"] == FAIL}


@pytest.mark.live
def test_doctor_passes_on_this_machine(live):
    code, report = run_doctor()
    assert failures(report) == {} and report["record_would_work"] and code == 0


@pytest.mark.live
def test_doctor_names_the_mount_when_tracefs_is_unmounted(live):
    # A private mount namespace: the machine's own tracefs stays mounted.
    unmount = "".join(f"umount {m} 2>/dev/null; " for m in (
        "/sys/kernel/debug/tracing", "/sys/kernel/tracing", "/sys/kernel/debug"))
    code, report = run_doctor(unmount)
    assert code == 1 and list(failures(report)) == ["tracefs"]
    fix = failures(report)["tracefs"].fix
    assert fix == "mount -t tracefs nodev /sys/kernel/tracing"
    code, report = run_doctor(f"{unmount}{fix} && ")  # the fix, in the same private namespace
    assert code == 0 and failures(report) == {}


@pytest.mark.live
def test_doctor_names_the_link_when_the_headers_link_is_hidden(live):
    empty = tempfile.mkdtemp(prefix="wtrec-doctor-")
    try:
        release = platform.release()
        hide = f"mount --bind {empty} /lib/modules/{release} && "
        code, report = run_doctor(hide)
        assert code == 1 and list(failures(report)) == ["headers"]
        fix = failures(report)["headers"].fix
        assert "ln -sfn /usr/src/linux-headers-" in fix and f"/lib/modules/{release}/build" in fix
        code, report = run_doctor(f"{hide}{fix} && ")  # links made in the empty directory
        assert code == 0 and failures(report) == {}
    finally:
        shutil.rmtree(empty)


@pytest.mark.live
def test_record_refused_without_privilege_points_at_doctor(live, tmp_path):
    # record's own set-up errors say where the whole check is: run as nobody.
    os.chmod(tmp_path, 0o777)
    out = tmp_path / "nobody.wtrace"
    result = subprocess.run(["runuser", "-u", "nobody", "--", *wtrec_cmd(), "record", "-c", "x",
                             "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("\n") == 1 and "`wtrec doctor`" in result.stderr
    assert not out.exists()
