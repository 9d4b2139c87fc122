"""Behind a proxy, the client is the address the proxy saw: one a client writes itself counts for nothing."""

import pytest

from chatsite.forwarded import ForwardedClientMiddleware, forwarded_client

from .live_server import PASSWORD, live_environment, procfile_web
from .outsider import Visitor

PROXY_SAW = "203.0.113.9"


@pytest.mark.parametrize(
    ("lines", "hops", "client"),
    [
        # The client wrote an address of its own; the one proxy appended what it saw.
        ([b"10.0.0.5, 203.0.113.9"], 1, PROXY_SAW),
        ([b"10.0.0.5", b"203.0.113.9"], 1, PROXY_SAW),  # two header lines are one list
        # Two proxies: the outer one's entry, before the inner one's.
        ([b"10.0.0.5, 203.0.113.9, 10.1.1.1"], 2, PROXY_SAW),
        # Fewer entries than proxies (a probe from inside): the first.
        ([b"203.0.113.9"], 2, PROXY_SAW),
        ([b" 2001:db8::7 "], 1, "2001:db8::7"),
        # No address at all, or not one that is an IP address: the connection's own stands.
        ([], 1, None),
        ([b"10.0.0.5, not-an-address"], 1, None),
        ([b" , "], 1, None),
    ],
)
def test_the_client_is_the_entry_the_nearest_proxy_wrote(lines, hops, client):
    headers = [(b"host", b"chat.example")] + [(b"X-Forwarded-For", line) for line in lines]
    assert forwarded_client(headers, hops=hops) == client


async def scope_seen(scope: dict) -> dict:
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    await ForwardedClientMiddleware(app)(scope, None, None)
    return seen


@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_requests_and_websockets_get_the_forwarded_client(kind, settings):
    settings.PROXY_HOPS = 1
    scope = {"type": kind, "client": ["10.9.9.9", 5000], "headers": [(b"x-forwarded-for", b"10.0.0.5, 203.0.113.9")]}
    assert (await scope_seen(scope))["client"] == [PROXY_SAW, 0]
    assert scope["client"] == ["10.9.9.9", 5000], "the scope it was given is left as it was"


async def test_without_a_proxy_the_header_is_ignored(settings):
    """DJANGO_BEHIND_PROXY off: anyone may write the header, so the connection's own address counts."""
    settings.PROXY_HOPS = 0
    scope = {"type": "http", "client": ["192.0.2.7", 5000], "headers": [(b"x-forwarded-for", b"10.0.0.5")]}
    assert (await scope_seen(scope))["client"] == ["192.0.2.7", 5000]


def test_guessing_behind_a_proxy_is_throttled_whatever_addresses_the_guesser_writes(tmp_path):
    """The attack: each guess claims another address before the one the proxy appends. It stays one address."""
    env = live_environment(tmp_path, DJANGO_BEHIND_PROXY="on", SIGNIN_FAILURES_PER_ACCOUNT_AND_ADDRESS="3")
    with procfile_web(tmp_path, env) as server:
        server.create_users("guessed")
        visitor = Visitor(server.url)
        visitor.request("GET", "/accounts/login/")
        answers = [
            visitor.request(
                "POST",
                "/accounts/login/",
                form={"username": "guessed", "password": f"wrong-{attempt}"},
                headers={"X-Forwarded-For": f"198.51.100.{attempt}, {PROXY_SAW}"},
            )
            for attempt in range(5)
        ]
        assert [answer.status for answer in answers] == [200, 200, 200, 429, 429]
        # From the address the proxy saw elsewhere, the person still signs in.
        elsewhere = Visitor(server.url)
        elsewhere.request("GET", "/accounts/login/")
        right = elsewhere.request(
            "POST",
            "/accounts/login/",
            form={"username": "guessed", "password": PASSWORD},
            headers={"X-Forwarded-For": f"{PROXY_SAW}, 198.51.100.77"},
        )
        assert right.status == 302
