"""Shared fixtures, and the rule that tests never skip: a test whose service (PostgreSQL,
Redis) cannot be reached fails. `make test` starts embedded servers when DATABASE_URL and
REDIS_URL are unset.

With ``REQUIRE_SERVICES=1`` (set by ``.ci/run``) the session refuses to start at all unless
both PostgreSQL and Redis answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from django.conf import settings

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def _missing(reason: str) -> None:
    pytest.fail(f"required service unavailable: {reason}", pytrace=False)


def _redis_problem() -> str | None:
    if not settings.REDIS_URL:
        return "REDIS_URL is not set"
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        return f"Redis at {settings.REDIS_URL} is unreachable: {error}"
    return None


def _postgres_problem() -> str | None:
    database = settings.DATABASES["default"]
    import psycopg

    try:
        psycopg.connect(
            host=database.get("HOST") or "127.0.0.1",
            port=database.get("PORT") or 5432,
            user=database.get("USER") or "postgres",
            password=database.get("PASSWORD") or None,
            dbname="postgres",
            connect_timeout=3,
        ).close()
    except psycopg.Error as error:
        return f"PostgreSQL is unreachable: {error}"
    return None


def pytest_sessionstart(session: pytest.Session) -> None:
    if not REQUIRE_SERVICES:
        return
    problems = [p for p in (_postgres_problem(), _redis_problem()) if p]
    if problems:
        pytest.exit("REQUIRE_SERVICES=1 but: " + "; ".join(problems), returncode=3)


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    """Cached book/ticker state must not leak between tests (the database is rolled back)."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def redis_url() -> str:
    problem = _redis_problem()
    if problem:
        _missing(problem)
    return settings.REDIS_URL


@pytest.fixture
def postgres() -> None:
    """Use in tests that need PostgreSQL itself (locking, constraints, concurrency)."""
    problem = _postgres_problem()
    if problem:
        _missing(problem)


@pytest.fixture
def make_user(db: None) -> Callable[..., object]:
    from accounts.services import user_create

    counter = iter(range(1, 1_000_000))

    def make(email: str | None = None, role: str = "buyer", password: str = "a-Strong-pass-123"):
        # Providers made here are approved (tests/accounts/test_onboarding.py: applications).
        return user_create(
            email=email or f"user{next(counter)}@example.com",
            password=password,
            role=role,
            provider_grant_reason="Test fixture.",
        )

    return make


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


def _register_hypothesis_profiles() -> None:
    from hypothesis import HealthCheck
    from hypothesis import settings as hypothesis_settings

    hypothesis_settings.register_profile(
        "ci",
        deadline=None,
        derandomize=True,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    hypothesis_settings.register_profile("dev", deadline=None)
    hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


_register_hypothesis_profiles()


@pytest.fixture
def admin_login(db: None) -> Callable[..., object]:
    """Log a client in as staff the way the admin requires it: with a confirmed TOTP device that
    verified this session (django-otp). force_login alone leaves the admin closed."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    def log_in(client, user) -> None:
        if not (user.is_staff and user.is_active):
            raise ValueError("admin_login is for active staff users")
        device = TOTPDevice.objects.create(user=user, name="test", confirmed=True)
        client.force_login(user)
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()

    return log_in
