"""Notifications: kept in a per-user stream, pushed live over pub/sub (to SSE).

(Being written: the signature below is the contract other apps call.)
"""

from __future__ import annotations


def notify(*, user_id: int, kind: str, message: str, data: dict | None = None) -> str | None:
    """Record a notification for `user_id` and publish it live. Returns its stream id.

    Call it after commit. kind: "follow", "like", "post", "report", "message".
    """
    return None
