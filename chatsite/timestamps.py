"""PostgreSQL timestamps read by psycopg's C parser, as Django's own loader would read them.

Django reads every `timestamptz` through a loader of its own (`register_tzloader`): a
subclass of psycopg's pure-Python loader, because psycopg's C loader cannot be subclassed.
Each value is then parsed in Python, about 3 µs more than in C, and a stream worker reads
such values in every round of ends (each delta row's time, for its segment) and every
claim. `TimestampLoader` keeps Django's loader's contract, the same `timezone` attribute
and the same `replace(tzinfo=…)`, and hands the parsing to the C loader that psycopg's
default adapters hold; it is installed on each new connection, where Django checks the
loader's `timezone` before every cursor and leaves an equal one in place.
"""

from functools import cache
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from psycopg import abc, adapters, pq
from psycopg.adapt import Loader
from psycopg.postgres import types

TIMESTAMPTZ_OID = types["timestamptz"].oid


def _default_parser() -> type[abc.Loader]:
    """Return psycopg's default loader of timestamptz text: its C loader when its C implementation is installed."""
    parser = adapters.get_loader(TIMESTAMPTZ_OID, pq.Format.TEXT)
    assert parser is not None, "psycopg's default adapters load timestamptz"
    return parser


PARSER = _default_parser()


class TimestampLoader(Loader):
    """Load a timestamptz with psycopg's fastest loader, in the time zone of Django's connection."""

    timezone: Any = None  # set per subclass, as Django's loader has it

    def __init__(self, oid: int, context: Any = None) -> None:
        super().__init__(oid, context)
        self._load = PARSER(oid, context).load

    def load(self, data: Any) -> Any:
        return self._load(data).replace(tzinfo=self.timezone)


@cache
def timestamp_loader(timezone: Any) -> type[TimestampLoader]:
    """Return the loader of timestamps in `timezone` (None: naive, as Django without USE_TZ)."""
    return type("TimestampLoader", (TimestampLoader,), {"timezone": timezone, "__module__": __name__})


def install_timestamp_loader(*, connection: BaseDatabaseWrapper, **kwargs: object) -> None:
    """Receive `connection_created`: read a PostgreSQL connection's timestamps with the C parser."""
    if connection.vendor != "postgresql" or pq.__impl__ == "python":
        return  # without psycopg's C implementation, Django's own loader is as fast
    loader = timestamp_loader(connection.timezone)
    adapters_map = connection.connection.adapters
    # A pooled connection comes back to Django many times: install once.
    if adapters_map.get_loader(TIMESTAMPTZ_OID, pq.Format.TEXT) is not loader:
        adapters_map.register_loader(TIMESTAMPTZ_OID, loader)
