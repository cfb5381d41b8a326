"""The live stream with the state role on a Redis Cluster: a person's channels are shard
channels (SSUBSCRIBE, SPUBLISH) on the node of their slot, and a stream follows that slot
across a failover and a migration, replaying what it missed. A private cluster with a
replica per primary (the session's roles have none), whatever the session's own roles.
"""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from django.urls import reverse
from redis.crc import key_slot

from core.redis import breaker, get_redis
from devstack.redis_cluster import LocalCluster
from feeds import keys, sse
from feeds.notifications import notify
from tests.clients import caches_on_clusters
from tests.feeds import test_notifications_sse
from tests.feeds.channels import subscribers
from tests.feeds.test_notifications_sse import SSEReader, open_stream, wait_until

clock = test_notifications_sse.clock  # the autouse fixture: streams on a fake clock, none left open

pytestmark = pytest.mark.django_db

TIMEOUT = 0.5  # seconds: the state role's connect and socket timeouts here
FAILOVER_DEADLINE = 30.0  # seconds a replica may take to replace a killed primary


@pytest.fixture(scope="module")
def cluster():
    """Three primaries with a replica each; a short node timeout: a killed primary's replica takes over in seconds."""
    with LocalCluster(
        primaries=3,
        replicas_per_primary=1,
        node_timeout_ms=1000,
        extra_config={"appendonly": "no", "maxmemory-policy": "noeviction"},
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cluster_caches(cluster):
    """settings.CACHES with the state role on the module's cluster, as settings.py builds it."""
    caches_setting = caches_on_clusters({"state": cluster.url}, timeout=TIMEOUT, retries=3)
    yield caches_setting
    with override_settings(CACHES=caches_setting):
        get_redis("state").close()


@pytest.fixture
def on_cluster(cluster, cluster_caches):
    """The state role on the module's cluster for one test, which must end with every node serving.

    No rate limits: the limiter's script does not run on a cluster yet (core/ratelimit/script.py).
    """
    with override_settings(CACHES=cluster_caches, KESTREL_RATE_LIMITS={}):
        breaker("state").reset()
        get_redis("state").flushdb()
        yield cluster
    cluster.start()  # returns once every node is up and serves its slots


@pytest.fixture
def ada_browser(on_cluster, ada) -> Client:
    """Ada's browser, its session in the cluster."""
    client = Client()
    client.force_login(ada)
    return client


def node_of(channel: str, cluster: LocalCluster) -> int:
    """The port of the primary serving `channel`'s slot now."""
    return cluster.node_for_slot(key_slot(channel.encode()))[1]


def shard_subscribers(cluster: LocalCluster, port: int, channel: str) -> int:
    """Subscribers of the shard channel on that one node."""
    _, count = cluster.client(port).execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return count


def bus_messages(cluster: LocalCluster) -> dict[str, int]:
    """Pub/sub messages the nodes sent each other over the cluster bus, by kind, summed over every node."""
    totals = {"publish": 0, "publishshard": 0}
    for port in cluster.servers:
        info = cluster.client(port).execute_command("CLUSTER", "INFO")
        fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
        for kind in totals:
            totals[kind] += int(fields.get(f"cluster_stats_messages_{kind}_sent", 0))
    return totals


def next_event_advancing(reader: SSEReader, clock, timeout: float = FAILOVER_DEADLINE) -> dict:
    """The next notification, advancing the fake clock meanwhile so the stream's resubscribe
    backoff runs out as often as it needs to."""
    found: list[dict] = []

    def arrived() -> bool:
        clock.advance(sse.POLICY.resubscribe_max)
        try:
            found.append(reader.next_event(timeout=0.2))
        except AssertionError:
            return False
        return True

    assert wait_until(arrived, timeout), "no notification arrived"
    return found[0]


def test_a_notification_is_spublished_to_the_node_of_the_persons_slot_only(ada, ada_browser, on_cluster):
    channel = keys.user_channel(ada.pk)
    owner = node_of(channel, on_cluster)
    assert key_slot(channel.encode()) == key_slot(keys.user_stream_control(ada.pk).encode())
    assert key_slot(channel.encode()) == key_slot(keys.user_notifications(ada.pk).encode())

    reader = open_stream(ada_browser)
    reader.next("retry")

    # One dedicated connection, on the owner, holds both of Ada's shard channels.
    assert shard_subscribers(on_cluster, owner, channel) == 1
    assert shard_subscribers(on_cluster, owner, keys.user_stream_control(ada.pk)) == 1
    [subscriber] = [c for c in on_cluster.client(owner).client_list() if c["name"] == "kestrel-sse"]
    assert subscriber["cmd"] == "ssubscribe"
    assert all(shard_subscribers(on_cluster, port, channel) == 0 for _, port in on_cluster.primaries() if port != owner)
    assert subscribers(get_redis("state"), channel) == 1
    before = bus_messages(on_cluster)

    sent = notify(user_id=ada.pk, kind="like", message="Bo liked your post", data={"postId": 7})

    event = reader.next_event()
    assert event["id"] == sent
    assert event["data"] == {"postId": 7}
    # SPUBLISH: one bus message, to the owner's replica; a PUBLISH would have gone to all five other nodes.
    after = bus_messages(on_cluster)
    assert after["publish"] == before["publish"]
    assert after["publishshard"] == before["publishshard"] + 1
    reader.close()
    assert shard_subscribers(on_cluster, owner, channel) == 0


def test_the_live_stream_works_end_to_end_on_the_cluster(ada, ada_browser, django_capture_on_commit_callbacks):
    first = notify(user_id=ada.pk, kind="like", message="seen")
    missed = [notify(user_id=ada.pk, kind="like", message=f"missed {n}") for n in range(3)]

    reader = open_stream(ada_browser, HTTP_LAST_EVENT_ID=first)

    assert [reader.next_event()["id"] for _ in missed] == missed  # replayed
    live = notify(user_id=ada.pk, kind="follow", message="live")
    assert reader.next_event()["id"] == live
    # Logging out SPUBLISHes on the control channel: the stream ends at once.
    with django_capture_on_commit_callbacks(execute=True):
        assert ada_browser.post(reverse("logout")).status_code == 302
    reader.next("comment", containing="session has ended")
    reader.next("end")
    assert [e["id"] for e in reader.events] == [*missed, live]
    assert wait_until(lambda: len(sse.streams) == 0)


def test_a_stream_follows_its_persons_slot_across_a_failover(ada, ada_browser, on_cluster, clock):
    channel = keys.user_channel(ada.pk)
    owner = node_of(channel, on_cluster)
    reader = open_stream(ada_browser)
    reader.next("retry")
    before = notify(user_id=ada.pk, kind="like", message="before the failover")
    assert reader.next_event()["id"] == before

    on_cluster.kill_primary(owner)
    reader.next("comment", containing="Redis is unavailable")
    on_cluster.wait_for_failover(owner, FAILOVER_DEADLINE)
    new_owner = node_of(channel, on_cluster)
    missed = notify(user_id=ada.pk, kind="like", message="after the failover, before resubscribing")
    assert missed is not None

    assert next_event_advancing(reader, clock)["id"] == missed  # resubscribed on the new primary, replayed
    assert new_owner != owner
    assert shard_subscribers(on_cluster, new_owner, channel) == 1
    live = notify(user_id=ada.pk, kind="like", message="live again")
    assert reader.next_event()["id"] == live
    assert [e["id"] for e in reader.events] == [before, missed, live]
    reader.close()


def test_a_stream_follows_its_persons_slot_to_another_node(ada, ada_browser, on_cluster, clock):
    channel = keys.user_channel(ada.pk)
    slot = key_slot(channel.encode())
    source = node_of(channel, on_cluster)
    target = next(port for _, port in on_cluster.primaries() if port != source)
    reader = open_stream(ada_browser)
    reader.next("retry")
    before = notify(user_id=ada.pk, kind="like", message="before the move")
    assert reader.next_event()["id"] == before

    migrate_slot(on_cluster, slot, source, target)
    # Redis ends the slot's shard subscriptions on the node it left (SUNSUBSCRIBE).
    reader.next("comment", containing="resubscribing")
    moved = notify(user_id=ada.pk, kind="like", message="after the move, before resubscribing")

    assert next_event_advancing(reader, clock)["id"] == moved
    assert shard_subscribers(on_cluster, target, channel) == 1
    live = notify(user_id=ada.pk, kind="like", message="live on the new node")
    assert reader.next_event()["id"] == live
    assert [e["id"] for e in reader.events] == [before, moved, live]
    reader.close()


def migrate_slot(cluster: LocalCluster, slot: int, source: int, target: int) -> None:
    """Move one slot and its keys between two primaries, as `redis-cli --cluster reshard` does."""
    source_client, target_client = cluster.client(source), cluster.client(target)
    source_id = source_client.execute_command("CLUSTER", "MYID")
    target_id = target_client.execute_command("CLUSTER", "MYID")
    target_client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source_client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    while names := source_client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        source_client.execute_command("MIGRATE", cluster.host, target, "", 0, 5000, "KEYS", *names)
    for _, port in cluster.primaries():
        cluster.client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    assert wait_until(lambda: cluster.node_for_slot(slot)[1] == target)
