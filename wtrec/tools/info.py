"""`wtrec info`: what a capture holds, from its index when it has a sound one.

Without an index (streamed to stdout, recorder killed, index damaged) the
same totals come from one pass over the records.
"""

import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import BinaryIO

from wtrec.format import (
    CaptureReader,
    CaptureStats,
    Counts,
    StatsAccumulator,
    is_seekable,
    start_reading,
)
from wtrec.records import Derivation, Header, Record
from wtrec.tools.render import comm_text, escape_text, format_clock, header_dict


@dataclass(kw_only=True)
class CaptureInfo:
    name: str
    header: Header
    version: tuple[int, int]
    stats: CaptureStats
    file_size: int | None
    frames: int
    compressed_bytes: int
    content_bytes: int
    source: str  # "index" or "scan"
    index_note: str  # why there was no usable index, or "indexed"
    warning: str | None  # the reader's "ends early" warning


def inspect(name: str, stream: BinaryIO | None, *,
            started: tuple[CaptureReader, Iterator[Record]] | None = None) -> CaptureInfo:
    """Reads the header, then the index if sound, else every record.

    `started` is a reading already past its header (a pipe whose header
    was read to open it); `stream` is then None.
    """
    from wtrec.format import read_index  # loaded here: only summaries read the index

    if started is not None:
        reader, records = started
        assert reader.header is not None  # a Capture holds only readings with a header
        header = reader.header
        index, note = None, "input is a pipe"
    else:
        assert stream is not None
        seekable = is_seekable(stream)
        index, note = read_index(stream) if seekable else (None, "input is a pipe")
        if seekable:
            stream.seek(0)
        reader, records, header = start_reading(stream)
    version = reader.version or (header.format_major, header.format_minor)
    if index is not None:
        compressed = sum(f.size for f in index.frames)
        content = sum(f.content_size for f in index.frames)
        return CaptureInfo(name=name, header=header, version=version, stats=index.stats,
                           file_size=_size(stream), frames=len(index.frames),
                           compressed_bytes=compressed, content_bytes=content, source="index",
                           index_note=note, warning=None)
    accumulator = StatsAccumulator()
    while batch := list(islice(records, 4096)):
        accumulator.add_batch(batch)
    stats = accumulator.snapshot()
    return CaptureInfo(name=name, header=header, version=version, stats=stats,
                       file_size=_size(stream), frames=reader.frames,
                       compressed_bytes=reader.compressed_bytes,
                       content_bytes=reader.content_bytes, source="scan", index_note=note,
                       warning=reader.warning)


def _size(stream: BinaryIO | None) -> int | None:
    if stream is None:
        return None
    try:
        return os.fstat(stream.fileno()).st_size
    except (OSError, ValueError, io.UnsupportedOperation):
        return None


def human_bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{value} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def _date(wall_ns: int) -> str:
    seconds = wall_ns // 1_000_000_000
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(seconds))


_safe = escape_text


def _traced(header: Header) -> str:
    f = header.filters
    who = []
    if f.command:
        who.append("command " + _safe(" ".join(f.command)) + " and its descendants")
    if f.all:
        who.append("every process")
    who += [f"comm {_safe(c)}" for c in f.comms] + [f"pid {p}" for p in f.pids]
    if f.follow and not f.command:
        who[-1:] = [who[-1] + " and children"] if who else []
    buffer = "perf buffer" if header.buffer == "perf" else "ring buffer"
    return (f"{', '.join(who) or 'nothing'}; syscalls {','.join(map(_safe, f.syscalls))}; "
            f"snaplen {header.snaplen}; {buffer}")


def _derivation(step: Derivation) -> str:
    notes = "; ".join(f"{_safe(k)} {_safe(v)}" for k, v in step.notes)
    inputs = len(step.inputs)
    text = f"{_safe(step.op)} on {_date(step.time_ns)} by wtrec {_safe(step.tool_version)}"
    if inputs > 1:
        text += f" from {inputs} captures"
    return text + (f": {notes}" if notes else "")


def _counts(c: Counts) -> str:
    return f"{c.events} events, {c.captured} bytes"


def text_lines(info: CaptureInfo) -> Iterator[str]:
    """The human view of one capture."""
    h, s = info.header, info.stats
    size = human_bytes(info.file_size) if info.file_size is not None else "size unknown"
    how = "indexed" if info.source == "index" else f"scanned ({info.index_note})"
    yield f"file        {_safe(info.name)}: {size}, format {h.format_major}.{h.format_minor}, {how}"
    if h.series is not None:
        yield f"series      {_safe(h.series.id)}, file {h.series.index}"
    yield (f"recorded    {_date(h.start_ns)} on {_safe(h.host)}, kernel {_safe(h.kernel)}, "
           f"wtrec {_safe(h.tool_version)}")
    yield f"command     {_safe(' '.join(h.argv))}"
    yield f"traced      {_traced(h)}"
    if h.filters.tls:  # record --tls: which files got TLS probes
        for path, family, symbols in h.filters.tls_targets:
            yield f"tls         {_safe(path)} ({_safe(family)}): {_safe(' '.join(symbols))}"
    for step in h.provenance:
        yield f"derived     {_derivation(step)}"
    if s.first_ns is not None and s.last_ns is not None:
        span = (s.last_ns - s.first_ns) / 1e9
        yield (f"span        {format_clock(h, s.first_ns)} .. {format_clock(h, s.last_ns)}"
               f" ({span:.3f} s)")
    out, into = _direction_totals(s)
    yield (f"events      {s.all.events} ({out.events} out, {into.events} in), "
           f"{s.all.captured} bytes captured of {s.all.expected}")
    yield f"            {s.all.truncated} truncated, {s.all.failed} failed"
    yield f"lost        {s.lost}"
    ratio = info.content_bytes / info.compressed_bytes if info.compressed_bytes else 0.0
    yield (f"frames      {info.frames}, {human_bytes(info.compressed_bytes)} compressed from "
           f"{human_bytes(info.content_bytes)} ({ratio:.1f}x)")
    if s.end is not None:
        yield f"closed      cleanly at {format_clock(h, s.end.ts_ns)} (end record)"
    else:
        yield f"closed      no: {info.warning or 'no end record'}"
    yield ""
    yield f"{'pid':>8}  {'comm':<16} {'out':>24}  {'in':>24}  truncated"
    for p in sorted(s.processes.values(), key=lambda p: p.pid):
        truncated = p.out.truncated + p.into.truncated
        yield (f"{p.pid:>8}  {comm_text(p.comm):<16} {_counts(p.out):>24}  "
               f"{_counts(p.into):>24}  {truncated}")
    yield ""
    yield f"{'pid':>8}  {'fd':>4}  {'out':>24}  {'in':>24}  what"
    for f in sorted(s.fds.values(), key=lambda f: (f.pid, f.fd)):
        what = _safe(f.identity.describe()) if f.identity else "unknown"
        yield f"{f.pid:>8}  {f.fd:>4}  {_counts(f.out):>24}  {_counts(f.into):>24}  {what}"


def series_lines(headers: list[Header]) -> Iterator[str]:
    """For several files: which series they belong to, and the indexes missing between them."""
    by_id: dict[str, list[int]] = {}
    for header in headers:
        if header.series is not None:
            by_id.setdefault(header.series.id, []).append(header.series.index)
    for series_id, indexes in by_id.items():
        present = sorted(set(indexes))
        missing = sorted(set(range(present[0], present[-1] + 1)) - set(present))
        text = (f"series      {_safe(series_id)}: {len(indexes)} files, "
                f"index {present[0]} .. {present[-1]}")
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (", ..." if len(missing) > 20 else "")
            text += f", missing {len(missing)}: {shown}"
        else:
            text += ", none missing between them"
        if len(present) < len(indexes):
            text += ", some given twice"
        yield text


def _direction_totals(s: CaptureStats) -> tuple[Counts, Counts]:
    out, into = Counts(), Counts()
    for p in s.processes.values():
        out.merge(p.out)
        into.merge(p.into)
    return out, into


def _counts_dict(c: Counts) -> dict:
    return {"events": c.events, "bytes": c.captured, "expected": c.expected,
            "truncated": c.truncated, "failed": c.failed}


def as_dict(info: CaptureInfo) -> dict:
    """The --json view of one capture."""
    s, h = info.stats, info.header
    return {
        "file": info.name, "size": info.file_size, "source": info.source,
        "index": info.index_note, "header": header_dict(h),
        "first_wall_ns": None if s.first_ns is None else h.wall_ns(s.first_ns),
        "last_wall_ns": None if s.last_ns is None else h.wall_ns(s.last_ns),
        "events": _counts_dict(s.all), "lost": s.lost, "records": s.records,
        "frames": info.frames, "compressed_bytes": info.compressed_bytes,
        "content_bytes": info.content_bytes, "closed": s.end is not None,
        "warning": info.warning,
        "processes": [{"pid": p.pid, "comm": p.comm.decode("utf-8", "backslashreplace"),
                       "out": _counts_dict(p.out), "in": _counts_dict(p.into)}
                      for p in sorted(s.processes.values(), key=lambda p: p.pid)],
        "fds": [{"pid": f.pid, "fd": f.fd,
                 "identity": None if f.identity is None else {
                     "kind": f.identity.kind, "local": f.identity.local,
                     "remote": f.identity.remote, "path": f.identity.path},
                 "out": _counts_dict(f.out), "in": _counts_dict(f.into)}
                for f in sorted(s.fds.values(), key=lambda f: (f.pid, f.fd))],
    }
