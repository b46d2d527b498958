"""Messages popped from a queue just as Redis went away: kept, and put back once it returns.

kombu's Redis transport takes a message off its queue (``BRPOP``), then records it as
unacknowledged (``QoS.append``), which is what brings it back if the worker dies. If Redis goes
away between the two, the message is in neither place: lost, though it was accepted. So each
task channel's ``append`` is wrapped: a message it could not record is kept in this process, and
put back on its queue (next in line, marked redelivered, as kombu restores one) when the consumer
has connected again. And an ack or a reject on a channel closed since (an execution that ended
during the outage) is skipped: the message comes again. ``KeepPopped`` is a consumer bootstep
(``sandq.worker.process`` adds it).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

log = logging.getLogger(__name__)

Kept = tuple[dict[str, Any], str, str]
"""A popped message's raw payload, its exchange and its routing key."""


def keep_unrecorded(channel: Any, kept: list[Kept]) -> None:
    """Wrap ``channel``'s ``qos.append``: a message it fails to record for lack of Redis goes to ``kept``."""
    record = channel.qos.append
    errors = channel.connection_errors

    def append(message: Any, delivery_tag: Any) -> Any:
        try:
            return record(message, delivery_tag)
        except errors:
            delivery = message.delivery_info
            kept.append((message._raw, delivery["exchange"], delivery["routing_key"]))
            log.warning("Redis went away as message %s was fetched: kept, to put back", delivery_tag)
            raise

    channel.qos.append = append


def skip_settling_when_closed(channel: Any) -> None:
    """Wrap ``channel``'s ``qos.ack`` and ``qos.reject``: once the channel is closed (its connection
    lost), settling one of its messages is skipped. Closing it restored its unacknowledged messages
    (or left them in Redis's unacked hash, which the visibility timeout brings back), so such a
    message comes again either way; an execution that ended during an outage would otherwise ack
    through the released transport, an ``AttributeError`` that Celery takes as unrecoverable."""
    for name in ("ack", "reject"):
        setattr(channel.qos, name, _unless_closed(channel, name, getattr(channel.qos, name)))


def _unless_closed(channel: Any, name: str, settle: Any) -> Any:
    def guarded(delivery_tag: Any, *args: Any, **kwargs: Any) -> Any:
        if channel.closed:
            log.warning("skipped the %s of message %s: its connection was lost; it comes again",
                        name, delivery_tag)
            return None
        return settle(delivery_tag, *args, **kwargs)

    return guarded


def put_back(channel: Any, kept: list[Kept]) -> int:
    """Put every message of ``kept`` back on its queue, in one transaction; return how many.

    If Redis is unreachable again, they stay in ``kept`` for the next try.
    """
    if not kept:
        return 0
    with channel.conn_or_acquire() as client:
        pipe = client.pipeline()
        for payload, exchange, routing_key in kept:
            channel._do_restore_message(payload, exchange, routing_key, pipe)
        pipe.execute()
    count = len(kept)
    kept.clear()
    log.warning("put back %d message(s) fetched as Redis went away", count)
    return count


class KeepPopped(bootsteps.StartStopStep):
    """Keeps the messages popped as Redis went away (Redis only), and puts them back on reconnection."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.kept: list[Kept] = []

    def start(self, consumer: Any) -> None:
        """Put back what an earlier connection kept, then watch the new task channel."""
        channel = consumer.task_consumer.channel
        if not hasattr(channel, "_do_restore_message"):
            return
        try:
            put_back(channel, self.kept)
        except channel.connection_errors as error:
            log.warning("could not put back %d message(s) yet: %s", len(self.kept), error)
        keep_unrecorded(channel, self.kept)
        skip_settling_when_closed(channel)
