"""Starts the command given after `--`, held until the probe traces its pid.

Under sudo the command runs as the invoking user (SUDO_UID/SUDO_GID), not
as root: recording a program should not change what it is allowed to do.
"""

import os
import pwd
import shutil
import subprocess
import sys

from wtrec.errors import UsageError


class HeldCommand:
    """A child process created, but blocked before exec until `release()`."""

    def __init__(self, argv: list[str]):
        if shutil.which(argv[0]) is None:
            raise UsageError(f"command not found: {argv[0]}")
        self.argv = argv
        read_end, self._go = os.pipe()
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

        # Popen returns only once the child has exec'd, so the child cannot
        # simply block before exec: a tiny interpreter waits for the go byte
        # on a pipe, then execs the command in place (same pid, already traced).
        # End of file instead (the recorder died or gave up): never run it.
        shim = ("import os, sys\n"
                "go = int(sys.argv[1])\n"
                "if os.read(go, 1) != b'g':\n"
                "    os._exit(125)\n"
                "os.close(go)\n"
                "try:\n"
                "    os.execvp(sys.argv[2], sys.argv[2:])\n"
                "except OSError as exc:\n"
                "    sys.stderr.write(f'wtrec: cannot run {sys.argv[2]}: {exc.strerror}\\n')\n"
                "    os._exit(127)\n")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-S", "-B", "-c", shim, str(read_end), *argv], env=env,
                user=user, group=group, extra_groups=[] if user is not None else None,
                pass_fds=(read_end,))
        except OSError as exc:
            os.close(self._go)
            raise UsageError(f"cannot start {argv[0]}: {exc.strerror}") from None
        finally:
            os.close(read_end)
        self.pid = self.process.pid
        self.binary = shutil.which(argv[0])

    def release(self) -> None:
        os.write(self._go, b"g")
        os.close(self._go)

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
        try:
            os.close(self._go)
        except OSError:
            pass
        self.process.wait()
