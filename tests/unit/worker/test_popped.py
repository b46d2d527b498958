"""A message popped just as Redis goes away is kept and put back: real kombu on a real redis-server,
stopped between the pop and the recording of the message as unacknowledged."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from sandq.worker.popped import Kept, keep_unrecorded, put_back, skip_settling_when_closed
from tests.conftest import RedisServer

QUEUE = Queue("sandq-popped", Exchange("sandq-popped", type="direct"), routing_key="sandq-popped")


def test_a_message_popped_as_redis_goes_away_is_put_back(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    kept: list[Kept] = []
    received: list[Any] = []
    try:
        with Connection(server.url) as connection:
            connection.Producer(serializer="json").publish(
                {"n": 1}, exchange=QUEUE.exchange, routing_key=QUEUE.routing_key, declare=[QUEUE]
            )
            channel = connection.default_channel
            record = channel.qos.append

            def redis_goes_away(message: Any, delivery_tag: Any) -> Any:  # after the BRPOP, before recording
                server.stop()
                return record(message, delivery_tag)

            channel.qos.append = redis_goes_away
            keep_unrecorded(channel, kept)
            deliver = [lambda body, _: received.append(body)]
            consumer = connection.Consumer(QUEUE, callbacks=deliver, accept=["json"])
            with consumer, pytest.raises(connection.connection_errors):
                connection.drain_events(timeout=5)
        assert received == [] and len(kept) == 1  # popped, not delivered, not unacked: kept
        server.start()
        with Connection(server.url) as connection:
            assert put_back(connection.default_channel, kept) == 1 and kept == []
            message = connection.SimpleQueue(QUEUE).get(timeout=5)
            assert message.payload == {"n": 1} and message.delivery_info["redelivered"] is True
            message.ack()
            assert put_back(connection.default_channel, kept) == 0
    finally:
        server.stop()


def test_a_message_settled_after_its_channel_closed_is_skipped_and_comes_again(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    try:
        with Connection(server.url) as connection:
            connection.Producer(serializer="json").publish(
                {"n": 2}, exchange=QUEUE.exchange, routing_key=QUEUE.routing_key, declare=[QUEUE]
            )
            message = connection.SimpleQueue(QUEUE).get(timeout=5)
            skip_settling_when_closed(message.channel)
            server.stop()  # the connection is lost while the execution runs
            connection.collect()
            with contextlib.suppress(*connection.connection_errors):
                message.channel.close()
            server.start()
            message.ack()  # the execution ends: without the guard, this acks through the closed channel
        unacked = redis.Redis.from_url(server.url)
        # still recorded as unacknowledged, so the visibility timeout brings it back
        assert unacked.hexists(message.channel.qos.unacked_key, message.delivery_tag)
        unacked.close()
    finally:
        server.stop()
