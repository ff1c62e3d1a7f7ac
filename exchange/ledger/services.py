"""Ledger operations: the only API through which the rest of the code moves value.

Amounts are ``int`` in ledger units: 1e-8 of a currency (``CURRENCY_DECIMALS``), whole tokens
for a market's token asset (asset code = ``market.symbol``).

Every operation runs in ``transaction.atomic()``: its own transaction when called alone, a
savepoint inside a caller's transaction (the engine runner settles a batch and releases holds in
one transaction); the outermost caller owns durability. Refusals (``InsufficientFunds``,
``ValidationFailed``, ``IdempotencyConflict``) leave nothing written. Each idempotency key
names one transaction: the same key with the same request returns the first transaction and
changes nothing; with a different request it raises ``IdempotencyConflict``.

Accounts and buckets: each (user, asset) account has an ``available`` and a ``held`` bucket;
holds move available → held. System accounts (``SystemAccount``) stand for the outside world.

Rounding: fees are ``ceil(notional × rate)`` in ledger units, i.e. in the exchange's favour by
less than one ledger unit.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple

from django.db import transaction

from exchange.errors import ValidationFailed
from exchange.ledger.journal import (
    Entry,
    Leg,
    assets_ensure,
    issuance_account,
    journal_post,
    journal_post_ids,
    system_account,
    user_account,
)
from exchange.ledger.models import (
    Asset,
    Bucket,
    LedgerTransaction,
    SystemAccount,
    TransactionKind,
)
from exchange.ledger.units import MAX_AMOUNT, is_currency
from exchange.markets.models import Market

AVAILABLE, HELD = Bucket.AVAILABLE.value, Bucket.HELD.value
MAX_FEE_RATE = Decimal("0.1")


class Settlement(NamedTuple):
    transaction: LedgerTransaction
    buyer_fee: int
    seller_fee: int


class SettlementRequest(NamedTuple):
    """The arguments of ``trade_settle``, for ``trade_settle_many``."""

    market: Market
    buyer: Any
    seller: Any
    tokens: int
    notional: int
    buyer_fee_rate: Decimal
    seller_fee_rate: Decimal
    reference: str
    idempotency_key: str
    # The part of ``notional`` paid into escrow instead of to the seller (a primary sale in a
    # deliverable market); the seller fee is charged on the rest only, and on the escrowed part
    # when it is released (``escrow_release_many``).
    escrow_notional: int = 0


class HoldRequest(NamedTuple):
    """The arguments of ``hold_release``, for ``hold_release_many``."""

    user: Any
    asset: str
    amount: int
    reference: str
    idempotency_key: str


class Leftover(NamedTuple):
    """A closed order's unused hold, for ``trades_settle_and_release``."""

    user_id: int
    asset: str
    amount: int


# --- validation ---------------------------------------------------------------------------------
def _positive(amount: Any, name: str = "amount") -> int:
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
        raise ValidationFailed(
            f"{name} must be an integer of ledger units between 1 and {MAX_AMOUNT}.",
            details={name: repr(amount)},
        )
    return amount


def _text(value: Any, name: str, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise ValidationFailed(
            f"{name} must be a non-blank string of at most {max_length} characters.",
            details={name: repr(value)[:200]},
        )
    return value


def _entry(
    *, kind: str, reference: str, idempotency_key: str, legs: list[Leg], **extra: Any
) -> Entry:
    return Entry(
        kind=kind,
        reference=_text(reference, "reference", 120),
        idempotency_key=_text(idempotency_key, "idempotency_key", 200),
        legs=legs,
        **extra,
    )


def _currency(currency: Any) -> str:
    if not isinstance(currency, str) or not is_currency(currency):
        raise ValidationFailed(f"Unknown currency {currency!r}.", details={"currency": currency})
    return currency


def _asset(asset: Any) -> str:
    return _text(asset, "asset", 40)


def _fee_rate(rate: Any, name: str) -> Decimal:
    if not isinstance(rate, Decimal) or not rate.is_finite() or not 0 <= rate < MAX_FEE_RATE:
        raise ValidationFailed(
            f"{name} must be a Decimal in [0, {MAX_FEE_RATE}).", details={name: repr(rate)}
        )
    return rate


def fee_for(*, notional: int, rate: Decimal) -> int:
    """``ceil(notional × rate)``, exact: the exchange's favour, by less than one ledger unit."""
    numerator, denominator = rate.as_integer_ratio()
    return -((-notional * numerator) // denominator)


def token_asset_for(market: Market) -> Asset:
    """The market's token asset (code ``market.symbol``, counted in whole tokens)."""
    assets_ensure([market.symbol])
    return Asset.objects.get(code=market.symbol)


def _move(user_id: int, asset: str, source: str, target: str, amount: int) -> list[Leg]:
    account = user_account(user_id, asset)
    return [Leg(account, source, -amount), Leg(account, target, amount)]


def _between(debit: tuple[Any, ...], credit: tuple[Any, ...], amount: int) -> list[Leg]:
    """Legs taking ``amount`` from (account, bucket) ``debit`` to ``credit``."""
    return [Leg(debit[0], debit[1], -amount), Leg(credit[0], credit[1], amount)]


def _one(entry: Entry) -> LedgerTransaction:
    return journal_post([entry])[0]


# --- holds --------------------------------------------------------------------------------------
def hold_place(
    *, user: Any, asset: str, amount: int, reference: str, idempotency_key: str
) -> LedgerTransaction:
    """Reserve ``amount`` of the user's available ``asset`` (available → held)."""
    legs = _move(user.pk, _asset(asset), AVAILABLE, HELD, _positive(amount))
    return _one(
        _entry(
            kind=TransactionKind.HOLD,
            reference=reference,
            idempotency_key=idempotency_key,
            legs=legs,
        )
    )


def hold_place_many(*, holds: list[HoldRequest]) -> list[int]:
    """Several holds in one journal post (a batch of orders): all placed, or none. Returns
    the ledger transaction ids (order intake needs no transaction objects: building them was
    a tenth of a batch's CPU).

    Raises ``InsufficientFunds`` with nothing written if any of them cannot be covered.
    """
    entries = [
        _entry(
            kind=TransactionKind.HOLD,
            reference=request.reference,
            idempotency_key=request.idempotency_key,
            legs=_move(
                request.user.pk, _asset(request.asset), AVAILABLE, HELD, _positive(request.amount)
            ),
        )
        for request in holds
    ]
    return journal_post_ids(entries) if entries else []


class NettedHold(NamedTuple):
    """One user's holds placed as one transaction (``hold_place_netted``)."""

    holds: list[HoldRequest]
    reference: str
    idempotency_key: str


def hold_place_netted(*, groups: list[NettedHold]) -> list[int]:
    """Holds as ONE transaction per group, netted per account: an intake group of orders posts
    one transaction with two legs per asset for each user, instead of one per order. Each
    group's ``reference`` names its orders; each order keeps its own amount (``hold_amount``).

    All placed, or none: raises ``InsufficientFunds`` with nothing written if any account
    cannot cover its total. Returns the transaction ids, in the order of ``groups``.
    """
    entries = []
    for group in groups:
        totals: dict[tuple[int, str], int] = {}
        for request in group.holds:
            key = (request.user.pk, _asset(request.asset))
            totals[key] = totals.get(key, 0) + _positive(request.amount)
        legs = [
            leg
            for (user_id, asset), amount in totals.items()
            for leg in _move(user_id, asset, AVAILABLE, HELD, _positive(amount))
        ]
        entries.append(
            _entry(
                kind=TransactionKind.HOLD,
                reference=group.reference,
                idempotency_key=group.idempotency_key,
                legs=legs,
            )
        )
    return journal_post_ids(entries) if entries else []


def _release_entry(request: HoldRequest) -> Entry:
    legs = _move(request.user.pk, _asset(request.asset), HELD, AVAILABLE, _positive(request.amount))
    return _entry(
        kind=TransactionKind.RELEASE,
        reference=request.reference,
        idempotency_key=request.idempotency_key,
        legs=legs,
    )


def hold_release(
    *, user: Any, asset: str, amount: int, reference: str, idempotency_key: str
) -> LedgerTransaction:
    """Give back ``amount`` of a hold (held → available); refused if less is held."""
    return _one(_release_entry(HoldRequest(user, asset, amount, reference, idempotency_key)))


def hold_release_many(*, releases: list[HoldRequest]) -> list[LedgerTransaction]:
    """Several releases in one savepoint, with bulk statements (the engine runner's batch)."""
    if not releases:
        return []
    return journal_post([_release_entry(request) for request in releases])


# --- trades -------------------------------------------------------------------------------------
def _settlement_entry(request: SettlementRequest) -> tuple[Entry, int, int]:
    market = request.market
    quote, token = market.quote_currency, market.symbol
    notional = _positive(request.notional, "notional")
    tokens = _positive(request.tokens, "tokens")
    escrowed = request.escrow_notional
    if type(escrowed) is not int or not 0 <= escrowed <= notional:
        raise ValidationFailed(
            "escrow_notional must be an integer between 0 and the notional.",
            details={"escrow_notional": repr(escrowed)},
        )
    seller_part = notional - escrowed
    buyer_fee = fee_for(notional=notional, rate=_fee_rate(request.buyer_fee_rate, "buyer_fee_rate"))
    seller_fee = fee_for(
        notional=seller_part, rate=_fee_rate(request.seller_fee_rate, "seller_fee_rate")
    )
    buyer, seller = request.buyer.pk, request.seller.pk
    # Up to six legs, netted per account (fees are in the same transaction, and in the result):
    # the buyer's held quote pays notional + buyer fee; the seller gets its part − seller fee
    # (never negative: ceil(part × rate) ≤ part for rate < 10%); escrow gets the escrowed part;
    # fee revenue gets both fees; the seller's held tokens go to the buyer's available.
    legs = [
        Leg(user_account(buyer, quote), HELD, -(notional + buyer_fee)),
        Leg(user_account(seller, token), HELD, -tokens),
        Leg(user_account(buyer, token), AVAILABLE, tokens),
    ]
    if seller_part > seller_fee:  # not a one-unit part whose fee rounds up to all of it
        legs.append(Leg(user_account(seller, quote), AVAILABLE, seller_part - seller_fee))
    if escrowed:
        legs.append(Leg(system_account(SystemAccount.ESCROW, quote), AVAILABLE, escrowed))
    if buyer_fee + seller_fee:
        legs.append(
            Leg(system_account(SystemAccount.FEE_REVENUE, quote), AVAILABLE, buyer_fee + seller_fee)
        )
    entry = _entry(
        kind=TransactionKind.TRADE,
        reference=request.reference,
        idempotency_key=request.idempotency_key,
        legs=legs,
    )
    return entry, buyer_fee, seller_fee


def trade_settle(
    *,
    market: Market,
    buyer: Any,
    seller: Any,
    tokens: int,
    notional: int,
    buyer_fee_rate: Decimal,
    seller_fee_rate: Decimal,
    reference: str,
    idempotency_key: str,
) -> Settlement:
    """Settle one trade from the buyer's held quote and the seller's held tokens.

    The buyer pays ``notional + ceil(notional × buyer_fee_rate)`` from held quote; the seller
    receives ``notional − ceil(notional × seller_fee_rate)`` as available quote; the tokens
    move from the seller's held to the buyer's available; both fees go to fee revenue.
    """
    request = SettlementRequest(
        market,
        buyer,
        seller,
        tokens,
        notional,
        buyer_fee_rate,
        seller_fee_rate,
        reference,
        idempotency_key,
    )
    entry, buyer_fee, seller_fee = _settlement_entry(request)
    return Settlement(_one(entry), buyer_fee, seller_fee)


def trade_settle_many(*, settlements: list[SettlementRequest]) -> list[Settlement]:
    """Settle a batch of trades with a handful of bulk statements (the engine runner's path).

    Must be called inside the caller's ``transaction.atomic()``; runs in a savepoint of it and
    locks every balance row it touches once, in the global lock order. All or nothing.
    """
    if not transaction.get_connection().in_atomic_block:
        raise transaction.TransactionManagementError(
            "trade_settle_many must run inside the caller's transaction.atomic()."
        )
    if not settlements:
        return []
    built = [_settlement_entry(request) for request in settlements]
    posted = journal_post([entry for entry, _, _ in built])
    return [
        Settlement(ledger_transaction, buyer_fee, seller_fee)
        for ledger_transaction, (_, buyer_fee, seller_fee) in zip(posted, built, strict=True)
    ]


# --- money in and out ---------------------------------------------------------------------------
def trades_settle_and_release(
    *,
    settlements: list[SettlementRequest],
    leftovers: list[Leftover],
    release_reference: str,
    release_key: str,
) -> list[tuple[int, int]]:
    """The engine runner's batch: settle trades and release leftover holds in ONE journal post.

    One post locks every balance row of the batch once, in the global order. Two calls (settle,
    then release) would lock in two rounds, and two runners sharing a quote currency could
    deadlock between the rounds (the fee-revenue row is taken in the first). The closed orders'
    leftover holds go back in ONE release transaction (``release_reference``, ``release_key``)
    netted per account: a batch closes thousands of orders, and one transaction each was most
    of the batch's ledger rows (each order keeps what it held, cost and paid). Must be called
    inside the caller's ``transaction.atomic()``. All or nothing. Returns each settlement's
    (buyer fee, seller fee).
    """
    if not transaction.get_connection().in_atomic_block:
        raise transaction.TransactionManagementError(
            "trades_settle_and_release must run inside the caller's transaction.atomic()."
        )
    built = [_settlement_entry(request) for request in settlements]
    entries = [entry for entry, _, _ in built]
    if leftovers:
        totals: dict[tuple[int, str], int] = {}
        for leftover in leftovers:
            key = (leftover.user_id, _asset(leftover.asset))
            totals[key] = totals.get(key, 0) + _positive(leftover.amount)
        legs = [
            leg
            for (user_id, asset), amount in sorted(totals.items())
            for leg in _move(user_id, asset, HELD, AVAILABLE, amount)
        ]
        entries.append(
            _entry(
                kind=TransactionKind.RELEASE,
                reference=release_reference,
                idempotency_key=release_key,
                legs=legs,
            )
        )
    if not entries:
        return []
    journal_post_ids(entries)
    return [(buyer_fee, seller_fee) for _, buyer_fee, seller_fee in built]


def deposit_credit(
    *, user: Any, currency: str, amount: int, reference: str, idempotency_key: str
) -> LedgerTransaction:
    """Money received (Stripe clearing → the user's available balance)."""
    currency = _currency(currency)
    legs = _between(
        (system_account(SystemAccount.STRIPE_CLEARING, currency), AVAILABLE),
        (user_account(user.pk, currency), AVAILABLE),
        _positive(amount),
    )
    return _one(
        _entry(
            kind=TransactionKind.DEPOSIT,
            reference=reference,
            idempotency_key=idempotency_key,
            legs=legs,
        )
    )


def withdrawal_hold(
    *, user: Any, currency: str, amount: int, reference: str, idempotency_key: str
) -> LedgerTransaction:
    """First phase of a withdrawal: reserve the money (available → held)."""
    legs = _move(user.pk, _currency(currency), AVAILABLE, HELD, _positive(amount))
    return _one(
        _entry(
            kind=TransactionKind.WITHDRAWAL_HOLD,
            reference=reference,
            idempotency_key=idempotency_key,
            legs=legs,
        )
    )


def withdrawal_complete(
    *, user: Any, currency: str, amount: int, reference: str, idempotency_key: str
) -> LedgerTransaction:
    """The payout was sent: the held money leaves (held → payouts in flight)."""
    currency = _currency(currency)
    legs = _between(
        (user_account(user.pk, currency), HELD),
        (system_account(SystemAccount.PAYOUTS_IN_FLIGHT, currency), AVAILABLE),
        _positive(amount),
    )
    return _one(
        _entry(
            kind=TransactionKind.WITHDRAWAL_COMPLETE,
            reference=reference,
            idempotency_key=idempotency_key,
            legs=legs,
        )
    )


def withdrawal_fail(
    *, user: Any, currency: str, amount: int, reference: str, idempotency_key: str
) -> LedgerTransaction:
    """The payout failed: the money is the user's again (held → available)."""
    legs = _move(user.pk, _currency(currency), HELD, AVAILABLE, _positive(amount))
    return _one(
        _entry(
            kind=TransactionKind.WITHDRAWAL_FAIL,
            reference=reference,
            idempotency_key=idempotency_key,
            legs=legs,
        )
    )


# --- capacity -----------------------------------------------------------------------------------
def capacity_issue(
    *, user: Any, market: Market, tokens: int, reference: str, idempotency_key: str
) -> LedgerTransaction:
    """A provider lists capacity: the provider's own issuance account → its available tokens.

    Called by the capacity listing service only (``orders.capacity.capacity_list``), which
    records the listing and enforces the provider's limits: tokens outside a listing would
    have no lot behind them."""
    legs = _between(
        (issuance_account(user.pk, market.symbol), AVAILABLE),
        (user_account(user.pk, market.symbol), AVAILABLE),
        _positive(tokens, "tokens"),
    )
    return _one(
        _entry(
            kind=TransactionKind.CAPACITY_ISSUE,
            reference=reference,
            idempotency_key=idempotency_key,
            legs=legs,
        )
    )


def capacity_retire(
    *, user: Any, market: Market, tokens: int, reference: str, idempotency_key: str
) -> LedgerTransaction:
    """Unsold capacity expires: the provider's available tokens → its issuance account."""
    legs = _between(
        (user_account(user.pk, market.symbol), AVAILABLE),
        (issuance_account(user.pk, market.symbol), AVAILABLE),
        _positive(tokens, "tokens"),
    )
    return _one(
        _entry(
            kind=TransactionKind.CAPACITY_RETIRE,
            reference=reference,
            idempotency_key=idempotency_key,
            legs=legs,
        )
    )


# --- staff --------------------------------------------------------------------------------------
def adjustment_post(
    *,
    user: Any,
    asset: str,
    amount: int,
    reason: str,
    staff_user: Any,
    idempotency_key: str,
) -> LedgerTransaction:
    """A staff correction of the user's available balance (signed ``amount``) with a reason.

    ``staff_user`` is the staff member responsible (``None`` only from the command line, where
    the operator's reason must say who they are).
    """
    if type(amount) is not int or amount == 0 or abs(amount) > MAX_AMOUNT:
        raise ValidationFailed(
            f"amount must be a non-zero integer of ledger units, at most {MAX_AMOUNT} in size.",
            details={"amount": repr(amount)},
        )
    reason = _text(reason, "reason", 2000).strip()
    if staff_user is not None and not staff_user.is_staff:
        raise ValidationFailed("Only staff may post adjustments.")
    asset = _asset(asset)
    legs = _between(
        (system_account(SystemAccount.ADJUSTMENTS, asset), AVAILABLE),
        (user_account(user.pk, asset), AVAILABLE),
        amount,
    )
    reference = f"staff:{staff_user.pk}" if staff_user is not None else "staff:command-line"
    return _one(
        _entry(
            kind=TransactionKind.ADJUSTMENT,
            reference=reference,
            idempotency_key=idempotency_key,
            legs=legs,
            memo=reason,
            staff_user_id=staff_user.pk if staff_user is not None else None,
        )
    )


# --- funding: deposit reversals (appended for accounts.funding) --------------------------------
def deposit_reverse(
    *, user: Any, currency: str, amount: int, reference: str, idempotency_key: str
) -> LedgerTransaction:
    """Take back (part of) a deposit refunded or disputed at Stripe: the user's available →
    Stripe clearing, the mirror of ``deposit_credit``; refused (``InsufficientFunds``) if the
    user has less available. A negative ``amount`` gives it back (a dispute won).

    Kind ``deposit`` until the ledger has a kind of its own for reversals.
    """
    currency = _currency(currency)
    if type(amount) is not int or amount == 0 or abs(amount) > MAX_AMOUNT:
        raise ValidationFailed(
            f"amount must be a non-zero integer of ledger units, at most {MAX_AMOUNT} in size.",
            details={"amount": repr(amount)},
        )
    legs = _between(
        (user_account(user.pk, currency), AVAILABLE),
        (system_account(SystemAccount.STRIPE_CLEARING, currency), AVAILABLE),
        amount,
    )
    return _one(
        _entry(
            kind=TransactionKind.DEPOSIT,
            reference=reference,
            idempotency_key=idempotency_key,
            legs=legs,
        )
    )


# --- delivery: escrow, reservations, expiry (for exchange.delivery.escrow) --------------------
class EscrowRelease(NamedTuple):
    """One payment out of escrow to a provider (``escrow_release_many``)."""

    provider: Any
    currency: str
    gross: int  # leaves escrow
    fee: int  # of which the exchange's seller fee
    reference: str
    idempotency_key: str


def escrow_release_many(*, releases: list[EscrowRelease]) -> list[int]:
    """Pay providers out of escrow: escrow → provider's available (gross − fee) and fee revenue
    (fee). One transaction per release; all or nothing. Returns the transaction ids.

    Must run inside the caller's transaction (the lots that say what is owed are locked and
    updated in it).
    """
    entries = []
    for release in releases:
        currency = _currency(release.currency)
        gross = _positive(release.gross, "gross")
        fee = release.fee
        if type(fee) is not int or not 0 <= fee <= gross:
            raise ValidationFailed("fee must be between 0 and gross.", details={"fee": repr(fee)})
        legs = [Leg(system_account(SystemAccount.ESCROW, currency), AVAILABLE, -gross)]
        if gross > fee:
            legs.append(Leg(user_account(release.provider.pk, currency), AVAILABLE, gross - fee))
        if fee:
            legs.append(Leg(system_account(SystemAccount.FEE_REVENUE, currency), AVAILABLE, fee))
        entries.append(
            _entry(
                kind=TransactionKind.ESCROW_RELEASE,
                reference=release.reference,
                idempotency_key=release.idempotency_key,
                legs=legs,
            )
        )
    return journal_post_ids(entries) if entries else []


def _delivery_hold_entry(
    user_id: int, tokens: dict[str, int], reference: str, idempotency_key: str
) -> Entry:
    legs = [
        leg
        for asset, amount in sorted(tokens.items())
        if amount
        for leg in _move(user_id, _asset(asset), AVAILABLE, HELD, _positive(amount, "tokens"))
    ]
    return _entry(
        kind=TransactionKind.HOLD, reference=reference, idempotency_key=idempotency_key, legs=legs
    )


def delivery_hold(
    *, user: Any, tokens: dict[str, int], reference: str, idempotency_key: str
) -> LedgerTransaction:
    """A gateway reservation: the user's available tokens of each asset → held, in ONE
    transaction (a request draws on two markets). Raises ``InsufficientFunds`` with nothing
    written if any asset is short."""
    return _one(_delivery_hold_entry(user.pk, tokens, reference, idempotency_key))


class DeliveryHold(NamedTuple):
    """The arguments of ``delivery_hold``, for ``delivery_hold_many``."""

    user_id: int
    tokens: dict[str, int]
    reference: str
    idempotency_key: str


def delivery_hold_many(*, holds: list[DeliveryHold]) -> list[int]:
    """Several reservations' holds in one journal post (the gateway's group of concurrent
    requests): one transaction each, every balance moved once. All or none: raises
    ``InsufficientFunds`` with nothing written if any account is short. Returns the ids."""
    entries = [_delivery_hold_entry(*hold) for hold in holds]
    return journal_post_ids(entries) if entries else []


class DeliveredTokens(NamedTuple):
    """A settled reservation's tokens of one asset: ``held`` leave the hold, ``used`` of them
    are consumed (→ DELIVERED), the rest go back to available."""

    asset: str
    held: int
    used: int


def _delivery_settle_entry(
    user_id: int,
    tokens: list[DeliveredTokens],
    currency: str,
    credit: int,
    reference: str,
    idempotency_key: str,
) -> Entry:
    legs: list[Leg] = []
    for asset, held, used in tokens:
        _asset(asset)
        if type(used) is not int or type(held) is not int or not 0 <= used <= held:
            raise ValidationFailed("used tokens must be between 0 and the held tokens.")
        if held == 0:
            continue
        legs.append(Leg(user_account(user_id, asset), HELD, -held))
        if used:
            legs.append(Leg(system_account(SystemAccount.DELIVERED, asset), AVAILABLE, used))
        if held > used:
            legs.append(Leg(user_account(user_id, asset), AVAILABLE, held - used))
    if credit:
        legs += _between(
            (system_account(SystemAccount.ESCROW, _currency(currency)), AVAILABLE),
            (user_account(user_id, currency), AVAILABLE),
            _positive(credit, "credit"),
        )
    return _entry(
        kind=TransactionKind.DELIVERY, reference=reference, idempotency_key=idempotency_key,
        legs=legs,
    )  # fmt: skip


def delivery_settle(
    *,
    user: Any,
    tokens: list[DeliveredTokens],
    currency: str,
    credit: int,
    reference: str,
    idempotency_key: str,
) -> LedgerTransaction:
    """Settle a gateway reservation in ONE transaction: the used tokens leave the user's hold
    for the DELIVERED account, the unused ones return to available, and an SLA ``credit``
    (quote units, may be 0) goes from escrow to the user's available."""
    return _one(
        _delivery_settle_entry(user.pk, tokens, currency, credit, reference, idempotency_key)
    )


class DeliverySettle(NamedTuple):
    """The arguments of ``delivery_settle``, for ``delivery_settle_many``."""

    user_id: int
    tokens: list[DeliveredTokens]
    currency: str
    credit: int
    reference: str
    idempotency_key: str


def delivery_settle_many(*, settles: list[DeliverySettle]) -> list[int]:
    """Several reservations settled in one journal post: one transaction each, every balance
    moved once per post, so the DELIVERED (and ESCROW) system rows are locked and updated once
    for a whole group of concurrent settles, not once per request. All or none. Must run
    inside the caller's transaction (the reservations and lots it settles are locked there)."""
    entries = [_delivery_settle_entry(*settle) for settle in settles]
    return journal_post_ids(entries) if entries else []


def delivery_release(
    *, user: Any, tokens: dict[str, int], reference: str, idempotency_key: str
) -> LedgerTransaction:
    """A reservation given back whole (a failed attempt costs nothing): held → available."""
    legs = [
        leg
        for asset, amount in sorted(tokens.items())
        if amount
        for leg in _move(user.pk, _asset(asset), HELD, AVAILABLE, _positive(amount, "tokens"))
    ]
    return _one(
        _entry(kind=TransactionKind.RELEASE, reference=reference,
               idempotency_key=idempotency_key, legs=legs)
    )  # fmt: skip


def lot_expire_retire(
    *,
    user: Any,
    market: Market,
    tokens_by_provider: dict[int, int],
    reference: str,
    idempotency_key: str,
    refund_units: int = 0,
) -> LedgerTransaction:
    """Unconsumed tokens of expired lots leave the holder's available (→ the issuance account
    of each lot's provider: the capacity they stood for is gone); their escrow goes to the
    provider (take-or-pay), except ``refund_units`` credited back to the holder from escrow
    (the provider's endpoint was down: the capacity could not be consumed)."""
    if not tokens_by_provider:
        raise ValidationFailed("tokens_by_provider names no provider.")
    legs = [
        leg
        for provider_id, tokens in sorted(tokens_by_provider.items())
        for leg in _between(
            (user_account(user.pk, market.symbol), AVAILABLE),
            (issuance_account(provider_id, market.symbol), AVAILABLE),
            _positive(tokens, "tokens"),
        )
    ]
    if refund_units:
        currency = market.quote_currency
        legs += _between(
            (system_account(SystemAccount.ESCROW, _currency(currency)), AVAILABLE),
            (user_account(user.pk, currency), AVAILABLE),
            _positive(refund_units, "refund"),
        )
    return _one(
        _entry(kind=TransactionKind.LOT_EXPIRE, reference=reference,
               idempotency_key=idempotency_key, legs=legs)
    )  # fmt: skip
