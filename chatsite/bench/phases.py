"""The phases that measure one thing at a time: idle memory, resume, the thread page, the floor, peak memory."""

import time
import urllib.request
from typing import Any

from ..management.commands.runcluster import web_command
from .procstat import cpu_seconds, process_sample
from .session import BenchSession
from .stats import timing_summary
from .topology import START_TIMEOUT_SECONDS, Process, answers, free_port, wait_until

# Opened and closed before the web process's memory is read: first connections allocate caches for good.
IDLE_WARMUP_SOCKETS = 20
IDLE_SETTLE_SECONDS = 2.0
RESUME_MISSED = (0, 100, 10_000)
RESULT_TIMEOUT_SECONDS = 300.0
FLOOR_APPLICATION = "chatsite.bench.floor_app:application"


def rss_kib(pid: int) -> int:
    """Return the resident memory of the running process `pid`."""
    sample = process_sample(pid)
    if sample is None:
        raise RuntimeError(f"process {pid} exited")
    return sample.rss_kib


def idle_memory(session: BenchSession) -> dict[str, Any]:
    """Open N idle sockets (one person's tab each) on the first web process; return its memory growth per socket."""
    streams, web_pid = session.seeded["idle_streams"], session.running_topology.webs[0].popen.pid
    plan = {"mode": "idle", "port": session.ports[0]}
    for client in session.clients([plan | {"streams": streams[:IDLE_WARMUP_SOCKETS]}], name="idle-warmup"):
        client.send({"type": "close"})
        client.receive(RESULT_TIMEOUT_SECONDS)
    time.sleep(IDLE_SETTLE_SECONDS)
    before = rss_kib(web_pid)
    (client,) = session.clients([plan | {"streams": streams}], name="idle")
    time.sleep(IDLE_SETTLE_SECONDS)
    after = rss_kib(web_pid)
    client.send({"type": "close"})
    opened = client.receive(RESULT_TIMEOUT_SECONDS)["opened"]
    client.stop()
    return {
        "sockets": opened,
        "failed": len(streams) - opened,
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "per_socket_kib": round((after - before) / max(opened, 1), 1),
    }


def resume(session: BenchSession) -> dict[str, Any]:
    """Reconnect with K missed events to a thread with a long log, and to one with a short log."""
    repeats = session.config.resume_repeats
    results = {}
    for label in ("long_log", "short_log"):
        thread = session.seeded[label]
        cases = [
            # 10,000 events take a while to send: fewer runs of that case.
            {
                "missed": missed,
                "after": thread["last_seq"] - missed,
                "repeats": repeats if missed <= 100 else max(3, repeats // 4),
            }
            for missed in RESUME_MISSED
            if missed < thread["last_seq"]
        ]
        plan = {
            "mode": "resume",
            "port": session.ports[0],
            "cookie": session.seeded["cookie"],
            "thread": thread["id"],
            "cases": cases,
        }
        by_client = session.client_result(plan, name=f"resume-{label}", timeout=RESULT_TIMEOUT_SECONDS)["cases"]
        by_server = session.task("resume_server", thread_id=thread["id"], cases=cases)["cases"]
        results[label] = {
            "log_events": thread["last_seq"],
            "cases": [
                {
                    "missed": client_case["missed"],
                    "events_sent": client_case["events"],
                    "client_connect_to_ready_ms": timing_summary(client_case["connect_to_ready_ms"]),
                    "client_open_to_ready_ms": timing_summary(client_case["open_to_ready_ms"]),
                    "server_ms": timing_summary(server_case["server_ms"]),
                }
                for client_case, server_case in zip(by_client, by_server, strict=True)
            ],
        }
    return results


def _timed_get(url: str, cookie: str) -> tuple[float, int]:
    """GET `url` signed in; return the time to the last byte (ms) and the body's size."""
    started = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Cookie": cookie}), timeout=30) as response:
        body = response.read()
        if response.url != url:  # redirected to the sign-in page: that is not the page we meant to time
            raise RuntimeError(f"GET {url} was redirected to {response.url}")
    return (time.perf_counter() - started) * 1000, len(body)


def page(session: BenchSession) -> dict[str, Any]:
    """Time the thread page, and the full snapshot API, of a thread of many messages."""
    thread, cookie, port = session.seeded["page"], session.seeded["cookie"], session.ports[0]
    urls = {
        "page": f"http://127.0.0.1:{port}/threads/{thread['id']}/",
        "snapshot_api": f"http://127.0.0.1:{port}/api/threads/{thread['id']}",
    }
    report: dict[str, Any] = {"messages": thread["messages"]}
    for name, url in urls.items():
        _timed_get(url, cookie)  # warm-up: templates, markdown renderer, pooled connections
        runs = [_timed_get(url, cookie) for _ in range(session.config.page_runs)]
        report[f"{name}_ms"] = timing_summary([ms for ms, _ in runs])
        report[f"{name}_bytes"] = runs[0][1]
    return report


def floor(session: BenchSession) -> dict[str, Any]:
    """Serve the load's sockets a frame every flush from daphne with no application behind it; return its cost.

    The same command as a web process, serving `floor_app` instead of chatsite: a frame
    costs this much however lean the application is. With the load's clients beside it,
    it shows how much of the machine a given frame rate takes before chatsite does anything.
    """
    config = session.config
    sockets = config.streams * config.tabs
    port = free_port()
    web = web_command(port=port, host="127.0.0.1")
    argv = [FLOOR_APPLICATION if arg.endswith(":application") else arg for arg in web]
    environment = session.running_topology.environment | {"FLOOR_FRAME_INTERVAL_MS": str(config.flush_ms)}
    server = Process.spawn("floor", argv, environment, session.log_dir)
    try:
        wait_until(lambda: answers(server, port), START_TIMEOUT_SECONDS, f"the floor's daphne on port {port}")
        processes = max(1, min(config.client_processes, sockets))
        shares = [sockets // processes + (number < sockets % processes) for number in range(processes)]
        plan = {"mode": "floor", "port": port, "warmup_s": config.warmup_s, "duration_s": config.duration_s}
        clients = session.clients([plan | {"sockets": share} for share in shares], name="floor")
        try:
            start = time.time() + 0.5
            for client in clients:
                client.send({"type": "go", "start": start})
            time.sleep(max(0.0, start + config.warmup_s - time.time()))
            before = cpu_seconds({"floor": server.popen.pid})["floor"]
            time.sleep(max(0.0, start + config.duration_s - time.time()))
            server_s = cpu_seconds({"floor": server.popen.pid})["floor"] - before
            results = [client.receive(RESULT_TIMEOUT_SECONDS) for client in clients]
        finally:
            for client in clients:
                client.stop()
    finally:
        server.stop()
    window_s = config.duration_s - config.warmup_s
    frames = sum(result["frames"] for result in results)
    clients_s = sum(result["client_cpu_s"] for result in results)
    return {
        "sockets": sockets,
        "frame_interval_ms": config.flush_ms,
        "frames_per_s": round(frames / window_s, 1),
        "server_cpu_pct": round(100 * server_s / window_s, 1),
        "server_us_per_frame": round(server_s * 1e6 / frames, 1) if frames else None,
        "clients_us_per_frame": round(clients_s * 1e6 / frames, 1) if frames else None,
    }


def peak_memory(session: BenchSession) -> dict[str, Any]:
    """Return each server process's peak resident memory over the whole run (VmHWM)."""
    pids = session.running_topology.pids() | ({"redis": session.redis.process.popen.pid} if session.redis else {})
    samples = {name: process_sample(pid) for name, pid in pids.items()}
    peaks = {name: round(sample.peak_rss_kib / 1024, 1) for name, sample in samples.items() if sample is not None}
    return {"by_process_mib": peaks, "total_mib": round(sum(peaks.values()), 1)}
