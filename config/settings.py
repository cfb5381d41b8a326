"""Kestrel's settings: one module, driven by the environment (README, "Configuration").

Development defaults are embedded so `make run` needs nothing; with DEBUG off, the
values that must not have a default (SECRET_KEY) stop start-up when missing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from accounts.keys import CREDENTIAL_FAMILIES as ACCOUNT_CREDENTIAL_FAMILIES
from config.env import env_bool, env_float, env_int, env_list, env_str
from config.secret_key import PUBLIC_KEY_PREFIX, development_secret_key
from core.cluster_url import parse_cluster_url
from core.redis import Role, connection_pool_options, is_cluster_url, parse_sentinels
from jobs.queues import QUEUE_TIMEOUTS

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("KESTREL_VAR_DIR", str(BASE_DIR / "var")))

# --- Core -------------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)

# With DEBUG on and no SECRET_KEY, a key drawn once per checkout into var/secret_key
# (config/secret_key.py): never a key written in the source, which would let anyone
# who reads it sign sessions and tokens for every development instance.
SECRET_KEY = env_str("SECRET_KEY", "") or (development_secret_key(VAR_DIR) if DEBUG else "")
if not SECRET_KEY or SECRET_KEY.startswith(PUBLIC_KEY_PREFIX):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a long random value when DEBUG is off (and never a django-insecure key). "
        'Generate one with: python -c "from django.core.management.utils import get_random_secret_key as k; print(k())"'
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    # No django.contrib.sessions: sessions live in Redis (the state role), and
    # without the app there is no database session table to fall back to.
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_rq",
    "django_htmx",  # the htmx script (static), for the site's in-place buttons and "Load older"
    "core",
    "accounts",
    "posts",
    "feeds",
    "jobs",
    "ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Early: every request that gets past the HTTPS redirect, whatever answers it.
    "core.http_metrics.RequestMetricsMiddleware",
    "core.csp.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "accounts.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "accounts.middleware.AuthenticationMiddleware",
    # After authentication: it limits per user, or per address when anonymous.
    "core.ratelimit.middleware.RateLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.middleware.RedisUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL", "")
# Persistent connections: worth 5x on PostgreSQL (docs/design.md, reference figures), and on SQLite
# they save reopening the file and its PRAGMAs on every request (0.7-1 ms here).
# Health checks drop a connection the server closed instead of failing a request.
DB_CONN_MAX_AGE = env_int("DB_CONN_MAX_AGE", 60)
# Seconds a new PostgreSQL connection may take: a database host that does not answer
# costs a request this long (then 503), not the operating system's minutes.
DB_CONNECT_TIMEOUT = env_int("DB_CONNECT_TIMEOUT", 5)
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=DB_CONN_MAX_AGE, conn_health_checks=True)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", DB_CONNECT_TIMEOUT)
else:
    # SQLite cannot create the folder its file lives in; a fresh clone has no var/.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "kestrel.sqlite3"),
            "CONN_MAX_AGE": DB_CONN_MAX_AGE,
            "CONN_HEALTH_CHECKS": True,
            # A file, not Django's shared in-memory database: tests run real concurrent
            # readers and writers on separate connections, which need WAL.
            "TEST": {"NAME": VAR_DIR / "test-kestrel.sqlite3"},
            "OPTIONS": {
                # WAL lets readers run beside the one writer; IMMEDIATE takes the write
                # lock at BEGIN, so two writers queue (busy timeout, seconds) instead of
                # failing with "database is locked" when a read transaction upgrades.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis ------------------------------------------------------------------------


def _next_db(url: str) -> str:
    """The same server, the next DB number: the development default of the cache role."""
    parts = urlsplit(url)
    match = re.fullmatch(r"/(\d+)", parts.path or "")
    db = int(match.group(1)) if match else 0
    return urlunsplit(parts._replace(path=f"/{db + 1}"))


REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# The cache and state roles may each be a Redis Cluster: redis+cluster://host:port,host:port
# (rediss+cluster:// over TLS; core.cluster_url), seed nodes of the cluster. A cluster has
# no next database: with REDIS_URL a cluster's and REDIS_CACHE_URL unset, the cache role
# would share the state role's keyspace, which `manage.py check` refuses (kestrel.E004).
REDIS_CACHE_URL = env_str("REDIS_CACHE_URL", "") or (REDIS_URL if is_cluster_url(REDIS_URL) else _next_db(REDIS_URL))

# The queue role: RQ's jobs, queues, registries and workers (the worker, cron, /admin/rq/
# and every read of job status or queue figures). It needs a single primary, optionally
# Sentinel-managed: RQ cannot run on a Redis Cluster (multi-key commands and scripts
# across slots). Unset, it is the state role's server and database, so the keys and the
# jobs already queued stay where they are. Set REDIS_QUEUE_URL to give the queues a
# server of their own, which a cluster REDIS_URL (redis+cluster://, rediss+cluster://)
# requires: `manage.py check` fails with kestrel.E002 until it is set. It takes the state
# role's timeouts, retries and pool size (REDIS_CONNECT_TIMEOUT and the rest), and needs
# the same care: noeviction, AOF.
_REDIS_QUEUE_URL_SET = env_str("REDIS_QUEUE_URL", "")
REDIS_QUEUE_URL = _REDIS_QUEUE_URL_SET or REDIS_URL

KESTREL_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "kestrel")
if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", KESTREL_KEY_PREFIX):
    raise ImproperlyConfigured(f"REDIS_KEY_PREFIX={KESTREL_KEY_PREFIX!r} must match [a-z][a-z0-9_-]{{0,31}}")

# Per role: the state role waits longer (its errors are errors), the cache role gives
# up fast and falls back to the database (a hung cache must not hang the site).
_REDIS_POOL = {
    "state": {
        "connect_timeout": env_float("REDIS_CONNECT_TIMEOUT", 1.0),
        "socket_timeout": env_float("REDIS_SOCKET_TIMEOUT", 2.0),
        "max_connections": env_int("REDIS_MAX_CONNECTIONS", 50),
        "retries": env_int("REDIS_RETRIES", 3),
    },
    "cache": {
        "connect_timeout": env_float("REDIS_CACHE_SOCKET_TIMEOUT", 0.25),
        "socket_timeout": env_float("REDIS_CACHE_SOCKET_TIMEOUT", 0.25),
        "max_connections": env_int("REDIS_MAX_CONNECTIONS", 50),
        "retries": env_int("REDIS_CACHE_RETRIES", 1),
    },
}
_REDIS_POOL["queue"] = _REDIS_POOL["state"]  # errors are errors there too


# Redis Sentinel (failover): host:port of each Sentinel, comma-separated. With them
# set, the role's URL names the Sentinel service instead of a host, e.g.
# REDIS_URL=redis://:password@kestrel-state/0. The cache role follows the same
# Sentinels unless REDIS_CACHE_SENTINELS says otherwise (set it empty for a plain
# cache server beside a Sentinel-managed state role). The queue role follows the state
# role's Sentinels while REDIS_QUEUE_URL is unset (it is then the state role's database);
# a REDIS_QUEUE_URL of its own is a plain server unless REDIS_QUEUE_SENTINELS names
# Sentinels, and then names their service, e.g. redis://:password@kestrel-queue/0.
def _sentinels(name: str, default: list[str]) -> list[tuple[str, int]]:
    try:
        return parse_sentinels(env_list(name, default))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


_SENTINEL_ADDRESSES = env_list("REDIS_SENTINELS", [])
_SENTINELS = {
    "state": _sentinels("REDIS_SENTINELS", []),
    # A cache cluster does not follow the state role's Sentinels: a cluster fails over by itself.
    "cache": _sentinels("REDIS_CACHE_SENTINELS", [] if is_cluster_url(REDIS_CACHE_URL) else _SENTINEL_ADDRESSES),
    "queue": _sentinels("REDIS_QUEUE_SENTINELS", [] if _REDIS_QUEUE_URL_SET else _SENTINEL_ADDRESSES),
}
REDIS_SENTINEL_PASSWORD = env_str("REDIS_SENTINEL_PASSWORD", "")


_URL_SETTINGS = {"state": "REDIS_URL", "cache": "REDIS_CACHE_URL", "queue": "REDIS_QUEUE_URL"}
_SENTINEL_SETTINGS = {"state": "REDIS_SENTINELS", "cache": "REDIS_CACHE_SENTINELS", "queue": "REDIS_QUEUE_SENTINELS"}


def _redis_cache(url: str, role: Role) -> dict[str, object]:
    pool = _REDIS_POOL[role]
    cluster = is_cluster_url(url)
    if cluster:
        if _SENTINELS[role]:
            raise ImproperlyConfigured(
                f"{_URL_SETTINGS[role]} is a Redis Cluster and {_SENTINEL_SETTINGS[role]} names Sentinels: a cluster "
                "fails over by itself and takes no Sentinels. Unset one of them."
            )
        try:
            parse_cluster_url(url)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{_URL_SETTINGS[role]}: {exc}") from None
    return {
        "BACKEND": "core.cache.RedisCache",
        "LOCATION": url,
        "KEY_PREFIX": KESTREL_KEY_PREFIX,
        "KEY_FUNCTION": "core.keys.django_cache_key",
        "TIMEOUT": 300,
        "OPTIONS": connection_pool_options(
            role=role,
            sentinels=_SENTINELS[role],
            sentinel_password=REDIS_SENTINEL_PASSWORD,
            connect_timeout=pool["connect_timeout"],
            socket_timeout=pool["socket_timeout"],
            max_connections=int(pool["max_connections"]),
            retries=int(pool["retries"]),
            cluster=cluster,
        ),
    }


CACHES = {
    "default": _redis_cache(REDIS_CACHE_URL, "cache"),
    "sessions": _redis_cache(REDIS_URL, "state"),
}
# The queue role's connection (core.redis.ROLE_ALIASES), which RQ_QUEUES reaches by
# USE_REDIS_CACHE: no cache anything uses. While it is the state role's database it is the
# state role's entry, so one pool and one circuit breaker (django-redis keeps one pool per
# URL); on a server of its own, it has its own, named kestrel-queue in the command metrics.
_QUEUE_IS_STATE = REDIS_QUEUE_URL == REDIS_URL and _SENTINELS["queue"] == _SENTINELS["state"]
CACHES["queues"] = CACHES["sessions"] if _QUEUE_IS_STATE else _redis_cache(REDIS_QUEUE_URL, "queue")

# Cache-aside (core.cacheaside): off switches for benchmarks and debugging.
KESTREL_CACHE_ENABLED = env_bool("CACHE_ENABLED", True)
KESTREL_L1_ENABLED = env_bool("CACHE_L1_ENABLED", True)

# --- Sessions and auth ------------------------------------------------------------

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["accounts.backends.EmailBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

SESSION_ENGINE = "accounts.sessions"
SESSION_CACHE_ALIAS = "sessions"
SESSION_SERIALIZER = "django.contrib.sessions.serializers.JSONSerializer"
SESSION_COOKIE_AGE = 60 * 60 * 24  # 24 hours, as in the reference article
SESSION_COOKIE_HTTPONLY = True
# Lax, not the article's Strict: Strict drops the cookie on every link followed from
# another site (a report email, a shared post), so people would look logged out.
# Lax still withholds it from cross-site POSTs, and CSRF tokens guard every form.
SESSION_COOKIE_SAMESITE = env_str("SESSION_COOKIE_SAMESITE", "Lax")
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- HTTPS (check --deploy) -------------------------------------------------------

SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    # Only behind a proxy that sets X-Forwarded-Proto itself and strips it from clients.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]

# --- Content Security Policy (django-csp) -------------------------------------------
# Scripts and styles from Kestrel's own origin only: no inline script, no eval, so an
# injected <script> or onclick="" does not run. The inline blocks that remain are
# allowed by their hash, each exactly one fixed text (tests/core/test_csp.py checks
# them against the templates): the error pages' one-line style (rendered with no
# request, when the database or Redis may be down), Swagger UI's page style
# (drf-spectacular's template; its script is a file, SpectacularSwaggerSplitView),
# django-rq's admin script that wires the job lists' select-all, and the three styles of
# its pages (/admin/rq/: the queue statistics; the confirmation pages; job and worker details).
CSP_ERROR_PAGE_STYLE = "'sha256-STwm+esEvhliRgtoZ6eAiYKJSj5dkkKU5WbMMjA6tSU='"
CSP_SWAGGER_UI_STYLE = "'sha256-MMpT0iDxyjALd9PdfepImGX3DBfJPXZ4IlDWdPAgtn0='"
CSP_RQ_ADMIN_SCRIPT = "'sha256-1kZe1KRxelr3ptMPsod17Z6BDvbtm4WcufgsZGvsErM='"
CSP_RQ_ADMIN_STYLES = [
    "'sha256-v5MY146GJAjl1QbCe2MklIw9r0xCNOWCEWSPd53tlgQ='",
    "'sha256-KKjBAGERxCMkpnyRzzx30Ft5uJyWEE4TggCMJ9MJhMw='",
    "'sha256-3HT4TFoCN6UZR/IBz5IGZ/l8VEv+BIOqCR558/XA3Jg='",
]
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", CSP_RQ_ADMIN_SCRIPT],
        "style-src": ["'self'", CSP_ERROR_PAGE_STYLE, CSP_SWAGGER_UI_STYLE, *CSP_RQ_ADMIN_STYLES],
        "img-src": ["'self'", "data:"],  # data: Swagger UI's icons are SVG data URLs in its CSS
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Static files -----------------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = VAR_DIR / "media"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- API --------------------------------------------------------------------------

REST_FRAMEWORK = {
    # Bearer tokens first: a request that carries one is judged by it alone (a bad token
    # is refused, never passed over to a session cookie), and DRF sends WWW-Authenticate:
    # Bearer with its 401s. Sessions enforce CSRF; bearer requests are not subject to it
    # (a browser never adds an Authorization header to a cross-site request by itself).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's JSONParser, bounded in size and depth (a 5,000-deep array is a 400, not a 500).
    "DEFAULT_PARSER_CLASSES": ["core.api.JSONParser"],
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "core.schema.KestrelAutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# --- JSON Web Tokens (accounts.tokens) ---------------------------------------------
# HS256 only (pinned in accounts.tokens). The key defaults to one derived from
# SECRET_KEY, so it is never SECRET_KEY itself; set JWT_SIGNING_KEY to rotate token
# keys independently (every token issued under the old key is then refused).
JWT_SIGNING_KEY = (
    env_str("JWT_SIGNING_KEY", "")
    or hmac.new(SECRET_KEY.encode(), b"kestrel.accounts.tokens.signing-key", hashlib.sha256).hexdigest()
)
if len(JWT_SIGNING_KEY) < 32:
    raise ImproperlyConfigured("JWT_SIGNING_KEY must be at least 32 characters (HS256 needs a 256-bit key)")
JWT_ACCESS_LIFETIME = env_int("JWT_ACCESS_LIFETIME", 5 * 60)  # seconds
JWT_REFRESH_LIFETIME = env_int("JWT_REFRESH_LIFETIME", 24 * 60 * 60)  # seconds
if not 0 < JWT_ACCESS_LIFETIME <= JWT_REFRESH_LIFETIME:
    raise ImproperlyConfigured(
        f"JWT_ACCESS_LIFETIME ({JWT_ACCESS_LIFETIME}) must be positive and no longer than "
        f"JWT_REFRESH_LIFETIME ({JWT_REFRESH_LIFETIME})"
    )

# The API docs group operations by area: the first segment after /api/ names it
# (core.schema.KestrelAutoSchema.get_tags); "users/<id>/activity" is part of the feed.
KESTREL_API_AREAS = {
    **dict.fromkeys(["register", "login", "logout", "logout-all", "me", "password", "token"], "auth"),
    **dict.fromkeys(["posts", "pages", "leaderboard"], "posts"),
    "users": "people",
    "feed": "feed",
    "users/activity": "feed",
    **dict.fromkeys(["notifications", "notify"], "notifications"),
    **dict.fromkeys(["send-email", "reports", "jobs"], "jobs"),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Kestrel API",
    "DESCRIPTION": (
        'Kestrel\'s JSON API. Errors are {"error": "..."}; validation errors add "details". '
        "Log in with `POST /api/token`, then **Authorize** with the access token. [Back to the site](/)"
    ),
    # The areas, in the order the docs list them (KESTREL_API_AREAS sorts operations into them).
    "TAGS": [
        {"name": "auth", "description": "Sign up, log in and out, tokens, your account"},
        {"name": "posts", "description": "Posts, likes, pages and the leaderboard"},
        {"name": "people", "description": "Profiles, follows, followers, a person's posts and stats"},
        {"name": "feed", "description": "Your home timeline and a person's activity"},
        {"name": "notifications", "description": "Notifications, read marks and the live stream"},
        {"name": "jobs", "description": "Emails and reports built in the background, and their status"},
    ],
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the installed sidecar package, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No badge image from validator.swagger.io: the Content-Security-Policy allows 'self' only.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
    # The notification stream is a plain Django view, which drf-spectacular cannot see.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "feeds.schema.add_notification_stream"],
}

# --- Jobs (RQ on the queue role) ---------------------------------------------------

# Through django-redis (USE_REDIS_CACHE), not a URL: the queues then use the queue role's
# pool with its timeouts, retries, circuit breaker and Sentinels, and its command metrics.
RQ_QUEUES = {
    name: {"USE_REDIS_CACHE": "queues", "DEFAULT_TIMEOUT": timeout} for name, timeout in QUEUE_TIMEOUTS.items()
}
RQ_SHOW_ADMIN_LINK = True
RQ = {"WORKER_CLASS": "jobs.workers.KestrelWorker"}

# --- Rate limits (core.ratelimit) -------------------------------------------------
# Each policy: its limit and window, algorithm ("fixed" or "gcra": evenly spaced, no
# double burst at a window boundary), scope (whom it counts: "user_or_ip", "ip",
# "account"), failure policy when Redis does not answer ("open": let through, logged
# and counted; "closed": 503), methods (none: every one) and paths. A path is exact (a
# trailing slash on the request is ignored); one ending in "*" is a prefix; a "<id>"
# segment matches one id as the URLconf's <id:...> reads it. A policy counts every path
# it lists in one budget per subject, which is what makes a site form and its API twin
# share it. The environment can turn limiting off or move the general API limit and
# the write and job limits (test and benchmark stacks send far more than a person does).

# Every door that takes a password, under one per-address and one per-account budget:
# a guesser gains nothing by switching between the API, the site's forms and the admin.
_RATE_LIMIT_AUTH_PATHS = [
    "/api/login",
    "/api/token",
    "/api/register",
    "/api/password",
    "/login",
    "/signup",
    "/admin/login",
    "/admin/password_change",
]

if env_bool("RATE_LIMIT_ENABLED", True):
    KESTREL_RATE_LIMITS = {
        # The reference article's limit, 100 a minute per person (per address when
        # anonymous). Fails open: a Redis outage must not take the whole API down with
        # it; the outage is logged and counted (ratelimit.error) instead.
        "api": {
            "limit": env_int("RATE_LIMIT_API_PER_MINUTE", 100),
            "window": 60,
            "algorithm": "fixed",
            "scope": "user_or_ip",
            "fail": "open",
            "paths": ["/api/*"],
        },
        # Password guessing from one address: 10 at once, then one every 6 s. GCRA, so
        # a guesser cannot spend two windows' worth across a window boundary. Fails
        # closed: while Redis is down nothing would stop guessing (and log-in needs the
        # session store anyway).
        "auth_ip": {
            "limit": 10,
            "window": 60,
            "algorithm": "gcra",
            "scope": "ip",
            "fail": "closed",
            "methods": ["POST"],
            "paths": _RATE_LIMIT_AUTH_PATHS,
        },
        # Guessing one account's password from many addresses: 5 at once, then one a
        # minute, whatever the address. The usual price of a per-account limit: whoever
        # keeps guessing also keeps the owner's own attempts waiting, for as long as
        # they keep it up (each guessing address is itself held to auth_ip's rate).
        "auth_account": {
            "limit": 5,
            "window": 300,
            "algorithm": "gcra",
            "scope": "account",
            "fail": "closed",
            "methods": ["POST"],
            "paths": _RATE_LIMIT_AUTH_PATHS,
        },
        # Likes, follows, new posts, edits and deletions, from either door: 30 at once,
        # then one every 2 s. A person liking while reading or following a handful of
        # people after signing up never meets it; a script toggling a like (each toggle
        # a notification and a fan-out) is held to 30 a minute instead of hundreds a
        # second. DELETE and PATCH too: the API unlikes, unfollows, deletes and edits
        # with them, the site with a POST (GET on the same paths reads, and is not
        # counted here). Fails open, like the general limit: the writes themselves go to
        # the database.
        "writes": {
            "limit": env_int("RATE_LIMIT_WRITES_PER_MINUTE", 30),
            "window": 60,
            "algorithm": "gcra",
            "scope": "user_or_ip",
            "fail": "open",
            "methods": ["POST", "DELETE", "PATCH"],
            "paths": [
                "/api/posts",
                "/posts/new",
                "/api/posts/<id>/like",
                "/posts/<id>/like",
                "/api/users/<id>/follow",
                "/users/<id>/follow",
                "/api/posts/<id>",
                "/posts/<id>/delete",
                "/api/users/<id>",
                "/profile/edit",
            ],
        },
        # Requests that start a background job: an email, or a report built from the
        # whole of a person's activity. 20 at once, then one every 3 minutes. A backstop
        # in front of the jobs service's own per-person quotas (jobs.queues.QUOTAS: 10
        # emails and 6 reports an hour, one report at a time), set just above their sum
        # so that a person meets the quota's precise message first, while a flood
        # through either door is refused here before it reaches a database lock. Fails
        # closed: no job goes uncounted (and unless REDIS_QUEUE_URL moves them, the jobs
        # are queued on the same Redis, so a limiter that cannot answer means a queue
        # that cannot either).
        "jobs": {
            "limit": env_int("RATE_LIMIT_JOBS_PER_HOUR", 20),
            "window": 3600,
            "algorithm": "gcra",
            "scope": "user_or_ip",
            "fail": "closed",
            "methods": ["POST"],
            "paths": ["/api/send-email", "/reports/email-me", "/api/reports", "/reports/new"],
        },
    }
else:
    KESTREL_RATE_LIMITS = {}  # no policies: rate limiting off
# Proxies in front of Django that append to X-Forwarded-For; 0 trusts only REMOTE_ADDR.
KESTREL_RATE_LIMIT_TRUSTED_PROXIES = env_int("RATE_LIMIT_TRUSTED_PROXIES", 0)
# Bearer-token requests count as their user, and the token's revocation check
# (accounts.revocation: denylist and epoch) runs in the same script as the limits: one
# round trip for both. So does the session read of a session request whose user the
# process already knows.
KESTREL_RATE_LIMIT_CREDENTIAL = "accounts.authentication.rate_limit_credential"
# The password doors where the per-account log-in limit counts the signed-in person,
# under the same account (their email) as their log-ins, never one the body names: a
# password change names none, and naming someone else's must not move a guesser's
# attempts off the account being guessed.
KESTREL_RATE_LIMIT_OWN_ACCOUNT_PATHS = ("/api/password", "/admin/password_change")
KESTREL_RATE_LIMIT_USER_ACCOUNT = "accounts.selectors.user_rate_limit_account"

# --- Monitoring (core.instrumentation, ops.monitoring) -------------------------------

KESTREL_REDIS_METRICS_ENABLED = env_bool("REDIS_METRICS_ENABLED", True)  # off only to measure its cost
KESTREL_METRICS_TOKEN = env_str("METRICS_TOKEN", "")  # bearer token for Prometheus; empty: staff only
KESTREL_HEALTH_MAX_BACKLOG = env_int("HEALTH_MAX_BACKLOG", 1000)

# --- View counters (posts.counters) --------------------------------------------------

# Each process counts views in memory and sends them to Redis this often (seconds): the
# most a crash (kill -9) loses, and how far one server's view counts lag the others'.
# 0 starts no sending thread (the test suite, which sends by calling flush_views()).
KESTREL_VIEW_FLUSH_INTERVAL = env_float("VIEW_FLUSH_INTERVAL", 0.2)
if KESTREL_VIEW_FLUSH_INTERVAL < 0:
    raise ImproperlyConfigured(f"VIEW_FLUSH_INTERVAL={KESTREL_VIEW_FLUSH_INTERVAL} must be 0 or more seconds")
# Posts and pages with views waiting in one process while Redis is away; beyond it a new
# one's views are dropped (counted in batching.dropped) rather than memory growing.
KESTREL_VIEW_BUFFER_MAX_KEYS = env_int("VIEW_BUFFER_MAX_KEYS", 100_000)

# --- Live notifications ------------------------------------------------------------

# Each open SSE stream holds one gunicorn thread (feeds/sse.py). The per-process cap,
# 0 by default, is then half the worker's threads (as gunicorn runs it; GUNICORN_THREADS,
# which config/gunicorn.py reads too, outside gunicorn). feeds' system check and
# gunicorn's worker start refuse a cap above three quarters of the threads, so ordinary
# requests and /healthz always find one.
KESTREL_GUNICORN_THREADS = env_int("GUNICORN_THREADS", 64)
KESTREL_SSE_MAX_STREAMS = env_int("KESTREL_SSE_MAX_STREAMS", 0)
# Per person across every process and host (a lease per stream in Redis): beyond it 429.
KESTREL_SSE_MAX_STREAMS_PER_USER = env_int("KESTREL_SSE_MAX_STREAMS_PER_USER", 5)

# --- Redaction (core.keys.redact_key) ---------------------------------------------
# Key families whose id is a credential or derived from one: the /ops SLOWLOG,
# redis_audit's findings and the logs show their keys with the id replaced, since a
# session key's id is the session cookie itself. "core:ratelimit": HMACs of addresses
# and accounts.
KESTREL_CREDENTIAL_KEY_FAMILIES = frozenset({*ACCOUNT_CREDENTIAL_FAMILIES, "core:ratelimit"})

# --- Links in emails ----------------------------------------------------------------

KESTREL_SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000")

# --- Email ------------------------------------------------------------------------

# While DEBUG, mail is written to EMAIL_FILE_PATH and listed at /ops/mail (ops.mail).
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.filebased.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
# Used only by the file-based backend (EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend).
EMAIL_FILE_PATH = str(VAR_DIR / "mail")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Kestrel <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Misc -------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json_line": {"format": "%(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "json_console": {"class": "logging.StreamHandler", "formatter": "json_line"},
    },
    # The article's Redis summary (commands, average latency, error rate): one JSON
    # line every 1000 commands, unprefixed so log shippers can parse it.
    "loggers": {"kestrel.redis.summary": {"handlers": ["json_console"], "level": "INFO", "propagate": False}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
