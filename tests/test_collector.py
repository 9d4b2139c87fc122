"""Web and worker processes freeze what startup made out of the cyclic collector's walks, and collect less often."""

import gc
import logging
import os
import subprocess
import sys

import pytest
from django.core.management import call_command

from streaming import collector
from streaming.worker import StreamWorker

from .live_server import REPO


@pytest.fixture
def collector_restored():
    """Give the test process its collector back as it was: thresholds, and nothing frozen."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settle_freezes_what_startup_made_and_sets_the_thresholds(settings, collector_restored, caplog):
    caplog.set_level(logging.INFO, logger="streaming.collector")
    settings.GC_THRESHOLDS = [5000, 15, 30]
    made_at_startup = type("MadeAtStartup", (), {})()
    gc.unfreeze()

    collector.settle()

    assert gc.get_threshold() == (5000, 15, 30)
    assert gc.get_freeze_count() > 0
    assert not any(tracked is made_at_startup for tracked in gc.get_objects()), "frozen objects are not walked"
    (record,) = [record for record in caplog.records if record.name == "streaming.collector"]
    assert record.getMessage().endswith(f"{gc.get_freeze_count()} objects of startup frozen, thresholds 5000,15,30")


def test_the_worker_command_settles_before_it_serves(settings, monkeypatch, collector_restored):
    served = []

    async def serve(worker: StreamWorker) -> None:
        served.append((gc.get_threshold(), gc.get_freeze_count()))

    monkeypatch.setattr(StreamWorker, "run", serve)
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)

    call_command("streamworker")

    ((thresholds, frozen),) = served
    assert thresholds == tuple(settings.GC_THRESHOLDS) != (700, 10, 10)
    assert frozen > 0


@pytest.mark.parametrize("thresholds", ["1,2", "10000,20,-1", "many,20,100", "1,2,3,4"])
def test_thresholds_that_are_not_three_whole_numbers_are_refused_at_startup(thresholds):
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env={**os.environ, "GC_THRESHOLDS": thresholds},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"GC_THRESHOLDS is '{thresholds}': give three whole numbers, such as 10000,20,100." in done.stderr
