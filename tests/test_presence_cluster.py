"""Presence across two web processes on PostgreSQL and Redis, and after one of them is killed.

Alice watches a thread through one web process and Bob, a member, through the other: each
sees the other within seconds. Then Bob's web process is SIGKILLed, so nothing tells
anyone he left: his entry expires, and Alice's presence drops him within the expiry and a
heartbeat; a newcomer never sees him.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from streaming.presence import EXPIRY_HEARTBEATS

from .chaos_cluster import (
    ARTIFACTS_DIR,
    BASE_DIR,
    Cluster,
    Services,
    chaos_environment,
    migrate,
    with_database,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]

DATABASE_NAME = "chatsite_presence_cluster"
HEARTBEAT_S = 0.5
# Within a few seconds of a join or leave (a loaded 2-core machine).
SEEN_WITHIN_S = 5.0

PEOPLE_SCRIPT = """
import json
import os
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from threads.services import thread_create
from threads.sharing import member_add

users = {name: get_user_model().objects.create_user(name) for name in ("alice", "bob", "carol")}
thread = thread_create(owner=users["alice"], title="watched")
for name in ("bob", "carol"):
    member_add(thread=thread, username=name, role="viewer", added_by=users["alice"])
cookies = {}
for name, user in users.items():
    client = Client()
    client.force_login(user)
    cookies[name] = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
print(json.dumps({"thread": str(thread.id), "cookies": cookies}))
"""


@dataclass
class Watched:
    cluster: Cluster
    thread_id: str
    cookies: dict[str, str]

    def watch(self, name: str, web: int) -> ClientConnection:
        """Open `name`'s WebSocket on web process `web`, asking for presence."""
        port = self.cluster.ports[web]
        return ws_connect(
            f"ws://127.0.0.1:{port}/ws/threads/{self.thread_id}/?after=0&presence=1",
            origin=f"http://127.0.0.1:{port}",
            additional_headers={"Cookie": self.cookies[name]},
            open_timeout=SEEN_WITHIN_S,
        )


@pytest.fixture(scope="module")
def watched() -> Iterator[Watched]:
    """Two web processes on a fresh database, a thread of Alice's shared with Bob and Carol."""
    server_url, redis_url = os.environ["DATABASE_URL"], os.environ["REDIS_URL"]
    Services(database_url=server_url, redis_url=redis_url).ensure_running()
    admin_url = with_database(server_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE_NAME}")
    environment = chaos_environment(
        database_url=with_database(server_url, DATABASE_NAME),
        redis_url=redis_url,
        prefix=f"presence-{uuid.uuid4().hex[:8]}",
        STREAM_PRESENCE_HEARTBEAT_SECONDS=str(HEARTBEAT_S),
    )
    migrate(environment)
    made = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", PEOPLE_SCRIPT],
        env=environment,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    people = json.loads(made.stdout.strip().splitlines()[-1])
    log_dir = ARTIFACTS_DIR / "presence"
    log_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(environment=environment, log_dir=log_dir, webs=2, workers=1)
    try:
        cluster.start()
        yield Watched(cluster, people["thread"], people["cookies"])
    finally:
        cluster.stop()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)")


def presence_until(socket: ClientConnection, wanted: list[str], timeout: float = SEEN_WITHIN_S) -> float:
    """Read `presence` frames until one names exactly `wanted`; return when it came (time.monotonic())."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        frame = json.loads(socket.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame["type"] == "presence":
            seen.append([person["name"] for person in frame["people"]])
            if seen[-1] == wanted:
                return time.monotonic()
    raise AssertionError(f"no presence of {wanted} within {timeout} s; saw {seen}")


def first_presence(socket: ClientConnection) -> list[str]:
    """Return the names in the first `presence` frame a socket receives."""
    while (frame := json.loads(socket.recv(timeout=SEEN_WITHIN_S)))["type"] != "presence":
        pass
    return [person["name"] for person in frame["people"]]


def test_presence_across_two_web_processes_and_after_one_is_killed(watched: Watched):
    """Alice (web 0) and Bob (web 1) see each other; once web 1 is killed Bob drops out, and no newcomer sees him."""
    with watched.watch("alice", 0) as alice:
        presence_until(alice, ["alice"])
        with watched.watch("bob", 1) as bob:
            presence_until(bob, ["alice", "bob"])
            presence_until(alice, ["alice", "bob"])
            watched.cluster.stop_process(watched.cluster.webs[1], signal.SIGKILL)
            killed_at = time.monotonic()
            bob.close_socket()  # its server is gone: no closing handshake to wait for
        dropped_at = presence_until(alice, ["alice"], timeout=EXPIRY_HEARTBEATS * HEARTBEAT_S + SEEN_WITHIN_S)
        assert dropped_at - killed_at < EXPIRY_HEARTBEATS * HEARTBEAT_S + SEEN_WITHIN_S
        with watched.watch("carol", 0) as carol:
            assert first_presence(carol) == ["alice", "carol"], "a newcomer never sees the dead process's watcher"
            presence_until(alice, ["alice", "carol"])
        presence_until(alice, ["alice"])  # Carol left: she is gone at once, not at her expiry
