"""A stateful model of the ledger driving the real services (hypothesis RuleBasedStateMachine).

Each step either makes exactly the effect the model predicts or is refused and changes nothing;
after every step: each asset and each transaction sums to zero, no user balance is negative,
every cached balance equals the sum of its postings, and there is one transaction per key.
``LEDGER_HYPOTHESIS_EXAMPLES`` raises the number of sequences (200 by default, 30 steps each).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from exchange.errors import ExchangeError, IdempotencyConflict
from exchange.ledger import services
from exchange.ledger.models import Account, LedgerTransaction
from exchange.ledger.selectors import audit_run
from exchange.ledger.services import fee_for
from exchange.ledger.units import BIGINT_MAX, MAX_AMOUNT
from tests.ledger.conftest import SYMBOL

EXAMPLES = int(os.environ.get("LEDGER_HYPOTHESIS_EXAMPLES", "200"))
ASSETS = ["CNY", "USD", SYMBOL]
CURRENCIES = ["CNY", "USD"]
RATES = [Decimal(0), Decimal("0.001"), Decimal("0.002"), Decimal("0.09999")]
EDGE_AMOUNTS = [0, -1, 1, 2, 10**12, MAX_AMOUNT, MAX_AMOUNT + 1, BIGINT_MAX, 2**63, -(10**18)]
amounts = st.one_of(st.sampled_from(EDGE_AMOUNTS), st.integers(1, 10**6), st.integers(-5, 5))
signed = st.one_of(amounts, amounts.map(lambda n: -n))

# (owner id or system account code, asset) → [available, held]
Key = tuple[Any, str]
Deltas = dict[Key, list[int]]


def valid(amount: int) -> bool:
    return 0 < amount <= MAX_AMOUNT


class LedgerMachine(RuleBasedStateMachine):
    users: list[Any] = []
    market: Any = None

    def __init__(self) -> None:
        super().__init__()
        # Every sequence starts from the same database: a savepoint rolled back in teardown.
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        self.model: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
        self.calls: list[tuple[Callable[..., Any], dict[str, Any], int]] = []
        self.counter = 0

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    # --- the prediction engine -------------------------------------------------------------------
    def key(self) -> str:
        self.counter += 1
        return f"k{self.counter}"

    def attempt(self, service: Callable[..., Any], deltas: Deltas | None, **arguments: Any) -> Any:
        """Call ``service``; ``deltas`` None means the arguments themselves are invalid."""
        expected_ok = deltas is not None and self.fits(deltas)
        before = self.db_state()
        try:
            result = service(**arguments)
        except ExchangeError:
            assert not expected_ok, f"{service.__name__}{arguments} was refused"
            assert self.db_state() == before, "a refusal changed the ledger"
            return None
        assert expected_ok, f"{service.__name__}{arguments} should have been refused"
        for account, (available, held) in deltas.items():
            self.model[account][0] += available
            self.model[account][1] += held
        self.calls.append((service, arguments, result.pk))
        return result

    def fits(self, deltas: Deltas) -> bool:
        for (owner, _), (available, held) in deltas.items():
            new_available = self.model[(owner, _)][0] + available
            new_held = self.model[(owner, _)][1] + held
            if max(abs(new_available), abs(new_held)) > BIGINT_MAX:
                return False
            if isinstance(owner, int) and (new_available < 0 or new_held < 0):
                return False
        return True

    @staticmethod
    def db_state() -> tuple[Any, ...]:
        rows = Account.objects.values_list("owner_id", "system", "asset_id", "available", "held")
        return (LedgerTransaction.objects.count(), sorted(rows, key=repr))

    # --- rules -----------------------------------------------------------------------------------
    @initialize()
    def start(self) -> None:
        assert LedgerTransaction.objects.count() == 0

    @rule(user=st.integers(0, 3), currency=st.sampled_from(CURRENCIES), amount=amounts)
    def deposit(self, user: int, currency: str, amount: int) -> None:
        owner = self.users[user]
        deltas = (
            {(owner.pk, currency): [amount, 0], ("stripe_clearing", currency): [-amount, 0]}
            if valid(amount)
            else None
        )
        self.attempt(
            services.deposit_credit, deltas, user=owner, currency=currency, amount=amount,
            reference="evt", idempotency_key=self.key(),
        )  # fmt: skip

    @rule(user=st.integers(0, 3), tokens=amounts)
    def issue(self, user: int, tokens: int) -> None:
        owner = self.users[user]
        deltas = (
            {
                (owner.pk, SYMBOL): [tokens, 0],
                (f"capacity_issuance:{owner.pk}", SYMBOL): [-tokens, 0],
            }
            if valid(tokens)
            else None
        )
        self.attempt(
            services.capacity_issue, deltas, user=owner, market=self.market, tokens=tokens,
            reference="listing", idempotency_key=self.key(),
        )  # fmt: skip

    @rule(user=st.integers(0, 3), tokens=amounts)
    def retire(self, user: int, tokens: int) -> None:
        owner = self.users[user]
        deltas = (
            {
                (owner.pk, SYMBOL): [-tokens, 0],
                (f"capacity_issuance:{owner.pk}", SYMBOL): [tokens, 0],
            }
            if valid(tokens)
            else None
        )
        self.attempt(
            services.capacity_retire, deltas, user=owner, market=self.market, tokens=tokens,
            reference="listing", idempotency_key=self.key(),
        )  # fmt: skip

    @rule(
        user=st.integers(0, 3), asset=st.sampled_from(ASSETS), amount=amounts, release=st.booleans()
    )
    def hold_or_release(self, user: int, asset: str, amount: int, release: bool) -> None:
        owner = self.users[user]
        sign = -1 if release else 1
        deltas = {(owner.pk, asset): [-sign * amount, sign * amount]} if valid(amount) else None
        service = services.hold_release if release else services.hold_place
        self.attempt(
            service, deltas, user=owner, asset=asset, amount=amount, reference="order",
            idempotency_key=self.key(),
        )  # fmt: skip

    @rule(
        user=st.integers(0, 3),
        currency=st.sampled_from(CURRENCIES),
        amount=amounts,
        phase=st.sampled_from(["hold", "complete", "fail"]),
    )
    def withdrawal(self, user: int, currency: str, amount: int, phase: str) -> None:
        owner = self.users[user]
        service, deltas = {
            "hold": (services.withdrawal_hold, {(owner.pk, currency): [-amount, amount]}),
            "complete": (
                services.withdrawal_complete,
                {(owner.pk, currency): [0, -amount], ("payouts_in_flight", currency): [amount, 0]},
            ),
            "fail": (services.withdrawal_fail, {(owner.pk, currency): [amount, -amount]}),
        }[phase]
        self.attempt(
            service, deltas if valid(amount) else None, user=owner, currency=currency,
            amount=amount, reference="payout", idempotency_key=self.key(),
        )  # fmt: skip

    @rule(
        buyer=st.integers(0, 3),
        seller=st.integers(0, 3),
        tokens=amounts,
        notional=amounts,
        buyer_rate=st.sampled_from(RATES),
        seller_rate=st.sampled_from(RATES),
    )
    def settle(
        self,
        buyer: int,
        seller: int,
        tokens: int,
        notional: int,
        buyer_rate: Decimal,
        seller_rate: Decimal,
    ) -> None:
        bought, sold = self.users[buyer], self.users[seller]
        deltas: Deltas | None = None
        buyer_fee = seller_fee = 0
        if valid(tokens) and valid(notional):
            buyer_fee = fee_for(notional=notional, rate=buyer_rate)
            seller_fee = fee_for(notional=notional, rate=seller_rate)
            deltas = defaultdict(lambda: [0, 0])
            deltas[(bought.pk, "CNY")][1] -= notional + buyer_fee
            deltas[(sold.pk, "CNY")][0] += notional - seller_fee
            deltas[("fee_revenue", "CNY")][0] += buyer_fee + seller_fee
            deltas[(sold.pk, SYMBOL)][1] -= tokens
            deltas[(bought.pk, SYMBOL)][0] += tokens
        result = self.attempt(
            services.trade_settle, deltas, market=self.market, buyer=bought, seller=sold,
            tokens=tokens, notional=notional, buyer_fee_rate=buyer_rate,
            seller_fee_rate=seller_rate, reference="trade", idempotency_key=self.key(),
        )  # fmt: skip
        if result is not None:
            assert (result.buyer_fee, result.seller_fee) == (buyer_fee, seller_fee)
            assert buyer_fee - notional * buyer_rate < 1
            assert seller_fee - notional * seller_rate < 1

    @rule(user=st.integers(0, 3), asset=st.sampled_from(ASSETS), amount=signed)
    def adjust(self, user: int, asset: str, amount: int) -> None:
        owner = self.users[user]
        deltas = (
            {(owner.pk, asset): [amount, 0], ("adjustments", asset): [-amount, 0]}
            if amount != 0 and abs(amount) <= MAX_AMOUNT
            else None
        )
        self.attempt(
            services.adjustment_post, deltas, user=owner, asset=asset, amount=amount,
            reason="model", staff_user=None, idempotency_key=self.key(),
        )  # fmt: skip

    @precondition(lambda self: self.calls)
    @rule(pick=st.integers(0, 10**6), change=st.booleans())
    def replay(self, pick: int, change: bool) -> None:
        service, arguments, transaction_id = self.calls[pick % len(self.calls)]
        before = self.db_state()
        if not change:
            result = service(**arguments)
            posted = getattr(result, "transaction", result)
            assert posted.pk == transaction_id
        else:
            field = "reason" if "reason" in arguments else "reference"
            with pytest.raises(IdempotencyConflict):
                service(**{**arguments, field: arguments[field] + "!"})
        assert self.db_state() == before

    # --- invariants ------------------------------------------------------------------------------
    @invariant()
    def ledger_is_sound(self) -> None:
        # Fire any deferred constraint triggers now: this test runs inside one transaction
        # (the balance check itself runs per statement, migration 0003).
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        report = audit_run()
        assert report.is_ok, report.render()
        rows = Account.objects.values_list(
            "owner_id", "system", "issuer_id", "asset_id", "available", "held"
        )
        stored = {
            (owner or (f"{system}:{issuer}" if issuer else system), asset): [available, held]
            for owner, system, issuer, asset, available, held in rows
        }
        expected = {
            account: balance
            for account, balance in self.model.items()
            if account in stored or any(balance)
        }
        assert stored == {**{account: [0, 0] for account in stored}, **expected}
        keys = set(LedgerTransaction.objects.values_list("idempotency_key", flat=True))
        assert keys == {arguments["idempotency_key"] for _, arguments, _ in self.calls}


@pytest.mark.django_db
def test_ledger_state_machine(make_user, market) -> None:
    LedgerMachine.users = [make_user() for _ in range(4)]
    LedgerMachine.market = market
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
