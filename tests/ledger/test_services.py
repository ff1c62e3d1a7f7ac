"""Each ledger operation, its postings and balances, and every refusal (with nothing written)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction

from exchange.errors import IdempotencyConflict, InsufficientFunds, ValidationFailed
from exchange.ledger import services
from exchange.ledger.models import Account, LedgerTransaction, Posting, SystemAccount
from exchange.ledger.selectors import audit_run, balance_get, balance_list, posting_list
from exchange.ledger.services import HoldRequest, NettedHold, SettlementRequest, fee_for
from tests.ledger.conftest import CNY, SYMBOL, fund, issue, key, ledger_state

pytestmark = pytest.mark.django_db


def system_balance(system: str, asset: str, issuer: Any = None) -> int:
    return Account.objects.get(owner=None, system=system, asset_id=asset, issuer=issuer).available


def legs(ledger_transaction: LedgerTransaction) -> list[tuple[str, str, str, int]]:
    return sorted(
        (p.account.system or p.account.owner.email, p.asset_id, p.bucket, p.amount)
        for p in ledger_transaction.postings.select_related("account__owner")
    )


def test_deposit_credits_available_from_stripe_clearing(make_user) -> None:
    user = make_user("a@example.com")
    posted = services.deposit_credit(
        user=user, currency="CNY", amount=5 * CNY, reference="stripe:evt_1", idempotency_key="evt_1"
    )
    assert posted.kind == "deposit"
    assert balance_get(user=user, asset="CNY") == (5 * CNY, 0)
    assert system_balance(SystemAccount.STRIPE_CLEARING, "CNY") == -5 * CNY
    assert legs(posted) == [
        ("a@example.com", "CNY", "available", 5 * CNY),
        ("stripe_clearing", "CNY", "available", -5 * CNY),
    ]


def test_hold_and_release_move_between_buckets(make_user) -> None:
    user = make_user()
    fund(user, 100)
    services.hold_place(
        user=user, asset="CNY", amount=60, reference="order:1", idempotency_key="h1"
    )
    assert balance_get(user=user, asset="CNY") == (40, 60)
    services.hold_release(
        user=user, asset="CNY", amount=25, reference="order:1", idempotency_key="r1"
    )
    assert balance_get(user=user, asset="CNY") == (65, 35)
    assert balance_get(user=user, asset="CNY").total == 100


def test_hold_place_refuses_more_than_available_and_writes_nothing(make_user) -> None:
    user = make_user()
    fund(user, 100)
    before = ledger_state()
    with pytest.raises(InsufficientFunds) as error:
        services.hold_place(user=user, asset="CNY", amount=101, reference="o", idempotency_key="h")
    assert error.value.details["bucket"] == "available"
    assert "Insufficient available CNY" in error.value.message
    assert ledger_state() == before
    assert not LedgerTransaction.objects.filter(idempotency_key="h").exists()


def test_netted_holds_are_one_transaction_per_group_with_two_legs_per_asset(make_user) -> None:
    first, second = make_user("n1@example.com"), make_user("n2@example.com")
    fund(first, 100)
    fund(second, 100)
    before = LedgerTransaction.objects.count()
    posted = services.hold_place_netted(
        groups=[
            NettedHold(
                [
                    HoldRequest(first, "CNY", 30, "order:1", ""),
                    HoldRequest(first, "CNY", 20, "order:3", ""),
                ],
                "orders:1,3",
                "orders:1:hold",
            ),
            NettedHold([HoldRequest(second, "CNY", 5, "order:2", "")], "order:2", "order:2:hold"),
        ]
    )
    assert LedgerTransaction.objects.count() == before + 2
    assert legs(LedgerTransaction.objects.get(id=posted[0])) == [
        ("n1@example.com", "CNY", "available", -50),
        ("n1@example.com", "CNY", "held", 50),
    ]
    assert legs(LedgerTransaction.objects.get(id=posted[1])) == [
        ("n2@example.com", "CNY", "available", -5),
        ("n2@example.com", "CNY", "held", 5),
    ]
    assert LedgerTransaction.objects.get(id=posted[0]).reference == "orders:1,3"
    assert balance_get(user=first, asset="CNY") == (50, 50)
    assert balance_get(user=second, asset="CNY") == (95, 5)
    assert audit_run().is_ok


def test_netted_holds_are_all_or_nothing(make_user) -> None:
    rich, poor = make_user(), make_user()
    fund(rich, 100)
    fund(poor, 10)
    before = ledger_state()
    with pytest.raises(InsufficientFunds):
        services.hold_place_netted(
            groups=[
                NettedHold([HoldRequest(rich, "CNY", 50, "order:1", "")], "order:1", "order:1:h"),
                NettedHold(
                    [
                        HoldRequest(poor, "CNY", 6, "order:2", ""),
                        HoldRequest(poor, "CNY", 6, "order:3", ""),  # 12 > 10 together
                    ],
                    "orders:2,3",
                    "orders:2:hold",
                ),
            ]
        )
    assert ledger_state() == before


def test_hold_release_refuses_more_than_held_and_writes_nothing(make_user) -> None:
    user = make_user()
    fund(user, 100)
    services.hold_place(user=user, asset="CNY", amount=10, reference="o", idempotency_key="h")
    before = ledger_state()
    with pytest.raises(InsufficientFunds) as error:
        services.hold_release(user=user, asset="CNY", amount=11, reference="o", idempotency_key="r")
    assert error.value.details["bucket"] == "held"
    assert ledger_state() == before


def test_hold_on_an_account_that_never_existed_is_refused(make_user) -> None:
    user = make_user()
    with pytest.raises(InsufficientFunds):
        services.hold_place(user=user, asset="USD", amount=1, reference="o", idempotency_key="h")
    assert balance_get(user=user, asset="USD") == (0, 0)
    assert not LedgerTransaction.objects.exists()


@pytest.mark.parametrize(
    "amount", [0, -1, -(10**20), 10**19, 2**63, 1.0, Decimal(1), "1", True, None]
)
def test_refuses_amounts_that_are_not_positive_integers(make_user, amount) -> None:
    user = make_user()
    fund(user, 100)
    before = ledger_state()
    with pytest.raises(ValidationFailed):
        services.hold_place(
            user=user, asset="CNY", amount=amount, reference="o", idempotency_key="x"
        )
    with pytest.raises(ValidationFailed):
        services.deposit_credit(
            user=user, currency="CNY", amount=amount, reference="o", idempotency_key="y"
        )
    assert ledger_state() == before


@pytest.mark.parametrize(
    ("field", "value"),
    [("reference", ""), ("reference", "   "), ("reference", "x" * 121), ("idempotency_key", "")],
)
def test_refuses_blank_references_and_keys(make_user, field, value) -> None:
    user = make_user()
    arguments = {
        "user": user,
        "currency": "CNY",
        "amount": 1,
        "reference": "r",
        "idempotency_key": "k",
    }
    with pytest.raises(ValidationFailed):
        services.deposit_credit(**{**arguments, field: value})
    assert not LedgerTransaction.objects.exists()


def test_refuses_unknown_currency_and_unknown_asset(make_user) -> None:
    user = make_user()
    with pytest.raises(ValidationFailed):
        services.deposit_credit(
            user=user, currency="EUR", amount=1, reference="r", idempotency_key="k"
        )
    with pytest.raises(ValidationFailed):
        services.adjustment_post(
            user=user, asset="NOPE", amount=1, reason="r", staff_user=None, idempotency_key="k"
        )
    assert ledger_state() == (0, 0, [])


def test_fee_is_the_ceiling_of_notional_times_rate() -> None:
    assert fee_for(notional=1_000, rate=Decimal("0.001")) == 1
    assert fee_for(notional=1_001, rate=Decimal("0.001")) == 2  # 1.001 rounds up
    assert fee_for(notional=999, rate=Decimal("0.002")) == 2  # 1.998 rounds up
    assert fee_for(notional=12_345, rate=Decimal("0")) == 0
    assert fee_for(notional=1, rate=Decimal("0.00001")) == 1  # at most one unit in our favour
    assert fee_for(notional=10**18, rate=Decimal("0.09999")) == 99_990_000_000_000_000


def settle_setup(make_user, market, *, quote: int = 10 * CNY, tokens: int = 10_000):
    buyer, seller = make_user("buyer@example.com"), make_user("seller@example.com")
    fund(buyer, quote)
    services.hold_place(
        user=buyer, asset="CNY", amount=quote, reference="order:b", idempotency_key="hb"
    )
    issue(seller, market, tokens)
    services.hold_place(
        user=seller, asset=SYMBOL, amount=tokens, reference="order:s", idempotency_key="hs"
    )
    return buyer, seller


def test_trade_settle_moves_quote_tokens_and_fees(make_user, market) -> None:
    buyer, seller = settle_setup(make_user, market)
    notional = 3 * CNY + 1  # fees round up: 600_001 × … see below
    settlement = services.trade_settle(
        market=market,
        buyer=buyer,
        seller=seller,
        tokens=4_000,
        notional=notional,
        buyer_fee_rate=Decimal("0.002"),
        seller_fee_rate=Decimal("0.001"),
        reference="trade:1",
        idempotency_key="trade:1",
    )
    buyer_fee, seller_fee = 600_001, 300_001  # ceil(300_000_001 × 0.002), ceil(… × 0.001)
    assert (settlement.buyer_fee, settlement.seller_fee) == (buyer_fee, seller_fee)
    assert settlement.transaction.kind == "trade"
    assert balance_get(user=buyer, asset="CNY") == (0, 10 * CNY - notional - buyer_fee)
    assert balance_get(user=seller, asset="CNY") == (notional - seller_fee, 0)
    assert balance_get(user=buyer, asset=SYMBOL) == (4_000, 0)
    assert balance_get(user=seller, asset=SYMBOL) == (0, 6_000)
    assert system_balance(SystemAccount.FEE_REVENUE, "CNY") == buyer_fee + seller_fee
    assert legs(settlement.transaction) == sorted(
        [
            ("buyer@example.com", "CNY", "held", -(notional + buyer_fee)),
            ("seller@example.com", "CNY", "available", notional - seller_fee),
            ("fee_revenue", "CNY", "available", buyer_fee + seller_fee),
            ("seller@example.com", SYMBOL, "held", -4_000),
            ("buyer@example.com", SYMBOL, "available", 4_000),
        ]
    )
    assert audit_run().is_ok


def test_trade_settle_with_zero_fees_has_no_fee_leg(make_user, market) -> None:
    buyer, seller = settle_setup(make_user, market)
    settlement = services.trade_settle(
        market=market, buyer=buyer, seller=seller, tokens=1_000, notional=CNY,
        buyer_fee_rate=Decimal(0), seller_fee_rate=Decimal(0), reference="t", idempotency_key="t",
    )  # fmt: skip
    assert (settlement.buyer_fee, settlement.seller_fee) == (0, 0)
    assert settlement.transaction.postings.count() == 4


@pytest.mark.parametrize("short", ["quote", "tokens"])
def test_trade_settle_refuses_when_a_hold_does_not_cover_it(make_user, market, short) -> None:
    buyer, seller = settle_setup(make_user, market, quote=CNY, tokens=1_000)
    before = ledger_state()
    with pytest.raises(InsufficientFunds) as error:
        services.trade_settle(
            market=market, buyer=buyer, seller=seller,
            tokens=1_001 if short == "tokens" else 1_000,
            notional=CNY if short == "quote" else CNY // 2,  # CNY + fee > CNY held
            buyer_fee_rate=Decimal("0.002"), seller_fee_rate=Decimal("0.001"),
            reference="t", idempotency_key="t",
        )  # fmt: skip
    assert error.value.details["asset"] == ("CNY" if short == "quote" else SYMBOL)
    assert ledger_state() == before


@pytest.mark.parametrize(
    "rate", [Decimal("-0.001"), Decimal("0.1"), Decimal("NaN"), 0.001, "0.001"]
)
def test_trade_settle_refuses_bad_fee_rates(make_user, market, rate) -> None:
    buyer, seller = settle_setup(make_user, market)
    before = ledger_state()
    with pytest.raises(ValidationFailed):
        services.trade_settle(
            market=market, buyer=buyer, seller=seller, tokens=1, notional=1,
            buyer_fee_rate=rate, seller_fee_rate=Decimal(0), reference="t", idempotency_key="t",
        )  # fmt: skip
    assert ledger_state() == before


def test_trade_settle_many_settles_a_batch_in_the_callers_transaction(make_user, market) -> None:
    buyer, seller = settle_setup(make_user, market)
    requests = [
        SettlementRequest(
            market, buyer, seller, 1_000, CNY, Decimal("0.002"), Decimal("0.001"), f"t{n}", f"t{n}"
        )
        for n in range(5)
    ]
    with transaction.atomic():
        results = services.trade_settle_many(settlements=requests)
    assert [r.buyer_fee for r in results] == [200_000] * 5
    assert [r.seller_fee for r in results] == [100_000] * 5
    assert len({r.transaction.pk for r in results}) == 5
    assert balance_get(user=buyer, asset="CNY") == (0, 10 * CNY - 5 * CNY - 5 * 200_000)
    assert balance_get(user=seller, asset="CNY") == (5 * (CNY - 100_000), 0)
    assert balance_get(user=buyer, asset=SYMBOL) == (5_000, 0)
    # replaying the whole batch changes nothing and returns the same transactions
    with transaction.atomic():
        again = services.trade_settle_many(settlements=requests)
    assert [r.transaction.pk for r in again] == [r.transaction.pk for r in results]
    assert LedgerTransaction.objects.filter(kind="trade").count() == 5
    assert audit_run().is_ok


def test_trade_settle_many_is_all_or_nothing(make_user, market) -> None:
    buyer, seller = settle_setup(make_user, market, quote=2 * CNY + 10**6)
    requests = [
        SettlementRequest(
            market, buyer, seller, 1_000, CNY, Decimal("0.002"), Decimal(0), f"t{n}", f"t{n}"
        )
        for n in range(3)  # the third one is not covered by the buyer's hold
    ]
    before = ledger_state()
    with pytest.raises(InsufficientFunds), transaction.atomic():
        services.trade_settle_many(settlements=requests)
    assert ledger_state() == before


@pytest.mark.django_db(transaction=True)
def test_trade_settle_many_needs_the_callers_transaction() -> None:
    with pytest.raises(transaction.TransactionManagementError):
        services.trade_settle_many(settlements=[])


def test_hold_release_many_releases_several_holds(make_user) -> None:
    first, second = make_user(), make_user()
    for user in (first, second):
        fund(user, 100)
        services.hold_place(
            user=user, asset="CNY", amount=100, reference="o", idempotency_key=key()
        )
    with transaction.atomic():
        released = services.hold_release_many(
            releases=[
                HoldRequest(first, "CNY", 30, "o:1", "rel:1"),
                HoldRequest(second, "CNY", 100, "o:2", "rel:2"),
            ]
        )
    assert [r.kind for r in released] == ["release", "release"]
    assert balance_get(user=first, asset="CNY") == (30, 70)
    assert balance_get(user=second, asset="CNY") == (100, 0)
    assert services.hold_release_many(releases=[]) == []


def test_withdrawal_hold_then_complete_pays_out(make_user) -> None:
    user = make_user()
    fund(user, 1_000)
    services.withdrawal_hold(
        user=user, currency="CNY", amount=400, reference="payout:1", idempotency_key="w1"
    )
    assert balance_get(user=user, asset="CNY") == (600, 400)
    done = services.withdrawal_complete(
        user=user, currency="CNY", amount=400, reference="payout:1", idempotency_key="w1:done"
    )
    assert done.kind == "withdrawal_complete"
    assert balance_get(user=user, asset="CNY") == (600, 0)
    assert system_balance(SystemAccount.PAYOUTS_IN_FLIGHT, "CNY") == 400


def test_withdrawal_fail_gives_the_money_back(make_user) -> None:
    user = make_user()
    fund(user, 1_000)
    services.withdrawal_hold(
        user=user, currency="CNY", amount=400, reference="p", idempotency_key="w1"
    )
    services.withdrawal_fail(
        user=user, currency="CNY", amount=400, reference="p", idempotency_key="w1:fail"
    )
    assert balance_get(user=user, asset="CNY") == (1_000, 0)


def test_withdrawal_refusals_write_nothing(make_user) -> None:
    user = make_user()
    fund(user, 100)
    before = ledger_state()
    with pytest.raises(InsufficientFunds):
        services.withdrawal_hold(
            user=user, currency="CNY", amount=101, reference="p", idempotency_key="w"
        )
    with pytest.raises(InsufficientFunds):
        services.withdrawal_complete(
            user=user, currency="CNY", amount=1, reference="p", idempotency_key="c"
        )
    with pytest.raises(InsufficientFunds):
        services.withdrawal_fail(
            user=user, currency="CNY", amount=1, reference="p", idempotency_key="f"
        )
    assert ledger_state() == before


def test_capacity_issue_and_retire(make_user, market) -> None:
    provider = make_user(role="provider")
    services.capacity_issue(
        user=provider, market=market, tokens=5_000, reference="listing:1", idempotency_key="c1"
    )
    assert balance_get(user=provider, asset=SYMBOL) == (5_000, 0)
    # the provider's own issuance account (one per provider and market)
    assert system_balance(SystemAccount.CAPACITY_ISSUANCE, SYMBOL, issuer=provider) == -5_000
    assert not Account.objects.filter(system="capacity_issuance", issuer=None).exists()
    services.capacity_retire(
        user=provider, market=market, tokens=2_000, reference="listing:1", idempotency_key="c2"
    )
    assert balance_get(user=provider, asset=SYMBOL) == (3_000, 0)
    before = ledger_state()
    with pytest.raises(InsufficientFunds):
        services.capacity_retire(
            user=provider, market=market, tokens=3_001, reference="l", idempotency_key="c3"
        )
    assert ledger_state() == before
    asset = services.token_asset_for(market)
    assert (asset.code, asset.kind, asset.decimals, asset.market_id) == (
        SYMBOL,
        "token",
        0,
        market.id,
    )


def test_adjustment_needs_a_reason_and_staff(make_user) -> None:
    user, staff = make_user(), make_user("staff@example.com")
    staff.is_staff = True
    staff.save()
    posted = services.adjustment_post(
        user=user,
        asset="USD",
        amount=250,
        reason="demo funding",
        staff_user=staff,
        idempotency_key="a1",
    )
    assert (posted.kind, posted.memo, posted.staff_user_id, posted.reference) == (
        "adjustment", "demo funding", staff.pk, f"staff:{staff.pk}",
    )  # fmt: skip
    assert balance_get(user=user, asset="USD") == (250, 0)
    services.adjustment_post(
        user=user,
        asset="USD",
        amount=-50,
        reason="correction",
        staff_user=staff,
        idempotency_key="a2",
    )
    assert balance_get(user=user, asset="USD") == (200, 0)
    before = ledger_state()
    for reason in ("", "   ", None):
        with pytest.raises(ValidationFailed):
            services.adjustment_post(
                user=user,
                asset="USD",
                amount=1,
                reason=reason,
                staff_user=staff,
                idempotency_key="a3",
            )
    with pytest.raises(ValidationFailed):
        services.adjustment_post(
            user=user, asset="USD", amount=1, reason="x", staff_user=user, idempotency_key="a4"
        )
    with pytest.raises(ValidationFailed):
        services.adjustment_post(
            user=user, asset="USD", amount=0, reason="x", staff_user=staff, idempotency_key="a5"
        )
    with pytest.raises(InsufficientFunds):
        services.adjustment_post(
            user=user, asset="USD", amount=-201, reason="x", staff_user=staff, idempotency_key="a6"
        )
    assert ledger_state() == before


def test_same_key_twice_returns_the_first_transaction(make_user) -> None:
    user = make_user()
    first = services.deposit_credit(
        user=user, currency="CNY", amount=10, reference="evt", idempotency_key="evt"
    )
    before = ledger_state()
    second = services.deposit_credit(
        user=user, currency="CNY", amount=10, reference="evt", idempotency_key="evt"
    )
    assert second.pk == first.pk
    assert ledger_state() == before
    assert balance_get(user=user, asset="CNY") == (10, 0)


@pytest.mark.parametrize(
    "change", [{"amount": 11}, {"reference": "other"}, {"currency": "USD"}, {"user": "other"}]
)
def test_same_key_with_another_body_is_a_conflict(make_user, change) -> None:
    user = make_user()
    arguments = {
        "user": user,
        "currency": "CNY",
        "amount": 10,
        "reference": "evt",
        "idempotency_key": "evt",
    }
    services.deposit_credit(**arguments)
    before = ledger_state()
    if change.get("user") == "other":
        change = {"user": make_user()}
    with pytest.raises(IdempotencyConflict) as error:
        services.deposit_credit(**{**arguments, **change})
    assert error.value.http_status == 409
    assert ledger_state() == before


def test_same_key_for_another_operation_is_a_conflict(make_user) -> None:
    user = make_user()
    fund(user, 100)
    services.hold_place(user=user, asset="CNY", amount=10, reference="o", idempotency_key="same")
    with pytest.raises(IdempotencyConflict):
        services.withdrawal_hold(
            user=user, currency="CNY", amount=10, reference="o", idempotency_key="same"
        )


def test_a_refused_key_can_be_used_once_funds_arrive(make_user) -> None:
    user = make_user()
    with pytest.raises(InsufficientFunds):
        services.hold_place(user=user, asset="CNY", amount=10, reference="o", idempotency_key="h")
    fund(user, 10)
    services.hold_place(user=user, asset="CNY", amount=10, reference="o", idempotency_key="h")
    assert balance_get(user=user, asset="CNY") == (0, 10)


def test_selectors_list_balances_and_postings(make_user, market) -> None:
    user = make_user()
    fund(user, 100)
    fund(user, 7, currency="USD")
    issue(user, market, 3)
    services.hold_place(user=user, asset="CNY", amount=40, reference="o", idempotency_key="h")
    assert [(b.asset, b.kind, b.available, b.held, b.total) for b in balance_list(user=user)] == [
        ("CNY", "currency", 60, 40, 100),
        (SYMBOL, "token", 3, 0, 3),
        ("USD", "currency", 7, 0, 7),
    ]
    assert [p.amount for p in posting_list(user=user)] == [40, -40, 3, 7, 100]
    assert [p.amount for p in posting_list(user=user, asset="USD")] == [7]
    assert [p.amount for p in posting_list(user=user, kind="hold")] == [40, -40]
    assert Posting.objects.filter(account__owner=None).count() == 3
