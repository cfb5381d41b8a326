"""Memory pressure: the cache role full and evicting, the state role untouched.

The cache role's server gets a small `maxmemory` with `allkeys-lru`, as production
runs it, and is flooded with big cached posts until it evicts. Before the flood, people
leave state behind on the state role: sessions, a revoked token (the JWT denylist),
log-in rate-limit counters, a held profile lock, activity, timeline and notification
streams, and emails queued for a worker that is stopped. After it, the state server must
report no eviction, every one of its keys whose TTL has not run out must still be there,
and each must still work through the site.

The last test shows, for contrast, what the unsafe layout loses: one server for both
roles with `allkeys-lru` (production must never run this), where the same flood evicts
people's sessions.
"""

from __future__ import annotations

import threading
import time

import redis

from tests.live import live_kestrel
from tests.reliability.traffic import (
    TRAFFIC_ENV,
    Client,
    Recorder,
    create_members,
    figures_table,
    shell_json,
    wait_until,
    write_report,
)

CACHE_MAXMEMORY = "4mb"
FLOOD_POSTS = 1_500
FLOOD_CONTENT = 9_000  # characters per post: a cached post is about 9 KB, 13 MB in all
FLOOD_READERS = 8
CONTENT = ("Kestrels hover into the wind and drop on what they see. " * 200)[:FLOOD_CONTENT]


def _info(port: int, section: str) -> dict:
    client = redis.Redis(port=port)
    try:
        return client.info(section)
    finally:
        client.close()


def _state_keys(port: int) -> dict[bytes, tuple[str, float | None]]:
    """Every key of the state role's DB: its type and the moment (monotonic) it expires, None for never."""
    client = redis.Redis(port=port)
    try:
        keys = {}
        now = time.monotonic()
        for name in client.scan_iter(count=1000):
            pipe = client.pipeline(transaction=False)
            pipe.type(name)
            pipe.pttl(name)
            kind, pttl = pipe.execute()
            if pttl == -2:
                continue  # expired between SCAN and the lookup
            keys[name] = (kind.decode(), None if pttl == -1 else now + pttl / 1000)
        return keys
    finally:
        client.close()


def _missing_state_keys(port: int, before: dict[bytes, tuple[str, float | None]], *, margin: float = 1.0) -> list[str]:
    """Keys of `before` that are gone although their TTL has not run out."""
    client = redis.Redis(port=port)
    try:
        now = time.monotonic()
        alive = [name for name, (_, expires) in before.items() if expires is None or expires > now + margin]
        pipe = client.pipeline(transaction=False)
        for name in alive:
            pipe.exists(name)
        return [
            f"{name.decode()} ({before[name][0]})"
            for name, exists in zip(alive, pipe.execute(), strict=True)
            if not exists
        ]
    finally:
        client.close()


def _flood(site, recorder: Recorder, post_ids: list[int]) -> float:
    """Read every flood post once, FLOOD_READERS at a time, then until the cache role has evicted; seconds."""
    began = time.monotonic()
    ids = list(post_ids)
    lock = threading.Lock()

    def reader(n: int) -> None:
        client = Client(site.port, recorder, address=f"10.7.0.{n + 1}")
        try:
            while True:
                with lock:
                    if not ids:
                        return
                    post_id = ids.pop()
                client.call("GET", f"/api/posts/{post_id}", endpoint="GET /api/posts/{id} (flood)")
        finally:
            client.close()

    threads = [threading.Thread(target=reader, args=(n,), daemon=True) for n in range(FLOOD_READERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return time.monotonic() - began


def _create_flood_posts(site, author_id: int) -> list[int]:
    return shell_json(
        site,
        "import json, os\n"
        "from posts.models import Post\n"
        "author, count = int(os.environ['LIVE_AUTHOR']), int(os.environ['LIVE_COUNT'])\n"
        "content = os.environ['LIVE_TEXT']\n"
        "posts = Post.objects.bulk_create([Post(author_id=author, title=f'Field notes {n}', content=content)"
        " for n in range(count)], batch_size=500)\n"
        "print(json.dumps([p.pk for p in posts]))\n",
        LIVE_AUTHOR=str(author_id),
        LIVE_COUNT=str(FLOOD_POSTS),
        LIVE_TEXT=CONTENT,
    )


def _ratelimit_remaining(answer, policy: str) -> int | None:
    """The `r` of `policy` in the RateLimit field: what the limiter's counter says is left."""
    for item in (answer.headers.get("RateLimit") or "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip('"') == policy:
            for param in params.split(";"):
                key, _, value = param.partition("=")
                if key == "r":
                    return int(value)
    return None


def test_a_full_cache_evicts_only_cache_keys():
    with live_kestrel(env=TRAFFIC_ENV, cache_config={"maxmemory": CACHE_MAXMEMORY}) as site:
        site.worker.stop()  # queued jobs must sit in the state role through the flood
        *people, author = create_members(site, 5, prefix="mem")
        recorder = Recorder()
        clients = [Client(site.port, recorder, address=f"10.6.0.{n + 1}") for n in range(len(people))]
        sessions, bearers = (
            list(zip(people[:2], clients[:2], strict=True)),
            list(zip(people[2:], clients[2:], strict=True)),
        )
        try:
            # Sessions.
            for member, client in sessions:
                body = {"email": member.email, "password": member.password}
                assert client.call("POST", "/api/login", endpoint="POST /api/login", body=body).status == 200
            # Bearer tokens: one kept, one revoked (the denylist), one more log-in whose
            # RateLimit field shows the per-account counter.
            kept, revoked, remaining_before = {}, {}, {}
            for member, client in bearers:
                body = {"email": member.email, "password": member.password}
                kept[member.user_id] = client.call("POST", "/api/token", endpoint="POST /api/token", body=body).data
                pair = client.call("POST", "/api/token", endpoint="POST /api/token", body=body).data
                client.bearer = pair["access"]
                answer = client.call(
                    "POST", "/api/logout", endpoint="POST /api/logout", body={"refresh": pair["refresh"]}
                )
                assert answer.status == 200, answer
                revoked[member.user_id] = pair
                probe = client.call("POST", "/api/token", endpoint="POST /api/token", body=body)
                remaining_before[member.user_id] = _ratelimit_remaining(probe, "auth_account")
                client.bearer = kept[member.user_id]["access"]
            # Streams: posts (activity, followers' timelines), follows and likes (notifications).
            posts = {}
            for member, client in sessions + bearers:
                answer = client.call(
                    "POST",
                    "/api/posts",
                    endpoint="POST /api/posts",
                    ok=(201,),
                    body={"title": f"{member.username} before the flood", "content": "Still here after it."},
                )
                posts[member.user_id] = answer.data["id"]
            for member, client in sessions + bearers:
                for other in people:
                    if other.user_id != member.user_id:
                        client.call("POST", f"/api/users/{other.user_id}/follow", endpoint="POST follow", ok=(201,))
                        client.call("POST", f"/api/posts/{posts[other.user_id]}/like", endpoint="POST like", ok=(201,))
            # A lock held across the flood: a profile edit must still meet it.
            locked = people[0]
            site.shell(
                "import os\n"
                "from accounts.keys import user_profile_lock\n"
                "from core.locks import acquire\n"
                "acquire(user_profile_lock(int(os.environ['LIVE_USER'])), ttl_ms=600_000)\n",
                env={"LIVE_USER": str(locked.user_id)},
            )
            # Jobs queued while no worker runs.
            jobs = {}
            for member, client in sessions + bearers:
                answer = client.call(
                    "POST",
                    "/api/send-email",
                    endpoint="POST /api/send-email",
                    ok=(202,),
                    body={"email": member.email, "subject": f"queued through the flood {member.username}"},
                )
                jobs[answer.data["jobId"]] = client

            def pages(client: Client, member) -> dict[str, list]:
                activity = client.call("GET", f"/api/users/{member.user_id}/activity", endpoint="GET activity").data
                feed = client.call("GET", "/api/feed?count=100", endpoint="GET /api/feed").data
                notes = client.call("GET", "/api/notifications?count=100", endpoint="GET /api/notifications").data
                return {
                    "activity": [item["id"] for item in activity["items"]],
                    "feed": [item["id"] for item in feed["items"]],
                    "notifications": [item["id"] for item in notes["notifications"]],
                }

            streams_before = {m.user_id: pages(c, m) for m, c in sessions + bearers}
            state_before = _state_keys(site.state.port)
            state_keys_by_kind = _kinds(state_before)

            flood_ids = _create_flood_posts(site, author.user_id)
            flood_seconds = _flood(site, recorder, flood_ids)
            cache_info = _info(site.cache.port, "all")
            state_info = _info(site.state.port, "all")
            missing = _missing_state_keys(site.state.port, state_before)

            # Through the site, after the flood.
            after = {}
            after["sessions"] = {
                m.username: c.call("GET", "/api/me", endpoint="GET /api/me (after)").status for m, c in sessions
            }
            after["kept_tokens"] = {
                m.username: c.call("GET", "/api/me", endpoint="GET /api/me (after)").status for m, c in bearers
            }
            checker = Client(site.port, recorder, address="10.6.1.1")
            after["revoked_tokens"] = {}
            for member, _ in bearers:
                checker.bearer = revoked[member.user_id]["access"]
                after["revoked_tokens"][member.username] = checker.call(
                    "GET", "/api/me", endpoint="GET /api/me (revoked)", ok=(403,)
                ).status
            checker.bearer = None
            lock_client = dict((m.user_id, c) for m, c in sessions + bearers)[locked.user_id]
            after["locked_profile_edit"] = lock_client.call(
                "PATCH", f"/api/users/{locked.user_id}", endpoint="PATCH /api/users/{id}", ok=(409,), body={"bio": "x"}
            ).status
            after["auth_account_remaining"] = {}
            for member, _ in bearers:
                body = {"email": member.email, "password": member.password}
                probe = checker.call("POST", "/api/token", endpoint="POST /api/token", body=body)
                after["auth_account_remaining"][member.username] = (
                    remaining_before[member.user_id],
                    _ratelimit_remaining(probe, "auth_account"),
                )
            streams_after = {m.user_id: pages(c, m) for m, c in sessions + bearers}
            lost_stream_entries = {
                f"{uid} {kind}": sorted(set(before[kind]) - set(streams_after[uid][kind]))
                for uid, before in streams_before.items()
                for kind in before
                if set(before[kind]) - set(streams_after[uid][kind])
            }
            queue = redis.Redis(port=site.state.port)
            try:
                # RQ's own key for the email queue's waiting job ids (sign-up's welcome emails are there too).
                queued = {job_id.decode() for job_id in queue.lrange("rq:queue:email", 0, -1)}
            finally:
                queue.close()
            queued_after_flood = len(set(jobs) & queued)
            site.worker.start()
            jobs_done = wait_until(
                lambda: all(
                    c.call("GET", f"/api/jobs/{job_id}", endpoint="GET /api/jobs/{id}").data.get("status") == "finished"
                    for job_id, c in jobs.items()
                ),
                timeout=60,
                interval=0.5,
            )
            flood_reads_ok = sum(1 for s in recorder.snapshot() if s.endpoint.endswith("(flood)") and s.status == 200)
        finally:
            for client in clients:
                client.close()

        report = {
            "cache": {
                "maxmemory": cache_info["maxmemory"],
                "maxmemory_policy": cache_info["maxmemory_policy"],
                "used_memory": cache_info["used_memory"],
                "evicted_keys": cache_info["evicted_keys"],
                "keys": cache_info.get("db0", {}).get("keys"),
            },
            "state": {
                "maxmemory_policy": state_info["maxmemory_policy"],
                "used_memory": state_info["used_memory"],
                "evicted_keys": state_info["evicted_keys"],
                "keys_before_flood": len(state_before),
                "keys_before_by_kind": state_keys_by_kind,
                "keys_missing_after": missing,
            },
            "flood": {"posts": FLOOD_POSTS, "bytes_each": FLOOD_CONTENT, "seconds": round(flood_seconds, 2)},
            "flood_reads_ok": flood_reads_ok,
            "after": after,
            "lost_stream_entries": lost_stream_entries,
            "emails_queued_after_flood": queued_after_flood,
            "queued_jobs_finished_after_worker_start": jobs_done,
        }
        table = "\n".join(
            [
                f"Memory pressure: cache role at maxmemory {CACHE_MAXMEMORY} (allkeys-lru), state role noeviction",
                "",
                f"flood: {FLOOD_POSTS} posts of {FLOOD_CONTENT} characters read in {flood_seconds:.1f} s",
                f"cache: evicted_keys {cache_info['evicted_keys']}, used_memory {cache_info['used_memory']}"
                f" of {cache_info['maxmemory']}",
                f"state: evicted_keys {state_info['evicted_keys']}, {len(state_before)} keys before the flood"
                f" ({state_keys_by_kind}), missing after: {missing or 'none'}",
                f"through the site after the flood: {after}",
                f"stream entries lost: {lost_stream_entries or 'none'}; emails still queued: {queued_after_flood},"
                f" all finished once a worker ran: {jobs_done}",
                "",
                figures_table(recorder.figures(fault=None), fault=False),
            ]
        )
        path = write_report("memory-pressure", report, table=table)

    problems = []
    if cache_info["evicted_keys"] == 0:
        problems.append("the flood never made the cache role evict: the scenario tested nothing")
    if flood_reads_ok != FLOOD_POSTS:
        problems.append(f"only {flood_reads_ok} of {FLOOD_POSTS} flood reads answered 200")
    if state_info["evicted_keys"] != 0 or state_info["maxmemory_policy"] != "noeviction":
        problems.append(f"the state role evicted {state_info['evicted_keys']} keys ({state_info['maxmemory_policy']})")
    if missing:
        problems.append(f"state keys gone before their TTL: {missing}")
    for kind in ("session", "jwt", "ratelimit", "lock", "stream", "rq"):
        if not state_keys_by_kind.get(kind):
            problems.append(f"no {kind} keys on the state role before the flood: nothing to prove for them")
    if set(after["sessions"].values()) != {200} or set(after["kept_tokens"].values()) != {200}:
        problems.append(f"sessions or tokens lost: {after['sessions']}, {after['kept_tokens']}")
    if set(after["revoked_tokens"].values()) != {403}:
        problems.append(f"revoked tokens work again: {after['revoked_tokens']}")
    if after["locked_profile_edit"] != 409:
        problems.append(f"the held profile lock is gone: PATCH answered {after['locked_profile_edit']}")
    for name, (before, now) in after["auth_account_remaining"].items():
        # GCRA frees one log-in a minute: a counter that survived shows at most one more.
        if before is None or now is None or now > before:
            problems.append(f"{name}'s log-in limit was reset by the flood: {before} left before, {now} after")
    if lost_stream_entries:
        problems.append(f"stream entries lost: {lost_stream_entries}")
    if queued_after_flood != len(jobs) or not jobs_done:
        problems.append(f"queued jobs: {queued_after_flood} of {len(jobs)} still queued, all finished {jobs_done}")
    assert not problems, "\n".join(problems) + f"\n(report: {path})"


def _kinds(keys: dict[bytes, tuple[str, float | None]]) -> dict[str, int]:
    """How many state keys of each kind Kestrel keeps, by key family."""
    families = {
        "session": b":accounts:session:",
        "jwt": b":accounts:jwt",
        "ratelimit": b":core:ratelimit:",
        "lock": b":core:lock:",
        "stream": b":feeds:",
        "rq": b"rq:",
    }
    counts = dict.fromkeys(families, 0)
    for name in keys:
        for kind, marker in families.items():
            if marker in name or (kind == "rq" and name.startswith(marker)):
                counts[kind] += 1
                break
    return counts


def test_for_contrast_one_shared_allkeys_lru_server_evicts_sessions():
    """The unsafe layout, never to be run in production: both roles on one server with
    allkeys-lru. The same flood that the cache role's own server absorbs evicts sessions."""
    with live_kestrel(
        env=TRAFFIC_ENV,
        shared_redis=True,
        state_config={"maxmemory": CACHE_MAXMEMORY, "maxmemory-policy": "allkeys-lru"},
    ) as site:
        *people, author = create_members(site, 9, prefix="unsafe")
        recorder = Recorder()
        clients = [Client(site.port, recorder, address=f"10.5.0.{n + 1}") for n in range(len(people))]
        try:
            for member, client in zip(people, clients, strict=True):
                body = {"email": member.email, "password": member.password}
                assert client.call("POST", "/api/login", endpoint="POST /api/login", body=body).status == 200
            flood_ids = _create_flood_posts(site, author.user_id)
            _flood(site, recorder, flood_ids)
            info = _info(site.state.port, "stats")
            statuses = [c.call("GET", "/api/me", endpoint="GET /api/me (after)", ok=(200, 401)).status for c in clients]
        finally:
            for client in clients:
                client.close()
        lost = statuses.count(401)
        path = write_report(
            "memory-pressure-unsafe-shared-server",
            {
                "layout": "UNSAFE: one server, allkeys-lru, both roles",
                "evicted_keys": info["evicted_keys"],
                "sessions": len(statuses),
                "sessions_lost": lost,
            },
            table=(
                "UNSAFE LAYOUT, for contrast only (production must never run it): both roles on one server,"
                f" maxmemory {CACHE_MAXMEMORY}, allkeys-lru\n"
                f"after the same flood: evicted_keys {info['evicted_keys']}, sessions lost {lost} of {len(statuses)}"
            ),
        )
    assert info["evicted_keys"] > 0, f"the flood evicted nothing (report: {path})"
    assert lost > 0, f"no session was evicted by the flood on the shared server (report: {path})"
