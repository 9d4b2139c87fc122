import asyncio
import json

import pytest
from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client

from chatsite.asgi import application
from streaming.worker import StreamWorker
from threads.services import thread_create

from .protocol_check import ProtocolCommunicator

# Generous: a loaded CI machine must not turn a slow event into a failure.
RECEIVE_TIMEOUT_S = 10


def pytest_report_header(config) -> str:
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    layer = settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]
    return f"chatsite backends: database={db}, channel layer={layer}"


on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
on_redis = bool(settings.REDIS_URL)

# Users are made by the hundred here: a deliberately slow password hash would dominate the run.
settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def pytest_collection_modifyitems(config, items) -> None:
    # Tests that need PostgreSQL or Redis run in the services pass of `make test`, which CI always runs.
    skips = {}
    if not on_postgres:
        skips["postgres"] = pytest.mark.skip(reason="runs in the services pass (DATABASE_URL to PostgreSQL)")
    if not on_redis:
        skips["redis"] = pytest.mark.skip(reason="runs in the services pass (REDIS_URL to Redis)")
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def close_database_pool(django_db_setup, django_db_blocker):
    """Close every connection, pooled ones too, before the test database is dropped."""
    yield
    with django_db_blocker.unblock():
        # Tests read with Django's async ORM (`aget`…), whose calls run in asgiref's
        # single ORM thread and, unlike database_sync_to_async, never close their connection.
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()
        for alias in connections:
            if getattr(connections[alias], "pool", None) is not None:
                connections[alias].close_pool()


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Give each test its own channel layer: layers hold queues bound to one event loop."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def make_user(db):
    def make(username: str = "alice", **extra):
        return get_user_model().objects.create_user(username=username, password="pw-for-tests-only", **extra)

    return make


@pytest.fixture
def user(make_user):
    return make_user("alice")


@pytest.fixture
def thread(user):
    return thread_create(owner=user, title="Test thread")


@pytest.fixture
def session_cookie():
    """Return a function giving a Cookie header value signed in as a user."""

    def cookie_for(user) -> str:
        client = Client()
        client.force_login(user)
        return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    return cookie_for


@pytest.fixture
async def worker():
    """Run a worker loop in the test's event loop for the duration of the test."""
    worker = StreamWorker(name="test-worker")
    task = asyncio.create_task(worker.run())
    yield worker
    worker.stop()
    await asyncio.wait_for(task, RECEIVE_TIMEOUT_S)


class ThreadSocket:
    """A protocol v1 client for tests: a real WebSocket session through the ASGI stack."""

    def __init__(self, thread_id, cookie: str | None, after: int | str | None = 0, origin: str = "http://localhost"):
        query = "" if after is None else f"?after={after}"
        headers = [(b"origin", origin.encode())]
        if cookie:
            headers.append((b"cookie", cookie.encode()))
        self.communicator = ProtocolCommunicator(application, f"/ws/threads/{thread_id}/{query}", headers=headers)
        self.frames: list[dict] = []
        self.closed = False

    async def connect(self) -> None:
        connected, _ = await self.communicator.connect(timeout=RECEIVE_TIMEOUT_S)
        assert connected

    async def receive(self, timeout: float = RECEIVE_TIMEOUT_S) -> dict:
        frame = json.loads(await self.communicator.receive_from(timeout=timeout))
        self.frames.append(frame)
        return frame

    async def receive_until(self, predicate, timeout: float = RECEIVE_TIMEOUT_S) -> dict:
        while True:
            frame = await self.receive(timeout)
            if predicate(frame):
                return frame

    async def send(self, frame: dict) -> None:
        await self.communicator.send_to(text_data=json.dumps(frame))

    async def close_code(self) -> int:
        output = await self.communicator.receive_output(timeout=RECEIVE_TIMEOUT_S)
        while output["type"] != "websocket.close":
            output = await self.communicator.receive_output(timeout=RECEIVE_TIMEOUT_S)
        return output["code"]

    async def disconnect(self) -> None:
        if not self.closed:
            self.closed = True
            await self.communicator.disconnect(timeout=RECEIVE_TIMEOUT_S)

    @property
    def log_events(self) -> list[dict]:
        return [frame for frame in self.frames if "seq" in frame and frame["type"] not in ("ready", "reset")]


@pytest.fixture
async def connect(session_cookie):
    """Open a ThreadSocket for `user` on `thread_id`; all are closed after the test."""
    sockets: list[ThreadSocket] = []

    async def open_socket(thread_id, user=None, after=0, **kwargs) -> ThreadSocket:
        cookie = await database_sync_to_async(session_cookie)(user) if user is not None else None
        socket = ThreadSocket(thread_id, cookie, after=after, **kwargs)
        await socket.connect()
        sockets.append(socket)
        return socket

    yield open_socket
    for socket in sockets:
        await socket.disconnect()


def reply_text(events: list[dict], message_id: str) -> str:
    """Rebuild a message's text from its delta events, in the order received."""
    return "".join(event["text"] for event in events if event["type"] == "delta" and event["message_id"] == message_id)
