"""`python manage.py streamworker`: the worker loop on its own (the Procfile's `worker`).

In this deployment web processes run with STREAM_INLINE_WORKER=false and any number
of these processes write the replies.
"""

import argparse
import asyncio
import logging
import signal

import uvloop
from django.core.management.base import BaseCommand, CommandError

from streaming import collector, metrics
from streaming.worker import StreamWorker

logger = logging.getLogger("streaming.worker")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Command(BaseCommand):
    help = (
        "Claim queued generations and stream their replies. On SIGTERM or SIGINT, stop claiming, "
        "hand running replies over to other workers and exit; a second signal exits at once."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--concurrency", type=int, default=None, help="Replies written at once (default STREAM_WORKER_CONCURRENCY)."
        )
        parser.add_argument(
            "--name", default=None, help="Name recorded on the generations it claims (default: host:pid:random)."
        )

    def handle(self, *args, concurrency: int | None, name: str | None, **options) -> None:
        if concurrency is not None and concurrency < 1:
            raise CommandError("--concurrency must be at least 1.")
        collector.settle()
        # uvloop: the worker's loop runs every reply's reads and publishes (README, "Benchmark").
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self._serve(StreamWorker(name=name, concurrency=concurrency)))
        finally:
            metrics.process_exited()

    async def _serve(self, worker: StreamWorker) -> None:
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._stop, loop, worker, signum)
        await worker.run()

    def _stop(self, loop: asyncio.AbstractEventLoop, worker: StreamWorker, signum: int) -> None:
        name = signal.Signals(signum).name
        logger.info("worker %s: %s received; handing %d running replies over", worker.name, name, len(worker.runs))
        # Back to the default handlers: a second signal ends the process without waiting for the handover.
        for stop_signal in STOP_SIGNALS:
            loop.remove_signal_handler(stop_signal)
        worker.stop()
