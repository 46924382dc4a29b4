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


def parse_size(text: str) -> int:
    """'64M', '256k', '1048576' -> bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    number, unit = (text[:-1], units[text[-1].lower()]) if text[-1:].lower() in units else (text, 1)
    try:
        value = int(number) * unit
    except ValueError:
        raise UsageError(f"--buffer-size takes bytes with an optional K, M or G, not {text!r}") from None
    if not 4096 <= value <= 1 << 30:
        raise UsageError(f"--buffer-size must be between 4K and 1G, not {text}")
    return value


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
    identity = sudo_identity(os.environ)
    output = open_output(path, force=force, identity=identity)
    try:
        if identity is not None and no_chown:
            os.fchown(output.stream.fileno(), 0, 0)
        elif identity is not None:
            say(f"{path} is owned by uid {identity.uid}, the sudo user; "
                "--no-chown keeps it root's")
    except BaseException:
        output.discard()
        output.close()
        raise
    return output.stream, output


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
                             buffer_bytes=parse_size(buffer_size), pid_table=follow_max)
        if print_bpf:
            print(bpf_program_text(config))
            return
        if output == "-" and sys.stdout.isatty():
            raise OutputError("refusing to write a binary capture to a terminal; "
                              "redirect stdout or give -o FILE")
        preflight.check_recording_possible()
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
