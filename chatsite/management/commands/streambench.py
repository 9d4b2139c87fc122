"""`python manage.py streambench`: benchmark the streaming path on a real topology (see chatsite/bench)."""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from chatsite.bench.benchmark import PHASES, run_benchmark
from chatsite.bench.report import render
from chatsite.bench.session import BenchConfig

DEFAULT_PHASES = "idle,resume,page,load,floor"
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def postgres_server_url(option: str | None) -> str:
    """Return the PostgreSQL server the cluster's database goes on: the option, DATABASE_URL, or the local one."""
    if option:
        return option
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else DEFAULT_POSTGRES_URL


def phase_list(value: str) -> tuple[str, ...]:
    phases = tuple(phase.strip() for phase in value.split(",") if phase.strip())
    unknown = set(phases) - set(PHASES)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown phases {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}"
        )
    return phases


def server_setting(value: str) -> tuple[str, str]:
    name, equals, setting = value.partition("=")
    if not equals or not name.isupper():
        raise argparse.ArgumentTypeError("expected NAME=VALUE, e.g. STREAM_FLUSH_MS=40")
    return name, setting


class Command(BaseCommand):
    help = (
        "Start the embedded or scale-out topology as real processes on loopback with storage of its own, "
        "drive scripted replies to real WebSocket clients, and report latency, throughput, correctness, "
        "storage, CPU, memory, resume and page times (and capacity) as a table or JSON."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        topology = parser.add_argument_group("topology")
        topology.add_argument(
            "--topology",
            choices=["embedded", "cluster"],
            default="embedded",
            help="embedded: one daphne with the inline worker, SQLite, in-memory layer; "
            "cluster: daphne processes and stream workers on PostgreSQL and Redis.",
        )
        topology.add_argument("--webs", type=int, default=2, help="Daphne processes (cluster).")
        # One worker: on two cores a second one splits the group commits without adding a core.
        topology.add_argument("--workers", type=int, default=1, help="Stream workers (cluster).")
        topology.add_argument(
            "--database-url",
            default=None,
            help="PostgreSQL server for the cluster; the bench creates and drops its own database "
            "there (default: DATABASE_URL if it is PostgreSQL, else the local server).",
        )
        topology.add_argument(
            "--redis-url", default=None, help="Use this Redis instead of starting a private redis-server (cluster)."
        )
        topology.add_argument(
            "--set",
            dest="server_settings",
            type=server_setting,
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="A setting for the server processes, e.g. STREAM_FLUSH_MS=40.",
        )
        load = parser.add_argument_group("load")
        load.add_argument("--streams", type=int, default=50, help="Threads streaming a reply at once.")
        load.add_argument("--tabs", type=int, default=2, help="Sockets watching each thread.")
        load.add_argument("--tokens-per-second", type=float, default=50.0, help="Pace of each reply.")
        load.add_argument("--reply-tokens", type=int, default=200, help="Tokens in each reply.")
        load.add_argument("--duration", type=float, default=30.0, help="Seconds of load (and of the measured window).")
        load.add_argument("--warmup", type=float, default=5.0, help="Seconds at the start left out of the figures.")
        load.add_argument(
            "--provider",
            choices=["bench", "anthropic"],
            default="bench",
            help="bench: the bench provider in the workers, a timer per token; anthropic: the Anthropic "
            "provider through its SDK, reading the same replies from a local stand-in of the API.",
        )
        load.add_argument("--client-processes", type=int, default=2, help="Processes the tabs are spread over.")
        phases = parser.add_argument_group("phases")
        phases.add_argument(
            "--phases",
            type=phase_list,
            default=phase_list(DEFAULT_PHASES),
            help=f"Comma list from {', '.join(PHASES)} (default {DEFAULT_PHASES}).",
        )
        phases.add_argument("--resume-log-events", type=int, default=12_000, help="Length of the long log resumed on.")
        phases.add_argument("--resume-repeats", type=int, default=20, help="Resumes timed per case.")
        phases.add_argument(
            "--page-messages", type=int, default=1000, help="Messages in the thread whose page is timed."
        )
        phases.add_argument("--page-runs", type=int, default=20, help="Timed page loads.")
        phases.add_argument("--idle-sockets", type=int, default=1000, help="Idle sockets opened to measure memory.")
        phases.add_argument("--capacity-start", type=int, default=50, help="Streams at the first capacity step.")
        phases.add_argument("--capacity-max", type=int, default=800, help="Most streams a capacity step tries.")
        phases.add_argument("--capacity-step-duration", type=float, default=20.0, help="Seconds per capacity step.")
        phases.add_argument(
            "--capacity-budget", type=float, default=600.0, help="Seconds the capacity search may take."
        )
        phases.add_argument("--capacity-p99-ms", type=float, default=250.0, help="The latency bound a step must keep.")
        output = parser.add_argument_group("output")
        output.add_argument("--json", action="store_true", help="Print the report as JSON instead of a table.")
        output.add_argument("--output", type=Path, default=None, help="Also write the JSON report to this file.")
        output.add_argument(
            "--log-dir",
            type=Path,
            default=None,
            help="Keep the processes' logs here (default: a temporary directory, removed after).",
        )

    def handle(self, *args, **options) -> None:
        config = self._config(options)
        log_dir = options["log_dir"] or Path(tempfile.mkdtemp(prefix="streambench-logs-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        # SIGTERM unwinds like Ctrl-C, so the processes are stopped and the database dropped.
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        try:
            report = run_benchmark(config, log_dir)
        except Exception as error:
            # Whatever failed (a process, a service, a timeout), its logs are what tell why: keep them.
            raise CommandError(f"{type(error).__name__}: {error}\n(process logs kept in {log_dir})") from error
        finally:
            signal.signal(signal.SIGTERM, previous)
        if options["log_dir"] is None:
            shutil.rmtree(log_dir, ignore_errors=True)
        if options["output"]:
            options["output"].write_text(json.dumps(report, indent=2) + "\n")
        self.stdout.write(json.dumps(report, indent=2) if options["json"] else render(report))

    def _config(self, options: dict) -> BenchConfig:
        database_url = postgres_server_url(options["database_url"]) if options["topology"] == "cluster" else ""
        if {"load", "floor"} & set(options["phases"]) and options["duration"] <= options["warmup"]:
            raise CommandError("--duration must be longer than --warmup.")
        return BenchConfig(
            topology=options["topology"],
            webs=options["webs"],
            workers=options["workers"],
            streams=options["streams"],
            tabs=options["tabs"],
            tokens_per_second=options["tokens_per_second"],
            reply_tokens=options["reply_tokens"],
            duration_s=options["duration"],
            warmup_s=options["warmup"],
            client_processes=options["client_processes"],
            phases=options["phases"],
            resume_log_events=options["resume_log_events"],
            resume_repeats=options["resume_repeats"],
            page_messages=options["page_messages"],
            page_runs=options["page_runs"],
            idle_sockets=options["idle_sockets"],
            capacity_start=options["capacity_start"],
            capacity_max=options["capacity_max"],
            capacity_step_s=options["capacity_step_duration"],
            capacity_budget_s=options["capacity_budget"],
            capacity_p99_ms=options["capacity_p99_ms"],
            database_url=database_url,
            redis_url=options["redis_url"],
            server_settings=dict(options["server_settings"]),
            provider=options["provider"],
        )
