"""Run a task of tasks.py in a Django process of its own, on the servers' environment.

The orchestrator runs with the settings it was started with; the bench database and
channel layer are only in the environment it gives the servers. Rather than rewire
its own connections, it runs the few Django-side tasks in a child process with that
environment: `python -m chatsite.bench.tool`, one JSON request on stdin, one JSON
answer on stdout.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parents[2]
TASK_TIMEOUT_SECONDS = 300.0


def run_task(environment: dict[str, str], task: str, **arguments: Any) -> dict[str, Any]:
    """Run `task` with `arguments` in a child process and return its answer."""
    result = subprocess.run(
        [sys.executable, "-m", "chatsite.bench.tool"],
        input=json.dumps({"task": task, **arguments}),
        env=environment,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=TASK_TIMEOUT_SECONDS,
    )
    if result.returncode:
        raise RuntimeError(f"bench task {task} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    django.setup()
    from .tasks import TASKS  # models import only once Django is set up

    request = json.load(sys.stdin)
    answer = TASKS[request.pop("task")](**request)
    sys.stdout.write("\n" + json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
