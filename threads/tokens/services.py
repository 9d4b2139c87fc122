"""Writes of API tokens: make one (for an operator or for oneself) and revoke one."""

import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from streaming.broadcast import publish_access_revoked_on_commit
from streaming.errors import NotFound

from ..limits import refuse_if_too_frequent
from ..models import ApiToken
from .selectors import hash_secret, token_group_name

TOKEN_PREFIX = "chs_"


def api_token_create(*, user: User, name: str) -> tuple[ApiToken, str]:
    """Make a token for `user` and return it with its secret, which is not stored and cannot be shown again."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name.strip() or "API token", hashed_token=hash_secret(secret))
    return token, secret


def api_token_create_for_self(*, user: User, name: str) -> tuple[ApiToken, str]:
    """Make a token a person asked for themselves: past API_TOKENS_PER_HOUR, RateLimited.

    Operators (`manage.py apitoken create`) are not limited: they may provision many at once.
    """
    with transaction.atomic():
        # Lock the person's row, so that two requests at once count one after the other.
        get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
        refuse_if_too_frequent(
            recent=ApiToken.objects.filter(user=user),
            limit=settings.API_TOKENS_PER_HOUR,
            window=timedelta(hours=1),
            what="API tokens an hour",
        )
        return api_token_create(user=user, name=name)


def api_token_revoke(*, user: User, token_id: int) -> ApiToken:
    """Revoke one of the user's tokens (again is harmless); another user's answers NotFound."""
    token = ApiToken.objects.filter(pk=token_id, user_id=user.pk).first()
    if token is None:
        raise NotFound("No such token.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        publish_access_revoked_on_commit(token_group_name(token.id))  # streams opened with it end
    return token
