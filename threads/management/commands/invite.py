"""`manage.py invite [--count N] [--by USERNAME]`: make single-use sign-up codes for CHAT_SIGNUP=invite."""

import argparse

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from threads.signup import invite_create


class Command(BaseCommand):
    help = "Make single-use invite codes for sign-up (CHAT_SIGNUP=invite); each is printed once, only its hash is kept."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--count", type=int, default=1, help="How many codes to make (default 1).")
        parser.add_argument("--by", help="Username of the operator or staff member making them.")

    def handle(self, *args, count: int, by: str | None, **options) -> None:
        if count < 1:
            raise CommandError("--count must be at least 1.")
        creator = None
        if by is not None:
            creator = get_user_model().objects.filter(username=by).first()
            if creator is None:
                raise CommandError(f"No user {by!r}.")
        for _ in range(count):
            self.stdout.write(invite_create(created_by=creator))
