"""Who may make an account: CHAT_SIGNUP is `open` (anyone), `closed` (operators make accounts) or `invite`.

Every per-person limit (sends, threads, streams, tokens) is per account, so open sign-up
multiplies them by the accounts one person cares to make. With `invite`, an operator or
staff member makes single-use codes (`manage.py invite`), stored as their sha256 like API
tokens, and the sign-up form asks for one; a code is spent in the transaction that makes
the account, so two sign-ups cannot share it.
"""

import hashlib
import secrets

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from .models import Invite

SIGNUP_MODES = ("open", "closed", "invite")
INVITE_PREFIX = "inv_"


def signup_mode() -> str:
    """Return CHAT_SIGNUP, checked: a typo must not open sign-up."""
    mode = settings.CHAT_SIGNUP
    if mode not in SIGNUP_MODES:
        raise ImproperlyConfigured(f"CHAT_SIGNUP must be one of {', '.join(SIGNUP_MODES)}, not {mode!r}.")
    return mode


def hash_code(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


def invite_create(*, created_by: User | None) -> str:
    """Make a single-use invite and return its code, which is not stored and cannot be shown again."""
    code = INVITE_PREFIX + secrets.token_urlsafe(16)
    Invite.objects.create(hashed_code=hash_code(code), created_by=created_by)
    return code


class SignUpForm(UserCreationForm):
    """Django's sign-up form, asking for an invite code when CHAT_SIGNUP is `invite`."""

    invite = forms.CharField(required=False, max_length=100, help_text="The code you were invited with.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if signup_mode() != "invite":
            del self.fields["invite"]
        else:
            self.fields["invite"].required = True

    def clean_invite(self) -> str:
        code = self.cleaned_data["invite"]
        if not Invite.objects.filter(hashed_code=hash_code(code), used_at__isnull=True).exists():
            raise forms.ValidationError("This invite code is unknown or already used.", code="invalid_invite")
        return code

    def save(self, commit: bool = True) -> User:
        """Make the account, spending the invite in the same transaction (refused if spent meanwhile)."""
        if "invite" not in self.fields:
            return super().save(commit=commit)
        with transaction.atomic():
            user = super().save(commit=True)
            spent = Invite.objects.filter(hashed_code=hash_code(self.cleaned_data["invite"]), used_at__isnull=True)
            if not spent.update(used_by=user, used_at=timezone.now()):
                raise InviteSpent()
        return user


class InviteSpent(Exception):
    """Another sign-up spent the invite between the form's check and this one's save."""
