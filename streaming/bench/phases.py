"""The phases that measure one thing at a time: idle memory, resume, the thread page, peak memory."""
import time
import urllib.request
from typing import Any

from .procstat import process_sample
from .session import BenchSession
from .stats import timing_summary

# Opened and closed before the web process's memory is read: first connections allocate caches for good.
IDLE_WARMUP_SOCKETS = 20
IDLE_SETTLE_SECONDS = 2.0
RESUME_MISSED = (0, 100, 10_000)
RESULT_TIMEOUT_SECONDS = 300.0


def idle_memory(session: BenchSession) -> dict[str, Any]:
    """Open N idle sockets (one person's tab each) on the first web process; return its memory growth per socket."""
    streams, web_pid = session.seeded["idle_streams"], session.topology.webs[0].popen.pid
    plan = {"mode": "idle", "port": session.ports[0]}
    for client in session.clients([plan | {"streams": streams[:IDLE_WARMUP_SOCKETS]}], name="idle-warmup"):
        client.send({"type": "close"})
        client.receive(RESULT_TIMEOUT_SECONDS)
    time.sleep(IDLE_SETTLE_SECONDS)
    before = process_sample(web_pid).rss_kib
    (client,) = session.clients([plan | {"streams": streams}], name="idle")
    time.sleep(IDLE_SETTLE_SECONDS)
    after = process_sample(web_pid).rss_kib
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
                for client_case, server_case in zip(by_client, by_server)
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


def peak_memory(session: BenchSession) -> dict[str, Any]:
    """Return each server process's peak resident memory over the whole run (VmHWM)."""
    pids = session.topology.pids() | ({"redis": session.redis.process.popen.pid} if session.redis else {})
    samples = {name: process_sample(pid) for name, pid in pids.items()}
    peaks = {name: round(sample.peak_rss_kib / 1024, 1) for name, sample in samples.items() if sample is not None}
    return {"by_process_mib": peaks, "total_mib": round(sum(peaks.values()), 1)}
