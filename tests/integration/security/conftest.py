"""Redis servers that demand a password, an ACL user or TLS, and sandq workers that use them."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import trustme

from sandq.client.client import Client
from tests.conftest import WorkerProcess, free_port, make_settings

HOST_SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-secret-" + secrets.token_hex(8),
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "SANDQ_TEST_TOKEN": "host-token-" + secrets.token_hex(8),
}
"""Credentials-like variables given to the password worker; none may reach a sandbox."""


class SecureRedis:
    """A real redis-server on a free port with extra options; ``url`` is how sandq reaches it."""

    def __init__(self, directory: Path, url: str, *args: str, tls: bool = False) -> None:
        self.port = port = free_port()
        self.url = url.format(port=port)
        listen = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
        self.proc = subprocess.Popen(
            ["redis-server", *listen, "--bind", "127.0.0.1", "--dir", str(directory), "--save", "", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server {args} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1, and a client certificate."""

    ca: Path
    server: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    files = TlsFiles(
        directory / "ca.pem", directory / "server.pem", directory / "client.pem", directory / "client.key"
    )
    ca.cert_pem.write_to_path(str(files.ca))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(files.server))
    client = ca.issue_cert("sandq-worker@example.test")
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    return files


@pytest.fixture(scope="session")
def password() -> str:
    return secrets.token_hex(16)


@pytest.fixture(scope="session")
def password_redis(tmp_path_factory: pytest.TempPathFactory, password: str) -> Iterator[SecureRedis]:
    server = SecureRedis(
        tmp_path_factory.mktemp("redis-pw"),
        f"redis://:{password}@127.0.0.1:{{port}}/0",
        "--requirepass",
        password,
    )
    yield server
    server.stop()


def start_worker(
    url: str, base: Path, extra_env: dict[str, str] | None = None
) -> tuple[WorkerProcess, Client]:
    """A real gVisor worker and a client on ``url``, the worker ready."""
    if os.geteuid() != 0 or shutil.which("runsc") is None:
        pytest.fail("the gVisor tests need root and runsc: run `make test`, which installs it")
    settings = make_settings(url, base, concurrency=1, warm_pool_max=0)
    client = Client(settings)
    worker = WorkerProcess(settings, base / "worker.log", extra_env)
    try:
        worker.wait_ready(client)
    except BaseException:
        worker.stop()
        client.close()
        raise
    return worker, client


@pytest.fixture(scope="session")
def password_stack(
    password_redis: SecureRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, Client]]:
    """A worker behind a password, holding host secrets in its environment."""
    worker, client = start_worker(password_redis.url, tmp_path_factory.mktemp("pw-worker"), HOST_SECRETS)
    yield worker, client
    worker.stop()
    client.close()
