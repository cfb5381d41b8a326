"""Redis keys of the accounts app."""

from core.keys import key


def session(session_key: str) -> str:
    """STRING (JSON session dict), state role, TTL SESSION_COOKIE_AGE: one login session."""
    return key("accounts", "session", session_key)
