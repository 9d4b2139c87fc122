"""`python manage.py runcluster`: the scale-out topology on one machine.

It runs the Procfile's own commands, so what runs here is what runs in production:
the `release` command once, then one `web` (daphne) process per port and `--workers`
stream workers, all on PostgreSQL and Redis, with STREAM_INLINE_WORKER off.
"""

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# How long children get to stop (a worker hands its replies over) before they are killed.
STOP_TIMEOUT_SECONDS = 15.0
# Procfile programs, run with this interpreter so that children use the same virtualenv.
PROGRAMS = {"python": [sys.executable], "daphne": [sys.executable, "-m", "daphne"]}
# A leading `NAME=value` word of a Procfile line sets the process's environment, as a shell would.
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def procfile_command(process_type: str, **variables: str | int) -> list[str]:
    """Return the argv of a Procfile process type, with `$NAME` variables substituted.

    Its leading `NAME=value` words are left out: callers give the processes their environment
    (`cluster_environment` sets what the Procfile's lines set).
    """
    for line in (Path(settings.BASE_DIR) / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process_type:
            argv = shlex.split(command)
            while argv and ASSIGNMENT.match(argv[0]):
                argv.pop(0)
            for variable, value in variables.items():
                argv = [arg.replace(f"${variable}", str(value)) for arg in argv]
            return PROGRAMS.get(argv[0], argv[:1]) + argv[1:]
    raise CommandError(f"The Procfile has no {process_type!r} process type.")


def web_command(*, port: int, host: str) -> list[str]:
    """Return the command of one daphne web process listening on host:port."""
    # Daphne takes the last --bind given: this one replaces the Procfile's 0.0.0.0.
    return procfile_command("web", PORT=port) + ["--bind", host]


def worker_command(*, name: str | None = None) -> list[str]:
    """Return the command of one stream worker, named `name` on the generations it claims."""
    return procfile_command("worker") + (["--name", name] if name else [])


def cluster_environment(**overrides: str) -> dict[str, str]:
    """Return the environment of the cluster's processes: web processes leave replies to the workers."""
    return {**os.environ, "STREAM_INLINE_WORKER": "false", "PYTHONUNBUFFERED": "1", **overrides}


class Command(BaseCommand):
    help = (
        "Run daphne web processes and stream workers on PostgreSQL (DATABASE_URL) and Redis (REDIS_URL), "
        "as in production behind a load balancer. SIGINT or SIGTERM stops them all."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ports", type=int, nargs="+", default=[8001, 8002], help="One web process per port.")
        parser.add_argument("--workers", type=int, default=2, help="Number of stream workers.")
        parser.add_argument("--bind", default="127.0.0.1", help="Address the web processes listen on.")

    def handle(self, *args, ports: list[int], workers: int, bind: str, **options) -> None:
        on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
        on_redis = bool(settings.REDIS_URL)
        if not (on_postgres and on_redis):
            raise CommandError(
                "runcluster needs DATABASE_URL to PostgreSQL and REDIS_URL: "
                "SQLite and the in-memory channel layer serve one process only."
            )
        environment = cluster_environment()
        if subprocess.run(procfile_command("release"), env=environment, cwd=settings.BASE_DIR).returncode:
            raise CommandError("The release command (collectstatic, migrate) failed.")
        commands = {f"web-{port}": web_command(port=port, host=bind) for port in ports}
        commands |= {f"worker-{number}": worker_command() for number in range(1, workers + 1)}
        children = {
            # A session of their own: a terminal's Ctrl-C reaches this process only, which forwards it once.
            name: subprocess.Popen(command, env=environment, cwd=settings.BASE_DIR, start_new_session=True)
            for name, command in commands.items()
        }
        for port in ports:
            self.stdout.write(f"web      http://{bind}:{port}/")
        self.stdout.write(f"workers  {workers}; press Ctrl-C to stop them all")
        failed = self._supervise(children)
        if failed:
            raise CommandError(f"{', '.join(failed)} exited unexpectedly; stopped the others.")

    def _supervise(self, children: dict[str, subprocess.Popen]) -> list[str]:
        """Wait for a stop signal or a child's exit, stop every child, and return the children that failed."""
        # Signals are taken from a queue instead of interrupting this loop in a handler.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS | {signal.SIGCHLD})
        failed: list[str] = []
        stop_deadline: float | None = None
        try:
            # A list, not a generator: every child is polled, so each one's returncode is current.
            while None in [child.poll() for child in children.values()]:
                received = signal.sigtimedwait(STOP_SIGNALS | {signal.SIGCHLD}, 1.0)
                if stop_deadline is None:
                    failed = [name for name, child in children.items() if child.returncode is not None]
                    if received is not None and received.si_signo in STOP_SIGNALS:
                        self._signal_all(children, received.si_signo)
                    elif failed:
                        self._signal_all(children, signal.SIGTERM)
                    else:
                        continue
                    stop_deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
                elif time.monotonic() > stop_deadline:
                    self._signal_all(children, signal.SIGKILL)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS | {signal.SIGCHLD})
        return failed

    def _signal_all(self, children: dict[str, subprocess.Popen], signum: int) -> None:
        self.stderr.write(f"runcluster: sending {signal.Signals(signum).name} to every process")
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)
