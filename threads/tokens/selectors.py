"""Reads of API tokens: authenticate a secret, check a token still holds, and the grant of a stream it opened."""

import hashlib
from datetime import timedelta
from functools import partial

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from streaming.subscription import AccessGrant

from ..models import ApiToken

# last_used_at is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_secret(secret: str) -> str:
    """Return the sha256 a token's secret is stored and looked up by."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _valid_tokens() -> QuerySet[ApiToken]:
    """Return the tokens that authenticate: not revoked, and their user still active."""
    return ApiToken.objects.filter(revoked_at__isnull=True, user__is_active=True)


def api_token_list(*, user: User) -> QuerySet[ApiToken]:
    """Return every token of `user`, revoked ones too."""
    return ApiToken.objects.filter(user=user)


def api_token_authenticate(*, secret: str) -> ApiToken | None:
    """Return the valid token a secret names, with its user, or None for an unknown or revoked one."""
    token = _valid_tokens().select_related("user").filter(hashed_token=hash_secret(secret)).first()
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def api_token_is_valid(*, token_id: int) -> bool:
    """Return whether a token still authenticates: a stream opened with it asks this now and then."""
    return _valid_tokens().filter(pk=token_id).exists()


def token_group_name(token_id: int) -> str:
    """Return the channel-layer group of the streams opened with an API token."""
    return f"token.{token_id}"


def api_token_grant(token_id: int | None) -> AccessGrant | None:
    """Return the grant a stream opened with API token `token_id` holds: it ends when the token is revoked."""
    if token_id is None:
        return None
    return AccessGrant(
        group=token_group_name(token_id),
        still_valid=partial(api_token_is_valid, token_id=token_id),
        detail="The API token was revoked.",
    )


def request_api_token_id(request: HttpRequest) -> int | None:
    """Return the id of the API token that authenticated `request`, or None (a session, or nobody)."""
    return getattr(request, "api_token_id", None)
