"""`make security`: `manage.py check --deploy --fail-level WARNING` under production settings.

Production's environment (DEBUG off, real keys, HTTPS) against two private Redis servers
laid out as docs/deploy.md says (state: `noeviction` and AOF; cache: `allkeys-lru`), so
Kestrel's own Redis checks take part. The checks do not connect to the database.

    python -m devstack.deploycheck
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from config.pdeathsig import die_with_parent
from devstack.processes import PROJECT_ROOT, manage_command
from devstack.redis_server import RedisServer


def production_env(*, state_url: str, cache_url: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        # Development switches from the caller's shell must not soften the check.
        if not name.startswith(("SECURE_", "SESSION_COOKIE_", "CSRF_COOKIE_")) and name not in {"DEBUG"}
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "JWT_SIGNING_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "kestrel.example.com",
            "CSRF_TRUSTED_ORIGINS": "https://kestrel.example.com",
            "SITE_URL": "https://kestrel.example.com",
            "REDIS_URL": state_url,
            "REDIS_CACHE_URL": cache_url,
        }
    )
    return env


def main() -> int:
    state = RedisServer(extra_config={"maxmemory-policy": "noeviction", "appendonly": "yes"})
    cache = RedisServer(extra_config={"maxmemory-policy": "allkeys-lru", "maxmemory": "64mb"})
    try:
        state.start()
        cache.start()
        env = production_env(state_url=f"{state.url}/0", cache_url=f"{cache.url}/0")
        command = manage_command("check", "--deploy", "--fail-level", "WARNING")
        print(f"$ {' '.join(command[1:])}  (DEBUG=0, production settings, private Redis servers)", flush=True)
        # An argument list built here, never a shell string.
        result = subprocess.run(command, cwd=PROJECT_ROOT, env=env, preexec_fn=die_with_parent, check=False)  # nosec B603
        return result.returncode
    finally:
        cache.cleanup()
        state.cleanup()


if __name__ == "__main__":
    sys.exit(main())
