"""The indexed router picks exactly the route (or 404/405) Starlette's own router would."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from commons_session.http.router import IndexedRouter
from commons_session.http.routes import routes

SESSION_ID = "A" * 43


def _recording_routes() -> list[Route]:
    """The app's route table, each endpoint replaced by one that answers its own index."""

    class Answer:
        def __init__(self, index: int) -> None:
            self.index = index

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": str(self.index).encode()})

    table = []
    for index, route in enumerate(routes):
        assert isinstance(route, Route)
        table.append(Route(route.path, Answer(index), methods=sorted(route.methods or ())))
    return table


def _outcome(router: Router, method: str, path: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    asyncio.run(router(scope, receive, send))  # type: ignore[arg-type]
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


PATHS = sorted(
    {
        route.path.replace("{session_id}", SESSION_ID).replace("{handle}", "h1").replace("{name}", "a.js")
        for route in routes
        if isinstance(route, Route)
    }
    | {"/api/sessions/logout", "/api/sessions/", "/nowhere", "/healthz/", "/api/lti/unknown", "/static/"}
)


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "HEAD", "PUT"])
@pytest.mark.parametrize("path", PATHS)
def test_indexed_router_matches_starlette(method: str, path: str) -> None:
    table = _recording_routes()
    expected = _outcome(Router(table, redirect_slashes=False), method, path)
    assert _outcome(IndexedRouter(table, redirect_slashes=False), method, path) == expected
