"""What each (pid, fd) is, learned from the fd records as a capture streams by.

A capture carries an fd record before the first event on a descriptor and
again when a number gets a new identity, so the latest record for a
(pid, fd) names every event after it. Every offline view uses this one
tracker, so they all name a descriptor the same way.
"""

from collections.abc import Iterable, Iterator

from wtrec.records import FdIdentity, FdInfo, IoEvent, Record


class FdNames:
    """The latest fd record per (pid, fd)."""

    def __init__(self) -> None:
        self._names: dict[tuple[int, int], FdIdentity] = {}

    def learn(self, info: FdInfo) -> None:
        self._names[(info.pid, info.fd)] = info.identity

    def get(self, pid: int, fd: int) -> FdIdentity | None:
        return self._names.get((pid, fd))

    def events(self, records: Iterable[Record]) -> Iterator[IoEvent]:
        """The events of `records`, learning from their fd records on the way."""
        for record in records:
            if isinstance(record, FdInfo):
                self._names[(record.pid, record.fd)] = record.identity
            elif isinstance(record, IoEvent):
                yield record
