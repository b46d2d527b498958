"""Live output of an execution: one Redis stream per execution, written by its worker, read by clients.

Only a request with ``stream_output`` set is published. Its stream (``Keys.output``) holds entries
``{"stream": "stdout" | "stderr", "data": <text>}`` in the order the worker read them, then one
``{"stream": "end", "data": <status>}`` written after the result is stored, whatever the status.
It is bounded three ways: the program's streams are cut at ``max_output_bytes`` each, as in the
result; ``MAXLEN ~`` trims the oldest entries past ``MAX_ENTRIES``; and it expires with the result.

The worker coalesces what it reads (``FLUSH_BYTES``, ``FLUSH_SECONDS``) so that a chatty program
costs at most ten ``XADD`` a second, not one a line, and decodes each stream incrementally as UTF-8 (a
character split across reads is never garbled). Delivery is at least once: an execution that runs
again after its worker died publishes its output again.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

log = logging.getLogger(__name__)

STDOUT, STDERR, END = "stdout", "stderr", "end"
FLUSH_BYTES = 64 * 1024
"""Publish at once when this much output is pending..."""
FLUSH_SECONDS = 0.1
"""...else this long after the first pending byte: at most ten writes a second, and as many reader
wake-ups (50 ms cost a third more CPU for a program printing a line every 10 ms)."""
MAX_ENTRIES = 10_000
"""Entries kept per execution (approximately: ``XADD MAXLEN ~``); a reader from further back sees a gap."""


@dataclass(frozen=True)
class OutputChunk:
    """A piece of an execution's stdout or stderr, as published; ``id`` is its stream entry id."""

    id: str
    stream: str
    data: str


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def chunks_of(entries: Any) -> list[OutputChunk]:
    """The chunks of stream entries as redis-py returns them (``XRANGE``, or one stream of ``XREAD``)."""
    chunks = []
    for entry_id, fields in entries:
        values = {_text(name): _text(value) for name, value in fields.items()}
        chunks.append(OutputChunk(_text(entry_id), values.get("stream", ""), values.get("data", "")))
    return chunks


class Cursor:
    """Where a reader of one execution's output stands: after entry ``after``, and whether it ended."""

    def __init__(self, after: str = "0-0") -> None:
        self.after = after
        self.ended = False

    def take(self, entries: Any) -> list[OutputChunk]:
        """The stdout and stderr chunks among ``entries``, moving past them; the end entry ends it."""
        taken = []
        for chunk in chunks_of(entries):
            self.after = chunk.id
            if chunk.stream == END:
                self.ended = True
                break
            taken.append(chunk)
        return taken

    @staticmethod
    def entries(reply: Any) -> Any:
        """The entries of an ``XREAD`` reply for one stream (none if it timed out)."""
        return reply[0][1] if reply else ()


def end_output(client: redis.Redis, key: str, status: str, ttl_seconds: int) -> None:
    """Write the final entry of an execution's output: it has ended with ``status``, its result is stored."""
    pipe = client.pipeline(transaction=False)
    pipe.xadd(key, {"stream": END, "data": status}, maxlen=MAX_ENTRIES, approximate=True)
    pipe.expire(key, ttl_seconds)
    try:
        pipe.execute()
    except redis.RedisError as error:  # readers still find the result; only the live view suffers
        log.warning("could not end the output stream %s: %s", key, error)


class OutputPublisher:
    """Takes the program's output as it is read (``publisher(stream, data)``) and publishes it.

    Thread-safe, and cheap for its caller: it only appends the bytes (up to the cap) to what is
    pending. A flusher thread, started with the first output, decodes and writes. ``close``
    publishes what is pending.
    """

    def __init__(self, client: redis.Redis, key: str, *, cap: int, ttl_seconds: int) -> None:
        self.client, self.key, self.cap, self.ttl_seconds = client, key, cap, ttl_seconds
        self._decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in (STDOUT, STDERR)}
        """Used by the flusher alone."""
        self._taken = dict.fromkeys((STDOUT, STDERR), 0)
        self._pending: list[tuple[str, bytearray]] = []
        """Runs of one stream's bytes, in the order they were read."""
        self._pending_bytes = 0
        self._first_pending = 0.0
        self._closed = False
        self._wake = threading.Condition(threading.Lock())
        self._flusher: threading.Thread | None = None
        self._expire_after = 0.0
        """When the key's TTL is next set: with the first write, then every half TTL (so that a
        run longer than the TTL keeps its key) rather than with every write."""

    def __call__(self, stream: str, data: bytes) -> None:
        """Take ``data`` the program wrote on ``stream`` ("stdout" or "stderr"), up to the cap."""
        with self._wake:
            room = self.cap - self._taken[stream]
            if room <= 0 or not data or self._closed:
                return
            data = data[:room]
            self._taken[stream] += len(data)
            self._pending_bytes += len(data)
            pending = self._pending
            if pending and pending[-1][0] == stream:
                pending[-1][1].extend(data)
            else:
                pending.append((stream, bytearray(data)))
            if len(pending) == 1 and len(pending[0][1]) == len(data):  # was empty: the timer starts
                self._first_pending = time.monotonic()
                self._start_or_wake()
            elif self._pending_bytes >= FLUSH_BYTES:
                self._wake.notify()

    def _start_or_wake(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name="sandq-output", daemon=True)
            self._flusher.start()
        else:
            self._wake.notify()

    def _flush_loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                while not self._closed and self._pending_bytes < FLUSH_BYTES:
                    left = self._first_pending + FLUSH_SECONDS - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                batch, self._pending, self._pending_bytes = self._pending, [], 0
                closing = self._closed
            self._publish(batch, final=closing)
            if closing:
                return

    def _publish(self, batch: list[tuple[str, bytearray]], final: bool = False) -> None:
        texts = [(stream, self._decoders[stream].decode(bytes(data))) for stream, data in batch]
        if final:
            texts += [(stream, decoder.decode(b"", final=True)) for stream, decoder in self._decoders.items()]
        entries: list[dict[FieldT, EncodableT]] = [{"stream": s, "data": text} for s, text in texts if text]
        expire = time.monotonic() >= self._expire_after
        try:
            if len(entries) == 1 and not expire:  # the usual write: one command, no pipeline
                self.client.xadd(self.key, entries[0], maxlen=MAX_ENTRIES, approximate=True)
            elif entries:
                pipe = self.client.pipeline(transaction=False)
                for entry in entries:
                    pipe.xadd(self.key, entry, maxlen=MAX_ENTRIES, approximate=True)
                pipe.expire(self.key, self.ttl_seconds)
                pipe.execute()
                self._expire_after = time.monotonic() + self.ttl_seconds / 2
        except redis.RedisError as error:  # the execution goes on; its result keeps all the output
            log.warning("dropped live output of %s: %s", self.key, error)

    def close(self) -> None:
        """Publish what is pending (and what the decoders hold), then stop the flusher."""
        with self._wake:
            if self._closed:
                return
            self._closed = True
            self._wake.notify()
            flusher = self._flusher
        if flusher is not None:
            flusher.join()
