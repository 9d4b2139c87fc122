import argparse
import re
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from streaming.retention import PRUNE_BATCH_SIZE, PruneProgress, chunks_prune

AGE_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
# Leading zeros are dropped so that the digits' length says how large the number is.
AGE_PATTERN = re.compile(r"^0*(\d+)([dhm])$")
# No chat log is a century old: a longer age is a slip of the keyboard, refused rather than silently pruning
# nothing on every scheduled run (and past about 2000 years its cutoff would fall before the year 1, which
# datetime cannot hold). A fixed bound reads the same in every unit and on every day.
MAX_AGE_DAYS = 36500
# A batch's primary keys go as bound parameters of one DELETE (retention._delete_in_batches): SQLite, as
# built by default, accepts 32766 in a statement and PostgreSQL 65535; a larger batch fails in the database.
MAX_BATCH_SIZE = 30000


def whole_number(digits: str, *, most: int) -> int | None:
    """Return the number `digits` spell if it is at most `most`, else None; a huge one is never converted."""
    # int() refuses a string of more than 4300 digits (sys.get_int_max_str_digits): compare lengths first.
    if len(digits) > len(str(most)) or int(digits) > most:
        return None
    return int(digits)


def parse_age(value: str) -> timedelta:
    """Parse an age such as 30d, 12h or 90m, of at most MAX_AGE_DAYS days."""
    match = AGE_PATTERN.match(value.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not an age such as 30d, 12h or 90m.")
    digits, unit = match.groups()
    amount = whole_number(digits, most=timedelta(days=MAX_AGE_DAYS) // AGE_UNITS[unit])
    if amount is None:
        raise argparse.ArgumentTypeError(f"{value!r} is longer than the {MAX_AGE_DAYS}d (100 years) accepted.")
    return amount * AGE_UNITS[unit]


def parse_batch_size(value: str) -> int:
    """Parse a batch size: a whole number from 1 to MAX_BATCH_SIZE."""
    digits = value.strip().lstrip("0")
    amount = whole_number(digits, most=MAX_BATCH_SIZE) if digits.isascii() and digits.isdigit() else None
    if amount is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number from 1 to {MAX_BATCH_SIZE}.")
    return amount


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
            help=(
                "Age of the messages whose chunks go, such as 30d, 12h or 90m, at most "
                f"{MAX_AGE_DAYS}d (default: CHUNK_RETENTION_DAYS days)."
            ),
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument(
            "--batch-size",
            type=parse_batch_size,
            default=PRUNE_BATCH_SIZE,
            help=(
                f"Rows deleted per statement, 1 to {MAX_BATCH_SIZE} (default {PRUNE_BATCH_SIZE}): "
                "short statements keep locks brief."
            ),
        )

    def handle(self, *args, older_than: timedelta | None, dry_run: bool, batch_size: int, **options) -> None:
        if older_than is None:
            days = settings.CHUNK_RETENTION_DAYS
            # A negative age would put the cutoff in the future, and every ended reply's log would go.
            if not 1 <= days <= MAX_AGE_DAYS:
                raise CommandError(f"CHUNK_RETENTION_DAYS must be from 1 to {MAX_AGE_DAYS} days; it is {days}.")
            older_than = timedelta(days=days)
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
