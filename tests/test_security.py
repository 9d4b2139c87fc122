"""Security headers on pages and API answers."""
import pytest


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
