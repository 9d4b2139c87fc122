"""Frame once, write many: the Procfile's daphne frames each log frame once for all the sockets of a thread."""

import base64
import re
import socket
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Connection
from websockets.sync.client import ClientConnection, connect

from chatsite.daphne_server import BoundedServer, prepared_message, unsent_bytes, write_now
from streaming.frames import Frame

from .live_server import WebProcess, live_environment, procfile_web
from .protocol_check import parse_frame

METRICS_TOKEN = "metrics-for-tests"
SOCKET_TIMEOUT_S = 10
SETUP = """
from django.contrib.auth.models import User
from threads.services import thread_create
from threads.tokens.services import api_token_create

alice = User.objects.create_user("alice", password="pw-for-tests-only")
thread = thread_create(owner=alice, title="Watched from two tabs")
print(api_token_create(user=alice, name="tests")[1], thread.id)
"""


def test_a_frame_is_framed_once_as_an_unmasked_text_message():
    """The same Frame gives the same prepared message; its bytes are RFC 6455's unmasked text frame."""
    short = Frame("delta", '{"type":"delta","seq":3}', seq=3)
    assert prepared_message(short) is prepared_message(short)
    assert prepared_message(short).payloadHybi == bytes([0x81, len(short.data)]) + short.data.encode()
    # 126 and up: a 16-bit length follows.
    long = Frame("delta", '{"text":"' + "é" * 200 + '"}', seq=4)
    payload = long.data.encode()
    assert prepared_message(long).payloadHybi == bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload


@pytest.fixture
def connection() -> Iterator[tuple[Connection, socket.socket]]:
    """A Twisted TCP transport on one end of a socket pair, and the other end, as the client's."""
    server_end, client_end = socket.socketpair()
    server_end.setblocking(False)
    client_end.settimeout(SOCKET_TIMEOUT_S)
    transport = Connection(server_end, Protocol())  # on the reactor daphne installed
    transport.connected = True
    yield transport, client_end
    transport.stopWriting()
    server_end.close()
    client_end.close()


def test_a_frame_goes_straight_to_the_socket_when_nothing_waits_before_it(connection):
    transport, client = connection
    write_now(transport, b"first frame")
    assert unsent_bytes(transport) == 0, "nothing was left to Twisted"
    assert client.recv(100) == b"first frame"


def test_a_frame_queues_behind_bytes_twisted_still_holds(connection):
    """Order is kept: with bytes unsent in Twisted's buffer, a frame goes after them, not around them."""
    transport, client = connection
    transport.write(b"held ")  # buffered: the reactor is not running to flush it
    write_now(transport, b"next")
    assert unsent_bytes(transport) == len(b"held next")
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(100)  # nothing overtook the held bytes
    transport.doWrite()  # what the reactor does once the socket is writable
    client.setblocking(True)
    assert client.recv(100) == b"held next"


def test_what_the_socket_does_not_take_is_left_to_twisted_in_order(connection):
    transport, client = connection
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = bytes(range(256)) * 4096  # 1 MiB: more than the kernel takes at once
    write_now(transport, big)
    assert 0 < unsent_bytes(transport) < len(big)
    received = bytearray()
    while len(received) < len(big):
        received += client.recv(65536)
        transport.doWrite()
    assert bytes(received) == big


def unstarted_server() -> BoundedServer:
    """A BoundedServer as the Procfile's web process makes it, not listening: its sends need no reactor running."""
    return BoundedServer(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])


class OpenSocket:
    """What send_frame_now reads of daphne's WebSocketProtocol (autobahn's): an open socket, no compression."""

    STATE_OPEN, STATE_CLOSING = 1, 2

    def __init__(self, transport: Connection) -> None:
        self.transport = transport
        self.state = self.STATE_OPEN
        self._perMessageCompress = None
        self.send_queue: list = []


def test_a_frame_is_sent_at_once_only_when_nothing_waits_before_it(connection):
    """send_frame_now writes the frame when the socket takes it at once, and says so; otherwise it writes nothing."""
    transport, client = connection
    server, socket_open = unstarted_server(), OpenSocket(transport)
    frame = Frame("delta", '{"type":"delta","seq":1}', seq=1)

    assert server.send_frame_now(socket_open, frame)
    assert client.recv(100) == prepared_message(frame).payloadHybi

    transport.write(b"held")  # Twisted holds bytes the client has not taken
    assert not server.send_frame_now(socket_open, frame)
    assert unsent_bytes(transport) == len(b"held"), "nothing was added behind them"

    transport.doWrite()
    socket_open.state = socket_open.STATE_CLOSING
    assert not server.send_frame_now(socket_open, frame), "a closing socket takes no more frames"


def test_a_client_that_caught_up_is_no_longer_counted_as_behind(connection):
    """A frame sent at once finds the client caught up: its time behind starts anew if it falls behind again."""
    transport, _ = connection
    server, socket_open = unstarted_server(), OpenSocket(transport)
    server.behind_since[socket_open] = 0.0

    assert server.send_frame_now(socket_open, Frame("delta", "{}", seq=1))
    assert socket_open not in server.behind_since


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[tuple[WebProcess, str, str]]:
    directory = tmp_path_factory.mktemp("send-frame")
    env = live_environment(directory, METRICS_TOKEN=METRICS_TOKEN, SCRIPTED_TOKENS_PER_SECOND="400")
    with procfile_web(directory, env) as server:
        token, thread_id = server.shell(SETUP).split()
        yield server, token, thread_id


def websocket(server: WebProcess, token: str, thread_id: str) -> ClientConnection:
    url = server.url.replace("http", "ws") + f"/ws/threads/{thread_id}/?after=0"
    return connect(url, additional_headers={"Authorization": f"Bearer {token}"})


def read_until(socket: ClientConnection, frame_type: str) -> list[dict]:
    frames = [parse_frame(socket.recv(timeout=SOCKET_TIMEOUT_S))]
    while frames[-1]["type"] != frame_type:
        frames.append(parse_frame(socket.recv(timeout=SOCKET_TIMEOUT_S)))
    return frames


def frames_sent(server: WebProcess) -> dict[str, float]:
    """Return the web process's websocket_frames_total, by framing."""
    credentials = base64.b64encode(f"scraper:{METRICS_TOKEN}".encode()).decode()
    request = urllib.request.Request(f"{server.url}/metrics", headers={"Authorization": f"Basic {credentials}"})
    with urllib.request.urlopen(request, timeout=SOCKET_TIMEOUT_S) as response:
        text = response.read().decode()
    pattern = r'^chatsite_websocket_frames_total\{framing="(\w+)"\} (\S+)$'
    return {framing: float(value) for framing, value in re.findall(pattern, text, re.MULTILINE)}


def test_two_tabs_get_the_same_frames_each_live_frame_framed_once(site):
    """Both sockets of a thread read the reply exactly; each live frame was framed for one and reused for the other."""
    server, token, thread_id = site
    with websocket(server, token, thread_id) as first, websocket(server, token, thread_id) as second:
        for socket in (first, second):
            assert read_until(socket, "ready") == [{"type": "ready", "seq": 0}]
        before = frames_sent(server)
        first.send(f'{{"type": "send", "content": "Hello from two tabs", "client_id": "{uuid.uuid4()}"}}')
        received = [read_until(socket, "end") for socket in (first, second)]
    assert received[0] == received[1]
    seqs = [frame["seq"] for frame in received[0]]
    assert seqs == list(range(1, len(seqs) + 1))
    after = frames_sent(server)
    built = after.get("built", 0) - before.get("built", 0)
    reused = after.get("reused", 0) - before.get("reused", 0)
    # Every frame went out by send_frame, and was framed once for the two sockets.
    assert built + reused == 2 * len(seqs)
    assert built == reused == len(seqs)
