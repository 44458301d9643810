"""`qiji audit ...`: the auditor's questions (DOMAIN.md), one command each, over gRPC."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from qiji.audit.v1 import audit_service_pb2 as pb
from qiji.audit.v1 import audit_service_pb2_grpc as pb_grpc

from shared.checkpoints import BadCheckpoint, CheckpointVerifier, readable, unverified
from shared.config import EVENT_SOURCED_SERVICES, TlsSettings, address
from shared.grpc.channels import open_channel
from shared.public_feed import checkpoint_type
from shared.tools import addressing
from shared.tools.addressing import Dialer


def add_parser(commands: argparse._SubParsersAction) -> None:
    """`qiji audit` and its questions."""
    from shared.tools.cli import id_argument, moment

    audit = commands.add_parser(
        "audit", help="answer an auditor: history, as-of, verify, perk, award; keep checkpoints",
        description="The auditor's questions, one command each (README 'For auditors'). "
        "An auditor's token: --token, $QIJI_TOKEN, else the admin token beside the stack.")
    # Also before the question (`qiji audit --token T history ...`), as the questions take them.
    addressing.add_arguments(audit, whose="an auditor's")
    questions = audit.add_subparsers(dest="question", required=True, metavar="QUESTION")

    def question(name: str, help_text: str) -> argparse.ArgumentParser:
        asked = questions.add_parser(name, help=help_text, description=help_text)
        addressing.add_arguments(asked, whose="an auditor's")
        return asked

    h = question("history", "every event of an aggregate, with who acted and why")
    h.add_argument("service", choices=EVENT_SOURCED_SERVICES)
    h.add_argument("aggregate_id", type=id_argument)
    a = question("as-of", "an aggregate as it stood at a moment")
    a.add_argument("service", choices=EVENT_SOURCED_SERVICES)
    a.add_argument("aggregate_id", type=id_argument)
    a.add_argument("moment", type=moment,
                   help="ISO 8601: 2026-03-01 (midnight in the city, UTC+8) or "
                   "2026-03-01T12:00:00+08:00")
    v = question("verify", "prove services' logs were not altered (all by default), and agree "
                 "with every checkpoint a witness kept")
    v.add_argument("services", nargs="*", type=_event_sourced_service, metavar="SERVICE",
                   help=f"some of {', '.join(EVENT_SOURCED_SERVICES)} (default: all)")
    v.add_argument("--checkpoints", action="append", type=Path, metavar="FILE",
                   help="signed checkpoints a witness kept (JSON lines, as `qiji audit "
                   "checkpoints` or an AMQP consumer wrote them); repeat for several files")
    v.add_argument("--checkpoints-from-feed", action="store_true",
                   help="also every checkpoint on the platform feed now (needs --feed-token)")
    v.add_argument("--verifier-key", action="append", default=[], type=_verifier_key,
                   metavar="KEY", help="a log's checkpoint verifier key as the city publishes "
                   "it (name+keyid+base64): checkpoints it did not sign are refused here")
    _feed_arguments(v)
    c = question("checkpoints", "keep a witness copy: append every checkpoint published since "
                 "the last run to a file")
    c.add_argument("--out", required=True, type=Path, metavar="FILE",
                   help="the file to append to (its cursor is kept beside it, in FILE.cursor)")
    _feed_arguments(c)
    p = question("perk", "every redemption of a perk, with the quota after each (and after "
                 "each reversal)")
    p.add_argument("perk_id", type=id_argument)
    w = question("award", "why a rider holds (or held) a badge")
    w.add_argument("rider_id", type=id_argument)
    w.add_argument("badge_class_id", type=id_argument)


def _feed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--feed-address", type=_address, default=None, metavar="HOST:PORT",
                        help="the platform gateway (default: the deployment's platform address)")
    parser.add_argument("--feed-token", default="",
                        help="a platform-role token for the feed (default: $QIJI_FEED_TOKEN)")


def _address(raw: str) -> str:
    try:
        return address(raw)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{raw!r}: {error}") from None


def _verifier_key(raw: str) -> CheckpointVerifier:
    try:
        return CheckpointVerifier.parse(raw)
    except BadCheckpoint as bad:
        raise argparse.ArgumentTypeError(f"{raw[:40]!r}: {bad}") from None


def _event_sourced_service(raw: str) -> str:
    if raw not in EVENT_SOURCED_SERVICES:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a service with a log: choose from "
            f"{', '.join(EVENT_SOURCED_SERVICES)}")
    return raw


def answer(args: argparse.Namespace, token: str, channel: Dialer,
           tls: TlsSettings | None = None) -> int:
    """Prints the answer to `args.question`; `channel(service)` opens a channel to a service.
    `qiji demo` ends with some of these. 0: answered; 1: the answer is no (not found, a log
    altered); 2 or 3 (with one line on stderr): refused, or Qiji did not answer."""
    from shared.tools.cli import CommandFailed, rpc_failed
    metadata = [("authorization", f"Bearer {token}")]
    service = {"perk": "merchants", "award": "badges", "checkpoints": "platform"}.get(
        args.question, getattr(args, "service", ""))
    try:
        if args.question == "checkpoints":
            return keep_checkpoints(args.out, _feed(args, channel), tls)
        if args.question == "verify":
            notes = _checkpoints(args, channel, tls)
            return _verify(args.services or list(EVENT_SOURCED_SERVICES), channel, metadata,
                           notes, args.verifier_key)
        with channel(service) as ch:
            if args.question == "history":
                _history(ch, args.aggregate_id, metadata)
            elif args.question == "as-of":
                _as_of(ch, args.aggregate_id, args.moment, metadata)
            elif args.question == "perk":
                _perk(ch, args.perk_id, metadata)
            elif args.question == "award":
                _award(ch, args.rider_id, args.badge_class_id, metadata)
        return 0
    except grpc.RpcError as error:
        failed = rpc_failed(error, service, channel.address(service))
    except CommandFailed as failed_:
        failed = failed_
    print(f"qiji audit {args.question}: {failed}", file=sys.stderr, flush=True)
    return failed.code


def _history(ch: grpc.Channel, aggregate_id: str, metadata: list[tuple[str, str]]) -> None:
    reply = pb_grpc.AuditServiceStub(ch).GetHistory(
        pb.GetHistoryRequest(aggregate_id=aggregate_id), metadata=metadata, timeout=30)
    for e in reply.entries:
        print(f"v{e.version:<4} {e.time.ToDatetime(tzinfo=UTC).isoformat()}  "
              f"{e.principal} [{e.roles}] request={e.request_id or '-'} "
              f"correlation={e.correlation_id}\n      {e.summary}")


def _as_of(ch: grpc.Channel, aggregate_id: str, when: datetime,
           metadata: list[tuple[str, str]]) -> None:
    request = pb.GetStateAsOfRequest(aggregate_id=aggregate_id)
    request.as_of_time.FromDatetime(when.astimezone(UTC))
    reply = pb_grpc.AuditServiceStub(ch).GetStateAsOf(request, metadata=metadata, timeout=30)
    print(reply.state_json if reply.existed else
          f"(did not exist yet on {when.isoformat()})")


def _perk(ch: grpc.Channel, perk_id: str, metadata: list[tuple[str, str]]) -> None:
    """The perk, then its redemptions and their reversals in the order they happened, each
    with the quota left after it."""
    from qiji.merchants.v1 import merchants_service_pb2 as mpb
    from qiji.merchants.v1 import merchants_service_pb2_grpc as mrpc
    stub = mrpc.MerchantsServiceStub(ch)
    perk = stub.GetPerkOffer(mpb.GetPerkOfferRequest(perk_id=perk_id), metadata=metadata,
                             timeout=30).perk_offer
    print(f"perk {perk.perk_id} {perk.title!r}: total quota {perk.total_quota}, "
          f"{perk.remaining_quota} left now")
    lines: list[tuple[datetime, str]] = []
    page_token = ""
    while True:
        page = stub.ListRedemptions(mpb.ListRedemptionsRequest(
            perk_id=perk_id, page_size=500, page_token=page_token), metadata=metadata,
            timeout=30)
        for r in page.redemptions:
            redeemed = r.redeem_time.ToDatetime(tzinfo=UTC)
            lines.append((redeemed, f"{redeemed.isoformat()}  redeemed  claim {r.claim_id}  "
                          f"rider {r.rider_id}  quota after: {r.remaining_quota_after}"))
            if r.reversed:
                undone = r.reverse_time.ToDatetime(tzinfo=UTC)
                lines.append((undone, f"{undone.isoformat()}  reversed  claim {r.claim_id}  "
                              f"rider {r.rider_id}  quota after: "
                              f"{r.remaining_quota_after_reversal}"))
        page_token = page.next_page_token
        if not page_token:
            break
    for _, line in sorted(lines, key=lambda line: line[0]):
        print(line)
    if not lines:
        print("(no redemptions yet)")


def _award(ch: grpc.Channel, rider_id: str, badge_class_id: str,
           metadata: list[tuple[str, str]]) -> None:
    from qiji.badges.v1 import badges_service_pb2 as bpb
    from qiji.badges.v1 import badges_service_pb2_grpc as brpc
    reply = brpc.BadgesServiceStub(ch).ExplainAward(bpb.ExplainAwardRequest(
        rider_id=rider_id, badge_class_id=badge_class_id), metadata=metadata, timeout=30)
    print(reply.explanation)


def _verify(services: list[str], channel: Dialer, metadata: list[tuple[str, str]],
            notes: list[str], verifiers: list[CheckpointVerifier]) -> int:
    """One JSON line per service. 0: every log intact, held to every checkpoint given for it,
    and (with pinned keys) signed with a key pinned, and every stored snapshot true to its
    events; 1: one was altered (or two checkpoints disagree), or a snapshot fails; 3: one did
    not answer (and none was found altered); 4: not proven — intact as far as it was checked,
    but a checkpoint given for it was not used, or it signs with a key that was not pinned."""
    from shared.tools.cli import NO, NOT_PROVEN, OK, UNREACHABLE, rpc_failed
    services = list(dict.fromkeys(services))  # each once, in the order asked
    given, unusable = _by_log(notes)
    for reason in unusable:
        print(json.dumps({"checkpoint_not_used": reason}))
    broken = unreachable = unproven = bad_snapshots = 0
    for service in services:
        mine = given.get(service, [])
        # With pinned keys the signatures are checked here, without the city's help: what a
        # pinned key signed is held to the chain whatever key the service signs with now;
        # what none signed proves nothing.
        pinned, refused = _signed_by(mine, verifiers) if verifiers else ([], [])
        request = pb.VerifyLogRequest(checkpoints=[] if verifiers else mine,
                                      pinned_checkpoints=pinned)
        last = None
        try:
            with channel(service) as ch:
                for reply in pb_grpc.AuditServiceStub(ch).VerifyLog(
                        request, metadata=metadata, timeout=3600):
                    last = reply
                    if not reply.done:
                        snapshots = (f", {reply.snapshots_checked} snapshots"
                                     if reply.snapshots_checked else "")
                        print(f"{service}: {reply.checked} events{snapshots} checked ...",
                              file=sys.stderr)
        except grpc.RpcError as error:
            failed = rpc_failed(error, service, channel.address(service))
            if failed.code != UNREACHABLE:  # refused (the token?): the same for every service
                raise failed from None
            unreachable += 1
            print(json.dumps({"service": service, "error": "UNREACHABLE",
                              "detail": str(failed)}))
            continue
        if last is None:
            unreachable += 1
            print(json.dumps({"service": service, "error": "NO_ANSWER",
                              "detail": "the log's verification ended without a verdict"}))
            continue
        report: dict[str, Any] = {"service": service, "intact": last.intact,
                                  "checked": last.checked}
        if last.intact:
            report.update(sealed_through=last.sealed_through, head_seal=last.head_seal)
        else:
            broken += 1
            report.update(first_broken_position=last.first_broken_position,
                          problem=last.problem)
        report.update(checkpoints_checked=last.checkpoints_checked,
                      checkpoints_given=len(mine),
                      newest_checkpoint=_newest(last.newest_checkpoint),
                      verifier_key=last.verifier_key,
                      snapshots_checked=last.snapshots_checked)
        if last.snapshot_problems:
            # The log may be intact and a snapshot beside it altered: someone wrote to the
            # database, or the service took one wrongly. Reads pass it over; an auditor is told.
            bad_snapshots += 1
            report["snapshot_problems"] = list(last.snapshot_problems)
        not_used = refused + list(last.rejected_checkpoints)
        if not_used:
            report["checkpoints_not_used"] = not_used
        not_pinned = bool(verifiers) and not any(v.key_text == last.verifier_key
                                                 for v in verifiers)
        if not_pinned:
            report["verifier_key_not_pinned"] = (
                "the service signs with a key you did not pin: it was changed; compare it "
                "with the one the city publishes before pinning it too")
        if last.intact and (not_used or not_pinned):
            unproven += 1
            report["proven"] = False
        print(json.dumps(report, ensure_ascii=False))
    if broken or unreachable or unproven or bad_snapshots:
        print("qiji audit verify: " + "; ".join(filter(None, [
            f"{broken} of {len(services)} logs altered" if broken else "",
            f"{bad_snapshots} of {len(services)} hold snapshots that fail their checks"
            if bad_snapshots else "",
            f"{unreachable} of {len(services)} not verified (no answer)" if unreachable
            else "",
            f"{unproven} of {len(services)} not held to every checkpoint given, or signing "
            "with a key not pinned" if unproven else ""])), file=sys.stderr, flush=True)
    return (NO if broken or bad_snapshots else UNREACHABLE if unreachable
            else NOT_PROVEN if unproven or unusable else OK)


def _by_log(notes: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The notes by the service whose log each names (its origin ends in the service's name:
    `qiji.local/identity`), and why the others cannot be used. A note is assigned by what it
    claims; its signature is checked with a pinned key here, or by the service."""
    given: dict[str, list[str]] = {}
    found, unusable = readable(notes)
    for name, note, checkpoint in found:
        service = checkpoint.origin.rsplit("/", 1)[-1]
        if service in EVENT_SOURCED_SERVICES:
            given.setdefault(service, []).append(note)
        else:
            unusable.append(f"{name}: of the log {checkpoint.origin}, which is none of Qiji's "
                            "services")
    return given, unusable


def _newest(note: str) -> dict[str, Any] | None:
    if not note:
        return None
    try:
        checkpoint = unverified(note)
    except BadCheckpoint:
        return {"note": note}
    return {"position": checkpoint.position,
            "seal": base64.b64encode(checkpoint.seal).decode(), "note": note}


def _signed_by(notes: list[str], verifiers: list[CheckpointVerifier]
               ) -> tuple[list[str], list[str]]:
    kept, refused = [], []
    for note in notes:
        reasons = []
        for verifier in verifiers:
            try:
                verifier.verify(note)
                kept.append(note)
                break
            except BadCheckpoint as bad:
                reasons.append(str(bad))
        else:
            refused.append("; ".join(reasons) + f": {note.splitlines()[:2]}")
    return kept, refused


# ---------------------------------------------------------------------- checkpoints kept


def read_checkpoints(path: Path) -> list[str]:
    """The signed notes in a witness's file: JSON lines, each a CloudEvent of a
    `qiji.<service>.v1.LogCheckpointSigned` type as the feed or AMQP delivered it (structured
    JSON: the note in `data.checkpoint`), or an object holding the note in `checkpoint`."""
    notes = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise ValueError(f"{path}:{number}: not a JSON line") from None
        data = item.get("data", item) if isinstance(item, dict) else None
        note = data.get("checkpoint") if isinstance(data, dict) else None
        if not isinstance(note, str):
            raise ValueError(f"{path}:{number}: no signed checkpoint in it")
        notes.append(note)
    return notes


def checkpoint_types() -> list[str]:
    return [checkpoint_type(s).name for s in EVENT_SOURCED_SERVICES]


class Feed:
    """The platform gateway as a witness reads it: where, and with which platform token."""

    def __init__(self, address: str, token: str):
        self.address = address
        self.token = token


def _feed(args: argparse.Namespace, channel: Dialer) -> Feed:
    from shared.tools.cli import CommandFailed
    token = args.feed_token or os.environ.get("QIJI_FEED_TOKEN", "")
    if not token:
        raise CommandFailed("the feed needs a platform-role token: give --feed-token or "
                            "$QIJI_FEED_TOKEN")
    return Feed(args.feed_address or channel.address("platform"), token)


def feed_checkpoints(feed: Feed, tls: TlsSettings | None, cursor: str = ""
                     ) -> Iterator[tuple[dict[str, Any], str]]:
    """Every checkpoint on the platform feed after `cursor`, as structured CloudEvents, each
    with the cursor after it (a `platform` token's organisation: checkpoints go to all)."""
    from qiji.platform.v1 import platform_feed_service_pb2 as fpb
    from qiji.platform.v1 import platform_feed_service_pb2_grpc as frpc

    from services.relay.cloudevents import structured

    metadata = [("authorization", f"Bearer {feed.token}")]
    with open_channel(feed.address, tls) as ch:
        stub = frpc.PlatformFeedServiceStub(ch)
        while True:
            reply = stub.ReadEvents(fpb.ReadEventsRequest(
                cursor=cursor, page_size=1000, types=checkpoint_types()), metadata=metadata,
                timeout=60)
            for item in reply.events:
                yield structured(item.event), item.cursor
            cursor = reply.next_cursor
            if reply.caught_up or not reply.events:
                return


def keep_checkpoints(out: Path, feed: Feed, tls: TlsSettings | None) -> int:
    """`qiji audit checkpoints --out FILE`: what a witness (the platform company) runs now and
    then: appends every checkpoint published since its last run to FILE, one JSON line each,
    and keeps its cursor in FILE.cursor. Keep the file where the city cannot change it."""
    from shared.tools.cli import CommandFailed, rpc_failed
    cursor_file = out.with_name(out.name + ".cursor")
    try:
        cursor = cursor_file.read_text().strip() if cursor_file.exists() else ""
        kept = 0
        with open(out, "a") as f:
            for event, after in feed_checkpoints(feed, tls, cursor):
                f.write(json.dumps(event, ensure_ascii=False, sort_keys=True) + "\n")
                f.flush()
                cursor_file.write_text(after + "\n")
                kept += 1
    except OSError as error:
        raise CommandFailed(f"{error.filename or out}: {error.strerror}") from None
    except grpc.RpcError as error:
        raise rpc_failed(error, "the platform feed", feed.address) from None
    print(f"kept {kept} new checkpoint(s) in {out}")
    return 0


def _checkpoints(args: argparse.Namespace, channel: Dialer, tls: TlsSettings | None
                 ) -> list[str]:
    from shared.tools.cli import CommandFailed, rpc_failed
    notes: list[str] = []
    try:
        for path in args.checkpoints or []:
            notes += read_checkpoints(Path(path))
    except OSError as error:
        raise CommandFailed(f"--checkpoints {error.filename}: {error.strerror}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise CommandFailed(f"--checkpoints: {error}") from None
    if args.checkpoints_from_feed:
        feed = _feed(args, channel)
        try:
            notes += [e["data"]["checkpoint"] for e, _ in feed_checkpoints(feed, tls)]
        except grpc.RpcError as error:
            raise rpc_failed(error, "the platform feed", feed.address) from None
    return notes
