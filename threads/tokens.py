"""API tokens: bearer credentials for clients that are not a browser, on HTTP, SSE and WebSockets.

A token's secret is shown once, when it is made; only its sha256 is stored, so the
database cannot give a usable token away. A request that carries
`Authorization: Bearer <secret>` is authenticated by the token alone: its cookies are
ignored, and it needs no CSRF token, because a browser never attaches that header on
its own to a cross-site request (CSRF protects cookies, which it does attach).

Revoking a token also ends what it opened: its WebSockets close with 4401 and its event
streams end. Each such stream joins the token's channel-layer group, where the revocation
is published after commit, and asks `api_token_is_valid` now and then in case that notice
is lost: the token is the stream's `AccessGrant` (streaming/subscription.py).
"""
import hashlib
import secrets
from datetime import timedelta

from asgiref.sync import iscoroutinefunction, sync_to_async
from channels.db import database_sync_to_async
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.decorators import sync_and_async_middleware
from django.views.decorators.http import require_http_methods, require_POST

from streaming.broadcast import publish_access_revoked_on_commit
from streaming.subscription import AccessGrant

from .api import error_response
from streaming.errors import NotFound, RateLimited
from .models import ApiToken
from .limits import refuse_if_too_frequent

TOKEN_PREFIX = "chs_"
# Tokens are for the chat API only: anywhere else (the admin, pages, the tokens page) a bearer
# request is refused, so a leaked token cannot act as its person's session, staff rights included.
API_PATH_PREFIX = "/api/"
# last_used_at is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_token_create(*, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    """Make a token for `user` and return it with its secret, which is not stored and cannot be shown again."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name.strip() or "API token", hashed_token=hash_secret(secret))
    return token, secret


def api_token_create_for_self(*, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
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


def api_token_revoke(*, user: AbstractBaseUser, token_id: int) -> ApiToken:
    """Revoke one of the user's tokens (again is harmless); another user's answers NotFound."""
    token = ApiToken.objects.filter(pk=token_id, user_id=user.pk).first()
    if token is None:
        raise NotFound("No such token.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        publish_access_revoked_on_commit(token_group_name(token.id))  # streams opened with it end
    return token


def _valid_tokens() -> QuerySet[ApiToken]:
    """Return the tokens that authenticate: not revoked, and their user still active."""
    return ApiToken.objects.filter(revoked_at__isnull=True, user__is_active=True)


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


aapi_token_is_valid = database_sync_to_async(api_token_is_valid)


def api_token_grant(token_id: int | None) -> AccessGrant | None:
    """Return the grant a stream opened with API token `token_id` holds: it ends when the token is revoked."""
    if token_id is None:
        return None
    return AccessGrant(
        group=token_group_name(token_id),
        still_valid=lambda: aapi_token_is_valid(token_id=token_id),
        detail="The API token was revoked.",
    )


def request_api_token_id(request: HttpRequest) -> int | None:
    """Return the id of the API token that authenticated `request`, or None (a session, or nobody)."""
    return getattr(request, "api_token_id", None)


def bearer_secret(authorization: str | None) -> str | None:
    """Return the secret of a `Bearer` Authorization header ("" when empty), None for no or another scheme."""
    scheme, _, secret = (authorization or "").strip().partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else None


def _unauthorized() -> HttpResponse:
    response = error_response("forbidden", "The API token is unknown or revoked.", 401)
    response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def _outside_the_api() -> HttpResponse:
    return error_response("forbidden", "API tokens authenticate the chat API (/api/) only.", 403)


def _sign_in(request: HttpRequest, token: ApiToken) -> None:
    user = token.user
    request.user = user
    request.api_token_id = token.id  # streams opened by this request end when the token is revoked

    async def auser() -> AbstractBaseUser:
        return user

    request.auser = auser
    request._dont_enforce_csrf_checks = True  # see the module docstring


@sync_and_async_middleware
def bearer_token_middleware(get_response):
    """Authenticate API requests that carry a bearer token; refuse a bad token with 401, any outside /api/ with 403.

    Runs after AuthenticationMiddleware.
    """
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            secret = bearer_secret(request.headers.get("Authorization"))
            if secret is not None and not request.path.startswith(API_PATH_PREFIX):
                return _outside_the_api()
            if secret is not None:
                token = await sync_to_async(api_token_authenticate)(secret=secret) if secret else None
                if token is None:
                    return _unauthorized()
                _sign_in(request, token)
            return await get_response(request)

    else:

        def middleware(request: HttpRequest) -> HttpResponse:
            secret = bearer_secret(request.headers.get("Authorization"))
            if secret is not None and not request.path.startswith(API_PATH_PREFIX):
                return _outside_the_api()
            if secret is not None:
                token = api_token_authenticate(secret=secret) if secret else None
                if token is None:
                    return _unauthorized()
                _sign_in(request, token)
            return get_response(request)

    return middleware


class BearerTokenAuthMiddleware:
    """Send WebSocket handshakes that carry a bearer token to `token_app`, the others to `session_app`.

    The token path needs no Origin check: a browser cannot set headers on a WebSocket
    handshake, so such a handshake is not a page hijacking someone's session. An
    unknown or revoked token connects as anonymous, which the consumer closes with 4401;
    a valid one puts its id in the scope as `api_token_id`, so the socket closes when
    the token is revoked.
    """

    def __init__(self, session_app, token_app) -> None:
        self.session_app = session_app
        self.token_app = token_app

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", []))
        secret = bearer_secret(headers.get(b"authorization", b"").decode("latin-1"))
        if secret is None:
            return await self.session_app(scope, receive, send)
        token = await database_sync_to_async(api_token_authenticate)(secret=secret) if secret else None
        authenticated = {"user": token.user, "api_token_id": token.id} if token else {"user": AnonymousUser()}
        return await self.token_app({**scope, **authenticated}, receive, send)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=ApiToken._meta.get_field("name").max_length, help_text="Where you will use it.")


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """List the user's tokens; a POST makes one and shows its secret on this page, once."""
    form = TokenForm(request.POST or None)
    secret, refused = None, None
    if request.method == "POST" and form.is_valid():
        try:
            _, secret = api_token_create_for_self(user=request.user, name=form.cleaned_data["name"])
        except RateLimited as error:
            form.add_error("name", error.detail)
            refused = error
        else:
            form = TokenForm()
    tokens = ApiToken.objects.filter(user=request.user)
    context = {"form": form, "tokens": tokens, "secret": secret}
    response = render(request, "tokens/token_list.html", context, status=429 if refused else 200)
    for header, value in (refused.http_headers() if refused else {}).items():
        response[header] = value
    if secret:
        response["Cache-Control"] = "no-store"  # the secret must not linger in a cache
    return response


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    try:
        token = api_token_revoke(user=request.user, token_id=token_id)
    except NotFound:
        messages.error(request, "No such token.")
    else:
        messages.success(
            request, f"Revoked “{token.name}”: clients using it are refused from now on, and its open streams end."
        )
    return redirect("api-tokens")
