"""The topologies under test, as real processes on loopback, and the services they run on.

- `embedded`: one daphne (the Procfile's `web`) running the inline worker, on a temporary
  SQLite file and the in-memory channel layer: the one-command default.
- `cluster`: daphne web processes and stream workers, started from the Procfile's commands
  as `runcluster` starts them, on a PostgreSQL database of the bench's own and on Redis.

By default the cluster gets a Redis server of its own (`redis-server` on a free port): its
command counts and CPU then belong to this run alone, and nothing else sharing the machine's
Redis (a test suite restarting it, say) disturbs the figures.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

from ..management.commands.runcluster import cluster_environment, procfile_command, web_command, worker_command
from .certificates import local_authority
from .tool import BASE_DIR

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
BENCH_DATABASE = "chatsite_bench"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def answers(web: "Process", port: int) -> bool:
    """Whether the web process on `port` answers its health check; raise if it exited."""
    if web.popen.poll() is not None:
        raise RuntimeError(f"{web.name} exited:\n{web.log()[-4000:]}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @classmethod
    def spawn(cls, name: str, argv: list[str], environment: dict[str, str], log_dir: Path) -> "Process":
        log_path = log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            # A session of their own: a Ctrl-C in the terminal reaches streambench, which stops them in order.
            popen = subprocess.Popen(
                argv, env=environment, cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return cls(name, popen, log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(STOP_TIMEOUT_SECONDS)


class PrivateRedis:
    """A Redis server for this run only, without persistence."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed: pass --redis-url to use a running Redis")
        argv = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = Process.spawn("redis", argv + ["--dir", str(log_dir)], {}, log_dir)
        wait_until(self._answers, START_TIMEOUT_SECONDS, "redis-server")

    def _answers(self) -> bool:
        try:
            # redis-py types a sync and an async client's answers as one.
            return redis.Redis.from_url(self.url).ping()  # type: ignore[return-value]
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        self.process.stop()


class ModelApiProcess:
    """The Messages API stand-in (`model_api.py`) the workers' Anthropic provider reads its replies from."""

    def __init__(self, log_dir: Path, *, reply_tokens: int, tokens_per_second: float) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        # Served over TLS, as the API is: a client that opens a connection per reply pays its handshake.
        self.certificates = local_authority(log_dir, name="model-api")
        argv = [sys.executable, "-m", "chatsite.bench.model_api", str(self.port), str(reply_tokens)]
        argv += [str(tokens_per_second), str(self.certificates.server)]
        self.process = Process.spawn("model-api", argv, dict(os.environ), log_dir)
        wait_until(self._listens, START_TIMEOUT_SECONDS, "the model API stand-in")

    def _listens(self) -> bool:
        if self.process.popen.poll() is not None:
            raise RuntimeError(f"the model API stand-in exited:\n{self.process.log()[-4000:]}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.process.stop()


def redis_info(url: str, section: str) -> dict:
    client = redis.Redis.from_url(url)
    try:
        return client.info(section)  # type: ignore[return-value]  # as ping() above
    finally:
        client.close()


def redis_command_calls(url: str) -> dict[str, int]:
    """Return how many times Redis ran each command so far (INFO commandstats)."""
    return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in redis_info(url, "commandstats").items()}


def redis_reads(url: str) -> int:
    """Return how many reads off client sockets Redis served so far: about one per round trip, batched or not."""
    return redis_info(url, "stats")["total_reads_processed"]


class PostgresDatabase:
    """The bench's own database on a PostgreSQL server, created empty and dropped at the end."""

    def __init__(self, server_url: str) -> None:
        self.admin_url = urlunsplit(urlsplit(server_url)._replace(path="/postgres"))
        self.url = urlunsplit(urlsplit(server_url)._replace(path=f"/{BENCH_DATABASE}"))
        self._admin(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)", f"CREATE DATABASE {BENCH_DATABASE}")

    def _admin(self, *statements: str) -> list[tuple]:
        """Run `statements`, waiting out a server restart (a chaos test may be restarting a shared server)."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as admin:
                    rows: list[tuple] = []
                    for statement in statements:
                        cursor = admin.execute(statement)
                        rows = cursor.fetchall() if cursor.description else []
                    return rows
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def backend_pids(self) -> list[int]:
        """Return the server processes serving the bench database now."""
        return [pid for (pid,) in self._admin(f"SELECT pid FROM pg_stat_activity WHERE datname = '{BENCH_DATABASE}'")]

    def version(self) -> str:
        return self._admin("SHOW server_version")[0][0]

    def drop(self) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")


class Topology:
    """Web processes (and stream workers) of one topology, started from the Procfile's commands."""

    def __init__(self, *, webs: int, workers: int, environment: dict[str, str | None], log_dir: Path) -> None:
        """Run with this process's environment plus `environment`, where None unsets a variable."""
        self.environment = cluster_environment(**{name: value for name, value in environment.items() if value})
        for name in [name for name, value in environment.items() if value is None]:
            self.environment.pop(name, None)
        if workers == 0:
            self.environment["STREAM_INLINE_WORKER"] = "true"  # embedded: the web process writes the replies
        self.log_dir = log_dir
        self.ports = [free_port() for _ in range(webs)]
        self.webs: list[Process] = []
        self.workers: list[Process] = []
        self.worker_count = workers

    def start(self) -> None:
        migrate = subprocess.run(
            procfile_command("release"), env=self.environment, cwd=BASE_DIR, capture_output=True, text=True
        )
        if migrate.returncode:
            raise RuntimeError(f"migrate failed:\n{migrate.stderr[-4000:]}")
        for index, port in enumerate(self.ports):
            argv = web_command(port=port, host="127.0.0.1")
            self.webs.append(Process.spawn(f"web-{index}", argv, self.environment, self.log_dir))
        for number in range(self.worker_count):
            name = f"bench-worker-{number}"
            self.workers.append(Process.spawn(name, worker_command(name=name), self.environment, self.log_dir))
        for web, port in zip(self.webs, self.ports, strict=True):
            wait_until(partial(answers, web, port), START_TIMEOUT_SECONDS, f"{web.name} on port {port}")
        for worker in self.workers:
            wait_until(partial(self._started, worker), START_TIMEOUT_SECONDS, worker.name)

    @staticmethod
    def _started(worker: Process) -> bool:
        if worker.popen.poll() is not None:
            raise RuntimeError(f"{worker.name} exited:\n{worker.log()[-4000:]}")
        return f"worker {worker.name} started" in worker.log()

    def pids(self) -> dict[str, int]:
        return {process.name: process.popen.pid for process in self.webs + self.workers}

    def crashed(self) -> list[str]:
        return [process.name for process in self.webs + self.workers if process.popen.poll() is not None]

    def stop(self) -> None:
        for process in self.workers + self.webs:
            process.stop()
