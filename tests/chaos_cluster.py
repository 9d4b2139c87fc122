"""The chaos tests' harness: a scale-out cluster of real processes on this machine, the services
it runs on, a reader of its database, and WebSocket clients that resume on another web process.

The cluster runs the Procfile's commands, built by `runcluster`, so the tests exercise what
production runs. Everything listens on loopback.
"""

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from chatsite.bench.topology import free_port
from chatsite.management.commands.runcluster import cluster_environment, procfile_command, web_command, worker_command
from streaming.protocol import FINAL_CLOSE_CODES

from .protocol_check import parse_frame

BASE_DIR = Path(__file__).resolve().parent.parent
ARTIFACTS_DIR = BASE_DIR / "test-artifacts"
# Generous: processes boot Django on a loaded 2-core machine.
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy, and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return result


async def async_wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """`wait_until` for coroutines: `condition` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS)


class Services:
    """Stops and starts the PostgreSQL cluster and the Redis server that the given URLs point at."""

    def __init__(self, *, database_url: str, redis_url: str) -> None:
        database = urlsplit(database_url)
        self.pg_host, self.pg_port = database.hostname or "127.0.0.1", database.port or 5432
        self.pg_version, self.pg_cluster = self._pg_cluster(self.pg_port)
        self.redis_port = urlsplit(redis_url).port or 6379

    @staticmethod
    def _pg_cluster(port: int) -> tuple[str, str]:
        for line in run("pg_lsclusters", "--no-header").stdout.splitlines():
            version, cluster, cluster_port, *_ = line.split()
            if int(cluster_port) == port:
                return version, cluster
        raise RuntimeError(f"no PostgreSQL cluster listens on port {port}")

    def postgres_up(self) -> bool:
        return run("pg_isready", "-q", "-h", self.pg_host, "-p", str(self.pg_port)).returncode == 0

    def _pg_ctl(self, action: str) -> None:
        result = run("pg_ctlcluster", "--skip-systemctl-redirect", self.pg_version, self.pg_cluster, action)
        assert result.returncode == 0, f"pg_ctlcluster {action}: {result.stderr}"

    def stop_postgres(self) -> None:
        self._pg_ctl("stop")

    def start_postgres(self) -> None:
        self._pg_ctl("start")
        wait_until(self.postgres_up, START_TIMEOUT_SECONDS, "PostgreSQL to accept connections")

    def redis_up(self) -> bool:
        return run("redis-cli", "-p", str(self.redis_port), "ping").stdout.strip() == "PONG"

    def stop_redis(self) -> None:
        run("redis-cli", "-p", str(self.redis_port), "shutdown", "nosave")
        wait_until(lambda: not self.redis_up(), START_TIMEOUT_SECONDS, "Redis to stop")

    def start_redis(self) -> None:
        result = run(
            "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(self.redis_port),
            "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
        )  # fmt: skip
        assert result.returncode == 0, f"redis-server: {result.stderr}"
        wait_until(self.redis_up, START_TIMEOUT_SECONDS, "Redis to answer")

    def ensure_running(self) -> None:
        """Bring both services back, whatever a scenario left them in."""
        if not self.postgres_up():
            self.start_postgres()
        if not self.redis_up():
            self.start_redis()


class ChaosDatabase:
    """Reads (and sometimes writes) the cluster's database with plain SQL, reconnecting after outages."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: psycopg.AsyncConnection | None = None

    async def rows(self, sql: str, *params: Any, timeout: float = START_TIMEOUT_SECONDS) -> list[tuple]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.connection is None or self.connection.closed:
                    self.connection = await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True, connect_timeout=2
                    )
                cursor = await self.connection.execute(sql, params)
                return await cursor.fetchall() if cursor.description else []
            except psycopg.OperationalError:
                if self.connection is not None:
                    await self.connection.close()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)  # the database is restarting: try again

    async def value(self, sql: str, *params: Any) -> Any:
        rows = await self.rows(sql, *params)
        return rows[0][0] if rows else None

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Cluster:
    """Two daphne web processes and two stream workers, each restartable on its own."""

    def __init__(self, *, environment: dict[str, str], log_dir: Path, webs: int = 2, workers: int = 2) -> None:
        self.environment = environment
        self.log_dir = log_dir
        self.ports = [free_port() for _ in range(webs)]
        self.webs: list[Process | None] = [None] * webs
        self.workers: list[Process | None] = [None] * workers
        self.worker_environment: dict[str, str] = {}
        self.starts = 0

    def _spawn(self, name: str, argv: list[str], environment: dict[str, str]) -> Process:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(argv, env=environment, cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT)
        return Process(name=name, popen=popen, log_path=log_path)

    def start(self) -> None:
        for index in range(len(self.webs)):
            self.start_web(index, wait=False)
        for slot in range(len(self.workers)):
            self.start_worker(slot, wait=False)
        self.wait_ready()

    def start_web(self, index: int, *, wait: bool = True) -> None:
        argv = web_command(port=self.ports[index], host="127.0.0.1")
        self.webs[index] = self._spawn(f"web-{index}", argv, self.environment)
        if wait:
            self.wait_ready()

    def start_worker(self, slot: int, *, wait: bool = True) -> Process:
        self.starts += 1
        name = f"worker-{slot}.{self.starts}"
        environment = self.environment | self.worker_environment
        self.workers[slot] = self._spawn(name, worker_command(name=name), environment)
        if wait:
            self.wait_ready()
        return self.workers[slot]

    def restart_workers(self, **environment: str) -> None:
        """Restart both workers with these settings on top of the cluster's (gracefully, handing replies over)."""
        self.worker_environment = environment
        for slot, worker in enumerate(self.workers):
            self.stop_process(worker, signal.SIGTERM)
            self.start_worker(slot, wait=False)
        self.wait_ready()

    def _web_ready(self, index: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[index]}/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_ready(self) -> None:
        for index, web in enumerate(self.webs):
            assert web is not None and web.popen.poll() is None, f"web-{index} exited"
            wait_until(partial(self._web_ready, index), START_TIMEOUT_SECONDS, f"web-{index} to answer /healthz")
        for worker in self.workers:
            assert worker is not None and worker.popen.poll() is None, f"{worker.name} exited"
            wait_until(lambda: f"worker {worker.name} started" in worker.log(), START_TIMEOUT_SECONDS, f"{worker.name}")  # noqa: B023

    def worker_slot(self, name: str) -> int | None:
        """Return the slot of the running worker called `name`."""
        for slot, worker in enumerate(self.workers):
            if worker is not None and worker.name == name and worker.popen.poll() is None:
                return slot
        return None

    def live_worker_names(self) -> list[str]:
        return [worker.name for worker in self.workers if worker is not None and worker.popen.poll() is None]

    @staticmethod
    def stop_process(process: Process | None, signum: int) -> int | None:
        """Send `signum` and wait for the exit; return the exit code."""
        if process is None:
            return None
        if process.popen.poll() is None:
            process.popen.send_signal(signum)
        try:
            return process.popen.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            return process.popen.wait(STOP_TIMEOUT_SECONDS)

    def stop(self) -> None:
        for process in self.workers + self.webs:
            self.stop_process(process, signal.SIGTERM)


def sign_in(environment: dict[str, str], *, threads: int) -> tuple[str, list[str]]:
    """Create a user, a session and `threads` threads in the cluster's database; return the cookie and thread ids."""
    script = (
        "import json\n"
        "from django.conf import settings\n"
        "from django.contrib.auth import get_user_model\n"
        "from django.test import Client\n"
        "from threads.services import thread_create\n"
        "user = get_user_model().objects.create_user('chaos')\n"
        "client = Client()\n"
        "client.force_login(user)\n"
        f"threads = [str(thread_create(owner=user, title=f'chaos {{n}}').id) for n in range({threads})]\n"
        "cookie = f'{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}'\n"
        "print(json.dumps({'cookie': cookie, 'threads': threads}))\n"
    )
    shell = [sys.executable, "manage.py", "shell", "-c", script]
    result = subprocess.run(shell, env=environment, cwd=BASE_DIR, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    signed_in = json.loads(result.stdout.strip().splitlines()[-1])
    return signed_in["cookie"], signed_in["threads"]


def migrate(environment: dict[str, str]) -> None:
    result = subprocess.run(procfile_command("release"), env=environment, cwd=BASE_DIR, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def chaos_environment(*, database_url: str, redis_url: str, prefix: str, **settings: str) -> dict[str, str]:
    return cluster_environment(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CHANNEL_LAYER_PREFIX=prefix,
        DJANGO_DEBUG="off",
        DJANGO_LOG_LEVEL="INFO",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        **settings,
    )


@dataclass
class ChaosClient:
    """A protocol v1 client on a real WebSocket.

    Whenever its socket drops it reconnects to the next web process with `after=<last seq>`.
    It keeps every log event it receives, duplicates included, so that a test can check
    that the log it saw has no gap and no repeat.
    """

    thread_id: str
    cookie: str
    ports: list[int]
    port_index: int = 0
    events: list[dict] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    resets: int = 0
    errors: list[dict] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    final_close: int | None = None
    socket: ClientConnection | None = None

    def __post_init__(self) -> None:
        self.changed = asyncio.Condition()
        self.task: asyncio.Task | None = None

    @property
    def last_seq(self) -> int:
        return max((event["seq"] for event in self.events), default=0)

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run())
        await self.wait_for(lambda: self.socket is not None, 10, "the first connection")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        while self.final_close is None:
            port = self.ports[self.port_index % len(self.ports)]
            url = f"ws://127.0.0.1:{port}/ws/threads/{self.thread_id}/?after={self.last_seq}"
            try:
                async with connect(
                    url, origin=f"http://127.0.0.1:{port}", additional_headers={"Cookie": self.cookie}, open_timeout=5
                ) as websocket:
                    async for text in websocket:
                        if self.socket is None:
                            self.socket = websocket
                            self.connections.append(port)
                        await self._on_frame(parse_frame(text))
                    if websocket.close_code in FINAL_CLOSE_CODES:
                        self.final_close = websocket.close_code
            except (OSError, TimeoutError, WebSocketException):
                pass  # the web process is gone or refused us: resume on the next one
            self.socket = None
            self.port_index += 1
            await asyncio.sleep(0.1)  # reconnect backoff, as a browser client has

    async def _on_frame(self, frame: dict) -> None:
        if frame["type"] == "reset":
            self.resets += 1
        elif frame["type"] == "error":
            self.errors.append(frame)
        elif "seq" in frame and frame["type"] != "ready":
            self.events.append(frame)
            self.received_at.append(time.time())
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        async with self.changed:
            try:
                return await asyncio.wait_for(self.changed.wait_for(predicate), timeout)
            except TimeoutError:
                raise AssertionError(f"client on thread {self.thread_id}: timed out waiting for {what}") from None

    async def send(self, frame: dict) -> None:
        """Send a frame on the current connection, waiting for one if the socket is between web processes."""
        while True:
            await self.wait_for(lambda: self.socket is not None, 20, "a connection to send on")
            try:
                await self.socket.send(json.dumps(frame))
                return
            except WebSocketException:
                await self.wait_for(lambda: self.socket is None, 5, "the broken connection to be dropped")

    def end_of(self, message_id: str) -> dict | None:
        return next((e for e in self.events if e["type"] == "end" and e["message_id"] == message_id), None)

    def text_of(self, message_id: str) -> str:
        return "".join(e["text"] for e in self.events if e["type"] == "delta" and e["message_id"] == message_id)

    def gaps_and_repeats(self, last_seq: int) -> tuple[int, int]:
        """Return how many seqs in 1..last_seq this client never received, and how many it received twice."""
        seqs = [event["seq"] for event in self.events]
        return len(set(range(1, last_seq + 1)) - set(seqs)), len(seqs) - len(set(seqs))
