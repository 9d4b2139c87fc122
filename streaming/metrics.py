"""Every Prometheus metric of chatsite, defined once; `chatsite.metrics` serves them at /metrics.

Counters and histograms are updated where things happen, in one line each. Figures that
the database already holds (generations queued, running or awaiting approval) are read
when a scraper asks, so every web process reports the same cluster-wide count.

Several processes on one host (web processes, stream workers) share their figures through
prometheus-client's multi-process mode: set PROMETHEUS_MULTIPROC_DIR to a directory that
is empty when they start, and any web process on the host serves the sum of them all.
Without it, a process serves its own figures only.
"""

import os
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

# A reply's first text lands within a flush of its provider's first token; a slow model takes seconds.
FIRST_TOKEN_BUCKETS_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
TOKEN_RATE_BUCKETS = (1, 5, 10, 20, 30, 40, 50, 75, 100, 150, 200, 400)
# A round is one transaction every STREAM_FLUSH_MS (40 ms by default) at most.
ROUND_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

# A reply held for a person's approval of a tool call before it goes on.
AWAITING_APPROVAL = "awaiting_approval"
# Generation statuses reported from the database.
REPORTED_GENERATION_STATUSES = ("queued", "running", AWAITING_APPROVAL)

OPEN_STREAMS = Gauge(
    "chatsite_open_streams",
    "WebSockets and event streams open (each holds a person's stream slot).",
    multiprocess_mode="livesum",
)
ACTIVE_REPLIES = Gauge(
    "chatsite_worker_active_replies",
    "Replies the worker loops of these processes are writing now.",
    multiprocess_mode="livesum",
)
TIME_TO_FIRST_TOKEN = Histogram(
    "chatsite_time_to_first_token_seconds",
    "From a worker's claim of a reply to the commit of its first text.",
    buckets=FIRST_TOKEN_BUCKETS_SECONDS,
)
TOKEN_RATE = Histogram(
    "chatsite_reply_output_tokens_per_second",
    "Output tokens per second of a completed reply, from its first committed text to its end.",
    buckets=TOKEN_RATE_BUCKETS,
)
REPLIES_ENDED = Counter("chatsite_replies_ended", "Replies ended, by status.", ["status"])
ROUND_SECONDS = Histogram(
    "chatsite_commit_round_seconds",
    "One group-commit round: its transaction, then handing its publish off.",
    buckets=ROUND_BUCKETS_SECONDS,
)
TICK_LATENESS_SECONDS = Histogram(
    "chatsite_commit_tick_lateness_seconds",
    "How long after its flush tick was due a round of text began: the worker's database thread was busy.",
    buckets=ROUND_BUCKETS_SECONDS,
)
COMMIT_SECONDS = Histogram(
    "chatsite_commit_transaction_seconds",
    "A round's database transaction, retries while the database is unreachable included.",
    buckets=ROUND_BUCKETS_SECONDS,
)
CHANNEL_LAYER_DROPS = Counter(
    "chatsite_channel_layer_dropped_messages",
    "Messages dropped because a subscriber's local queue was full (its subscriber repairs from the database).",
)
SLOW_CLIENT_CLOSES = Counter(
    "chatsite_slow_client_closes",
    "Clients closed for not reading (WebSocket close 4008, event stream dropped), by transport.",
    ["transport"],
)
WEBSOCKET_FRAMES = Counter(
    "chatsite_websocket_frames",
    "Frames sent by the web server's send_frame: framed for this send (`built`), or as framed before (`reused`).",
    ["framing"],
)
PROVIDER_ERRORS = Counter(
    "chatsite_provider_errors",
    "Provider requests that failed or streams that broke, by provider and code (HTTP status or error type).",
    ["provider", "code"],
)
TAKEOVERS = Counter(
    "chatsite_generation_takeovers",
    "Generations claimed again: handed over by a stopping worker, or left by one whose lease expired.",
)


class GenerationStatusCollector:
    """Report the generations in each of REPORTED_GENERATION_STATUSES, counted in the database at scrape time."""

    def collect(self) -> Iterator[Metric]:
        # Imported here: the web process imports this module before Django sets up its models.
        from .selectors import generation_status_counts

        counts = generation_status_counts(statuses=REPORTED_GENERATION_STATUSES)
        generations = GaugeMetricFamily(
            "chatsite_generations", "Generations in the database, by status (cluster-wide).", labels=["status"]
        )
        for status in REPORTED_GENERATION_STATUSES:
            generations.add_metric([status], counts.get(status, 0))
        yield generations
        yield GaugeMetricFamily(
            "chatsite_replies_awaiting_approval",
            "Replies waiting for a person's approval before they go on (cluster-wide).",
            value=counts.get(AWAITING_APPROVAL, 0),
        )


class Scrape:
    """What one scrape reports: this host's processes' metrics, then the database's counts."""

    def __init__(self) -> None:
        self.collectors: list = [_process_metrics(), GenerationStatusCollector()]

    def collect(self) -> Iterable[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _process_metrics():
    """Return the collector of the metrics above: every process on the host in multi-process mode, else this one."""
    if _multiprocess_dir():
        return multiprocess.MultiProcessCollector(None)
    return REGISTRY


def process_exited() -> None:
    """Forget this process's live gauges (open streams, active replies) in multi-process mode, as it exits."""
    if _multiprocess_dir():
        multiprocess.mark_process_dead(os.getpid())
