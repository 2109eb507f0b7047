"""The benchmark harness (bench/run.py, behind ``make bench``) in its seconds-long smoke form, so
it cannot rot between benchmark runs: every step runs against every kind of server, with tiny
stores and one-second measurements. The figures themselves are not judged here, only that each
was measured and reported.

Needs wrk (``make test`` installs it), redis-server, node and npm; without one the test skips,
which CI turns into a failure.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import jwt
import pytest

from .canvas import CanvasUser, FakeCanvas

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "bench" / "run.py"


def _require_tools() -> None:
    for tool in ("wrk", "redis-server", "redis-cli", "node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make test installs wrk)")


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_token_pool_mints_distinct_canvas_jwts_that_verify_with_the_institution_secret(
    tmp_path: Path,
) -> None:
    harness = _harness()
    canvas = FakeCanvas("bench-key", "a-shared-secret-of-32-bytes-or-more")
    users = [CanvasUser(), CanvasUser()]
    population = harness.Population(canvas, users, ["u1", "u2"], ["{}", "{}"], 1)
    pool = harness.TokenPool(population, tmp_path)
    first = pool.mint(3).read_text().split()
    second = pool.mint(2).read_text().split()
    tokens = first + second
    assert len(set(tokens)) == 5  # never the same token twice, across files too
    links = set()
    for i, token in enumerate(tokens):
        claims = jwt.decode(token, "a-shared-secret-of-32-bytes-or-more", algorithms=["HS256"])
        expected = canvas.launch_params(users[i % 2], resource_link_id=claims["resource_link_id"])
        assert {k: claims[k] for k in expected} == expected  # the launch parameters, as Canvas signs
        assert claims["consumer_key"] == "bench-key"
        assert abs(claims["iat"] - time.time()) < 60
        links.add(claims["resource_link_id"])
    assert len(links) == 5
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(tokens[0], "another-secret-of-32-bytes-or-more", algorithms=["HS256"])


@pytest.mark.timeout(300)
def test_bench_smoke_run_measures_every_figure_and_writes_the_report(tmp_path: Path) -> None:
    _require_tools()
    out = subprocess.run(
        [sys.executable, str(HARNESS), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    raw = json.loads((tmp_path / "run.json").read_text())
    keys = {m["key"] for m in raw["measures"]}
    for op, server in [
        ("healthz", "sqlite-small-read-1w"),
        ("healthz", "peer-read-1w"),
        ("healthz", "uvicorn-small-read-1w"),
        ("read", "sqlite-small-read-1w"),
        ("read", "sqlite-big-read-1w"),
        ("read", "redis-small-read-1w"),
        ("read", "redis-big-read-1w"),
        ("read", "peer-read-1w"),
        ("read", "uvicorn-small-read-1w"),
        ("create", "sqlite-small-create-1w"),
        ("create", "sqlite-big-create-1w"),
        ("create", "redis-small-create-1w"),
        ("create", "redis-big-create-1w"),
        ("create", "peer-login-1w"),
    ]:
        assert f"{op}@{server}@c4" in keys
    for measure in raw["measures"]:
        assert measure["runs"], measure["key"]
        for run in measure["runs"]:
            assert run["requests"] > 0 and run["rps"] > 0, measure["key"]
            assert run["p99_ms"] >= run["p50_ms"] > 0, measure["key"]
    assert raw["tokens_minted"] > 0
    assert raw["counts"]["SQLite big-create after the run"] > 500  # seeded, then grown by the creates
    assert raw["profiles"] and all(p["samples"] > 0 for p in raw["profiles"].values())

    report = (tmp_path / "performance.md").read_text()
    assert "{{" not in report
    for target in (
        "Read on SQLite vs own /healthz",
        "Read on Redis vs the peer's read",
        "Create on Redis vs the peer's login",
        "500 vs 50 sessions",
        "Read p99 / p50",
    ):
        assert target in report
    for png in ("throughput.png", "p99.png"):
        image = tmp_path / "performance" / png
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"performance/{png}" in report
