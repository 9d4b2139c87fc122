"""Parsing of the cursors and counts clients send: decimal digits only."""


def parse_digits(value: str) -> int | None:
    """Return a string of ASCII decimal digits as an int; None for anything else.

    No sign, space, underscore or non-ASCII digit (all of which `int()` would take), and
    None past the digits Python converts rather than an error.
    """
    if not (value.isascii() and value.isdigit()):
        return None
    try:
        return int(value)
    except ValueError:  # more digits than Python converts
        return None


def parse_cursor(value: str | None) -> int | None:
    """Return a cursor (0 when absent), or None when it is malformed: not a non-negative decimal integer."""
    return 0 if value is None else parse_digits(value)
