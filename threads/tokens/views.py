"""The page where a person lists, makes and revokes their API tokens."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from streaming.errors import NotFound, RateLimited

from ..errors import error_response
from ..http import AuthenticatedHttpRequest
from .forms import TokenForm
from .selectors import api_token_list
from .services import api_token_create_for_self, api_token_revoke


def token_list_page(request: AuthenticatedHttpRequest, form: TokenForm, secret: str | None = None) -> HttpResponse:
    """Render the user's tokens with `form`, and a new token's `secret` if one was just made."""
    context = {"form": form, "tokens": api_token_list(user=request.user), "secret": secret}
    return render(request, "tokens/token_list.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    """List the user's tokens; a POST makes one and shows its secret on this page, once."""
    form = TokenForm(request.POST or None)
    if request.method != "POST" or not form.is_valid():
        return token_list_page(request, form)
    try:
        _, secret = api_token_create_for_self(user=request.user, name=form.cleaned_data["name"])
    except RateLimited as error:
        form.add_error("name", error.detail)
        return error_response(error, page=token_list_page(request, form))
    response = token_list_page(request, TokenForm(), secret)
    response["Cache-Control"] = "no-store"  # the secret must not linger in a cache
    return response


@login_required
@require_POST
def token_revoke(request: AuthenticatedHttpRequest, token_id: int) -> HttpResponse:
    try:
        token = api_token_revoke(user=request.user, token_id=token_id)
    except NotFound:
        messages.error(request, "No such token.")
    else:
        messages.success(
            request, f"Revoked “{token.name}”: clients using it are refused from now on, and its open streams end."
        )
    return redirect("api-tokens")
