"""Reading a whole log fast, for rebuilding read models (shared/views.py).

Paging the log with the library's `select_notifications` costs a query per page, a dict per
row, a Notification per row and the hex form of every state. A rebuild instead streams the rows
through one server-side cursor in the binary format, fetched a page ahead by a thread (half of
a fetch is waiting for PostgreSQL, which then works on the other core while this process
decodes), and turns each row into its domain event without the intermediate objects. At most
PREFETCH pages are held at once: memory stays flat however long the log."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from hmac import compare_digest
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.utils import resolve_topic
from psycopg import sql

from shared.application import QijiApplication
from shared.continuity import Continuity, EventsTable
from shared.integrity import V2_MARK, V2_TAIL, EventIntegrityError
from shared.store import EventDecoder, postgres_conninfo

PAGE = 2000
PREFETCH = 2
_DONE = object()


def scan(app: QijiApplication, start: int, continuity: Continuity | None = None,
         first: int = PAGE, reads: Callable[[type], bool] | None = None
         ) -> Iterator[tuple[int, Any]]:
    """(position, domain event) for every event from position `start` on, in log order, as
    of the moment the scan begins (later events are for the caller's next read). Every event's
    MAC is checked before it is decoded, and its place among its aggregate's versions (with
    `continuity`, the caller's memory of them from earlier scans; a new one otherwise):
    EventIntegrityError (with its position) at the first that fails, and nothing after it.

    With `reads` (whether a view applies events of a class), an event of a class it does not
    read is checked all the same — MAC and place — but not decoded: (position, None).
    Decoding is most of what a replay costs (≈ 2.4 µs an event, against 1.3 for the MAC), and
    a service's log is full of events no view reads (its request records, for one). The
    class is told from the topic (resolved once per topic, so a renamed class's old topic is
    still recognised)."""
    decode = EventDecoder(app.mapper)
    wanted: dict[str, bool] = {}  # topic → whether `reads` reads its class
    check = app.event_mac.check
    # The usual row (a UUID id, a v2 MAC) is checked inline: EventMac.check's computation
    # without its call and its checks of types (tests/integration/test_replay.py holds the two
    # to each other); anything else is checked by EventMac.check itself.
    new_mac = app.event_mac.v2()
    kinds: dict[str, bytes] = {}  # topics, encoded once
    if continuity is None:
        continuity = Continuity(EventsTable(app))
    newest = continuity.newest  # Continuity.follow, inlined: a rebuild does it a million times
    for page in pages(app, start, first):
        continuity.prime(page, page[0][0] - 1)
        for position, originator_id, version, topic, state in page:
            if type(originator_id) is UUID and state[-V2_TAIL:-66] == V2_MARK and state[
                    -2:] == b'"}':
                kind = kinds.get(topic)
                if kind is None:
                    kind = kinds[topic] = topic.encode()
                mac = new_mac()
                mac.update(b"%s%d\n%s\n%s" % (originator_id.bytes, version, kind,
                                               state[:-V2_TAIL]))
                intact = compare_digest(state[-66:-2], mac.hexdigest().encode())
            else:
                intact = check(originator_id, version, topic, state)
            if not intact:
                raise EventIntegrityError(originator_id, version, position=position)
            if version != newest.get(originator_id, 0) + 1:
                raise EventIntegrityError(originator_id, version,
                                          continuity.problem(originator_id, version), position)
            newest[originator_id] = version
            if reads is not None:
                read = wanted.get(topic)
                if read is None:
                    read = wanted[topic] = reads(resolve_topic(topic))
                if not read:
                    yield position, None
                    continue
            yield position, decode(position, originator_id, version, topic, state)


def pages(app: QijiApplication, start: int, first: int = PAGE
          ) -> Iterator[list[tuple[Any, ...]]]:
    """The stored rows from position `start` on, undecoded and unchecked, in pages: (position,
    originator id, version, topic, state), in log order. The usual handful (a reader a moment
    behind the writers) comes in a first page of at most `first` rows, with one query; a long
    stretch (a rebuild, a long absence) streams after it through one cursor."""
    size = first
    while True:
        page = [(n.id, n.originator_id, n.originator_version, n.topic, n.state)
                for n in app.read_log(start, size)]
        if page:
            yield page
        if len(page) < size:
            return
        start, size = page[-1][0] + 1, PAGE
        if app.settings.persistence == "postgres":
            break
        # SQLite is in this process: no round trips to save, pages are as good as a cursor.
    yield from _pages(app, start)


def _pages(app: QijiApplication, start: int) -> Iterator[list[tuple[Any, ...]]]:
    """Pages of raw rows, fetched by a thread one page ahead of the consumer."""
    recorder: Any = app.recorder
    statement = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state"
        " FROM {}.{} WHERE notification_id >= %s ORDER BY notification_id").format(
            sql.Identifier(recorder.datastore.schema),
            sql.Identifier(recorder.events_table_name))

    def fetch(put: Callable[[Any], bool]) -> None:
        # A connection of its own, not one of the pool's: a rebuild holds it for seconds.
        with psycopg.connect(postgres_conninfo(app.settings)) as conn, conn.cursor(
                name="qiji_replay", binary=True) as cursor:
            cursor.execute(statement, (start,))
            while True:
                rows = cursor.fetchmany(PAGE)
                if not rows or not put(rows):
                    break

    return prefetched(fetch, f"{app.name}-replay")


def prefetched(fetch: Callable[[Callable[[Any], bool]], None], name: str
               ) -> Generator[Any, None, None]:
    """What `fetch(put)` puts, produced by a thread of its own at most PREFETCH items ahead of
    the consumer (`put` returns False once the consumer has gone: stop then). An exception in
    `fetch` is raised to the consumer."""
    items: queue.Queue[Any] = queue.Queue(maxsize=PREFETCH)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            fetch(put)
        except BaseException as error:  # handed to the consumer, which raises it
            put(error)
        finally:
            put(_DONE)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
