"""A perk's snapshots in its store (shared/snapshots.py), on both stores, behind the guard: the
first read after a restart starts from the newest snapshot and reads only the events after
it; a snapshot someone altered, or one of another format, is passed over for the events; a
snapshot that cannot be taken never fails the claim that was stored; versions before and after
a snapshot replay as the events say; the catch-up job takes the snapshots saves did not;
`qiji audit verify` names a snapshot that fails its MAC or is not the state its events make."""

from __future__ import annotations

import contextlib
import gc
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from qiji.merchants.v1 import merchants_service_pb2 as mpb
from structlog.testing import capture_logs

from services.merchants.domain.model import PerkOffer
from shared import audit
from shared.grpc import audit as audit_api
from shared.snapshot_catch_up import SnapshotCatchUp
from shared.store.application import forget_older
from shared.store.cache import project
from shared.tools import audit_cli
from shared.tools.addressing import Dialer
from shared.tools.cli import NO, OK
from tests.inprocess import InProcessQiji
from tests.snapshots import events_read
from tests.tenancy_world import Tenant, build, rid, ts


@pytest.fixture
def qiji(small_steps: InProcessQiji) -> InProcessQiji:
    return small_steps


class Canteen:
    """One perk, claimed by a few riders again and again, some codes redeemed."""

    def __init__(self, q: InProcessQiji, beside: Canteen | None = None):
        """`beside`: another perk of the same merchant, for the same riders."""
        self.q = q
        if beside is None:
            self.t: Tenant = build(q).tenants["a"]
            self.riders = self.t.verified_riders(q, 3, "S", 136_0000_0000)
        else:
            self.t, self.riders = beside.t, beside.riders
        now = datetime.now(UTC)
        self.id = q.ok("merchants", "CreatePerkOffer", mpb.CreatePerkOfferRequest(
            request_id=rid(), merchant_id=self.t.merchant, title="骑手食堂",
            kind=mpb.PERK_KIND_FREE_ITEM, free_item="一份午餐",
            eligibility=mpb.ELIGIBILITY_ANY_VERIFIED_RIDER, total_quota=500,
            per_rider_limit=500, limit_period=mpb.LIMIT_PERIOD_DAY,
            valid_from_time=ts(now - timedelta(hours=1)),
            valid_until_time=ts(now + timedelta(days=30)), code_ttl_minutes=240),
            self.t.tokens["merchant"]).perk_offer.perk_id
        q.ok("merchants", "PublishPerkOffer", mpb.PublishPerkOfferRequest(
            request_id=rid(), perk_id=self.id), self.t.tokens["merchant"])
        self.ident = uuid.UUID(self.id)
        self.app: Any = q.apps["merchants"]

    def claims(self, count: int) -> None:
        for n in range(count):
            code = self.q.ok("merchants", "ClaimPerk", mpb.ClaimPerkRequest(
                request_id=rid(), perk_id=self.id, rider_id=self.riders[n % 3]),
                self.t.tokens["platform"]).claim.code
            if n % 3 == 0:
                self.q.ok("merchants", "RedeemCode", mpb.RedeemCodeRequest(
                    request_id=rid(), merchant_id=self.t.merchant, code=code),
                    self.t.tokens["merchant"])
        self.app.settle_snapshots()  # taken by a thread of their own, after the answers

    def offer(self) -> Any:
        return self.q.ok("merchants", "GetPerkOffer", mpb.GetPerkOfferRequest(
            perk_id=self.id), self.t.tokens["merchant"]).perk_offer

    def stored_snapshots(self) -> list[Any]:
        return list(self.app.snapshots.get(self.ident))

    def restart(self) -> None:
        """The perk leaves this process's cache, as in a new process."""
        with contextlib.suppress(KeyError):
            self.app.repository.cache.get(self.ident, evict=True)

    def replayed_from_events(self, version: int | None = None) -> Any:
        return project(None, self.app.events.get(self.ident, lte=version))

    def events_read(self) -> list[Any]:
        """From now on, the `gt` of every read of the perk's events."""
        return events_read(self.app, self.ident)

    def alter_snapshot(self, change: Any) -> None:
        """Someone with database access rewrites the stored snapshot's bytes."""
        recorder = self.app.snapshots.recorder
        [row] = recorder.select_events(self.ident)
        state = change(bytes(row.state))
        table = recorder.events_table_name
        with recorder.datastore.transaction(commit=True) as cursor:
            if hasattr(recorder.datastore, "schema"):
                cursor.execute(f'UPDATE "{recorder.datastore.schema}".{table} SET state = %s '
                               "WHERE originator_id = %s", (state, self.ident))
            else:
                cursor.execute(f"UPDATE {table} SET state = ? WHERE originator_id = ?",
                               (state, self.ident.hex))


def test_a_perks_first_read_after_a_restart_starts_from_its_newest_snapshot(qiji):
    canteen = Canteen(qiji)
    canteen.claims(12)  # 2 + 12 claims + 4 redemptions: version 18
    before = canteen.offer()
    [snapshot] = canteen.stored_snapshots()  # the one at 16; the one at 8 was deleted
    assert snapshot.originator_version == 16
    canteen.restart()
    reads = canteen.events_read()
    assert canteen.offer() == before
    # The events after the snapshot, never from the first (on SQLite a cached read then asks
    # for anything newer too).
    assert reads[0] == 16 and None not in reads
    perk = canteen.app.aggregates.read_only(canteen.ident)
    assert list(vars(perk).items()) == list(vars(canteen.replayed_from_events()).items())
    # And it goes on from there: a claim after the restart, on the perk the snapshot began.
    canteen.claims(1)
    assert canteen.offer().remaining_quota == before.remaining_quota - 1


def test_versions_before_and_after_a_snapshot_replay_as_their_events_say(qiji):
    canteen = Canteen(qiji)
    canteen.claims(12)
    for version in (1, 7, 8, 15, 16, 17, 18):
        replayed = canteen.app.aggregates.replayed(canteen.ident, version)
        assert vars(replayed) == vars(canteen.replayed_from_events(version)), version


@pytest.mark.parametrize("change", ["a byte", "another format", "unreadable"])
def test_a_snapshot_that_cannot_be_used_is_passed_over_for_the_events(qiji, change,
                                                                      monkeypatch):
    canteen = Canteen(qiji)
    canteen.claims(12)
    before = canteen.offer()
    canteen.restart()
    if change == "a byte":  # the status an attacker would have the perk read with
        canteen.alter_snapshot(lambda state: state.replace(b'"PUBLISHED"', b'"WITHDRAWN"'))
    elif change == "another format":  # code that derives the perk's state otherwise now
        monkeypatch.setattr(PerkOffer, "SNAPSHOT_FORMAT", PerkOffer.SNAPSHOT_FORMAT + 1)
    else:  # today's code cannot read what it wrote (a fault, or a format not raised)
        def unreadable(cls: Any, *args: Any) -> Any:
            raise KeyError("ledger")
        monkeypatch.setattr(PerkOffer, "from_snapshot_state", classmethod(unreadable))
    reads = canteen.events_read()
    with capture_logs() as logs:
        assert canteen.offer() == before
    assert reads[0] is None  # every event, from the first
    # Someone altered it, or the code cannot read it: an operator is told, at error level.
    # Another format: nothing to tell.
    told = [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("snapshot.")]
    assert told == {"a byte": [("snapshot.refused", "error")], "another format": [],
                    "unreadable": [("snapshot.unreadable", "error")]}[change]


def test_a_snapshot_that_cannot_be_taken_never_fails_the_claim(qiji, monkeypatch):
    canteen = Canteen(qiji)

    def broken(cls: Any, aggregate: Any) -> Any:
        raise OSError("disk full")
    monkeypatch.setattr(PerkOffer.Snapshot, "take", classmethod(broken))
    with capture_logs() as logs:
        canteen.claims(12)  # every claim answered
    assert canteen.offer().remaining_quota == 500 - 12
    assert canteen.stored_snapshots() == []
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["snapshot.not_taken"] * 2


def test_only_a_kind_that_takes_snapshots_is_asked_for_one(qiji):
    """A first read of a merchant (or a claim, a request record) does not ask the snapshot
    store: a round trip for nothing on every such read."""
    canteen = Canteen(qiji)
    asked: list[uuid.UUID] = []
    recorder = canteen.app.snapshots.recorder
    select = recorder.select_events

    def counted(ident: uuid.UUID, **k: Any) -> Any:
        asked.append(ident)
        return select(ident, **k)
    recorder.select_events = counted
    merchant = uuid.UUID(canteen.t.merchant)
    for ident in (merchant, canteen.ident):
        with contextlib.suppress(KeyError):
            canteen.app.repository.cache.get(ident, evict=True)
    canteen.offer()  # reads the perk and its merchant from the store
    assert asked == [canteen.ident]


# ------------------------------------------------------------------ the catch-up job


def catch_up(canteen: Canteen) -> int:
    return SnapshotCatchUp(canteen.app).run_once()


def test_the_catch_up_takes_the_snapshot_a_save_did_not_and_reads_start_there(qiji,
                                                                               monkeypatch):
    canteen = Canteen(qiji)
    with monkeypatch.context() as failing:  # the snapshot thread failed at each step
        failing.setattr(PerkOffer.Snapshot, "take", classmethod(
            lambda cls, aggregate: (_ for _ in ()).throw(OSError("disk full"))))
        canteen.claims(12)
    assert canteen.stored_snapshots() == []
    before = canteen.offer()
    assert catch_up(canteen) == 1
    [snapshot] = canteen.stored_snapshots()
    assert snapshot.originator_version == 18  # the perk as it is now
    assert catch_up(canteen) == 0  # nothing more to take until the perk moves a step on
    canteen.restart()
    reads = canteen.events_read()
    assert canteen.offer() == before
    assert reads[0] == 18


def test_the_catch_up_takes_again_what_an_operator_deleted_and_leaves_short_histories(qiji):
    canteen = Canteen(qiji)
    short = Canteen(qiji, beside=canteen)  # 2 + 3 claims + 1 redemption: under a step
    short.claims(3)
    canteen.claims(12)
    forget_older(canteen.app.snapshots.recorder, canteen.ident, 10**9)  # they are derived
    assert catch_up(canteen) == 1
    assert [s.originator_id for s in canteen.app.snapshots.get(short.ident)] == []
    assert [s.originator_version for s in canteen.stored_snapshots()] == [18]


def test_after_a_format_raise_the_catch_up_replaces_the_snapshot_of_the_old_format(
        qiji, monkeypatch):
    canteen = Canteen(qiji)
    canteen.claims(10)  # 2 + 10 claims + 4 redemptions: version 16, its snapshot at 16
    [old] = canteen.stored_snapshots()
    assert old.originator_version == 16
    monkeypatch.setattr(PerkOffer, "SNAPSHOT_FORMAT", PerkOffer.SNAPSHOT_FORMAT + 1)
    assert not old.usable()
    assert catch_up(canteen) == 1
    [new] = canteen.stored_snapshots()
    assert new.originator_version == 16 and new.usable()
    assert catch_up(canteen) == 0
    canteen.restart()
    reads = canteen.events_read()
    canteen.offer()
    assert reads[0] == 16


def test_the_catch_up_leaves_a_snapshot_that_fails_its_mac_for_an_operator(qiji):
    canteen = Canteen(qiji)
    canteen.claims(12)
    canteen.alter_snapshot(lambda state: state.replace(b'"PUBLISHED"', b'"WITHDRAWN"'))
    with capture_logs() as logs:
        assert catch_up(canteen) == 0
    assert [(e["event"], e["log_level"]) for e in logs] == [("snapshot.refused", "error")]
    # Still there, for `qiji audit verify` to name.
    assert snapshot_verdict(canteen).snapshot_problems != []


# ------------------------------------------------------------------ audit verify's verdict


def snapshot_verdict(canteen: Canteen) -> audit.Verdict:
    return list(audit.verify(canteen.app))[-1]


def test_verify_holds_every_snapshot_to_the_events_it_was_taken_from(qiji):
    canteen = Canteen(qiji)
    canteen.claims(12)
    *progress, verdict = audit.verify(canteen.app)
    assert verdict.intact and verdict.snapshots_checked == 1
    assert verdict.snapshot_problems == []
    # A snapshot of a perk claimed a million times takes a minute to replay: the auditor is
    # told of each as it is checked.
    assert [p.snapshots_checked for p in progress] == [1]


@pytest.mark.parametrize("change", ["a byte", "taken wrongly", "another format"])
def test_verify_names_a_snapshot_that_fails_and_passes_one_of_another_format(
        qiji, change, monkeypatch):
    canteen = Canteen(qiji)
    canteen.claims(12)
    [stored] = canteen.stored_snapshots()
    if change == "a byte":  # someone with database access
        canteen.alter_snapshot(lambda state: state.replace(b'"PUBLISHED"', b'"WITHDRAWN"'))
    elif change == "taken wrongly":
        # The service's own snapshot, MAC'd by its key, of a state its events never made (a
        # fault in snapshot_state, or a format not raised): only the replay shows it.
        wrong = canteen.replayed_from_events(stored.originator_version)
        wrong.total_quota += 40  # a quota that grew with no event to say so
        forget_older(canteen.app.snapshots.recorder, canteen.ident, stored.originator_version + 1)
        canteen.app.snapshots.put([PerkOffer.Snapshot.take(wrong)])
    else:  # code that derives the perk otherwise now: every read passes it over
        monkeypatch.setattr(PerkOffer, "SNAPSHOT_FORMAT", PerkOffer.SNAPSHOT_FORMAT + 1)
    verdict = snapshot_verdict(canteen)
    assert verdict.intact  # the log itself is untouched
    assert verdict.snapshots_checked == 1
    where = f"the snapshot of {canteen.ident} at version {stored.originator_version}"
    assert verdict.snapshot_problems == {
        "a byte": [f"{where}: its MAC fails (written or altered by someone other than the "
                   "service; reads pass it over for the events)"],
        "taken wrongly": [f"{where}: it is not the state its events make (differs in "
                          "total_quota)"],
        "another format": []}[change]


def test_audit_verify_exits_1_and_lists_a_snapshot_that_fails(qiji, capsys):
    """`qiji audit verify merchants` against the service's AuditService: the log intact, a
    snapshot rewritten in the database; the auditor is told which, and the answer is no."""
    canteen = Canteen(qiji)
    canteen.claims(12)
    server = grpc.server(ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)])
    audit_api.register(server, canteen.app)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    dialer = Dialer({"merchants": f"127.0.0.1:{port}"})

    def verify() -> tuple[int, dict[str, Any], str]:
        capsys.readouterr()
        code = audit_cli._verify(["merchants"], dialer, [], [], [])
        out, err = capsys.readouterr()
        [report] = [json.loads(line) for line in out.splitlines()
                    if line.startswith('{"service"')]
        return code, report, err
    try:
        code, report, err = verify()
        assert (code, report["intact"], report["snapshots_checked"]) == (OK, True, 1), report
        assert "merchants: " in err and ", 1 snapshots checked ..." in err
        assert "snapshot_problems" not in report
        canteen.alter_snapshot(lambda state: state.replace(b'"PUBLISHED"', b'"WITHDRAWN"'))
        code, report, err = verify()
        assert (code, report["intact"], report["snapshots_checked"]) == (NO, True, 1), report
        [problem] = report["snapshot_problems"]
        assert problem.startswith(f"the snapshot of {canteen.ident} at version 16: its MAC fails")
        assert "1 of 1 hold snapshots that fail their checks" in err
    finally:
        server.stop(0)


def test_the_collector_is_paused_for_building_a_snapshots_state_never_for_its_round_trip(
        qiji):
    """A store that hangs while a snapshot is asked for must not keep the whole process's
    collector off; building the state from it is what the pause is for."""
    canteen = Canteen(qiji)
    canteen.claims(12)
    canteen.restart()
    recorder = canteen.app.snapshots.recorder
    select = recorder.select_events
    during: dict[str, bool] = {}

    def asked(*a: Any, **k: Any) -> Any:
        during["round trip"] = gc.isenabled()
        return select(*a, **k)
    recorder.select_events = asked
    built = PerkOffer.from_snapshot_state.__func__  # type: ignore[attr-defined]

    def building(cls: Any, *a: Any) -> Any:
        during["building"] = gc.isenabled()
        return built(cls, *a)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PerkOffer, "from_snapshot_state", classmethod(building))
        canteen.offer()
    assert during == {"round trip": True, "building": False}
    assert gc.isenabled()
