"""The private Redis server that `make run`, the tests and the benchmarks start."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest
import redis

from devstack.redis_server import RedisServer, RedisServerError, answers_ping, find_redis_server


def test_finds_a_binary_and_serves_on_loopback():
    with RedisServer() as server:
        assert server.host == "127.0.0.1"
        assert answers_ping(server.port)
        assert redis.Redis(port=server.port).config_get("bind")["bind"] == "127.0.0.1"
    assert not answers_ping(server.port)


def test_redis_server_bin_overrides_the_search(monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_SERVER_BIN", str(tmp_path / "missing"))

    with pytest.raises(RedisServerError, match="REDIS_SERVER_BIN"):
        find_redis_server()


def test_restart_keeps_the_port():
    with RedisServer() as server:
        port = server.port
        server.stop()
        assert not answers_ping(port)
        server.start()
        assert server.port == port
        assert answers_ping(port)


@pytest.mark.slow
def test_the_server_dies_with_its_parent_even_on_sigkill():
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time
                from devstack.redis_server import RedisServer
                server = RedisServer().start()
                print(server.port, server.process.pid, flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    port, child_pid = (int(x) for x in parent.stdout.readline().split())
    assert answers_ping(port)

    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)

    deadline = time.monotonic() + 10
    while answers_ping(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not answers_ping(port), f"redis-server {child_pid} outlived its killed parent"


def test_a_server_with_a_data_dir_keeps_its_data_across_restarts_on_any_port(tmp_path):
    """`make run`'s Redis: an AOF under var/redis, so a restart keeps sessions and jobs."""
    config = {"appendonly": "yes", "appendfsync": "always"}
    with RedisServer(data_dir=tmp_path / "redis", extra_config=config) as server:
        redis.Redis(port=server.port).set("kestrel:test:session", "still here")
    assert (tmp_path / "redis").is_dir()  # cleanup() keeps a data_dir

    with RedisServer(data_dir=tmp_path / "redis", extra_config=config) as again:
        assert redis.Redis(port=again.port).get("kestrel:test:session") == b"still here"
