"""Run the phases a configuration asks for on one session and assemble the report."""

import dataclasses
import platform
from pathlib import Path
from typing import Any

from .capacity import capacity
from .load import run_load
from .phases import floor, idle_memory, page, peak_memory, resume
from .procstat import machine_description
from .report import targets
from .session import BenchConfig, BenchSession
from .topology import redis_info

PHASES = ("idle", "resume", "page", "load", "floor", "capacity")


def run_benchmark(config: BenchConfig, log_dir: Path) -> dict[str, Any]:
    """Start the topology, run the phases in a fixed order, take everything down; return the report."""
    described = dataclasses.asdict(config)
    for url in ("database_url", "redis_url"):  # they may carry credentials
        described.pop(url)
    described["stream_flush_ms"] = config.flush_ms
    report: dict[str, Any] = {
        "config": described,
        "machine": machine_description() | {"python": platform.python_version()},
    }
    with BenchSession(config, log_dir) as session:
        if session.database is not None:
            report["machine"]["postgres"] = session.database.version()
        if session.redis_url:
            report["machine"]["redis"] = redis_info(session.redis_url, "server")["redis_version"]
        # Idle memory first: the web process has not yet grown and freed memory for anything else.
        if "idle" in config.phases:
            report["idle"] = idle_memory(session)
        if "resume" in config.phases:
            report["resume"] = resume(session)
        if "page" in config.phases:
            report["page"] = page(session)
        if "load" in config.phases:
            report["load"] = run_load(
                session, streams=session.seeded["load_streams"], duration_s=config.duration_s, warmup_s=config.warmup_s
            )
        if "floor" in config.phases:
            report["floor"] = floor(session)
        if "capacity" in config.phases:
            report["capacity"] = capacity(session)
        report["peak_memory"] = peak_memory(session)
        report["crashed_processes"] = session.running_topology.crashed()
    report["targets"] = targets(report)
    return report
