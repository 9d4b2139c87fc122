"""The Origin check of cookie WebSockets: the page must come from this very site, scheme, host and port.

A browser attaches the session cookie to a WebSocket handshake whatever page opens it, so
the handshake's `Origin` is what tells this site's pages from others (cross-site WebSocket
hijacking). Channels' AllowedHostsOriginValidator compares the host alone: a page on
`http://127.0.0.1:1` or `https://localhost` would pass for `http://localhost`. Here the
Origin must equal the origin the handshake was made to, `<scheme>://<Host header>`, with
that host in ALLOWED_HOSTS, or be one of CSRF_TRUSTED_ORIGINS, as Django's CSRF check
compares the Origin of a POST.
"""

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host


def handshake_origin(scope: dict) -> str | None:
    """Return the origin a WebSocket handshake was made to, or None when it names no allowed host."""
    headers = dict(scope.get("headers", []))
    host = headers.get(b"host", b"").decode("latin-1").lower()
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    secure = scope.get("scheme") == "wss"
    proxy_header = settings.SECURE_PROXY_SSL_HEADER
    if proxy_header is not None:
        # Behind a proxy that terminates TLS (DJANGO_BEHIND_PROXY): it says which scheme the browser used.
        name, value = proxy_header
        forwarded = headers.get(name.removeprefix("HTTP_").lower().replace("_", "-").encode(), b"").decode("latin-1")
        secure = secure or forwarded.split(",")[0].strip() == value
    return f"{'https' if secure else 'http'}://{host}"


def origin_allowed(scope: dict) -> bool:
    """Return whether the handshake's Origin is this site's own origin, or a trusted one."""
    origin = dict(scope.get("headers", [])).get(b"origin", b"").decode("latin-1").lower()
    if not origin:
        return False
    return origin == handshake_origin(scope) or origin in {trusted.lower() for trusted in settings.CSRF_TRUSTED_ORIGINS}


class SameOriginValidator:
    """Refuse WebSocket handshakes whose Origin is not the site's own (scheme, host and port) or a trusted one."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            # Refused before the handshake completes: the browser sees the 403 of a rejected upgrade.
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
