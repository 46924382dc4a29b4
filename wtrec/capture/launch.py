"""Starts the command given after `--`, held until the probe traces its pid.

Under sudo the command runs as the invoking user (SUDO_UID/SUDO_GID), not
as root: recording a program should not change what it is allowed to do.
"""

import os
import pwd
import select
import shutil
import signal
import subprocess
import sys

from wtrec.errors import UsageError


class HeldCommand:
    """A child process created, but blocked before exec until `release()`."""

    def __init__(self, argv: list[str], ready_timeout_s: float = 30.0):
        if shutil.which(argv[0]) is None:
            raise UsageError(f"command not found: {argv[0]}")
        self.argv = argv
        env = dict(os.environ)
        user, group = None, None
        sudo_uid, sudo_gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
        if os.geteuid() == 0 and sudo_uid.isdigit() and int(sudo_uid) != 0:
            user = int(sudo_uid)
            group = int(sudo_gid) if sudo_gid.isdigit() else None
            try:
                entry = pwd.getpwuid(user)
                env.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
            except KeyError:
                pass
        ready_read, ready_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-S", "-B", "-c", _SHIM, str(ready_write), str(os.getpid()),
                 *argv], env=env, user=user, group=group,
                extra_groups=[] if user is not None else None, pass_fds=(ready_write,))
        except OSError as exc:
            os.close(ready_read)
            raise UsageError(f"cannot start {argv[0]}: {exc.strerror}") from None
        finally:
            os.close(ready_write)
        self.pid = self.process.pid
        self.binary = shutil.which(argv[0])
        # What the command runs with, for asking its loader what it will load (--tls).
        self.env, self.user, self.group = env, user, group
        try:
            ready = _read_with_timeout(ready_read, ready_timeout_s)
        finally:
            os.close(ready_read)
        if ready != b"r":
            self.abandon()
            raise UsageError(f"cannot start {argv[0]}: the launcher did not get ready")

    def release(self) -> None:
        """Lets the command exec (its pid is traced by now)."""
        try:
            os.kill(self.pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass  # it died meanwhile; exit_status says how

    def exit_status(self) -> int:
        """The shell's convention: the exit code, or 128 + the killing signal.

        The recording stops when the command exits, or earlier on Ctrl-C,
        which the command (in the same process group) gets too; give it a
        moment, and report 0 for a command that is still running.
        """
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return 0
        return 128 - code if code < 0 else code

    def abandon(self) -> None:
        """The recording failed or was stopped before start: never let the command run."""
        self.process.kill()
        self.process.wait()


# Popen returns once the child has exec'd the interpreter, so the child
# cannot simply block before exec: a tiny interpreter starts, says it is
# ready (so its own start-up happens before its pid is traced), then waits
# for SIGUSR1 without any read or write (a traced read would be recorded
# as the command's), and execs the command in place (same pid, traced).
# If the recorder dies first (the parent changes), it never runs it.
_SHIM = """\
import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
ready, parent = int(sys.argv[1]), int(sys.argv[2])
os.write(ready, b"r")
os.close(ready)
while signal.sigtimedwait([signal.SIGUSR1], 0.2) is None:
    if os.getppid() != parent:
        os._exit(125)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR1])
try:
    os.execvp(sys.argv[3], sys.argv[3:])
except OSError as exc:
    sys.stderr.write(f"wtrec: cannot run {sys.argv[3]}: {exc.strerror}\\n")
    os._exit(127)
"""


def _read_with_timeout(fd: int, timeout_s: float) -> bytes:
    """One byte from `fd`, or b'' at end of file or when nothing came in time."""
    ready, _, _ = select.select([fd], [], [], timeout_s)
    return os.read(fd, 1) if ready else b""
