"""The cyclic garbage collector of a long-running process: startup's objects frozen, new ones collected less often.

CPython frees most objects by reference counting; its cyclic collector walks the objects
it tracks, in three generations, to find the cycles left. A full collection walks them
all, holding the GIL, and a loaded process stops for the whole walk: under 200 streams
every web and worker process paused 85–170 ms for each of its three to seven full
collections in 40 s, most of the time spent on what the imports and Django's setup made,
which lives as long as the process does (README, "Benchmark"). Each pause delays every
token in flight in that process.

So once the application is loaded, `settle` collects startup's garbage, freezes what is
left (`gc.freeze`: the walks skip it), and sets GC_THRESHOLDS: a young collection after
10,000 new objects rather than 700, so that the older generations, and the full walks,
come round far less often.
"""

import gc
import logging

from django.conf import settings

logger = logging.getLogger(__name__)


def settle() -> None:
    """Collect, freeze what startup made, and set GC_THRESHOLDS; call once the process's application is loaded."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*settings.GC_THRESHOLDS)
    logger.info(
        "garbage collector: %d objects of startup frozen, thresholds %s",
        gc.get_freeze_count(),
        ",".join(map(str, settings.GC_THRESHOLDS)),
    )
