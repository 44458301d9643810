"""The platform company's gRPC feed in plain Python: stream Qiji's public events from the
gateway (qiji.platform.v1.PlatformFeedService/StreamEvents) and keep the cursor in a file, so a
restart continues right after the last event handled. At least once: the cursor is saved after
handling; an event handled but not yet saved comes again with the same `id`.

    QIJI_FEED_TOKEN=<platform token> python -m services.platform.example_client \\
        [--address 127.0.0.1:50056] [--cursor-file feed.cursor] [--type qiji.badges.v1.BadgeAwarded]
        [--ca-file ca.crt [--cert-file ours.crt --key-file ours.key]]

Over TLS, `--ca-file` names the roots that sign the gateway's certificate; where the gateway
requires client certificates, `--cert-file` / `--key-file` are ours, and if Qiji registered
that certificate for our caller, QIJI_FEED_TOKEN may be left out.

Needs the generated code on the path (`make protos`; build/gen)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import grpc
from qiji.platform.v1 import platform_feed_service_pb2 as pb
from qiji.platform.v1 import platform_feed_service_pb2_grpc as rpc


def save_cursor(path: Path, cursor: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(cursor)
    os.replace(tmp, path)  # whole or not at all


def handle(event_type: str, event_id: str, subject: str, data: dict) -> None:
    print(event_type, event_id, subject, json.dumps(data, ensure_ascii=False), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default="127.0.0.1:50056")
    parser.add_argument("--cursor-file", type=Path, default=Path("feed.cursor"))
    parser.add_argument("--type", action="append", default=[], dest="types")
    parser.add_argument("--ca-file", type=Path)
    parser.add_argument("--cert-file", type=Path)
    parser.add_argument("--key-file", type=Path)
    args = parser.parse_args()
    token = os.environ.get("QIJI_FEED_TOKEN", "")
    metadata = [("authorization", f"Bearer {token}")] if token else []
    if args.ca_file:
        channel = grpc.secure_channel(args.address, grpc.ssl_channel_credentials(
            root_certificates=args.ca_file.read_bytes(),
            private_key=args.key_file.read_bytes() if args.key_file else None,
            certificate_chain=args.cert_file.read_bytes() if args.cert_file else None))
    else:
        channel = grpc.insecure_channel(args.address)
    feed = rpc.PlatformFeedServiceStub(channel)
    while True:  # reconnect with the stored cursor whenever the stream breaks
        cursor = args.cursor_file.read_text() if args.cursor_file.exists() else ""
        try:
            for reply in feed.StreamEvents(pb.StreamEventsRequest(cursor=cursor,
                                                                  types=args.types),
                                           metadata=metadata):
                event = reply.event.event  # io.cloudevents.v1.CloudEvent
                handle(event.type, event.id, event.attributes["subject"].ce_string,
                       json.loads(event.text_data))
                save_cursor(args.cursor_file, reply.event.cursor)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                grpc.StatusCode.PERMISSION_DENIED,
                                grpc.StatusCode.INVALID_ARGUMENT):
                raise
            print(f"stream broke ({error.code().name}); reconnecting", flush=True)
            time.sleep(2)


if __name__ == "__main__":
    main()
