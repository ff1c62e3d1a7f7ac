"""Outbound HTTP to providers' upstreams reaches only public HTTPS addresses (SSRF guard).

A provider chooses ``base_url``; the exchange then calls it on save, on every probe interval
and for every routed request, with its own network position. Without a guard that is a way to
reach loopback, the private network or the cloud metadata service (169.254.169.254) from
inside. So, unless ``DELIVERY_UPSTREAM_ALLOW_PRIVATE`` is on (development, the demo, tests):

- the scheme must be https;
- the host is resolved and EVERY address it resolves to must be globally routable (one private
  A record among public ones is refused: which one gets used is not ours to choose);
- the check runs again when a connection is opened, inside the HTTP client's network backend,
  and the socket connects to exactly the address that was checked (resolve, check, pin). A
  name that resolved to a public address at save time and to a private one later (DNS
  rebinding) is refused at connect time. TLS still verifies and sends SNI for the host name:
  httpcore passes the origin's host name to ``start_tls``, not the address we connected to.

Every client that talks to an upstream is built here: ``upstream_client`` (httpx, blocking:
the save check), ``upstream_async_client`` (httpx: the probes) and ``upstream_session``
(aiohttp: the gateway's pooled client, whose C HTTP parser costs a fraction of httpx's per
streamed chunk). ``trust_env`` is forced off: an environment proxy would make the connections
itself and bypass the check. The aiohttp session guards the same way with its public hooks: a
resolver that answers only when every address is public (the connector connects to the
addresses it answered, and sends SNI and checks the certificate for the host name), a socket
factory that refuses any address not public — an IP literal in the URL does not go through
the resolver — and a middleware that refuses plain http.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
import typing
from typing import Any

import aiohttp
import httpcore
import httpx
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings

logger = logging.getLogger(__name__)

# Ranges Python 3.11's ``is_global`` lets through although they can lead to a non-public host.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64: judged by its IPv4 part
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215)

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's


class UpstreamAddressRefused(httpcore.ConnectError):
    """The upstream's host is not a public address (or does not resolve). A subclass of
    httpcore's ConnectError, so httpx raises it as ``httpx.ConnectError`` and every caller
    treats it as an upstream that cannot be reached."""


def private_allowed() -> bool:
    return bool(settings.DELIVERY_UPSTREAM_ALLOW_PRIVATE)


def address_public(address: str) -> bool:
    """Whether an IP address (text, as getaddrinfo or getpeername give it) is globally
    routable: not loopback, private (RFC 1918, ULA), link-local (metadata services), shared
    (CGNAT), unspecified (0.0.0.0 reaches the local host on Linux), multicast or reserved —
    also when hidden in an IPv6 form (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:  # a zone index only makes sense for link-local addresses
            return False
        if ip.ipv4_mapped is not None:
            return address_public(str(ip.ipv4_mapped))
        if ip in _IPV4_COMPATIBLE or ip in _NAT64_LOCAL:
            return False
        if ip in _NAT64:  # an IPv6-only network's DNS64 answer for an IPv4 host
            return address_public(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        embedded: list[ipaddress.IPv4Address] = []
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if not all(address_public(str(v4)) for v4 in embedded):
            return False
    return (
        ip.is_global
        and not ip.is_multicast
        and not ip.is_reserved
        and not ip.is_unspecified
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_private
    )


def _getaddrinfo(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order (tests replace this)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _all_public(host: str, addresses: list[str]) -> list[str]:
    refused = [a for a in addresses if not address_public(a)]
    if refused or not addresses:
        logger.info("upstream host %s refused: non-public address(es) %s", host, refused)
        raise UpstreamAddressRefused(f"upstream host {host!r} is not a public address")
    return addresses


def public_addresses(host: str, port: int) -> list[str]:
    """The addresses of ``host``, all public, or ``UpstreamAddressRefused``."""
    try:
        addresses = _getaddrinfo(host, port)
    except (OSError, UnicodeError) as error:
        logger.info("upstream host %s does not resolve: %s", host, error)
        raise UpstreamAddressRefused(f"upstream host {host!r} does not resolve") from None
    return _all_public(host, addresses)


async def apublic_addresses(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        addresses = await loop.run_in_executor(None, _getaddrinfo, host, port)
    except (OSError, UnicodeError) as error:
        logger.info("upstream host %s does not resolve: %s", host, error)
        raise UpstreamAddressRefused(f"upstream host {host!r} does not resolve") from None
    return _all_public(host, addresses)


def url_allowed(url: str) -> None:
    """Check an upstream URL before any request: https, and a host whose every address is
    public (both skipped when private upstreams are allowed). ``UpstreamAddressRefused``."""
    if private_allowed():
        return
    parsed = httpx.URL(url)
    if parsed.scheme != "https":
        raise UpstreamAddressRefused("upstream URL must use https")
    public_addresses(parsed.host, parsed.port or 443)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.001)


def _peer_check(host: str, address: str, peer: Any) -> None:
    # Belt and braces: the socket is connected to the address we checked, and it is public.
    if not isinstance(peer, tuple) or not address_public(str(peer[0])):
        logger.warning("upstream %s (%s): connected peer %r is not public", host, address, peer)
        raise UpstreamAddressRefused(f"upstream host {host!r} is not a public address")


class GuardedAsyncBackend(httpcore.AsyncNetworkBackend):
    """httpcore's asyncio network backend, connecting only to checked public addresses."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if private_allowed():
            return await self._inner.connect_tcp(
                host, port, timeout, local_address=local_address, socket_options=socket_options
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        error: Exception | None = None
        for address in await apublic_addresses(host, port):
            try:
                stream = await self._inner.connect_tcp(
                    address,
                    port,
                    _remaining(deadline),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failure:
                error = failure  # the next address, as a resolver-order fallback
                continue
            try:
                _peer_check(host, address, stream.get_extra_info("server_addr"))
            except UpstreamAddressRefused:
                await stream.aclose()
                raise
            return stream
        assert error is not None  # apublic_addresses never returns an empty list
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UpstreamAddressRefused("upstreams are reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedSyncBackend(httpcore.NetworkBackend):
    """httpcore's blocking network backend, connecting only to checked public addresses."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if private_allowed():
            return self._inner.connect_tcp(
                host, port, timeout, local_address=local_address, socket_options=socket_options
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        error: Exception | None = None
        for address in public_addresses(host, port):
            try:
                stream = self._inner.connect_tcp(
                    address,
                    port,
                    _remaining(deadline),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failure:
                error = failure
                continue
            try:
                _peer_check(host, address, stream.get_extra_info("server_addr"))
            except UpstreamAddressRefused:
                stream.close()
                raise
            return stream
        assert error is not None
        raise error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise UpstreamAddressRefused("upstreams are reached over TCP only")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _scheme_check(request: httpx.Request) -> None:
    if request.url.scheme != "https" and not private_allowed():
        raise httpx.ConnectError("upstream URL must use https", request=request)


class GuardedAsyncTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connection pool uses ``GuardedAsyncBackend``.

    httpx's transport takes no network backend argument, so its pool is rebuilt with the same
    settings through httpcore's public constructor (``network_backend``)."""

    def __init__(self, *, limits: httpx.Limits = DEFAULT_LIMITS, retries: int = 0) -> None:
        super().__init__(limits=limits, retries=retries, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            retries=retries,
            network_backend=GuardedAsyncBackend(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _scheme_check(request)
        return await super().handle_async_request(request)


class GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connection pool uses ``GuardedSyncBackend``."""

    def __init__(self, *, limits: httpx.Limits = DEFAULT_LIMITS, retries: int = 0) -> None:
        super().__init__(limits=limits, retries=retries, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            retries=retries,
            network_backend=GuardedSyncBackend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _scheme_check(request)
        return super().handle_request(request)


def _client_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    if kwargs.pop("trust_env", False):
        raise ValueError("upstream clients ignore proxy environment variables (trust_env)")
    kwargs.setdefault("follow_redirects", False)
    return {**kwargs, "trust_env": False}


def upstream_async_client(
    *, limits: httpx.Limits = DEFAULT_LIMITS, **kwargs: Any
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for providers' upstreams (the gateway's pool, the probes)."""
    return httpx.AsyncClient(
        transport=GuardedAsyncTransport(limits=limits), **_client_kwargs(kwargs)
    )


def upstream_client(*, limits: httpx.Limits = DEFAULT_LIMITS, **kwargs: Any) -> httpx.Client:
    """A blocking ``httpx.Client`` for providers' upstreams (the check when one is saved)."""
    return httpx.Client(transport=GuardedTransport(limits=limits), **_client_kwargs(kwargs))


class AddressRefused(OSError):
    """The aiohttp hooks' refusal: aiohttp raises an ``OSError`` from its resolver or socket
    factory as a connection error (``ClientConnectorError``)."""


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver for upstreams: every address of the host, all public, or
    ``AddressRefused``."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if private_allowed():
            loop = asyncio.get_running_loop()
            try:
                addresses = await loop.run_in_executor(None, _getaddrinfo, host, port)
            except (OSError, UnicodeError) as error:
                raise AddressRefused(f"upstream host {host!r} does not resolve") from error
        else:
            try:
                addresses = await apublic_addresses(host, port)
            except UpstreamAddressRefused as error:
                raise AddressRefused(str(error)) from None
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def _guarded_socket(addr_info: AddrInfoType) -> socket.socket:
    """The connector's socket factory: the last word before a connect, for names (already
    checked by the resolver) and IP literals alike."""
    family, kind, proto, _, address = addr_info
    if not private_allowed() and not address_public(str(address[0])):
        logger.info("upstream address %s refused: not public", address[0])
        raise AddressRefused(f"upstream address {address[0]!r} is not public")
    sock = socket.socket(family=family, type=kind, proto=proto)
    sock.setblocking(False)
    return sock


async def _https_only(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    if request.url.scheme != "https" and not private_allowed():
        raise aiohttp.ClientConnectionError("upstream URL must use https")
    return await handler(request)


def upstream_session(
    *, limit: int, connect_timeout: float, read_timeout: float
) -> aiohttp.ClientSession:
    """The gateway's pooled upstream client (call inside the event loop it will serve): at
    most ``limit`` connections, kept alive; ``read_timeout`` between two reads of an answer."""
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=0,
        resolver=GuardedResolver(),
        socket_factory=_guarded_socket,
        # the resolver's answers (all checked) are kept as briefly as a probe interval allows
        ttl_dns_cache=10,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        ),
        middlewares=(_https_only,),
        trust_env=False,
        auto_decompress=True,
        raise_for_status=False,
    )
