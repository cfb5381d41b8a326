"""The production examples in deploy/ say what Kestrel actually runs.

The Redis files are started in a real redis-server; the process commands are checked
against the queues and settings the code defines, so an edit to one side that forgets
the other fails here.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from redis import Redis

from config.pdeathsig import die_with_parent
from core.checks import _check_state_policy
from devstack.processes import free_port
from devstack.redis_server import answers_ping, find_redis_server
from jobs.queues import WORKER_QUEUES, WORKER_TTL

BASE_DIR = Path(__file__).resolve().parents[2]
DEPLOY = BASE_DIR / "deploy"


def _start(config: Path, *extra: str):
    """redis-server on a copy of `config` (Sentinel rewrites its file), on loopback and a free port."""
    folder = Path(tempfile.mkdtemp(prefix="kestrel-deploy-"))
    copy = folder / config.name
    # The files name production folders; the server changes into `dir` while reading them.
    copy.write_text(re.sub(r"^dir .*$", f"dir {folder}", config.read_text(), flags=re.MULTILINE))
    port = free_port()
    process = subprocess.Popen(
        [find_redis_server(), str(copy), *extra, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    return process, port, folder


@pytest.fixture
def redis_on():
    started = []

    def start(config: Path, *extra: str) -> Redis:
        process, port, folder = _start(config, *extra)
        started.append((process, folder))
        for _ in range(200):
            if process.poll() is not None:
                pytest.fail(f"redis-server refused {config.name}: {process.stderr.read().decode()}")
            if answers_ping(port):
                return Redis(port=port, decode_responses=True)
            time.sleep(0.02)
        pytest.fail(f"redis-server on {config.name} did not answer")

    yield start
    for process, folder in started:
        process.terminate()
        process.wait(timeout=10)
        process.stderr.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_state_server_never_evicts_and_keeps_an_append_only_file(redis_on):
    client = redis_on(DEPLOY / "redis" / "state.conf")

    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert _check_state_policy(client, "state.conf") == []


def test_the_cache_server_evicts_and_would_be_refused_as_the_state_role(redis_on):
    client = redis_on(DEPLOY / "redis" / "cache.conf")

    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    assert int(client.config_get("maxmemory")["maxmemory"]) > 0
    assert [message.id for message in _check_state_policy(client, "cache.conf")] == ["kestrel.W001"]


def test_the_sentinel_file_watches_both_roles(redis_on):
    client = redis_on(DEPLOY / "redis" / "sentinel.conf", "--sentinel")

    assert {master["name"] for master in client.sentinel_masters().values()} == {"kestrel-state", "kestrel-cache"}


def _commands(text: str) -> dict[str, list[str]]:
    return {
        name: shlex.split(command)
        for name, command in re.findall(r"^(\w+): (.+)$", text, flags=re.MULTILINE)
        if not name.startswith("#")
    }


def _worker_queues(args: list[str]) -> list[str]:
    start = args.index(next(arg for arg in args if arg in ("rqworker", "rqworker-pool"))) + 1
    queues = []
    for arg in args[start:]:
        if arg.startswith("-"):
            break
        queues.append(arg)
    return queues


def test_the_procfile_runs_every_queue_with_the_worker_ttl_the_code_assumes():
    commands = _commands((DEPLOY / "Procfile").read_text())

    assert set(commands) == {"release", "web", "worker", "cron"}
    # The order too: a worker takes from the first non-empty queue, periodic jobs first.
    assert _worker_queues(commands["worker"]) == WORKER_QUEUES
    assert commands["worker"][commands["worker"].index("--worker-ttl") + 1] == str(WORKER_TTL)
    assert (BASE_DIR / commands["cron"][-1]).is_file()
    assert (BASE_DIR / commands["web"][commands["web"].index("-c") + 1]).is_file()


def test_the_systemd_units_run_the_same_commands():
    units = {path.name: path.read_text() for path in (DEPLOY / "systemd").glob("*.service")}
    exec_start = {
        name: shlex.split(re.search(r"^ExecStart=(.+)$", text, re.MULTILINE)[1]) for name, text in units.items()
    }

    worker = exec_start["kestrel-worker@.service"]
    assert _worker_queues(worker) == WORKER_QUEUES
    assert worker[worker.index("--worker-ttl") + 1] == str(WORKER_TTL)
    assert exec_start["kestrel-cron.service"][-1] == "jobs/cron.py"
    assert exec_start["kestrel-web.service"][-2:] == ["config/gunicorn.py", "config.wsgi"]


def test_make_worker_listens_to_every_queue_in_the_order_the_code_defines():
    makefile = (BASE_DIR / "Makefile").read_text()
    recipe = re.search(r"^worker:.*\n\t(.+)$", makefile, flags=re.MULTILINE)[1]
    worker = shlex.split(recipe)

    assert _worker_queues(worker) == WORKER_QUEUES
    assert worker[2] == "rqworker-pool"  # replaces a worker a crashing job ended; the TTL is the class's


def test_every_variable_of_the_example_environment_is_one_kestrel_reads():
    names = re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (DEPLOY / "kestrel.env.example").read_text(), flags=re.MULTILINE)
    read = (BASE_DIR / "config" / "settings.py").read_text() + (BASE_DIR / "config" / "gunicorn.py").read_text()

    assert names
    unknown = sorted({name for name in names if f'"{name}"' not in read})
    assert unknown == []
