"""The root recorder's output file, opened the way tcpdump -Z opens its own.

A recorder runs as root but writes where a user told it to. Under sudo the
path comes from the user who ran sudo, so every step that touches the path
(open the directory, create the file, rename over an old capture, remove a
failed one) runs with that user's file-system identity: fsuid, fsgid and
their groups, switched for this thread only and only around the one call
(setfsuid/setfsgid change no other thread and keep root's other powers, so
the switch back cannot fail). The recorder can then write only where the
user could.

On top of that, for every caller:
- the last path component is never followed if it is a symbolic link, and
  only a regular file is ever written (a pipe is given as `-o -`);
- a new file is created with O_EXCL, mode 0600;
- with --force an existing capture is not truncated in place: the new one
  is written beside it and renamed over it when its first bytes are
  written, so a recorder that fails while starting leaves the old file
  as it was;
- after a failure only the file this run created is removed (checked by
  its inode, and only while it is still empty), never a path that was
  there before; a rotated recording's older files (-W) are removed the
  same way, checked by inode, as the user.
"""

import ctypes
import errno
import os
import pwd
import secrets
import signal
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from io import FileIO

from wtrec.errors import OutputError

FILE_MODE = 0o600
OVERFLOW_GID = 65534  # the kernel's "nogroup", when sudo did not say the group
# Signals that could interrupt a switched identity; held back for the few
# system calls it lasts, so the thread never runs Python code as the user.
HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


@dataclass(frozen=True)
class Identity:
    """Whose permissions decide where the output may go."""

    uid: int
    gid: int
    groups: tuple[int, ...]


def sudo_identity(environ: Mapping[str, str]) -> Identity | None:
    """The user who ran sudo, when root runs on their behalf; None otherwise."""
    uid_text = environ.get("SUDO_UID", "")
    if os.geteuid() != 0 or not uid_text.isdigit() or int(uid_text) == 0:
        return None
    uid = int(uid_text)
    try:
        account: pwd.struct_passwd | None = pwd.getpwuid(uid)
    except KeyError:
        account = None
    gid_text = environ.get("SUDO_GID", "")
    if gid_text.isdigit():
        gid = int(gid_text)
    else:
        gid = account.pw_gid if account else OVERFLOW_GID
    groups = tuple(os.getgrouplist(account.pw_name, gid)) if account else (gid,)
    return Identity(uid, gid, groups)


_libc = ctypes.CDLL(None, use_errno=True)


def _set_fs_ids(uid: int, gid: int) -> None:
    # setfsuid/setfsgid return the previous id and never fail loudly; asking
    # again with an invalid id (-1) reads the current one without changing it.
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)
    if _libc.setfsuid(-1) != uid or _libc.setfsgid(-1) != gid:
        raise OutputError(f"cannot take the file identity of uid {uid} gid {gid}")


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and its kin wait until the block is done (then they arrive as usual)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


@contextmanager
def acting_as(identity: Identity | None) -> Iterator[None]:
    """File-system calls in the block are checked as `identity` (None: as we are)."""
    if identity is None:
        yield
        return
    with signals_held():
        own_groups = os.getgroups()
        try:
            os.setgroups(list(identity.groups))
            _set_fs_ids(identity.uid, identity.gid)
            yield
        finally:
            _set_fs_ids(os.geteuid(), os.getegid())
            os.setgroups(own_groups)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


class OutputFile:
    """The capture file of one recording; `stream` is what the writer writes to."""

    def __init__(self, path: str, *, dir_fd: int, name: str, fd: int, temp_name: str | None,
                 identity: Identity | None):
        self.path = path
        self._dir_fd = dir_fd
        self._name = name
        self._temp_name = temp_name
        self._identity = identity
        info = os.fstat(fd)
        self._inode = (info.st_dev, info.st_ino)
        self.stream = _FirstWriteHook(fd, self._put_in_place)

    @property
    def in_place(self) -> bool:
        """Whether the capture is at its path yet (with --force: after its first bytes)."""
        return self._temp_name is None

    def _put_in_place(self) -> None:
        if self._temp_name is None:
            return
        with acting_as(self._identity):
            os.rename(self._temp_name, self._name, src_dir_fd=self._dir_fd,
                      dst_dir_fd=self._dir_fd)
        self._temp_name = None

    def discard(self) -> None:
        """After a failure: removes the file if this run created it and wrote nothing to it."""
        name = self._name if self._temp_name is None else self._temp_name
        try:
            with acting_as(self._identity):
                there = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
                if ((there.st_dev, there.st_ino) == self._inode and stat.S_ISREG(there.st_mode)
                        and there.st_size == 0):
                    os.unlink(name, dir_fd=self._dir_fd)
        except OSError:
            pass  # gone or replaced meanwhile: then it is not ours to remove

    def remove_finished(self) -> None:
        """After `close`: removes the file (record -W), if its name still holds the file
        this run created and it is regular; the checks and the unlink run as the user.
        """
        directory, _name = os.path.split(self.path)
        try:
            with acting_as(self._identity):
                dir_fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    there = os.stat(self._name, dir_fd=dir_fd, follow_symlinks=False)
                    if (there.st_dev, there.st_ino) == self._inode and stat.S_ISREG(there.st_mode):
                        os.unlink(self._name, dir_fd=dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError:
            pass  # gone or replaced meanwhile: then it is not ours to remove

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            os.close(self._dir_fd)


class _FirstWriteHook(FileIO):
    """A file that calls `before_first_write` once, before its first bytes go out."""

    def __init__(self, fd: int, before_first_write: Callable[[], None] | None):
        super().__init__(fd, "wb", closefd=True)
        self._before_first_write = before_first_write

    def write(self, data, /) -> int:
        if self._before_first_write is not None:
            self._before_first_write()
            self._before_first_write = None
        written = 0
        view = memoryview(data).cast("B")
        while written < len(view):  # FileIO writes once; a capture must go out whole
            written += super().write(view[written:]) or 0
        return written


def _error(path: str, exc: OSError, identity: Identity | None) -> OutputError:
    as_whom = f" (checked as uid {identity.uid}, the user who ran sudo)" if identity else ""
    return OutputError(f"cannot create {path}: {exc.strerror}{as_whom}")


def open_output(path: str, *, force: bool, identity: Identity | None) -> OutputFile:
    """Creates the capture file at `path` (see the module docstring for the rules)."""
    directory, name = os.path.split(path)
    if name in ("", ".", ".."):
        raise OutputError(f"{path} is a directory; give a file name")
    try:
        with acting_as(identity):
            # O_PATH: the user needs to search the directory, not to list it.
            dir_fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _error(path, exc, identity) from None
    try:
        fd, temp_name = _create(path, dir_fd, name, force, identity)
    except BaseException:
        os.close(dir_fd)
        raise
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        # The empty file this run made goes too (it used to stay behind).
        _remove_new(dir_fd, temp_name or name, fd, identity)
        os.close(fd)
        os.close(dir_fd)
        raise
    return OutputFile(path, dir_fd=dir_fd, name=name, fd=fd, temp_name=temp_name,
                      identity=identity)


def _remove_new(dir_fd: int, name: str, fd: int, identity: Identity | None) -> None:
    """Unlinks `name` if it is still the empty file open as `fd` (just made by this run)."""
    try:
        with acting_as(identity):
            made, there = os.fstat(fd), os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if (made.st_dev, made.st_ino) == (there.st_dev, there.st_ino) and there.st_size == 0:
                os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass  # gone or replaced meanwhile: then it is not ours to remove


def _create(path: str, dir_fd: int, name: str, force: bool,
            identity: Identity | None) -> tuple[int, str | None]:
    """Returns the new file's fd and, with --force over an old file, its name beside it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with acting_as(identity):
            try:
                return os.open(name, flags, FILE_MODE, dir_fd=dir_fd), None
            except FileExistsError:
                if not force:
                    raise OutputError(f"{path} exists; give --force to overwrite it") from None
                there = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(there.st_mode):
                raise OutputError(f"{path} is {_kind(there.st_mode)}; wtrec replaces only "
                                  "regular files (for a pipe, use -o - and redirect)")
            for _attempt in range(10):
                temp_name = f".{name}.{secrets.token_hex(4)}.tmp"
                try:
                    return os.open(temp_name, flags, FILE_MODE, dir_fd=dir_fd), temp_name
                except FileExistsError:
                    continue
            raise OSError(errno.EEXIST, "no free name beside it for the new capture")
    except OSError as exc:
        raise _error(path, exc, identity) from None
