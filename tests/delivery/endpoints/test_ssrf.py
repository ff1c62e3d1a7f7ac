"""Providers' upstreams reach only public https addresses (SSRF guard,
``exchange.delivery.endpoints.egress``): on save, and again at every connect of the save
check, the probes and the gateway's pooled client (DNS rebinding).

These tests run with ``DELIVERY_UPSTREAM_ALLOW_PRIVATE`` off (tests/settings.py turns it on
for the suites that use loopback upstreams); only the allow-list tests turn it back on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Iterator

import aiohttp
import httpcore
import pytest

from exchange.delivery.endpoints import egress
from exchange.delivery.endpoints.checks import upstream_private_check
from exchange.delivery.endpoints.models import Endpoint
from exchange.delivery.endpoints.services import endpoints_probe
from exchange.delivery.endpoints.upstream import CHECK_FAILED
from tests.delivery.endpoints.conftest import OUT
from tests.delivery.endpoints.helpers import live_endpoint
from tests.delivery.endpoints.upstream_server import UPSTREAM_KEY

URL = "/api/v1/provider/endpoints"
PUBLIC = "93.184.216.34"  # any globally routable address: never connected to in these tests


@pytest.fixture(autouse=True)
def _private_not_allowed(settings) -> None:
    settings.DELIVERY_UPSTREAM_ALLOW_PRIVATE = False
    assert not egress.private_allowed()


@pytest.fixture
def connects(monkeypatch) -> list[tuple[str, int]]:
    """Every TCP connect httpcore's real backends open, as (host, port)."""
    seen: list[tuple[str, int]] = []
    sync_connect, async_connect = (
        httpcore.SyncBackend.connect_tcp,
        httpcore.AnyIOBackend.connect_tcp,
    )

    def sync_recorded(self, host, port, *args, **kwargs):
        seen.append((host, port))
        return sync_connect(self, host, port, *args, **kwargs)

    async def async_recorded(self, host, port, *args, **kwargs):
        seen.append((host, port))
        return await async_connect(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", sync_recorded)
    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", async_recorded)
    return seen


@pytest.fixture
def resolver(monkeypatch) -> Callable[..., list[str]]:
    """Replace the guard's DNS lookup: ``resolver.answers[host]`` is a list of answers, one
    per lookup (the last repeats); ``resolver.calls`` records the lookups."""

    class Resolver:
        def __init__(self) -> None:
            self.answers: dict[str, list[list[str]]] = {}
            self.calls: list[str] = []

        def __call__(self, host: str, port: int) -> list[str]:
            self.calls.append(host)
            try:
                return [str(ipaddress.ip_address(host))]  # an address resolves to itself
            except ValueError:
                pass
            answers = self.answers.get(host)
            if answers is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return answers.pop(0) if len(answers) > 1 else answers[0]

    fake = Resolver()
    monkeypatch.setattr(egress, "_getaddrinfo", fake)
    return fake


def body(base_url: str, **overrides) -> dict:
    return {
        "market": OUT,
        "base_url": base_url,
        "api_key": UPSTREAM_KEY,
        "model_id": "qwen3.6-plus",
        "concurrency_limit": 4,
        **overrides,
    }


# --- the address rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # CGNAT
        "0.0.0.0",  # noqa: S104 (an address to refuse, not one to bind)
        "255.255.255.255",
        "224.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%1",
        "fc00::1",
        "fd12:3456::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::1",  # local-use NAT64
        "2001:db8::1",  # documentation
        "not-an-address",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not egress.address_public(address)


@pytest.mark.parametrize(
    "address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses(address: str) -> None:
    assert egress.address_public(address)


# --- on save -----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "base_url",
    [
        "https://127.0.0.1:8170/v1",
        "https://10.0.0.5/v1",
        "https://192.168.0.10:8443/v1",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]:8170/v1",
        "https://[::ffff:127.0.0.1]:8170/v1",
        "https://[fe80::1]/v1",
        "https://0.0.0.0:8170/v1",
        "https://localhost:8170/v1",  # the real resolver: loopback
    ],
)
def test_private_addresses_are_refused_at_save_without_a_connection(
    market, client_for, connects, base_url, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="exchange.delivery.endpoints")
    response = client_for("provider").post(URL, body(base_url), format="json")

    assert response.status_code == 422, response.json()
    assert response.json()["error"] == {
        "code": "endpoint_check_failed",
        "message": CHECK_FAILED,
        "details": {"base_url": "check_failed"},
    }
    assert connects == []
    assert Endpoint.objects.count() == 0
    assert "not a public address" in caplog.text  # the reason is in the server log


@pytest.mark.parametrize(
    "url", ["https://2130706433/v1", "https://0x7f.1/v1", "https://017700000001/v1"]
)
def test_numeric_host_spellings_of_loopback_are_refused(url: str) -> None:
    # The API's URL field refuses these already; the guard resolves whatever it is given.
    with pytest.raises(egress.UpstreamAddressRefused):
        egress.url_allowed(url)


@pytest.mark.django_db
def test_plain_http_is_refused(market, client_for, connects, resolver) -> None:
    resolver.answers["api.example.com"] = [[PUBLIC]]
    response = client_for("provider").post(URL, body("http://api.example.com/v1"), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"base_url": "https_required"}
    assert connects == []
    assert resolver.calls == []
    assert Endpoint.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "answer",
    [["127.0.0.1"], ["10.20.30.40"], ["::1"], [PUBLIC, "169.254.169.254"], ["::ffff:10.0.0.1"]],
)
def test_a_host_name_resolving_to_a_private_address_is_refused(
    market, client_for, connects, resolver, answer
) -> None:
    """Every address of the name must be public: one private record among public ones is
    refused too (which one a connect would use is not ours to choose)."""
    resolver.answers["upstream.example.com"] = [answer]
    response = client_for("provider").post(
        URL, body("https://upstream.example.com/v1"), format="json"
    )

    assert response.status_code == 422
    assert response.json()["error"]["message"] == CHECK_FAILED
    assert resolver.calls == ["upstream.example.com"]
    assert connects == []


@pytest.mark.django_db
def test_a_name_that_does_not_resolve_gets_the_same_error(market, client_for, resolver) -> None:
    response = client_for("provider").post(URL, body("https://nowhere.invalid/v1"), format="json")
    assert response.status_code == 422
    assert response.json()["error"]["message"] == CHECK_FAILED


# --- at connect (DNS rebinding) ----------------------------------------------------------------


@pytest.mark.django_db
def test_dns_rebinding_is_refused_at_connect_in_the_save_check(
    market, client_for, connects, resolver, caplog
) -> None:
    """The name is public when the URL is checked and loopback when the connection is opened:
    the connect-time check refuses it; nothing is connected to."""
    caplog.set_level(logging.INFO, logger="exchange.delivery.endpoints")
    resolver.answers["rebind.example.com"] = [[PUBLIC], ["127.0.0.1"]]

    response = client_for("provider").post(
        URL, body("https://rebind.example.com/v1"), format="json"
    )

    assert response.status_code == 422
    assert response.json()["error"]["message"] == CHECK_FAILED
    # Two lookups: the check on save (public), then the connect (loopback: refused).
    assert resolver.calls == ["rebind.example.com", "rebind.example.com"]
    assert connects == []
    assert "non-public address(es) ['127.0.0.1']" in caplog.text
    assert Endpoint.objects.count() == 0


@pytest.mark.django_db
def test_the_probes_refuse_a_name_rebound_to_a_private_address(
    market, make_user, connects, resolver
) -> None:
    """An endpoint saved while its name was public, re-pointed at the metadata service: the
    probe does not connect and counts as a failure."""
    endpoint = live_endpoint(make_user(role="provider"), market, "https://rebind.example.com/v1")
    resolver.answers["rebind.example.com"] = [["169.254.169.254"]]

    counts = endpoints_probe()

    assert counts["failed"] == 1
    endpoint.refresh_from_db()
    assert endpoint.last_error == "connection refused or host unreachable"
    assert resolver.calls == ["rebind.example.com"]
    assert connects == []


def test_the_gateway_client_refuses_private_and_plain_http_upstreams(resolver) -> None:
    """The gateway's pooled client (GatewayApp.client, aiohttp) is built with the guard: a name
    resolving to a private address, a private IP literal (which aiohttp does not resolve) and
    plain http to a public address are refused before any socket connects — a listener on
    loopback, the private address tried, sees nothing."""
    from exchange.delivery.gateway.proxy import GatewayApp

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    resolver.answers["rebind.example.com"] = [["127.0.0.1"]]

    async def run() -> list[type[Exception]]:
        client = GatewayApp(app=None).client()
        failures = []
        for url in (
            f"https://rebind.example.com:{port}/v1/chat/completions",
            f"https://127.0.0.1:{port}/v1/chat/completions",
            f"http://{PUBLIC}/v1/chat/completions",  # public, but not https
        ):
            with pytest.raises(aiohttp.ClientConnectionError) as error:
                await client.post(url, json={})
            failures.append(error.type)
        await client.close()
        return failures

    try:
        failures = asyncio.run(run())
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody connected
    finally:
        listener.close()
    assert all(issubclass(kind, aiohttp.ClientConnectionError) for kind in failures)
    assert resolver.calls == ["rebind.example.com"]  # the literal and plain http: no lookup


def test_the_gateway_client_connects_to_the_checked_address(monkeypatch, resolver) -> None:
    """Resolve, check, pin, with aiohttp: the connection goes to the address the guard
    answered for the name (loopback stands in for a public address here)."""
    from exchange.delivery.gateway.proxy import GatewayApp

    monkeypatch.setattr(egress, "address_public", lambda address: address == "127.0.0.1")
    seen: list[str] = []

    async def run() -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("peername")[0])
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        resolver.answers["pinned.example.com"] = [["127.0.0.1"]]
        client = GatewayApp(app=None).client()
        try:
            with pytest.raises(aiohttp.ClientConnectionError):  # plain http: no connect
                await client.get(f"http://pinned.example.com:{port}/")
            assert seen == []
            # the server speaks no TLS: the handshake fails after the connect, which is what
            # this test looks at
            async with client.get(f"https://pinned.example.com:{port}/", ssl=False) as answer:
                return answer.status
        except aiohttp.ClientError:
            return -1
        finally:
            await client.close()
            server.close()

    asyncio.run(run())
    assert seen == ["127.0.0.1"]
    assert resolver.calls == ["pinned.example.com"]


def test_the_connection_goes_to_the_checked_address_not_the_name(
    monkeypatch, connects, resolver
) -> None:
    """Resolve, check, pin: the socket is opened to the address that was checked (not by name,
    which a second lookup could answer differently), trying the next address when one refuses.
    Loopback stands in for a public address here (the rule is patched for this test only)."""
    monkeypatch.setattr(egress, "address_public", lambda address: address.startswith("127."))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted = threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True)
    accepted.start()
    # 127.0.0.2: nothing listens there (refused), then 127.0.0.1 answers.
    resolver.answers["pinned.example.com"] = [["127.0.0.2", "127.0.0.1"], ["10.0.0.1"]]

    async def run() -> tuple[str, int]:
        stream = await egress.GuardedAsyncBackend().connect_tcp(
            "pinned.example.com", port, timeout=5
        )
        peer = stream.get_extra_info("server_addr")
        await stream.aclose()
        return peer[0], peer[1]

    try:
        assert asyncio.run(run()) == ("127.0.0.1", port)
    finally:
        listener.close()
    assert connects == [("127.0.0.2", port), ("127.0.0.1", port)]
    assert resolver.calls == ["pinned.example.com"]  # looked up once, never by the socket


def test_the_blocking_backend_pins_too(monkeypatch, connects, resolver) -> None:
    monkeypatch.setattr(egress, "address_public", lambda address: address == "127.0.0.1")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    resolver.answers["pinned.example.com"] = [["127.0.0.1"]]
    try:
        stream = egress.GuardedSyncBackend().connect_tcp("pinned.example.com", port, timeout=5)
        assert stream.get_extra_info("server_addr") == ("127.0.0.1", port)
        stream.close()
    finally:
        listener.close()
    assert connects == [("127.0.0.1", port)]
    resolver.answers["pinned.example.com"] = [["127.0.0.1", "10.0.0.1"]]
    with pytest.raises(egress.UpstreamAddressRefused):
        egress.GuardedSyncBackend().connect_tcp("pinned.example.com", port, timeout=5)
    assert connects == [("127.0.0.1", port)]


def test_upstream_clients_ignore_proxy_environment_variables() -> None:
    # A proxy from the environment would open the connections itself, past the guard.
    with pytest.raises(ValueError, match="trust_env"):
        egress.upstream_client(trust_env=True)
    assert egress.upstream_client().trust_env is False


# --- one generic error -------------------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a check times out there)."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.django_db
def test_every_failure_of_the_check_reads_the_same(
    settings, market, upstream, client_for, silent_port, caplog
) -> None:
    """Refused connection, timeout, HTTP error status, refused key, not a model list, model not
    listed, private address: one message, one detail; the log tells them apart."""
    settings.DELIVERY_UPSTREAM_ALLOW_PRIVATE = True  # the test upstreams are on loopback
    settings.DELIVERY_VALIDATE_TIMEOUT_SECONDS = 0.5
    caplog.set_level(logging.INFO, logger="exchange.delivery.endpoints")
    provider = client_for("provider")
    with socket.create_server(("127.0.0.1", 0)) as closed:
        closed_port = closed.getsockname()[1]
    cases = {
        "refused": body(f"http://127.0.0.1:{closed_port}/v1"),
        "timeout": body(f"http://127.0.0.1:{silent_port}/v1"),
        "status": body(upstream.base_url + "/nothing-here"),
        "key": body(upstream.base_url, api_key="sk-wrong"),
        "listed": body(upstream.base_url, model_id="not-served"),
    }
    errors = {name: provider.post(URL, data, format="json") for name, data in cases.items()}
    settings.DELIVERY_UPSTREAM_ALLOW_PRIVATE = False
    errors["private"] = provider.post(URL, body("https://127.0.0.1:8172/v1"), format="json")

    for name, response in errors.items():
        assert response.status_code == 422, name
        assert response.json()["error"] == {
            "code": "endpoint_check_failed",
            "message": CHECK_FAILED,
            "details": {"base_url": "check_failed"},
        }, name
        text = response.content.decode()
        assert "qwen3.6-plus" not in text  # nothing the upstream listed is echoed
        assert "other-model" not in text
    assert Endpoint.objects.count() == 0
    for reason in ("connection refused", "timed out", "HTTP 404", "HTTP 401", "not among"):
        assert reason in caplog.text, reason


# --- the allow-list ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_allow_list_lets_a_loopback_http_upstream_register(
    settings, market, upstream, client_for
) -> None:
    provider = client_for("provider")
    refused = provider.post(URL, body(upstream.base_url), format="json")
    assert refused.status_code == 400  # plain http
    assert upstream.behaviour.seen == []

    settings.DELIVERY_UPSTREAM_ALLOW_PRIVATE = True
    accepted = provider.post(URL, body(upstream.base_url), format="json")
    assert accepted.status_code == 201, accepted.json()
    assert upstream.behaviour.seen == [("GET", "/v1/models", f"Bearer {UPSTREAM_KEY}")]

    # Switched off again: the stored loopback endpoint is not probed any more.
    settings.DELIVERY_UPSTREAM_ALLOW_PRIVATE = False
    assert endpoints_probe()["failed"] == 1
    assert len(upstream.behaviour.seen) == 1


# --- check --deploy ----------------------------------------------------------------------------


def test_the_deploy_check_refuses_the_allow_list_without_debug(settings) -> None:
    settings.DEBUG = False
    settings.DELIVERY_UPSTREAM_ALLOW_PRIVATE = True
    assert [e.id for e in upstream_private_check(None)] == ["delivery_endpoints.E003"]
    settings.DELIVERY_UPSTREAM_ALLOW_PRIVATE = False
    assert upstream_private_check(None) == []
    settings.DEBUG = True
    settings.DELIVERY_UPSTREAM_ALLOW_PRIVATE = True
    assert upstream_private_check(None) == []


@pytest.mark.parametrize(
    "extra", [{"DELIVERY_UPSTREAM_ALLOW_PRIVATE": "true"}, {"DEMO": "true"}], ids=["set", "demo"]
)
def test_check_deploy_fails_with_private_upstreams_allowed(extra) -> None:
    """Production values (tests.test_settings) plus the allow-list, set or defaulted by DEMO."""
    from tests.test_settings import PRODUCTION_ENV, run_manage

    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING", env={**PRODUCTION_ENV, **extra}
    )
    assert result.returncode != 0
    assert "delivery_endpoints.E003" in result.stdout + result.stderr
