"""`current_time`: the time now, in an IANA time zone."""

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streaming.tools import ToolContext

from .base import ProductTool, ToolInputError, text_input


class CurrentTime(ProductTool):
    name = "current_time"
    description = "The current date and time, in UTC or in the IANA time zone given (for example Europe/Paris)."
    input_schema = {
        "type": "object",
        "properties": {"timezone": {"type": "string", "description": "an IANA time zone name; UTC when left out"}},
    }

    async def run(self, input: dict[str, Any], context: ToolContext) -> dict[str, str]:
        name = text_input(input, "timezone", max_chars=64) if "timezone" in input else "UTC"
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as error:
            # ValueError: a name that is a path (`../../etc/passwd`), which zoneinfo refuses.
            raise ToolInputError(f"Unknown time zone {name!r}: use an IANA name such as Europe/Paris.") from error
        now = datetime.now(UTC).astimezone(zone)
        return {"timezone": name, "iso": now.isoformat(timespec="seconds"), "weekday": now.strftime("%A")}


current_time = CurrentTime()
