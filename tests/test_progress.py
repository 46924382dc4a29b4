"""Progress bars: drawn on a terminal's stderr, never on a pipe, never changing the output.

Each command runs with stderr on a real pseudo-terminal (the pty module).
To be sure it is still running when the bar is due (a quarter second in),
its output goes into a pipe the test does not read until the bar has
appeared: the command stalls on a full pipe, however fast the machine.
"""

import os
import pty
import random
import select
import signal
import subprocess
import threading
import time

import pytest
from conftest import build_capture, make_header, wtrec_cmd

from wtrec.records import FdIdentity, FdInfo, IoEvent

HIDE_CURSOR, SHOW_CURSOR, ERASE_LINE = b"\x1b[?25l", b"\x1b[?25h", b"\x1b[2K"
BAR = "━".encode()
WAIT_S = 60  # only a bound, so a broken command fails instead of hanging


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """About 3 MB of events whose payloads all hold "needle", in two pids."""
    rng = random.Random(13)
    records = [FdInfo(1_000_000_000, pid, 3, FdIdentity("tcp", "127.0.0.1:5000",
                                                         "127.0.0.1:11111"))
               for pid in (10, 20)]
    for seq in range(1500):
        data = b"needle " + rng.randbytes(2000)  # incompressible: the file is as big
        records.append(IoEvent(1_000_000_000 + seq, 10 + 10 * (seq % 2), 10, 0, b"client",
                               3, len(data), data, syscall="write", ret=len(data), seq=seq))
    path = tmp_path_factory.mktemp("progress") / "big.wtrace"
    path.write_bytes(build_capture(records, make_header()))
    return path


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("WTREC_NO_PROGRESS", "CI")}
    env.update({"TERM": "xterm", "COLUMNS": "100", **extra})
    return env


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """A command whose stderr is a pseudo-terminal; what it draws there is gathered."""

    def __init__(self, args, *, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=None,
                 stdout_too=False):
        master, slave = pty.openpty()
        # Ctrl-C as a terminal sends it: a pytest started in the background by a
        # shell without job control ignores SIGINT, and the command would inherit that.
        self.process = subprocess.Popen(args, stdin=stdin, stdout=slave if stdout_too else stdout,
                                        stderr=slave, env=env or _env(),
                                        preexec_fn=_default_sigint)
        os.close(slave)
        self._master = master
        self.drawn = b""

    def wait_for(self, needle: bytes) -> None:
        """Reads the terminal until `needle` shows (or fails after WAIT_S)."""
        deadline = time.monotonic() + WAIT_S
        while needle not in self.drawn:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} never drawn; got {self.drawn[-300:]!r}"
            if select.select([self._master], [], [], left)[0] and not self._read():
                raise AssertionError(f"the terminal closed before {needle!r}: {self.drawn!r}")

    def _read(self) -> bytes:
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # EIO: the command closed its side
            chunk = b""
        self.drawn += chunk
        return chunk

    def finish(self) -> int:
        while self._read():
            pass
        os.close(self._master)
        return self.process.wait(WAIT_S)


def _open_fifo_held(fifo) -> tuple[int, int]:
    """The FIFO's reading end, and a writing end of our own held open.

    Without a writer of our own, a read that starts before the command has
    opened the FIFO (a loaded machine starts it slowly) sees end of file;
    the command's writes then fail with EPIPE. Close the second fd once
    the command has finished.
    """
    reading_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    held = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    return reading_end, held


def _drain(fd: int, into: list) -> threading.Thread:
    def run():
        with os.fdopen(fd, "rb") as stream:
            into.append(stream.read())
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _after_bar(drawn: bytes) -> bytes:
    """What the terminal keeps once the bar is erased: the text after its last erase."""
    assert drawn.count(HIDE_CURSOR) == drawn.count(SHOW_CURSOR), drawn[-300:]
    return drawn.rsplit(ERASE_LINE, 1)[-1]


WRITERS = {
    "filter": lambda big, out: ["filter", "--pid", "10", "-o", out, "--force", str(big)],
    "export-jsonl": lambda big, out: ["export", "--format", "jsonl", "-o", out, "--force",
                                      str(big)],
    "export-pcapng": lambda big, out: ["export", "--format", "pcapng", "-o", out, "--force",
                                       str(big)],
    "export-parquet": lambda big, out: ["export", "--format", "parquet", "-o", out, "--force",
                                        str(big)],
    "merge": lambda big, out: ["merge", "-o", out, "--force", str(big), str(big)],
    "recover": lambda big, out: ["recover", "-o", out, "--force", str(big)],
}


def _plain_run(args):
    """The command with stderr on a pipe: its output and its stderr."""
    done = subprocess.run(wtrec_cmd(*args), capture_output=True, env=_env(), timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_writers_draw_a_bar_and_write_the_same_result(big, tmp_path, command):
    plain = tmp_path / "plain.out"
    expected_stderr = _plain_run(WRITERS[command](big, str(plain)))
    assert b"\x1b" not in expected_stderr  # stderr on a pipe: the one-line summary only
    assert expected_stderr.count(b"\n") == 1 and expected_stderr.startswith(b"wtrec: ")

    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reading_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # there before the writer opens
    terminal = Terminal(wtrec_cmd(*WRITERS[command](big, str(fifo))))
    terminal.wait_for(BAR)  # meanwhile the command waits on the full FIFO
    os.set_blocking(reading_end, True)
    result: list[bytes] = []
    drain = _drain(reading_end, result)
    assert terminal.finish() == 0, terminal.drawn[-300:]
    drain.join(WAIT_S)

    assert b" MB" in terminal.drawn  # bytes read of the file's size
    shown = _after_bar(terminal.drawn).replace(b"\r\n", b"\n")
    assert shown == expected_stderr.replace(str(plain).encode(), str(fifo).encode())
    if command.startswith("export"):
        assert result[0] == plain.read_bytes()
    else:  # a capture's header names the command line, so compare the events
        through_fifo = tmp_path / "fifo.wtrace"
        through_fifo.write_bytes(result[0])
        assert _events(through_fifo) == _events(plain)


def _events(path):
    done = subprocess.run(wtrec_cmd("show", "--json", str(path)), capture_output=True,
                          timeout=WAIT_S, check=True)
    return done.stdout


def test_grep_on_a_terminal_prints_the_same_matches(big):
    expected = subprocess.run(wtrec_cmd("grep", "-F", "needle", str(big)), capture_output=True,
                              env=_env(), timeout=WAIT_S)
    assert expected.returncode == 0 and expected.stderr == b""
    reading, writing = os.pipe()
    terminal = Terminal(wtrec_cmd("grep", "-F", "needle", str(big)), stdout=writing)
    os.close(writing)
    terminal.wait_for(BAR)  # grep waits on the full stdout pipe meanwhile
    result: list[bytes] = []
    drain = _drain(reading, result)
    assert terminal.finish() == 0
    drain.join(WAIT_S)
    assert result[0] == expected.stdout
    assert _after_bar(terminal.drawn) == b""  # nothing left on the terminal


def _feed_slowly(big):
    """grep -c reading stdin, half the capture sent: the rest waits for the test."""
    data = big.read_bytes()
    terminal = Terminal(wtrec_cmd("grep", "-c", "needle", "-"), stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE)
    terminal.process.stdin.write(data[:len(data) // 2])
    terminal.process.stdin.flush()
    return terminal, data[len(data) // 2:]


def test_stdin_shows_bytes_and_rate_without_a_total(big):
    terminal, rest = _feed_slowly(big)
    terminal.wait_for(b"/? MB")  # bytes read of no known total (the rate needs flow)
    terminal.process.stdin.write(rest)
    terminal.process.stdin.close()
    out = terminal.process.stdout.read()
    assert terminal.finish() == 0
    assert out == b"1500\n"
    assert b"stdin" in terminal.drawn
    assert _after_bar(terminal.drawn) == b""


def test_ctrl_c_leaves_the_terminal_clean(big):
    terminal, _rest = _feed_slowly(big)
    terminal.wait_for(BAR)
    terminal.process.send_signal(signal.SIGINT)
    assert terminal.finish() == 130
    assert _after_bar(terminal.drawn) == b""  # bar erased, cursor shown, no traceback
    assert terminal.drawn.rfind(SHOW_CURSOR) > terminal.drawn.rfind(HIDE_CURSOR)


@pytest.mark.parametrize("setting", [{"WTREC_NO_PROGRESS": "1"}, {"TERM": "dumb"}])
def test_no_bar_when_turned_off(big, tmp_path, setting):
    expected = _plain_run(WRITERS["filter"](big, str(tmp_path / "plain.out")))
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reading_end, held = _open_fifo_held(fifo)
    terminal = Terminal(wtrec_cmd(*WRITERS["filter"](big, str(fifo))), env=_env(**setting))
    # Nothing to wait for when the point is that nothing comes: give the bar
    # three times its delay while the command is stalled on the FIFO.
    time.sleep(0.75)
    os.set_blocking(reading_end, True)
    drain = _drain(reading_end, [])
    assert terminal.finish() == 0
    os.close(held)
    drain.join(WAIT_S)
    assert terminal.drawn.replace(b"\r\n", b"\n") == expected.replace(
        str(tmp_path / "plain.out").encode(), str(fifo).encode())


def test_no_bar_when_stderr_is_a_pipe(big, tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reading_end, held = _open_fifo_held(fifo)
    process = subprocess.Popen(wtrec_cmd(*WRITERS["merge"](big, str(fifo))),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    time.sleep(0.75)  # as above: the command is stalled on the FIFO past the bar's delay
    os.set_blocking(reading_end, True)
    drain = _drain(reading_end, [])
    out, err = process.communicate(timeout=WAIT_S)
    os.close(held)
    drain.join(WAIT_S)
    assert process.returncode == 0
    assert out == b""
    assert err == f"wtrec: 3000 events from 2 captures -> {fifo}\n".encode()


def test_no_bar_while_matches_are_printed_on_the_same_terminal(big):
    terminal = Terminal(wtrec_cmd("grep", "-F", "needle", str(big)), stdout_too=True)
    time.sleep(0.75)  # as above: unread, the terminal is full and grep stalls on it
    assert terminal.finish() == 0
    assert terminal.drawn.count(b"needle") == 1500
    assert HIDE_CURSOR not in terminal.drawn and BAR not in terminal.drawn
