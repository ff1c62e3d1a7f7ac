"""The static files middleware keeps the request chain async; the cache shares pool and client."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient
from django.utils.module_loading import import_string

from exchange.cache import SharedConnectionPool
from exchange.middleware import StaticFilesMiddleware


def test_every_middleware_runs_async_under_asgi() -> None:
    """One sync-only middleware makes Django hop threads around it on every request."""
    sync_only = [
        path
        for path in settings.MIDDLEWARE
        if not getattr(import_string(path), "async_capable", False)
    ]
    assert sync_only == []
    assert iscoroutinefunction(ASGIHandler()._middleware_chain)


@pytest.mark.django_db
def test_static_files_are_served_and_other_paths_pass_through() -> None:
    async def requests() -> None:
        client = AsyncClient()
        found = await client.get("/static/img/favicon.svg")
        assert found.status_code == 200
        assert b"<svg" in b"".join(found.streaming_content)
        assert (await client.get("/static/img/nope.svg")).status_code == 404
        assert (await client.get("/healthz")).status_code == 200

    async_to_sync(requests)()


def test_static_middleware_is_sync_capable_too() -> None:
    seen = []

    def view(request):
        seen.append(request)
        return "response"

    middleware = StaticFilesMiddleware(view)
    assert not iscoroutinefunction(middleware)

    class Request:
        path_info = "/api/v1/markets"

    assert middleware(Request()) == "response"
    assert len(seen) == 1


def test_cache_pools_are_shared_per_url() -> None:
    first = SharedConnectionPool.from_url("redis://127.0.0.1:6379/9", socket_timeout=1)
    again = SharedConnectionPool.from_url("redis://127.0.0.1:6379/9", socket_timeout=1)
    other = SharedConnectionPool.from_url("redis://127.0.0.1:6379/10", socket_timeout=1)
    assert first is again
    assert other is not first


def test_cache_objects_share_one_client() -> None:
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache as DjangoRedisCache

    from exchange.cache import RedisCache

    cache = caches.create_connection("default")
    if not isinstance(cache, DjangoRedisCache):
        pytest.fail("these tests run with REDIS_URL set (the Redis cache)")
    assert isinstance(cache, RedisCache)
    another = caches.create_connection("default")
    assert cache._cache.get_client() is another._cache.get_client()
    assert cache._cache.get_client().connection_pool is another._cache.get_client().connection_pool
    cache.set("shared-client-check", 41)
    assert another.get("shared-client-check") == 41
