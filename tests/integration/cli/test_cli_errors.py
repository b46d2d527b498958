"""Every expected failure at the command line: two lines at most, a distinct exit code, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from sandq import cli
from sandq.cli.errors import EXIT_CODES, ExitCode
from sandq.cli.failures import expected_failure
from sandq.sandbox.environment import default_lock, env_hash
from tests.conftest import free_port
from tests.integration.cli.conftest import Done, Sandq
from tests.integration.security.conftest import SecureRedis


def assert_clean(proc: Done, code: int, *names: str) -> None:
    """Exit ``code``; one or two lines on stderr that contain each of ``names``; no traceback."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert 1 <= len(proc.stderr.splitlines()) <= 2, proc.stderr
    for name in names:
        assert name in proc.stderr, proc.stderr


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text('{"code": "print(1)"}\n')
    return path


@pytest.fixture
def down() -> dict[str, str]:
    """A Redis URL with a password, on a free port where nothing listens."""
    return {"SANDQ_REDIS_URL": f"redis://user:s3cret@127.0.0.1:{free_port()}/0"}


def test_run_of_a_missing_file(sandq: Sandq) -> None:
    proc = sandq("run", "/nonexistent/x.py")
    assert_clean(proc, ExitCode.INPUT_FILE, "cannot read /nonexistent/x.py: no such file or directory")


def test_run_of_a_file_that_is_not_text(sandq: Sandq, tmp_path: Path) -> None:
    binary = tmp_path / "x.pyc"
    binary.write_bytes(b"\xff\xfe\x00code")
    assert_clean(sandq("run", str(binary)), ExitCode.INPUT_FILE, f"cannot read {binary}: not UTF-8 text")


def test_batch_of_a_missing_input_file(sandq: Sandq, tmp_path: Path) -> None:
    proc = sandq("batch", "/nonexistent/in.jsonl", "-o", str(tmp_path / "out.jsonl"))
    assert_clean(proc, ExitCode.INPUT_FILE, "cannot read /nonexistent/in.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_batch_into_a_missing_directory(sandq: Sandq, jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "missing" / "out.jsonl"
    assert_clean(sandq("batch", str(jsonl), "-o", str(out)), ExitCode.OUTPUT_FILE, f"cannot write {out}")


def test_run_with_redis_down(sandq: Sandq, down: dict[str, str]) -> None:
    proc = sandq("run", "-", env=down, stdin="print(1)")
    masked = down["SANDQ_REDIS_URL"].replace("s3cret", "**")
    assert_clean(proc, ExitCode.REDIS_UNREACHABLE, f"Redis at {masked} is unreachable", "sandq doctor")
    assert "s3cret" not in proc.stderr


def test_status_with_redis_down(sandq: Sandq, down: dict[str, str]) -> None:
    proc = sandq("status", env=down)
    assert_clean(proc, ExitCode.REDIS_UNREACHABLE, "is unreachable", "user:**@", "sandq doctor")
    assert "s3cret" not in proc.stderr


def test_batch_with_redis_down(sandq: Sandq, down: dict[str, str], jsonl: Path, tmp_path: Path) -> None:
    proc = sandq("batch", str(jsonl), "-o", str(tmp_path / "out.jsonl"), env=down)
    assert_clean(proc, ExitCode.REDIS_UNREACHABLE, "is unreachable", "user:**@", "sandq doctor")
    assert "s3cret" not in proc.stderr


def test_redis_refusing_the_password(sandq: Sandq, tmp_path: Path) -> None:
    server = SecureRedis(tmp_path, "redis://:right@127.0.0.1:{port}/0", "--requirepass", "right")
    try:
        proc = sandq("status", env={"SANDQ_REDIS_URL": server.url.replace("right", "wrong")})
    finally:
        server.stop()
    assert_clean(proc, ExitCode.REDIS_REFUSED, "refused the credentials", "SANDQ_REDIS_URL")
    assert "wrong" not in proc.stderr


def test_malformed_redis_url(sandq: Sandq) -> None:
    proc = sandq("status", env={"SANDQ_REDIS_URL": "nonsense"})
    assert_clean(proc, ExitCode.SETTING, "SANDQ_REDIS_URL='nonsense'", "redis://", "unset SANDQ_REDIS_URL")


def test_invalid_setting(sandq: Sandq) -> None:
    proc = sandq("status", env={"SANDQ_CONCURRENCY": "-3"})
    assert_clean(proc, ExitCode.SETTING, "SANDQ_CONCURRENCY='-3'", "greater than or equal to 1")


def test_setting_that_is_not_json(sandq: Sandq) -> None:
    proc = sandq("status", env={"SANDQ_TENANT_OVERRIDES": "{acme: 5}"})
    assert_clean(proc, ExitCode.SETTING, "SANDQ_TENANT_OVERRIDES is not valid JSON")


def test_kubernetes_worker_without_kubernetes_config(sandq: Sandq) -> None:
    proc = sandq("worker", env={"SANDQ_BACKEND": "kubernetes"})
    assert_clean(proc, ExitCode.KUBERNETES_CONFIG, "SANDQ_BACKEND=kubernetes", "SANDQ_KUBECONFIG_PATH")


def test_worker_with_missing_extra_requirements_for_its_sandboxes(sandq: Sandq, tmp_path: Path) -> None:
    proc = sandq("worker", env={"SANDQ_SANDBOX_EXTRA_REQUIREMENTS": str(tmp_path / "extra.txt")})
    assert_clean(proc, ExitCode.SANDBOX_ENV, f"cannot read {tmp_path / 'extra.txt'}", "sandq doctor")


def test_worker_with_a_stale_sandbox_environment(sandq: Sandq, tmp_path: Path) -> None:
    """The environment dir of this lock's hash, left half-built: the worker stops, it builds nothing."""
    envs = tmp_path / "envs"
    (envs / env_hash(default_lock())).mkdir(parents=True)
    proc = sandq("worker", env={"SANDQ_SANDBOX_ENV_DIR": str(envs)})
    assert_clean(proc, ExitCode.SANDBOX_ENV, "sandbox environment is unusable", "sandq-env.json", "rebuilt")
    assert sorted(p.name for p in envs.iterdir()) == [".build.lock", env_hash(default_lock())]  # no staging


def test_janitor_without_kubernetes_config(sandq: Sandq, tmp_path: Path) -> None:
    proc = sandq("janitor", env={"SANDQ_KUBECONFIG_PATH": str(tmp_path / "missing.yaml")})
    assert_clean(proc, ExitCode.KUBERNETES_CONFIG, "sandq janitor needs a Kubernetes configuration")


def test_dry_run_of_an_invalid_request_is_rejected(sandq: Sandq) -> None:
    proc = sandq("run", "-", "--dry-run", "--backend", "kubernetes", "--mem-limit", "lots", stdin="print(1)")
    assert_clean(proc, 65, "rejected: mem_limit: 'lots' is not a Kubernetes quantity")


@pytest.mark.parametrize(("flags", "env"), [(["--debug"], {}), ([], {"SANDQ_DEBUG": "1"})])
def test_debug_shows_the_traceback_with_the_same_exit_code(
    sandq: Sandq, flags: list[str], env: dict[str, str]
) -> None:
    proc = sandq(*flags, "status", env={"SANDQ_CONCURRENCY": "-3", **env})
    assert proc.returncode == ExitCode.SETTING
    assert "Traceback" in proc.stderr and "ValidationError" in proc.stderr


def test_a_bug_is_not_an_expected_failure() -> None:
    class Other(BaseModel):
        n: int

    with pytest.raises(ValidationError) as other:
        Other.model_validate({"n": "x"})
    assert expected_failure(other.value) is None  # only the Settings model's errors are the user's
    assert expected_failure(ValueError("Redis URL must specify a scheme")) is None  # type, not message
    assert expected_failure(ConnectionRefusedError()) is None  # not a Redis client error


def test_help_and_docstring_list_every_exit_code_and_command(sandq: Sandq) -> None:
    proc = sandq("--help")
    assert proc.returncode == 0
    doc = cli.__doc__ or ""
    for code in EXIT_CODES:
        assert f" {code}  " in proc.stdout
        assert f"\n{code} " in doc
    for command in cli.app.registered_commands:
        assert command.callback is not None
        assert f"``sandq {command.callback.__name__}" in doc
    for group in cli.app.registered_groups:
        assert f"``sandq {group.name}" in doc
