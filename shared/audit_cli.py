"""`qiji audit ...`: the auditor's questions (DOMAIN.md), one command each, over gRPC."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
from qiji.audit.v1 import audit_service_pb2 as pb
from qiji.audit.v1 import audit_service_pb2_grpc as pb_grpc

from shared.checkpoints import BadCheckpoint, CheckpointVerifier, unverified
from shared.config import DEFAULT_PORTS, EVENT_SOURCED_SERVICES, Settings
from shared.grpc.channels import open_channel
from shared.public_feed import checkpoint_type


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
            notes = _checkpoints(args, settings)
            if notes is None:
                return 2
            return _verify(args.services or list(EVENT_SOURCED_SERVICES), channel, metadata,
                           notes, args.verifier_key)
        if args.question == "checkpoints":
            return keep_checkpoints(Path(args.out), args.feed_address,
                                    args.feed_token or os.environ.get("QIJI_FEED_TOKEN", ""),
                                    settings)
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


def _verify(services: list[str], channel: object, metadata: list[tuple[str, str]],
            notes: list[str], pinned: list[str]) -> int:
    for service in services:
        if service not in EVENT_SOURCED_SERVICES:
            print(f"unknown service {service}", file=sys.stderr)
            return 2
    try:
        verifiers = [CheckpointVerifier.parse(k) for k in pinned]
    except BadCheckpoint as bad:
        print(f"--verifier-key: {bad}", file=sys.stderr)
        return 2
    # Checked here, without the city's help, when the auditor pinned keys: a checkpoint no
    # pinned key signed proves nothing and is not sent.
    notes, refused = _signed_by(notes, verifiers) if verifiers else (notes, [])
    for reason in refused:
        print(json.dumps({"checkpoint_refused": reason}))
    conflict = equivocation(notes)
    broken = unreachable = 0
    if conflict:
        broken += 1
        print(json.dumps({"intact": False, "problem": conflict}))
    for service in services:
        last = None
        try:
            with channel(service) as ch:  # type: ignore[operator]
                for reply in pb_grpc.AuditServiceStub(ch).VerifyLog(
                        pb.VerifyLogRequest(checkpoints=notes), metadata=metadata,
                        timeout=3600):
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
        report: dict[str, Any] = {"service": service, "intact": last.intact,
                                  "checked": last.checked}
        if last.intact:
            report.update(sealed_through=last.sealed_through, head_seal=last.head_seal)
        else:
            broken += 1
            report.update(first_broken_position=last.first_broken_position,
                          problem=last.problem)
        newest = _newest(last.newest_checkpoint)
        report.update(checkpoints_checked=last.checkpoints_checked,
                      newest_checkpoint=newest, verifier_key=last.verifier_key)
        if verifiers and not any(v.key_text == last.verifier_key for v in verifiers):
            report["verifier_key_not_pinned"] = (
                "the service signs with a key you did not pin: compare it with the one the "
                "city publishes")
        if last.rejected_checkpoints:
            report["rejected_checkpoints"] = list(last.rejected_checkpoints)
        print(json.dumps(report, ensure_ascii=False))
    return 1 if broken else (2 if unreachable else 0)


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


def equivocation(notes: list[str]) -> str:
    """Two checkpoints of one log for one position with different seals: proof, with no key
    at all, that the log was rewritten and signed again. "" when there are none."""
    seen: dict[tuple[str, int], bytes] = {}
    for note in notes:
        try:
            checkpoint = unverified(note)
        except BadCheckpoint:
            continue
        first = seen.setdefault((checkpoint.origin, checkpoint.position), checkpoint.seal)
        if first != checkpoint.seal:
            return (f"two checkpoints of {checkpoint.origin} for position "
                    f"{checkpoint.position} hold different seals: the log was rewritten and "
                    "signed again")
    return ""


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


def feed_checkpoints(address: str, token: str, settings: Settings | None,
                     cursor: str = "") -> Iterator[tuple[dict[str, Any], str]]:
    """Every checkpoint on the platform feed after `cursor`, as structured CloudEvents, each
    with the cursor after it (a `platform` token's organisation: checkpoints go to all)."""
    from qiji.platform.v1 import platform_feed_service_pb2 as fpb
    from qiji.platform.v1 import platform_feed_service_pb2_grpc as frpc

    from services.relay.cloudevents import structured

    metadata = [("authorization", f"Bearer {token}")]
    with open_channel(address, settings) as ch:
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


def keep_checkpoints(out: Path, address: str, token: str, settings: Settings | None) -> int:
    """`qiji audit checkpoints --out FILE`: what a witness (the platform company) runs now and
    then: appends every checkpoint published since its last run to FILE, one JSON line each,
    and keeps its cursor in FILE.cursor. Keep the file where the city cannot change it."""
    cursor_file = out.with_name(out.name + ".cursor")
    cursor = cursor_file.read_text().strip() if cursor_file.exists() else ""
    kept = 0
    try:
        with open(out, "a") as f:
            for event, after in feed_checkpoints(address, token, settings, cursor):
                f.write(json.dumps(event, ensure_ascii=False, sort_keys=True) + "\n")
                f.flush()
                cursor_file.write_text(after + "\n")
                kept += 1
    except grpc.RpcError as error:
        print(f"{error.code().name}: {error.details()}", file=sys.stderr)
        return 2
    print(f"kept {kept} new checkpoint(s) in {out}")
    return 0


def _checkpoints(args: argparse.Namespace, settings: Settings | None) -> list[str] | None:
    notes: list[str] = []
    try:
        for path in args.checkpoints or []:
            notes += read_checkpoints(Path(path))
    except (OSError, ValueError) as error:
        print(f"--checkpoints: {error}", file=sys.stderr)
        return None
    if args.checkpoints_from_feed:
        token = args.feed_token or os.environ.get("QIJI_FEED_TOKEN", "")
        try:
            notes += [e["data"]["checkpoint"] for e, _ in feed_checkpoints(
                args.feed_address, token, settings)]
        except grpc.RpcError as error:
            print(f"--checkpoints-from-feed: {error.code().name}: {error.details()}",
                  file=sys.stderr)
            return None
    return notes
