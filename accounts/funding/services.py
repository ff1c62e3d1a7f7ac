"""Funding writes: deposits through Stripe Checkout, webhook events, Connect accounts, payouts.

Money moves only through ``exchange.ledger.services``; every ledger transaction here has an
idempotency key derived from our own row (deposit or withdrawal id), so a replay of any step
finds the first transaction. Stripe is called only outside database transactions, through
``stripe_gateway``, with an Idempotency-Key derived from our row.

Exactly once: a webhook event is stored once (unique Stripe event id) and processed by id in a
task that locks the event row, then the deposit row; a deposit is credited once whatever the
number of events or deliveries (its status under that lock, and the ledger key
``stripe:deposit:<id>:credit``).

Refunds and disputes (README "Funding (Stripe)"): the deposit records what Stripe took back —
``refunded_amount`` (the charge's cumulative ``amount_refunded``, so only the largest one seen
counts) and ``disputed_amount`` (while a dispute is open or lost; zero once won; a closed
dispute wins over a late ``created``). Once the deposit is credited, the ledger takes
``min(amount, refunded + disputed)`` back from the user's available balance to Stripe
clearing; what the user has already spent is a shortfall, logged at ERROR for staff, and never
a negative balance. The outcome depends only on the set of events, not their order.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from accounts.funding import stripe_gateway
from accounts.funding.models import (
    ConnectedAccount,
    Deposit,
    DepositStatus,
    StripeEvent,
    StripeEventStatus,
    Withdrawal,
    WithdrawalStatus,
)
from accounts.funding.stripe_gateway import StripeDefiniteError, StripeGatewayError
from accounts.models import Profile
from exchange.errors import (
    Conflict,
    ExchangeError,
    Forbidden,
    FundingDisabled,
    InsufficientFunds,
    PaymentProviderError,
    PayoutAccountNotReady,
    ValidationFailed,
    WithdrawalLimitExceeded,
)
from exchange.ledger import services as ledger
from exchange.ledger.selectors import balance_get
from exchange.ledger.units import amount_display, amount_parse, is_currency

logger = logging.getLogger(__name__)

# Event types we act on; every other type is acknowledged and ignored by the webhook.
HANDLED_EVENT_TYPES = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
        "charge.refunded",
        "charge.dispute.created",
        "charge.dispute.closed",
        "account.updated",
    }
)


class EventMismatch(ExchangeError):
    """A signed event that does not match our records (amount, currency, session)."""

    code = "stripe_event_mismatch"


class _Waiting(Exception):
    """The event is about a payment we cannot place yet; it is processed again later."""


def _checkpoint(name: str) -> None:
    """A named point of the payout (before_call, after_call, after_commit).

    Does nothing; the worker-death tests replace it to kill the process exactly there.
    """


def funding_require_enabled() -> None:
    if not stripe_gateway.is_enabled():
        raise FundingDisabled(
            "Funding through Stripe is off on this exchange; staff fund accounts with "
            "`manage.py ledger_adjust`."
        )


# What users read of a payment provider's failure (API errors, failure_reason): stable words of
# ours. Stripe's own text (library messages, hostnames, request ids) goes to the log only.
CHECKOUT_FAILED = "the payment could not be started"
TRANSFER_REFUSED = "the payment provider refused the transfer"


def _provider_failure_log(what: str, error: StripeGatewayError) -> None:
    logger.warning(
        "Stripe failed (%s): %s: %s (code %s)",
        what,
        type(error).__name__,
        error.message,
        error.code or "-",
        exc_info=error.__cause__,
    )


def _profile(user: Any) -> Profile:
    profile, _created = Profile.objects.get_or_create(user=user)
    return profile


def _limit(name: str, currency: str) -> int:
    return amount_parse(currency, str(getattr(settings, name)))


def funding_amount_parse(*, currency: str, amount: Any) -> int:
    """Currency units (string or Decimal) → ledger units, whole Stripe minor units only."""
    if not isinstance(currency, str) or not is_currency(currency):
        raise ValidationFailed(f"Unknown currency {currency!r}.", details={"currency": currency})
    if isinstance(amount, float):
        raise ValidationFailed("amount must be a decimal string, not a float.")
    units = amount_parse(currency, str(amount))
    stripe_gateway.to_stripe_amount(currency, units)
    if units <= 0:
        raise ValidationFailed("amount must be positive.", details={"amount": str(amount)})
    return units


def _within(*, currency: str, units: int, minimum: str, maximum: str, what: str) -> None:
    low, high = _limit(minimum, currency), _limit(maximum, currency)
    if not low <= units <= high:
        raise ValidationFailed(
            f"A {what} must be between {amount_display(currency, low)} and "
            f"{amount_display(currency, high)} {currency}.",
            details={
                "minimum": amount_display(currency, low),
                "maximum": amount_display(currency, high),
            },
        )


# --- deposits -----------------------------------------------------------------------------------
def _request_replayed(
    model: Any, *, user: Any, client_request_id: str | None, currency: str, units: int
) -> Any:
    """The row an earlier request with this ``client_request_id`` made, marked ``replayed``;
    None for a new key. The same key with another body is a conflict."""
    if client_request_id is None:
        return None
    existing = model.objects.filter(user=user, client_request_id=client_request_id).first()
    if existing is None:
        return None
    if (existing.currency, existing.amount) != (currency, units):
        raise Conflict(
            f"client_request_id {client_request_id!r} was used for a different request.",
            details={"id": existing.pk},
        )
    existing.replayed = True
    return existing


def deposit_create(
    *,
    user: Any,
    currency: str,
    amount: Any,
    success_url: str,
    cancel_url: str,
    client_request_id: str | None = None,
) -> Deposit:
    """Record a pending deposit, then open a Stripe Checkout Session for it (fires at once).

    ``success_url`` and ``cancel_url`` get ``?deposit=<id>`` appended. Re-sending the same
    ``client_request_id`` returns the first deposit (``replayed`` set) and creates nothing.
    """
    funding_require_enabled()
    if not _profile(user).is_buyer:
        raise Forbidden("Only buyers deposit money.")
    units = funding_amount_parse(currency=currency, amount=amount)
    _within(
        currency=currency,
        units=units,
        minimum="FUNDING_DEPOSIT_MIN",
        maximum="FUNDING_DEPOSIT_MAX",
        what="deposit",
    )
    replayed = _request_replayed(
        Deposit, user=user, client_request_id=client_request_id, currency=currency, units=units
    )
    if replayed is not None:
        return replayed
    try:
        with transaction.atomic(durable=True):
            deposit = Deposit.objects.create(
                user=user, currency=currency, amount=units, client_request_id=client_request_id
            )
    except IntegrityError:
        # a concurrent request with the same key won
        replayed = _request_replayed(
            Deposit, user=user, client_request_id=client_request_id, currency=currency, units=units
        )
        if replayed is None:
            raise
        return replayed
    suffix = f"{'&' if '?' in success_url else '?'}deposit={deposit.pk}"
    try:
        session = stripe_gateway.checkout_session_create(
            deposit_id=deposit.pk,
            user_id=user.pk,
            email=user.email,
            currency=currency,
            amount=units,
            success_url=success_url + suffix,
            cancel_url=cancel_url + suffix,
            idempotency_key=f"deposit-{deposit.pk}-checkout",
        )
    except StripeGatewayError as error:
        _provider_failure_log(f"checkout of deposit {deposit.pk}", error)
        Deposit.objects.filter(pk=deposit.pk, status=DepositStatus.PENDING).update(
            status=DepositStatus.FAILED, failure_reason=CHECKOUT_FAILED
        )
        raise PaymentProviderError(
            "The payment provider could not start the payment; nothing was charged. "
            "Please try again later."
        ) from error
    Deposit.objects.filter(pk=deposit.pk).update(
        stripe_session_id=session.id, checkout_url=session.url
    )
    deposit.stripe_session_id, deposit.checkout_url = session.id, session.url
    return deposit


# --- webhook events -----------------------------------------------------------------------------
def _payment_intent_of(event_type: str, obj: dict[str, Any]) -> str:
    if event_type.startswith("charge."):
        value = obj.get("payment_intent")
        return value if isinstance(value, str) else ""
    return ""


def stripe_event_record(*, event: dict[str, Any]) -> tuple[StripeEvent, bool]:
    """Store a verified event once (by its Stripe id); enqueue its processing after commit.

    A redelivery of an event not processed yet enqueues it again (the task is idempotent).
    Returns the row and whether it was new.
    """
    from accounts.funding.tasks import stripe_event_process_task

    obj = event["data"]["object"]
    with transaction.atomic(durable=True):
        row, created = StripeEvent.objects.get_or_create(
            stripe_id=event["id"],
            defaults={
                "type": event["type"],
                "payload": event,
                "payment_intent": _payment_intent_of(event["type"], obj),
            },
        )
        if row.status == StripeEventStatus.RECEIVED:
            row_id = row.pk
            transaction.on_commit(lambda: stripe_event_process_task.delay(row_id))
    return row, created


def stripe_event_process(*, event_id: int) -> str:
    """Apply one stored event (locks the event row, then the deposit row). Returns its status."""
    with transaction.atomic(durable=True):
        event = StripeEvent.objects.select_for_update().get(pk=event_id)
        if event.status != StripeEventStatus.RECEIVED:
            return event.status
        event.attempts += 1
        obj = event.payload["data"]["object"]
        try:
            with transaction.atomic():
                note = _HANDLERS[event.type](obj)
        except _Waiting as waiting:
            event.note = str(waiting)
        except ExchangeError as error:
            logger.error("Stripe event %s (%s) failed: %s", event.stripe_id, event.type, error)
            event.status, event.note = StripeEventStatus.FAILED, error.message
            event.processed_at = timezone.now()
        else:
            event.status, event.note = StripeEventStatus.PROCESSED, note
            event.processed_at = timezone.now()
        event.save(update_fields=["status", "note", "attempts", "processed_at"])
        return event.status


def _deposit_locked(deposit_id: Any) -> Deposit | None:
    try:
        pk = int(deposit_id)
    except (TypeError, ValueError):
        return None
    return Deposit.objects.select_for_update().filter(pk=pk).first()


def _deposit_for_session(session: dict[str, Any]) -> Deposit:
    metadata = session.get("metadata") or {}
    deposit = _deposit_locked(metadata.get("deposit_id") or session.get("client_reference_id"))
    if deposit is None:
        raise EventMismatch(f"Checkout Session {session.get('id')} names no deposit of ours.")
    if deposit.stripe_session_id and deposit.stripe_session_id != session.get("id"):
        raise EventMismatch(
            f"Checkout Session {session.get('id')} is not deposit {deposit.pk}'s session."
        )
    return deposit


def _deposit_for_payment(payment_intent: str, metadata: dict[str, Any]) -> Deposit:
    deposit = None
    if payment_intent:
        deposit = (
            Deposit.objects.select_for_update().filter(stripe_payment_intent=payment_intent).first()
        )
    if deposit is None and metadata.get("deposit_id"):
        deposit = _deposit_locked(metadata["deposit_id"])
    if deposit is None:
        raise _Waiting(f"waiting for the deposit of payment {payment_intent or '?'}")
    return deposit


def _session_paid(session: dict[str, Any]) -> str:
    if session.get("payment_status") not in ("paid", "no_payment_required"):
        deposit = _deposit_for_session(session)
        return f"deposit {deposit.pk}: awaiting payment ({session.get('payment_status')})"
    deposit = _deposit_for_session(session)
    return _deposit_credit(deposit, session)


def _deposit_credit(deposit: Deposit, session: dict[str, Any]) -> str:
    """Expects the deposit row locked."""
    payment_intent = session.get("payment_intent") or ""
    if deposit.status == DepositStatus.CREDITED:
        return f"deposit {deposit.pk} already credited"
    currency = str(session.get("currency", "")).upper()
    expected = stripe_gateway.to_stripe_amount(deposit.currency, deposit.amount)
    if currency != deposit.currency or session.get("amount_total") != expected:
        raise EventMismatch(
            f"Checkout Session {session.get('id')} paid {session.get('amount_total')} {currency}, "
            f"deposit {deposit.pk} expects {expected} {deposit.currency}."
        )
    credit = ledger.deposit_credit(
        user=deposit.user,
        currency=deposit.currency,
        amount=deposit.amount,
        reference=f"deposit:{deposit.pk}",
        idempotency_key=f"stripe:deposit:{deposit.pk}:credit",
    )
    deposit.status, deposit.credit_transaction = DepositStatus.CREDITED, credit
    deposit.credited_at, deposit.failure_reason = timezone.now(), ""
    deposit.stripe_session_id = deposit.stripe_session_id or session.get("id")
    if isinstance(payment_intent, str) and payment_intent:
        deposit.stripe_payment_intent = payment_intent
        transaction.on_commit(lambda: stripe_events_retry(payment_intent=payment_intent))
    deposit.save()
    _deposit_reversal_sync(deposit)
    return f"deposit {deposit.pk} credited (transaction {credit.pk})"


def _session_failed(session: dict[str, Any]) -> str:
    deposit = _deposit_for_session(session)
    if deposit.status != DepositStatus.PENDING:
        return f"deposit {deposit.pk} is {deposit.status}; unchanged"
    deposit.status = DepositStatus.FAILED
    deposit.failure_reason = (
        "checkout expired" if session.get("status") == "expired" else "payment failed"
    )
    deposit.save(update_fields=["status", "failure_reason"])
    return f"deposit {deposit.pk} failed"


def _charge_refunded(charge: dict[str, Any]) -> str:
    deposit = _deposit_for_payment(charge.get("payment_intent") or "", charge.get("metadata") or {})
    refunded = stripe_gateway.from_stripe_amount(
        deposit.currency, int(charge.get("amount_refunded") or 0)
    )
    deposit.refunded_amount = max(deposit.refunded_amount, refunded)
    deposit.save(update_fields=["refunded_amount"])
    return _deposit_reversal_sync(deposit)


def _dispute(dispute: dict[str, Any]) -> str:
    deposit = _deposit_for_payment(
        dispute.get("payment_intent") or "", dispute.get("metadata") or {}
    )
    amount = stripe_gateway.from_stripe_amount(deposit.currency, int(dispute.get("amount") or 0))
    status = dispute.get("status")
    if status in ("won", "lost", "warning_closed"):
        deposit.dispute_status = "won" if status in ("won", "warning_closed") else "lost"
        deposit.disputed_amount = amount if status == "lost" else 0
    elif not deposit.dispute_status:
        deposit.dispute_status, deposit.disputed_amount = "open", amount
    deposit.save(update_fields=["dispute_status", "disputed_amount"])
    return _deposit_reversal_sync(deposit)


def _deposit_reversal_sync(deposit: Deposit) -> str:
    """Bring the ledger to ``reversal_due`` for a credited deposit (row locked by the caller)."""
    if deposit.status != DepositStatus.CREDITED:
        return f"deposit {deposit.pk}: reversal recorded, applied once credited"
    change = deposit.reversal_due - deposit.reversed_amount
    if change > 0:
        change = min(change, balance_get(user=deposit.user, asset=deposit.currency).available)
    if change:
        number = deposit.reversal_count + 1
        try:
            ledger.deposit_reverse(
                user=deposit.user,
                currency=deposit.currency,
                amount=change,
                reference=f"deposit:{deposit.pk}:reversal",
                idempotency_key=f"stripe:deposit:{deposit.pk}:reversal:{number}",
            )
        except InsufficientFunds:
            change = 0  # spent concurrently: the shortfall below says so
        else:
            deposit.reversed_amount += change
            deposit.reversal_count += 1
            deposit.save(update_fields=["reversed_amount", "reversal_count"])
    if deposit.reversal_shortfall:
        logger.error(
            "Deposit %s: %s %s refunded or disputed at Stripe could not be taken back "
            "(already spent); staff must settle it.",
            deposit.pk,
            amount_display(deposit.currency, deposit.reversal_shortfall),
            deposit.currency,
        )
    return f"deposit {deposit.pk}: reversed {deposit.reversed_amount} of {deposit.reversal_due}"


def _account_updated(account: dict[str, Any]) -> str:
    updated = ConnectedAccount.objects.filter(stripe_account_id=account.get("id")).update(
        details_submitted=bool(account.get("details_submitted")),
        payouts_enabled=bool(account.get("payouts_enabled")),
        updated_at=timezone.now(),
    )
    return f"{updated} connected account(s) updated"


_HANDLERS = {
    "checkout.session.completed": _session_paid,
    "checkout.session.async_payment_succeeded": _session_paid,
    "checkout.session.async_payment_failed": _session_failed,
    "checkout.session.expired": _session_failed,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute,
    "charge.dispute.closed": _dispute,
    "account.updated": _account_updated,
}
assert frozenset(_HANDLERS) == HANDLED_EVENT_TYPES


def stripe_events_retry(*, payment_intent: str | None = None, older_than: timedelta | None = None):
    """Enqueue again the events still ``received`` (for one payment, or stuck for a while)."""
    from accounts.funding.tasks import stripe_event_process_task

    events = StripeEvent.objects.filter(status=StripeEventStatus.RECEIVED)
    if payment_intent is not None:
        events = events.filter(payment_intent=payment_intent)
    if older_than is not None:
        events = events.filter(received_at__lt=timezone.now() - older_than)
    ids = list(events.order_by("id").values_list("id", flat=True)[:1000])
    for event_id in ids:
        stripe_event_process_task.delay(event_id)
    return len(ids)


# --- Connect ------------------------------------------------------------------------------------
def _require_provider(user: Any) -> None:
    if not _profile(user).is_provider:
        raise Forbidden("Only providers withdraw money.")


def connect_onboarding_link(*, user: Any, refresh_url: str, return_url: str) -> str:
    """The provider's Express onboarding link (creates their connected account on first use)."""
    funding_require_enabled()
    _require_provider(user)
    account = ConnectedAccount.objects.filter(user=user).first()
    try:
        if account is None:
            state = stripe_gateway.connected_account_create(
                user_id=user.pk,
                email=user.email,
                idempotency_key=f"user-{user.pk}-connect-account",
            )
            account, _created = ConnectedAccount.objects.get_or_create(
                user=user,
                defaults={
                    "stripe_account_id": state.id,
                    "details_submitted": state.details_submitted,
                    "payouts_enabled": state.payouts_enabled,
                },
            )
        return stripe_gateway.account_link_create(
            account_id=account.stripe_account_id,
            refresh_url=refresh_url,
            return_url=return_url,
            idempotency_key=f"user-{user.pk}-account-link-{uuid.uuid4().hex}",
        )
    except StripeGatewayError as error:
        _provider_failure_log(f"payout onboarding of user {user.pk}", error)
        raise PaymentProviderError(
            "Payout onboarding is unavailable right now; please try again later."
        ) from error


def connected_account_refresh(*, user: Any) -> ConnectedAccount | None:
    """Read the provider's account state back from Stripe (after onboarding returns)."""
    funding_require_enabled()
    account = ConnectedAccount.objects.filter(user=user).first()
    if account is None:
        return None
    try:
        state = stripe_gateway.connected_account_retrieve(account_id=account.stripe_account_id)
    except StripeGatewayError as error:
        _provider_failure_log(f"payout account of user {user.pk}", error)
        raise PaymentProviderError(
            "The payment provider is unavailable right now; please try again later."
        ) from error
    account.details_submitted, account.payouts_enabled = (
        state.details_submitted,
        state.payouts_enabled,
    )
    account.save(update_fields=["details_submitted", "payouts_enabled", "updated_at"])
    return account


# --- withdrawals --------------------------------------------------------------------------------
def _day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def withdrawal_request(
    *, user: Any, currency: str, amount: Any, client_request_id: str | None = None
) -> Withdrawal:
    """Hold the amount at once and enqueue the transfer (after commit).

    Re-sending the same ``client_request_id`` returns the first withdrawal (``replayed`` set):
    no second hold, no second transfer.

    Per-withdrawal and per-UTC-day limits are settings; the provider's connected-account row
    is locked so that concurrent requests cannot pass the daily limit together.
    """
    funding_require_enabled()
    _require_provider(user)
    units = funding_amount_parse(currency=currency, amount=amount)
    _within(
        currency=currency,
        units=units,
        minimum="FUNDING_WITHDRAWAL_MIN",
        maximum="FUNDING_WITHDRAWAL_MAX",
        what="withdrawal",
    )
    from accounts.funding.tasks import withdrawal_payout_task

    with transaction.atomic(durable=True):
        account = ConnectedAccount.objects.select_for_update().filter(user=user).first()
        # After the lock: concurrent requests of this provider are serialised here.
        replayed = _request_replayed(
            Withdrawal, user=user, client_request_id=client_request_id, currency=currency,
            units=units,
        )  # fmt: skip
        if replayed is not None:
            return replayed
        if account is None or not account.payouts_enabled:
            raise PayoutAccountNotReady("Connect a Stripe account that can receive payouts first.")
        today = (
            Withdrawal.objects.filter(
                user=user, currency=currency, created_at__gte=_day_start(timezone.now())
            )
            .exclude(status=WithdrawalStatus.RELEASED)
            .aggregate(total=Sum("amount"))["total"]
            or 0
        )
        daily = _limit("FUNDING_WITHDRAWAL_DAILY_MAX", currency)
        if today + units > daily:
            raise WithdrawalLimitExceeded(
                f"Withdrawals are limited to {amount_display(currency, daily)} {currency} a day; "
                f"{amount_display(currency, max(daily - today, 0))} {currency} remain today.",
                details={"remaining_today": amount_display(currency, max(daily - today, 0))},
            )
        withdrawal = Withdrawal.objects.create(
            user=user,
            connected_account=account,
            currency=currency,
            amount=units,
            client_request_id=client_request_id,
        )
        withdrawal.hold_transaction = ledger.withdrawal_hold(
            user=user,
            currency=currency,
            amount=units,
            reference=f"withdrawal:{withdrawal.pk}",
            idempotency_key=f"withdrawal:{withdrawal.pk}:hold",
        )
        withdrawal.save(update_fields=["hold_transaction"])
        withdrawal_id = withdrawal.pk
        transaction.on_commit(lambda: withdrawal_payout_task.delay(withdrawal_id))
    return withdrawal


def withdrawal_payout(*, withdrawal_id: int) -> str:
    """Make the withdrawal's one Stripe transfer and finish it (fires at once; retry-safe).

    Raises ``StripeAmbiguousError`` when Stripe gave no definite answer: the caller retries
    with the same Idempotency-Key, so Stripe answers with the first transfer, never a second.
    """
    withdrawal = Withdrawal.objects.select_related("connected_account").get(pk=withdrawal_id)
    if withdrawal.status != WithdrawalStatus.PROCESSING:
        return withdrawal.status
    Withdrawal.objects.filter(pk=withdrawal_id).update(attempts=F("attempts") + 1)
    _checkpoint("before_call")
    try:
        transfer = stripe_gateway.transfer_create(
            withdrawal_id=withdrawal.pk,
            destination=withdrawal.connected_account.stripe_account_id,
            currency=withdrawal.currency,
            amount=withdrawal.amount,
            idempotency_key=withdrawal.transfer_idempotency_key,
        )
    except StripeDefiniteError as error:
        _checkpoint("after_call")
        status = _withdrawal_finish(withdrawal_id, transfer_id=None, reason=error.message)
    else:
        _checkpoint("after_call")
        status = _withdrawal_finish(withdrawal_id, transfer_id=transfer.id, reason="")
    _checkpoint("after_commit")
    return status


def _withdrawal_finish(withdrawal_id: int, *, transfer_id: str | None, reason: str) -> str:
    with transaction.atomic(durable=True):
        withdrawal = Withdrawal.objects.select_for_update().get(pk=withdrawal_id)
        if withdrawal.status != WithdrawalStatus.PROCESSING:
            return withdrawal.status
        arguments = {
            "user": withdrawal.user,
            "currency": withdrawal.currency,
            "amount": withdrawal.amount,
            "reference": f"withdrawal:{withdrawal.pk}",
        }
        if transfer_id is not None:
            withdrawal.final_transaction = ledger.withdrawal_complete(
                **arguments, idempotency_key=f"withdrawal:{withdrawal.pk}:complete"
            )
            withdrawal.status, withdrawal.stripe_transfer_id = WithdrawalStatus.PAID, transfer_id
        else:
            withdrawal.final_transaction = ledger.withdrawal_fail(
                **arguments, idempotency_key=f"withdrawal:{withdrawal.pk}:release"
            )
            withdrawal.status = WithdrawalStatus.RELEASED
            # the user reads failure_reason (API, payouts page): our words; Stripe's in the log
            withdrawal.failure_reason = TRANSFER_REFUSED
            logger.warning("Withdrawal %s refused by Stripe: %s", withdrawal.pk, reason)
        withdrawal.finished_at = timezone.now()
        withdrawal.save()
        return withdrawal.status


def withdrawals_retry_stuck(*, older_than: timedelta) -> int:
    """Enqueue again the payouts still processing after ``older_than`` (a lost task)."""
    from accounts.funding.tasks import withdrawal_payout_task

    ids = list(
        Withdrawal.objects.filter(
            status=WithdrawalStatus.PROCESSING, created_at__lt=timezone.now() - older_than
        ).values_list("id", flat=True)[:1000]
    )
    for withdrawal_id in ids:
        withdrawal_payout_task.delay(withdrawal_id)
    return len(ids)
