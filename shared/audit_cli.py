"""`qiji audit ...`: the auditor's questions (DOMAIN.md), one command each, over gRPC."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import grpc
from qiji.audit.v1 import audit_service_pb2 as pb
from qiji.audit.v1 import audit_service_pb2_grpc as pb_grpc

from shared.config import DEFAULT_PORTS, EVENT_SOURCED_SERVICES, Settings
from shared.grpc.channels import open_channel


def answer(args: argparse.Namespace, token: str, settings: Settings | None = None,
           channel: Callable[[str], grpc.Channel] | None = None) -> int:
    """Prints the answer to `args.question`; `channel(service)` opens a channel to a service
    (default: `args.host` at the service's default port, secured as `settings` say). `qiji demo`
    ends with two of these."""
    metadata = [("authorization", f"Bearer {token}")]
    if channel is None:
        def channel(service: str) -> grpc.Channel:
            return open_channel(f"{args.host}:{DEFAULT_PORTS[service]}", settings)

    try:
        if args.question == "history":
            with channel(args.service) as ch:
                reply = pb_grpc.AuditServiceStub(ch).GetHistory(
                    pb.GetHistoryRequest(aggregate_id=args.aggregate_id), metadata=metadata,
                    timeout=30)
            for e in reply.entries:
                print(f"v{e.version:<4} {e.time.ToDatetime(tzinfo=UTC).isoformat()}  "
                      f"{e.principal} [{e.roles}] request={e.request_id or '-'} "
                      f"correlation={e.correlation_id}\n      {e.summary}")
            return 0
        if args.question == "as-of":
            moment = datetime.fromisoformat(args.moment)
            if moment.tzinfo is None:  # a bare date is a date in the city (UTC+8)
                moment = moment.replace(tzinfo=timezone(timedelta(hours=8)))
            request = pb.GetStateAsOfRequest(aggregate_id=args.aggregate_id)
            request.as_of_time.FromDatetime(moment.astimezone(UTC))
            with channel(args.service) as ch:
                reply = pb_grpc.AuditServiceStub(ch).GetStateAsOf(request, metadata=metadata,
                                                                   timeout=30)
            print(reply.state_json if reply.existed else "(did not exist yet)")
            return 0
        if args.question == "verify":
            return _verify(args.services or list(EVENT_SOURCED_SERVICES), channel, metadata)
        if args.question == "perk":
            from qiji.merchants.v1 import merchants_service_pb2 as mpb
            from qiji.merchants.v1 import merchants_service_pb2_grpc as mrpc
            with channel("merchants") as ch:
                stub, token_ = mrpc.MerchantsServiceStub(ch), ""
                while True:
                    page = stub.ListRedemptions(mpb.ListRedemptionsRequest(
                        perk_id=args.perk_id, page_size=500, page_token=token_),
                        metadata=metadata, timeout=30)
                    for r in page.redemptions:
                        print(f"{r.redeem_time.ToDatetime(tzinfo=UTC).isoformat()}  claim "
                              f"{r.claim_id}  rider {r.rider_id}  quota after: "
                              f"{r.remaining_quota_after}{'  (reversed)' if r.reversed else ''}")
                    token_ = page.next_page_token
                    if not token_:
                        return 0
        if args.question == "award":
            from qiji.badges.v1 import badges_service_pb2 as bpb
            from qiji.badges.v1 import badges_service_pb2_grpc as brpc
            with channel("badges") as ch:
                reply = brpc.BadgesServiceStub(ch).ExplainAward(bpb.ExplainAwardRequest(
                    rider_id=args.rider_id, badge_class_id=args.badge_class_id),
                    metadata=metadata, timeout=30)
            print(reply.explanation)
            return 0
    except grpc.RpcError as error:
        print(f"{error.code().name}: {error.details()}", file=sys.stderr)
        return 2
    return 2


def _verify(services: list[str], channel: object, metadata: list[tuple[str, str]]) -> int:
    broken = unreachable = 0
    for service in services:
        if service not in EVENT_SOURCED_SERVICES:
            print(f"unknown service {service}", file=sys.stderr)
            return 2
        last = None
        try:
            with channel(service) as ch:  # type: ignore[operator]
                for reply in pb_grpc.AuditServiceStub(ch).VerifyLog(
                        pb.VerifyLogRequest(), metadata=metadata, timeout=3600):
                    last = reply
                    if not reply.done:
                        print(f"{service}: {reply.checked} events checked ...",
                              file=sys.stderr)
        except grpc.RpcError as error:
            unreachable += 1
            print(json.dumps({"service": service, "error": error.code().name,
                              "detail": error.details()}))
            continue
        assert last is not None
        if last.intact:
            print(json.dumps({"service": service, "intact": True, "checked": last.checked,
                              "sealed_through": last.sealed_through,
                              "head_seal": last.head_seal}))
        else:
            broken += 1
            print(json.dumps({"service": service, "intact": False,
                              "first_broken_position": last.first_broken_position,
                              "problem": last.problem, "checked": last.checked}))
    return 1 if broken else (2 if unreachable else 0)
