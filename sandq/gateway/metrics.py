"""The gateway's Prometheus metrics, served at ``/metrics``, and the middleware that counts requests."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "sandq_gateway_requests_total", "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "sandq_gateway_request_seconds", "Seconds to answer a request (an event stream: until it closes).",
    ["route", "method"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
EVENT_STREAMS = Gauge("sandq_gateway_event_streams", "Event streams (SSE) open.")
WEBHOOK_ATTEMPTS = Counter(
    "sandq_gateway_webhook_attempts_total",
    "Webhook attempts, by the state they left the delivery in.",
    ["state"],
)


class RequestMetrics:
    """Counts every HTTP request by its route template (never its path: ids would explode the labels)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(route, scope["method"], str(status)).inc()
            LATENCY.labels(route, scope["method"]).observe(time.perf_counter() - start)
