"""LOG_FORMAT=json: one JSON object a line, with the fields the plain format writes as key=value."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from chatsite.logformat import JsonFormatter
from threads.services import message_post

from .test_logging import runs_finished

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.django_db(transaction=True)
async def test_generation_lines_keep_their_fields_as_json(thread, user, connect, worker, caplog):
    """Each generation line becomes an object with its event, ids and figures, and the plain text as `message`."""
    caplog.set_level(logging.INFO, logger="streaming.generation")
    socket = await connect(thread.id, user)
    posted = await database_sync_to_async(message_post)(thread=thread, content="Hello", client_id=None)
    await socket.receive_until(lambda frame: frame["type"] == "end")
    await runs_finished(worker)
    records = [record for record in caplog.records if record.name == "streaming.generation"]
    lines = [json.loads(JsonFormatter().format(record)) for record in records]
    assert [line["event"] for line in lines] == ["generation.start", "generation.first_token", "generation.end"]
    end = lines[-1]
    assert end["message"] == records[-1].getMessage()
    assert (end["level"], end["logger"]) == ("INFO", "streaming.generation")
    assert (end["thread"], end["message_id"], end["attempt"]) == (str(thread.id), str(posted.reply.id), 1)
    assert end["status"] == "complete" and end["stop_reason"] == "end_turn" and end["chunks"] >= 1
    # Every key=value of the plain line is a field of the object (message= as message_id).
    for pair in end["message"].split()[1:]:
        name, _, value = pair.partition("=")
        assert str(end["message_id" if name == "message" else name]) == value


def test_log_format_json_is_what_the_processes_write():
    """A process started with LOG_FORMAT=json writes its log lines as JSON objects."""
    code = "import logging; logging.getLogger('chatsite.check').warning('disk at %d%%', 91)"
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=REPO,
        env={**os.environ, "LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (line,) = [json.loads(line) for line in done.stderr.splitlines() if "chatsite.check" in line]
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "chatsite.check", "disk at 91%")
