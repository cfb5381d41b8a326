"""Command metrics: every client path (cache API, raw client, RQ, pub/sub, pipelines)
counts and times its commands per key family, errors count as errors, and the figures
survive gunicorn's several processes.

The clients here are InstrumentedRedis on InstrumentedBlockingConnectionPool, the client
and pool classes core.redis gives each role, so these tests hold whether or not the
shared clients of this test session are instrumented.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django_rq import get_queue
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from redis import Redis
from redis.backoff import NoBackoff
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from rq import SimpleWorker

from core import instrumentation, metrics
from core.cache import RedisCache
from core.instrumentation import (
    InstrumentedBlockingConnectionPool,
    InstrumentedConnectionMixin,
    InstrumentedPipeline,
    InstrumentedPubSub,
    InstrumentedRedis,
    classify,
    key_family,
    redis_client,
)
from core.keys import key
from core.redis import Breaker, BreakerRetry, CircuitOpen, get_redis, is_cluster, role_url

ROOT = Path(__file__).resolve().parents[2]

# A breaker that refuses every call for the next hour.
OPEN_BREAKER = Breaker("test", cooldown=3600, probe_window=1)
OPEN_BREAKER.timed_out()


def noop_job() -> str:
    return "done"


def commands(role: str, command: str, family: str) -> float:
    metrics.flush()
    labels = {"role": role, "command": command, "family": family}
    return REGISTRY.get_sample_value("kestrel_redis_commands_total", labels) or 0.0


def round_trips(role: str, command: str, family: str) -> tuple[float, float]:
    """(count, sum of seconds) of the latency histogram."""
    metrics.flush()
    labels = {"role": role, "command": command, "family": family}
    count = REGISTRY.get_sample_value("kestrel_redis_command_duration_seconds_count", labels) or 0.0
    total = REGISTRY.get_sample_value("kestrel_redis_command_duration_seconds_sum", labels) or 0.0
    return count, total


def errors(role: str, command: str, family: str, error: str) -> float:
    metrics.flush()
    labels = {"role": role, "command": command, "family": family, "error": error}
    return REGISTRY.get_sample_value("kestrel_redis_command_errors_total", labels) or 0.0


def family_total(role: str, family: str) -> float:
    """Commands of one family, whatever the command."""
    metrics.flush()
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "kestrel_redis_commands"
        for sample in metric.samples
        if sample.name == "kestrel_redis_commands_total"
        and sample.labels["role"] == role
        and sample.labels["family"] == family
    )


@pytest.fixture
def instrumented_client():
    """A raw client per role on an instrumented pool, as core.redis builds them."""
    clients = []

    def make(role: str, *, client_name: str | None = None, **kwargs) -> Redis:
        client_name = client_name or f"kestrel-{role}"
        pool = InstrumentedBlockingConnectionPool.from_url(role_url(role), client_name=client_name, **kwargs)
        client = InstrumentedRedis(connection_pool=pool)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.connection_pool.disconnect()


@pytest.fixture
def instrumented_cache():
    """The Django cache API (django-redis) of the cache role on an instrumented pool.

    django-redis keeps one pool per URL for the process, so a query string the pool
    ignores gives this cache its own.
    """
    params = {**settings.CACHES["default"]}
    params["OPTIONS"] = {
        **params["OPTIONS"],
        "CONNECTION_POOL_CLASS": "core.instrumentation.InstrumentedBlockingConnectionPool",
        "REDIS_CLIENT_CLASS": "core.instrumentation.InstrumentedRedis",
    }
    cache = RedisCache(f"{params['LOCATION']}?client_name=kestrel-cache", params)
    yield cache
    cache.client.get_client().connection_pool.disconnect()


# --- Each client path -----------------------------------------------------------------


def test_the_cache_api_counts_and_times_its_commands_per_key_family(instrumented_cache):
    post_key = key("posts", "post", 42)
    before_set, before_get = commands("cache", "SET", "posts:post"), commands("cache", "GET", "posts:post")
    trips_before, seconds_before = round_trips("cache", "GET", "posts:post")

    instrumented_cache.set(post_key, {"title": "Hello"}, timeout=60)
    assert instrumented_cache.get(post_key) == {"title": "Hello"}

    assert commands("cache", "SET", "posts:post") == before_set + 1
    assert commands("cache", "GET", "posts:post") == before_get + 1
    trips, seconds = round_trips("cache", "GET", "posts:post")
    assert trips == trips_before + 1
    assert seconds > seconds_before


def test_the_raw_client_counts_and_times_its_commands(instrumented_client):
    client = instrumented_client("state")
    before = commands("state", "INCRBY", "core:probe")
    trips_before, seconds_before = round_trips("state", "INCRBY", "core:probe")

    for _ in range(3):
        client.incr(key("core", "probe", 1))  # redis-py sends INCRBY key 1: labels are what Redis runs

    assert commands("state", "INCRBY", "core:probe") == before + 3
    trips, seconds = round_trips("state", "INCRBY", "core:probe")
    assert trips == trips_before + 3
    assert seconds > seconds_before


def test_rq_enqueue_and_work_are_counted_under_the_rq_family(instrumented_client):
    connection = instrumented_client("state")
    before = family_total("state", "rq")
    trips_before, _ = round_trips("state", "MULTI", "rq")

    job = get_queue("default", connection=connection).enqueue(noop_job)
    SimpleWorker([get_queue("default", connection=connection)], connection=connection).work(burst=True)

    job.refresh()
    assert job.get_status() == "finished"
    assert family_total("state", "rq") > before + 10  # RQ sends dozens of commands per job
    assert round_trips("state", "MULTI", "rq")[0] > trips_before  # its MULTI/EXEC blocks, once each


def test_pubsub_commands_are_counted_and_messages_are_not(instrumented_client):
    client = instrumented_client("cache")
    channel = key("core", "probe")
    subscribes, publishes = commands("cache", "SUBSCRIBE", "core:probe"), commands("cache", "PUBLISH", "core:probe")
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=1.0)  # the confirmation

    client.publish(channel, "one")
    client.publish(channel, "two")
    received = [pubsub.get_message(timeout=1.0), pubsub.get_message(timeout=1.0)]
    pubsub.close()

    assert [message["data"] for message in received] == [b"one", b"two"]
    assert commands("cache", "SUBSCRIBE", "core:probe") == subscribes + 1
    assert commands("cache", "PUBLISH", "core:probe") == publishes + 2


def test_a_pipeline_counts_each_command_and_times_one_round_trip(instrumented_client):
    client = instrumented_client("cache")
    sets, pipelines = commands("cache", "SET", "core:probe"), round_trips("cache", "PIPELINE", "core:probe")[0]
    transactions = round_trips("cache", "MULTI", "mixed")[0]

    pipe = client.pipeline(transaction=False)
    for n in range(5):
        pipe.set(key("core", "probe", n), n, ex=60)
    pipe.execute()
    with client.pipeline() as transaction:  # MULTI/EXEC over two families
        transaction.set(key("core", "probe", 9), 9, ex=60)
        transaction.incr(key("core", "other", 9))
        transaction.execute()

    assert commands("cache", "SET", "core:probe") == sets + 6
    assert round_trips("cache", "PIPELINE", "core:probe")[0] == pipelines + 1
    assert round_trips("cache", "MULTI", "mixed")[0] == transactions + 1
    assert commands("cache", "EXEC", "none") >= 1


# --- Errors ---------------------------------------------------------------------------


def test_an_error_reply_counts_as_an_error_of_its_command(instrumented_client):
    client = instrumented_client("state")
    probe = key("core", "probe", 2)
    client.set(probe, "a string")
    before_errors = errors("state", "LPUSH", "core:probe", "ResponseError")
    before_commands = commands("state", "LPUSH", "core:probe")

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        client.lpush(probe, "x")

    assert errors("state", "LPUSH", "core:probe", "ResponseError") == before_errors + 1
    assert commands("state", "LPUSH", "core:probe") == before_commands + 1


def test_an_error_inside_a_transaction_counts_against_that_command(instrumented_client):
    client = instrumented_client("state")
    probe = key("core", "probe", 3)
    client.set(probe, "a string")
    before = errors("state", "LPUSH", "core:probe", "ResponseError")

    with client.pipeline() as transaction:
        transaction.incr(key("core", "probe", 4))
        transaction.lpush(probe, "x")
        replies = transaction.execute(raise_on_error=False)

    assert isinstance(replies[1], ResponseError)
    assert errors("state", "LPUSH", "core:probe", "ResponseError") == before + 1


def test_a_command_that_cannot_reach_redis_counts_as_an_error(instrumented_client, redis_down):
    """The pool connects before the command is written: the failure is the CONNECT's.

    Under a name of its own (role "other"): the process's L1 subscriber reconnects to
    the cache role meanwhile, and its attempts count too.
    """
    client = instrumented_client(
        "cache", client_name="kestrel-test", retry=Retry(NoBackoff(), 0), socket_connect_timeout=0.25
    )
    before_errors = errors("other", "CONNECT", "none", "ConnectionError")
    before_attempts = commands("other", "CONNECT", "none")

    with pytest.raises(RedisConnectionError):
        client.get(key("core", "probe", 5))

    assert errors("other", "CONNECT", "none", "ConnectionError") == before_errors + 1
    assert commands("other", "CONNECT", "none") == before_attempts + 1


def test_a_connection_lost_mid_command_counts_as_an_error_of_that_command(instrumented_client, redis_server):
    client = instrumented_client("cache", retry=Retry(NoBackoff(), 0), socket_timeout=0.5)
    probe = key("core", "probe", 6)
    client.ping()  # connected, then the server freezes: the reply never comes
    before = errors("cache", "GET", "core:probe", "TimeoutError")

    redis_server.pause()
    try:
        with pytest.raises(RedisTimeoutError):
            client.get(probe)
    finally:
        redis_server.resume()

    assert errors("cache", "GET", "core:probe", "TimeoutError") == before + 1


def test_raise_on_error_still_raises_the_first_error_of_a_pipeline(instrumented_client):
    client = instrumented_client("state")
    probe = key("core", "probe", 7)
    client.set(probe, "a string")
    before = errors("state", "LPUSH", "core:probe", "ResponseError")

    pipe = client.pipeline(transaction=False)
    pipe.incr(key("core", "probe", 8))
    pipe.lpush(probe, "x")
    with pytest.raises(ResponseError, match=r"Command # 2 \(LPUSH .*WRONGTYPE"):
        pipe.execute()

    assert errors("state", "LPUSH", "core:probe", "ResponseError") == before + 1


def test_a_transaction_a_watched_key_aborted_is_not_an_error(instrumented_client, state_redis):
    client = instrumented_client("state")
    probe = key("core", "probe", 10)
    before = errors("state", "SET", "core:probe", "WatchError") + errors("state", "MULTI", "none", "WatchError")
    trips = round_trips("state", "MULTI", "core:probe")[0]

    with client.pipeline() as transaction:
        transaction.watch(probe)
        state_redis.set(probe, "changed meanwhile")
        transaction.multi()
        transaction.set(probe, "mine")
        with pytest.raises(WatchError):
            transaction.execute()

    assert round_trips("state", "MULTI", "core:probe")[0] == trips + 1  # answered: EXEC said nil
    assert errors("state", "SET", "core:probe", "WatchError") + errors("state", "MULTI", "none", "WatchError") == before


def test_a_command_refused_by_the_circuit_breaker_is_not_counted(instrumented_client):
    client = instrumented_client("cache", retry=BreakerRetry(NoBackoff(), 0, (), breaker=OPEN_BREAKER))
    probe = key("core", "probe", 11)
    before = commands("cache", "GET", "core:probe")

    with pytest.raises(CircuitOpen):
        client.get(probe)

    assert commands("cache", "GET", "core:probe") == before


def test_a_pipeline_lost_on_the_wire_counts_an_error_for_each_command(instrumented_client, redis_server):
    client = instrumented_client("cache", retry=Retry(NoBackoff(), 0), socket_timeout=0.5)
    client.ping()
    before = errors("cache", "GET", "core:probe", "TimeoutError")
    pipe = client.pipeline(transaction=False)
    pipe.get(key("core", "probe", 12))
    pipe.get(key("core", "probe", 13))

    redis_server.pause()
    try:
        with pytest.raises(RedisTimeoutError):
            pipe.execute()
    finally:
        redis_server.resume()

    assert errors("cache", "GET", "core:probe", "TimeoutError") == before + 2


# --- The summary line -----------------------------------------------------------------


def test_every_thousand_commands_log_one_json_summary(instrumented_client, caplog):
    client = instrumented_client("cache")
    pipe = client.pipeline(transaction=False)
    for n in range(instrumentation.SUMMARY_EVERY):
        pipe.get(key("core", "probe", n))

    with caplog.at_level("INFO", logger="kestrel.redis.summary"):
        pipe.execute()

    lines = [record.getMessage() for record in caplog.records if record.name == "kestrel.redis.summary"]
    assert len(lines) >= 1
    summary = json.loads(lines[-1])
    assert summary["event"] == "redis.commands"
    assert summary["commands"] % instrumentation.SUMMARY_EVERY < instrumentation.SUMMARY_EVERY
    assert summary["commands"] >= instrumentation.SUMMARY_EVERY
    assert summary["avg_ms"] > 0
    assert 0 <= summary["error_rate_pct"] <= 100
    assert {"commands", "errors", "error_rate_pct", "avg_ms", "seconds"} <= set(summary["window"])


# --- Labels ---------------------------------------------------------------------------


def test_key_families_follow_the_key_grammar():
    assert key_family(key("posts", "post", 42)) == "posts:post"
    assert key_family(key("accounts", "user", 7, "followers")) == "accounts:user"
    assert key_family(key("accounts", "session", "a cookie value!")) == "accounts:session"  # hashed id
    assert key_family(key("posts", "post", 1).encode()) == "posts:post"
    assert key_family("rq:queue:default") == "rq"
    assert key_family("another-site:posts:post:1") == "other"
    assert key_family(f"{settings.KESTREL_KEY_PREFIX}:django:views.decorators.cache") == "django"
    assert key_family(f"{settings.KESTREL_KEY_PREFIX}:Posts:Post:1") == "other"  # not the grammar


def test_commands_are_labelled_by_name_and_first_key():
    probe = key("core", "probe", 1)
    assert classify(("GET", probe)) == ("GET", "core:probe", False)
    assert classify(("get", probe)) == ("GET", "core:probe", False)
    assert classify(("EVALSHA", "abc123", 1, probe, "arg")) == ("EVALSHA", "core:probe", False)
    assert classify(("EVALSHA", "abc123", 0)) == ("EVALSHA", "none", False)
    assert classify(("XREAD", "BLOCK", 1000, "STREAMS", probe, "$")) == ("XREAD", "core:probe", True)
    assert classify(("BLMOVE", "rq:queue:email", "rq:wip:email", "LEFT", "RIGHT", 5)) == ("BLMOVE", "rq", True)
    assert classify(("CLIENT", "SETNAME", "kestrel-state")) == ("CLIENT SETNAME", "none", False)
    assert classify(("MEMORY USAGE", probe)) == ("MEMORY USAGE", "core:probe", False)
    assert classify(("OBJECT", "ENCODING", probe)) == ("OBJECT ENCODING", "core:probe", False)
    assert classify(("CONFIG GET", "maxmemory-policy")) == ("CONFIG GET", "none", False)
    assert classify(("SCAN", 0, "MATCH", probe)) == ("SCAN", "none", False)
    assert classify(("PING",)) == ("PING", "none", False)  # keyless without arguments: no entry needed
    assert classify(("NOT-A-COMMAND", probe)) == ("OTHER", "none", False)
    assert classify(("JSON.GET", probe)) == ("OTHER", "none", False)


def test_command_labels_stay_bounded(monkeypatch):
    monkeypatch.setattr(instrumentation, "_labels", set())
    monkeypatch.setattr(instrumentation, "_commands", {})
    monkeypatch.setattr(instrumentation, "MAX_COMMANDS", 2)
    probe = key("core", "probe", 1)

    assert classify(("GET", probe))[0] == "GET"
    assert classify(("SET", probe, "x"))[0] == "SET"
    assert classify(("HGET", probe, "f")) == ("OTHER", "none", False)
    assert classify(("GET", probe))[0] == "GET"


# --- Wiring ---------------------------------------------------------------------------


def test_every_client_of_a_role_is_instrumented(settings):
    assert settings.CACHES["default"]["OPTIONS"]["REDIS_CLIENT_CLASS"] == "core.instrumentation.redis_client"
    for role in ("state", "cache"):
        client = get_redis(role)
        assert isinstance(client, InstrumentedRedis)
        assert isinstance(client.pipeline(), InstrumentedPipeline)
        assert isinstance(client.pubsub(), InstrumentedPubSub)
    assert isinstance(get_queue("default").connection, InstrumentedRedis)  # django-rq: USE_REDIS_CACHE


def test_the_pool_keeps_the_urls_connection_kind_and_instruments_it():
    tls = InstrumentedBlockingConnectionPool.from_url("rediss://127.0.0.1:6380/0").connection_class
    unix = InstrumentedBlockingConnectionPool.from_url("unix:///tmp/redis.sock?db=1").connection_class
    tcp = InstrumentedBlockingConnectionPool.from_url("redis://127.0.0.1:6379/0").connection_class

    assert issubclass(tls, SSLConnection)
    assert issubclass(tls, InstrumentedConnectionMixin)
    assert issubclass(unix, UnixDomainSocketConnection)
    assert issubclass(unix, InstrumentedConnectionMixin)
    assert issubclass(tcp, Connection)
    assert issubclass(tcp, InstrumentedConnectionMixin)


def test_the_setting_turns_instrumentation_off_for_new_clients_and_pools(settings):
    settings.KESTREL_REDIS_METRICS_ENABLED = False

    pool = InstrumentedBlockingConnectionPool.from_url("redis://127.0.0.1:6379/0")

    assert pool.connection_class is Connection
    assert type(redis_client(connection_pool=pool)) is Redis  # no hook at all


def test_opening_a_connection_counts_as_one_connect(instrumented_client, state_redis):
    """CONNECT wraps redis-py's connect_check_health (not public API): this test fails
    when redis-py stops opening connections, or reopening a lost one, through it."""
    assert callable(getattr(Connection, "connect_check_health", None))
    client = instrumented_client("cache")
    before = commands("cache", "CONNECT", "none")

    client.ping()  # opens the pool's connection
    client.ping()  # reuses it
    assert commands("cache", "CONNECT", "none") == before + 1

    state_redis.client_kill_filter(_id=client.client_id())  # the server drops it
    client.ping()  # redis-py notices and opens another
    assert commands("cache", "CONNECT", "none") == before + 2


def test_the_histogram_exposes_what_was_recorded(instrumented_client):
    """core.metrics.observe_many writes prometheus-client's histogram internals: check the exposed result."""
    client = instrumented_client("cache")
    for n in range(4):
        client.get(key("core", "gauge", n))
    metrics.flush()

    labels = {"role": "cache", "command": "GET", "family": "core:gauge"}
    count = REGISTRY.get_sample_value("kestrel_redis_command_duration_seconds_count", labels)
    infinite = REGISTRY.get_sample_value("kestrel_redis_command_duration_seconds_bucket", {**labels, "le": "+Inf"})
    total = REGISTRY.get_sample_value("kestrel_redis_command_duration_seconds_sum", labels)
    assert count == infinite >= 4
    assert 0 < total < count  # seconds: each loopback GET well under one


@pytest.mark.slow
def test_core_counts_are_summed_in_memory_and_written_once_by_a_flush(tmp_path):
    """Every cache hit is a core.metrics count: under gunicorn it is summed in memory and
    written to the process's files by flush() (before a scrape, at most each second)."""
    script = """
import os
import django
django.setup()
from core import metrics
metrics.flush()  # the next one is a second away
for _ in range(3):
    metrics.incr("cache.hit", family="core_summed", tier="l1")
metrics.flush()
metrics.flush()  # nothing new: writes nothing more
metrics.incr("cache.hit", family="core_summed", tier="l1")
os._exit(0)  # no exit hooks: what was not flushed is not written
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=60)

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("kestrel_cache_hit_total", {"family": "core_summed", "tier": "l1"}) == 3


@pytest.mark.slow
def test_figures_from_several_processes_add_up_in_multiprocess_mode(tmp_path):
    """As under gunicorn: each process writes its own files, /metrics reads them all."""
    script = """
import django
django.setup()
from core import instrumentation, metrics
from core.keys import key
from core.redis import role_url
pool = instrumentation.InstrumentedBlockingConnectionPool.from_url(role_url("cache"), client_name="kestrel-cache")
client = instrumentation.InstrumentedRedis(connection_pool=pool)
for n in range(25):
    client.get(key("core", "multi", n))
metrics.incr("cache.hit", 2, family="core_multi", tier="redis")
"""  # figures are flushed at exit
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=60)

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    labels = {"role": "cache", "command": "GET", "family": "core:multi"}
    assert registry.get_sample_value("kestrel_redis_commands_total", labels) == 50
    assert registry.get_sample_value("kestrel_redis_command_duration_seconds_count", labels) == 50
    assert registry.get_sample_value("kestrel_cache_hit_total", {"family": "core_multi", "tier": "redis"}) == 4


def test_the_notification_stream_s_subscription_is_counted_on_the_state_role():
    """The SSE stream's subscriber has a pool of its own (feeds.sse): its commands are
    recorded like every other client's (SSUBSCRIBE on a cluster: shard channels)."""
    from feeds import sse

    command = "SSUBSCRIBE" if is_cluster(get_redis("state")) else "SUBSCRIBE"
    before = commands("state", command, "feeds:user")
    pubsub = sse._subscribe(4242)
    try:
        assert commands("state", command, "feeds:user") == before + 1
    finally:
        pubsub.close()
