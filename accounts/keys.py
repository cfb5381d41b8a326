"""Redis keys of the accounts app: every one is built here, and nowhere else.

Each builder's docstring names the Redis type, the role and the TTL. State role:
sessions, the token denylists, token epochs and the profile lock. Cache role: public
profiles and the follow graph's mirror. Every key's hash tag is its own id (core.keys):
a user's keys share a slot; a session, a token and a token family each have their own,
since nothing but the id is known when an old name is renamed (redis_rename_keys).
"""

from django.conf import settings

from core.keys import key, tag_the_id

# The state role's families as named before hash tags (manage.py redis_rename_keys).
RENAMES = (
    tag_the_id("accounts:session"),
    tag_the_id("accounts:jwt", "revoked"),
    tag_the_id("accounts:jwt_family", "revoked"),
    tag_the_id("accounts:user", "token_epoch"),
)

# The families below whose id is a credential (a session cookie's value, a token's jti
# or family): never shown or logged whole (core.keys.redact_key, via settings).
CREDENTIAL_FAMILIES = ("accounts:session", "accounts:jwt", "accounts:jwt_family")


def session(session_key: str) -> str:
    """STRING (JSON session dict), state role, TTL SESSION_COOKIE_AGE: one login session."""
    return key("accounts", "session", session_key)


USER_TTL = 600  # seconds; jittered +-10 % by core.cacheaside
USER_MISSING_TTL = 30


def user_profile(user_id: int) -> str:
    """STRING (JSON envelope), cache role, USER_TTL: a public profile as the API shows it."""
    return key("accounts", "user", user_id)


# --- The follow graph's mirror (cache role) ---------------------------------------------
#
# Evictable copies of accounts.Follow: a lost set costs one rebuild.

FOLLOW_SET_TTL = 24 * 60 * 60  # seconds: bounds any drift (a deleted account) to a day
FOLLOW_SET_MARKER = "-"  # a member no user id can be: a built set of nobody still exists
FOLLOW_REBUILD_LEASE_MS = 10_000  # a rebuild of a big set (a million ids) takes seconds


def user_followers(user_id: int) -> str:
    """SET of follower ids plus FOLLOW_SET_MARKER, cache role, FOLLOW_SET_TTL: who follows the user."""
    return key("accounts", "user", user_id, "followers")


def user_following(user_id: int) -> str:
    """SET of followee ids plus FOLLOW_SET_MARKER, cache role, FOLLOW_SET_TTL: whom the user follows."""
    return key("accounts", "user", user_id, "following")


def user_followers_rebuild(user_id: int) -> str:
    """STRING (lease token), cache role, FOLLOW_REBUILD_LEASE_MS: a rebuild of user_followers in flight."""
    return key("accounts", "user", user_id, "followers_rebuild")


def user_following_rebuild(user_id: int) -> str:
    """STRING (lease token), cache role, FOLLOW_REBUILD_LEASE_MS: a rebuild of user_following in flight."""
    return key("accounts", "user", user_id, "following_rebuild")


# --- Locks (state role, core.locks) ------------------------------------------------------

PROFILE_LOCK_TTL_MS = 5_000  # a profile edit is one UPDATE; 5 s covers a slow database, not a hung one


def user_profile_lock(user_id: int) -> str:
    """Lock name for core.locks (STRING kestrel:core:lock:user:<id>:profile:{locks}, state role, PROFILE_LOCK_TTL_MS).

    One edit of a profile at a time; metrics label "user:*:profile".
    """
    return f"user:{user_id}:profile"


# --- JSON Web Tokens (state role, accounts.tokens) ---------------------------------------
#
# State role: an evicted denylist entry would be a revoked token working again. Each
# key outlives the tokens it refuses; a token's own text is never stored.

REVOKED_MARGIN = 30  # seconds added to every TTL below: web hosts' clocks may differ this much


def longest_token_life() -> int:
    """Seconds: no token issued up to now expires later than now + this."""
    return max(settings.JWT_ACCESS_LIFETIME, settings.JWT_REFRESH_LIFETIME) + REVOKED_MARGIN


def jwt_revoked(jti: str) -> str:
    """STRING ("logout", or the id of the refresh that spent it), state role, TTL the token's
    remaining life + REVOKED_MARGIN: the denylist entry of one token, by its id."""
    return key("accounts", "jwt", jti, "revoked")


def jwt_family_revoked(family: str) -> str:
    """STRING ("logout" | "reused"), state role, TTL longest_token_life(): every token descended
    from one log-in (its refresh chain, and the access tokens issued along it) is refused."""
    return key("accounts", "jwt_family", family, "revoked")


def user_token_epoch(user_id: int) -> str:
    """STRING (integer), state role, TTL longest_token_life() from the last bump: the user's token
    epoch, mirrored from User.token_epoch so the per-request check needs no database read.

    Expiry loses nothing: past the TTL no token of an earlier epoch is alive, and the
    database column stays the truth whenever a process loads the user (accounts.backends).
    """
    return key("accounts", "user", user_id, "token_epoch")
