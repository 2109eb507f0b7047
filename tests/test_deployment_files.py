"""The shipped deployment files (issue 13), tested as far as this machine can: the systemd units
by ``systemd-analyze verify``, the compose file against the Compose Specification's own JSON
schema (tests/data/compose-spec.json, from compose-spec/compose-spec), the image's entrypoint
by running it, and the Dockerfile by what it must say. No image is built and no compose stack
started here (no Docker daemon); docs/deployment.md says so."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def test_the_systemd_units_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # As installed, but pointing at this checkout, whose .venv has the commands they run.
    for unit in ("commons-session@.service", "commons-session-purge.service", "commons-session-purge.timer"):
        text = (DEPLOY / unit).read_text("utf-8").replace("/srv/commons-session", str(ROOT))
        (tmp_path / unit.replace("@.", "@8001.")).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys are only warnings
    service = (DEPLOY / "commons-session@.service").read_text("utf-8")
    stop = int(
        next(line for line in service.splitlines() if line.startswith("TimeoutStopSec=")).split("=")[1]
    )
    assert stop > 30, "TimeoutStopSec must exceed COMMONS_SESSION_SHUTDOWN_TIMEOUT (30 s)"


def test_the_compose_file_is_valid_compose_and_keeps_redis_markers() -> None:
    schema = json.loads((Path(__file__).parent / "data" / "compose-spec.json").read_text("utf-8"))
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8"))
    jsonschema.Draft7Validator(schema).validate(compose)  # the draft the schema names
    build = compose["services"]["app"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    redis = " ".join(compose["services"]["cache"]["command"])
    assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis  # else refused at start


def test_the_dockerfile_runs_as_a_user_from_the_lock_with_a_data_volume() -> None:
    text = (ROOT / "Dockerfile").read_text("utf-8")
    assert "--require-hashes" in text and "requirements.lock" in text
    assert 'VOLUME ["/data"]' in text and "sqlite:////data/" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    for line in text.splitlines():  # every file it copies exists and is let through .dockerignore
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    ignore = (ROOT / ".dockerignore").read_text("utf-8")
    assert ignore.splitlines()[1] == "*" or "\n*\n" in ignore  # everything else stays out (.venv, *.db)


def test_the_entrypoint_migrates_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMONS_SESSION_")}
    env.update(
        PATH=f"{ROOT / '.venv' / 'bin'}:{env['PATH']}",
        PORT=str(port),
        HOST="127.0.0.1",
        WORKERS="1",
        COMMONS_SESSION_DATABASE_URL=f"sqlite:///{tmp_path / 'data.db'}",
    )
    process = subprocess.Popen(
        [str(DEPLOY / "entrypoint.sh")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the entrypoint did not serve"
            time.sleep(0.1)
        assert (tmp_path / "data.db").exists() and (tmp_path / "data.db.created").exists()
        process.send_signal(signal.SIGTERM)  # exec'd: the server itself gets it
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stdout is not None
    with process.stdout:
        output = process.stdout.read().decode()
    assert "schema is current" in output
    # Other arguments run that command instead of serving.
    listed = subprocess.run(
        [str(DEPLOY / "entrypoint.sh"), "institutions", "list"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
