"""The report: the issue's targets checked against the figures, and a table for people to read."""

from typing import Any

LOSS = ("lost", "duplicated", "out_of_order", "text_mismatches", "incomplete_replies", "stalled_replies")
# The reference load for the latency target: streams × tabs × tokens/s.
REFERENCE_LOAD = (200, 2, 50)
VERDICTS = {True: "met", False: "MISSED", None: "n/a"}


def _target(name: str, goal: str, measured: Any, met: bool | None) -> dict[str, Any]:
    return {"target": name, "goal": goal, "measured": measured, "met": met}


def _case(resume_log: dict[str, Any], missed: int) -> dict[str, Any] | None:
    return next((case for case in resume_log["cases"] if case["missed"] == missed), None)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Check the figures against the targets of issue 8; `met` is None where this run did not measure it."""
    checked = []
    load, capacity, resume = report.get("load"), report.get("capacity"), report.get("resume")
    loads = ([load] if load else []) + (capacity["steps"] if capacity else [])
    if loads:
        flaws = sum(step["correctness"][name] for step in loads for name in LOSS)
        checked.append(_target("zero loss at every load", "0", flaws, flaws == 0))
    if load:
        bound_ms = report["config"]["stream_flush_ms"] + 60
        shape = (load["streams"], load["tabs"], load["tokens_per_second"])
        p99 = load["latency_ms"]["p99"]
        met = p99 is not None and p99 <= bound_ms if shape == REFERENCE_LOAD else None
        ran = "×".join(f"{figure:g}" for figure in shape)
        checked.append(_target(f"p99 token-to-screen at 200×2×50 (ran {ran})", f"<= {bound_ms} ms", p99, met))
        # Judged on the rows the log keeps once replies are compacted; while streaming, each flush writes one.
        rows = load["storage"]["chunk_rows_per_1k_tokens"]
        met = rows <= 30 if rows is not None and load["tokens_per_second"] == 50 else None
        name = "chunk rows kept per 1,000 tokens at 50 tokens/s, after compaction"
        checked.append(_target(name, "<= 30", rows, met))
    if capacity:
        streams = capacity["max_streams"]
        checked.append(
            _target("capacity, concurrent streams × 2 tabs × 50 tokens/s", ">= 500", streams, streams >= 500)
        )
    if resume and (long_case := _case(resume["long_log"], 100)):
        server_ms = long_case["server_ms"]["p50"]
        events = resume["long_log"]["log_events"]
        checked.append(
            _target(f"resume K=100 on a {events}-event log, server p50", "<= 20 ms", server_ms, server_ms <= 20)
        )
        if short_case := _case(resume["short_log"], 100):
            short_ms = short_case["server_ms"]["p50"]
            # Independent of log length: within 25 % (or 2 ms) of the same resume on a short log.
            independent = server_ms <= max(short_ms * 1.25, short_ms + 2)
            measured = f"{server_ms} vs {short_ms} ms"
            checked.append(_target("resume K=100, long log vs short log", "independent", measured, independent))
    if page := report.get("page"):
        p95 = page["page_ms"]["p95"]
        checked.append(_target(f"thread page of {page['messages']} messages, p95", "<= 150 ms", p95, p95 <= 150))
    if idle := report.get("idle"):
        kib = idle["per_socket_kib"]
        # Sockets the server refused say nothing about memory: the figure only counts with all of them open.
        met = kib <= 64 if not idle["failed"] else None
        checked.append(_target(f"memory per idle WebSocket ({idle['sockets']} open)", "<= 64 KiB", kib, met))
    return checked


def _figures(summary: dict[str, Any], *keys: str) -> str:
    return "  ".join(f"{key} {summary[key]}" for key in keys)


def _cycle(cycle: dict[str, Any]) -> str:
    """The gaps of a reply's cycle, p50 / p99: sent to claimed, claimed to first text, ended to the next send."""
    parts = {"queued_to_claimed": "claimed", "claimed_to_first_text": "first text", "ended_to_next_send": "next send"}
    return ", ".join(f"{label} {cycle[key]['p50']} / {cycle[key]['p99']}" for key, label in parts.items())


def _load_lines(load: dict[str, Any]) -> list[str]:
    correctness, storage, layer, cpu = load["correctness"], load["storage"], load["channel_layer"], load["cpu"]
    shape = f"{load['streams']} streams × {load['tabs']} tabs × {load['tokens_per_second']:g} tokens/s"
    checks = ", ".join(f"{name.replace('_', ' ')} {correctness[name]}" for name in (*LOSS, "reconnects", "resets"))
    return [
        f"Load: {shape}, measured over {load['window_s']:g} s",
        f"  token-to-screen ms    {_figures(load['latency_ms'], 'p50', 'p95', 'p99', 'max')}",
        f"  first token ms        {_figures(load['first_token_ms'], 'p50', 'p95', 'p99')}",
        f"  delivered             {load['delivered']['events_per_s']} events/s, "
        f"{load['delivered']['tokens_per_s']} tokens/s",
        f"  reply cycle ms        {_cycle(load['reply_cycle_ms'])}",
        f"  correctness           {checks}",
        *(f"    ! {flaw}" for flaw in correctness["flaws"]),
        f"  chunk rows / 1k tok   {storage['chunk_rows_per_1k_tokens']} kept after compaction, "
        f"{storage['chunk_rows_written_per_1k_tokens']} written while streaming "
        f"({storage['tokens_per_delta_row']} tokens per flush)",
        f"  channel layer / 1k    {layer['group_sends_per_1k_tokens']} group sends, "
        f"{layer['subscriber_messages_per_1k_tokens']} subscriber messages, "
        f"{layer['redis_commands_per_1k_tokens']} Redis commands in {layer['redis_reads_per_1k_tokens']} reads",
        f"  CPU s / 1k delivered  app {cpu['app_s_per_1k_delivered_tokens']}, "
        f"with Postgres and Redis {cpu['servers_s_per_1k_delivered_tokens']}",
        f"  machine               {cpu['machine_busy_pct']}% busy, {cpu['others_busy_pct']}% by other processes; "
        f"clients {cpu['clients_s']} CPU s" + (f", model API {cpu['model_api_s']} CPU s" if cpu["model_api_s"] else ""),
        "  CPU s by process      " + ", ".join(f"{name} {seconds}" for name, seconds in cpu["by_process_s"].items()),
        f"  µs per frame          web processes {cpu['web_us_per_frame']}, clients {cpu['clients_us_per_frame']}",
    ]


def _floor_lines(floor: dict[str, Any]) -> list[str]:
    return [
        f"Floor: daphne alone, {floor['sockets']} sockets × a frame every {floor['frame_interval_ms']} ms",
        f"  {floor['frames_per_s']} frames/s; µs per frame: daphne {floor['server_us_per_frame']}, "
        f"clients {floor['clients_us_per_frame']}; daphne {floor['server_cpu_pct']}% of a core",
    ]


def _resume_lines(resume: dict[str, Any]) -> list[str]:
    lines = []
    for label, resume_log in resume.items():
        lines.append(f"Resume, {label.replace('_', ' ')} of {resume_log['log_events']} events (ms, p50/p95):")
        for case in resume_log["cases"]:
            connect, opened, server = (
                case[key] for key in ("client_connect_to_ready_ms", "client_open_to_ready_ms", "server_ms")
            )
            lines.append(
                f"  K={case['missed']:<6} connect→ready {connect['p50']}/{connect['p95']}  "
                f"open→ready {opened['p50']}/{opened['p95']}  server {server['p50']}/{server['p95']}"
            )
    return lines


def _page_lines(page: dict[str, Any]) -> list[str]:
    return [
        f"Thread page of {page['messages']} messages (ms): {_figures(page['page_ms'], 'p50', 'p95', 'max')}, "
        f"{page['page_bytes']} bytes",
        f"  full snapshot API (ms): {_figures(page['snapshot_api_ms'], 'p50', 'p95')}, "
        f"{page['snapshot_api_bytes']} bytes",
    ]


def _memory_lines(idle: dict[str, Any] | None, peak: dict[str, Any] | None) -> list[str]:
    lines = []
    if idle:
        lines.append(
            f"Idle WebSockets: {idle['per_socket_kib']} KiB each ({idle['sockets']} open, {idle['failed']} refused; "
            f"{idle['rss_before_mib']} → {idle['rss_after_mib']} MiB)"
        )
    if peak:
        lines.append("Peak RSS MiB: " + ", ".join(f"{name} {mib}" for name, mib in peak["by_process_mib"].items()))
    return lines


def _capacity_lines(capacity: dict[str, Any]) -> list[str]:
    lines = [f"Capacity: {capacity['max_streams']} streams ({capacity['criterion']})"]
    for step in capacity["steps"]:
        lines.append(
            f"  {step['streams']:>5} streams  p99 {step['latency_ms']['p99']} ms  "
            f"first token p99 {step['first_token_p99_ms']} ms  {step['delivered_tokens_per_s']} tokens/s  "
            f"machine {step['machine_busy_pct']}%  {'pass' if step['passed'] else 'FAIL'}"
        )
    return lines


def render(report: dict[str, Any]) -> str:
    """Return the report as plain text."""
    config, machine = report["config"], report["machine"]
    topology = config["topology"]
    if topology == "cluster":
        topology += f" ({config['webs']} web, {config['workers']} workers)"
    sections = [
        [
            f"streambench: {topology}, {config['provider']} provider, STREAM_FLUSH_MS={config['stream_flush_ms']}",
            f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
            f"Linux {machine['kernel']}, load average {machine['load_average_at_start']} at start",
        ]
    ]
    if "load" in report:
        sections.append(_load_lines(report["load"]))
    if "floor" in report:
        sections.append(_floor_lines(report["floor"]))
    if "resume" in report:
        sections.append(_resume_lines(report["resume"]))
    if "page" in report:
        sections.append(_page_lines(report["page"]))
    sections.append(_memory_lines(report.get("idle"), report.get("peak_memory")))
    if "capacity" in report:
        sections.append(_capacity_lines(report["capacity"]))
    sections.append(
        ["Targets (issue 8):"]
        + [
            f"  [{VERDICTS[target['met']]:>6}] {target['target']}: {target['measured']} (goal {target['goal']})"
            for target in report["targets"]
        ]
    )
    return "\n\n".join("\n".join(section) for section in sections if section)
