"""The JSON API of sharing: a thread's members and share links (README "Sharing").

Members: anyone who can read the thread lists them; the owner adds one, changes a role
or removes one; a member removes themselves (leaves). Links: the owner only.
"""

from django.http import HttpResponse, JsonResponse

from streaming.cursors import parse_digits
from streaming.errors import BadRequest

from .access import Action
from .api import api_view, json_body, no_content, request_thread
from .http import AuthenticatedHttpRequest
from .models import Membership, ShareLink
from .selectors import link_list, member_list
from .sharing import link_create, link_revoke, member_add, member_remove, member_set_role


def member_payload(membership: Membership) -> dict:
    return {
        "user": {"id": membership.user_id, "name": membership.user.get_username()},
        "role": membership.role,
        "created_at": membership.created_at.isoformat(),
    }


def link_payload(link: ShareLink) -> dict:
    return {
        "id": link.pk,
        "prefix": link.prefix,
        "created_at": link.created_at.isoformat(),
        "expires_at": link.expires_at.isoformat() if link.expires_at else None,
        "revoked_at": link.revoked_at.isoformat() if link.revoked_at else None,
    }


# The largest id a row here has: a bigger number in a path names nothing and must not reach the database.
LARGEST_ID = 2**31 - 1


def path_id(value: str) -> int | None:
    """Return the id a path segment names, or None for anything but digits within LARGEST_ID."""
    number = parse_digits(value)
    return number if number is not None and number <= LARGEST_ID else None


def _user_id(value: str) -> int:
    member_id = path_id(value)
    if member_id is None:
        raise BadRequest("The member is named by their user id.")
    return member_id


@api_view("GET", "POST")
def thread_members(request: AuthenticatedHttpRequest, thread_id: str) -> JsonResponse:
    """List the thread's members (anyone who reads it), or add one (the owner)."""
    if request.method == "GET":
        thread = request_thread(request, thread_id, Action.READ)
        owner = {"id": thread.owner_id, "name": thread.owner.get_username()}
        return JsonResponse({"owner": owner, "members": [member_payload(m) for m in member_list(thread=thread)]})
    thread = request_thread(request, thread_id, Action.MANAGE)
    body = json_body(request)
    membership = member_add(thread=thread, username=body.get("username"), role=body.get("role"), added_by=request.user)
    return JsonResponse(member_payload(membership), status=201)


@api_view("PATCH", "DELETE")
def thread_member(request: AuthenticatedHttpRequest, thread_id: str, user_id: str) -> HttpResponse:
    """Change a member's role (the owner), or remove them (the owner, or the member leaving)."""
    member_id = _user_id(user_id)
    if request.method == "DELETE" and member_id == request.user.pk:
        member_remove(thread=request_thread(request, thread_id, Action.READ), user_id=member_id)  # leaving
        return no_content()
    thread = request_thread(request, thread_id, Action.MANAGE)
    if request.method == "DELETE":
        member_remove(thread=thread, user_id=member_id)
        return no_content()
    membership = member_set_role(thread=thread, user_id=member_id, role=json_body(request).get("role"))
    return JsonResponse(member_payload(membership))


@api_view("GET", "POST")
def thread_links(request: AuthenticatedHttpRequest, thread_id: str) -> JsonResponse:
    """List the thread's share links, or make one: its `url` holds the token, shown this once."""
    thread = request_thread(request, thread_id, Action.MANAGE)
    if request.method == "GET":
        return JsonResponse({"links": [link_payload(link) for link in link_list(thread=thread)]})
    link, token = link_create(
        thread=thread, created_by=request.user, expires_in_seconds=json_body(request).get("expires_in_seconds")
    )
    url = request.build_absolute_uri(f"/s/{token}")
    return JsonResponse(link_payload(link) | {"token": token, "url": url}, status=201)


@api_view("DELETE")
def thread_link(request: AuthenticatedHttpRequest, thread_id: str, link_id: str) -> JsonResponse:
    """Revoke a share link: whoever watches through it is cut off at once."""
    thread = request_thread(request, thread_id, Action.MANAGE)
    return JsonResponse(link_payload(link_revoke(thread=thread, link_id=path_id(link_id))))
