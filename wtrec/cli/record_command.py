"""`wtrec record`: the options of a recording, its output file, its status line."""

import os
import sys
from typing import Annotated, BinaryIO

import typer

from wtrec.capture import preflight
from wtrec.capture.kernel_records import READ_FAMILY, WRITE_FAMILY
from wtrec.capture.output_file import OutputFile, open_output, signals_held, sudo_identity
from wtrec.capture.probe import (
    DEFAULT_PID_TABLE,
    MAX_SNAPLEN_PERF,
    MAX_SNAPLEN_RINGBUF,
    ProbeConfig,
    bpf_program_text,
)
from wtrec.cli.exits import reported_errors, say
from wtrec.errors import OutputError, UsageError
from wtrec.record import Stats, boot_ns, record_session
from wtrec.records import Header
from wtrec.rotation import RotatingWriter, RotationRule, series_path

MIN_FILE_SIZE = 1 << 10  # -C: a file holds at least its preamble, header and index
MAX_FILE_SIZE = 1 << 50


def parse_snaplen(text: str, use_perf: bool) -> int:
    limit = MAX_SNAPLEN_PERF if use_perf else MAX_SNAPLEN_RINGBUF
    if text == "max":
        return limit
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"--snaplen takes a number of bytes or 'max', not {text!r}") from None
    if not 1 <= value <= limit:
        mode = "the perf buffer" if use_perf else "the ring buffer"
        raise UsageError(f"--snaplen must be between 1 and {limit} with {mode}, not {value}")
    return value


def parse_size(text: str, option: str = "--buffer-size", low: int = 4096,
               high: int = 1 << 30) -> int:
    """'64M', '256k', '1048576' -> bytes, between `low` and `high`."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    number, unit = (text[:-1], units[text[-1].lower()]) if text[-1:].lower() in units else (text, 1)
    try:
        value = int(number) * unit
    except ValueError:
        raise UsageError(f"{option} takes bytes with an optional K, M or G, not {text!r}") from None
    if not low <= value <= high:
        raise UsageError(f"{option} must be between {_size_text(low)} and {_size_text(high)}, "
                         f"not {text}")
    return value


def _size_text(size: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


def rotation_rule(output: str, file_size: str | None, seconds: float | None,
                  keep: int | None) -> RotationRule:
    """-C, -G and -W as a rule; they need a file name, and -W needs -C or -G."""
    rule = RotationRule(
        max_bytes=None if file_size is None else parse_size(
            file_size, "-C/--file-size", low=MIN_FILE_SIZE, high=MAX_FILE_SIZE),
        every_ns=None if seconds is None else round(seconds * 1e9), keep=keep)
    if seconds is not None and seconds <= 0:
        raise UsageError(f"-G/--rotate-seconds must be more than 0, not {seconds}")
    if keep is not None and not rule.rotates:
        raise UsageError("-W/--file-count keeps the newest files of a series: give -C or -G too")
    if rule.rotates and output == "-":
        raise UsageError("-C and -G write a series of files; give -o FILE, not -o -")
    return rule


def parse_syscalls(text: str | None, read: bool) -> tuple[str, ...]:
    if text is None:
        chosen = list(WRITE_FAMILY)
    else:
        chosen = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in WRITE_FAMILY + READ_FAMILY]
        if unknown or not chosen:
            raise UsageError(f"--syscalls: unknown {', '.join(unknown) or 'empty list'}; choose "
                             f"from {', '.join(WRITE_FAMILY + READ_FAMILY)}")
    if read:
        chosen += [name for name in READ_FAMILY if name not in chosen]
    return tuple(dict.fromkeys(chosen))


def create_output(path: str, *, force: bool,
                  no_chown: bool) -> tuple[BinaryIO, OutputFile | None]:
    """The stream to record into; for a path, the file too (see capture/output_file.py).

    Under sudo the file is created as the user who ran sudo, so it lands only
    where they could write and is theirs; --no-chown then gives it to root.
    """
    if path == "-":
        if sys.stdout.isatty():
            raise OutputError("refusing to write a binary capture to a terminal; "
                              "redirect stdout or give -o FILE")
        return sys.stdout.buffer, None
    output = _owned_output(path, force=force, no_chown=no_chown, announce=True)
    return output.stream, output


def _owned_output(path: str, *, force: bool, no_chown: bool, announce: bool) -> OutputFile:
    """A new capture file at `path`, owned as the module docstring of output_file.py says."""
    identity = sudo_identity(os.environ)
    output = open_output(path, force=force, identity=identity)
    try:
        if identity is not None and no_chown:
            os.fchown(output.stream.fileno(), 0, 0)
        elif identity is not None and announce:
            say(f"{path} is owned by uid {identity.uid}, the sudo user; "
                "--no-chown keeps it root's")
    except BaseException:
        output.discard()
        output.close()
        raise
    return output


class SeriesOutput:
    """The files of a rotated recording, each made like a single capture file.

    The first is created before the probe is loaded (so a bad path fails
    at once), the others when the RotatingWriter asks for them.
    """

    def __init__(self, path: str, rule: RotationRule, *, force: bool, no_chown: bool):
        self.path = path
        self._rule = rule
        self._force = force
        self._no_chown = no_chown
        self._first: OutputFile | None = _owned_output(
            series_path(path, 0), force=force, no_chown=no_chown, announce=True)
        self.writer: RotatingWriter | None = None

    def make_writer(self, header: Header) -> RotatingWriter:
        self.writer = RotatingWriter(self.path, header, self._rule, open_file=self._open)
        return self.writer

    def _open(self, path: str) -> OutputFile:
        if self._first is not None and self._first.path == path:
            first, self._first = self._first, None
            return first
        return _owned_output(path, force=self._force, no_chown=self._no_chown, announce=False)

    def abandon(self) -> None:
        """After a failure: the file being written is closed (removed if still empty)."""
        if self.writer is not None:
            self.writer.abandon()
        elif self._first is not None:
            self._first.discard()
            self._first.close()
            self._first = None

    def summary(self) -> str:
        writer = self.writer
        if writer is None:
            return ""
        first = series_path(self.path, len(writer.removed))
        text = f"{writer.files} files, {first} .. {writer.path} (series {writer.series_id})"
        if writer.removed:
            text += f"; {len(writer.removed)} older ones removed (-W {self._rule.keep})"
        return text


class StatusLine:
    """The live status line on a terminal; messages clear it before they print."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._drawn = False

    def show(self, stats: Stats) -> None:
        rate = stats.rate(boot_ns())
        sys.stderr.write(f"\r\x1b[Kwtrec: {stats.events} events, {stats.bytes} bytes, "
                         f"{stats.lost} lost, {rate:.0f} events/s")
        sys.stderr.flush()
        self._drawn = True

    def say(self, message: str) -> None:
        if self._drawn:
            sys.stderr.write("\r\x1b[K")
            self._drawn = False
        say(message)


def record(
    output: Annotated[str, typer.Option("-o", "--output", help="Capture file, or - for stdout.")],
    command: Annotated[list[str] | None, typer.Argument(
        help="After --: a command to start and trace with all its descendants.")] = None,
    comm: Annotated[list[str] | None, typer.Option(
        "-c", "--comm", help="Trace processes with this exact comm (15 chars max); repeatable.")] = None,
    pid: Annotated[list[int] | None, typer.Option(
        "-p", "--pid", help="Trace this process id; repeatable.")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", help="Also trace the children -p processes create.")] = False,
    trace_all: Annotated[bool, typer.Option("--all", help="Trace every process.")] = False,
    syscalls: Annotated[str | None, typer.Option(
        "--syscalls", help="Comma-separated syscalls to capture (default: the write family).")] = None,
    read: Annotated[bool, typer.Option(
        "--read", help="Also capture what is received: read, readv, pread64, recvfrom, recvmsg.")] = False,
    tls: Annotated[bool, typer.Option(
        "--tls", help="Also capture the plaintext of TLS library calls (OpenSSL, GnuTLS, "
                      "wolfSSL: SSL_write, SSL_read, ...), with the socket underneath.")] = False,
    tls_lib: Annotated[list[str] | None, typer.Option(
        "--tls-lib", help="A TLS library or program to probe besides those found; repeatable; "
                          "implies --tls.")] = None,
    snaplen: Annotated[str, typer.Option(
        "-s", "--snaplen", help="Bytes captured per call, up to 1048576, or 'max'.")] = "4096",
    perf_buffer: Annotated[bool, typer.Option(
        "--perf-buffer", help="Use the per-CPU perf buffer instead of the ring buffer.")] = False,
    follow_max: Annotated[int, typer.Option(
        "--follow-max", min=1, max=1 << 20,
        help="Most processes traced by pid at once (-p, the command, followed children); "
             "children beyond it are counted, not traced.")] = DEFAULT_PID_TABLE,
    buffer_size: Annotated[str, typer.Option(
        "--buffer-size", help="Kernel buffer size, e.g. 32M (default) or 256K.")] = "32M",
    duration: Annotated[float | None, typer.Option(
        "--duration", help="Stop after this many seconds.", min=0)] = None,
    count: Annotated[int | None, typer.Option(
        "--count", help="Stop after this many events.", min=1)] = None,
    file_size: Annotated[str | None, typer.Option(
        "-C", "--file-size",
        help="Rotate: begin a new file once one has passed this size, e.g. 100M; "
             "-o run.wtrace becomes run.000.wtrace, run.001.wtrace, ...")] = None,
    rotate_seconds: Annotated[float | None, typer.Option(
        "-G", "--rotate-seconds", help="Rotate: begin a new file every so many seconds.")] = None,
    file_count: Annotated[int | None, typer.Option(
        "-W", "--file-count", min=1,
        help="With -C/-G: keep only the newest COUNT files of the series, removing older ones.")
    ] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No live status line.")] = False,
    no_chown: Annotated[bool, typer.Option(
        "--no-chown", help="Keep the file root's under sudo.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    print_bpf: Annotated[bool, typer.Option(
        "--print-bpf", help="Print the BPF program as it would be loaded, then exit.")] = False,
) -> None:
    """Trace the write family (and with --read the read family) of chosen processes (root)."""
    with reported_errors():
        comms = tuple(comm or ())
        pids = tuple(pid or ())
        argv = tuple(command or ())
        for name in comms:
            if not name or len(name.encode()) > 15:
                raise UsageError(f"--comm {name!r}: the kernel keeps 1 to 15 bytes of a comm")
        if not (comms or pids or trace_all or argv):
            raise UsageError("say what to trace: -c COMM, -p PID, --all, or -- COMMAND")
        if follow and not pids:
            raise UsageError("--follow follows the children of -p PID processes")
        use_perf = perf_buffer or not preflight.kernel_has_ringbuf()
        config = ProbeConfig(snaplen=parse_snaplen(snaplen, use_perf), use_perf=use_perf,
                             trace_all=trace_all, comms=comms, pids=pids,
                             follow=follow or bool(argv), syscalls=parse_syscalls(syscalls, read),
                             buffer_bytes=parse_size(buffer_size), pid_table=follow_max,
                             tls=tls or bool(tls_lib), tls_libs=tuple(tls_lib or ()))
        rule = rotation_rule(output, file_size, rotate_seconds, file_count)
        if print_bpf:
            print(bpf_program_text(config))
            return
        if output == "-" and sys.stdout.isatty():
            raise OutputError("refusing to write a binary capture to a terminal; "
                              "redirect stdout or give -o FILE")
        preflight.check_recording_possible()
        if rule.rotates:
            _record_series(output, rule, force=force, no_chown=no_chown, quiet=quiet,
                           config=config, command=argv, duration=duration, count=count)
            return
        output_file: OutputFile | None = None
        try:
            # A Ctrl-C while the file is being made arrives once it is known,
            # so the clean-up below can remove it.
            with signals_held():
                out, output_file = create_output(output, force=force, no_chown=no_chown)
            status = StatusLine(not quiet and sys.stderr.isatty())
            _stats, child_status = record_session(
                out, output_name=output, config=config, command=argv, duration_s=duration,
                max_events=count, notify=status.say,
                status=status.show if status.enabled else None)
        except BaseException:
            if output_file is not None:
                output_file.discard()
            raise
        finally:
            if output_file is not None:
                output_file.close()
        if child_status:
            raise typer.Exit(child_status)


def _record_series(output: str, rule: RotationRule, *, force: bool, no_chown: bool,
                   quiet: bool, config: ProbeConfig, command: tuple[str, ...],
                   duration: float | None, count: int | None) -> None:
    """`record` with -C/-G: the same session, handed a writer that rotates files."""
    series: SeriesOutput | None = None
    try:
        with signals_held():
            series = SeriesOutput(output, rule, force=force, no_chown=no_chown)
        status = StatusLine(not quiet and sys.stderr.isatty())
        _stats, child_status = record_session(
            series.make_writer, output_name=f"{series_path(output, 0)} and on",
            config=config, command=command, duration_s=duration, max_events=count,
            notify=status.say, status=status.show if status.enabled else None)
    except BaseException:
        if series is not None:
            series.abandon()
        raise
    status.say(series.summary())
    if child_status:
        raise typer.Exit(child_status)
