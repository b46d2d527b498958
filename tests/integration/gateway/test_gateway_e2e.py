"""The gateway end to end: HTTP -> `sandq serve` (uvicorn) -> Redis -> a real worker -> gVisor, and back.

Two tenants, tenant isolation, revoked keys, quotas and rate limits, live output over SSE, signed
webhooks retried after a 500, batches, and the SSRF guard's refusals.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandq.webhook_signature import verify
from tests.integration.gateway.conftest import TIGHT, Answer, Receiver, Stack

WAIT = 120
PAUSED = "import time\nprint('first')\ntime.sleep(2)\nprint('second')"
SLEEPY = "import time\ntime.sleep(60)"


@pytest.fixture(scope="module")
def alpha(stack: Stack) -> Iterator[httpx.Client]:
    with stack.http(stack.new_key("alpha")) as client:
        yield client


@pytest.fixture(scope="module")
def beta(stack: Stack) -> Iterator[httpx.Client]:
    with stack.http(stack.new_key("beta")) as client:
        yield client


def submit(client: httpx.Client, code: str, **fields: Any) -> str:
    answer = client.post("/v1/executions", json={"code": code, **fields})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def ended(client: httpx.Client, execution_id: str, seconds: float = WAIT) -> dict[str, Any]:
    """The execution's result, polled until it has one."""
    deadline = time.monotonic() + seconds
    while True:
        answer = client.get(f"/v1/executions/{execution_id}")
        if answer.status_code == 200:
            return dict(answer.json())
        assert answer.status_code == 202 and answer.json()["status"] in ("queued", "running"), answer.text
        assert time.monotonic() < deadline, f"{execution_id} did not end"
        time.sleep(0.2)


def events(client: httpx.Client, execution_id: str, **headers: str) -> list[tuple[float, dict[str, Any]]]:
    """Every SSE event of an execution (when it came, and its fields), up to the result."""
    got: list[tuple[float, dict[str, Any]]] = []
    with client.stream("GET", f"/v1/executions/{execution_id}/events", headers=headers) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, Any] = {}
        for line in answer.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = json.loads(value) if name == "data" else value
                continue
            if fields:
                got.append((time.monotonic(), fields))
                if fields.get("event") == "result":
                    return got
            fields = {}
    raise AssertionError(f"the event stream ended without a result: {got}")


def test_submit_wait_and_read_as_two_tenants(alpha: httpx.Client, beta: httpx.Client) -> None:
    answers = [c.post("/v1/executions", params={"wait": 60}, json={"code": f"print({n} * 7)"})
               for n, c in ((6, alpha), (7, beta))]
    assert [a.status_code for a in answers] == [200, 200]
    assert [a.json()["stdout"] for a in answers] == ["42\n", "49\n"]
    assert [a.json()["tenant"] for a in answers] == ["alpha", "beta"]
    mine = answers[0].json()["id"]
    assert alpha.get(f"/v1/executions/{mine}").json()["stdout"] == "42\n"


def test_a_short_wait_answers_202_with_the_id(alpha: httpx.Client) -> None:
    answer = alpha.post("/v1/executions", params={"wait": 0.5}, json={"code": PAUSED})
    assert answer.status_code == 202 and set(answer.json()) == {"id"}
    assert ended(alpha, answer.json()["id"])["stdout"] == "first\nsecond\n"


def test_another_tenants_id_is_404_like_an_unknown_one(alpha: httpx.Client, beta: httpx.Client) -> None:
    theirs = submit(alpha, "print('private')")
    ended(alpha, theirs)
    unknown = "0" * 32
    for path in (f"/v1/executions/{theirs}", f"/v1/executions/{theirs}/events"):
        assert beta.get(path).status_code == 404
    assert beta.delete(f"/v1/executions/{theirs}").status_code == 404
    assert beta.get(f"/v1/executions/{theirs}").json() == beta.get(f"/v1/executions/{unknown}").json()
    assert alpha.get(f"/v1/executions/{theirs}").json()["stdout"] == "private\n"


def test_cancel_ends_a_running_execution_cancelled(alpha: httpx.Client) -> None:
    execution_id = submit(alpha, SLEEPY)
    deadline = time.monotonic() + WAIT
    while alpha.get(f"/v1/executions/{execution_id}").json().get("status") != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    answer = alpha.delete(f"/v1/executions/{execution_id}")
    assert answer.status_code == 202 and answer.json() == {"id": execution_id}
    assert ended(alpha, execution_id, 30)["status"] == "cancelled"


def test_invalid_requests_are_422_naming_the_field(alpha: httpx.Client) -> None:
    cases = [
        ({"code": "print(1)", "tenant": "beta"}, ["body", "tenant"]),
        ({"code": ""}, ["body", "code"]),
        ({"code": "print(1)", "timeout_seconds": 0}, ["body", "timeout_seconds"]),
        ({"code": "print(1)", "cpu_limit": "64"}, ["body", "cpu_limit"]),  # above SANDQ_MAX_CPU_LIMIT
        ({"code": "print(1)", "no_such_field": 1}, ["body", "no_such_field"]),
    ]
    for body, loc in cases:
        answer = alpha.post("/v1/executions", json=body)
        assert answer.status_code == 422, body
        assert answer.json()["detail"][0]["loc"] == loc
    assert "set by your API key" in alpha.post("/v1/executions", json=cases[0][0]).text
    assert alpha.post("/v1/executions", params={"wait": 61}, json={"code": "print(1)"}).status_code == 422
    huge = alpha.post("/v1/executions", json={"code": "#" * (5 * 1024 * 1024)})
    assert huge.status_code == 413


def test_a_revoked_or_wrong_key_is_401_alike(stack: Stack) -> None:
    key = stack.new_key("gamma")
    _, key_id, secret = key.split("_", 2)
    with stack.http(key) as gamma:
        assert gamma.get(f"/v1/executions/{'0' * 32}").status_code == 404
        listed = stack.cli("keys", "list")
        assert key_id in listed.stdout and secret not in listed.stdout
        assert stack.cli("keys", "revoke", key_id).returncode == 0
        revoked = gamma.get(f"/v1/executions/{'0' * 32}")
    wrong = httpx.get(f"{stack.url}/v1/executions/x", headers={"authorization": f"Bearer {key[:-1]}A"})
    missing = httpx.get(f"{stack.url}/v1/executions/x")
    for answer in (revoked, wrong, missing):
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert revoked.json() == wrong.json() == missing.json()
    assert stack.cli("keys", "revoke", "0123456789abcdef").returncode == 1
    assert key not in stack.log.read_text()


def test_the_tenants_quota_is_429_with_retry_after(stack: Stack) -> None:
    with stack.http(stack.new_key(TIGHT)) as tight:
        running = submit(tight, SLEEPY)  # its one slot
        deadline = time.monotonic() + WAIT
        while tight.get(f"/v1/executions/{running}").json().get("status") != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        waiting = submit(tight, "print(1)")  # its one queued execution
        refused = tight.post("/v1/executions", json={"code": "print(1)"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert TIGHT in refused.json()["detail"]
        for execution_id in (running, waiting):
            tight.delete(f"/v1/executions/{execution_id}")


async def test_the_keys_rate_limit_is_429_with_retry_after(stack: Stack) -> None:
    key = stack.new_key("chatty")
    async with httpx.AsyncClient(base_url=stack.url, headers={"authorization": f"Bearer {key}"}) as chatty:
        statuses: list[httpx.Response] = []
        for _ in range(5):  # 60 at once exceed 40 a second, unless a busy machine spreads them out
            statuses += await asyncio.gather(*(chatty.get(f"/v1/executions/{'0' * 32}") for _ in range(60)))
            if any(a.status_code == 429 for a in statuses):
                break
            await asyncio.sleep(1)
    limited = [a for a in statuses if a.status_code == 429]
    assert limited and {a.status_code for a in statuses} == {404, 429}
    assert all(int(a.headers["retry-after"]) >= 1 for a in limited)


def test_sse_chunks_arrive_before_the_code_ends_and_resume(alpha: httpx.Client) -> None:
    execution_id = submit(alpha, PAUSED, stream_output=True)
    got = events(alpha, execution_id)
    names = [fields["event"] for _, fields in got]
    assert names[-1] == "result" and set(names[:-1]) == {"stdout"}
    first_at = next(at for at, fields in got if "first" in fields.get("data", ""))
    result_at, result = got[-1][0], got[-1][1]["data"]
    assert result_at - first_at > 1.5, "the first line came only when the code ended"
    assert "".join(f["data"] for _, f in got[:-1]) == result["stdout"] == "first\nsecond\n"
    after_first = next(f["id"] for _, f in got if "first" in f["data"])
    resumed = events(alpha, execution_id, **{"last-event-id": after_first})
    assert "".join(f["data"] for _, f in resumed[:-1]) == "second\n"
    assert resumed[-1][1]["event"] == "result"
    bad_resume = alpha.get(f"/v1/executions/{execution_id}/events", headers={"last-event-id": "x"})
    assert bad_resume.status_code == 422


def test_without_stream_output_the_events_are_the_result_alone(alpha: httpx.Client) -> None:
    execution_id = submit(alpha, "print('quiet')")
    (only,) = events(alpha, execution_id)
    assert only[1]["event"] == "result" and only[1]["data"]["stdout"] == "quiet\n"


def test_a_webhook_is_signed_and_retried_after_a_500(
    alpha: httpx.Client, receiver_factory: type[Receiver]
) -> None:
    receiver = receiver_factory([Answer(500)])
    execution_id = submit(alpha, "print('hooked')", callback_url=receiver.url("/hook", host="localhost"))
    deadline = time.monotonic() + WAIT
    while len(receiver.received) < 2:
        assert time.monotonic() < deadline, receiver.received
        time.sleep(0.1)
    secret = alpha.get("/v1/webhooks/secret").json()["secret"]
    payloads = [verify(secret, r.body, r.headers) for r in receiver.received]
    assert {r.headers["webhook-id"] for r in receiver.received} == {f"execution-{execution_id}"}
    assert [p["type"] for p in payloads] == ["execution.completed"] * 2
    assert payloads[0]["data"]["id"] == execution_id and payloads[0]["data"]["stdout"] == "hooked\n"
    deadline = time.monotonic() + 10
    read = f"/v1/executions/{execution_id}"
    while (webhook := alpha.get(read).json()["webhook"])["state"] != "delivered":
        assert time.monotonic() < deadline, webhook
        time.sleep(0.1)
    assert webhook["attempts"] == 2 and webhook["last_status_code"] == 200 and "body" not in webhook


def test_a_batch_reports_progress_results_and_its_webhook(
    alpha: httpx.Client, beta: httpx.Client, receiver_factory: type[Receiver]
) -> None:
    receiver = receiver_factory([])
    body = {"requests": [{"code": f"print({n})"} for n in range(3)] + [{"code": "import sys; sys.exit(3)"}],
            "callback_url": receiver.url("/batch", host="localhost")}
    created = alpha.post("/v1/batches", json=body)
    assert created.status_code == 202 and created.json()["total"] == 4
    batch_id, ids = created.json()["id"], created.json()["execution_ids"]
    deadline = time.monotonic() + WAIT
    while (progress := alpha.get(f"/v1/batches/{batch_id}").json())["done"] < 4:
        assert time.monotonic() < deadline, progress
        time.sleep(0.2)
    assert progress["by_status"] == {"succeeded": 3, "failed": 1} and progress["unsubmitted"] == 0
    lines = alpha.get(f"/v1/batches/{batch_id}/results").text.splitlines()
    assert [json.loads(line)["id"] for line in lines] == ids
    assert [json.loads(line)["stdout"] for line in lines] == ["0\n", "1\n", "2\n", ""]
    assert beta.get(f"/v1/batches/{batch_id}").status_code == 404
    assert alpha.get(f"/v1/executions/{ids[1]}").json()["stdout"] == "1\n"
    while not receiver.received:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    payload = verify(alpha.get("/v1/webhooks/secret").json()["secret"], receiver.received[0].body,
                     receiver.received[0].headers)
    assert payload["type"] == "batch.completed" and payload["data"]["by_status"] == progress["by_status"]
    invalid = alpha.post("/v1/batches", json={"requests": [{"code": "1"}, {"code": "x", "cpu_limit": "64"}]})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "requests", "1", "cpu_limit"]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:{port}/steal", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/",
            "https://127.0.0.1:{port}/", "https://169.254.169.254/", "https://10.0.0.1/"]
)
def test_ssrf_refusals_send_nothing(alpha: httpx.Client, receiver_factory: type[Receiver], url: str) -> None:
    """Refused by the guard itself, before any connection: the loopback receiver never hears a thing."""
    receiver = receiver_factory([])
    target = url.format(port=receiver.port)
    for path, body in (("/v1/executions", {"code": "print(1)", "callback_url": target}),
                       ("/v1/batches", {"requests": [{"code": "print(1)"}], "callback_url": target})):
        answer = alpha.post(path, json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["body", "callback_url"]
    time.sleep(0.3)
    assert receiver.received == []


def test_health_metrics_and_openapi(stack: Stack, alpha: httpx.Client) -> None:
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    metrics = httpx.get(f"{stack.url}/metrics").text
    assert 'sandq_gateway_requests_total{method="POST",route="/v1/executions"' in metrics
    assert "sandq_gateway_event_streams" in metrics
    document = httpx.get(f"{stack.url}/openapi.json").json()
    routes = {"/v1/executions", "/v1/executions/{execution_id}", "/v1/executions/{execution_id}/events",
              "/v1/batches", "/v1/batches/{batch_id}", "/v1/batches/{batch_id}/results"}
    assert routes <= set(document["paths"])
    body = document["components"]["schemas"]["ExecutionBody"]["properties"]
    assert {"code", "stream_output", "callback_url"} <= set(body) and "tenant" not in body
