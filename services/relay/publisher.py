"""Publishing a batch of CloudEvents with one wait for the broker's confirms.

nameko's standalone dispatcher (kombu's `confirm_publish`) waits for the broker's confirm after
every message: one round trip, and one fsync on the broker, per event — the relay's throughput
was bounded by it (BENCHMARKS.md, "Event feed: commit to consumer"). Here the channel is put in
confirm mode once, a batch is published without waiting, and the confirms (RabbitMQ acks
several messages at once, `multiple`) are awaited together. What the relay stores as done is
still only what was confirmed: `BrokerDown.confirmed` says how many messages of the batch, from
its start, the broker confirmed before it failed — the relay records the positions wholly among
them, so a crash or an outage repeats messages and loses none.

Messages are what nameko's dispatcher sent: the `qiji.events` topic exchange (declared, durable,
once per connection), persistent, not mandatory, the `cloudevents` serializer."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import amqp.transport  # type: ignore[import-untyped]  # py-amqp: kombu's transport, no types
import kombu
import structlog

from services.relay.cloudevents import SERIALIZER, SOURCE_SERVICE, register_serializer

log = structlog.get_logger(__name__)

# How long a batch waits for its confirms before the broker is taken for down.
CONFIRM_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
PERSISTENT = 2


class BrokerDown(Exception):
    """A publish was not confirmed; nothing after it is stored as done. `confirmed`: how many
    messages of the batch, from its first, the broker did confirm."""

    def __init__(self, message: str, confirmed: int = 0):
        super().__init__(message)
        self.confirmed = confirmed


class BatchPublisher:
    """One connection, one channel in confirm mode; not for several threads at once."""

    def __init__(self, uri: str, confirm_timeout: float = CONFIRM_TIMEOUT):
        from nameko.standalone.events import get_event_exchange
        register_serializer()
        self._uri = uri
        self._confirm_timeout = confirm_timeout
        self._exchange = get_event_exchange(SOURCE_SERVICE)
        self._connection: kombu.Connection | None = None
        self._producer: kombu.Producer | None = None
        self._sent = 0  # delivery tags given out on this channel (the broker numbers them)
        self._acked_through = 0  # every tag up to it confirmed
        self._acked: set[int] = set()  # confirmed singly, beyond _acked_through
        self._nacked: int | None = None

    def __call__(self, type_name: str, event: dict[str, Any]) -> None:
        self.publish_batch([(type_name, event)])

    def publish_batch(self, messages: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Publishes every (routing key, event) in order and returns once the broker confirmed
        them all; raises BrokerDown otherwise."""
        if messages:
            self.confirm(self.send(messages))

    def send(self, messages: Sequence[tuple[str, dict[str, Any]]]) -> tuple[int, int]:
        """Publishes every (routing key, event) in order without waiting for the confirms
        (`confirm` waits); returns the batch's delivery tags, first (exclusive) and last."""
        base = self._sent
        try:
            producer = self._open()
            base = self._sent
            with self._one_write():
                for routing_key, event in messages:
                    producer.publish(event, routing_key=routing_key, serializer=SERIALIZER,
                                     delivery_mode=PERSISTENT, mandatory=False, retry=False)
                    self._sent += 1
            return base, self._sent
        except Exception as error:
            confirmed = self._confirmed_since(base)
            self._drop()
            raise BrokerDown(f"{type(error).__name__}: {error}", confirmed=confirmed) from error

    def confirm(self, sent: tuple[int, int]) -> None:
        """Returns once the broker confirmed every message `send` published; raises BrokerDown
        (with how many it did confirm, from the batch's first) otherwise."""
        base, last = sent
        try:
            self._await(last)
        except BrokerDown as down:
            confirmed = min(self._confirmed_since(base), last - base)
            self._drop()
            raise BrokerDown(str(down), confirmed=confirmed) from None
        except Exception as error:
            confirmed = min(self._confirmed_since(base), last - base)
            self._drop()
            raise BrokerDown(f"{type(error).__name__}: {error}", confirmed=confirmed) from error

    def close(self) -> None:
        self._drop()

    @contextmanager
    def _one_write(self) -> Iterator[None]:
        """The batch's frames go to the socket in one write, not one (a `sendall`, and a wake
        of the broker) per message: on the feed's 2 shared cores that was ~75 µs a message in
        the relay and as much again in RabbitMQ (issue 20). py-amqp writes each frame through
        its TCP transport's `_write` (the socket's `sendall`), handing it a view of a buffer it
        reuses, hence the copy. Another transport (TLS) is written to as before."""
        assert self._connection is not None
        transport = getattr(self._connection.connection, "transport", None)
        if not isinstance(transport, amqp.transport.TCPTransport):
            yield
            return
        frames: list[bytes] = []
        direct = transport._write
        transport._write = lambda frame: frames.append(bytes(frame))
        try:
            yield
        finally:
            transport._write = direct
            if frames:
                # Through the transport's own write: a failure marks the connection broken.
                transport.write(b"".join(frames))

    def _confirmed_since(self, base: int) -> int:
        through = self._acked_through if self._nacked is None else min(
            self._acked_through, self._nacked - 1)
        return max(0, through - base)

    def _await(self, tag: int) -> None:
        """Until every message through `tag` is confirmed. A nack of a later message (a batch
        sent after this one, before its confirms came) is that batch's failure, not this one's."""
        deadline = time.monotonic() + self._confirm_timeout
        while self._acked_through < tag:
            if self._nacked is not None and self._nacked <= tag:
                raise BrokerDown(f"the broker refused message {self._nacked} (nack)")
            if self._connection is None:  # dropped while a later batch was sent
                raise BrokerDown("the connection was lost before the confirms came")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerDown(f"no confirm within {self._confirm_timeout} s")
            self._connection.drain_events(timeout=remaining)
        if self._nacked is not None and self._nacked <= tag:
            raise BrokerDown(f"the broker refused message {self._nacked} (nack)")

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._acked_through = max(self._acked_through, delivery_tag)
        else:
            self._acked.add(delivery_tag)
        while self._acked_through + 1 in self._acked:
            self._acked_through += 1
        self._acked = {t for t in self._acked if t > self._acked_through}

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        first = self._acked_through + 1 if multiple else delivery_tag
        self._nacked = first if self._nacked is None else min(self._nacked, first)

    def _open(self) -> kombu.Producer:
        if self._producer is not None:
            return self._producer
        connection = kombu.Connection(self._uri, connect_timeout=CONNECT_TIMEOUT)
        try:
            connection.connect()
            channel = connection.channel()
            channel.confirm_select()  # once: then every publish on it is confirmed
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            # The exchange, declared once per connection: a broker no consumer declared it on
            # would refuse every publish (NOT_FOUND) and stall the feed.
            self._exchange(channel).declare()
            producer = kombu.Producer(channel, exchange=self._exchange, auto_declare=False)
        except Exception:
            connection.release()
            raise
        self._connection = connection
        self._producer = producer
        self._sent = self._acked_through = 0
        self._acked = set()
        self._nacked = None
        return producer

    def _drop(self) -> None:
        """A connection that failed is not used again: the next batch opens a new one (its
        delivery tags start again at 1)."""
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            try:
                connection.release()
            except Exception as error:  # already broken: nothing more to do with it
                log.debug("relay.broker_close_failed", error=str(error))
