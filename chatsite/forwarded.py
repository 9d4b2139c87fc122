"""The client's address behind load balancers: the one the nearest proxy saw, never one the client wrote.

Each proxy appends to `X-Forwarded-For` the address its connection came from, after
whatever the request carried already, and what a client sends there itself comes first.
daphne's `--proxy-headers` takes the first entry, so behind a proxy that appends (nginx's
`$proxy_add_x_forwarded_for`, the balancers of AWS and Heroku) anyone could pose as any
address to the sign-in throttle and to the metrics' allowed networks. With
DJANGO_PROXY_HOPS proxies in front, the client is the entry that many from the end: the
first one no client wrote. Without a proxy (DJANGO_BEHIND_PROXY off) the header is
ignored and the address is the connection's own.
"""

import ipaddress
from collections.abc import Iterable

from django.conf import settings

HEADER = b"x-forwarded-for"


def forwarded_client(headers: Iterable[tuple[bytes, bytes]], *, hops: int) -> str | None:
    """Return the address the first of `hops` proxies saw, from a request's raw headers; None without one.

    Header lines are read in order as one list, as proxies treat them. A request that passed
    fewer proxies (a probe from inside the network) gives its first entry; an entry that is not
    an IP address gives None, so the connection's own address stands.
    """
    lines = [value.decode("latin-1") for name, value in headers if name.lower() == HEADER]
    entries = [entry.strip() for entry in ",".join(lines).split(",") if entry.strip()]
    if not entries:
        return None
    address = entries[max(0, len(entries) - hops)]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


class ForwardedClientMiddleware:
    """Set each HTTP request's and WebSocket's `client` to the address the nearest of PROXY_HOPS proxies saw."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        hops = settings.PROXY_HOPS
        if hops and scope["type"] in ("http", "websocket"):
            address = forwarded_client(scope.get("headers", ()), hops=hops)
            if address is not None:
                scope = {**scope, "client": [address, 0]}
        return await self.app(scope, receive, send)
