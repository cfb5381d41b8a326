"""manage.py redis_rename_keys: move the state role's keys to the grammar with hash tags.

Keys named before hash tags (kestrel:accounts:session:<id>) are renamed in place to what
the builders name them now (kestrel:accounts:session:{<id>}), so an upgrade keeps
sessions, token denylists and epochs, limiter counters, streams, notifications, pending
views and the fence counter. Each app's keys module lists its families (RENAMES, as
core.keys.Rename and SplitSet); they are found the way Django finds apps' modules.

RENAMENX: a key whose new name is taken is skipped and reported, never overwritten.
TTLs go with the keys. Idempotent: a second run finds nothing to do. Run it with the old
release stopped and before the new one starts (docs/deploy.md, "Upgrading"), against
one server or a Sentinel-managed primary: a RENAME across hash slots needs one server.

The cache role is left alone: every cache key has a TTL (a day at most, redis_audit
checks), nothing reads the old names, and LRU eviction takes unread keys first.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from redis import Redis
from redis.exceptions import ResponseError

from core import locks
from core.keys import Rename, SplitSet
from core.ratelimit import script
from core.redis import get_redis


@dataclass
class Counts:
    """What happened to one family's keys (or would, with --dry-run)."""

    renamed: int = 0
    taken: int = 0  # the new name exists: left as they are
    current: int = 0  # already named as the builders name them
    gone: int = 0  # expired between SCAN and RENAME


def key_renames() -> list[Rename | SplitSet]:
    """Every family's rename: core's own, then each installed app's keys module's RENAMES."""
    found: list[Rename | SplitSet] = [*locks.RENAMES, *script.RENAMES]
    for config in apps.get_app_configs():
        module = f"{config.name}.keys"
        if importlib.util.find_spec(module) is not None:
            found += getattr(importlib.import_module(module), "RENAMES", ())
    return found


def _scan(client: Redis, match: str, batch: int) -> Iterator[list[str]]:
    keys: list[str] = []
    for raw in client.scan_iter(match=match, count=batch):
        keys.append(raw.decode())
        if len(keys) >= batch:
            yield keys
            keys = []
    if keys:
        yield keys


def rename_family(client: Redis, rename: Rename, *, batch: int, dry_run: bool) -> Counts:
    """RENAMENX every old key of `rename`'s family, `batch` keys per SCAN call and pipeline."""
    counts = Counts()
    for keys in _scan(client, f"{settings.KESTREL_KEY_PREFIX}:{rename.match}", batch):
        moves = [(old, new) for old in keys if (new := rename.new_name(old)) is not None and new != old]
        counts.current += len(keys) - len(moves)
        if not moves:
            continue
        pipe = client.pipeline(transaction=False)
        for old, new in moves:
            if dry_run:
                pipe.exists(new)
            else:
                pipe.renamenx(old, new)
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, ResponseError):
                if "no such key" not in str(reply).lower():
                    raise CommandError(f"Renaming a key of {rename.family} failed: {reply}")
                counts.gone += 1
            elif (not reply) if dry_run else reply:  # EXISTS of the new name; RENAMENX's 1 when done
                counts.renamed += 1
            else:
                counts.taken += 1
    return counts


def split_set(client: Redis, split: SplitSet, *, batch: int, dry_run: bool) -> Counts:
    """Move the members of `split`'s old SET to their new sets, then delete it."""
    counts = Counts()
    old = f"{settings.KESTREL_KEY_PREFIX}:{split.old}"
    for members in _chunks(client.sscan_iter(old, count=batch), batch):
        pipe = client.pipeline(transaction=False)
        for member in members:
            new = split.new_set(member)
            if new is None:
                counts.gone += 1  # not a member Kestrel writes: dropped with the old set
                continue
            counts.renamed += 1
            if not dry_run:
                pipe.sadd(new, member)
        pipe.execute()
    if not dry_run:
        client.delete(old)
    return counts


def _chunks(members: Iterator[bytes], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for member in members:
        chunk.append(member.decode())
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Command(BaseCommand):
    help = (
        "Rename the state role's keys from the grammar before hash tags to the current one (RENAMENX, "
        "TTLs kept, idempotent). Run with the old release stopped, before the new one starts."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would be renamed; change nothing.")
        parser.add_argument("--batch", type=int, default=500, help="Keys per SCAN call and pipeline (default 500).")

    def handle(self, *args, **options):
        batch, dry_run = options["batch"], options["dry_run"]
        if batch < 1:
            raise CommandError("--batch must be at least 1")
        client = get_redis("state")
        if not isinstance(client, Redis):
            # Old names only ever lived on one server: the rename comes before any move to a cluster.
            raise CommandError("The state role is a Redis Cluster: rename the keys on its single server first.")
        verb = "would be renamed" if dry_run else "renamed"
        for rename in key_renames():
            if isinstance(rename, SplitSet):
                counts = split_set(client, rename, batch=batch, dry_run=dry_run)
                line = f"{counts.renamed} members {'would move' if dry_run else 'moved'} to their sets"
                if counts.gone:
                    line += f", {counts.gone} unknown members dropped"
            else:
                counts = rename_family(client, rename, batch=batch, dry_run=dry_run)
                line = f"{counts.renamed} {verb}, {counts.current} already named so"
                if counts.taken:
                    line += f", {counts.taken} skipped (the new name exists; the old key is left)"
                if counts.gone:
                    line += f", {counts.gone} expired meanwhile"
            self.stdout.write(f"{rename.family:<20} {line}")
        self.stdout.write("Cache role: old keys left to expire (each has a TTL; nothing reads them).")
        if dry_run:
            self.stdout.write(self.style.NOTICE("Dry run: nothing was changed."))
