"""A web process running the inline worker hands its replies over at once when it is stopped."""

import asyncio
import os
import signal
import subprocess
import time
from urllib.parse import quote

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from chatsite.bench.topology import free_port
from chatsite.management.commands.runcluster import procfile_command
from streaming.models import Chunk, Generation
from streaming.worker import StreamWorker
from threads.models import Message
from threads.services import message_post, thread_create

from .chaos_cluster import async_wait_until
from .live_server import REPO, wait_until_answering

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

LEASE_SECONDS = 15
HANDOVER_LIMIT_SECONDS = 5
STOP_TIMEOUT_SECONDS = 20


def database_url_of_tests() -> str:
    """Return a URL to the test database, for a process started by the test."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "") + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def web_process(tmp_path):
    """Start the Procfile's web command with the inline worker on, a slow scripted reply pace and the lease at 15 s."""
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "CHAT_PROVIDER")}
    environment |= {
        "DATABASE_URL": database_url_of_tests(),
        "STREAM_INLINE_WORKER": "on",
        "STREAM_WORKER_POLL_SECONDS": "0.2",
        "GENERATION_LEASE_SECONDS": str(LEASE_SECONDS),
        "SCRIPTED_TOKENS_PER_SECOND": "5",
        "SCRIPTED_REPLY_TOKENS": "400",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "web.log"
    argv = procfile_command("web", PORT=port) + ["--bind", "127.0.0.1"]
    with log.open("w") as output:
        process = subprocess.Popen(argv, cwd=REPO, env=environment, stdout=output, stderr=subprocess.STDOUT)
    try:
        # The first request starts the inline worker (daphne has no lifespan events to start it earlier).
        wait_until_answering(f"http://127.0.0.1:{port}", process, log, path="/healthz")
        yield process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_sigterm_hands_the_inline_workers_replies_over(web_process, make_user):
    """SIGTERM releases a streaming reply's lease at once, and another worker finishes the reply."""
    process, log = web_process
    user = await database_sync_to_async(make_user)("shutdown")
    thread = await database_sync_to_async(thread_create)(owner=user, title="Shutdown")
    posted = await database_sync_to_async(message_post)(thread=thread, content="Go on slowly", client_id=None)
    generation = Generation.objects.filter(message_id=posted.reply.id)

    async def streaming_in_the_web_process() -> bool:
        row = await generation.aget()
        text = Chunk.objects.filter(message_id=posted.reply.id, kind=Chunk.Kind.DELTA)
        return row.status == Generation.Status.RUNNING and f":{process.pid}:" in row.worker and await text.aexists()

    await async_wait_until(streaming_in_the_web_process, 20, "the web process's inline worker to stream the reply")
    process.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    exit_code = await asyncio.to_thread(process.wait, STOP_TIMEOUT_SECONDS)
    released = await generation.aget()
    assert exit_code == 0, log.read_text()
    assert time.monotonic() - stopped_at < HANDOVER_LIMIT_SECONDS, "stopped at once, not after the lease"
    assert (released.status, released.worker, released.lease_expires_at) == (Generation.Status.QUEUED, "", None)
    assert "handed generation" in log.read_text()

    worker = StreamWorker(name="after-shutdown")
    running = asyncio.create_task(worker.run())
    try:

        async def ended() -> Message | None:
            reply = await Message.objects.aget(pk=posted.reply.id)
            return reply if reply.status != Message.Status.STREAMING else None

        reply = await async_wait_until(ended, 60, "the other worker to finish the reply")
    finally:
        worker.stop()
        await asyncio.wait_for(running, 10)
    finished = await generation.aget()
    assert reply.status == Message.Status.COMPLETE and reply.content
    assert (finished.attempts, finished.worker) == (2, "after-shutdown")
