"""Redis best-practice rules, checked against the live servers (manage.py redis_audit).

Rules: reachable, layout (roles on separate servers), cache_ttl (every cache key has a
TTL, by SCAN), big_keys, eviction (state and queue `noeviction`, cache evicting under a
maxmemory), persistence (the state and queue roles on AOF), slowlog. The roles are
core.redis.reported_roles(): the queue role when it is not the state role's database.
Each gives one Finding per role: ok,
warning, error or skipped (a managed Redis may forbid CONFIG). A run is broken on any
error, or any warning under `strict` (docs/design.md, "Redis roles", says why each rule).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from redis.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from core.instrumentation import key_family, redacted_command
from core.keys import redact_key
from core.redis import SAFE_STATE_POLICIES, RedisClient, Role, get_redis, reported_roles

OK, WARNING, ERROR, SKIPPED = "ok", "warning", "error", "skipped"

EVICTING_CACHE_POLICIES = {"allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu"}
EVICTING_CACHE_POLICIES |= {"volatile-random", "volatile-ttl"}  # every cache key has a TTL
EXAMPLES = 5  # keys or entries shown per finding
# The roles that must keep what they hold (noeviction, AOF), and what they would lose.
DURABLE_ROLES = {
    "state": "sessions, revoked tokens, rate-limit counters, locks and queued jobs",
    "queue": "queued jobs, their results and the workers' registrations",
}


@dataclass(frozen=True)
class Finding:
    rule: str
    role: str  # "state", "cache", "queue" or "both" (state and cache)
    level: str
    message: str
    details: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        data = asdict(self)
        data["details"] = list(self.details)
        return data


@dataclass(frozen=True)
class AuditOptions:
    strict: bool = False
    max_keys: int = 100_000  # keys SCANned per role for cache_ttl; the rest is not read
    sample: int = 1_000  # keys per role given to MEMORY USAGE
    big_key_bytes: int = 1024 * 1024
    slowlog_entries: int = 10
    scan_count: int = 1_000  # SCAN COUNT hint and pipeline batch size


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    strict: bool = False

    @property
    def broken(self) -> list[Finding]:
        levels = {ERROR, WARNING} if self.strict else {ERROR}
        return [finding for finding in self.findings if finding.level in levels]

    def as_dict(self) -> dict:
        return {
            "ok": not self.broken,
            "strict": self.strict,
            "broken": len(self.broken),
            "findings": [finding.as_dict() for finding in self.findings],
        }


def run_audit(options: AuditOptions | None = None, *, clients: dict[Role, RedisClient] | None = None) -> AuditReport:
    options = options or AuditOptions()
    clients = clients or {role: get_redis(role) for role in reported_roles()}
    report = AuditReport(strict=options.strict)
    add = report.findings.extend

    infos: dict[Role, dict] = {}
    for role, client in clients.items():
        try:
            infos[role] = client.info()
        except RedisError as exc:
            report.findings.append(Finding("reachable", role, ERROR, f"{_where(role, client)} did not answer: {exc}"))
            continue
        report.findings.append(Finding("reachable", role, OK, f"{_where(role, client)} answers"))

    if "state" in infos and "cache" in infos:
        add(_layout(clients, infos))
    for role in infos:
        add(_eviction(role, infos[role]))
    for role in infos:
        if role in DURABLE_ROLES:
            add(_persistence(role, clients[role], infos[role]))
    if "cache" in infos:
        add(_cache_ttl(clients["cache"], options))
    for role in infos:
        add(_big_keys(role, clients[role], options))
    add(_slowlog(clients, infos, options))
    return report


def _where(role: str, client: RedisClient) -> str:
    if isinstance(client, RedisCluster):
        return f"the {role} role's Redis Cluster"
    kwargs = client.connection_pool.connection_kwargs  # no password in this form
    address = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
    return f"the {role} role's Redis at {address}/{kwargs.get('db', 0)}"


def _db(client: RedisClient) -> int:
    if isinstance(client, RedisCluster):
        return 0  # a cluster has database 0 only
    return int(client.connection_pool.connection_kwargs.get("db", 0) or 0)


def _layout(clients: dict[Role, RedisClient], infos: dict[Role, dict]) -> list[Finding]:
    same_server = infos["state"].get("run_id") == infos["cache"].get("run_id")
    if same_server and _db(clients["state"]) == _db(clients["cache"]):
        return [
            Finding(
                "layout",
                "both",
                ERROR,
                "The state and cache roles are the same database: clearing the cache deletes sessions and jobs.",
            )
        ]
    if same_server:
        return [
            Finding(
                "layout",
                "both",
                WARNING,
                "The state and cache roles share one Redis server (different databases): eviction is per "
                "server, so the cache cannot evict without evicting state. Give the cache its own server.",
            )
        ]
    return [Finding("layout", "both", OK, "The state and cache roles are separate servers")]


def _eviction(role: str, info: dict) -> list[Finding]:
    policy = str(info.get("maxmemory_policy", "unknown"))
    maxmemory = int(info.get("maxmemory", 0) or 0)
    if role in DURABLE_ROLES:
        if policy in SAFE_STATE_POLICIES:
            return [Finding("eviction", role, OK, f"maxmemory-policy {policy}")]
        return [
            Finding(
                "eviction",
                role,
                ERROR,
                f"The {role} role has maxmemory-policy {policy!r}: under memory pressure it evicts "
                f"{DURABLE_ROLES[role]}. Use noeviction.",
            )
        ]
    if policy not in EVICTING_CACHE_POLICIES:
        return [
            Finding(
                "eviction",
                role,
                WARNING,
                f"The cache role has maxmemory-policy {policy!r}: a full cache refuses writes instead of "
                "evicting. Use allkeys-lru or allkeys-lfu with a maxmemory.",
            )
        ]
    if maxmemory == 0:
        return [
            Finding(
                "eviction",
                role,
                WARNING,
                f"The cache role evicts ({policy}) but has no maxmemory: it grows until the host runs out of memory.",
            )
        ]
    return [Finding("eviction", role, OK, f"maxmemory-policy {policy}, maxmemory {maxmemory} bytes")]


def _persistence(role: str, client: RedisClient, info: dict) -> list[Finding]:
    findings = []
    if str(info.get("rdb_last_bgsave_status", "ok")) != "ok":
        # With stop-writes-on-bgsave-error (the default) Redis then refuses every write.
        findings.append(Finding("persistence", role, ERROR, f"The {role} role's last RDB snapshot failed."))
    if not int(info.get("aof_enabled", 0) or 0):
        findings.append(
            Finding(
                "persistence",
                role,
                WARNING,
                f"The {role} role does not append to an AOF: a crash loses the {DURABLE_ROLES[role]} written "
                "since the last snapshot. Use appendonly yes, appendfsync everysec.",
            )
        )
        return findings
    if str(info.get("aof_last_write_status", "ok")) != "ok":
        findings.append(Finding("persistence", role, ERROR, f"The {role} role's last AOF write failed."))
    try:
        fsync = str(client.config_get("appendfsync").get("appendfsync", "unknown"))
    except ResponseError:
        fsync = "unknown (CONFIG is not allowed)"
    if fsync == "no":
        findings.append(
            Finding(
                "persistence",
                role,
                WARNING,
                f"The {role} role's AOF has appendfsync no: the kernel decides when writes reach the disk.",
            )
        )
    if not findings:
        findings.append(Finding("persistence", role, OK, f"AOF on, appendfsync {fsync}"))
    return findings


def _batches(client: RedisClient, options: AuditOptions, match: str | None, limit: int):
    """Keys by SCAN (never KEYS) in batches, at most `limit` in all."""
    batch: list[bytes] = []
    for seen, key in enumerate(client.scan_iter(match=match, count=options.scan_count), start=1):
        batch.append(key)
        if len(batch) >= options.scan_count:
            yield batch
            batch = []
        if seen >= limit:
            break
    if batch:
        yield batch


def _cache_ttl(client: RedisClient, options: AuditOptions) -> list[Finding]:
    scanned = 0
    without_ttl: list[str] = []
    for batch in _batches(client, options, f"{settings.KESTREL_KEY_PREFIX}:*", options.max_keys):
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.ttl(key)
        for key, ttl in zip(batch, pipe.execute(), strict=True):
            if ttl == -1:  # -2: deleted since the SCAN saw it
                without_ttl.append(key.decode(errors="replace"))
        scanned += len(batch)
    limited = " (stopped at --max-keys)" if scanned >= options.max_keys else ""
    if not without_ttl:
        return [Finding("cache_ttl", "cache", OK, f"All {scanned} cache keys scanned have a TTL{limited}")]
    families = Counter(key_family(key) for key in without_ttl)
    return [
        Finding(
            "cache_ttl",
            "cache",
            ERROR,
            f"{len(without_ttl)} of {scanned} cache keys scanned have no TTL{limited}: they never expire and "
            "outlive the rows they copy.",
            (
                "by family: " + ", ".join(f"{family} {count}" for family, count in families.most_common()),
                *(f"e.g. {redact_key(key)}" for key in without_ttl[:EXAMPLES]),
            ),
        )
    ]


def _big_keys(role: str, client: RedisClient, options: AuditOptions) -> list[Finding]:
    sampled = 0
    big: list[tuple[int, str]] = []
    try:
        for batch in _batches(client, options, None, options.sample):
            pipe = client.pipeline(transaction=False)
            for key in batch:
                pipe.memory_usage(key)
            for key, size in zip(batch, pipe.execute(), strict=True):
                if size is not None and size > options.big_key_bytes:
                    big.append((size, key.decode(errors="replace")))
            sampled += len(batch)
    except ResponseError as exc:  # MEMORY is not allowed on some managed services
        return [Finding("big_keys", role, SKIPPED, f"MEMORY USAGE is not available: {exc}")]
    if not big:
        return [Finding("big_keys", role, OK, f"No key over {options.big_key_bytes} bytes in a sample of {sampled}")]
    big.sort(reverse=True)
    return [
        Finding(
            "big_keys",
            role,
            ERROR,
            f"{len(big)} keys over {options.big_key_bytes} bytes in a sample of {sampled}: a big key blocks the "
            "server while it is read, written, expired or evicted.",
            tuple(f"{redact_key(key)}: {size} bytes" for size, key in big[:EXAMPLES]),
        )
    ]


def _slowlog(clients: dict[Role, RedisClient], infos: dict[Role, dict], options: AuditOptions) -> list[Finding]:
    findings = []
    seen_servers: dict[str, str] = {}
    for role, info in infos.items():
        server = str(info.get("run_id", role))
        if server in seen_servers:  # one SLOWLOG per server, not per database
            continue
        seen_servers[server] = role
        label = role if len([r for r in infos if infos[r].get("run_id") == server]) == 1 else "both"
        try:
            entries = clients[role].slowlog_get(options.slowlog_entries)
            total = clients[role].slowlog_len()
        except ResponseError as exc:
            findings.append(Finding("slowlog", label, SKIPPED, f"SLOWLOG is not available: {exc}"))
            continue
        if not total:
            findings.append(Finding("slowlog", label, OK, "SLOWLOG is empty"))
            continue
        entries = sorted(entries, key=lambda entry: entry.get("duration", 0), reverse=True)
        findings.append(
            Finding(
                "slowlog",
                label,
                WARNING,
                f"{total} commands in SLOWLOG ran longer than slowlog-log-slower-than; the slowest:",
                tuple(_slowlog_line(entry) for entry in entries[:EXAMPLES]),
            )
        )
    return findings


def _slowlog_line(entry: dict) -> str:
    command = entry.get("command", b"")
    if isinstance(command, bytes):
        command = command.decode(errors="replace")
    # The command and its first key, redacted: never the values, nor a session key's id.
    shown = redacted_command(tuple(command.split(" ")))[:120] if command else ""
    when = datetime.fromtimestamp(int(entry.get("start_time", 0)), UTC).isoformat(timespec="seconds")
    client = entry.get("client_name", b"")
    if isinstance(client, bytes):
        client = client.decode(errors="replace")
    return f"{entry.get('duration', 0)} us at {when} {shown}" + (f" (client {client})" if client else "")
