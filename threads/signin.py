"""Sign-in throttling: wrong passwords are counted per (account, address) and per address, with a cool-off.

Counting per account alone would let anyone lock a person out by guessing wrong on their
name; so an account is throttled only from the addresses that guessed wrong (at most
SIGNIN_FAILURES_PER_ACCOUNT_AND_ADDRESS each), and an address, whatever names it tries,
at SIGNIN_FAILURES_PER_ADDRESS. Nothing locks for good: failures older than
SIGNIN_COOLOFF_SECONDS count for nothing, and a right password clears its pair's count.
Throttled, even the right password is refused, with a message saying when to try again.
"""

import math
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest
from django.utils import timezone

from .models import SignInFailure


def client_address(request: HttpRequest | None) -> str:
    """Return the address a request comes from: behind a proxy, the one it saw (chatsite/forwarded.py)."""
    return (request.META.get("REMOTE_ADDR") if request is not None else None) or "0.0.0.0"


def signin_retry_after(*, username: str, address: str) -> int | None:
    """Return the seconds until `username` may try again from `address`, or None when it may now."""
    now = timezone.now()
    window = timedelta(seconds=settings.SIGNIN_COOLOFF_SECONDS)
    recent = SignInFailure.objects.filter(address=address, created_at__gte=now - window).order_by("-created_at")
    limits = [
        (recent, settings.SIGNIN_FAILURES_PER_ADDRESS),
        (recent.filter(username=username.lower()), settings.SIGNIN_FAILURES_PER_ACCOUNT_AND_ADDRESS),
    ]
    waits = []
    for failures, limit in limits:
        # The limit-th newest failure inside the window: it leaves the window when the throttle lifts.
        at_limit = list(failures.values_list("created_at", flat=True)[limit - 1 : limit])
        if at_limit:
            waits.append(max(1, math.ceil((at_limit[0] + window - now).total_seconds())))
    return max(waits, default=None)


def signin_failure_record(*, username: str, address: str) -> None:
    """Count a wrong password; failures past the cool-off are dropped here, so the table stays small."""
    now = timezone.now()
    SignInFailure.objects.filter(created_at__lt=now - timedelta(seconds=settings.SIGNIN_COOLOFF_SECONDS)).delete()
    SignInFailure.objects.create(username=username.lower()[:150], address=address, created_at=now)


def signin_success_record(*, username: str, address: str) -> None:
    """Forget the pair's failures: the person knows their password."""
    SignInFailure.objects.filter(username=username.lower(), address=address).delete()


class ThrottledSignInMixin(AuthenticationForm):
    """An authentication form that refuses throttled attempts before checking the password, and counts failures."""

    # Seconds to wait, when the last attempt was refused for throttling; the view answers 429 with it.
    retry_after: int | None = None

    def clean(self) -> dict:
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request)
        self.retry_after = signin_retry_after(username=username, address=address)
        if self.retry_after is not None:
            minutes = math.ceil(self.retry_after / 60)
            unit = "minutes" if minutes > 1 else "minute"
            raise forms.ValidationError(
                f"Too many failed sign-ins from your address: try again in {minutes} {unit}.", code="throttled"
            )
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            signin_failure_record(username=username, address=address)
            raise
        signin_success_record(username=username, address=address)
        return cleaned


class ThrottledAuthenticationForm(ThrottledSignInMixin, AuthenticationForm):
    """The sign-in page's form."""


class ThrottledAdminAuthenticationForm(ThrottledSignInMixin, AdminAuthenticationForm):
    """The admin's sign-in form: a second door to the same accounts."""
