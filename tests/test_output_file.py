"""The recorder's output file: no link followed, only regular files, replace by rename.

These call wtrec/capture/output_file.py directly, as whoever runs the suite;
the sudo cases, with a real recorder, are in test_live_output.py.
"""

import os
import stat
import subprocess
import sys
import tempfile
import threading

import pytest

from wtrec.capture.output_file import Identity, acting_as, open_output, sudo_identity
from wtrec.errors import OutputError


def test_a_new_file_is_created_0600_and_an_existing_one_kept_without_force(tmp_path):
    path = tmp_path / "new.wtrace"
    output = open_output(str(path), force=False, identity=None)
    output.stream.write(b"capture")
    output.close()
    assert path.read_bytes() == b"capture" and stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(OutputError, match="exists; give --force"):
        open_output(str(path), force=False, identity=None)
    assert path.read_bytes() == b"capture"


def test_force_writes_beside_and_renames_at_the_first_write_never_truncating(tmp_path):
    path = tmp_path / "cap.wtrace"
    path.write_bytes(b"old capture")
    other_name = tmp_path / "hard-link"
    os.link(path, other_name)  # the old inode, seen from elsewhere
    output = open_output(str(path), force=True, identity=None)
    assert path.read_bytes() == b"old capture" and not output.in_place
    output.stream.write(b"new ")
    assert output.in_place
    output.stream.write(b"capture")
    output.close()
    assert path.read_bytes() == b"new capture"
    assert other_name.read_bytes() == b"old capture"  # replaced by rename, not truncated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap.wtrace", "hard-link"]


@pytest.mark.parametrize("force", [False, True])
def test_a_symlink_at_the_last_component_is_never_followed(tmp_path, force):
    target = tmp_path / "precious"
    target.write_bytes(b"not yours")
    target.chmod(0o644)
    link = tmp_path / "cap.wtrace"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="a symbolic link" if force else "exists"):
        open_output(str(link), force=force, identity=None)
    assert target.read_bytes() == b"not yours" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == [
        "cap.wtrace", "precious"]


def test_a_fifo_is_refused_at_once_even_without_a_reader(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: list = []

    def attempt() -> None:
        try:
            open_output(str(fifo), force=True, identity=None)
        except OutputError as exc:
            outcome.append(exc.message)

    opener = threading.Thread(target=attempt, daemon=True)
    opener.start()
    opener.join(30)  # an open() of a FIFO without a reader would block forever
    assert outcome == [f"{fifo} is a FIFO; wtrec replaces only regular files "
                       "(for a pipe, use -o - and redirect)"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_directory_is_refused(tmp_path):
    for path in (str(tmp_path) + "/", str(tmp_path / ".")):
        with pytest.raises(OutputError, match="is a directory"):
            open_output(path, force=True, identity=None)
    (tmp_path / "sub").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        open_output(str(tmp_path / "sub"), force=True, identity=None)


def test_discard_removes_only_the_empty_file_this_run_created(tmp_path):
    path = tmp_path / "cap.wtrace"
    output = open_output(str(path), force=False, identity=None)
    output.discard()
    output.close()
    assert not path.exists()

    path.write_bytes(b"old capture")
    output = open_output(str(path), force=True, identity=None)
    output.discard()  # failed before its first write: the old file stays as it was
    output.close()
    assert path.read_bytes() == b"old capture"
    assert [p.name for p in tmp_path.iterdir()] == ["cap.wtrace"]

    output = open_output(str(path), force=True, identity=None)
    output.stream.write(b"partial")
    output.discard()  # something was written: keep it for `wtrec recover`
    output.close()
    assert path.read_bytes() == b"partial"

    path.unlink()
    output = open_output(str(path), force=False, identity=None)
    path.unlink()
    path.write_bytes(b"")  # someone else's empty file now has the name
    output.discard()
    output.close()
    assert path.exists()


def test_sudo_identity_only_for_root_on_behalf_of_another_user():
    assert sudo_identity({}) is None
    assert sudo_identity({"SUDO_UID": "0", "SUDO_GID": "0"}) is None
    assert sudo_identity({"SUDO_UID": "x"}) is None
    found = sudo_identity({"SUDO_UID": "65534", "SUDO_GID": "65534"})
    if os.geteuid() != 0:
        assert found is None
    else:
        assert found is not None and (found.uid, found.gid) == (65534, 65534)
        assert 0 not in found.groups  # root's groups are not lent to the user


@pytest.mark.skipif(os.geteuid() != 0, reason="switching the file identity needs root")
def test_acting_as_checks_permissions_as_the_user_and_then_switches_back():
    root_only = tempfile.mkdtemp(prefix="wtrec-root-only-")
    try:
        os.chmod(root_only, 0o700)
        groups = os.getgroups()
        nobody = Identity(65534, 65534, (65534,))
        with pytest.raises(PermissionError), acting_as(nobody):
            os.open(os.path.join(root_only, "x"), os.O_WRONLY | os.O_CREAT, 0o600)
        assert os.listdir(root_only) == [] and os.getgroups() == groups
        # Root again: the same call works.
        os.close(os.open(os.path.join(root_only, "x"), os.O_WRONLY | os.O_CREAT, 0o600))
        assert os.listdir(root_only) == ["x"]
    finally:
        for name in os.listdir(root_only):
            os.unlink(os.path.join(root_only, name))
        os.rmdir(root_only)


HELD_CTRL_C = """
import os, signal, time
import wtrec.wtrace.event_table  # the recorder's numpy, whose BLAS starts threads
from wtrec.capture.output_file import signals_held
reached = False
try:
    with signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # had another thread taken it, Python would raise here
        reached = True
except KeyboardInterrupt:
    print("held" if reached else "interrupted inside the block")
"""


def test_a_ctrl_c_while_signals_are_held_waits_though_numpy_runs_threads():
    """Only the main thread takes the stop signals, so holding them there holds them.

    Before, numpy's BLAS threads (started at import with nothing blocked) took
    the signal, Python raised at once in the main thread, and a Ctrl-C while
    the output file was being made left its `.NAME.….tmp` behind.
    """
    done = subprocess.run([sys.executable, "-c", HELD_CTRL_C], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stdout.strip() == "held", done.stdout + done.stderr
