"""The load phase: every stream's sender keeps a reply streaming to all its tabs, for a set time.

It returns token-to-screen latency, throughput and correctness as the clients measured them,
and what the load cost the servers: rows, channel-layer traffic and CPU, per 1,000 tokens.
"""

import time
from collections import Counter
from typing import Any

from .procstat import machine_busy_s
from .session import MODEL_API, BenchSession
from .stats import Histogram
from .topology import redis_command_calls, redis_reads

CHECKS = ("lost", "duplicated", "out_of_order", "text_mismatches", "incomplete_replies", "reconnects", "resets")
RESULT_TIMEOUT_SECONDS = 300.0


def run_load(
    session: BenchSession, *, streams: list[dict[str, str]], duration_s: float, warmup_s: float
) -> dict[str, Any]:
    """Stream replies on every stream's thread at once for `duration_s`; measure the window after `warmup_s`."""
    config = session.config
    processes = max(1, min(config.client_processes, len(streams)))
    share = -(-len(streams) // processes)
    base = {"mode": "load", "ports": session.ports, "tabs": config.tabs}
    timing = {
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "stagger_s": min(config.reply_s, 2.0),
        "reply_timeout_s": config.reply_s * 4 + 30,
    }
    plans = [
        base | timing | {"streams": streams[n * share : (n + 1) * share], "first_index": n * share}
        for n in range(processes)
    ]
    clients = session.clients(plans, name="load")
    try:
        start = time.time() + 0.5
        for client in clients:
            client.send({"type": "go", "start": start})
        time.sleep(max(0.0, start + warmup_s - time.time()))
        before = _server_counters(session)
        time.sleep(max(0.0, start + duration_s - time.time()))
        after = _server_counters(session)
        results = [client.receive(timing["reply_timeout_s"] + RESULT_TIMEOUT_SECONDS) for client in clients]
    finally:
        for client in clients:
            client.stop()
    counts = session.task("count", threads=[stream["id"] for stream in streams])
    return _load_report(session, results, counts, before, after, streams=len(streams), window_s=duration_s - warmup_s)


def _server_counters(session: BenchSession) -> dict[str, Any]:
    return {
        "cpu": session.cpu_snapshot(),
        "machine": machine_busy_s(),
        "redis": redis_command_calls(session.redis_url) if session.redis_url else {},
        "redis_reads": redis_reads(session.redis_url) if session.redis_url else None,
    }


def _load_report(
    session: BenchSession,
    results: list[dict[str, Any]],
    counts: dict[str, Any],
    before: dict[str, Any],
    after: dict[str, Any],
    *,
    streams: int,
    window_s: float,
) -> dict[str, Any]:
    config = session.config
    latency, first_token = Histogram(), Histogram()
    errors: Counter[str] = Counter()
    for result in results:
        latency.merge(Histogram(result["latency"]))
        first_token.merge(Histogram(result["first_token"]))
        errors.update(result["errors"])
    delivered_tokens = sum(result["tokens"] for result in results)
    tokens, rows, written = counts["tokens"], counts["chunk_rows"], counts["chunk_rows_written"]

    def per_1k(count: float, of: float = tokens) -> float | None:
        return round(count * 1000 / of, 1) if of else None

    window_tokens = delivered_tokens / config.tabs  # tokens generated in the window, each delivered to every tab
    redis_calls = {name: calls - before["redis"].get(name, 0) for name, calls in after["redis"].items()}
    if session.redis_url:
        # Each group send is one PUBLISH, alone or in a batch (a worker wake-up per reply is among them).
        group_sends_per_1k = per_1k(redis_calls.get("publish", 0), window_tokens)
        redis_reads_per_1k = per_1k(after["redis_reads"] - before["redis_reads"], window_tokens)
    else:
        # In memory, from the log: each commit publishes once per thread (a post's message and start together).
        group_sends_per_1k = per_1k(written.get("message", 0) + written.get("delta", 0) + written.get("end", 0))
        redis_reads_per_1k = None
    return {
        "streams": streams,
        "tabs": config.tabs,
        "tokens_per_second": config.tokens_per_second,
        "window_s": window_s,
        "latency_ms": latency.summary(),
        "first_token_ms": first_token.summary(),
        "delivered": {
            "events_per_s": round(sum(result["events"] for result in results) / window_s, 1),
            "tokens_per_s": round(delivered_tokens / window_s, 1),
        },
        "correctness": {name: sum(result["checks"].get(name, 0) for result in results) for name in CHECKS}
        | {
            "replies": sum(result["replies"] for result in results),
            "stalled_replies": sum(result["stalled"] for result in results),
            "errors": dict(errors),
            "takeovers": counts["takeovers"],
            "flaws": [flaw for result in results for flaw in result["flaws"]],
        },
        # Over the whole run, from the generations' timestamps: what each reply cost besides its tokens.
        "reply_cycle_ms": counts["reply_cycle_ms"],
        "storage": {
            "tokens": tokens,
            "messages": counts["messages"],
            # Kept: what the log holds once finished replies are compacted (issue 8's target).
            "chunk_rows": rows,
            "chunk_rows_per_1k_tokens": per_1k(sum(rows.values())),
            # Written while streaming: one row per event, so one per flush.
            "chunk_rows_written": written,
            "chunk_rows_written_per_1k_tokens": per_1k(sum(written.values())),
            "tokens_per_delta_row": round(tokens / written["delta"], 2) if written.get("delta") else None,
        },
        "channel_layer": {
            "group_sends_per_1k_tokens": group_sends_per_1k,
            "subscriber_messages_per_1k_tokens": (
                round(group_sends_per_1k * config.tabs, 1) if group_sends_per_1k is not None else None
            ),
            "redis_commands_per_1k_tokens": per_1k(sum(redis_calls.values()), window_tokens) if redis_calls else None,
            "redis_reads_per_1k_tokens": redis_reads_per_1k,
            "redis_commands_top": dict(Counter(redis_calls).most_common(6)),
        },
        "cpu": _cpu_report(before, after, results, delivered_tokens, window_s),
    }


def _cpu_report(
    before: dict[str, Any], after: dict[str, Any], results: list[dict[str, Any]], delivered_tokens: int, window_s: float
) -> dict[str, Any]:
    used: Counter[str] = Counter()
    for name, seconds in after["cpu"].items():
        group = "postgres" if name.startswith("postgres:") else name
        used[group] += seconds - before["cpu"].get(name, 0.0)
    # The model's stand-in, when the workers read one, is not the server: reported apart, as the clients are.
    model_api_s = used.pop(MODEL_API, 0.0)
    app_s = sum(seconds for name, seconds in used.items() if name.startswith(("web-", "bench-worker-")))
    web_s = sum(seconds for name, seconds in used.items() if name.startswith("web-"))
    frames = sum(result["events"] for result in results)
    servers_s = sum(used.values())
    busy = after["machine"][0] - before["machine"][0]
    total = after["machine"][1] - before["machine"][1]
    clients_s = sum(result["client_cpu_s"] for result in results)
    per_1k = (
        (lambda seconds: round(seconds * 1000 / delivered_tokens, 3)) if delivered_tokens else (lambda seconds: None)
    )
    return {
        "by_process_s": {name: round(seconds, 2) for name, seconds in sorted(used.items())},
        "app_s_per_1k_delivered_tokens": per_1k(app_s),
        "servers_s_per_1k_delivered_tokens": per_1k(servers_s),
        "clients_s": round(clients_s, 2),
        # Compare with the floor phase: what daphne alone spends per frame (with the inline worker when embedded).
        "web_us_per_frame": round(web_s * 1e6 / frames, 1) if frames else None,
        "clients_us_per_frame": round(clients_s * 1e6 / frames, 1) if frames else None,
        "machine_busy_pct": round(100 * busy / total, 1) if total else None,
        # CPU used by processes that are not part of this run: another workload skews every figure.
        "others_busy_pct": (
            round(100 * max(0.0, busy - servers_s - clients_s - model_api_s) / total, 1) if total else None
        ),
        "model_api_s": round(model_api_s, 2),
        "window_s": window_s,
    }
