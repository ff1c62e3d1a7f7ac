"""The account audit log: key creation and revocation and every withdrawal request, with the
address and user agent they came from. Each user reads their own (``GET /api/v1/audit-log`` and
the API-keys page)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import ApiKey, AuditAction, AuditEvent, User

USER_AGENT_MAX = 300


@dataclass(frozen=True)
class Actor:
    """Who asked, as far as the request tells: the key used (None: a session) and its origin."""

    api_key: ApiKey | None = None
    ip: str | None = None
    user_agent: str = ""


def actor_from_request(request: HttpRequest | Any) -> Actor:
    """The actor of a Django or DRF request. The address is the peer's as the ASGI server
    reports it (behind a proxy, the server's ``--proxy-headers`` / ``forwarded-allow-ips``
    decide which client address that is, not a header anyone can send)."""
    auth = getattr(request, "auth", None)
    address = request.META.get("REMOTE_ADDR") or None
    try:
        ip = str(ip_address(address)) if address else None
    except ValueError:  # a unix socket or a test client's placeholder
        ip = None
    agent = request.META.get("HTTP_USER_AGENT", "")
    return Actor(
        api_key=auth if isinstance(auth, ApiKey) else None,
        ip=ip,
        user_agent=agent[:USER_AGENT_MAX],
    )


def audit_record(
    *, user: User, action: str, actor: Actor | None = None, **details: Any
) -> AuditEvent:
    actor = actor or Actor()
    return AuditEvent.objects.create(
        user=user,
        action=action,
        api_key=actor.api_key,
        ip=actor.ip,
        user_agent=actor.user_agent,
        details=details,
    )


def audit_withdrawal(withdrawal: Any, *, actor: Actor, replayed: bool = False) -> AuditEvent:
    """A withdrawal request (``accounts.funding``), each use of the ``withdraw`` scope."""
    from exchange.ledger.units import amount_display

    return audit_record(
        user=withdrawal.user,
        action=AuditAction.WITHDRAWAL_REQUESTED,
        actor=actor,
        withdrawal_id=withdrawal.id,
        currency=withdrawal.currency,
        amount=amount_display(withdrawal.currency, withdrawal.amount),
        **({"replayed": True} if replayed else {}),
    )


def audit_list(*, user: User) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(user=user).select_related("api_key").order_by("-id")
