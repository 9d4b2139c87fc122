"""streambench runs end to end at a tiny size: its report is complete and nothing was lost (speed is never asserted)."""

import asyncio
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.core.management import call_command

from chatsite.bench.model_api import ModelApi
from chatsite.bench.report import LOSS
from chatsite.bench.stamps import token_latencies_ms
from chatsite.bench.tasks import reply_cycle
from streaming.providers import ReplyEnd, ReplyRequest, TextDelta, Turn
from streaming.providers.anthropic import AnthropicProvider

pytestmark = [
    pytest.mark.timeout(170),
    # The embedded topology brings its own SQLite file and in-memory layer, whatever the suite runs on: once is enough.
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="runs in the embedded pass only"
    ),
]


def tiny_embedded_run(tmp_path, *arguments: str) -> dict:
    """Run streambench embedded, 2 streams × 2 tabs of 20-token replies, with `arguments`; return its report."""
    output = tmp_path / "report.json"
    call_command(
        "streambench",
        "--topology=embedded", "--streams=2", "--tabs=2", "--tokens-per-second=50", "--reply-tokens=20",
        "--duration=3", "--warmup=0.5", *arguments, f"--output={output}", f"--log-dir={tmp_path / 'logs'}",
        stdout=io.StringIO(),
    )  # fmt: skip
    return json.loads(output.read_text())


def nothing_lost(load: dict) -> bool:
    """Whether every tab got every event once and in order, with no reset."""
    return {name: load["correctness"][name] for name in (*LOSS, "resets")} == dict.fromkeys((*LOSS, "resets"), 0)


def test_streambench_reports_every_figure_with_nothing_lost_duplicated_or_reordered(tmp_path):
    """A tiny embedded run delivers every event to every tab once and in order, and reports every phase."""
    report = tiny_embedded_run(
        tmp_path,
        "--phases=idle,resume,page,load,floor,capacity",
        "--idle-sockets=5", "--resume-log-events=600", "--resume-repeats=2", "--page-messages=20", "--page-runs=2",
        "--capacity-start=2", "--capacity-max=2", "--capacity-step-duration=3", "--capacity-budget=120",
    )  # fmt: skip

    load = report["load"]
    assert nothing_lost(load)
    assert load["correctness"]["replies"] >= 2
    assert load["latency_ms"]["samples"] > 0 and load["first_token_ms"]["samples"] > 0
    assert load["delivered"]["events_per_s"] > 0 and load["delivered"]["tokens_per_s"] > 0
    assert load["storage"]["chunk_rows_per_1k_tokens"] > 0
    cycle = load["reply_cycle_ms"]
    assert cycle["queued_to_claimed"]["samples"] >= load["correctness"]["replies"]
    assert cycle["claimed_to_first_text"]["samples"] >= load["correctness"]["replies"]
    # Every reply but each stream's last (of 2 streams) was followed by its sender's next message.
    assert cycle["ended_to_next_send"]["samples"] >= load["correctness"]["replies"] - 2
    # Finished replies keep fewer rows than streaming wrote: their deltas were compacted.
    assert load["storage"]["chunk_rows_written_per_1k_tokens"] > load["storage"]["chunk_rows_per_1k_tokens"]
    assert load["channel_layer"]["group_sends_per_1k_tokens"] > 0
    assert load["cpu"]["app_s_per_1k_delivered_tokens"] is not None
    assert load["cpu"]["web_us_per_frame"] > 0
    floor = report["floor"]
    assert floor["sockets"] == 4 and floor["frames_per_s"] > 0 and floor["server_us_per_frame"] > 0
    assert [case["missed"] for case in report["resume"]["long_log"]["cases"]] == [0, 100]
    assert all(case["events_sent"] == case["missed"] for case in report["resume"]["long_log"]["cases"])
    assert report["page"]["messages"] == 20 and report["page"]["page_ms"]["runs"] == 2
    assert report["idle"]["sockets"] == 5 and report["idle"]["failed"] == 0
    assert report["peak_memory"]["by_process_mib"]["web-0"] > 0
    # The search starts at 2 streams; whether a step passes is speed, which this test never asserts.
    steps = report["capacity"]["steps"]
    assert steps[0]["streams"] == 2 and all(step["streams"] <= 2 for step in steps)
    assert not any(step["correctness"][name] for step in steps for name in LOSS)
    assert report["crashed_processes"] == []
    assert {target["target"].split(" (")[0] for target in report["targets"]} >= {
        "zero loss at every load",
        "memory per idle WebSocket",
    }


def test_streambench_runs_the_anthropic_provider_against_its_stand_in_of_the_api(tmp_path):
    """With `--provider anthropic` every token goes through the SDK, and the stand-in's CPU is reported apart."""
    report = tiny_embedded_run(tmp_path, "--provider=anthropic", "--phases=load")

    load = report["load"]
    assert report["config"]["provider"] == "anthropic"
    assert nothing_lost(load)
    assert load["correctness"]["replies"] >= 2 and load["latency_ms"]["samples"] > 0
    assert load["cpu"]["model_api_s"] > 0 and "model-api" not in load["cpu"]["by_process_s"]
    assert report["crashed_processes"] == []


@pytest.fixture
async def model_api(settings):
    """The stand-in on a free port, five tokens a reply, fast."""
    server = await asyncio.start_server(ModelApi(reply_tokens=5, tokens_per_second=1000).handle, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    settings.ANTHROPIC_BASE_URL = f"http://{host}:{port}"
    settings.ANTHROPIC_API_KEY = "bench-key"
    settings.ANTHROPIC_MODEL = "bench-model"
    async with server:
        yield


@pytest.mark.parametrize(("partial", "streamed"), [("", 5), (" 101 102", 3)], ids=["new reply", "continuation"])
async def test_the_stand_in_streams_stamped_tokens_the_reply_lacks(model_api, partial, streamed):
    """The provider reads the reply's tokens, each stamped with the time it was due; a continuation gets the rest."""
    request = ReplyRequest(turns=[Turn("user", "Go")], partial=partial)
    events = [event async for event in AnthropicProvider().stream(request)]

    texts = [event.text for event in events if isinstance(event, TextDelta)]
    assert len(texts) == streamed and all(len(token_latencies_ms(text)) == 1 for text in texts)
    assert max(token_latencies_ms("".join(texts))) < 60_000, "each stamp is a moment of this run"
    assert events[-1] == ReplyEnd(stop_reason="end_turn", input_tokens=1, output_tokens=streamed)


def test_a_replys_cycle_is_measured_from_its_generations_timestamps():
    """Per thread, in the order sent: sent to claimed, claimed to first text, ended to the next send."""
    start = datetime(2026, 12, 5, tzinfo=UTC)

    def at(ms: float) -> datetime:
        return start + timedelta(milliseconds=ms)

    one, other = uuid.uuid4(), uuid.uuid4()
    cycle = reply_cycle(
        [
            (one, at(0), at(10), at(70), at(4100)),
            (one, at(4160), at(4180), at(4240), at(8300)),
            (other, at(5), at(25), None, at(30)),  # ended before any text
            (other, at(100), None, None, None),  # cancelled before a worker took it
        ]
    )

    assert [cycle["queued_to_claimed"][key] for key in ("samples", "p50", "max")] == [3, 20.1, 20.1]
    assert [cycle["claimed_to_first_text"][key] for key in ("samples", "p50", "max")] == [2, 60.1, 60.1]
    assert [cycle["ended_to_next_send"][key] for key in ("samples", "p50", "max")] == [2, 60.1, 70.1]
