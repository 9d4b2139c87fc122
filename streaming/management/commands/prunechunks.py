import argparse
import re
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from streaming.retention import chunks_prune

AGE_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
AGE_PATTERN = re.compile(r"^(\d+)([dhm])$")


def parse_age(value: str) -> timedelta:
    """Parse an age such as 30d, 12h or 90m."""
    match = AGE_PATTERN.match(value.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not an age such as 30d, 12h or 90m.")
    amount, unit = match.groups()
    return timedelta(**{AGE_UNITS[unit]: int(amount)})


class Command(BaseCommand):
    help = (
        "Delete the chunk rows of messages that ended before the cutoff, in threads with no reply streaming. "
        "Message contents stay; a client resuming inside the pruned range gets a reset snapshot."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--older-than",
            type=parse_age,
            default=None,
            help="Age of the messages whose chunks go, such as 30d, 12h or 90m (default: CHUNK_RETENTION_DAYS days).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle(self, *args, older_than: timedelta | None, dry_run: bool, **options) -> None:
        if older_than is None:
            older_than = timedelta(days=settings.CHUNK_RETENTION_DAYS)
        summary = chunks_prune(older_than=older_than, dry_run=dry_run)
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(
            f"{verb} {summary.chunks} chunks of {summary.messages} messages in {summary.threads} threads "
            f"(messages that ended before {summary.cutoff.isoformat(timespec='seconds')})."
        )
