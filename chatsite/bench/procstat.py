"""CPU and memory of processes, read from /proc (Linux), so no extra package is needed."""

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessSample:
    cpu_s: float
    rss_kib: int
    peak_rss_kib: int


def process_sample(pid: int) -> ProcessSample | None:
    """Return the CPU time used so far and the resident memory of `pid`, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    memory = {
        line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM"))
    }
    return ProcessSample(
        cpu_s=(utime + stime) / CLOCK_TICKS_PER_SECOND,
        rss_kib=memory.get("VmRSS", 0),
        peak_rss_kib=memory.get("VmHWM", 0),
    )


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """Return the CPU seconds used so far by each named process that still runs."""
    samples = {name: process_sample(pid) for name, pid in pids.items()}
    return {name: sample.cpu_s for name, sample in samples.items() if sample is not None}


def machine_busy_s() -> tuple[float, float]:
    """Return (busy, total) CPU seconds of the whole machine since boot, all cores."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    total = sum(ticks[:8])  # guest time is already counted in user time
    return (total - idle) / CLOCK_TICKS_PER_SECOND, total / CLOCK_TICKS_PER_SECOND


def machine_description() -> dict[str, str | int | float]:
    """Return what the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count() or 0,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": os.uname().release,
        # Another workload on the machine skews every figure: the report says how busy it was.
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
