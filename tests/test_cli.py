"""CLI error paths: one `wtrec:` line on stderr, the documented exit code, no traceback."""

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_capture, wtrec_cmd
from typer.testing import CliRunner

from wtrec.capture import preflight
from wtrec.cli.app import app
from wtrec.format import encode_preamble

runner = CliRunner()


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(wtrec_cmd(*args), capture_output=True, text=True, timeout=60, **kwargs)


def assert_one_line_error(result, code: int, needle: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wtrec: "), result.stderr
    assert needle in lines[0]


@pytest.mark.parametrize("args, needle", [
    (["record", "-o", "x.wtrace"], "say what to trace"),
    (["record", "-c", "a", "-o", "x.wtrace", "--snaplen", "lots"], "--snaplen"),
    (["record", "-c", "a", "-o", "x.wtrace", "--snaplen", "0"], "--snaplen"),
    (["record", "-c", "a", "-o", "x.wtrace", "--snaplen", "2000000", "--perf-buffer"], "1048576"),
    (["record", "-c", "a", "-o", "x.wtrace", "--syscalls", "write,frob"], "unknown frob"),
    (["record", "-c", "a", "-o", "x.wtrace", "--buffer-size", "12Q"], "--buffer-size"),
    (["record", "-c", "a", "-o", "x.wtrace", "--follow"], "--follow"),
    (["record", "-c", "a-very-long-command-name", "-o", "x.wtrace"], "15 bytes"),
    (["record", "-c", "a", "-o", "x.wtrace", "--count", "many"], "--count"),
    (["record", "-c", "a", "-o", "x.wtrace", "--bogus"], "--bogus"),
    (["show", "x.wtrace", "--hex", "--json"], "exclude"),
    (["show", "x.wtrace", "--color", "purple"], "--color"),
    (["show"], "Missing argument"),
    (["frobnicate"], "frobnicate"),
])
def test_usage_errors_exit_2(args, needle, tmp_path):
    assert_one_line_error(run(*args, cwd=tmp_path), 2, needle)
    assert not (tmp_path / "x.wtrace").exists()


def test_show_missing_file_exits_9(tmp_path):
    assert_one_line_error(run("show", str(tmp_path / "nope.wtrace")), 9, "No such file")


def test_show_corrupt_file_exits_10(tmp_path):
    path = tmp_path / "bad.wtrace"
    data = bytearray(build_capture())
    data[40] ^= 0xFF
    path.write_bytes(bytes(data))
    assert_one_line_error(run("show", str(path)), 10, "at byte")
    path.write_text("just text\n")
    assert_one_line_error(run("show", str(path)), 10, "is this a .wtrace file?")


def test_show_newer_major_exits_11(tmp_path):
    path = tmp_path / "new.wtrace"
    path.write_bytes(encode_preamble(major=2, minor=0))
    assert_one_line_error(run("show", str(path)), 11, "a newer wtrec is needed")


def test_show_to_a_closed_pipe_is_quiet(tmp_path):
    path = tmp_path / "c.wtrace"
    path.write_bytes(build_capture())
    result = subprocess.run(" ".join(wtrec_cmd("show", str(path))) + " | head -c 1",
                            shell=True, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ""


def test_record_refuses_binary_to_a_terminal(tmp_path):
    leader, follower = pty.openpty()
    result = subprocess.run(wtrec_cmd("record", "-c", "x", "-o", "-"), stdout=follower,
                            stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(follower)
    os.close(leader)
    assert result.returncode == 7
    assert result.stderr.strip() == ("wtrec: refusing to write a binary capture to a terminal; "
                                     "redirect stdout or give -o FILE")


@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv")
def test_record_as_an_unprivileged_user_exits_3(tmp_path):
    if os.geteuid() == 0:
        tmp_path.chmod(0o777)
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
               "--inh-caps=-all", *wtrec_cmd("record", "-c", "x", "-o", "x.wtrace")]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    else:
        result = run("record", "-c", "x", "-o", "x.wtrace", cwd=tmp_path)
    assert_one_line_error(result, 3, "needs root")
    assert not (tmp_path / "x.wtrace").exists()


@pytest.fixture
def privileged(monkeypatch):
    """Pretend the privilege check passed, to reach the checks after it."""
    monkeypatch.setattr(preflight, "check_privileges", lambda: None)


def invoke_record(tmp_path, *extra):
    return runner.invoke(app, ["record", "-c", "x", "-o", str(tmp_path / "x.wtrace"), *extra])


def test_missing_bcc_exits_4_naming_the_package(tmp_path, privileged, monkeypatch):
    real_find_spec = preflight.importlib.util.find_spec
    monkeypatch.setattr(preflight.importlib.util, "find_spec",
                        lambda name: None if name == "bcc" else real_find_spec(name))
    result = invoke_record(tmp_path)
    assert result.exit_code == 4 and "python3-bpfcc" in result.stderr
    assert not (tmp_path / "x.wtrace").exists()


def test_missing_headers_exit_5_naming_the_fix(tmp_path, privileged, monkeypatch):
    monkeypatch.setattr(preflight, "check_bcc", lambda: None)
    monkeypatch.setattr(preflight.platform, "release", lambda: "0.0.0-no-such-kernel")
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(preflight, "Path", _PathWithoutKheaders)
    result = invoke_record(tmp_path)
    assert result.exit_code == 5
    assert "apt install linux-headers-0.0.0-no-such-kernel" in result.stderr


class _PathWithoutKheaders(type(Path())):
    def exists(self):
        return False if str(self) == "/sys/kernel/kheaders.tar.xz" else super().exists()


def test_unavailable_tracefs_exits_6(tmp_path, privileged, monkeypatch):
    for check in ("check_bcc", "check_kernel_headers"):
        monkeypatch.setattr(preflight, check, lambda: None)
    monkeypatch.setattr(preflight, "TRACEFS_MOUNTS", (tmp_path / "tracing",))
    monkeypatch.setattr(preflight.subprocess, "run", lambda *a, **k: None)
    result = invoke_record(tmp_path)
    assert result.exit_code == 6 and "mount -t tracefs nodev /sys/kernel/tracing" in result.stderr


@pytest.fixture
def preflight_passes(monkeypatch):
    monkeypatch.setattr(preflight, "check_recording_possible", lambda: None)


def test_unwritable_output_exits_7(tmp_path, preflight_passes):
    result = runner.invoke(app, ["record", "-c", "x", "-o", str(tmp_path / "no" / "x.wtrace")])
    assert result.exit_code == 7 and "cannot create" in result.stderr


def test_existing_output_is_kept_without_force(tmp_path, preflight_passes):
    path = tmp_path / "x.wtrace"
    path.write_bytes(b"precious")
    result = invoke_record(tmp_path)
    assert result.exit_code == 7 and "--force" in result.stderr
    assert path.read_bytes() == b"precious"


def test_print_bpf_shows_the_defines_and_source():
    result = runner.invoke(app, ["record", "-c", "x", "-o", "unused", "-s", "100", "--print-bpf"])
    assert result.exit_code == 0
    assert "#define WTREC_SNAPLEN 100" in result.stdout
    assert "// wanted map: write, writev, pwrite64, pwritev, pwritev2, sendto, sendmsg, socket" \
        in result.stdout
    assert "struct wtrec_event_header {" in result.stdout  # the shared header
    assert "int on_sys_exit(struct bpf_raw_tracepoint_args *ctx)" in result.stdout


def test_a_command_loads_only_its_own_module(tmp_path):
    # `wtrec show` must not pay for the recorder or the protocol parsers at start-up.
    capture = tmp_path / "c.wtrace"
    capture.write_bytes(build_capture())
    script = ("import sys\n"
              "from wtrec.cli.app import main\n"
              f"sys.argv = ['wtrec', 'show', {str(capture)!r}]\n"
              "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
              "loaded = [m for m in ('wtrec.record', 'wtrec.cli.record_command', "
              "'wtrec.tools.protocols', 'wtrec.cli.conversation_commands', 'bcc') "
              "if m in sys.modules]\n"
              "print(code, loaded, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=False)
    assert result.stderr.splitlines()[-1] == "0 []", result.stderr
    assert "write" in result.stdout  # and it did show the capture


@pytest.mark.parametrize(("argv", "interval"), [
    (["grep", "-c", "write"], "0.0002"), (["show"], "0.0002"), (["record", "--help"], "0.005")])
def test_offline_commands_hand_the_gil_over_quickly_and_record_keeps_the_default(
        tmp_path, argv, interval):
    capture = tmp_path / "c.wtrace"
    capture.write_bytes(build_capture())
    path = [str(capture)] if argv[0] != "record" else []
    script = ("import sys\n"
              "from wtrec.cli.app import main\n"
              f"sys.argv = ['wtrec', *{argv!r}, *{path!r}]\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\n"
              "print(round(sys.getswitchinterval(), 6), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=False)
    assert result.stderr.splitlines()[-1] == interval, result.stderr


def test_the_whole_application_has_every_command():
    from wtrec.cli import app as app_module

    names = [name for name, *_ in app_module.COMMANDS]
    result = runner.invoke(app_module.app, ["--help"])
    listed = [line.split()[1] for line in result.stdout.splitlines()
              if line.startswith("│ ") and len(line.split()) > 1 and line.split()[1] in names]
    assert listed == names
