import argparse
import re
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from streaming.retention import PRUNE_BATCH_SIZE, PruneProgress, chunks_prune

AGE_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
AGE_PATTERN = re.compile(r"^(\d+)([dhm])$")


def parse_age(value: str) -> timedelta:
    """Parse an age such as 30d, 12h or 90m."""
    match = AGE_PATTERN.match(value.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not an age such as 30d, 12h or 90m.")
    amount, unit = match.groups()
    return timedelta(**{AGE_UNITS[unit]: int(amount)})


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1.")
    return int(value)


class Command(BaseCommand):
    help = (
        "Delete the chunk rows of messages that ended before the cutoff, in threads with no reply streaming. "
        "Message contents stay; a client resuming inside the pruned range gets a reset snapshot. "
        "Each batch deleted is reported on standard error, the summary on standard output."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--older-than",
            type=parse_age,
            default=None,
            help="Age of the messages whose chunks go, such as 30d, 12h or 90m (default: CHUNK_RETENTION_DAYS days).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=PRUNE_BATCH_SIZE,
            help=f"Rows deleted per statement (default {PRUNE_BATCH_SIZE}): short statements keep locks brief.",
        )

    def handle(self, *args, older_than: timedelta | None, dry_run: bool, batch_size: int, **options) -> None:
        if older_than is None:
            older_than = timedelta(days=settings.CHUNK_RETENTION_DAYS)
        summary = chunks_prune(older_than=older_than, dry_run=dry_run, batch_size=batch_size, on_batch=self._progress)
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(
            f"{verb} {summary.chunks} chunks of {summary.messages} messages in {summary.threads} threads "
            f"(messages that ended before {summary.cutoff.isoformat(timespec='seconds')})."
        )

    def _progress(self, progress: PruneProgress) -> None:
        """Report one batch on standard error, so that a long run shows it is moving (and a log records it)."""
        share = progress.events / progress.events_total if progress.events_total else 1.0
        self.stderr.write(
            f"batch {progress.batch}: deleted {progress.rows} rows; "
            f"{progress.events} of {progress.events_total} events ({share:.0%})"
        )
