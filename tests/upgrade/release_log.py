"""Reading a release log (tests/upgrade/releases/) with the release under test: its answers
asked again, and compared with what the old release answered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from shared.tools import demo

RELEASES = Path(__file__).resolve().parent / "releases"
OLDEST = RELEASES / "0.1.0"


def event_types(release: Path = OLDEST) -> dict[tuple[str, str], int]:
    """{(service, topic): count} of the release's log."""
    found = {}
    for line in (release / "event-types.txt").read_text().splitlines():
        service, rest = line.split(" ", 1)
        topic, count = rest.rsplit("|", 1)
        found[service, topic] = int(count)
    return found


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Where `new` does not keep what `old` said: every field of the old answer must be in the
    new one with the same value (fields added since are fine; none may change or go)."""
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [f"{path}: was an object, now {new!r}"]
        return [d for key, value in old.items()
                for d in (differences(value, new[key], f"{path}.{key}") if key in new
                          else [f"{path}.{key}: gone (was {value!r})"])]
    if isinstance(old, list):
        if not isinstance(new, list) or len(new) != len(old):
            return [f"{path}: {len(old)} items, now {new!r:.200}"]
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True))
                for d in differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: was {old!r}, now {new!r}"]


def ask_again(addresses: dict[str, str], token: str, answers_file: Path) -> list[str]:
    """Every question of the release log asked of the running release, with `token`; what
    differs from the old answers."""
    recorded = json.loads(answers_file.read_text())["answers"]
    stack = demo.Stack(addresses)
    caller = demo.Caller(stack, "the city admin", token)
    problems = []
    try:
        for entry in recorded:
            module = {"identity": "qiji.identity.v1.identity_service_pb2",
                      "training": "qiji.training.v1.training_service_pb2",
                      "merchants": "qiji.merchants.v1.merchants_service_pb2",
                      "badges": "qiji.badges.v1.badges_service_pb2",
                      "governance": "qiji.governance.v1.governance_service_pb2"}[
                entry["service"]]
            pb = __import__(module, fromlist=["_"])
            request = json_format.ParseDict(entry["request"],
                                            getattr(pb, f"{entry['rpc']}Request")())
            where = f"{entry['service']}.{entry['rpc']}({entry['request']})"
            try:
                reply = caller(entry["service"], entry["rpc"], request)
            except demo.CallFailed as failed:
                if entry.get("error") != {"code": failed.code.name, "reason": failed.reason}:
                    problems.append(f"{where}: {failed}")
                continue
            except grpc.RpcError as error:
                problems.append(f"{where}: {error}")
                continue
            if "error" in entry:
                problems.append(f"{where}: answered, the old release said {entry['error']}")
                continue
            now = json_format.MessageToDict(reply, preserving_proto_field_name=True)
            problems += [f"{where}{d}" for d in differences(entry["response"], now)]
    finally:
        stack.close()
    return problems


def riders_as_platform(addresses: dict[str, str], platform: str, token: str,
                       answers_file: Path) -> list[str]:
    """Every rider of the release log asked of the running release by a caller acting for the
    platform `platform` (issue 14's rules over the old log): the platform's own riders as the
    old release showed them to the city admin, but with name and phone masked unless the rider
    consented to that field for this platform and has not withdrawn it (the consents the old
    log holds), free text (reasons, notes) withheld as shared/masking.py's table says; another
    platform's riders refused. What differs from that."""
    from qiji.identity.v1 import identity_service_pb2 as ipb

    from shared.masking import mask_name, mask_phone, redact
    recorded = [e for e in json.loads(answers_file.read_text())["answers"]
                if e["rpc"] == "GetRider"]
    stack = demo.Stack(addresses)
    caller = demo.Caller(stack, f"platform {platform}", token)
    problems = []
    try:
        for entry in recorded:
            rider = entry["response"]["rider"]
            where = f"GetRider({rider['rider_id']}) as platform {platform}"
            try:
                reply = caller("identity", "GetRider", ipb.GetRiderRequest(
                    rider_id=rider["rider_id"]))
            except demo.CallFailed as failed:
                if rider["platform_id"] == platform or (
                        failed.code.name, failed.reason) != ("PERMISSION_DENIED", "OUT_OF_SCOPE"):
                    problems.append(f"{where}: {failed}")
                continue
            if rider["platform_id"] != platform:
                problems.append(f"{where}: answered another platform's rider")
                continue
            consented = {c["scope"] for c in rider.get("consents", [])
                         if c["recipient_id"] == platform and not c.get("withdraw_time")}
            expected = {**redact(rider, {"platform"}),
                        "name": rider["name"] if "CONSENT_SCOPE_NAME" in consented
                        or rider["name"] == "[erased]" else mask_name(rider["name"]),
                        "phone": rider["phone"] if "CONSENT_SCOPE_PHONE" in consented
                        or rider["phone"] == "[erased]" else mask_phone(rider["phone"])}
            now = json_format.MessageToDict(reply, preserving_proto_field_name=True)["rider"]
            problems += [f"{where}{d}" for d in differences(expected, now)]
    finally:
        stack.close()
    return problems
