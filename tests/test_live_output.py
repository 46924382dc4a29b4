"""Live, under a simulated sudo: the recorder writes only where the sudo user could.

Each test reproduces a finding of issue 10 ("the output file of a root
recorder"): the recorder runs as root with SUDO_UID/SUDO_GID naming nobody
(65534), in a directory nobody owns, and must never touch what nobody could
not, nor follow a link, open a device or FIFO, or delete what it did not create.
"""

import os
import signal
import stat
import subprocess
import tempfile
import time

import pytest
from conftest import wtrec_cmd
from live_helpers import assert_summary_lost_nothing

from wtrec.format import CaptureReader
from wtrec.records import End, Header

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("live")]

NOBODY = 65534
SUDO = {"SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY), "SUDO_USER": "nobody"}


@pytest.fixture
def user_dir(workdir):
    """A directory the sudo user (nobody) owns and may write."""
    os.chown(workdir, NOBODY, NOBODY)
    return workdir


@pytest.fixture
def root_dir():
    """A directory only root may write, with a root file in it."""
    path = tempfile.mkdtemp(prefix="wtrec-root-")
    os.chmod(path, 0o755)
    with open(os.path.join(path, "precious"), "wb") as f:
        f.write(b"root's data\n")
    os.chmod(os.path.join(path, "precious"), 0o644)
    yield path
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))
    os.rmdir(path)


def record(out: str, *options: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """A short recording of nothing, as root on behalf of nobody."""
    return subprocess.run(wtrec_cmd("record", "-q", "-c", "no-such-comm", "--duration", "0.2",
                                    "-o", out, *options),
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **SUDO})


def refused(result: subprocess.CompletedProcess, needle: str) -> None:
    """Exit 7 with one `wtrec:` line holding `needle`, before any recording started."""
    assert result.returncode == 7, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wtrec: ") and needle in lines[0], lines


def snapshot(path: str) -> tuple:
    """Everything about a directory entry that a recorder must not change."""
    info = os.lstat(path)
    content = b""
    if stat.S_ISREG(info.st_mode):
        with open(path, "rb") as f:
            content = f.read()
    return (info.st_mode, info.st_uid, info.st_gid, info.st_rdev, info.st_ino, info.st_size,
            content, os.readlink(path) if stat.S_ISLNK(info.st_mode) else None)


def test_force_over_a_symlink_to_a_root_file_leaves_the_root_file_untouched(user_dir, root_dir):
    precious = os.path.join(root_dir, "precious")
    link = os.path.join(user_dir, "cap.wtrace")
    os.symlink(precious, link)
    before = snapshot(precious), snapshot(link)
    refused(record(link, "--force"), "is a symbolic link")
    assert (snapshot(precious), snapshot(link)) == before
    assert os.listdir(user_dir) == ["cap.wtrace"]


@pytest.mark.parametrize("device, numbers", [("null", (1, 3)), ("full", (1, 7))])
def test_force_over_a_copy_of_a_device_leaves_the_node_untouched(user_dir, device, numbers):
    node = os.path.join(user_dir, device)
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(*numbers))
    before = snapshot(node)
    refused(record(node, "--force"), "is a device")
    assert snapshot(node) == before  # not opened, chmod'ed, chown'ed nor deleted
    refused(record(node), "exists; give --force")
    assert snapshot(node) == before
    assert os.listdir(user_dir) == [device]


def test_output_where_only_root_may_write_is_refused(user_dir, root_dir):
    before = sorted(os.listdir(root_dir))
    for out in (os.path.join(root_dir, "cap.wtrace"), os.path.join(root_dir, "precious")):
        refused(record(out, "--force"), "(checked as uid 65534, the user who ran sudo)")
    assert sorted(os.listdir(root_dir)) == before
    private = os.path.join(user_dir, "private")
    os.mkdir(private, 0o700)  # root's, inside nobody's directory
    refused(record(os.path.join(private, "cap.wtrace")), "Permission denied")
    assert os.listdir(private) == []


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
def test_a_fifo_without_a_reader_is_refused_promptly(user_dir, force):
    fifo = os.path.join(user_dir, "fifo")
    os.mkfifo(fifo)
    os.chown(fifo, NOBODY, NOBODY)
    result = record(fifo, *force, timeout=30)  # raises TimeoutExpired if it hangs
    refused(result, "is a FIFO" if force else "exists; give --force")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.listdir(user_dir) == ["fifo"]


def test_a_directory_the_user_may_write_but_not_list_is_enough(user_dir):
    drop_box = os.path.join(user_dir, "drop-box")
    os.mkdir(drop_box, 0o300)
    os.chown(drop_box, NOBODY, NOBODY)
    result = record(os.path.join(drop_box, "cap.wtrace"))
    assert result.returncode == 0, result.stderr
    assert os.stat(os.path.join(drop_box, "cap.wtrace")).st_uid == NOBODY


def test_force_replaces_an_old_capture_by_rename_as_the_user(user_dir):
    out = os.path.join(user_dir, "cap.wtrace")
    with open(out, "wb") as f:
        f.write(b"old capture")
    os.chown(out, NOBODY, NOBODY)
    elsewhere = os.path.join(user_dir, "old-inode")
    os.link(out, elsewhere)
    result = record(out, "--force")
    assert result.returncode == 0, result.stderr
    assert_summary_lost_nothing(result.stderr)
    assert "owned by uid 65534" in result.stderr
    info = os.stat(out)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY, NOBODY, 0o600)
    with open(elsewhere, "rb") as f:
        assert f.read() == b"old capture"  # the old inode was not truncated
    with open(out, "rb") as f:
        reader = CaptureReader(f)
        assert [type(r) for r in reader] == [Header, End] and not reader.truncated
    assert sorted(os.listdir(user_dir)) == ["cap.wtrace", "old-inode"]


def holds_a_file_in(pid: int, directory: str) -> bool:
    """Whether the process has a file inside `directory` open (its output, made or opened)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(directory + "/"):
                return True
        except OSError:
            pass  # closed meanwhile
    return False


def interrupt_during_start_up(out: str, *options: str) -> subprocess.CompletedProcess:
    """Ctrl-C once this run has opened its output, while the probe is still being built."""
    proc = subprocess.Popen(wtrec_cmd("record", "-q", "-c", "no-such-comm", "-o", out, *options),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **SUDO})
    deadline = time.monotonic() + 60
    while not holds_a_file_in(proc.pid, os.path.dirname(out)) and proc.poll() is None:
        assert time.monotonic() < deadline, "the recorder opened no output within 60 s"
        time.sleep(0.002)  # polls /proc; the recorder signals nothing at this point
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=60)[1]
    assert "recording" not in stderr, "the signal came after start-up; " + stderr
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)


def test_ctrl_c_during_start_up_removes_only_what_this_run_created(user_dir):
    fresh = os.path.join(user_dir, "fresh.wtrace")
    result = interrupt_during_start_up(fresh)
    assert result.returncode == 130, result.stderr
    assert os.listdir(user_dir) == []  # the empty file it made is gone

    old = os.path.join(user_dir, "old.wtrace")
    with open(old, "wb") as f:
        f.write(b"old capture")
    os.chown(old, NOBODY, NOBODY)
    before = snapshot(old)
    result = interrupt_during_start_up(old, "--force")
    assert result.returncode == 130, result.stderr
    assert os.listdir(user_dir) == ["old.wtrace"] and snapshot(old) == before, result.stderr
