"""Cookie WebSockets need the site's own Origin: scheme, host and port, not the host alone."""

import pytest
from websockets.exceptions import InvalidStatus

from .live_server import PASSWORD, chat_server  # noqa: F401 - chat_server is a fixture
from .outsider import Visitor, frames_until


@pytest.fixture(scope="module")
def signed_in(chat_server) -> tuple[Visitor, str]:  # noqa: F811
    """Return a visitor signed in through the form, and a thread of theirs."""
    chat_server.create_users("origin-owner")
    visitor = Visitor(chat_server.url)
    assert visitor.sign_in("origin-owner", PASSWORD).status == 302
    created = visitor.request("POST", "/api/threads", body={"title": "mine"})
    assert created.status == 201
    return visitor, created.json()["id"]


@pytest.mark.parametrize(
    "origin",
    ["http://127.0.0.1:1", "https://127.0.0.1", "https://localhost", "http://localhost", "http://evil.example"],
)
def test_origin_of_another_scheme_or_port_is_refused(signed_in, origin):
    """A page on another port or scheme of an allowed host cannot use the person's cookie on a WebSocket."""
    visitor, thread_id = signed_in
    with pytest.raises(InvalidStatus) as refused:
        visitor.websocket(thread_id, origin=origin)
    assert refused.value.response.status_code == 403


def test_the_sites_own_origin_is_served(signed_in):
    """The site's own origin, exactly as the page was served, gets the thread."""
    visitor, thread_id = signed_in
    with visitor.websocket(thread_id) as socket:
        assert frames_until(socket, "ready")[-1] == {"type": "ready", "seq": 0}
