"""The state role's per-person channels as the tests listen to them: plain channels on one
server, shard channels (SSUBSCRIBE) on a cluster, as feeds.sse subscribes."""

from __future__ import annotations

import time

from redis.client import PubSub
from redis.cluster import ClusterPubSub

from core.redis import RedisClient, is_cluster

SUBSCRIBED = ("subscribe", "ssubscribe")


class Listener:
    """A test's subscription to some of the state role's channels; close() it."""

    def __init__(self, state_redis: RedisClient, *channels: str) -> None:
        self.sharded = is_cluster(state_redis)
        self.pubsub: PubSub = state_redis.pubsub(ignore_subscribe_messages=False)
        if self.sharded:
            self.pubsub.ssubscribe(*channels)
        else:
            self.pubsub.subscribe(*channels)
        pending = {channel.encode() for channel in channels}
        deadline = time.monotonic() + 5
        while pending and time.monotonic() < deadline:
            message = self._read(0.1)
            if message is not None and message["type"] in SUBSCRIBED:
                pending.discard(message["channel"])
        assert not pending, f"no confirmation of {pending}"

    def _read(self, timeout: float) -> dict | None:
        if self.sharded:
            assert isinstance(self.pubsub, ClusterPubSub)
            return self.pubsub.get_sharded_message(timeout=timeout)
        return self.pubsub.get_message(timeout=timeout)

    def next(self, timeout: float = 5.0) -> dict | None:
        """The next message published to one of the channels (None by the deadline)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._read(min(remaining, 0.1))
            if message is not None and message["type"] in ("message", "smessage"):
                return message
        return None

    def close(self) -> None:
        self.pubsub.close()


def subscribers(state_redis: RedisClient, channel: str) -> int:
    """How many connections listen to `channel` (on a cluster, as a shard channel: asked of
    the node of its slot, which redis-py would not choose by itself)."""
    if is_cluster(state_redis):
        [(_, count)] = state_redis.pubsub_shardnumsub(channel, target_nodes=state_redis.get_node_from_key(channel))
    else:
        [(_, count)] = state_redis.pubsub_numsub(channel)
    return count
