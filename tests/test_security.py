"""Security headers on pages and API answers, secure cookies, the secret key a web process needs, and hostile frames."""

import os
import subprocess
import sys
import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from threads.models import Message, Thread


@pytest.mark.parametrize("path", ["/", "/accounts/login/", "/api/threads"])
def test_security_headers(client, user, path):
    """Every answer forbids inline script, framing and MIME sniffing, and limits the referrer."""
    client.force_login(user)
    response = client.get(path)
    policy = response["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_sign_in_sets_secure_cookie_and_hsts_outside_debug(client, user):
    """Outside debug (as the test run is) signing in sets a Secure session cookie; HTTPS answers carry HSTS."""
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-for-tests-only"}, secure=True)
    assert response.status_code == 302
    assert response.cookies["sessionid"]["secure"]
    assert "max-age=31536000" in response["Strict-Transport-Security"]


def _run_without_secret_key(*args: str) -> subprocess.CompletedProcess:
    """Run `python *args` in the project, outside debug and with no DJANGO_SECRET_KEY."""
    environment = {
        name: value for name, value in os.environ.items() if name not in ("DJANGO_SECRET_KEY", "DJANGO_DEBUG")
    }
    return subprocess.run(
        [sys.executable, *args], cwd=settings.BASE_DIR, env=environment, capture_output=True, text=True, timeout=60
    )


def test_commands_that_sign_nothing_run_without_a_secret_key():
    """`check` and `makemigrations --check` need no secret key: operators and CI run them anywhere."""
    for command in (["check"], ["makemigrations", "--check", "--dry-run"]):
        ran = _run_without_secret_key("manage.py", *command)
        assert ran.returncode == 0, ran.stderr


def test_a_web_process_refuses_to_start_without_a_secret_key():
    """Loading the ASGI application without DJANGO_SECRET_KEY (outside debug) fails at once, naming the variable."""
    ran = _run_without_secret_key("-c", "import chatsite.asgi")
    assert ran.returncode != 0
    assert "Set the DJANGO_SECRET_KEY environment variable" in ran.stderr


@pytest.mark.django_db(transaction=True)
async def test_a_write_to_a_thread_deleted_without_notice_closes_4404(connect, thread, user):
    """A send to a thread deleted meanwhile, its notice lost (I2), closes the socket 4404 and writes nothing."""
    socket = await connect(thread.id, user)
    await socket.receive_until(lambda frame: frame["type"] == "ready")
    # A plain delete publishes no notice: only the write can find the thread gone.
    await database_sync_to_async(Thread.objects.filter(pk=thread.id).delete)()
    await socket.send({"type": "send", "content": "hello", "client_id": str(uuid.uuid4())})
    assert await socket.close_code() == 4404
    assert not await Message.objects.aexists()
