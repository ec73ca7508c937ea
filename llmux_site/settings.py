"""Django settings, driven only by `LLMUX_*` environment variables.

Two profiles share this module. Embedded (the default): SQLite in WAL mode and django-q2's
ORM broker, everything under one data directory. Production: `LLMUX_DATABASE_URL`
(PostgreSQL) and `LLMUX_REDIS_URL` (django-q2 broker, channel layer, cache).
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from llmux_site.envconf import (
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_optional,
    env_path,
    env_ports,
    env_size,
    env_str,
    env_url,
)
from llmux_site.private_files import PRIVATE_UMASK, make_private
from llmux_site.webserver.limits import ServerLimits

BASE_DIR = Path(__file__).resolve().parent.parent

# --- where state lives -------------------------------------------------------------------
DATA_DIR = env_path("LLMUX_DATA_DIR", BASE_DIR / "data")
# Where model definitions may point (sockets, images, local model directories): every
# such path is normalised and must lie under one of these (models_app.services.paths).
LLMUX_PATH_ROOTS = env_list(
    "LLMUX_PATH_ROOTS", [str(DATA_DIR), "/models", "/var/lib/llmux", "/run/llmux"]
)
LLMUX_DIRS = {
    "data": DATA_DIR,
    "logs": DATA_DIR / "logs",
    "run": DATA_DIR / "run",
    "images": DATA_DIR / "images",
    "ledger": DATA_DIR / "gpu-ledger",
    "sim_cache": DATA_DIR / "sim-cache",
}
# prometheus_client's multiprocess mode: every process writes its counters and histograms
# here, /metrics merges them (models_app.metrics). Set before the client is imported.
LLMUX_DIRS["metrics"] = LLMUX_DIRS["run"] / "metrics"
# Always this data directory's: a value inherited from a parent process (another llmux
# with another data directory) would mix two installations' counters.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(LLMUX_DIRS["metrics"])
# Everything llmux creates (database and its WAL, keys, logs, sockets, images; engines
# inherit it) is its user's alone: set before the first file is made.
os.umask(PRIVATE_UMASK)
try:
    for _path in LLMUX_DIRS.values():
        _path.mkdir(parents=True, exist_ok=True)
except OSError as exc:
    raise ImproperlyConfigured(f"LLMUX_DATA_DIR: cannot create {exc.filename}: {exc}") from exc

DATABASE_URL = env_url("LLMUX_DATABASE_URL", ("postgres", "postgresql", "sqlite"))
REDIS_URL = env_url("LLMUX_REDIS_URL", ("redis", "rediss", "unix"))
PROFILE = "production" if DATABASE_URL or REDIS_URL else "embedded"


def _secret_key() -> str:
    configured = env_optional("LLMUX_SECRET_KEY")
    if configured is not None:
        if len(configured) < 32:
            raise ImproperlyConfigured("LLMUX_SECRET_KEY: must be at least 32 characters")
        return configured
    if PROFILE == "production":
        raise ImproperlyConfigured(
            "LLMUX_SECRET_KEY: required when LLMUX_DATABASE_URL or LLMUX_REDIS_URL is set"
        )
    # Embedded profile: one key per data directory, created on first start, private to root.
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.touch(mode=0o600)
        key_file.write_text(secrets.token_urlsafe(50))
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("LLMUX_DEBUG", False)
ALLOWED_HOSTS = env_list("LLMUX_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("LLMUX_CSRF_TRUSTED_ORIGINS", [])
NODE_NAME = env_str("LLMUX_NODE_NAME", socket.gethostname())

# --- applications --------------------------------------------------------------------------
INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_q",
    "models_app",
    "checkpoints_app",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "llmux_site.middleware.RefuseNulBytes",  # before any view looks a name up
    "llmux_site.middleware.ContentSecurityPolicy",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "llmux_site.urls"
ASGI_APPLICATION = "llmux_site.asgi.application"
WSGI_APPLICATION = None

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

# --- database ------------------------------------------------------------------------------
_db: dict[str, Any]
if DATABASE_URL and not DATABASE_URL.startswith("sqlite"):
    _db = dict(dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True))
else:
    _sqlite_path = (
        dj_database_url.parse(DATABASE_URL)["NAME"] if DATABASE_URL else DATA_DIR / "llmux.sqlite3"
    )
    _db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _sqlite_path,
        "OPTIONS": {
            # WAL lets the web process read while the worker writes; IMMEDIATE takes the
            # write lock at BEGIN so two writers queue on busy_timeout instead of failing
            # with "database is locked" halfway through a transaction.
            "init_command": (
                "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;PRAGMA busy_timeout=10000;"
            ),
            "transaction_mode": "IMMEDIATE",
            "timeout": 10,
        },
        # Tests get a file too, not Django's default in-memory database: its shared cache
        # locks whole tables and fails ("database table is locked") without waiting on
        # busy_timeout, so a test whose server thread reads while it writes would flake on
        # a lock production (a WAL file) never takes.
        "TEST": {"NAME": str(DATA_DIR / "test-llmux.sqlite3")},
    }
DATABASES = {"default": _db}
# An existing data directory (and a SQLite file kept elsewhere) made under a looser umask.
_db_files = (
    []
    if "sqlite" not in _db["ENGINE"]
    else [Path(f"{_db['NAME']}{x}") for x in ("", "-wal", "-shm")]
)
make_private(DATA_DIR, LLMUX_DIRS.values(), _db_files)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- caches, channels, task queue -----------------------------------------------------------
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Lifecycle tasks can legitimately run for the length of a cold start (up to 30 minutes for
# big models), so the task timeout is generous; django-q2 requires retry > timeout or a
# task still running would be handed to a second worker.
Q_TIMEOUT = env_int("LLMUX_TASK_TIMEOUT_SECS", 3600, minimum=60)

# CUDA suspend (eviction process action `cuda_suspend`): `auto` uses the driver API where
# cuda-bindings is installed (the `cuda` extra), `driver` always, `off` never (such an
# eviction then escalates to stop, recorded). A cuda-checkpoint path replaces the API.
LLMUX_CUDA_SUSPEND = env_choice("LLMUX_CUDA_SUSPEND", "auto", ("auto", "driver", "off"))
# vLLM sleep mode (evictions that offload or discard weights): `auto` where the host has an
# NVIDIA GPU (vLLM's CPU build refuses --enable-sleep-mode) and always for the simulator,
# `on` everywhere, `off` nowhere; without it such an eviction stops the engine instead.
LLMUX_SLEEP_MODE = env_choice("LLMUX_SLEEP_MODE", "auto", ("auto", "on", "off"))
LLMUX_CUDA_CHECKPOINT_BIN = env_optional("LLMUX_CUDA_CHECKPOINT_BIN")

# Gateway API keys: `auto` requires one on /v1/ whenever the web process serves beyond
# loopback (LLMUX_BIND_HOST, set by `llmux serve --host`), `on` always, `off` never.
LLMUX_BIND_HOST = env_str("LLMUX_BIND_HOST", "127.0.0.1")
# The port `llmux serve` listens on (it tells its children), so no engine may take it.
LLMUX_BIND_PORT = env_int("LLMUX_BIND_PORT", 0, minimum=0, maximum=65535) or None
# The config's admin_port and metrics_port, set by `llmux serve` when it listens on them
# (loopback only, no authentication: llmux_site/side_ports.py).
LLMUX_ADMIN_PORT = env_int("LLMUX_ADMIN_PORT", 0, minimum=0, maximum=65535) or None
LLMUX_METRICS_PORT = env_int("LLMUX_METRICS_PORT", 0, minimum=0, maximum=65535) or None
# Ports no engine may listen on, whoever defines the model: the privileged range and the
# usual local services, whose protocols the gateway must never be pointed at (a request
# forwarded to Redis or PostgreSQL is a command to them). llmux's own ports, the
# database's and Redis's are added to these (models_app.services.engine_rules).
LLMUX_DENIED_PORTS = env_ports(
    "LLMUX_DENIED_PORTS",
    "1-1023,1883,2379,2380,3306,4222,5432,5672,6379,9092,11211,15672,27017",
)
LLMUX_REQUIRE_API_KEY = env_choice("LLMUX_REQUIRE_API_KEY", "auto", ("auto", "on", "off"))


def _keys_required() -> bool:
    from llmux_site.core.addresses import is_loopback_host

    if LLMUX_REQUIRE_API_KEY == "auto":
        return not is_loopback_host(LLMUX_BIND_HOST)
    return LLMUX_REQUIRE_API_KEY == "on"


LLMUX_API_KEYS_REQUIRED = _keys_required()


def _trusted_proxies() -> list[str]:
    """Reverse proxies whose X-Forwarded-For names the real client (docs/DEPLOYMENT.md):
    loopback by default, where a proxy on the same host connects from; `none`: none."""
    from llmux_site.gateway.proxies import parse_networks

    entries = env_list("LLMUX_TRUSTED_PROXIES", ["127.0.0.0/8", "::1"])
    if entries == ["none"]:
        return []
    try:
        parse_networks(entries)
    except ValueError as exc:
        raise ImproperlyConfigured(f"LLMUX_TRUSTED_PROXIES: {exc}") from None
    return entries


LLMUX_TRUSTED_PROXIES = _trusted_proxies()

# CRIU checkpoints (eviction process action `checkpoint`): `auto` uses the registry's
# checkpoint.criu_path when that program is there, `off` never (such an eviction then
# escalates to stop, recorded). docs/CHECKPOINTS.md.
LLMUX_CRIU = env_choice("LLMUX_CRIU", "auto", ("auto", "off"))
# How an engine's CUDA state goes into an image: `auto` by what is installed (CRIU's CUDA
# plugin where it is and the driver is >= 580, else llmux suspends CUDA first), or forced.
LLMUX_CRIU_CUDA = env_choice("LLMUX_CRIU_CUDA", "auto", ("auto", "plugin", "suspend"))
# Disk budget of the images directory (unset: the filesystem's free space is the limit);
# a dump that would not fit evicts by stop instead. The reserve is always left free.
LLMUX_IMAGES_BUDGET = env_size("LLMUX_IMAGES_BUDGET", None)
LLMUX_IMAGES_RESERVE = env_size("LLMUX_IMAGES_RESERVE", 1024**3) or 0
# Images whose restore failed are kept for inspection, the newest few per model; older
# ones are deleted (a real vLLM's image is 1.5 GB, and repeated failures filled the disk).
LLMUX_IMAGES_KEEP_CORRUPT = env_int("LLMUX_IMAGES_KEEP_CORRUPT", 3, minimum=0)
# Per-request activity (docs/OBSERVABILITY.md, "Requests"): finished gateway requests are
# kept this many hours and at most this many rows, whichever ends first. Whether prompt and
# answer text is kept is not a setting here: an admin turns capture on in the dashboard.
LLMUX_ACTIVITY_RETENTION_HOURS = env_int("LLMUX_ACTIVITY_RETENTION_HOURS", 24, minimum=1)
LLMUX_ACTIVITY_MAX_REQUESTS = env_int("LLMUX_ACTIVITY_MAX_REQUESTS", 100_000, minimum=1)
Q_CLUSTER: dict[str, Any] = {
    "name": env_str("LLMUX_CLUSTER_NAME", "llmux"),
    "workers": env_int("LLMUX_WORKERS", 3, minimum=2, maximum=64),
    "timeout": Q_TIMEOUT,
    "retry": Q_TIMEOUT + 60,
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    "label": "Tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    # The ORM broker polls; switch latency includes this wait.
    Q_CLUSTER["poll"] = 0.02

# --- REST framework ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: DRF answers a request without credentials with the first class's
    # challenge, so that is a 401 with `WWW-Authenticate: Token` (the session class has
    # none, which made it a 403).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Automation: `Token KEY`, checked against hashed tokens (never stored in clear).
        "models_app.api.authentication.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON in and out: automation's format, and one request shape to validate.
    "DEFAULT_PARSER_CLASSES": ["models_app.api.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "models_app.api.pagination.StrictLimitOffset",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Refused writes (401, 403) are audited here: DRF refuses them before any view runs.
    "EXCEPTION_HANDLER": "models_app.api.refusals.audit_refusals",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "llmux",
    "DESCRIPTION": "Management API and OpenAI-compatible gateway of llmux.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "llmux_site.openapi.add_gateway_paths",
        "llmux_site.openapi.add_api_error_responses",
        "models_app.api.schema.forbid_unknown_fields",
    ],
    # Request bodies get their own components (minLength on required strings and so on).
    "COMPONENT_SPLIT_REQUEST": True,
    # One name per choice set (weights and process appear in several models).
    "ENUM_NAME_OVERRIDES": {
        "WeightsEnum": "models_app.models.choices.Weights",
        "ProcessEnum": "models_app.models.choices.Process",
        # Three choice sets share field names ("kind", "operation"): one name each.
        "OperationKindEnum": "models_app.models.choices.OperationKind",
        "KeyKindEnum": "models_app.models.keys.KeyKind",
        "EngineKindEnum": "models_app.models.choices.EngineKind",
    },
    # Swagger UI from the installed sidecar package: no asset is fetched from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- security --------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Behind TLS (the production profile's default; a TLS-terminating proxy sets
# X-Forwarded-Proto): cookies only over HTTPS, HSTS, and HTTP redirected to HTTPS.
# `check --deploy` is clean with it. The embedded profile serves loopback over HTTP.
LLMUX_TLS = env_bool("LLMUX_TLS", PROFILE == "production")
if LLMUX_TLS:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("LLMUX_HSTS_SECONDS", 31_536_000, minimum=0)
    # Both on, as `check --deploy` asks; a host whose subdomains are not all on HTTPS
    # turns them off (and accepts the two warnings).
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("LLMUX_HSTS_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("LLMUX_HSTS_PRELOAD", True)
# The web server (llmux_site.webserver) enforces these before a body is read; Django's
# own body limit is the same number. Read by the one function the server uses too.
LLMUX_SERVER_LIMITS = ServerLimits.from_environment()
DATA_UPLOAD_MAX_MEMORY_SIZE = LLMUX_SERVER_LIMITS.max_body_bytes
LLMUX_HEADER_TIMEOUT_SECS = LLMUX_SERVER_LIMITS.header_timeout
LLMUX_BODY_TIMEOUT_SECS = LLMUX_SERVER_LIMITS.body_timeout
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
# Failed logins (dashboard and admin): after this many for one account, or from one
# address, within the window, every attempt is refused until the window ends
# (models_app.services.login_throttle; counted in the cache, shared through Redis).
LLMUX_LOGIN_MAX_FAILURES = env_int("LLMUX_LOGIN_MAX_FAILURES", 5, minimum=1)
LLMUX_LOGIN_MAX_FAILURES_PER_ADDRESS = env_int(
    "LLMUX_LOGIN_MAX_FAILURES_PER_ADDRESS", 20, minimum=1
)
LLMUX_LOGIN_WINDOW_SECS = env_int("LLMUX_LOGIN_WINDOW_SECS", 900, minimum=1)

# --- i18n, static -----------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("LLMUX_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "dashboard.assets.PackageAssetFinder",  # plotly.js from its npm package (node_modules/)
]
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # `{% static %}` URLs carry the file's digest: their responses are cached for a year.
    "staticfiles": {"BACKEND": "llmux_site.static_assets.VersionedStaticFilesStorage"},
}

# --- logging ------------------------------------------------------------------------------------
LOG_LEVEL = env_choice("LLMUX_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
# json: one object per line with event names (llmux_site.logs); text: for people.
LOG_FORMAT = env_choice(
    "LLMUX_LOG_FORMAT", "json" if PROFILE == "production" else "text", ("json", "text")
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "llmux_site.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django_q": {"level": "WARNING"}},
}

# --- llmux --------------------------------------------------------------------------------------
LLMUX_KEEP_ENGINES_ON_EXIT = env_bool("LLMUX_KEEP_ENGINES_ON_EXIT", False)
# `llmux serve`'s web processes: a number, or auto (llmux_site/serve.py web_process_count).
LLMUX_WEB_PROCESSES = env_str("LLMUX_WEB_PROCESSES", "auto")
# Set by `llmux serve` for its web processes: how many they are (0: not known, as for a
# web process started by hand). One alone counts keys' windows in its memory.
LLMUX_WEB_PROCESS_COUNT = env_int("LLMUX_WEB_PROCESS_COUNT", 0, minimum=0)
LLMUX_DEMO_REGISTRY = env_bool("LLMUX_DEMO_REGISTRY", True)
