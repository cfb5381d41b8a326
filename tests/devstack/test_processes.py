"""The launcher pieces `make run`, the benchmarks and the live test stack share (devstack)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from devstack.processes import (
    HOST,
    PROJECT_ROOT,
    Process,
    StackError,
    rq_cron_command,
    rq_worker_command,
    run_manage,
    session_members,
    stack_env,
    stop_all,
)
from devstack.web import GUNICORN_CONFIG, Gunicorn, wait_until_healthy
from jobs.queues import WORKER_QUEUES, WORKER_TTL


def test_a_stack_env_never_points_the_children_at_the_callers_services(monkeypatch, tmp_path):
    for name in ("DATABASE_URL", "REDIS_CACHE_URL", "REDIS_KEY_PREFIX", "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.setenv(name, "from-the-shell")
    monkeypatch.setenv("DEBUG", "1")

    env = stack_env(settings_module="config.settings", var_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")

    assert not {"DATABASE_URL", "REDIS_CACHE_URL", "REDIS_KEY_PREFIX", "PROMETHEUS_MULTIPROC_DIR"} & set(env)
    assert env["DEBUG"] == "0"
    assert env["REDIS_URL"] == "redis://127.0.0.1:1/0"
    assert env["KESTREL_VAR_DIR"] == str(tmp_path)
    assert env["ALLOWED_HOSTS"] == f"{HOST},localhost"
    assert env["SECURE_SSL_REDIRECT"] == "0"
    assert len(env["SECRET_KEY"]) == 50


def test_a_stack_env_takes_what_the_stack_started_and_the_overrides_last(tmp_path):
    first = stack_env(
        settings_module="bench.settings",
        var_dir=tmp_path,
        redis_url="redis://127.0.0.1:1/0",
        cache_url="redis://127.0.0.1:2/0",
        database_url="postgres://127.0.0.1/kestrel_test",
        overrides={"DEBUG": "1", "EMAIL_BACKEND": "locmem"},
    )
    second = stack_env(settings_module="bench.settings", var_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")

    assert first["DJANGO_SETTINGS_MODULE"] == "bench.settings"
    assert first["REDIS_CACHE_URL"] == "redis://127.0.0.1:2/0"
    assert first["DATABASE_URL"] == "postgres://127.0.0.1/kestrel_test"
    assert (first["DEBUG"], first["EMAIL_BACKEND"]) == ("1", "locmem")
    assert first["SECRET_KEY"] != second["SECRET_KEY"]


def test_a_failing_manage_command_raises_with_its_output(tmp_path):
    env = stack_env(settings_module="config.settings", var_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")

    with pytest.raises(StackError, match="no-such-command") as failure:
        run_manage(env, "no-such-command")
    assert "exited with 1" in str(failure.value)


def test_the_worker_commands_listen_to_every_queue_in_order():
    single = rq_worker_command(extra_args=("--burst",))
    pool = rq_worker_command(pool=3)

    assert single[1:] == [
        "manage.py",
        "rqworker",
        *WORKER_QUEUES,
        "--with-scheduler",
        "--worker-ttl",
        str(WORKER_TTL),
        "--burst",
    ]
    assert pool[1:] == ["manage.py", "rqworker-pool", *WORKER_QUEUES, "--num-workers", "3"]
    assert rq_cron_command()[1:] == ["manage.py", "rqcron", "jobs/cron.py"]
    assert (PROJECT_ROOT / "jobs" / "cron.py").is_file()


def test_gunicorn_leaves_what_it_is_not_given_to_the_config_file():
    make_run = Gunicorn(env={}, config=GUNICORN_CONFIG, bind="127.0.0.1:8123", graceful_timeout=None, reload=True)
    bench = Gunicorn(env={}, worker_class="gthread", workers=2, threads=4)

    assert make_run.args[1:] == ["-m", "gunicorn", "-c", str(GUNICORN_CONFIG), "config.wsgi"] + [
        "--bind",
        "127.0.0.1:8123",
        "--reload",
    ]
    assert make_run.port == 8123
    assert bench.args[bench.args.index("config.wsgi") + 1 :] == [
        "--workers",
        "2",
        "--worker-class",
        "gthread",
        "--bind",
        f"{HOST}:{bench.port}",
        "--graceful-timeout",
        "5",
        "--threads",
        "4",
    ]


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_stopping_kills_a_child_that_ignores_sigterm_with_its_whole_session(tmp_path):
    # The child ignores SIGTERM and starts a grandchild in a process group of its own, as
    # an RQ work horse does: only killing the session reaches it.
    code = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import os, time; os.setpgrp(); time.sleep(60)'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    stubborn = Process("stubborn", _python(code), env=os.environ, log_path=tmp_path / "stubborn.log").start()
    polite = Process("polite", _python("import time; time.sleep(60)"), env=os.environ).start()
    deadline = time.monotonic() + 10
    while "ready" not in (tmp_path / "stubborn.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(session_members(stubborn.pid)) == 2

    began = time.monotonic()
    stop_all([stubborn, polite], timeout=1)

    assert time.monotonic() - began < 5
    assert polite.popen.returncode == -signal.SIGTERM
    assert stubborn.popen.returncode == -signal.SIGKILL
    assert session_members(stubborn.pid) == []


def test_waiting_for_health_fails_at_once_when_the_server_exits(tmp_path):
    server = Process("web server", _python("print('no port for you')"), env=os.environ, log_path=tmp_path / "web.log")
    server.start()

    with pytest.raises(StackError, match="the web server exited with 0") as failure:
        wait_until_healthy(1, timeout=30, process=server)
    assert "no port for you" in str(failure.value)


def test_make_run_leaves_what_a_second_terminal_needs_in_a_file_the_shell_can_source(tmp_path):
    from devstack.run import ENV_FILE, _write_env_file

    env = {"DEBUG": "1", "REDIS_URL": "redis://127.0.0.1:6399/0", "SECRET_KEY": "never written", "PATH": "/bin"}
    _write_env_file(tmp_path, env)

    written = subprocess.run(
        ["sh", "-c", f"set -a; . {tmp_path / ENV_FILE}; set +a; env"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert "REDIS_URL=redis://127.0.0.1:6399/0" in written
    assert "DEBUG=1" in written
    assert not any(line.startswith("SECRET_KEY=") for line in written)  # only what manage.py needs


def test_the_banner_names_every_address_and_login_and_where_the_logs_went(tmp_path):
    from devstack.run import _banner

    logins = "Demo logins (password for all: kestrel-demo-pass):\n  admin@example.com\n  ada@example.com\n"
    text = _banner(port="8123", logins=logins, log_dir=tmp_path / "log", var_dir=tmp_path)

    for address in ("/api/docs", "/admin/", "/admin/rq/", "/ops", "/ops/mail"):
        assert f"http://127.0.0.1:8123{address}" in text
    assert "kestrel-demo-pass" in text
    assert "ada@example.com" in text
    assert f"{tmp_path / 'log'}/web.log" in text
    assert "on this terminal" in _banner(port="8123", logins=logins, log_dir=None, var_dir=tmp_path)
