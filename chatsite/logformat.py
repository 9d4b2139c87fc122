"""Log records as one JSON object a line (LOG_FORMAT=json), for log pipelines that index fields.

Each line has `time` (ISO 8601, UTC), `level`, `logger` and `message` (the text the plain format
prints), then the record's structured fields: a generation's lines (streaming/logs.py) carry
`event`, `generation`, `thread`, `message_id`, `attempt` and their figures, the same fields the
plain format writes as `key=value` (`message=` there is `message_id` here, as `message` is the
text). Inside a traced span a line also carries `trace_id` and `span_id`.
"""

import json
import logging
from datetime import UTC, datetime

from opentelemetry import trace

# The plain format's `message=` field, renamed where `message` is the line's text.
RENAMED_FIELDS = {"message": "message_id"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in getattr(record, "fields", {}).items():
            entry[RENAMED_FIELDS.get(name, name)] = value
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"], entry["span_id"] = format(span.trace_id, "032x"), format(span.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # Ids and figures are UUIDs and numbers: anything else is written as its text.
        return json.dumps(entry, default=str)
