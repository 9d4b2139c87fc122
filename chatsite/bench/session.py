"""One benchmark session: its settings, the services and topology it starts, its data and its clients."""

import json
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from .procstat import cpu_seconds
from .tool import BASE_DIR, run_task
from .topology import ModelApiProcess, PostgresDatabase, PrivateRedis, Topology

PROVIDER = "chatsite.bench.provider.BenchProvider"
# The model API stand-in's name among the processes whose CPU is read: the model's, not the server's.
MODEL_API = "model-api"
# Resumes on the long log are compared with the same resumes on a log this short.
SHORT_LOG_EVENTS = 300
CLIENT_CONNECT_TIMEOUT_SECONDS = 180.0


@dataclass(frozen=True)
class BenchConfig:
    topology: str  # "embedded" or "cluster"
    webs: int
    workers: int
    streams: int
    tabs: int
    tokens_per_second: float
    reply_tokens: int
    duration_s: float
    warmup_s: float
    client_processes: int
    phases: tuple[str, ...]
    resume_log_events: int
    resume_repeats: int
    page_messages: int
    page_runs: int
    idle_sockets: int
    capacity_start: int
    capacity_max: int
    capacity_step_s: float
    capacity_budget_s: float
    capacity_p99_ms: float
    database_url: str
    redis_url: str | None
    server_settings: dict[str, str] = field(default_factory=dict)
    # "bench": the bench provider in the workers; "anthropic": the Anthropic provider reading `ModelApi`.
    provider: str = "bench"

    @property
    def reply_s(self) -> float:
        return self.reply_tokens / self.tokens_per_second

    @property
    def flush_ms(self) -> int:
        """STREAM_FLUSH_MS as the servers run with it."""
        return int(self.server_settings.get("STREAM_FLUSH_MS", settings.STREAM_FLUSH_MS))


class ClientProcess:
    """A `python -m chatsite.bench.client` child, spoken to in JSON lines."""

    def __init__(self, plan: dict[str, Any], log_path: Path) -> None:
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "chatsite.bench.client"],
                cwd=BASE_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.log_path = log_path
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(plan)

    def _read(self) -> None:
        assert self.popen.stdout is not None, "started with stdout=PIPE"
        for line in self.popen.stdout:
            self.lines.put(line)
        self.lines.put("")  # end of output: the process exited

    def send(self, message: dict[str, Any]) -> None:
        assert self.popen.stdin is not None, "started with stdin=PIPE"
        self.popen.stdin.write(json.dumps(message) + "\n")
        self.popen.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"bench client {self.popen.pid} said nothing for {timeout:.0f}s") from None
        if not line:
            raise RuntimeError(f"bench client exited:\n{self.log_path.read_text(errors='replace')[-4000:]}")
        return json.loads(line)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


class BenchSession:
    """Starts the topology on fresh storage, seeds it, and takes it all down again on exit."""

    def __init__(self, config: BenchConfig, log_dir: Path) -> None:
        self.config = config
        self.log_dir = log_dir
        self.database: PostgresDatabase | None = None
        self.redis: PrivateRedis | None = None
        self.redis_url: str | None = None
        self.model_api: ModelApiProcess | None = None
        self.sqlite_dir: Path | None = None
        self.topology: Topology | None = None
        self.prefix = f"bench-{secrets.token_hex(4)}"
        self.seeded: dict[str, Any] = {}

    def __enter__(self) -> "BenchSession":
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        config = self.config
        if config.topology == "cluster":
            self.database = PostgresDatabase(config.database_url)
            database_url = self.database.url
            if config.redis_url:
                self.redis_url = config.redis_url
            else:
                self.redis = PrivateRedis(self.log_dir)
                self.redis_url = self.redis.url
        else:
            self.sqlite_dir = Path(tempfile.mkdtemp(prefix="streambench-"))
            database_url = f"sqlite:///{self.sqlite_dir / 'bench.sqlite3'}"
        environment = {
            "DATABASE_URL": database_url,
            **self._provider_environment(),
            "SCRIPTED_TOKENS_PER_SECOND": str(config.tokens_per_second),
            "SCRIPTED_REPLY_TOKENS": str(config.reply_tokens),
            # Short bench replies follow each other faster than a person writes.
            "CHAT_SENDS_PER_MINUTE": "1000000",
            "CHANNEL_LAYER_PREFIX": self.prefix,
            "DJANGO_DEBUG": "off",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(32),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            # Production settings, but over plain HTTP on the loopback: no redirect to https, cookies
            # the clients send back without TLS.
            "DJANGO_SSL_REDIRECT": "off",
            "DJANGO_SECURE_COOKIES": "off",
            "DJANGO_LOG_LEVEL": "INFO",
            # Unset on the embedded topology: the in-memory layer.
            "REDIS_URL": self.redis_url,
            **config.server_settings,
        }
        self.topology = Topology(
            webs=config.webs if config.topology == "cluster" else 1,
            workers=config.workers if config.topology == "cluster" else 0,
            environment=environment,
            log_dir=self.log_dir,
        )
        self.topology.start()
        self.seeded = self.task(
            "seed",
            load_streams=config.streams if "load" in config.phases else 0,
            idle_streams=config.idle_sockets if "idle" in config.phases else 0,
            log_events=config.resume_log_events,
            short_log_events=SHORT_LOG_EVENTS,
            page_messages=config.page_messages,
        )

    def _provider_environment(self) -> dict[str, str]:
        """The settings that pick the workers' provider, starting the model API stand-in if they read one."""
        config = self.config
        if config.provider == "bench":
            return {"CHAT_PROVIDER": PROVIDER}
        self.model_api = ModelApiProcess(
            self.log_dir, reply_tokens=config.reply_tokens, tokens_per_second=config.tokens_per_second
        )
        return {
            "CHAT_PROVIDER": "anthropic",
            "ANTHROPIC_BASE_URL": self.model_api.url,
            # The stand-in's certificate is signed by an authority made for this run.
            "SSL_CERT_FILE": str(self.model_api.certificates.authority),
            "ANTHROPIC_API_KEY": secrets.token_urlsafe(16),
            "ANTHROPIC_MODEL": "bench",
        }

    def __exit__(self, *exc_info: object) -> None:
        if self.topology is not None:
            self.topology.stop()
        if self.model_api is not None:
            self.model_api.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.database is not None:
            self.database.drop()
        if self.sqlite_dir is not None:
            shutil.rmtree(self.sqlite_dir, ignore_errors=True)

    @property
    def running_topology(self) -> Topology:
        """The topology, started: only inside the session's `with`."""
        assert self.topology is not None, "the session has not started"
        return self.topology

    @property
    def ports(self) -> list[int]:
        return self.running_topology.ports

    def task(self, name: str, **arguments: Any) -> dict[str, Any]:
        return run_task(self.running_topology.environment, name, **arguments)

    def clients(self, plans: list[dict[str, Any]], *, name: str) -> list[ClientProcess]:
        """Start one client process per plan and wait until each has its sockets open."""
        clients = [ClientProcess(plan, self.log_dir / f"{name}-{number}.log") for number, plan in enumerate(plans)]
        try:
            for client in clients:
                client.receive(CLIENT_CONNECT_TIMEOUT_SECONDS)
        except BaseException:
            for client in clients:
                client.stop()
            raise
        return clients

    def client_result(self, plan: dict[str, Any], *, name: str, timeout: float) -> dict[str, Any]:
        """Run a client process that reports once, when done, and return its report."""
        client = ClientProcess(plan, self.log_dir / f"{name}.log")
        try:
            return client.receive(timeout)
        finally:
            client.stop()

    def cpu_snapshot(self) -> dict[str, float]:
        """Return CPU seconds used so far by every server process: web, workers, Redis, Postgres backends."""
        pids = self.running_topology.pids()
        if self.redis is not None:
            pids["redis"] = self.redis.process.popen.pid
        if self.database is not None:
            pids |= {f"postgres:{pid}": pid for pid in self.database.backend_pids()}
        if self.model_api is not None:
            pids[MODEL_API] = self.model_api.process.popen.pid
        return cpu_seconds(pids)
