"""A fresh clone builds and serves as a Procfile runner (Heroku, Dokku) would run it.

The test clones the repository's HEAD into a temporary folder, runs the Procfile's `release`
line there with a production environment (debug off, a secret key, a SQLite file, behind a
TLS proxy), starts its `web` line on a free port, and fetches a page, the hashed static files
it names and the modules they import.
"""

import gzip
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from chatsite.bench.topology import free_port

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60
# WhiteNoise's lifetime for a file whose name carries its hash: ten years, never revalidated.
IMMUTABLE = "max-age=315360000, public, immutable"
MODULE_IMPORT = re.compile(r"""\bfrom\s+["'](\./[^"']+)["']""")


def procfile_lines(directory: Path) -> dict[str, str]:
    lines = (directory / "Procfile").read_text().splitlines()
    return {name.strip(): command.strip() for name, _, command in (line.partition(":") for line in lines if line)}


def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"X-Forwarded-Proto": "https", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def clone(tmp_path) -> Path:
    """Return a fresh clone of the repository's HEAD: only what is committed."""
    directory = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(directory)], check=True, timeout=60)
    return directory


@pytest.fixture
def production_environment(tmp_path) -> dict[str, str]:
    """Return a production environment: no debug, a real key, its own SQLite file, PATH's `python` the project's."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    keep = {name: value for name, value in os.environ.items() if not name.startswith(("DJANGO_", "STREAM_"))}
    keep.pop("DATABASE_URL", None)
    keep.pop("REDIS_URL", None)
    return keep | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DJANGO_DEBUG": "off",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_BEHIND_PROXY": "on",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "METRICS_TOKEN": "build-test-token",
        "PYTHONUNBUFFERED": "1",
    }


def test_procfile_web_leaves_replies_to_workers():
    """The web line turns the inline worker off, as scale-out needs; runcluster still reads its command."""
    from chatsite.management.commands.runcluster import procfile_command

    web = procfile_lines(REPO)["web"]
    assert shlex.split(web)[0] == "STREAM_INLINE_WORKER=off"
    assert procfile_command("web", PORT=8000)[:3] == [sys.executable, "-m", "chatsite.daphne_server"]
    assert procfile_command("release") == [sys.executable, "manage.py", "release"]


def test_a_fresh_clone_builds_and_serves_hashed_static_files(clone, production_environment, tmp_path):
    """release collects and migrates; web serves a page naming hashed files, immutable and compressed."""
    commands = procfile_lines(clone)
    release = subprocess.run(
        ["sh", "-c", commands["release"]],
        cwd=clone,
        env=production_environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert release.returncode == 0, release.stderr
    assert (clone / "staticfiles" / "staticfiles.json").exists()

    port = free_port()
    log = tmp_path / "web.log"
    with log.open("w") as output:
        web = subprocess.Popen(
            ["sh", "-c", commands["web"]],
            cwd=clone,
            env=production_environment | {"PORT": str(port)},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert web.poll() is None, log.read_text()
            try:
                status, _, page = fetch(f"{base}/accounts/login/")
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert status == 200
        assert "objects of startup frozen" in log.read_text(), "the web process settled its garbage collector"
        stylesheet = re.search(r'href="(/static/chat/chat\.[0-9a-f]{12}\.css)"', page.decode())
        assert stylesheet, "the page names the hashed stylesheet"
        assert_immutable_and_compressed(base + stylesheet.group(1))

        # The thread page's module, by the name the manifest gives it, and every module it imports, transitively.
        manifest = (clone / "staticfiles" / "staticfiles.json").read_text()
        pending = [re.search(r'"chat/thread\.js": "chat/(thread\.[0-9a-f]{12}\.js)"', manifest).group(1)]
        loaded: set[str] = set()
        while pending:
            name = pending.pop()
            loaded.add(name)
            source = assert_immutable_and_compressed(f"{base}/static/chat/{name}")
            for imported in MODULE_IMPORT.findall(source.decode()):
                assert re.fullmatch(r"\./\w+\.[0-9a-f]{12}\.js", imported), f"{name} imports {imported}"
                if imported[2:] not in loaded:
                    pending.append(imported[2:])
        assert len(loaded) >= 6  # thread.js, its five imports, and markdown.js through messages.js

        # The metrics of every process on the host, in multi-process mode.
        status, _, metrics = fetch(f"{base}/metrics", Authorization="Basic YnVpbGQ6YnVpbGQtdGVzdC10b2tlbg==")
        assert status == 200 and b"chatsite_open_streams" in metrics
    finally:
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(30)


def assert_immutable_and_compressed(url: str) -> bytes:
    """Check that `url` is served for good and gzipped on request; return its content."""
    status, headers, plain = fetch(url)
    assert status == 200, url
    assert headers["Cache-Control"] == IMMUTABLE, url
    status, headers, compressed = fetch(url, **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("Content-Encoding") == "gzip", url
    assert gzip.decompress(compressed) == plain
    return plain
