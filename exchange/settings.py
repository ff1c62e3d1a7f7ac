"""One settings module; every deploy-time choice comes from the environment (12-factor).

See the configuration table in README.md for every variable.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A development checkout keeps its settings in .env (written by `make services`: DEBUG, a
# generated SECRET_KEY and the embedded servers' URLs); variables already set win. ENV_FILE
# names another file; production sets its variables and has no .env.
environ.Env.read_env(env.str("ENV_FILE", default=str(BASE_DIR / ".env")))

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    # Development only: DEBUG is on, so the server is not meant to be reachable by others.
    SECRET_KEY = "django-insecure-development-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "accounts",
    "exchange.markets",
    "exchange.ledger",
    "exchange.marketdata",
    "orders",
    "exchange.delivery.endpoints",
    "exchange.delivery.escrow",
    "exchange.delivery.gateway",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # control characters in the URL: 400 before anything reads it (exchange.input_edge)
    "exchange.input_edge.InputEdgeMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "exchange.error_views.ErrorPagesMiddleware",
    "exchange.api_http.ApiHttpMiddleware",
]

ROOT_URLCONF = "exchange.urls"
ASGI_APPLICATION = "exchange.asgi.application"
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
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# PostgreSQL only: the ledger's triggers and deferred checks, the runner's advisory locks and
# LISTEN/NOTIFY exist there. `make run` and `make test` start an embedded one
# (exchange/devservices.py) when DATABASE_URL is unset.
if not env.str("DATABASE_URL", default=""):
    raise ImproperlyConfigured(
        "DATABASE_URL is not set: `make services` starts an embedded PostgreSQL and writes its "
        "URL to .env, or point DATABASE_URL at a PostgreSQL server."
    )
DATABASES = {"default": env.db_url("DATABASE_URL")}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must be a PostgreSQL URL (postgres://...).")
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Under ASGI each request runs in its own thread, so Django's per-thread persistent
# connections are not reused; a psycopg pool per process is (Django 5.1+).
if env.bool("DATABASE_POOL", default=True):
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN", default=2),
        "max_size": env.int("DATABASE_POOL_MAX", default=16),
        # how long a request waits for a connection (all busy, or PostgreSQL unreachable: then
        # it answers 503 service_unavailable, see exchange.outages)
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# An unreachable host (no refusal, no answer) fails a connection attempt after this long.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
    "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
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

# --- Redis: channel layer, cache, Celery broker --------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    # core: channels-redis RedisChannelLayer (one Redis list entry per subscriber); pubsub: one
    # Redis publish per group message, fanned out inside each ASGI process (keeps nothing for a
    # channel that is not listening at that moment).
    CHANNEL_LAYER = env.str("CHANNEL_LAYER", default="core")
    # channels-redis blocks up to 5 s on an idle channel (BZPOPMIN); redis-py's default socket
    # timeout is also 5 s, so idle receives raised TimeoutError: give the socket more.
    CHANNEL_REDIS_HOST = {"address": REDIS_URL, "socket_timeout": 10}
    CHANNEL_LAYERS = {
        "default": (
            {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [CHANNEL_REDIS_HOST]},
            }
            if CHANNEL_LAYER == "pubsub"
            else {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [CHANNEL_REDIS_HOST], "capacity": 1500, "expiry": 30},
            }
        )
    }
    CACHES = {
        "default": {
            # Django's RedisCache with one pool and client per process (see exchange.cache)
            "BACKEND": "exchange.cache.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# A cache call waits this long for Redis (connect and answer); past it Redis counts as down
# and the call as a miss (exchange.cache).
REDIS_TIMEOUT_SECONDS = env.float("REDIS_TIMEOUT_SECONDS", default=2.0)
# /healthz fails (503) when a market's oldest command has waited for the runner longer.
HEALTHZ_RUNNER_MAX_LAG_SECONDS = env.float("HEALTHZ_RUNNER_MAX_LAG_SECONDS", default=30.0)

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = None
# Without a broker, tasks run in-process at call time (the embedded default of `make run`).
CELERY_TASK_ALWAYS_EAGER = env.bool(
    "CELERY_TASK_ALWAYS_EAGER", default=not CELERY_BROKER_URL or CELERY_BROKER_URL == "memory://"
)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    # Recompute every balance from postings; logs an error (alert) on any mismatch.
    "ledger-audit": {
        "task": "exchange.ledger.tasks.ledger_audit",
        "schedule": env.float("LEDGER_AUDIT_INTERVAL_SECONDS", default=3600.0),
    },
    # Cancel the asks of capacity listings past available_until, then retire unsold tokens.
    "capacity-expiry": {"task": "orders.tasks.capacity_expire_due_task", "schedule": 60.0},
}

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's JSON parser, refusing control characters in the body's strings
    "DEFAULT_PARSER_CLASSES": ["exchange.input_edge.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "exchange.api_schema.ExchangeAutoSchema",
    "EXCEPTION_HANDLER": "exchange.api_errors.exception_handler",
    # per API key (or session user) when authenticated, per IP otherwise; RateLimit-* headers
    "DEFAULT_THROTTLE_CLASSES": [
        "exchange.api_throttles.AnonRateThrottle",
        "exchange.api_throttles.KeyRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_THROTTLE_ANON", default="600/minute"),
        "user": env.str("API_THROTTLE_USER", default="6000/minute"),
    },
    # A caller is its REMOTE_ADDR: behind a proxy the ASGI server sets it from the proxy's header
    # (uvicorn --forwarded-allow-ips); DRF's default would key on a client's own
    # X-Forwarded-For, one new budget per made-up address.
    "NUM_PROXIES": 0,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Token Exchange API",
    "DESCRIPTION": (
        "Trade LLM token capacity. Prices are quote currency per 1,000,000 tokens (MTok); "
        "quantities are in MTok. Authenticate bots with `Authorization: Bearer <api key>`. "
        "The OpenAI-compatible gateway (`/v1/chat/completions`, `/v1/models`, keys with the "
        "`consume` scope) is not described here: it follows OpenAI's API and error format."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # request bodies get their own components: what is required, read-only or non-blank differs
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "CurrencyEnum": "exchange.markets.currencies.CURRENCY_CHOICES",
        "EndpointHealthEnum": "exchange.delivery.endpoints.models.HealthStatus",
        "SideEnum": "orders.models.Side",
        "OrderTypeEnum": "orders.models.OrderType",
        "TimeInForceEnum": "orders.models.TimeInForce",
        "SelfTradePreventionEnum": "orders.models.SelfTrade",
        "OrderStatusEnum": "orders.models.OrderStatus",
        "ListingStatusEnum": "orders.models.ListingStatus",
    },
}

# --- Stripe (optional) ------------------------------------------------------------------------
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_PUBLISHABLE_KEY = env.str("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_ENABLED = bool(STRIPE_SECRET_KEY)

# --- Security ---------------------------------------------------------------------------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^livez$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# --- Logs and metrics (docs/operations.md) --------------------------------------------------
# plain: a line of text (development); json: one JSON object per line (production log shippers)
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json.")
# /metrics (Prometheus): this bearer token when set; otherwise loopback callers only
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        # one JSON object per line, with the request id of the request that caused it
        "json": {"()": "exchange.logs.json_formatter"},
    },
    "filters": {
        "client_errors_once": {"()": "exchange.logs.ClientErrorsOnceFilter"},
        "client_errors_at_info": {"()": "exchange.logs.ClientErrorsAtInfoFilter"},
        "expected_refusals_at_info": {"()": "exchange.logs.ExpectedRefusalsAtInfoFilter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Django's default config gives "django" a console handler of its own (DEBUG only) and
        # lets it propagate to the root: every line twice under `make run`. Root only, once.
        "django": {"handlers": [], "propagate": True},
        # Each request is logged once, by the server's access log (see exchange.logs).
        "django.request": {"filters": ["client_errors_once", "expected_refusals_at_info"]},
        "django.channels.server": {"filters": ["client_errors_at_info"]},
        # httpx logs every upstream request at INFO: a line per gateway request (its CPU and
        # the log volume); failures are logged by the gateway itself
        "httpx": {"level": "WARNING"},
    },
}

STATICFILES_DIRS = [BASE_DIR / "exchange" / "static"]

# --- Engine runner ------------------------------------------------------------------------------
# embedded: a thread inside the served process (make run); external: separate `run_engine`
# processes (production); inline: in the request thread (tests).
ENGINE_RUNNER = env.str("ENGINE_RUNNER", default="embedded")
if ENGINE_RUNNER not in ("embedded", "external", "inline"):
    raise ImproperlyConfigured("ENGINE_RUNNER must be embedded, external or inline.")
ORDER_WAIT_SECONDS = env.float("ORDER_WAIT_SECONDS", default=2.0)
# Bots' order requests (Bearer API key, JSON) are taken in front of Django (orders.fastpath).
ORDER_FAST_PATH = env.bool("ORDER_FAST_PATH", default=True)
# How long that path trusts an API key it has checked (a revoked key works that much longer).
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=2.0)
# Intake threads per process on that path (each places a group of orders at a time).
ORDER_INTAKE_THREADS = env.int("ORDER_INTAKE_THREADS", default=2)

# --- Funding (Stripe deposits, payouts, reconciliation) ---------------------------------------
# Amounts are in currency units (e.g. "5000" CNY), the same for every currency.
FUNDING_DEPOSIT_MIN = env.str("FUNDING_DEPOSIT_MIN", default="1")
FUNDING_DEPOSIT_MAX = env.str("FUNDING_DEPOSIT_MAX", default="100000")
FUNDING_WITHDRAWAL_MIN = env.str("FUNDING_WITHDRAWAL_MIN", default="1")
FUNDING_WITHDRAWAL_MAX = env.str("FUNDING_WITHDRAWAL_MAX", default="50000")
FUNDING_WITHDRAWAL_DAILY_MAX = env.str("FUNDING_WITHDRAWAL_DAILY_MAX", default="100000")
# Webhook signatures: the stripe library rejects timestamps older than the tolerance; we also
# reject those further in the future than it (a clock-skewed or forged header).
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env.int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", default=300)
STRIPE_WEBHOOK_MAX_BODY_BYTES = env.int("STRIPE_WEBHOOK_MAX_BODY_BYTES", default=262144)
# Outgoing calls: the library never retries by itself (we retry with the same Idempotency-Key).
STRIPE_TIMEOUT_SECONDS = env.float("STRIPE_TIMEOUT_SECONDS", default=20.0)
STRIPE_CONNECT_COUNTRY = env.str("STRIPE_CONNECT_COUNTRY", default="")
STRIPE_RECONCILE_INTERVAL_SECONDS = env.float("STRIPE_RECONCILE_INTERVAL_SECONDS", default=3600.0)
STRIPE_RECONCILE_WINDOW_HOURS = env.int("STRIPE_RECONCILE_WINDOW_HOURS", default=48)
CELERY_BEAT_SCHEDULE["stripe-reconcile"] = {
    # Compares credited deposits and paid withdrawals with Stripe's balance transactions and
    # re-sends payouts stuck in processing; any difference is logged at ERROR level.
    "task": "accounts.funding.tasks.stripe_reconcile_task",
    "schedule": STRIPE_RECONCILE_INTERVAL_SECONDS,
}

# --- Websocket feed -----------------------------------------------------------------------------
WS_HEARTBEAT_SECONDS = env.float("WS_HEARTBEAT_SECONDS", default=5.0)
# A connection on the private ``user`` channel re-checks its key or session this often (on a
# heartbeat). Revocation and logout also push a close at once; this is the backstop for a lost push.
WS_CREDENTIAL_RECHECK_SECONDS = env.float("WS_CREDENTIAL_RECHECK_SECONDS", default=30.0)
# The runner publishes each market's public data (trades, book, candles) at most once per this
# many milliseconds, merging what committed in between (0: after every batch).
FEED_COALESCE_MS = env.int("FEED_COALESCE_MS", default=100)
WS_TICKER_INTERVAL = env.float("WS_TICKER_INTERVAL", default=0.25)
WS_RATE_PER_SECOND = env.float("WS_RATE_PER_SECOND", default=20.0)
WS_RATE_BURST = env.int("WS_RATE_BURST", default=40)

# --- Delivery: provider endpoints -----------------------------------------------------------
# Fernet keys (comma-separated, newest first) encrypting providers' upstream API keys at rest;
# the first encrypts, all decrypt (rotate: prepend a key, run `rotate_endpoint_keys`). Empty
# with DEBUG on: a key derived from SECRET_KEY (development only); empty with DEBUG off: storing
# or reading an endpoint key fails.
DELIVERY_ENCRYPTION_KEYS = env.list("DELIVERY_ENCRYPTION_KEYS", default=[])
# Health probes: a tiny streamed completion to every endpoint, this often.
DELIVERY_PROBE_INTERVAL_SECONDS = env.float("DELIVERY_PROBE_INTERVAL_SECONDS", default=30.0)
DELIVERY_PROBE_TIMEOUT_SECONDS = env.float("DELIVERY_PROBE_TIMEOUT_SECONDS", default=10.0)
# Saving an endpoint checks `GET {base_url}/models` with this timeout.
DELIVERY_VALIDATE_TIMEOUT_SECONDS = env.float("DELIVERY_VALIDATE_TIMEOUT_SECONDS", default=5.0)
# Dead-man switch: failing every check this long cancels the provider's asks in the market.
DELIVERY_DEADMAN_SECONDS = env.float("DELIVERY_DEADMAN_SECONDS", default=120.0)
CELERY_BEAT_SCHEDULE["delivery-endpoint-probe"] = {
    "task": "exchange.delivery.endpoints.tasks.endpoints_probe_task",
    "schedule": DELIVERY_PROBE_INTERVAL_SECONDS,
    # A run still queued when the next is due is dropped, not piled up behind a stuck worker.
    "options": {"expires": DELIVERY_PROBE_INTERVAL_SECONDS},
}

# --- Delivery: escrow -----------------------------------------------------------------------
# Per-provider limits on capacity listings (an approved provider's; each refusal is a 4xx
# with its own code, nothing written). Sizes in tokens. Together they keep every provider's
# issuance account far inside the ledger's range (orders.capacity).
CAPACITY_MAX_LISTING_TOKENS = env.int("CAPACITY_MAX_LISTING_TOKENS", default=10**12)
CAPACITY_MAX_OUTSTANDING_TOKENS = env.int("CAPACITY_MAX_OUTSTANDING_TOKENS", default=10**13)
CAPACITY_MAX_ACTIVE_LISTINGS = env.int("CAPACITY_MAX_ACTIVE_LISTINGS", default=1000)
CAPACITY_MAX_HORIZON_DAYS = env.int("CAPACITY_MAX_HORIZON_DAYS", default=90)
if not (
    0 < CAPACITY_MAX_LISTING_TOKENS <= CAPACITY_MAX_OUTSTANDING_TOKENS <= 10**15
    and CAPACITY_MAX_ACTIVE_LISTINGS > 0
    and 0 < CAPACITY_MAX_HORIZON_DAYS <= 3660
):
    raise ImproperlyConfigured(
        "Capacity limits: 0 < CAPACITY_MAX_LISTING_TOKENS <= CAPACITY_MAX_OUTSTANDING_TOKENS"
        " <= 10**15, CAPACITY_MAX_ACTIVE_LISTINGS > 0, 0 < CAPACITY_MAX_HORIZON_DAYS <= 3660."
    )

# Providers are paid out of escrow for delivered tokens in batches, this often.
DELIVERY_ESCROW_RELEASE_SECONDS = env.float("DELIVERY_ESCROW_RELEASE_SECONDS", default=60.0)
# An open reservation older than this was left by a dead gateway process: the gateway's reaper
# releases it (nothing charged). Longer than the longest request the gateway lets run.
DELIVERY_RESERVATION_TIMEOUT_SECONDS = env.float(
    "DELIVERY_RESERVATION_TIMEOUT_SECONDS", default=900.0
)
# A sale must leave the buyer a lot living at least this long: lots and capacity listings
# ending sooner are not sold (their asks are cancelled when they would match).
DELIVERY_LOT_MIN_LIFETIME_SECONDS = env.float("DELIVERY_LOT_MIN_LIFETIME_SECONDS", default=60.0)
CELERY_BEAT_SCHEDULE["delivery-escrow-release"] = {
    "task": "exchange.delivery.escrow.tasks.escrow_release_task",
    "schedule": DELIVERY_ESCROW_RELEASE_SECONDS,
    "options": {"expires": DELIVERY_ESCROW_RELEASE_SECONDS},
}
# Take-or-pay: lots past their expiry retire their unconsumed tokens, the provider is paid.
CELERY_BEAT_SCHEDULE["delivery-lots-expiry"] = {
    "task": "exchange.delivery.escrow.tasks.lots_expire_task",
    "schedule": 60.0,
}

# --- Web UI: htmx + template partials, CSP with nonces, front-end libraries, demo ------------
from csp.constants import NONCE  # noqa: E402

INSTALLED_APPS += ["django_htmx", "template_partials", "csp", "exchange.web"]
MIDDLEWARE += ["django_htmx.middleware.HtmxMiddleware", "csp.middleware.CSPMiddleware"]
# site: the demo banner, roles, colour convention and ``csp_nonce`` (the name django-htmx reads).
TEMPLATES[0]["OPTIONS"]["context_processors"] += ["exchange.web.context_processors.site"]
# npm packages (package.json, installed by `make` with `npm ci`) are served under static/vendor/.
if (BASE_DIR / "node_modules").is_dir():
    STATICFILES_DIRS += [("vendor", BASE_DIR / "node_modules")]

CONTENT_SECURITY_POLICY = {
    # The API docs pages (drf-spectacular's Swagger UI / Redoc) start themselves with inline
    # scripts; they carry no user data.
    "EXCLUDE_URL_PREFIXES": ["/api/docs/", "/api/redoc/"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", NONCE],
        # The hash is the <style> of lightweight-charts' attribution logo (v5.2, pinned by
        # package-lock.json; the browser tests fail on a CSP console error if it changes).
        "style-src": ["'self'", "'sha256-3pRED1tOXas1FXFoPb9TGCjmYe9XQsmO9OV23khV2nY='"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        # 'self' covers ws:/wss: to the same host in CSP level 3 browsers.
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        # Deposits and payouts redirect a form post to Stripe's hosted pages.
        "form-action": ["'self'", "https://checkout.stripe.com", "https://connect.stripe.com"],
    },
}
# The live demo: seeded demo users and a market simulator inside the served process. Off unless
# DEMO is set (`make run` sets DEMO=1); production and tests never run bots by accident.
DEMO = env.bool("DEMO", default=False)
DEMO_BOTS = env.int("DEMO_BOTS", default=6)
DEMO_RATE = env.float("DEMO_RATE", default=6.0)  # simulator rounds per second, all markets
# Whom the deposit page names when this exchange takes no deposits (neither DEMO nor Stripe).
SUPPORT_EMAIL = env.str("SUPPORT_EMAIL", default="")

# --- Delivery: the gateway (/v1, exchange.delivery.gateway.proxy) ----------------------------
# The demo upstream (an OpenAI-compatible server streaming labelled demo text) served by this
# process under /demo-upstream/v1: on with the live demo, off in production.
DEMO_UPSTREAM = env.bool("DEMO_UPSTREAM", default=DEMO)
# Providers' upstreams (the check on save, the probes, the gateway) may be plain http and on
# loopback / private / link-local addresses. Off: https and public addresses only, checked at
# save and again at every connect (exchange.delivery.endpoints.egress). On only for
# development, the demo (its upstream is this process) and tests; `check --deploy` refuses it.
DELIVERY_UPSTREAM_ALLOW_PRIVATE = env.bool("DELIVERY_UPSTREAM_ALLOW_PRIVATE", default=DEBUG or DEMO)
# Upstream calls: connecting (and waiting for a pooled connection), and the longest silence
# between two chunks of an answer.
GATEWAY_CONNECT_TIMEOUT_SECONDS = env.float("GATEWAY_CONNECT_TIMEOUT_SECONDS", default=5.0)
GATEWAY_READ_TIMEOUT_SECONDS = env.float("GATEWAY_READ_TIMEOUT_SECONDS", default=60.0)
# A request's whole life. Keep it below DELIVERY_RESERVATION_TIMEOUT_SECONDS: the reaper
# (generations_reap_task) releases open reservations older than that (their process died).
GATEWAY_MAX_REQUEST_SECONDS = env.float("GATEWAY_MAX_REQUEST_SECONDS", default=600.0)
GATEWAY_MAX_CONNECTIONS = env.int("GATEWAY_MAX_CONNECTIONS", default=1000)
GATEWAY_MAX_BODY_BYTES = env.int("GATEWAY_MAX_BODY_BYTES", default=8 * 1024 * 1024)
# Threads per process for the gateway's database work (two short hops per request).
GATEWAY_DATABASE_THREADS = env.int("GATEWAY_DATABASE_THREADS", default=8)
# How old the gateway's per-process copy of the markets and providers' names may be.
GATEWAY_CACHE_SECONDS = env.float("GATEWAY_CACHE_SECONDS", default=5.0)
# A provider's reported usage is billed up to ceil(our count × TOLERANCE) + SLACK tokens (our
# count errs high); beyond that it is capped and the generation marked provider_disputed.
# Hidden reasoning a provider does not stream cannot be counted: raise these for such models.
GATEWAY_USAGE_TOLERANCE = env.str("GATEWAY_USAGE_TOLERANCE", default="1.5")  # a decimal
GATEWAY_USAGE_SLACK_TOKENS = env.int("GATEWAY_USAGE_SLACK_TOKENS", default=32)
GATEWAY_REAP_INTERVAL_SECONDS = env.float("GATEWAY_REAP_INTERVAL_SECONDS", default=60.0)
CELERY_BEAT_SCHEDULE["delivery-gateway-reap"] = {
    "task": "exchange.delivery.gateway.tasks.generations_reap_task",
    "schedule": GATEWAY_REAP_INTERVAL_SECONDS,
    "options": {"expires": GATEWAY_REAP_INTERVAL_SECONDS},
}

# --- Login abuse: lockout (django-axes), two-factor (django-otp), account email -------------
INSTALLED_APPS += ["axes", "django_otp", "django_otp.plugins.otp_totp"]
# OTPMiddleware after AuthenticationMiddleware (request.user.is_verified); AxesMiddleware last,
# so it turns a lockout flagged anywhere below it into the lockout page.
MIDDLEWARE += ["django_otp.middleware.OTPMiddleware", "axes.middleware.AxesMiddleware"]
# AxesStandaloneBackend first: it refuses a locked-out client before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"  # survives restarts and Redis outages
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
# Counted per account (whatever the address: a distributed guess at one password) and per
# address (whatever the account: one address trying many). "a+b" counts the pair instead.
AXES_LOCKOUT_PARAMETERS = [
    item.split("+") if "+" in item else item
    for item in env.list("AXES_LOCKOUT_PARAMETERS", default=["username", "ip_address"])
]
# Emails are case-insensitive: DAVE@ and dave@ are one account, so one counter.
AXES_USERNAME_FORM_FIELD = "username"
AXES_USERNAME_CALLABLE = "accounts.login_security.axes_username"
# The login page with the reason and the cool-off (429), not a bare error page.
AXES_LOCKOUT_CALLABLE = "accounts.login_security.lockout_response"
# The cool-off runs from the last counted failure; attempts refused while locked do not extend
# it, so "try again in 15 minutes" stays true.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# No banner at every start; failures and lockouts are still logged (WARNING, addresses masked).
AXES_VERBOSE = False
# Not reset by a success: one address logging into its own account between guesses at
# another would otherwise wipe the per-address counter (and the rows behind the other
# account's counter with it).
AXES_RESET_ON_SUCCESS = False
# The client's address is REMOTE_ADDR (no django-ipware): behind a proxy, the ASGI server sets
# it from the proxy's header (uvicorn --forwarded-allow-ips), never from a client's header.
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Token Exchange")
# Signup answers the same whether or not the email is registered: a new account is activated
# by a link sent to its address (the owner of a registered one is told instead). The demo
# (DEMO=1) logs a newcomer in at once.
SIGNUP_CONFIRM_EMAIL = env.bool("SIGNUP_CONFIRM_EMAIL", default=not DEMO)
PASSWORD_RESET_TIMEOUT = env.int("PASSWORD_RESET_TIMEOUT", default=3 * 60 * 60)
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default=(
        "django.core.mail.backends.console.EmailBackend"
        if DEBUG
        else "django.core.mail.backends.smtp.EmailBackend"
    ),
)
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=True)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="no-reply@localhost")
