"""Take-or-pay expiry cancels only the asks it must (newest first), and one holder's failure
does not stop the others' (review finding 13); a provider whose endpoint was down is not
paid take-or-pay: in full when down at the end, for its share of the lot's life otherwise
(review finding 5)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from exchange.delivery.escrow import services
from exchange.delivery.escrow.models import Lot
from orders.models import Order
from tests.delivery.escrow.conftest import CNY, MTOK, OUT, assert_audit_ok, balance

pytestmark = pytest.mark.django_db(transaction=True)


def test_expiry_cancels_only_the_newest_asks_that_cover_the_shortfall(pair, provider, make_trader):
    # given: a holder of two 1 MTok lots, the first one expired, and two asks of 0.6 MTok
    holder = make_trader(cny=100)
    for _ in range(2):
        assert holder.order(market=OUT, side="buy", price="8.00", quantity="1")["status"] == (
            "filled"
        )
    expired, live = Lot.objects.filter(holder=holder.user).order_by("id")
    Lot.objects.filter(id=expired.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    older = holder.order(market=OUT, side="sell", price="9.00", quantity="0.6")
    newer = holder.order(market=OUT, side="sell", price="9.50", quantity="0.6")
    assert balance(holder.user, OUT) == (int(0.8 * MTOK), int(1.2 * MTOK))

    # when: the expiry runs (0.2 MTok short of the expired lot's 1 MTok), then runs again
    services.lots_expire_due()
    services.lots_expire_due()

    # then: only the newest ask was cancelled; the older one still sells the live lot
    assert Order.objects.get(id=newer["id"]).status == "cancelled"
    assert Order.objects.get(id=older["id"]).status == "open"
    expired.refresh_from_db()
    live.refresh_from_db()
    assert (expired.unconsumed_tokens, expired.closed_at is not None) == (MTOK, True)
    assert live.unconsumed_tokens == 0
    assert balance(holder.user, OUT) == (int(0.4 * MTOK), int(0.6 * MTOK))
    assert_audit_ok()


def test_one_holders_failure_does_not_stop_the_others_expiry(
    pair, provider, make_trader, monkeypatch
):
    # given: two holders whose lots have expired
    first, second = make_trader(cny=100), make_trader(cny=100)
    for trader in (first, second):
        assert trader.order(market=OUT, side="buy", price="8.00", quantity="1")["status"] == (
            "filled"
        )
    Lot.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    # and: retiring the first holder's lots fails (a bug, a lost connection)
    original = services._lots_expire_one

    def failing(holder_id, market, moment):
        if holder_id == first.user.id:
            raise RuntimeError("boom")
        return original(holder_id, market, moment)

    monkeypatch.setattr(services, "_lots_expire_one", failing)

    # when: the expiry runs
    handled = services.lots_expire_due()

    # then: the second holder's lot was retired and its provider paid; the first waits
    assert handled == 1
    assert Lot.objects.get(holder=second.user).unconsumed_tokens == MTOK
    assert Lot.objects.get(holder=first.user).unconsumed_tokens == 0
    monkeypatch.setattr(services, "_lots_expire_one", original)
    assert services.lots_expire_due() == 1
    assert Lot.objects.get(holder=first.user).unconsumed_tokens == MTOK
    assert_audit_ok()


def test_take_or_pay_does_not_pay_a_provider_whose_endpoint_was_down(pair, provider, make_trader):
    from exchange.delivery.endpoints.models import Endpoint, HealthStatus
    from exchange.delivery.escrow.services import lots_expire_due
    from tests.delivery.escrow.conftest import CNY, balance

    # given: a buyer holding 1 MTok of output (8 CNY in escrow)
    buyer = make_trader(cny=100)
    assert buyer.order(market=OUT, side="buy", price="8.00", quantity="1")["status"] == "filled"
    buyer_cny = balance(buyer.user, "CNY")[0]
    provider_cny = balance(provider.user, "CNY")[0]
    # and: the provider's endpoints went down right after the sale and never came back, so
    # the gateway could serve none of it (503 no_provider_available on every request)
    Endpoint.objects.filter(provider=provider.user).update(
        status=HealthStatus.DOWN, failing_since=timezone.now(), down_since=timezone.now()
    )

    # when: the lot expires unconsumed
    lots_expire_due(now=timezone.now() + timedelta(days=2))

    # then: the buyer, who could not consume, is not the one who pays for the capacity
    paid = balance(provider.user, "CNY")[0] - provider_cny
    refunded = balance(buyer.user, "CNY")[0] - buyer_cny
    assert (paid, refunded) == (0, 8 * CNY), (
        f"provider paid {paid} units for capacity it never served; buyer refunded {refunded}"
    )
    lot = Lot.objects.get(holder=buyer.user)
    assert (lot.credited_tokens, lot.credited_units, lot.unconsumed_tokens) == (MTOK, 8 * CNY, 0)
    assert lot.closed_at is not None
    assert_audit_ok()


def test_take_or_pay_pays_a_provider_whose_endpoint_failed_only_at_the_very_end(
    pair, provider, make_trader
):
    from exchange.delivery.endpoints.models import Endpoint, HealthStatus

    # given: a buyer's 1 MTok lot; the provider's endpoint started failing a moment before the
    # lot ended (less than the dead-man window): the capacity was there for the whole life
    buyer = make_trader(cny=100)
    assert buyer.order(market=OUT, side="buy", price="8.00", quantity="1")["status"] == "filled"
    lot = Lot.objects.get(holder=buyer.user)
    Endpoint.objects.filter(provider=provider.user).update(
        status=HealthStatus.FAILING, failing_since=lot.expires_at - timedelta(seconds=10)
    )
    provider_cny = balance(provider.user, "CNY")[0]

    # when: the lot expires unconsumed
    services.lots_expire_due(now=lot.expires_at + timedelta(seconds=1))

    # then: take-or-pay: the provider is paid 8 CNY less its 0.1% maker fee
    lot.refresh_from_db()
    assert (lot.unconsumed_tokens, lot.credited_tokens) == (MTOK, 0)
    assert balance(provider.user, "CNY")[0] - provider_cny == 8 * CNY - 8 * CNY // 1000
    assert_audit_ok()


def test_take_or_pay_credits_the_share_of_the_lots_life_its_provider_was_down(
    pair, provider, make_trader, make_user
):
    from exchange.delivery.endpoints import services as endpoints
    from exchange.delivery.endpoints.models import Endpoint, EndpointOutage, HealthStatus
    from exchange.delivery.endpoints.upstream import ProbeResult

    # given: a buyer's 1 MTok lot (8 CNY in escrow), 4 days from its creation to its expiry
    buyer = make_trader(cny=100)
    assert buyer.order(market=OUT, side="buy", price="8.00", quantity="1")["status"] == "filled"
    lot = Lot.objects.get(holder=buyer.user)
    Lot.objects.filter(id=lot.id).update(expires_at=lot.created_at + timedelta(days=4))
    lot.refresh_from_db()
    endpoint = Endpoint.objects.get(provider=provider.user, market__symbol=OUT)
    # and: the provider's endpoint was DOWN for one of those days, then answered a probe again
    down_from = lot.created_at + timedelta(days=1)
    Endpoint.objects.filter(id=endpoint.id).update(
        status=HealthStatus.DOWN, failing_since=down_from, down_since=down_from
    )
    answered = ProbeResult(ok=True, first_token_ms=100, output_tokens_per_second=None, error="")
    endpoints.probe_result_record(
        endpoint_id=endpoint.id, result=answered, now=down_from + timedelta(days=1)
    )
    outage = EndpointOutage.objects.get(provider=provider.user)
    assert (outage.started_at, outage.ended_at) == (down_from, down_from + timedelta(days=1))
    # and: another provider's outage in the same market changes nothing for this lot
    other = make_user(role="provider")
    EndpointOutage.objects.create(
        provider=other, market=endpoint.market, started_at=lot.created_at, ended_at=lot.expires_at
    )
    buyer_cny, provider_cny = balance(buyer.user, "CNY")[0], balance(provider.user, "CNY")[0]

    # when: the lot expires unconsumed
    services.lots_expire_due(now=lot.expires_at + timedelta(seconds=1))

    # then: a quarter of it is credited back to the buyer, three quarters paid to the provider
    lot.refresh_from_db()
    assert (lot.credited_tokens, lot.unconsumed_tokens) == (MTOK // 4, MTOK - MTOK // 4)
    assert lot.credited_units == 2 * CNY
    assert balance(buyer.user, "CNY")[0] - buyer_cny == 2 * CNY
    # (its 0.1% maker fee on what it earned)
    assert balance(provider.user, "CNY")[0] - provider_cny == 6 * CNY - 6 * CNY // 1000
    assert_audit_ok()


def test_an_endpoint_removed_while_down_keeps_its_outage_open(pair, provider):
    from exchange.delivery.endpoints import services as endpoints
    from exchange.delivery.endpoints.models import Endpoint, EndpointOutage, HealthStatus

    endpoint = Endpoint.objects.get(provider=provider.user, market__symbol=OUT)
    since = timezone.now() - timedelta(hours=3)
    Endpoint.objects.filter(id=endpoint.id).update(
        status=HealthStatus.DOWN, failing_since=since, down_since=since
    )
    endpoints.endpoint_delete(user=provider.user, endpoint_id=endpoint.id)
    outage = EndpointOutage.objects.get(provider=provider.user)
    assert (outage.started_at, outage.ended_at) == (since, None)


def test_removing_the_endpoint_does_not_escape_take_or_pay(pair, provider, make_trader):
    from exchange.delivery.endpoints import services as endpoints
    from exchange.delivery.endpoints.models import Endpoint

    # given: a buyer's 1 MTok lot (8 CNY in escrow); the provider then removes its endpoint,
    # healthy until then, so nothing can be served from the lot any more
    buyer = make_trader(cny=100)
    assert buyer.order(market=OUT, side="buy", price="8.00", quantity="1")["status"] == "filled"
    lot = Lot.objects.get(holder=buyer.user)
    endpoint = Endpoint.objects.get(provider=provider.user, market__symbol=OUT)
    endpoints.endpoint_delete(user=provider.user, endpoint_id=endpoint.id)
    buyer_cny, provider_cny = balance(buyer.user, "CNY")[0], balance(provider.user, "CNY")[0]

    # when: the lot expires unconsumed
    services.lots_expire_due(now=lot.expires_at + timedelta(seconds=1))

    # then: the provider, which could not deliver, is paid nothing of it
    lot.refresh_from_db()
    assert (lot.credited_tokens, lot.unconsumed_tokens) == (MTOK, 0)
    assert balance(buyer.user, "CNY")[0] - buyer_cny == 8 * CNY
    assert balance(provider.user, "CNY")[0] == provider_cny
    assert_audit_ok()


def test_registering_again_ends_the_removal_outage(pair, provider, monkeypatch):
    from exchange.delivery.endpoints import services as endpoints
    from exchange.delivery.endpoints.models import Endpoint, EndpointOutage
    from exchange.delivery.endpoints.selectors import outages_get

    endpoint = Endpoint.objects.get(provider=provider.user, market__symbol=OUT)
    market = endpoint.market
    endpoints.endpoint_delete(user=provider.user, endpoint_id=endpoint.id)
    assert outages_get(keys={(provider.user.id, market.id)})[provider.user.id, market.id]
    monkeypatch.setattr(endpoints, "_check", lambda *args: None)  # the upstream answers
    endpoints.endpoint_create(
        user=provider.user, market=market, base_url="https://upstream.example.com/v1",
        api_key="k", model_id="m",
    )  # fmt: skip
    outage = EndpointOutage.objects.get(provider=provider.user)
    assert outage.ended_at is not None
    assert outages_get(keys={(provider.user.id, market.id)})[provider.user.id, market.id] is None
