"""manage.py redis_audit: Redis best-practice checks for CI and cron (rules: ops/audit.py).

Exit status 0 when no rule is broken, 1 when one is (an error; with --strict, a warning
too). Read-only: SCAN, TTL, MEMORY USAGE, INFO, CONFIG GET and SLOWLOG GET; on a Redis
Cluster, CLUSTER SHARDS, and each node asked in turn (a finding of one node names it).
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from ops.audit import ERROR, OK, SKIPPED, WARNING, AuditOptions, Finding, run_audit

_LEVEL_STYLE = {OK: "SUCCESS", WARNING: "WARNING", ERROR: "ERROR", SKIPPED: "NOTICE"}


def _whose(finding: Finding) -> str:
    """The finding's role, and its node on a cluster: "state" or "state 10.0.0.5:7000"."""
    return f"{finding.role} {finding.node}" if finding.node else finding.role


class Command(BaseCommand):
    help = (
        "Check each Redis role against Kestrel's rules: TTLs on cache keys (SCAN), big keys (MEMORY USAGE "
        "on a sample), eviction policy per role, persistence of the state and queue roles, SLOWLOG; on a Redis "
        "Cluster, every primary is scanned and every node checked. Exits 1 when a rule is broken."
    )

    def add_arguments(self, parser):
        defaults = AuditOptions()
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Production: warnings (no AOF, a shared server, SLOWLOG entries...) break the run too.",
        )
        parser.add_argument("--json", action="store_true", help="Print the report as one JSON object.")
        parser.add_argument(
            "--max-keys",
            type=int,
            default=defaults.max_keys,
            help=f"Cache keys to SCAN for TTLs, shared by a cluster's primaries (default {defaults.max_keys}).",
        )
        parser.add_argument(
            "--sample",
            type=int,
            default=defaults.sample,
            help=f"Keys per role to size with MEMORY USAGE, shared by a cluster's primaries "
            f"(default {defaults.sample}).",
        )
        parser.add_argument(
            "--big-key-bytes",
            type=int,
            default=defaults.big_key_bytes,
            help=f"A key above this many bytes is big (default {defaults.big_key_bytes}).",
        )
        parser.add_argument(
            "--slowlog",
            type=int,
            default=defaults.slowlog_entries,
            help=f"SLOWLOG entries to read per server or cluster node (default {defaults.slowlog_entries}).",
        )

    def handle(self, *args, **options):
        for name in ("max_keys", "sample", "big_key_bytes", "slowlog"):
            if options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
        report = run_audit(
            AuditOptions(
                strict=options["strict"],
                max_keys=options["max_keys"],
                sample=options["sample"],
                big_key_bytes=options["big_key_bytes"],
                slowlog_entries=options["slowlog"],
            )
        )
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            for finding in report.findings:
                style = getattr(self.style, _LEVEL_STYLE[finding.level])
                message = f"{finding.node}: {finding.message}" if finding.node else finding.message
                self.stdout.write(
                    f"{style(finding.level.upper().ljust(7))} {finding.role:<5} {finding.rule:<11} {message}"
                )
                for detail in finding.details:
                    self.stdout.write(f"{'':26}{detail}")
        broken = report.broken
        if broken:
            rules = ", ".join(
                sorted(
                    {f"{finding.rule} ({' '.join(filter(None, (finding.role, finding.node)))})" for finding in broken}
                )
            )
            raise CommandError(f"{len(broken)} Redis rule(s) broken: {rules}", returncode=1)
        if not options["json"]:
            self.stdout.write(self.style.SUCCESS("No Redis rule broken."))
