"""Find the most concurrent streams the topology serves within the latency bound, by stepping the load."""

import math
import time
from typing import Any

from .load import run_load
from .report import LOSS
from .session import BenchSession

# A step's time besides its own duration: opening sockets, the last replies, the checks.
STEP_OVERHEAD_SECONDS = 30.0
# A reply that waits this long for its first token was queued, not streamed concurrently
# (say, behind STREAM_WORKER_CONCURRENCY): such a step does not count as served.
FIRST_TOKEN_P99_MS = 1000.0
# Bisection stops once the bracket is this narrow, relative to the passing load.
RESOLUTION = 0.1


def step_passes(step: dict[str, Any], p99_bound_ms: float) -> bool:
    """Return whether a load step was served: nothing lost, p99 within the bound, replies not queued."""
    flawless = not any(step["correctness"][name] for name in LOSS)
    p99, first_token_p99 = step["latency_ms"]["p99"], step["first_token_ms"]["p99"]
    return flawless and p99 is not None and p99 < p99_bound_ms and (first_token_p99 or 0) <= FIRST_TOKEN_P99_MS


def next_load(passed: int, failed: int | None, maximum: int) -> int | None:
    """Double until a step fails (halve while none passed), then bisect between the best pass and the first failure."""
    if failed is None:
        return min(passed * 2, maximum) if passed < maximum else None
    if failed - passed <= max(1, math.ceil(passed * RESOLUTION)):
        return None
    return (passed + failed) // 2


def capacity(session: BenchSession) -> dict[str, Any]:
    """Step the load (fresh streams each step) within the time budget; return the largest load served."""
    config = session.config
    ends_at = time.monotonic() + config.capacity_budget_s
    warmup_s = min(5.0, config.capacity_step_s / 3)
    steps: list[dict[str, Any]] = []
    passed, failed = 0, None
    streams: int | None = config.capacity_start
    while (
        streams is not None
        and time.monotonic() + config.capacity_step_s + config.reply_s + STEP_OVERHEAD_SECONDS < ends_at
    ):
        step = run_load(
            session,
            streams=session.task("streams", count=streams)["streams"],
            duration_s=config.capacity_step_s,
            warmup_s=warmup_s,
        )
        ok = step_passes(step, config.capacity_p99_ms)
        steps.append(
            {
                "streams": streams,
                "passed": ok,
                "latency_ms": step["latency_ms"],
                "first_token_p99_ms": step["first_token_ms"]["p99"],
                "delivered_tokens_per_s": step["delivered"]["tokens_per_s"],
                "correctness": step["correctness"],
                "machine_busy_pct": step["cpu"]["machine_busy_pct"],
                "chunk_rows_per_1k_tokens": step["storage"]["chunk_rows_per_1k_tokens"],
            }
        )
        if ok:
            passed = max(passed, streams)
        else:
            failed = streams if failed is None else min(failed, streams)
        streams = next_load(passed, failed, config.capacity_max)
    return {
        "criterion": f"p99 < {config.capacity_p99_ms:g} ms, first-token p99 <= {FIRST_TOKEN_P99_MS:g} ms, nothing lost",
        "tabs": config.tabs,
        "tokens_per_second": config.tokens_per_second,
        "max_streams": passed,
        "first_failing_streams": failed,
        # False when the time budget ran out before the search did.
        "complete": streams is None,
        "steps": steps,
    }
