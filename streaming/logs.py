"""Structured log lines for a generation's life: `event key=value …`, easy to grep and to parse.

They carry ids, counts and timings, never message text: at INFO a log holds no content or secrets.
"""

import logging

from .services.claims import Claim

logger = logging.getLogger("streaming.generation")


def log_generation(event: str, claim: Claim, *, level: int = logging.INFO, **fields: object) -> None:
    """Log `event` for the claimed generation with its ids and `fields`."""
    extra = "".join(f" {name}={value}" for name, value in fields.items())
    ids = {"generation": claim.generation_id, "thread": claim.thread_id, "message": claim.message_id}
    logger.log(
        level,
        "%s generation=%s thread=%s message=%s attempt=%d%s",
        event,
        claim.generation_id,
        claim.thread_id,
        claim.message_id,
        claim.attempt,
        extra,
        # The same fields, structured, for LOG_FORMAT=json (chatsite/logformat.py).
        extra={"fields": {"event": event, **ids, "attempt": claim.attempt, **fields}},
    )
