"""Account writes: users, profiles, API keys."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import (
    GUARDED_SCOPES,
    MAX_ACTIVE_API_KEYS,
    PROVIDER_ROLES,
    REGION_CODES,
    SCOPE_CODES,
    ApiKey,
    AuditAction,
    Profile,
    Role,
    User,
)
from accounts.onboarding import provider_apply, provider_grant
from exchange.db import unique_row
from exchange.errors import ApiKeyNotFound, Conflict, Forbidden, ValidationFailed
from exchange.times import time_text

logger = logging.getLogger(__name__)

KEY_PREFIX = "tx"


def api_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _parse_scopes(scopes: Iterable[str]) -> list[str]:
    wanted = {scope.strip() for scope in scopes if scope.strip()}
    unknown = wanted - set(SCOPE_CODES)
    if unknown:
        raise ValidationFailed(
            f"Unknown scope(s): {', '.join(sorted(unknown))}. Use {', '.join(SCOPE_CODES)}.",
            details={"scopes": sorted(unknown)},
        )
    if not wanted:
        raise ValidationFailed("An API key needs at least one scope.")
    return [scope for scope in SCOPE_CODES if scope in wanted]


def _parse_regions(regions: Iterable[str]) -> list[str]:
    wanted = sorted({region.strip() for region in regions if region.strip()})
    unknown = [region for region in wanted if region not in REGION_CODES]
    if unknown:
        raise ValidationFailed(f"Unknown region(s): {', '.join(unknown)}.")
    return wanted


@transaction.atomic
def user_create(
    *,
    email: str,
    password: str | None,
    role: str = Role.BUYER,
    display_name: str = "",
    regions: Iterable[str] = (),
    provider_grant_reason: str | None = None,
) -> User:
    """Create a user and its profile. A provider role is an application for staff to decide
    (the profile stays a buyer's meanwhile), unless ``provider_grant_reason`` says why it is
    granted at once (an operator's command, the demo data)."""
    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except DjangoValidationError as error:
        raise ValidationFailed("Enter a valid email address.") from error
    if role not in Role.values:
        raise ValidationFailed(f"Unknown role {role!r}: use buyer, provider or both.")
    if password is not None:
        try:
            validate_password(password, User(email=email))
        except DjangoValidationError as error:
            raise ValidationFailed(" ".join(error.messages)) from error
    if User.objects.filter(email=email).exists():
        raise Conflict("A user with this email already exists.")
    try:
        with transaction.atomic():
            user = User.objects.create_user(email=email, password=password)
    except IntegrityError as error:
        raise Conflict("A user with this email already exists.") from error
    Profile.objects.create(
        user=user, role=Role.BUYER, display_name=display_name, regions=_parse_regions(regions)
    )
    if role in PROVIDER_ROLES:
        if provider_grant_reason:
            provider_grant(user=user, role=role, reason=provider_grant_reason)
        else:
            provider_apply(user=user, role=role)
    return user


def profile_update(
    *,
    user: User,
    role: str | None = None,
    display_name: str | None = None,
    regions: Iterable[str] | None = None,
    color_up_red: bool | None = None,
) -> Profile:
    """Update the profile. A provider role is applied for (``provider_apply``: given at once
    only to an approved provider); the buyer role is taken at once."""
    if role is not None:
        if role not in Role.values:
            raise ValidationFailed(f"Unknown role {role!r}.")
        if role in PROVIDER_ROLES:
            provider_apply(user=user, role=role)
    profile, _ = Profile.objects.get_or_create(user=user)
    changed = []  # only these: the role is the onboarding's, which may decide meanwhile
    if role == Role.BUYER:
        profile.role = role
        changed.append("role")
    if display_name is not None:
        profile.display_name = display_name.strip()[:80]
        changed.append("display_name")
    if regions is not None:
        profile.regions = _parse_regions(regions)
        changed.append("regions")
    if color_up_red is not None:
        profile.color_up_red = color_up_red
        changed.append("color_up_red")
    if changed:
        profile.save(update_fields=changed)
    return profile


LIMIT_FIELDS = ("tokens_per_day", "tokens_per_month", "requests_per_minute", "tokens_per_minute")


def _parse_limits(limits: dict[str, Any]) -> dict[str, Any]:
    """A ``consume`` key's limits: positive integers or None, and an allow-list of model ids."""
    parsed: dict[str, Any] = {}
    for field in LIMIT_FIELDS:
        value = limits.get(field)
        whole = isinstance(value, int) and not isinstance(value, bool)
        if value is not None and (not whole or value < 1):
            raise ValidationFailed(f"{field} must be a positive whole number or empty.")
        parsed[field] = value
    models = limits.get("allowed_models") or []
    if isinstance(models, str) or not all(isinstance(m, str) for m in models):
        raise ValidationFailed("allowed_models must be a list of model ids.")
    parsed["allowed_models"] = sorted({m.strip().lower() for m in models if m.strip()})
    return parsed


class CreatedApiKey(NamedTuple):
    api_key: ApiKey
    secret: str  # the full key, shown once and never stored


def _active_keys(user: User) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(user=user, revoked_at__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    )


class TooManyApiKeys(Conflict):
    code = "too_many_api_keys"


@transaction.atomic
def api_key_create(
    *,
    user: User,
    name: str,
    scopes: Iterable[str],
    expires_at: datetime | None = None,
    creator_key: ApiKey | None = None,
    limits: dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> CreatedApiKey:
    """Create a key. ``creator_key`` is the API key asking, if any (None: a session or an
    operator): the new key has none of the scopes it lacks and does not outlive it; not asking
    for an expiry gives the creator's, asking for a later one is refused.
    ``limits``: ``LIMIT_FIELDS`` and ``allowed_models``, enforced by the gateway on ``consume``."""
    scope_list = _parse_scopes(scopes)
    parsed_limits = _parse_limits(limits or {})
    if creator_key is not None and not set(scope_list) <= set(creator_key.scopes):
        raise ValidationFailed("An API key cannot create a key with scopes it does not have.")
    name = (name or "").strip()
    if not name:
        raise ValidationFailed("Give the key a name.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed("The expiry must be in the future.")
    if creator_key is not None and creator_key.expires_at is not None:
        if expires_at is None:
            expires_at = creator_key.expires_at
        elif expires_at > creator_key.expires_at:
            raise ValidationFailed(
                "An API key cannot create a key that expires after it does "
                f"({time_text(creator_key.expires_at)}).",
                details={"max_expires_at": time_text(creator_key.expires_at)},
            )
    # The user's row is the lock that makes the count and the insert one step: two concurrent
    # requests cannot both create the 50th key.
    User.objects.select_for_update().filter(pk=user.pk).first()
    if _active_keys(user).count() >= MAX_ACTIVE_API_KEYS:
        raise TooManyApiKeys(
            f"A user can have at most {MAX_ACTIVE_API_KEYS} active API keys; "
            "revoke one you no longer use."
        )
    prefix = secrets.token_hex(6)
    secret = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        user=user,
        name=name[:80],
        prefix=prefix,
        hashed_key=api_key_hash(secret),
        scopes=scope_list,
        expires_at=expires_at,
        created_by_key=creator_key,
        **parsed_limits,
    )
    audit_record(
        user=user,
        action=AuditAction.KEY_CREATED,
        actor=actor,
        key_id=api_key.id,
        prefix=prefix,
        name=api_key.name,
        scopes=scope_list,
        expires_at=time_text(expires_at),
    )
    return CreatedApiKey(api_key=api_key, secret=secret)


@transaction.atomic
def api_key_revoke(
    *,
    user: User,
    key_id: int,
    revoker_scopes: Iterable[str] | None = None,
    actor: Actor | None = None,
) -> ApiKey:
    """Revoke a key and every key made from it (and from those). ``revoker_scopes``: those of
    the API key asking (None: a session, which may revoke any of its user's keys); revoking a
    key that holds ``trade`` or ``withdraw`` needs them too."""
    api_key = ApiKey.objects.select_for_update().filter(user=user, id=key_id).first()
    if api_key is None:
        raise ApiKeyNotFound("No such API key.", details={"key_id": key_id})
    if revoker_scopes is not None:
        missing = sorted((set(api_key.scopes) & set(GUARDED_SCOPES)) - set(revoker_scopes))
        if missing:
            raise Forbidden(
                f"Revoking a key with the {', '.join(map(repr, missing))} scope needs "
                "that scope too.",
                details={"missing_scopes": missing},
            )
    now = timezone.now()
    revoked: list[ApiKey] = []
    parents = [api_key]
    seen = {api_key.id}
    while parents:
        for key in parents:
            if key.revoked_at is None:
                key.revoked_at = now
                key.save(update_fields=["revoked_at"])
                revoked.append(key)
        children = list(
            ApiKey.objects.select_for_update()
            .filter(user=user, created_by_key__in=[key.id for key in parents])
            .exclude(id__in=seen)
        )
        seen.update(key.id for key in children)
        parents = children
    for key in revoked:
        audit_record(
            user=user,
            action=AuditAction.KEY_REVOKED,
            actor=actor,
            key_id=key.id,
            prefix=key.prefix,
            name=key.name,
            scopes=key.scopes,
            **({"with_parent": api_key.id} if key.id != api_key.id else {}),
        )
    if revoked:
        ids = [key.id for key in revoked]
        transaction.on_commit(lambda: credentials_ended(user_id=user.id, api_key_ids=ids))
    return api_key


def credentials_ended(
    *, user_id: int, api_key_ids: Iterable[int] = (), session_key: str | None = None
) -> None:
    """Tell the user's open websockets that keys were revoked or a session ended: the ones
    using them close their private subscription (4401). Best effort: with the channel layer
    unreachable, each connection's periodic re-check closes it instead."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from exchange.marketdata.publisher import user_group

    message = {
        "type": "user.credentials_ended",
        "api_key_ids": list(api_key_ids),
        "session_key": session_key,
    }
    try:
        async_to_sync(get_channel_layer().group_send)(user_group(user_id), message)
    except Exception:  # the layer is down: the heartbeat re-check is the backstop
        logger.warning("could not notify websockets of ended credentials", exc_info=True)


def session_ended(sender: Any, request: Any, user: User | None, **kwargs: Any) -> None:
    """On logout (``user_logged_out``, sent before the session is flushed): close the
    session's websockets' private channel."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if user is not None and session_key:
        credentials_ended(user_id=user.pk, session_key=session_key)


def api_key_authenticate(*, key: str) -> ApiKey | None:
    """The usable key matching ``key``, or None. Records last use at most once a minute."""
    parts = key.split("_")
    if len(parts) < 3 or parts[0] != KEY_PREFIX:
        return None
    api_key = unique_row(ApiKey.objects.select_related("user").filter(prefix=parts[1]))
    if api_key is None or not secrets.compare_digest(api_key.hashed_key, api_key_hash(key)):
        return None
    now = timezone.now()
    if not api_key.is_usable(now=now) or not api_key.user.is_active:
        return None
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60:
        ApiKey.objects.filter(id=api_key.id).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key
