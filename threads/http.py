"""The request type of the views that only a signed-in person reaches."""

from django.contrib.auth.models import User
from django.http import HttpRequest


class AuthenticatedHttpRequest(HttpRequest):
    """A request whose user is signed in: what `login_required` and `api_view` let through.

    For type checkers only, as django-stubs suggests: Django builds plain HttpRequests,
    and the decorator has checked `user.is_authenticated` before the view runs.
    """

    user: User
