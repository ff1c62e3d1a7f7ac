"""Test settings: the real settings module, with a throwaway secret when none is given."""

import os

# Before the settings read .env: a developer's DEBUG=true there must not change what tests see.
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "test-only-insecure-key-not-for-production")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
# Endpoint keys at rest (exchange.delivery.endpoints.crypto): a fixed test-only Fernet key.
os.environ.setdefault("DELIVERY_ENCRYPTION_KEYS", "Sljo4Rj_kZtANiiInbxYlhBngMndt7iWrezbkKSlmhY=")
# Test upstreams listen on loopback over plain http (served processes inherit this too); the
# SSRF tests (tests/delivery/endpoints/test_ssrf.py) turn it off.
os.environ.setdefault("DELIVERY_UPSTREAM_ALLOW_PRIVATE", "true")
# Thread-heavy tests (50 threads at a barrier) need a connection each, beyond any pool size.
os.environ.setdefault("DATABASE_POOL", "false")

from exchange.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
# Orders are processed in the request thread unless a test starts a runner process itself.
ENGINE_RUNNER = os.environ.get("TEST_ENGINE_RUNNER", "inline")
ORDER_WAIT_SECONDS = 5.0
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}  # noqa: F405

# Each xdist worker gets its own Redis database, so clearing the cache between tests is safe.
if REDIS_URL:  # noqa: F405
    from urllib.parse import urlsplit, urlunsplit

    _worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    _parts = urlsplit(REDIS_URL)  # noqa: F405
    REDIS_URL = urlunsplit(_parts._replace(path=f"/{8 + int(_worker[2:] or 0)}"))
    CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [{**CHANNEL_REDIS_HOST, "address": REDIS_URL}]  # noqa: F405
    CACHES["default"]["LOCATION"] = REDIS_URL  # noqa: F405
# tests that want heartbeats set it themselves (a served test passes it in the environment)
WS_HEARTBEAT_SECONDS = float(os.environ.get("WS_HEARTBEAT_SECONDS", "3600"))
