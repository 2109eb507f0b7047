"""Which ``Host`` we answer to when ``PUBLIC_URL`` is unset.

Without ``PUBLIC_URL`` the request's own URL is the one an LTI 1.1 signature is checked against
and the base of every LTI 1.3 link we hand out, so its host comes from the ``Host`` header: a
value the client chooses. Only the configured hosts are trusted; any other gets 400
``untrusted_host`` before a route runs. With ``PUBLIC_URL`` set nothing is built from ``Host``
and it is not checked (proxies rewrite it freely). The probes and ``/metrics`` build no URL and
answer whatever the ``Host`` (a load balancer probes by address).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from .problems import problem

__all__ = ["TrustedHostMiddleware", "host_allowed"]

_UNCHECKED = frozenset({"/healthz", "/readyz", "/metrics"})


def _split(host: str) -> tuple[str, str | None]:
    """``name[:port]`` (``[v6]:port`` too) lowercased, as (name, port or None)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return host, None
        rest = host[end + 1 :]
        return host[: end + 1], rest[1:] if rest.startswith(":") else None
    name, sep, port = host.rpartition(":")
    return (name, port) if sep else (host, None)


def host_allowed(host: str, allowed: list[str]) -> bool:
    """Is ``host`` (a ``Host`` header value) one of ``allowed``? An entry without a port
    matches any port; ``*.example.edu`` matches its subdomains, not ``example.edu`` itself."""
    name, port = _split(host)
    if not name or any(c in name for c in "/\\@?#% \t"):
        return False
    for entry in allowed:
        want_name, want_port = _split(entry)
        if want_port is not None and want_port != port:
            continue
        if want_name == name or (want_name.startswith("*.") and name.endswith(want_name[1:])):
            return True
    return False


#: Host header values already judged, kept per process; cleared when full, so a client sending
#: a new value every time costs a judgement each, never memory.
_JUDGED_MAX = 256


class TrustedHostMiddleware:
    def __init__(self, app: ASGIApp, allowed: list[str], public_url: str | None) -> None:
        self.app = app
        self.allowed = allowed
        self.active = public_url is None and "*" not in allowed
        self.judged: dict[bytes, bool] = {}

    def _allowed(self, host: bytes) -> bool:
        """``host_allowed``, remembered: every request of a client sends the same value."""
        verdict = self.judged.get(host)
        if verdict is None:
            if len(self.judged) >= _JUDGED_MAX:
                self.judged.clear()
            verdict = self.judged[host] = host_allowed(host.decode("latin-1"), self.allowed)
        return verdict

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.active and scope["type"] == "http" and scope["path"] not in _UNCHECKED:
            # None (HTTP/1.0; granian passes it as empty): nothing the client chose to trust.
            hosts = [v for k, v in scope["headers"] if k == b"host" and v]
            if len(hosts) > 1 or (hosts and not self._allowed(hosts[0])):
                detail = (
                    "This service does not answer to that Host. Its operator sets "
                    "COMMONS_SESSION_PUBLIC_URL (or COMMONS_SESSION_ALLOWED_HOSTS)."
                )
                await problem(400, "untrusted_host", detail)(scope, receive, send)
                return
        await self.app(scope, receive, send)
