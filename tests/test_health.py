"""/healthz answers while the process runs; /readyz names the part that keeps it from serving."""

import asyncio
import json
import time

import pytest
import redis
from channels.testing import HttpCommunicator
from django.db import connections
from django.db.utils import load_backend

from chatsite.asgi import application
from chatsite.health import check_channel_layer
from streaming import inline

from .conftest import RECEIVE_TIMEOUT_S

# Nothing listens on port 1: connecting there fails at once, for real.
CLOSED_PORT = 1


@pytest.fixture
def unreachable_database(tmp_path):
    """Point the default alias at a database server or file that cannot be reached, for one test."""
    real = connections["default"]
    settings_dict = {**real.settings_dict}
    if real.vendor == "sqlite":
        settings_dict["NAME"] = str(tmp_path / "no-such-directory" / "db.sqlite3")
    else:
        options = {key: value for key, value in settings_dict["OPTIONS"].items() if key != "pool"}
        settings_dict |= {"HOST": "127.0.0.1", "PORT": CLOSED_PORT, "OPTIONS": options}
    broken = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, alias="default")
    connections["default"] = broken
    yield
    broken.close()
    connections["default"] = real


@pytest.fixture
async def inline_worker_on(settings):
    """Turn the inline worker on with a fast poll; stop the loop that the test's requests started."""
    settings.STREAM_INLINE_WORKER = True
    settings.STREAM_WORKER_POLL_SECONDS = 0.05
    yield
    await inline.stop_inline_worker()


async def until(condition, timeout: float = RECEIVE_TIMEOUT_S) -> None:
    """Wait until `condition()` holds, failing after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.01)


async def asgi_get(path: str) -> tuple[int, dict]:
    """GET `path` through the whole ASGI application, in this event loop, as daphne would."""
    communicator = HttpCommunicator(application, "GET", path, headers=[(b"host", b"localhost")])
    response = await communicator.get_response(timeout=RECEIVE_TIMEOUT_S)
    # Let the request finish: Django closes its database connection after the response is sent.
    await communicator.wait(timeout=RECEIVE_TIMEOUT_S)
    return response["status"], json.loads(response["body"])


def test_healthz_answers_without_the_database(client):
    """healthz answers 200 in a test that has no database access at all."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_answers_200_when_every_check_passes(client):
    """readyz answers 200 with each check's outcome when database and channel layer work."""
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "channel_layer": "ok", "worker": "off"},
        "failing": [],
    }


@pytest.mark.django_db
def test_readyz_names_the_database_when_it_is_unreachable(client, unreachable_database):
    """readyz answers 503 naming the database when connecting to it fails."""
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["database"]
    assert body["checks"]["database"] == "failed: OperationalError"


@pytest.mark.django_db
def test_readyz_names_the_channel_layer_when_it_is_unreachable(client, settings):
    """readyz answers 503 naming the channel layer when its Redis server does not answer."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "streaming.layers.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{CLOSED_PORT}"]},
        }
    }
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["channel_layer"]
    assert body["checks"]["channel_layer"].startswith("failed: ")


@pytest.mark.django_db(transaction=True)
async def test_readyz_passes_once_the_inline_worker_loop_turns(inline_worker_on):
    """With the inline worker on, readyz answers 200 once the process's worker loop has come round."""
    await asgi_get("/readyz")  # the first request into this event loop starts its inline worker
    worker = inline.inline_worker()
    await until(lambda: worker.looped_at is not None)
    status, body = await asgi_get("/readyz")
    assert status == 200, body
    assert body["checks"]["worker"] == "ok"


@pytest.mark.django_db(transaction=True)
async def test_readyz_names_the_worker_when_its_loop_is_stuck(inline_worker_on, settings):
    """readyz answers 503 naming the worker when the inline worker loop has not come round for many polls."""
    await asgi_get("/readyz")
    worker = inline.inline_worker()
    await until(lambda: worker.looped_at is not None)
    # A loop stuck for an hour: its task is alive (so it is not replaced) but it does not come round.
    settings.STREAM_WORKER_POLL_SECONDS = 60
    came_round = worker.looped_at
    await until(lambda: worker.looped_at != came_round)  # now in a 60 s wait: it will not touch looped_at
    worker.looped_at = time.monotonic() - 3600
    status, body = await asgi_get("/readyz")
    assert status == 503
    assert body["failing"] == ["worker"]
    assert body["checks"]["worker"].startswith("failed: the loop last came round")


@pytest.mark.redis
async def test_channel_layer_probes_reuse_one_subscription(settings):
    """Repeated readiness probes leave no Redis subscription behind (the pub/sub layer keeps one per channel)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    pattern = f"{settings.CHANNEL_LAYERS['default']['CONFIG']['prefix']}*"
    try:
        await check_channel_layer()
        subscribed = len(client.pubsub_channels(pattern))
        for _ in range(5):
            assert await check_channel_layer() == "ok"
        assert len(client.pubsub_channels(pattern)) == subscribed
    finally:
        client.close()
