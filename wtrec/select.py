"""Chooses which records an offline command sees: by pid, comm, fd, and a limit."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from wtrec.records import IoEvent, Record


@dataclass(frozen=True)
class Selection:
    """Empty tuples select everything; within a field any value matches."""

    pids: tuple[int, ...] = ()
    comms: tuple[str, ...] = ()
    fds: tuple[int, ...] = ()

    def matches(self, event: IoEvent) -> bool:
        if self.pids and event.pid not in self.pids and event.tid not in self.pids:
            return False
        if self.comms and event.comm.decode("utf-8", "backslashreplace") not in self.comms:
            return False
        if self.fds and event.fd not in self.fds:
            return False
        return True


def select_records(records: Iterable[Record], selection: Selection,
                   limit: int | None = None) -> Iterator[Record]:
    """Passes the events the selection matches, and every non-event record.

    Stops after `limit` events; records other than events (lost, end) pass
    through so losses stay visible where they happened.
    """
    shown = 0
    for record in records:
        if isinstance(record, IoEvent):
            if limit is not None and shown >= limit:
                return
            if not selection.matches(record):
                continue
            shown += 1
        yield record
