"""Fixtures shared by the accounts tests."""

from __future__ import annotations

import pytest

from core.redis import get_redis


@pytest.fixture
def sent(monkeypatch) -> list[str]:
    """The commands this process sends to the state role from now on (sessions and the
    limiter share its client)."""
    commands: list[str] = []
    client = get_redis("state")
    execute = client.execute_command

    def counting(*args, **options):
        commands.append(args[0])
        return execute(*args, **options)

    monkeypatch.setattr(client, "execute_command", counting)
    return commands
