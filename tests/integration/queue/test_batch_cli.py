"""``sandq batch``: one result line per input line, and a rerun resumes without re-running."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sandq.broker.keys import Keys
from sandq.cli import app
from sandq.client.client import Client
from tests.conftest import settings_env
from tests.integration.queue.conftest import SettingsFactory, WorkerFactory, raw_redis


def test_batch_resumes_without_rerunning(
    queue_settings: SettingsFactory,
    start_worker: WorkerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = queue_settings()
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    start_worker(settings, concurrency=4)
    lines = [json.dumps({"code": f"print({i})", "tenant": "t" + str(i % 2)}) for i in range(8)]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join([*lines[:3], "not json", *lines[3:]]) + "\n")
    out = tmp_path / "out.jsonl"
    runner = CliRunner()
    first = runner.invoke(app, ["batch", str(source), "-o", str(out)])
    assert first.exit_code == 0, first.output
    rows = [json.loads(t) for t in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 10))
    assert Counter(r["result"]["status"] for r in rows) == {"succeeded": 8, "rejected": 1}
    runs = raw_redis(settings).lrange(Keys(settings.queue).simulated_runs, 0, -1)
    assert len(runs) == 8

    # An interruption: the output lost its last lines (one cut in half), one result expired.
    text = out.read_text().splitlines()
    out.write_text("\n".join(text[:4]) + "\n" + text[4][:20])
    client = Client(settings)
    client.app.backend.delete(client.app.backend.get_key_for_task(rows[-1]["id"]))
    client.close()
    second = runner.invoke(app, ["batch", str(source), "-o", str(out)])
    assert second.exit_code == 0, second.output
    again = [json.loads(t) for t in out.read_text().splitlines()]
    assert [r["line"] for r in again] == list(range(1, 10))
    assert [r["id"] for r in again] == [r["id"] for r in rows]
    recorded = raw_redis(settings).lrange(Keys(settings.queue).simulated_runs, 0, -1)
    ids = Counter(json.loads(r)["id"] for r in recorded)
    assert sum(ids.values()) == 9 and ids[rows[-1]["id"]] == 2  # only the expired one ran again
