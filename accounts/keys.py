"""Redis keys of the accounts app."""

from core.keys import key


def session(session_key: str) -> str:
    """STRING (JSON session dict), state role, TTL SESSION_COOKIE_AGE: one login session."""
    return key("accounts", "session", session_key)


USER_TTL = 600  # seconds; jittered +-10 % by core.cacheaside
USER_MISSING_TTL = 30


def user_profile(user_id: int) -> str:
    """STRING (JSON envelope), cache role, USER_TTL: a public profile as the API shows it."""
    return key("accounts", "user", user_id)
