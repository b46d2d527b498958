"""The live output stream: coalesced, capped, decoded as UTF-8, bounded, ended; against a real Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from sandq.broker import output
from sandq.broker.output import END, Cursor, OutputPublisher, end_output
from tests.conftest import RedisServer


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


@pytest.fixture
def key() -> str:
    return f"sandq:test:output:{uuid.uuid4().hex}"


def entries(client: redis.Redis, key: str) -> list[tuple[str, str]]:
    return [(c.stream, c.data) for c in Cursor().take(client.xrange(key))]


def test_small_writes_are_coalesced_in_order(
    client: redis.Redis, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "FLUSH_SECONDS", 30.0)  # all pending until close, whatever the load
    publisher = OutputPublisher(client, key, cap=1 << 20, ttl_seconds=60)
    for i in range(200):
        publisher("stdout", f"line {i}\n".encode())
    publisher("stderr", b"oops\n")
    publisher("stdout", b"after\n")
    publisher.close()
    got = entries(client, key)
    lines = "".join(f"line {i}\n" for i in range(200))
    assert "".join(d for s, d in got if s == "stdout") == lines + "after\n"
    assert [s for s, _ in got] == ["stdout", "stderr", "stdout"]  # 202 writes, 3 entries
    assert 0 < client.ttl(key) <= 60


def test_pending_output_is_published_without_more_output(client: redis.Redis, key: str) -> None:
    publisher = OutputPublisher(client, key, cap=1 << 20, ttl_seconds=60)
    publisher("stdout", b"hello\n")
    deadline = time.monotonic() + 5
    while not client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert entries(client, key) == [("stdout", "hello\n")]  # before close
    publisher.close()


def test_a_large_burst_is_published_at_once(
    client: redis.Redis, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "FLUSH_SECONDS", 30.0)  # only the size can trigger a flush
    publisher = OutputPublisher(client, key, cap=1 << 20, ttl_seconds=60)
    publisher("stdout", b"x" * output.FLUSH_BYTES)
    deadline = time.monotonic() + 5
    while not client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert entries(client, key) == [("stdout", "x" * output.FLUSH_BYTES)]
    publisher.close()


def test_each_stream_is_cut_at_the_cap(client: redis.Redis, key: str) -> None:
    publisher = OutputPublisher(client, key, cap=1024, ttl_seconds=60)
    publisher("stdout", b"a" * 1000)
    publisher("stdout", b"b" * 1000)
    publisher("stderr", b"c" * 5000)
    publisher.close()
    got = entries(client, key)
    assert "".join(d for s, d in got if s == "stdout") == "a" * 1000 + "b" * 24
    assert "".join(d for s, d in got if s == "stderr") == "c" * 1024


def test_a_character_split_across_reads_is_whole(client: redis.Redis, key: str) -> None:
    publisher = OutputPublisher(client, key, cap=1 << 20, ttl_seconds=60)
    text = "héllo wörld €\n".encode()
    for i in range(len(text)):
        publisher("stdout", text[i : i + 1])
        time.sleep(0.002)
    publisher("stderr", b"\xff bad\n")
    publisher.close()
    got = entries(client, key)
    assert "".join(d for s, d in got if s == "stdout") == "héllo wörld €\n"
    assert "".join(d for s, d in got if s == "stderr") == "\ufffd bad\n"


def test_an_unfinished_character_at_the_end_is_replaced(client: redis.Redis, key: str) -> None:
    publisher = OutputPublisher(client, key, cap=1 << 20, ttl_seconds=60)
    publisher("stdout", "ok €".encode()[:-1])
    publisher.close()
    assert "".join(d for _, d in entries(client, key)) == "ok \ufffd"


def test_writers_on_many_threads_lose_nothing(client: redis.Redis, key: str) -> None:
    publisher = OutputPublisher(client, key, cap=1 << 20, ttl_seconds=60)

    def write(name: str) -> None:
        for _ in range(500):
            publisher(name, b"x")

    threads = [threading.Thread(target=write, args=(name,)) for name in ("stdout", "stderr")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    publisher.close()
    got = entries(client, key)
    assert sum(len(d) for s, d in got if s == "stdout") == sum(len(d) for s, d in got if s == "stderr") == 500


def test_the_end_entry_ends_a_reader(client: redis.Redis, key: str) -> None:
    publisher = OutputPublisher(client, key, cap=1 << 20, ttl_seconds=60)
    publisher("stdout", b"done\n")
    publisher.close()
    end_output(client, key, "succeeded", 60)
    cursor = Cursor()
    chunks = cursor.take(client.xrange(key))
    assert [(c.stream, c.data) for c in chunks] == [("stdout", "done\n")] and cursor.ended
    assert client.xrange(key)[-1][1] == {b"stream": END.encode(), b"data": b"succeeded"}
    assert cursor.after == client.xrange(key)[-1][0].decode()


def test_the_stream_is_bounded(client: redis.Redis, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "MAX_ENTRIES", 100)
    for _ in range(1000):
        end_output(client, key, "succeeded", 60)
    assert client.xlen(key) < 300


def test_a_publisher_given_nothing_writes_nothing(client: redis.Redis, key: str) -> None:
    publisher = OutputPublisher(client, key, cap=1 << 20, ttl_seconds=60)
    publisher("stdout", b"")
    publisher.close()
    assert not client.exists(key)
