"""Writes of sharing: the owner adds, changes and removes members, makes and revokes share links; a member leaves.

Every change that takes something away (a member removed, a role lowered, a link
revoked) tells the streams it concerns after commit: each asks the access check again,
so a person who may no longer read is cut off at once, and one who may no longer write
is refused at their next write frame.
"""

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from streaming.broadcast import publish_access_revoked_on_commit
from streaming.errors import BadRequest, NotFound

from .access import link_group_name, live_links, member_group_name
from .models import Membership, ShareLink, Thread, ThreadRole

LINK_TOKEN_PREFIX = "chl_"
# Shown beside a link in its list, so the owner can tell links apart without the secret.
LINK_PREFIX_CHARS = 8
MEMBER_ROLES = (ThreadRole.VIEWER, ThreadRole.PARTICIPANT)
# A link lives at most a year when it expires at all.
MAX_LINK_SECONDS = 366 * 24 * 3600


def parse_member_role(role: object) -> ThreadRole:
    """Return the member role named; BadRequest for anything but `viewer` or `participant`."""
    if not isinstance(role, str) or role not in MEMBER_ROLES:
        raise BadRequest("role must be viewer or participant.")
    return ThreadRole(role)


def member_add(*, thread: Thread, username: object, role: object, added_by: User) -> Membership:
    """Share `thread` with the person named `username` in `role`; a member already there takes the new role."""
    member_role = parse_member_role(role)
    if not isinstance(username, str) or not username.strip():
        raise BadRequest("username must name a person.")
    person = get_user_model().objects.filter(username=username.strip(), is_active=True).first()
    if person is None:
        raise BadRequest("No one has that username.")
    if person.pk == thread.owner_id:
        raise BadRequest("The owner already has the thread.")
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(
            thread=thread, user=person, defaults={"role": member_role, "added_by": added_by}
        )
        if not created:
            member_set_role(thread=thread, user_id=person.pk, role=member_role)
            membership.refresh_from_db()
    return membership


def member_set_role(*, thread: Thread, user_id: int, role: object) -> Membership:
    """Give a member another role; their open streams re-read it (a viewer loses write frames at once)."""
    member_role = parse_member_role(role)
    membership = Membership.objects.filter(thread=thread, user_id=user_id).first()
    if membership is None:
        raise NotFound("No such member.")
    if membership.role != member_role:
        membership.role = member_role
        membership.save(update_fields=["role"])
        publish_access_revoked_on_commit(member_group_name(thread.id, user_id))
    return membership


def member_remove(*, thread: Thread, user_id: int) -> None:
    """Take a member off the thread (the owner removing them, or they leaving): their streams of it end at once."""
    deleted, _ = Membership.objects.filter(thread=thread, user_id=user_id).delete()
    if not deleted:
        raise NotFound("No such member.")
    publish_access_revoked_on_commit(member_group_name(thread.id, user_id))


def hash_link_token(token: str) -> str:
    """Return the sha256 a share link's token is stored and looked up by."""
    return hashlib.sha256(token.encode()).hexdigest()


def link_create(*, thread: Thread, created_by: User, expires_in_seconds: object = None) -> tuple[ShareLink, str]:
    """Make a read-only link to `thread`; return it with its token, which is not stored and cannot be shown again."""
    if expires_in_seconds is not None and (
        isinstance(expires_in_seconds, bool)
        or not isinstance(expires_in_seconds, int)
        or not 1 <= expires_in_seconds <= MAX_LINK_SECONDS
    ):
        raise BadRequest(f"expires_in_seconds must be an integer from 1 to {MAX_LINK_SECONDS}, or null.")
    token = LINK_TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(seconds=expires_in_seconds) if expires_in_seconds else None
    link = ShareLink.objects.create(
        thread=thread,
        hashed_token=hash_link_token(token),
        prefix=token[: len(LINK_TOKEN_PREFIX) + LINK_PREFIX_CHARS],
        created_by=created_by,
        expires_at=expires_at,
    )
    return link, token


def link_revoke(*, thread: Thread, link_id: object) -> ShareLink:
    """Revoke a link of `thread` (again is harmless): the streams opened through it end at once."""
    link = ShareLink.objects.filter(thread=thread, pk=link_id).first() if isinstance(link_id, int) else None
    if link is None:
        raise NotFound("No such link.")
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.save(update_fields=["revoked_at"])
        publish_access_revoked_on_commit(link_group_name(link.pk))
    return link


def link_open(*, token: str) -> ShareLink:
    """Return the live link a token names; NotFound for an unknown, revoked or expired one."""
    link = ShareLink.objects.filter(live_links(), hashed_token=hash_link_token(token)).first()
    if link is None:
        raise NotFound("This link is unknown, revoked or expired.")
    return link
