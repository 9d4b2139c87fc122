"""Security headers on pages and API answers, secure cookies, and the secret key a web process needs."""

import os
import subprocess
import sys

import pytest
from django.conf import settings


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
