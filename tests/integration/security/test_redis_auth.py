"""A Redis password, an ACL user and TLS (with client certificates) work from SANDQ_REDIS_URL alone.

Each case runs a real worker and client through a real redis-server that refuses anyone else.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sandq import Client, ExecutionRequest, Settings, Status
from tests.conftest import REPO, WorkerProcess, settings_env
from tests.integration.security.conftest import SecureRedis, TlsFiles, start_worker

WAIT = 60


def run_through(url: str, base: Path) -> None:
    """A worker and a client on ``url`` carry one execution to a result."""
    worker, client = start_worker(url, base)
    try:
        result = client.run(ExecutionRequest(code="print('through', 6 * 7)"), timeout=WAIT)
    finally:
        worker.stop()
        client.close()
    assert (result.status, result.stdout) == (Status.SUCCEEDED, "through 42\n"), result


def doctor(url: str) -> subprocess.CompletedProcess[str]:
    env = settings_env(Settings(redis_url=url))
    return subprocess.run(
        [sys.executable, "-m", "sandq", "doctor"],
        env={**env, "COLUMNS": "500"},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=WAIT,
        check=False,
    )


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[SecureRedis]:
    """The default user is off; only ``sandq`` may connect, without admin or dangerous commands."""
    password = secrets.token_hex(16)
    server = SecureRedis(
        tmp_path,
        f"redis://sandq:{password}@127.0.0.1:{{port}}/0",
        *("--user", "default", "off"),
        *("--user", "sandq", "on", f">{password}", "~*", "&*", "+@all", "-@dangerous"),
    )
    yield server
    server.stop()


@pytest.fixture
def tls_redis(tmp_path: Path, tls_files: TlsFiles) -> Iterator[SecureRedis]:
    """TLS only (no plain port); the server also demands a client certificate from our CA."""
    query = (
        f"?ssl_cert_reqs=required&ssl_ca_certs={tls_files.ca}"
        f"&ssl_certfile={tls_files.client_cert}&ssl_keyfile={tls_files.client_key}"
    )
    server = SecureRedis(
        tmp_path,
        "rediss://127.0.0.1:{port}/0" + query,
        "--tls-cert-file",
        str(tls_files.server),
        "--tls-key-file",
        str(tls_files.server),
        "--tls-ca-cert-file",
        str(tls_files.ca),
        "--tls-auth-clients",
        "yes",
        tls=True,
    )
    yield server
    server.stop()


def test_password(password_redis: SecureRedis, password_stack: tuple[WorkerProcess, Client]) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=password_redis.port).ping()
    _, client = password_stack
    assert client.settings.redis_url == password_redis.url
    result = client.run(ExecutionRequest(code="print('through', 6 * 7)"), timeout=WAIT)
    assert (result.status, result.stdout) == (Status.SUCCEEDED, "through 42\n"), result


def test_acl_user(acl_redis: SecureRedis, tmp_path: Path) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=acl_redis.port).ping()  # the default user is off
    run_through(acl_redis.url, tmp_path)


def test_tls_with_client_certificate(tls_redis: SecureRedis, tmp_path: Path) -> None:
    without_client_cert = tls_redis.url.split("&ssl_certfile=")[0]
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(without_client_cert).ping()
    run_through(tls_redis.url, tmp_path)


def test_tls_verifies_the_server_by_default(tls_redis: SecureRedis, tls_files: TlsFiles) -> None:
    """A rediss:// URL without ssl_cert_reqs verifies the certificate (here: against the system CAs)."""
    url = f"rediss://127.0.0.1:{tls_redis.port}/0?ssl_certfile={tls_files.client_cert}"
    settings = Settings(redis_url=f"{url}&ssl_keyfile={tls_files.client_key}")
    assert "ssl_cert_reqs=required" in settings.redis_url
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis.Redis.from_url(settings.redis_url).ping()


def test_doctor_reports_a_wrong_password_without_printing_it(
    password_redis: SecureRedis, password: str
) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    proc = doctor(password_redis.url.replace(password, wrong))
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, output
    assert "FAIL redis" in output and "authentication failed" in output, output
    assert wrong not in output and password not in output


def test_client_with_a_wrong_password_fails_clearly(password_redis: SecureRedis) -> None:
    client = Client(Settings(redis_url=password_redis.url.replace("@", "-wrong@"), queue="wrong-pw"))
    try:
        with pytest.raises(redis.AuthenticationError):
            client.submit(ExecutionRequest(code="print(1)"))
    finally:
        client.close()
