"""CHAT_SIGNUP decides who may make an account: open, closed, or with a single-use invite."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse

from threads.models import Invite
from threads.signup import hash_code

PASSWORD = "a-long-test-password"


def sign_up(client, username: str, **extra):
    return client.post(reverse("signup"), {"username": username, "password1": PASSWORD, "password2": PASSWORD, **extra})


def make_invites(count: int = 1) -> list[str]:
    out = io.StringIO()
    call_command("invite", "--count", str(count), stdout=out)
    return out.getvalue().split()


@pytest.mark.django_db
def test_closed_sign_up_makes_no_account(client, settings):
    """With sign-up closed, the form is refused with 403 and a clear page, and the sign-in page offers none."""
    settings.CHAT_SIGNUP = "closed"
    refused = sign_up(client, "walk-in")
    assert refused.status_code == 403 and "Sign-up is closed" in refused.content.decode()
    assert client.get(reverse("signup")).status_code == 403
    assert not get_user_model().objects.filter(username="walk-in").exists()
    assert reverse("signup") not in client.get(reverse("login")).content.decode()


@pytest.mark.django_db
def test_invite_sign_up_needs_a_code_and_spends_it(client, settings):
    """With invites, sign-up without a code or with a made-up one fails; a code makes one account, once."""
    settings.CHAT_SIGNUP = "invite"
    assert sign_up(client, "no-code").status_code == 200
    assert sign_up(client, "made-up", invite="inv_guessed").status_code == 200
    (code,) = make_invites()
    assert sign_up(client, "invited", invite=code).status_code == 302
    client.logout()
    again = sign_up(client, "second", invite=code)
    assert "unknown or already used" in again.content.decode()
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["invited"]
    assert Invite.objects.get().used_by.username == "invited"


@pytest.mark.django_db
def test_invite_codes_are_stored_hashed(settings):
    """`manage.py invite` prints each code once; the database holds only its sha256."""
    codes = make_invites(3)
    assert len(set(codes)) == 3
    stored = set(Invite.objects.values_list("hashed_code", flat=True))
    assert stored == {hash_code(code) for code in codes} and not stored & set(codes)


@pytest.mark.django_db
def test_open_sign_up_needs_no_code(client, settings):
    """Open sign-up (the default) asks for no code."""
    settings.CHAT_SIGNUP = "open"
    assert "invite" not in client.get(reverse("signup")).content.decode()
    assert sign_up(client, "anyone").status_code == 302
