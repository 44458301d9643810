"""Continuity: each aggregate's events stand in the log in the order of their versions (1, 2,
3 ...). The second check every reader makes, beside the MAC (shared/integrity.py).

The MAC covers an event's aggregate, version, topic and content, but not its position, which
the database gives out as it stores the row: a genuine event deleted and stored again later in
the log (moved) still passes its MAC, and so would be acted on a second time, out of its order
(a rider reinstated after the suspension that followed the reinstatement). What shows is its
place among its aggregate's other events. Two forms of the check:

- `Continuity`, for a reader that reads the whole log in order (the sealer, a view): it
  remembers each aggregate's newest version and wants the next one. It also catches an
  aggregate's newest event moved to the end of the log (its version comes twice), as long as it
  remembers that aggregate.
- `out_of_place`, for a reader of part of the log (a follower's topics, a consumer's types,
  from any position): each event's neighbours in its aggregate — version - 1 and version + 1,
  looked up by the store's primary key — must stand before and after it. What no stateless
  check can see: an aggregate's newest event moved to the end with nothing after it (only the
  sealer, which remembers, and `qiji audit verify`, against the seal chain, name that).

`read_checked` is the read of a page every feed serves its readers through: MACs and places
checked, the events before the first that fails, and that failure."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Notification

from shared.application import QijiApplication
from shared.integrity import MAC_PROBLEM

# How many aggregates' newest versions `Continuity` remembers: bounded, so it stays flat on any
# log (a miss costs one query per page for the aggregates it misses).
VERSIONS_REMEMBERED = 100_000


@dataclass(frozen=True)
class Failure:
    """Where a read stopped, and why."""

    position: int
    problem: str
    topic: str = ""  # the stored event's


class EventsTable:
    """The service's events table as the library stores it, for the few queries the integrity
    checks ask of it directly (PostgreSQL, or the embedded default's SQLite)."""

    def __init__(self, app: QijiApplication):
        settings = app.settings
        recorder: Any = app.recorder
        self.datastore = recorder.datastore
        self.postgres = settings.persistence == "postgres"
        # The schema name is checked to be a plain identifier by the configuration loader.
        self.name = (f'"{settings.postgres_schema}".{recorder.events_table_name}'
                     if self.postgres else recorder.events_table_name)
        self.position = "notification_id" if self.postgres else "rowid"
        self.mark = "%s" if self.postgres else "?"

    def key(self, originator_id: Any) -> Any:
        """An aggregate id as the table holds it (SQLite: the id's hex form)."""
        if self.postgres:
            return originator_id
        return originator_id.hex if isinstance(originator_id, uuid.UUID) else (
            uuid.UUID(str(originator_id)).hex)

    def newest_versions(self, originator_ids: Sequence[Any], through: int) -> dict[Any, int]:
        """Each aggregate's newest version stored at or before position `through`."""
        if not originator_ids:
            return {}
        by_key = {self.key(i): i for i in originator_ids}
        with self.datastore.transaction(commit=False) as curs:
            if self.postgres:
                curs.execute(f"SELECT originator_id, max(originator_version) AS version"  # noqa: S608
                             f" FROM {self.name} WHERE originator_id = ANY(%s)"
                             f" AND notification_id <= %s GROUP BY originator_id",
                             (list(by_key), through))
            else:
                marks = ",".join("?" * len(by_key))
                curs.execute(f"SELECT originator_id, max(originator_version) AS version"  # noqa: S608
                             f" FROM {self.name} WHERE originator_id IN ({marks})"
                             f" AND rowid <= ? GROUP BY originator_id", [*by_key, through])
            return {by_key[r["originator_id"]]: int(r["version"]) for r in curs.fetchall()
                    if r["originator_id"] in by_key}

    def neighbours(self, rows: Sequence[tuple[int, Any, int]]
                   ) -> list[tuple[int | None, int | None]]:
        """For each (position, aggregate, version): the positions of the aggregate's versions
        just before and just after it (None where there is none), by the primary key."""
        if not rows:
            return []
        if self.postgres:
            # One statement, so no BEGIN and ROLLBACK around it: the pool's connections are in
            # autocommit, and a lone SELECT sees one snapshot all the same. Every feed read
            # asks this (issue 20: two round trips of three saved on the feed's way).
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(
                    f"SELECT p.notification_id AS before, n.notification_id AS after"  # noqa: S608
                    f" FROM unnest(%s::uuid[], %s::bigint[]) WITH ORDINALITY AS r(id, v, i)"
                    f" LEFT JOIN {self.name} p ON p.originator_id = r.id"
                    f" AND p.originator_version = r.v - 1"
                    f" LEFT JOIN {self.name} n ON n.originator_id = r.id"
                    f" AND n.originator_version = r.v + 1 ORDER BY r.i",
                    ([r[1] for r in rows], [r[2] for r in rows]))
                return [(r["before"], r["after"]) for r in curs.fetchall()]
        with self.datastore.transaction(commit=False) as curs:
            values = ",".join(["(?, ?, ?)"] * len(rows))
            curs.execute(
                f"WITH r(i, id, v) AS (VALUES {values})"  # noqa: S608
                f" SELECT p.rowid AS before, n.rowid AS after FROM r"
                f" LEFT JOIN {self.name} p ON p.originator_id = r.id"
                f" AND p.originator_version = r.v - 1"
                f" LEFT JOIN {self.name} n ON n.originator_id = r.id"
                f" AND n.originator_version = r.v + 1 ORDER BY r.i",
                [x for i, r in enumerate(rows) for x in (i, self.key(r[1]), r[2])])
            return [(r["before"], r["after"]) for r in curs.fetchall()]

    def read_placed(self, app: QijiApplication, from_position: int, limit: int,
                    topics: Sequence[str]) -> tuple[int, list[Any], list[tuple[Any, Any]]]:
        """What a reader of part of the log asks for each page, together: the log's last
        position, the page (notifications of `topics` from `from_position`, as
        `app.read_log` gives them) and each event's neighbours (as `neighbours`). On
        PostgreSQL in one statement, one snapshot (issue 20: the feed's fixed cost per read was
        three round trips; the last position from the same snapshot as the page is as good as
        one read before it — ids are given out in commit order, so the snapshot holds every
        position up to its last). Nothing here is checked: the caller checks each event's MAC
        and puts the neighbours to `out_of_place`."""
        start = max(from_position, 1)
        if not self.postgres or not topics:
            last = app.last_position()
            notifications = app.read_log(start, limit, topics)
            rows = [(n.id, n.originator_id, n.originator_version) for n in notifications]
            return last, notifications, self.neighbours(rows)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._placed_statement(), (start, list(topics), limit), prepare=True)
            found = curs.fetchall()
        last = int(found[0]["last"] or 0) if found else 0
        page = [r for r in found if r["notification_id"] is not None]
        return last, [Notification(id=r["notification_id"], originator_id=r["originator_id"],
                                   originator_version=r["originator_version"], topic=r["topic"],
                                   state=bytes(r["state"])) for r in page], \
            [(r["before"], r["after"]) for r in page]

    def _placed_statement(self) -> str:
        # The page first (LIMIT, by the position index), then its neighbours by the primary
        # key; the one-row `one` keeps the last position when the page is empty.
        return (f"WITH page AS MATERIALIZED (SELECT notification_id, originator_id,"  # noqa: S608
                f" originator_version, topic, state FROM {self.name}"
                f" WHERE notification_id >= %s AND topic = ANY(%s)"
                f" ORDER BY notification_id LIMIT %s)"
                f" SELECT (SELECT max(notification_id) FROM {self.name}) AS last,"
                f" page.*, p.notification_id AS before, n.notification_id AS after"
                f" FROM (SELECT 1) AS one LEFT JOIN page ON true"
                f" LEFT JOIN {self.name} p ON p.originator_id = page.originator_id"
                f" AND p.originator_version = page.originator_version - 1"
                f" LEFT JOIN {self.name} n ON n.originator_id = page.originator_id"
                f" AND n.originator_version = page.originator_version + 1"
                f" ORDER BY page.notification_id")


class Continuity:
    """For a reader of the whole log in order: wants each aggregate's versions to follow on.
    An event deleted, or two of one aggregate's events swapped, shows as a version that does not
    follow the one before it; an event moved later as a version that comes again. Remembers at
    most VERSIONS_REMEMBERED aggregates; the others' newest versions are asked of the store, a
    page at a time."""

    def __init__(self, table: EventsTable):
        self._table = table
        # Each aggregate's newest version so far (a loop that inlines `follow` uses it).
        self.newest: dict[Any, int] = {}
        # True while it has followed every row from the start of the log and forgotten none:
        # then an aggregate it does not remember has no event before, and the store need not
        # be asked (a rebuild from position 1 asks nothing).
        self._whole = False

    def prime(self, rows: Sequence[tuple[Any, ...]], through: int) -> None:
        """Looks up, in one query, the aggregates of `rows` (position, aggregate, version, ...:
        the page after position `through`) it does not remember."""
        newest = self.newest
        if through == 0:
            newest.clear()
            self._whole = True
        if len(newest) > VERSIONS_REMEMBERED:
            newest.clear()
            self._whole = False
        if self._whole:
            return
        wanted = {row[1] for row in rows if row[2] > 1 and row[1] not in newest}
        if wanted:
            found = self._table.newest_versions(list(wanted), through)
            for originator_id in wanted:
                newest[originator_id] = found.get(originator_id, 0)

    def follow(self, originator_id: Any, version: int) -> str:
        """"" when `version` follows the aggregate's newest version so far (then it is the
        newest); otherwise what is wrong. Only for rows of a page `prime`d."""
        newest = self.newest.get(originator_id, 0)
        if version != newest + 1:
            return self.problem(originator_id, version)
        self.newest[originator_id] = version
        return ""

    def problem(self, originator_id: Any, version: int) -> str:
        """What is wrong with `version` coming next."""
        newest = self.newest.get(originator_id, 0)
        if version <= newest:
            return (f"version {version} of {originator_id} comes after its version "
                    f"{newest}: events were moved or inserted")
        return (f"version {version} of {originator_id} follows its version {newest}: "
                f"version {newest + 1} is missing (deleted) or comes later (moved)")

    def forget(self) -> None:
        """After a stop: what it remembers may include what an attacker has since removed."""
        self.newest.clear()
        self._whole = False


def out_of_place(table: EventsTable, notifications: Sequence[Any],
                 neighbours: Sequence[tuple[Any, Any]] | None = None) -> Failure | None:
    """The first of `notifications` (in log order) that does not stand between its aggregate's
    previous and next versions, and what is wrong; None if all do. `neighbours`: the table's
    answer already read with the page (`EventsTable.read_placed`), else asked here."""
    if neighbours is None:
        rows = [(n.id, n.originator_id, n.originator_version) for n in notifications]
        neighbours = table.neighbours(rows)
    for n, (before, after) in zip(notifications, neighbours, strict=True):
        position, originator_id, version = n.id, n.originator_id, n.originator_version
        if version > 1 and before is None:
            return Failure(position, f"version {version} of {originator_id} has no version "
                                     f"{version - 1} before it: it was deleted", n.topic)
        if before is not None and before > position:
            return Failure(position, f"version {version} of {originator_id} comes before its "
                                     f"version {version - 1} (at position {before}): events "
                                     "were moved", n.topic)
        if after is not None and after < position:
            return Failure(position, f"version {version} of {originator_id} comes after its "
                                     f"version {version + 1} (at position {after}): it was "
                                     "moved, or inserted again", n.topic)
    return None


def read_checked(app: QijiApplication, from_position: int, limit: int,
                 topics: Sequence[str] = ()) -> tuple[list[Any], Failure | None]:
    """A page of the log for a reader (notifications, as `app.read_log` gives them), each event's
    MAC and place checked: those before the first that fails, and that failure (None: all
    passed)."""
    notifications = app.read_log(from_position, limit, topics)
    check = app.event_mac.check
    for index, n in enumerate(notifications):
        if not check(n.originator_id, n.originator_version, n.topic, n.state):
            notifications, failure = notifications[:index], Failure(n.id, MAC_PROBLEM, n.topic)
            break
    else:
        failure = None
    misplaced = out_of_place(EventsTable(app), notifications)
    if misplaced is not None:
        notifications = [n for n in notifications if n.id < misplaced.position]
        failure = misplaced
    return notifications, failure
