"""Guessing passwords is throttled per (account, address) and per address, with a cool-off and no lock-out."""

from datetime import timedelta

from django.utils import timezone

from threads.models import SignInFailure

from .live_server import PASSWORD, chat_server  # noqa: F401 - chat_server is a fixture
from .outsider import Visitor


def test_guessing_is_throttled_and_says_so(chat_server):  # noqa: F811
    """30 wrong passwords in a row: from the sixth on, refused with 429 and a clear message, the right one too."""
    chat_server.create_users("guessed")
    visitor = Visitor(chat_server.url)
    answers = [visitor.sign_in("guessed", f"wrong-{attempt}") for attempt in range(30)]
    assert [answer.status for answer in answers[:5]] == [200] * 5  # the form again, "enter a correct…"
    assert {answer.status for answer in answers[5:]} == {429}
    assert "Too many failed sign-ins from your address: try again in 15 minutes." in answers[-1].text
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 15 * 60
    right = visitor.sign_in("guessed", PASSWORD)
    assert right.status == 429 and visitor.cookie("sessionid") is None


def test_the_admin_sign_in_is_throttled_too(chat_server):  # noqa: F811
    """The admin's own sign-in form is no way around the throttle."""
    chat_server.create_users("admin-guessed")
    visitor = Visitor(chat_server.url)
    visitor.request("GET", "/admin/login/")
    for attempt in range(6):
        form = {"username": "admin-guessed", "password": f"no-{attempt}"}
        answer = visitor.request("POST", "/admin/login/", form=form)
    assert "Too many failed sign-ins" in answer.text


def sign_in(client, username: str, password: str, address: str):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_guesses_from_elsewhere_do_not_lock_the_person_out(client, user, settings):
    """An attacker's failures on a person's name do not stop the person signing in from their own address."""
    for attempt in range(settings.SIGNIN_FAILURES_PER_ADDRESS + 5):
        sign_in(client, user.username, f"wrong-{attempt}", "203.0.113.9")
    assert sign_in(client, user.username, "wrong", "203.0.113.9").status_code == 429
    assert sign_in(client, user.username, "pw-for-tests-only", "198.51.100.7").status_code == 302


def test_one_address_is_throttled_across_names(client, make_user, settings):
    """An address that tries many names is throttled at SIGNIN_FAILURES_PER_ADDRESS, whatever the names."""
    for attempt in range(settings.SIGNIN_FAILURES_PER_ADDRESS):
        sign_in(client, f"name-{attempt}", "wrong", "203.0.113.10")
    make_user("fresh")
    assert sign_in(client, "fresh", "pw-for-tests-only", "203.0.113.10").status_code == 429


def test_throttle_lifts_after_the_cool_off(client, user, settings):
    """Failures older than SIGNIN_COOLOFF_SECONDS count for nothing: the throttle is never a permanent lock."""
    for attempt in range(settings.SIGNIN_FAILURES_PER_ACCOUNT_AND_ADDRESS):
        sign_in(client, user.username, f"wrong-{attempt}", "203.0.113.11")
    assert sign_in(client, user.username, "pw-for-tests-only", "203.0.113.11").status_code == 429
    SignInFailure.objects.update(created_at=timezone.now() - timedelta(seconds=settings.SIGNIN_COOLOFF_SECONDS + 1))
    assert sign_in(client, user.username, "pw-for-tests-only", "203.0.113.11").status_code == 302
