"""I10 through the Procfile's daphne: a client that stops reading is closed before this process holds more than a bound.

The stalled clients here subscribe from the start of a thread with a long log (about 8 MB)
while a fast, long reply streams into it: the kernel's socket buffers take the first few
megabytes of each client on their own (net.ipv4.tcp_wmem autotunes up to 4 MB), so a log
shorter than that could not show the server holding anything at all.
"""

import base64
import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from websockets.sync.client import ClientConnection, connect

from .live_server import PASSWORD, WebProcess, live_environment, procfile_web
from .outsider import Visitor
from .protocol_check import parse_frame

BUFFER_BYTES = 256 * 1024
STALL_SECONDS = 2
STALLED_CLIENTS = 10
BACKLOG_MESSAGES = 250
BACKLOG_MESSAGE_CHARS = 31_000
REPLY_TOKENS = 40_000
# Without the bound each stalled client leaves the server holding the part of the log its socket
# did not take, about 4 MB here (40 MB for ten); with it, the bound and one backlog page each.
RSS_GROWTH_LIMIT = 24 * 1024 * 1024
DEADLINE_S = 60
SOCKET_TIMEOUT_S = 10
# The smallest receive buffer Linux allows: the client's window closes after a few kilobytes.
SMALL_RECEIVE_BUFFER = 4096

# The log opens with a short question whose reply was stopped; retrying that reply is the live
# reply of the tests. A retry answers the question alone, so the worker does not read the
# megabytes after it, whose cost would drown what the tests measure.
SETUP = f"""
from django.contrib.auth.models import User
from django.db import transaction
from streaming.services.endings import generation_cancel
from threads.services import message_post, thread_create
from threads.tokens.services import api_token_create

alice = User.objects.create_user("alice", password="{PASSWORD}")
thread = thread_create(owner=alice, title="A long log")
with transaction.atomic():  # one commit: no worker sees these replies before they are stopped
    question = message_post(thread=thread, content="Tell me everything, fast", client_id=None)
    generation_cancel(thread=thread)
    for index in range({BACKLOG_MESSAGES}):
        message_post(thread=thread, content=f"{{index}} " + "x" * {BACKLOG_MESSAGE_CHARS}, client_id=None)
        generation_cancel(thread=thread)
print(api_token_create(user=alice, name="tests")[1], thread.id, question.reply.id)
"""


@dataclass
class Site:
    server: WebProcess
    token: str
    thread_id: str
    stopped_reply_id: str
    # Retrying is a page's form: a person's session, not an API token.
    visitor: Visitor

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server.url + path, method=method, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=SOCKET_TIMEOUT_S) as response:
            return json.loads(response.read() or b"null")

    def websocket(self, after: int = 0) -> ClientConnection:
        url = self.server.url.replace("http", "ws") + f"/ws/threads/{self.thread_id}/?after={after}"
        return connect(url, additional_headers={"Authorization": f"Bearer {self.token}"}, max_size=None)

    def retry_and_read_reply(self, websocket: ClientConnection) -> list[dict]:
        """Retry the opening question's reply and return the frames `websocket` receives until the new one ends."""
        path = f"/threads/{self.thread_id}/replies/{self.stopped_reply_id}/retry"
        retried = self.visitor.request("POST", path, headers={"Accept": "application/json"}).json()
        reply_id = retried["reply"]["id"]
        return read_until(websocket, lambda frame: frame["type"] == "end" and frame["message_id"] == reply_id)

    def snapshot(self) -> dict:
        """Return the thread's whole snapshot, its pages followed by `next` from the newest."""
        snapshot = self.api("GET", f"/api/threads/{self.thread_id}")
        while snapshot["next"] is not None:
            earlier = self.api("GET", f"/api/threads/{self.thread_id}?before={snapshot['next']}")
            snapshot = earlier | {"messages": earlier["messages"] + snapshot["messages"], "seq": snapshot["seq"]}
        return snapshot

    def events(self, last_event_id: int) -> list[dict]:
        """Return the event stream's log events after `last_event_id`, up to its `ready`."""
        request = urllib.request.Request(
            f"{self.server.url}/api/threads/{self.thread_id}/events",
            headers={"Authorization": f"Bearer {self.token}", "Last-Event-ID": str(last_event_id)},
        )
        frames = []
        with urllib.request.urlopen(request, timeout=SOCKET_TIMEOUT_S) as response:
            while not frames or frames[-1]["type"] != "ready":
                line = response.readline().decode()
                if line.startswith("data: "):
                    frames.append(parse_frame(line[len("data: ") :]))
        return log_events(frames)

    def closed_as_slow(self, port: int) -> bool:
        """Return whether the server's log says it closed the client on `port` as too slow."""
        return f"client 127.0.0.1:{port} took nothing" in self.server.log.read_text()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("slow-consumer")
    env = live_environment(
        directory,
        STREAM_CLIENT_BUFFER_BYTES=str(BUFFER_BYTES),
        STREAM_CLIENT_STALL_SECONDS=str(STALL_SECONDS),
        # As fast as the scripted provider goes: about ten thousand tokens a second.
        SCRIPTED_TOKENS_PER_SECOND="1000000",
        SCRIPTED_REPLY_TOKENS=str(REPLY_TOKENS),
        # A paused subscription keeps its backlog page: 20 events of the log here.
        STREAM_BACKLOG_PAGE_SIZE="20",
    )
    with procfile_web(directory, env) as server:
        token, thread_id, stopped_reply_id = server.shell(SETUP).split()
        visitor = Visitor(server.url)
        assert visitor.sign_in("alice", PASSWORD).status == 302
        site = Site(server=server, token=token, thread_id=thread_id, stopped_reply_id=stopped_reply_id, visitor=visitor)
        # Serve the whole log and one reply once: the memory that takes anyway is then in use before a test.
        with site.websocket() as warm_up:
            read_until(warm_up, lambda frame: frame["type"] == "ready")
            site.retry_and_read_reply(warm_up)
        yield site


def read_until(websocket: ClientConnection, done: Callable[[dict], bool]) -> list[dict]:
    frames = []
    while not frames or not done(frames[-1]):
        frames.append(parse_frame(websocket.recv(timeout=SOCKET_TIMEOUT_S)))
    return frames


def log_events(frames: list[dict]) -> list[dict]:
    return [frame for frame in frames if frame["type"] not in ("ready", "reset", "error", "pong")]


def assert_log_matches_store(events: list[dict], snapshot: dict) -> None:
    """The events are the log from seq 1, without gaps or doubles, and rebuild every stored message exactly."""
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    rebuilt: dict[str, str] = {}
    for event in events:
        if event["type"] in ("message", "start"):
            rebuilt[event["message"]["id"]] = event["message"]["content"]
        elif event["type"] == "delta":
            rebuilt[event["message_id"]] += event["text"]
    assert rebuilt == {message["id"]: message["content"] for message in snapshot["messages"]}


class StalledClient:
    """A client on a bare socket with a tiny receive window that reads nothing until told to: a reader that stopped."""

    def __init__(self, site: Site, request: str) -> None:
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RECEIVE_BUFFER)
        self.socket.settimeout(SOCKET_TIMEOUT_S)
        self.socket.connect(("127.0.0.1", int(site.server.url.rsplit(":", 1)[1])))
        self.socket.sendall(f"{request}Host: 127.0.0.1\r\nAuthorization: Bearer {site.token}\r\n\r\n".encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += self.socket.recv(1)  # byte by byte: nothing after the response head is read
        self.status = int(head.split()[1])
        self.received = b""

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    def read_to_end(self) -> None:
        """Read until the server ends the connection (or drops it); a connection left open fails with a timeout."""
        try:
            while chunk := self.socket.recv(1 << 16):
                self.received += chunk
        except ConnectionResetError:
            pass


class StalledWebSocket(StalledClient):
    def __init__(self, site: Site) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        super().__init__(
            site,
            f"GET /ws/threads/{site.thread_id}/?after=0 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        )
        assert self.status == 101

    def frames(self) -> tuple[list[dict], int | None]:
        """Return the text frames received whole, and the close code (None: the connection was dropped first)."""
        frames, position = [], 0
        while (parsed := self._frame_at(position)) is not None:
            opcode, payload, position = parsed
            if opcode == 0x8:
                return frames, int.from_bytes(payload[:2], "big")
            if opcode == 0x1:
                frames.append(parse_frame(payload))
        return frames, None

    def _frame_at(self, position: int) -> tuple[int, bytes, int] | None:
        """Return the opcode, payload and end of the whole frame at `position` (servers do not mask), or None."""
        head = self.received[position : position + 2]
        if len(head) < 2:
            return None
        length, position = head[1] & 0x7F, position + 2
        if length >= 126:
            size = 2 if length == 126 else 8
            length, position = int.from_bytes(self.received[position : position + size], "big"), position + size
        if position + length > len(self.received):
            return None
        return head[0] & 0x0F, self.received[position : position + length], position + length


class StalledEventStream(StalledClient):
    def __init__(self, site: Site) -> None:
        super().__init__(site, f"GET /api/threads/{site.thread_id}/events HTTP/1.1\r\n")
        assert self.status == 200

    def frames(self) -> list[dict]:
        """Return the frames of the records received whole (the body is chunked; a cut chunk ends it)."""
        body, rest = b"", self.received
        while b"\r\n" in rest:
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line, 16)
            if size == 0 or len(rest) < size:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
        records = body.decode().split("\n\n")[:-1]  # the last is unfinished, or empty
        lines = [line for record in records for line in record.split("\n")]
        return [parse_frame(line[len("data: ") :]) for line in lines if line.startswith("data: ")]


@dataclass
class PeakMemory:
    """Sample a process's resident memory in a thread and keep the highest."""

    sample: Callable[[], int]
    peak: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> "PeakMemory":
        def run() -> None:
            while not self.stop.wait(0.02):
                self.peak = max(self.peak, self.sample())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.sample())


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling a condition in another process


def read_when_closed(site: Site, client: StalledClient) -> threading.Thread:
    """Start a thread that waits until the server closes `client` as too slow, then reads it at once, in its grace."""

    def run() -> None:
        wait_for(lambda: site.closed_as_slow(client.port), f"client {client.port} to be closed")
        client.read_to_end()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def serve_alongside(site: Site, stalled: list[StalledClient]) -> tuple[list[dict], int]:
    """Stream a long reply to a reading client while `stalled` do not read; return its frames and the server's growth.

    Returns once the server has closed every stalled client.
    """
    baseline = site.server.rss_bytes()
    with PeakMemory(site.server.rss_bytes) as memory:
        with site.websocket() as reader:
            frames = read_until(reader, lambda frame: frame["type"] == "ready") + site.retry_and_read_reply(reader)
        wait_for(
            lambda: all(site.closed_as_slow(client.port) for client in stalled), "every stalled client to be closed"
        )
    return frames, memory.peak - baseline


def test_websocket_readers_that_stop_are_closed_4008_and_memory_stays_bounded(site):
    """WebSockets that stop reading are closed with 4008 and the server stays bounded; a reader beside them gets all."""
    stalled = [StalledWebSocket(site) for _ in range(STALLED_CLIENTS)]
    watched = read_when_closed(site, stalled[0])
    frames, growth = serve_alongside(site, stalled)
    watched.join(DEADLINE_S)
    assert growth < RSS_GROWTH_LIMIT, f"the server grew by {growth / 2**20:.1f} MiB"
    snapshot = site.snapshot()
    assert_log_matches_store(log_events(frames), snapshot)
    received, close_code = stalled[0].frames()
    assert close_code == 4008, "read in its grace, the closed client gets the close frame"
    # It resumes from its cursor: what it got and what it gets now is the whole log, once.
    cursor = log_events(received)[-1]["seq"]
    with site.websocket(after=cursor) as resumed:
        rest = read_until(resumed, lambda frame: frame["type"] == "ready")
    assert_log_matches_store(log_events(received + rest), snapshot)
    for client in stalled[1:]:
        client.read_to_end()  # dropped after its grace, or closed: either way it ends


def test_event_streams_that_stop_are_dropped_and_memory_stays_bounded(site):
    """Event streams that stop reading are dropped and the server stays bounded; each resumes with Last-Event-ID."""
    stalled = [StalledEventStream(site) for _ in range(STALLED_CLIENTS)]
    frames, growth = serve_alongside(site, stalled)
    assert growth < RSS_GROWTH_LIMIT, f"the server grew by {growth / 2**20:.1f} MiB"
    snapshot = site.snapshot()
    assert_log_matches_store(log_events(frames), snapshot)
    stalled[0].read_to_end()
    received = log_events(stalled[0].frames())
    rest = site.events(last_event_id=received[-1]["seq"])
    assert_log_matches_store(received + rest, snapshot)


def test_closing_slow_clients_logs_no_error(site):
    """A slow client closed as designed is an expected close: logged at INFO, no ERROR and no traceback."""
    stalled = [StalledWebSocket(site) for _ in range(3)]
    serve_alongside(site, stalled)
    for client in stalled:
        client.read_to_end()
    log = site.server.log.read_text()
    assert "took nothing" in log
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
