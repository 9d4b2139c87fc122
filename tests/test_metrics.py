"""GET /metrics: off unless configured, let in by token or network, and counting what happens."""

import asyncio
import base64
import json
import re
import uuid
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from streaming.layers import BoundedQueue
from streaming.models import Generation
from streaming.services.claims import generation_claim_many
from streaming.services.endings import generation_cancel
from streaming.worker import StreamWorker
from threads.services import message_post, thread_create

from .anthropic_mock import MockResponse, mock_api  # noqa: F401
from .chaos_cluster import async_wait_until
from .conftest import RECEIVE_TIMEOUT_S
from .test_logging import runs_finished

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "a-metrics-token-for-tests"


def basic_auth(password: str, user: str = "prometheus") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def sample(name: str, **labels: str) -> float:
    """Return a sample of this process's registry, 0 when it was never set."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(response) -> dict[tuple[str, tuple], float]:
    """Parse a /metrics answer into {(sample name, sorted labels): value}."""
    assert response.status_code == 200, response.content
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_metrics_are_off_unless_configured(client, settings):
    """With neither a token nor a network configured, /metrics does not exist."""
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", []
    assert client.get("/metrics").status_code == 404


def test_metrics_need_the_token(client, settings):
    """With a token set, a scrape without it or with a wrong one is refused; with it, it is served."""
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = TOKEN, []
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=basic_auth("wrong")).status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION=basic_auth(TOKEN))
    assert response["Content-Type"].startswith("text/plain; version=")
    assert ("chatsite_replies_awaiting_approval", ()) in scraped(response)


def test_metrics_need_an_allowed_network(client, settings):
    """With networks set, only addresses inside them are served; with a token too, both must pass."""
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 403
    scraped(client.get("/metrics", REMOTE_ADDR="10.1.2.3"))
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7", HTTP_AUTHORIZATION=basic_auth(TOKEN)).status_code == 403
    scraped(client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION=basic_auth(TOKEN)))


def test_generation_gauges_count_the_database(client, settings, user):
    """Queued, running and awaiting-approval generations are counted from their rows at scrape time."""
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = TOKEN, []
    client.force_login(user)
    statuses = ["queued", "running", "awaiting_approval"]
    for status in statuses:
        thread = thread_create(owner=user, title=status)
        client.post(f"/api/threads/{thread.id}/messages", {"content": "Hi"}, content_type="application/json")
        Generation.objects.filter(message__thread=thread).update(status=status)
    values = scraped(client.get("/metrics", HTTP_AUTHORIZATION=basic_auth(TOKEN)))
    for status in statuses:
        assert values[("chatsite_generations", (("status", status),))] == 1
    assert values[("chatsite_replies_awaiting_approval", ())] == 1
    Generation.objects.update(status=Generation.Status.DONE)
    values = scraped(client.get("/metrics", HTTP_AUTHORIZATION=basic_auth(TOKEN)))
    assert values[("chatsite_replies_awaiting_approval", ())] == 0


async def test_a_reply_is_counted(thread, user, connect, worker):
    """A streamed reply counts an open stream while connected, its first token, rounds, commits and its end."""
    before = {
        "ttft": sample("chatsite_time_to_first_token_seconds_count"),
        "rate": sample("chatsite_reply_output_tokens_per_second_count"),
        "rounds": sample("chatsite_commit_round_seconds_count"),
        "commits": sample("chatsite_commit_transaction_seconds_count"),
        "ended": sample("chatsite_replies_ended_total", status="complete"),
        "streams": sample("chatsite_open_streams"),
    }
    socket = await connect(thread.id, user)
    await socket.receive_until(lambda frame: frame["type"] == "ready")
    assert sample("chatsite_open_streams") == before["streams"] + 1
    await socket.send({"type": "send", "content": "Count me", "client_id": str(uuid.uuid4())})
    await socket.receive_until(lambda frame: frame["type"] == "end")
    await runs_finished(worker)  # a run counts its end once the `end` event is out
    assert sample("chatsite_time_to_first_token_seconds_count") == before["ttft"] + 1
    assert sample("chatsite_reply_output_tokens_per_second_count") == before["rate"] + 1
    assert sample("chatsite_replies_ended_total", status="complete") == before["ended"] + 1
    assert sample("chatsite_commit_round_seconds_count") >= before["rounds"] + 2  # its text, then its end
    assert sample("chatsite_commit_transaction_seconds_count") >= before["commits"] + 2
    assert sample("chatsite_worker_active_replies") == 0
    await socket.disconnect()
    assert sample("chatsite_open_streams") == before["streams"]


async def test_provider_errors_are_counted_by_code(thread, user, connect, worker, settings, mock_api):  # noqa: F811
    """A request the API refuses counts one provider error under its HTTP status."""
    settings.CHAT_PROVIDER = "anthropic"
    before = sample("chatsite_provider_errors_total", provider="anthropic", code="401")
    mock_api.script(MockResponse(status=401, message="invalid x-api-key"))
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "Hi"})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "failed"
    assert sample("chatsite_provider_errors_total", provider="anthropic", code="401") == before + 1


def test_channel_layer_drops_are_counted():
    """Each message a full channel queue drops counts once."""
    before = sample("chatsite_channel_layer_dropped_messages_total")
    queue = BoundedQueue("specific.test", capacity=2)
    for number in range(5):
        queue.put_nowait({"n": number})
    assert sample("chatsite_channel_layer_dropped_messages_total") == before + 3


async def test_takeovers_are_counted(thread, user, client):
    """A generation claimed again after an earlier attempt counts as a takeover."""
    before = sample("chatsite_generation_takeovers_total")
    await database_sync_to_async(client.force_login)(user)
    response = await database_sync_to_async(client.post)(
        f"/api/threads/{thread.id}/messages", {"content": "Take me over"}, content_type="application/json"
    )
    assert response.status_code == 202, response.content
    # As a worker that handed it over on its way out leaves it: queued, one attempt made.
    await Generation.objects.filter(status=Generation.Status.QUEUED).aupdate(attempts=1)
    worker = StreamWorker(name="taking-over")
    running = asyncio.create_task(worker.run())
    try:
        await async_wait_until(
            lambda: sample("chatsite_generation_takeovers_total") > before, RECEIVE_TIMEOUT_S, "the takeover"
        )
    finally:
        worker.stop()
        await asyncio.wait_for(running, RECEIVE_TIMEOUT_S)
    assert sample("chatsite_generation_takeovers_total") == before + 1


def test_the_example_dashboard_names_only_metrics_that_exist(client, settings):
    """Every metric docs/grafana-dashboard.json queries is one /metrics serves."""
    dashboard = json.loads((Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json").read_text())
    queried = {
        re.sub(r"_(bucket|count|sum|total)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"chatsite_\w+", target["expr"])
    }
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = TOKEN, []
    response = client.get("/metrics", HTTP_AUTHORIZATION=basic_auth(TOKEN))
    families = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert len(queried) >= 10 and queried <= families, queried - families


@pytest.mark.django_db
def test_replies_no_worker_ends_are_counted_once_committed(thread, settings, django_capture_on_commit_callbacks):
    """Failed `interrupted` at a claim (out of attempts) and cancelled while queued count as a run's ends do."""
    failed_before = sample("chatsite_replies_ended_total", status="failed")
    cancelled_before = sample("chatsite_replies_ended_total", status="cancelled")
    with django_capture_on_commit_callbacks(execute=True):
        posted = message_post(thread=thread, content="Out of attempts", client_id=None)
        # As workers that died with it left it: every attempt used.
        Generation.objects.filter(message_id=posted.reply.id).update(attempts=settings.GENERATION_MAX_ATTEMPTS)
        assert generation_claim_many(worker="w", model="scripted", limit=10) == []
    assert sample("chatsite_replies_ended_total", status="failed") == failed_before + 1
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        message_post(thread=thread, content="Never mind", client_id=None)
        generation_cancel(thread=thread)
    assert sample("chatsite_replies_ended_total", status="cancelled") == cancelled_before, "not before the commit"
    for callback in callbacks:
        callback()
    assert sample("chatsite_replies_ended_total", status="cancelled") == cancelled_before + 1


def test_a_network_that_is_none_is_refused_at_startup(settings):
    """An entry of METRICS_ALLOWED_NETWORKS that is no network stops `check` (and so `release`), not each scrape."""
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
    call_command("check")
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8", "10.0.0.300/8"]
    with pytest.raises(SystemCheckError, match=r"chatsite.E001.*'10.0.0.300/8' is no IP network"):
        call_command("check")
