"""The capacity run's arithmetic (bench/capacity.py): key families, sizes, per-person and per-1,000 figures."""

import pytest
import redis
from prometheus_client import CollectorRegistry, Counter, generate_latest

from bench.capacity import (
    PER,
    POST,
    SCRATCH_KEY,
    SHARED,
    active_people,
    command_counts,
    family_unit,
    key_family,
    per_person,
    per_person_at_caps,
    per_post,
    role_commands,
    role_figures,
    sample_server,
    server_figures,
    size_keys,
    stream_at_cap,
)
from bench.load import Request
from devstack.redis_server import RedisServer


@pytest.fixture(scope="module")
def own_server():
    """A server of this module's own: INFO's counters are the whole server's, so nothing else may use it."""
    with RedisServer(extra_config={"maxmemory-policy": "noeviction"}) as server:
        yield server


@pytest.fixture
def client(own_server):
    client = redis.Redis(host=own_server.host, port=own_server.port)
    client.flushall()
    yield client
    client.flushall()
    client.close()


def test_a_family_is_the_key_without_its_prefix_and_id(settings):
    from accounts import keys as account_keys
    from core.keys import key
    from feeds import keys as feed_keys
    from posts import keys as post_keys

    settings.KESTREL_KEY_PREFIX = "kestrel"
    assert key_family(post_keys.post_detail(42)) == "posts:post"
    assert key_family(post_keys.post_views(42)) == "posts:post:views"
    assert key_family(post_keys.post_detail(42) + ":lock") == "posts:post:lock"  # a cache-aside lease
    assert key_family(feed_keys.user_timeline(7)) == "feeds:user:timeline"
    assert key_family(account_keys.user_profile(7)) == "accounts:user"
    assert key_family(account_keys.session("0x8fz1kq3m9v2w7c4h6j5n0p1r2s3t4u5v")) == "accounts:session"
    assert key_family(account_keys.jwt_revoked("5b0e7c9a31f44d0c8d1e2f3a4b5c6d7e")) == "accounts:jwt:revoked"
    assert key_family(key("core", "ratelimit", "0a1b2c3d", "api")) == "core:ratelimit:api"
    assert key_family(post_keys.leaderboard_version()) == "posts:leaderboard:version"
    assert key_family(feed_keys.notified_once("like", 3, 9, recipient_id=4)) == "feeds:notified"
    assert key_family("rq:job:0c6f5a0e-2d0b-4c55-9a83-5d1e3f6b7a21") == "rq:job"
    assert key_family("kestrel:django:some-third-party-key") == "django"
    assert key_family("someone-else:app:entity:1") == "other"
    assert key_family("myapp:posts:post:42", prefix="myapp") == "posts:post"


def test_a_family_grows_with_posts_people_or_neither():
    assert family_unit("posts:post") == POST
    assert family_unit("posts:post:viewers") == POST
    assert {family_unit(f) for f in ("feeds:user:timeline", "accounts:user", "posts:user:stats")} == {"person"}
    assert {family_unit(f) for f in ("accounts:session", "core:ratelimit:api", "feeds:notified")} == {"person"}
    assert {family_unit(f) for f in ("posts:leaderboard", "posts:page", "rq:job", "other")} == {SHARED}


def test_keys_are_sized_by_memory_usage_and_summed_by_family(client):
    post = "x" * 300
    for post_id in (1, 2, 3):
        client.set(f"kestrel:posts:post:{post_id}", post[: 100 * post_id])
    for user_id, entries in ((7, 3), (8, 40)):
        for n in range(entries):
            client.xadd(f"kestrel:feeds:user:{user_id}:timeline", {"post": n})
    client.zadd("kestrel:posts:leaderboard", {"a": 1, "b": 2, "c": 3, "d": 4})
    client.hset("rq:job:abc123", mapping={"status": "queued", "origin": "email"})

    # Batches of 2: the keys span several pipelines.
    sizes = size_keys(client, batch=2)

    def usage(*keys: str) -> int:
        return sum(client.memory_usage(key, samples=0) for key in keys)

    assert list(sizes) == ["feeds:user:timeline", "posts:leaderboard", "posts:post", "rq:job"]
    posts = sizes["posts:post"]
    assert (posts.keys, posts.elements) == (3, 3)
    assert posts.bytes == usage(*(f"kestrel:posts:post:{n}" for n in (1, 2, 3)))
    timelines = sizes["feeds:user:timeline"]
    assert (timelines.keys, timelines.elements) == (2, 43)
    assert timelines.bytes == usage("kestrel:feeds:user:7:timeline", "kestrel:feeds:user:8:timeline")
    assert (sizes["posts:leaderboard"].elements, sizes["rq:job"].elements) == (4, 2)


def test_per_person_divides_each_person_family_by_the_people_and_per_post_each_post_family_by_its_keys(client):
    client.set("kestrel:posts:post:1", "x" * 100)
    client.set("kestrel:posts:post:2", "x" * 500)
    client.set("kestrel:posts:post:1:views", 12)
    client.xadd("kestrel:feeds:user:1:notifications", {"kind": "like"})
    client.set("kestrel:core:ratelimit:0a1b2c3d:api", "1700000000000")
    client.set("kestrel:posts:leaderboard:version", 3)
    sizes = size_keys(client)

    people = per_person(sizes, 4)
    assert people["people"] == 4
    assert people["families"] == {
        "core:ratelimit:api": sizes["core:ratelimit:api"].bytes / 4,
        "feeds:user:notifications": sizes["feeds:user:notifications"].bytes / 4,
    }
    assert people["total"] == pytest.approx(sum(people["families"].values()))
    posts = per_post(sizes)
    assert posts["families"] == {
        "posts:post": sizes["posts:post"].bytes / 2,
        "posts:post:views": sizes["posts:post:views"].bytes,
    }
    assert posts["total"] == pytest.approx(sum(posts["families"].values()))


def test_a_stream_is_sized_at_its_cap_on_a_copy_grown_from_its_longest_keys_entries(client, own_server):
    start = 1_700_000_000_000
    for n in range(5):  # 4 s apart
        entry = {"action": "liked", "targetId": n, "timestamp": start + 4000 * n}
        client.xadd("kestrel:feeds:user:1:activity", entry, id=f"{start + 4000 * n}-0")
    client.xadd("kestrel:feeds:user:2:activity", {"action": "posted", "targetId": 99, "timestamp": start})
    scratch = redis.Redis(host=own_server.host, port=own_server.port, db=15)
    try:
        used = stream_at_cap(client, scratch, "feeds:user:activity", 200)
        assert scratch.dbsize() == 0  # the copy is gone
        # The same 200 entries written by hand (under the same name, which MEMORY USAGE counts):
        # the longest stream's five over and over, 4 s apart.
        for n in range(200):
            entry = {"action": "liked", "targetId": n % 5, "timestamp": start + 4000 * (n % 5)}
            scratch.xadd(SCRATCH_KEY, entry, id=f"{start + 4000 * n}-0")
        assert used == scratch.memory_usage(SCRATCH_KEY, samples=0)
        assert stream_at_cap(client, scratch, "feeds:user:notifications", 200) is None
    finally:
        scratch.flushdb()
        scratch.close()


def test_per_person_at_the_caps_puts_a_full_stream_in_place_of_each_persons_share(client):
    client.xadd("kestrel:feeds:user:1:activity", {"action": "liked"})
    client.set("kestrel:core:ratelimit:0a1b2c3d:api", "1700000000000")
    sizes = size_keys(client)
    figures = per_person_at_caps(sizes, 2, {"feeds:user:activity": 48_000})
    assert figures["families"] == {
        "core:ratelimit:api": sizes["core:ratelimit:api"].bytes / 2,
        "feeds:user:activity": 48_000,
    }
    assert figures["total"] == pytest.approx(48_000 + sizes["core:ratelimit:api"].bytes / 2)


def test_a_servers_window_is_scaled_to_1000_requests_per_second(client):
    client.ping()  # connected (and its handshake counted) before the window
    before = sample_server(client)
    for _ in range(300):
        client.get("k")
    pipe = client.pipeline(transaction=False)
    for _ in range(100):
        pipe.set("k", "v")
    pipe.execute()
    client.eval("redis.call('INCR', KEYS[1]); return redis.call('TIME')", 1, "n")
    after = sample_server(client)

    figures = server_figures(before, after, requests=50)

    # The first INFO runs inside the window; a script's inner commands count as commands.
    assert figures["per_1000"]["by_command"] == {
        name: count * PER / 50 for name, count in {"get": 300, "set": 100, "eval": 1, "incr": 1, "time": 1}.items()
    } | {"info": PER / 50}
    assert figures["commands"] == 404
    assert figures["scripts"] == 1
    assert figures["per_1000"]["commands"] == 404 * PER / 50
    # One read event per round trip: the GETs, the pipeline, the EVAL and the second INFO.
    assert figures["round_trips"] == 300 + 1 + 1 + 1
    assert figures["net_in"] > 300 * len(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    assert figures["per_1000"]["net_in_bytes"] == figures["net_in"] * PER / 50
    assert figures["per_1000"]["net_out_bytes"] == figures["net_out"] * PER / 50
    assert figures["per_1000"]["cores"] == pytest.approx(figures["cpu_s"] * PER / 50)
    assert figures["used_memory_delta"] == after.used_memory - before.used_memory


def _metrics_page(counts: dict[tuple[str, str, str], int]) -> str:
    """A /metrics page as prometheus-client writes it, with Kestrel's command counter."""
    registry = CollectorRegistry()
    labels = ["role", "command", "family"]
    counter = Counter("kestrel_redis_commands", "Redis commands sent.", labels, registry=registry)
    for values, count in counts.items():
        counter.labels(*values).inc(count)
    return generate_latest(registry).decode()


def test_commands_on_rq_keys_are_the_queue_roles_and_script_calls_are_counted_apart():
    before = command_counts(_metrics_page({("state", "GET", "accounts:session"): 5, ("state", "LMOVE", "rq"): 2}))
    after = command_counts(
        _metrics_page(
            {
                ("state", "GET", "accounts:session"): 15,
                ("state", "EVALSHA", "core:ratelimit"): 30,
                ("state", "LMOVE", "rq"): 6,
                ("state", "EVALSHA", "rq"): 1,
                ("cache", "GET", "posts:post"): 40,
            }
        )
    )
    assert role_commands(before, after) == {
        "cache": {"commands": 40, "scripts": 0},
        "queue": {"commands": 5, "scripts": 1},
        "state": {"commands": 40, "scripts": 30},
    }


def test_the_queue_roles_commands_are_taken_out_of_the_state_servers():
    servers = {"cache": {"commands": 3000}, "state": {"commands": 9000}}
    sent = {"cache": {"commands": 2000, "scripts": 100}, "state": {"commands": 5000}, "queue": {"commands": 50}}
    roles = role_figures(servers, sent, requests=2000)
    assert {role: figures["run"] for role, figures in roles.items()} == {"cache": 3000, "state": 8950, "queue": 50}
    assert roles["state"]["run_per_1000"] == 8950 * PER / 2000
    assert roles["cache"]["sent_per_1000"] == 1000
    assert (roles["cache"]["scripts_sent"], roles["queue"]["server"]) == (100, "state")


def test_the_active_people_are_those_with_a_request_among_those_served():
    plan = [Request("feed", "GET", "/api/feed", user) for user in (0, 1, 0, 2, 3)]
    warmup = [Request("post", "GET", "/api/posts/1", user) for user in (4, 4, 5)]
    assert active_people([(plan, 3)]) == 2
    assert active_people([(plan, 3), (warmup, 1)]) == 3
    assert active_people([(plan, 100)]) == 4
