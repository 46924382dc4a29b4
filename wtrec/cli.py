"""The command line: options, printing, exit codes. The only module that exits.

Every WtrecError becomes one `wtrec: ...` line on stderr and its exit code;
anything else is a bug and says so in one line (WTREC_DEBUG=1 shows more).
"""

import os
import platform
import signal
import socket
import sys
import time
from contextlib import contextmanager
from typing import Annotated, BinaryIO

import typer

from wtrec import __version__
from wtrec.cli_outputs import open_input
from wtrec.errors import OutputError, UsageError, WtrecError
from wtrec.records import (
    FORMAT_MAJOR,
    FORMAT_MINOR,
    FdInfo,
    Filters,
    Header,
    IoEvent,
    Lost,
)
from wtrec.select import Selection, select_records

EXIT_INTERNAL = 70

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Record the plaintext processes write to the kernel (eBPF); study it offline.",
)


def _say(message: str) -> None:
    print(f"wtrec: {message}", file=sys.stderr, flush=True)


@contextmanager
def _reported_errors():
    """Maps wtrec's errors to one stderr line and an exit code."""
    try:
        yield
    except WtrecError as exc:
        _say(exc.message)
        raise typer.Exit(exc.exit_code) from None
    except BrokenPipeError:
        # The reader of our stdout went away (| head): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:  # a bug: say so in one line, not a traceback
        if os.environ.get("WTREC_DEBUG"):
            raise
        _say(f"internal error (a bug, please report it): {type(exc).__name__}: {exc}; "
             "WTREC_DEBUG=1 shows the traceback")
        raise typer.Exit(EXIT_INTERNAL) from None


# ---------------------------------------------------------------- record


def _parse_snaplen(text: str, use_perf: bool) -> int:
    from wtrec.probe import MAX_SNAPLEN_PERF, MAX_SNAPLEN_RINGBUF

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


def _create_output(path: str, force: bool) -> tuple[BinaryIO, bool]:
    """Opens the capture file 0600; refuses to overwrite unless forced."""
    if path == "-":
        if sys.stdout.isatty():
            raise OutputError("refusing to write a binary capture to a terminal; "
                              "redirect stdout or give -o FILE")
        return sys.stdout.buffer, False
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise OutputError(f"{path} exists; give --force to overwrite it") from None
    except OSError as exc:
        raise OutputError(f"cannot create {path}: {exc.strerror}") from None
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb"), True



def _status_printer(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None

    def show(stats) -> None:
        from wtrec.record import boot_ns

        rate = stats.rate(boot_ns())
        sys.stderr.write(f"\r\x1b[Kwtrec: {stats.events} events, {stats.bytes} bytes, "
                         f"{stats.lost} lost, {rate:.0f} events/s")
        sys.stderr.flush()

    return show


def _describe_filters(filters: Filters) -> str:
    if filters.all:
        return "every process"
    parts = [f"comm {c}" for c in filters.comms] + [f"pid {p}" for p in filters.pids]
    return ", ".join(parts) + (" and their children" if filters.follow else "")


def _parse_size(text: str) -> int:
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


def _parse_syscalls(text: str | None, read: bool) -> tuple[str, ...]:
    from wtrec.kernel_event import READ_FAMILY, WRITE_FAMILY

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


@app.command(context_settings={"allow_interspersed_args": False})
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
):
    """Trace the write family (and with --read the read family) of chosen processes (root)."""
    with _reported_errors():
        from wtrec import preflight
        from wtrec.probe import ProbeConfig, bpf_program_text

        comms = tuple(comm or ())
        pids = tuple(pid or ())
        argv = list(command or ())
        for name in comms:
            if not name or len(name.encode()) > 15:
                raise UsageError(f"--comm {name!r}: the kernel keeps 1 to 15 bytes of a comm")
        if not (comms or pids or trace_all or argv):
            raise UsageError("say what to trace: -c COMM, -p PID, --all, or -- COMMAND")
        if follow and not pids:
            raise UsageError("--follow follows the children of -p PID processes")
        use_perf = perf_buffer or not preflight.kernel_has_ringbuf()
        config = ProbeConfig(snaplen=_parse_snaplen(snaplen, use_perf), use_perf=use_perf,
                             trace_all=trace_all, comms=comms, pids=pids,
                             follow=follow or bool(argv), syscalls=_parse_syscalls(syscalls, read),
                             buffer_bytes=_parse_size(buffer_size))
        if print_bpf:
            print(bpf_program_text(config))
            return
        if output == "-" and sys.stdout.isatty():
            raise OutputError("refusing to write a binary capture to a terminal; "
                              "redirect stdout or give -o FILE")
        preflight.check_recording_possible()
        out, created = _create_output(output, force)
        if created and not no_chown:
            _hand_to_sudo_user(out, output)
        try:
            _stats, child_status = _record_into(out, output, config, duration, count, quiet, argv)
        except BaseException:
            if created and os.path.getsize(output) == 0:
                os.unlink(output)
            raise
        finally:
            if out is not sys.stdout.buffer:
                out.close()
        if child_status:
            raise typer.Exit(child_status)


def _hand_to_sudo_user(out: BinaryIO, path: str) -> None:
    """Under sudo, the invoking user should read the capture without root."""
    uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    if os.geteuid() != 0 or not uid.isdigit():
        return
    os.fchown(out.fileno(), int(uid), int(gid) if gid.isdigit() else -1)
    _say(f"{path} is owned by uid {uid}, the sudo user; --no-chown keeps it root's")


def _warn_compat(config, child) -> None:
    from wtrec import compat

    pids = list(config.pids) + (compat.pids_with_comm(config.comms) if config.comms else [])
    for found in compat.compat_processes(pids):
        _say(f"warning: process {found} is a 32-bit program; the kernel's syscall tracepoints "
             "do not see 32-bit syscalls, so it will not be captured")
    if child is not None and compat.is_32bit_elf(child.binary):
        _say(f"warning: {child.argv[0]} is a 32-bit program; the kernel's syscall tracepoints "
             "do not see 32-bit syscalls, so it will not be captured")


def _record_into(out, output_name, config, duration, count, quiet, argv):
    from wtrec.format import CaptureWriter
    from wtrec.launch import HeldCommand
    from wtrec.probe import Probe
    from wtrec.record import Recording, StopRule, boot_ns

    child = HeldCommand(argv) if argv else None
    try:
        probe = Probe(config)
    except BaseException:
        if child:
            child.abandon()
        raise
    try:
        _warn_compat(config, child)
        anchor_real, anchor_boot = time.time_ns(), boot_ns()
        header = Header(
            format_major=FORMAT_MAJOR, format_minor=FORMAT_MINOR, tool_version=__version__,
            host=socket.gethostname(), kernel=platform.release(), start_ns=anchor_real,
            anchor_boot_ns=anchor_boot, anchor_real_ns=anchor_real, argv=tuple(sys.argv),
            filters=Filters(config.comms, config.pids, config.trace_all, config.syscalls,
                            config.follow, tuple(argv)),
            snaplen=config.snaplen, buffer="perf" if config.use_perf else "ringbuf")
        try:
            writer = CaptureWriter(out, header)
        except OSError as exc:
            raise OutputError(f"cannot write {output_name}: {exc.strerror}") from None
        status = _status_printer(quiet)
        recording = Recording(probe, writer, StopRule(duration, count, child and child.process),
                              status)
        stop = lambda *_: recording.stop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, stop)
        buffer_name = "perf buffer" if config.use_perf else "ring buffer"
        what = f"{' '.join(argv)} (pid {child.pid}) and its children" if child else \
            _describe_filters(header.filters)
        _say(f"recording {', '.join(config.syscalls)} of {what} into {output_name} "
             f"({buffer_name}, snaplen {config.snaplen}); Ctrl-C stops")
        if child:
            probe.add_pid(child.pid)
            child.release()
        try:
            stats = recording.run()
        except OSError as exc:
            raise OutputError(f"cannot write {output_name}: {exc.strerror}") from None
        if status:
            sys.stderr.write("\r\x1b[K")
        _say(_summary(stats, output_name))
        return stats, (child.exit_status() if child else 0)
    finally:
        # Detaching tens of tracepoints takes the kernel seconds; the capture
        # is complete and summarised before that.
        probe.close()


def _summary(stats, output_name: str) -> str:
    text = f"{stats.events} events, {stats.bytes} bytes, {stats.lost} lost"
    if stats.incomplete:
        text += f", {stats.incomplete} with data missing"
    return f"{text} -> {output_name}"


# ---------------------------------------------------------------- show


def _use_color(mode: str) -> bool:
    if mode == "always":
        return True
    if mode == "never":
        return False
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


@app.command()
def show(
    file: Annotated[str, typer.Argument(help="Capture file, or - for stdin.")],
    hex_view: Annotated[bool, typer.Option("--hex", help="Hex dump of each payload.")] = False,
    json_view: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Show at most N events.",
                                                 min=0)] = None,
    pid: Annotated[list[int] | None, typer.Option("--pid", help="Only this pid or tid.")] = None,
    comm: Annotated[list[str] | None, typer.Option("--comm", help="Only this comm.")] = None,
    fd: Annotated[list[int] | None, typer.Option("--fd", help="Only this fd.")] = None,
    color: Annotated[str, typer.Option(
        "--color", help="auto, always or never.")] = "auto",
):
    """Print the events of a capture (no root needed)."""
    with _reported_errors():
        from wtrec.format import CaptureReader
        from wtrec.render import JsonRenderer, TextRenderer

        if hex_view and json_view:
            raise UsageError("--hex and --json exclude each other")
        if color not in ("auto", "always", "never"):
            raise UsageError(f"--color takes auto, always or never, not {color!r}")
        stream = open_input(file)
        reader = CaptureReader(stream)
        renderer = None
        selection = Selection(tuple(pid or ()), tuple(comm or ()), tuple(fd or ()))
        write = sys.stdout.write
        for record in select_records(reader, selection, limit):
            if renderer is None:
                renderer = (JsonRenderer(reader.header) if json_view else
                            TextRenderer(reader.header, hex_view, _use_color(color)))
            if isinstance(record, IoEvent):
                lines = list(renderer.event(record))
            elif isinstance(record, Lost):
                lines = list(renderer.lost(record))
            elif isinstance(record, FdInfo):
                lines = list(renderer.fd_info(record))
            else:
                continue
            if lines:
                write("\n".join(lines) + "\n")
        sys.stdout.flush()
        if reader.warning and (limit is None or reader.events < limit):
            _say(reader.warning)


def _version_callback(value: bool):
    if value:
        print(f"wtrec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version_callback,
                                          is_eager=True, help="Print the version.")] = False,
):
    """Record the plaintext processes write to the kernel (eBPF); study it offline."""


def main() -> None:
    """Runs the app; click's usage errors become one `wtrec:` line, exit 2."""
    try:  # typer >= 0.2x vendors click; older typer uses click itself
        from typer._click.exceptions import UsageError as ClickUsageError
    except ImportError:
        from click.exceptions import UsageError as ClickUsageError

    try:
        code = app(standalone_mode=False)
    except ClickUsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "wtrec"
        if exc.format_message():  # empty after no_args_is_help printed the help
            _say(f"{exc.format_message()} (see {command} --help)")
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


# The offline commands register themselves on `app`.
from wtrec import cli_offline  # noqa: F401
