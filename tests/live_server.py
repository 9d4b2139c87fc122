"""A real daphne process for the browser tests, with its own SQLite file and inline worker.

The browser talks to it over HTTP and WebSockets exactly as in production; the test
process shares no database with it, so tests read what it stored through its JSON API.
`procfile_web` runs the Procfile's own `web` command instead, for the tests of its limits.
"""

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatsite.bench.topology import free_port

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 30
SHUTDOWN_TIMEOUT_S = 10
PASSWORD = "a-long-test-password"


@dataclass
class LiveServer:
    url: str
    env: dict[str, str]
    log: Path

    def manage(self, *args: str) -> str:
        """Run a management command against the server's database and return its output."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def shell(self, code: str) -> str:
        """Run Python in a Django shell on the server's database; return the last line it printed."""
        lines = self.manage("shell", "--no-imports", "-c", code).strip().splitlines()
        return lines[-1] if lines else ""

    def create_users(self, *usernames: str) -> None:
        self.shell(
            "from django.contrib.auth.models import User\n"
            + "".join(f"User.objects.create_user({name!r}, password={PASSWORD!r})\n" for name in usernames)
        )


def wait_until_answering(url: str, process: subprocess.Popen, log: Path, path: str = "/accounts/login/") -> None:
    """Wait until the server at `url` answers `path` with 200, failing if its process exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)  # polling a process we cannot wait on otherwise
    raise RuntimeError(f"daphne did not answer within {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory) -> Iterator[LiveServer]:
    """Start daphne on a free port with a fresh database, scripted replies slow enough to interrupt."""
    directory = tmp_path_factory.mktemp("live-server")
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "ANTHROPIC_API_KEY", "CHAT_PROVIDER", "DJANGO_SETTINGS_MODULE")
    }
    env |= {
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
        "DJANGO_DEBUG": "on",
        "DJANGO_SECRET_KEY": "browser-test-secret-key",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "STREAM_INLINE_WORKER": "on",
        "SCRIPTED_TOKENS_PER_SECOND": "30",
        "SCRIPTED_REPLY_TOKENS": "80",
        # The tests send more than a person would in a minute; the limit has tests of its own.
        "CHAT_SENDS_PER_MINUTE": "1000",
        "PYTHONUNBUFFERED": "1",
    }
    server = LiveServer(url=f"http://127.0.0.1:{port}", env=env, log=directory / "daphne.log")
    server.manage("migrate", "--verbosity", "0")
    with server.log.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_answering(server.url, process, server.log)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- The Procfile's own `web` command, for tests of what production runs ---------------


def live_environment(directory: Path, **overrides: str) -> dict[str, str]:
    """Return the environment of a live server on a fresh SQLite database in `directory`, with the inline worker."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "ANTHROPIC_API_KEY", "CHAT_PROVIDER", "DJANGO_SETTINGS_MODULE")
    }
    return env | {
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
        "DJANGO_DEBUG": "on",
        "DJANGO_SECRET_KEY": "live-test-secret-key",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "STREAM_INLINE_WORKER": "on",
        "CHAT_SENDS_PER_MINUTE": "1000",
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }


@dataclass
class WebProcess(LiveServer):
    """A live server run by the Procfile's `web` command, with its process at hand."""

    process: subprocess.Popen | None = None

    def rss_bytes(self) -> int:
        """Return the resident memory of the server process."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")


@contextlib.contextmanager
def procfile_web(directory: Path, env: dict[str, str]) -> Iterator[WebProcess]:
    """Migrate, then serve with the Procfile's `web` command (its flags too) on a free port until the block ends."""
    from chatsite.management.commands.runcluster import procfile_command

    port = free_port()
    server = WebProcess(url=f"http://127.0.0.1:{port}", env=env, log=directory / "web.log")
    server.manage("migrate", "--verbosity", "0")
    with server.log.open("w") as log:
        # Daphne takes the last --bind given: this one replaces the Procfile's 0.0.0.0.
        argv = procfile_command("web", PORT=port) + ["--bind", "127.0.0.1"]
        server.process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_answering(server.url, server.process, server.log)
        yield server
    finally:
        server.process.terminate()
        try:
            server.process.wait(SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
