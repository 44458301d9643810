"""`qiji audit ...`: the auditor's questions (DOMAIN.md), one command each, over gRPC."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta, timezone

import grpc
from qiji.audit.v1 import audit_service_pb2 as pb
from qiji.audit.v1 import audit_service_pb2_grpc as pb_grpc

from shared import addressing
from shared.addressing import Dialer
from shared.config import EVENT_SOURCED_SERVICES

# A bare date or time is one in the city (China Standard Time).
CITY_TIME = timezone(timedelta(hours=8))


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`qiji audit` and its questions."""
    from shared.cli import _id

    audit = commands.add_parser(
        "audit", help="answer an auditor: history, as-of, verify, perk, award",
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
    h.add_argument("aggregate_id", type=_id)
    a = question("as-of", "an aggregate as it stood at a moment")
    a.add_argument("service", choices=EVENT_SOURCED_SERVICES)
    a.add_argument("aggregate_id", type=_id)
    a.add_argument("moment", type=moment,
                   help="ISO 8601: 2026-03-01 (midnight in the city, UTC+8) or "
                   "2026-03-01T12:00:00+08:00")
    v = question("verify", "prove services' logs were not altered (all by default)")
    v.add_argument("services", nargs="*", type=_event_sourced_service, metavar="SERVICE",
                   help=f"some of {', '.join(EVENT_SOURCED_SERVICES)} (default: all)")
    p = question("perk", "every redemption of a perk, with the quota after each (and after "
                 "each reversal)")
    p.add_argument("perk_id", type=_id)
    w = question("award", "why a rider holds (or held) a badge")
    w.add_argument("rider_id", type=_id)
    w.add_argument("badge_class_id", type=_id)


def moment(raw: str) -> datetime:
    """argparse type of a moment: ISO 8601, a bare date or time being the city's."""
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a date or time in ISO 8601 (e.g. 2026-03-01 or "
            "2026-03-01T12:00:00+08:00)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=CITY_TIME)


def _event_sourced_service(raw: str) -> str:
    if raw not in EVENT_SOURCED_SERVICES:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a service with a log: choose from "
            f"{', '.join(EVENT_SOURCED_SERVICES)}")
    return raw


def answer(args: argparse.Namespace, token: str, channel: Dialer) -> int:
    """Prints the answer to `args.question`; `channel(service)` opens a channel to a service.
    `qiji demo` ends with some of these. 0: answered; 1: the answer is no (not found, a log
    altered); 2 or 3 (with one line on stderr): refused, or Qiji did not answer."""
    from shared.cli import CommandFailed, rpc_failed
    metadata = [("authorization", f"Bearer {token}")]
    service = {"perk": "merchants", "award": "badges"}.get(args.question,
                                                          getattr(args, "service", ""))
    try:
        if args.question == "verify":
            return _verify(args.services or list(EVENT_SOURCED_SERVICES), channel, metadata)
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


def _verify(services: list[str], channel: Dialer, metadata: list[tuple[str, str]]) -> int:
    """One JSON line per service. 0: every log intact; 1: one was altered; 3: one did not
    answer (and none was found altered)."""
    from shared.cli import NO, OK, UNREACHABLE, rpc_failed
    broken = unreachable = 0
    services = list(dict.fromkeys(services))  # each once, in the order asked
    for service in services:
        last = None
        try:
            with channel(service) as ch:
                for reply in pb_grpc.AuditServiceStub(ch).VerifyLog(
                        pb.VerifyLogRequest(), metadata=metadata, timeout=3600):
                    last = reply
                    if not reply.done:
                        print(f"{service}: {reply.checked} events checked ...",
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
        elif last.intact:
            print(json.dumps({"service": service, "intact": True, "checked": last.checked,
                              "sealed_through": last.sealed_through,
                              "head_seal": last.head_seal}))
        else:
            broken += 1
            print(json.dumps({"service": service, "intact": False,
                              "first_broken_position": last.first_broken_position,
                              "problem": last.problem, "checked": last.checked}))
    if broken or unreachable:
        print("qiji audit verify: " + "; ".join(filter(None, [
            f"{broken} of {len(services)} logs altered" if broken else "",
            f"{unreachable} of {len(services)} not verified (no answer)" if unreachable
            else ""])), file=sys.stderr, flush=True)
    return NO if broken else (UNREACHABLE if unreachable else OK)
