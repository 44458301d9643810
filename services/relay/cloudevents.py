"""CloudEvents 1.0 in the structured JSON format (the spec's `json-format.md`), as the relay puts
them on AMQP: one JSON object per message with `specversion`, `id`, `source`, `type`, `time`,
`subject`, `datacontenttype` and `data` (the event's data as a JSON value, since it is
`application/json`). Messages carry the content type `application/cloudevents+json` (the
CloudEvents AMQP binding's structured mode), registered with kombu as the serializer
`cloudevents`, so nameko and kombu consumers decode them with `accept=["cloudevents"]`.

Pure Python plus kombu (no grpc, no eventlet-sensitive imports): the nameko sample consumer
imports it under `nameko run`."""

from __future__ import annotations

import json
from typing import Any

import kombu.serialization

SERIALIZER = "cloudevents"
CONTENT_TYPE = "application/cloudevents+json"
SPEC_VERSION = "1.0"
# The nameko "service" the relay dispatches as: the exchange is `qiji.events` (nameko names a
# service's event exchange `<service>.events`): a durable topic exchange; the routing key of
# each message is its CloudEvents `type`, e.g. `qiji.badges.v1.BadgeAwarded`.
SOURCE_SERVICE = "qiji"
EXCHANGE = f"{SOURCE_SERVICE}.events"


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def loads(body: str | bytes) -> Any:
    return json.loads(body)


def register_serializer() -> None:
    """Makes `cloudevents` known to kombu in this process (idempotent)."""
    kombu.serialization.register(SERIALIZER, dumps, loads, content_type=CONTENT_TYPE,
                                 content_encoding="utf-8")


def structured(message: Any) -> dict[str, Any]:
    """An `io.cloudevents.v1.CloudEvent` protobuf message (as the services' public feeds serve
    it) in the structured JSON format."""
    attrs = message.attributes
    time = attrs["time"].ce_timestamp.ToDatetime().isoformat(timespec="microseconds") + "Z"
    content_type = attrs["datacontenttype"].ce_string or "application/json"
    return {
        "specversion": message.spec_version or SPEC_VERSION,
        "id": message.id,
        "source": message.source,
        "type": message.type,
        "time": time,
        "subject": attrs["subject"].ce_string,
        "datacontenttype": content_type,
        "data": json.loads(message.text_data) if message.text_data else None,
    }
