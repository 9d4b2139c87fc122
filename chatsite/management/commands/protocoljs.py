"""`python manage.py protocoljs`: write the protocol's codes into the browser client, `static/chat/protocol.js`.

The close and error codes are defined once, in streaming/protocol.py; the client is
plain ES modules with no build step, so the module is generated here and checked in.
`--check` fails when the checked-in module disagrees with the enums (tests run it).
"""

import json
from enum import Enum
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from streaming.protocol import FINAL_CLOSE_CODES, CloseCode, ErrorCode


def protocol_module_path() -> Path:
    return Path(settings.BASE_DIR) / "static" / "chat" / "protocol.js"


def js_constants(name: str, enum: type[Enum]) -> str:
    """Return an exported, frozen object of an enum's members and values."""
    members = "".join(f"  {member.name}: {json.dumps(member.value)},\n" for member in enum)
    return f"export const {name} = Object.freeze({{\n{members}}});\n"


def protocol_module() -> str:
    """Return the text of static/chat/protocol.js."""
    final = ", ".join(f"CloseCode.{code.name}" for code in FINAL_CLOSE_CODES)
    return (
        "// Generated from streaming/protocol.py by `python manage.py protocoljs`: edit that, then run this.\n"
        "// The codes of WebSocket protocol v1 (DESIGN.md §4 and the README's extensions).\n\n"
        + js_constants("CloseCode", CloseCode)
        + f"// Closes that no retry can fix.\nexport const FINAL_CLOSE_CODES = Object.freeze([{final}]);\n\n"
        + js_constants("ErrorCode", ErrorCode)
    )


class Command(BaseCommand):
    help = "Write static/chat/protocol.js from streaming/protocol.py (or, with --check, fail if it differs)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--check", action="store_true", help="change nothing; fail if the module is out of date")
        parser.add_argument("--output", type=Path, default=None, help="the module to write or check")

    def handle(self, *args, check: bool, output: Path | None, **options) -> None:
        path = output or protocol_module_path()
        expected = protocol_module()
        if check:
            if not path.exists() or path.read_text() != expected:
                raise CommandError(f"{path} disagrees with streaming/protocol.py: run `python manage.py protocoljs`.")
            self.stdout.write(f"{path} is up to date.")
            return
        path.write_text(expected)
        self.stdout.write(f"Wrote {path}.")
