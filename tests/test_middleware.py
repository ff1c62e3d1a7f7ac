"""The HTTP request chain runs in one thread hop under ASGI; the cache shares pool and client."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import SyncToAsync, async_to_sync, iscoroutinefunction
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient

from exchange.cache import SharedConnectionPool
from exchange.handler import SyncChainASGIHandler


def _serve(handler: ASGIHandler, path: str) -> tuple[int, bytes, int]:
    """One GET through ``handler`` as an ASGI server would send it: (status, body, thread hops)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays connected; Django cancels this
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    hops = 0
    real_call = SyncToAsync.__call__

    async def counting(self: SyncToAsync, *args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return await real_call(self, *args, **kwargs)

    with mock.patch.object(SyncToAsync, "__call__", counting):
        async_to_sync(handler)(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, hops


@pytest.mark.django_db(transaction=True)
def test_the_request_chain_takes_one_thread_hop() -> None:
    """Django's own handler hops threads around every sync middleware (two hops each); ours
    enters the whole chain, middleware and view, once."""
    handler = SyncChainASGIHandler()
    assert iscoroutinefunction(handler._middleware_chain)
    status, body, hops = _serve(handler, "/healthz")
    assert (status, body[:15]) == (200, b'{"status": "ok"')
    _, _, django_hops = _serve(ASGIHandler(), "/healthz")
    # one hop into the chain; Django's own handler also hops for the request_finished signal
    assert hops <= 3
    # Django's hops around each MiddlewareMixin middleware (two each) down to the first
    # sync-only one, which then runs the rest in its thread: how many depends on the order
    assert django_hops > hops


@pytest.mark.django_db(transaction=True)
def test_errors_and_static_files_go_through_the_sync_chain() -> None:
    handler = SyncChainASGIHandler()
    status, body, _ = _serve(handler, "/static/img/favicon.svg")
    assert status == 200
    assert b"<svg" in body
    assert _serve(handler, "/static/img/nope.svg")[0] == 404
    assert _serve(handler, "/api/v1/markets/NOPE")[0] == 404


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
