from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from streaming.errors import NotFound
from threads.models import ApiToken
from threads.tokens.services import api_token_create, api_token_revoke


class Command(BaseCommand):
    help = "Create, revoke or list a user's API tokens (bearer tokens for non-browser clients)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Make a token and print its secret (shown only this once).")
        create.add_argument("--user", required=True, help="username")
        create.add_argument("--name", default="API token", help="what the token is for")
        revoke = actions.add_parser("revoke", help="Revoke a token by its id (see `list`).")
        revoke.add_argument("--user", required=True, help="username")
        revoke.add_argument("token_id", type=int)
        listing = actions.add_parser("list", help="List the user's tokens.")
        listing.add_argument("--user", required=True, help="username")

    def handle(self, *args, action: str, user: str, **options) -> None:
        try:
            owner = get_user_model().objects.get_by_natural_key(user)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {user!r}.") from None
        if action == "create":
            token, secret = api_token_create(user=owner, name=options["name"])
            # Only the secret on stdout, so that `TOKEN=$(manage.py apitoken create …)` works.
            self.stderr.write(f"Token {token.id} ({token.name}) for {owner}; copy it now, it is not shown again:")
            self.stdout.write(secret)
        elif action == "revoke":
            try:
                token = api_token_revoke(user=owner, token_id=options["token_id"])
            except NotFound:
                raise CommandError(f"{owner} has no token {options['token_id']}.") from None
            self.stdout.write(f"Revoked token {token.id} ({token.name}).")
        else:
            for token in ApiToken.objects.filter(user=owner):
                state = f"revoked {token.revoked_at:%Y-%m-%d %H:%M}" if token.revoked_at else "active"
                used = f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never"
                self.stdout.write(f"{token.id}\t{token.name}\t{state}\tlast used {used}")
