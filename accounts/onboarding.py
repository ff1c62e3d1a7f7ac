"""Provider onboarding: becoming a provider is an application that staff decide.

A user applies (profile page, or a provider role chosen at signup); the profile keeps its buyer
role until staff approve in the admin, and only an approved provider may list capacity
(``provider_require_approved``: 403 ``provider_not_approved``). An operator's
``manage.py create_user --role provider`` and the demo data are granted at once
(``provider_grant``), with the reason recorded. Rejecting an approved application takes the
provider role away again (the listings already made run to their end).

Invariant (kept here, under a lock on the profile row): the profile's role is a provider role
exactly when the user's newest application is approved.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy

from accounts.models import (
    PROVIDER_ROLES,
    ApplicationStatus,
    Profile,
    ProviderApplication,
    Role,
    User,
)
from exchange.errors import Conflict, Forbidden, NotFound, ValidationFailed

logger = logging.getLogger(__name__)

MESSAGE_MAX = 2000


class ProviderNotApproved(Forbidden):
    code = "provider_not_approved"


def provider_application_current(*, user: User) -> ProviderApplication | None:
    """The user's newest application (its provider status), or None."""
    return ProviderApplication.objects.filter(user=user).order_by("-id").first()


def provider_is_approved(*, user: User) -> bool:
    current = provider_application_current(user=user)
    return current is not None and current.status == ApplicationStatus.APPROVED


def provider_require_approved(*, user: User) -> None:
    """Refuse (403 ``provider_not_approved``) unless the user is an approved provider."""
    current = provider_application_current(user=user)
    profile = Profile.objects.filter(user=user).first()
    if current is not None and current.status == ApplicationStatus.APPROVED:
        if profile is not None and profile.is_provider:
            return
        raise ProviderNotApproved(
            gettext_lazy("Your account is approved as a provider, but its role is buyer now.")
        )
    if current is not None and current.status == ApplicationStatus.PENDING:
        raise ProviderNotApproved(gettext_lazy("Your provider application is waiting for review."))
    raise ProviderNotApproved(
        gettext_lazy("Only approved providers can list capacity: apply on your profile page.")
    )


def _role(role: str) -> str:
    if role not in PROVIDER_ROLES:
        raise ValidationFailed(
            gettext_lazy("A provider application asks for the role provider or both."),
            details={"role": role},
        )
    return role


def _profile_locked(user: User) -> Profile:
    Profile.objects.get_or_create(user=user)
    return Profile.objects.select_for_update().get(user=user)


def provider_apply(
    *, user: User, role: str = Role.PROVIDER, message: str = ""
) -> ProviderApplication:
    """Apply for a provider role. An approved provider switches role at once; a pending
    application is updated (one pending per user); after a rejection a new one is filed."""
    role = _role(role)
    message = (message or "").strip()
    if len(message) > MESSAGE_MAX:
        raise ValidationFailed(gettext_lazy("The message is too long (at most 2000 characters)."))
    with transaction.atomic():
        profile = _profile_locked(user)
        current = provider_application_current(user=user)
        if current is not None and current.status == ApplicationStatus.APPROVED:
            profile.role = role
            profile.save(update_fields=["role"])
            return current
        if current is not None and current.status == ApplicationStatus.PENDING:
            current.role = role
            current.message = message or current.message
            current.save(update_fields=["role", "message"])
            return current
        application = ProviderApplication.objects.create(user=user, role=role, message=message)
    logger.info("provider application %s filed by user %s", application.id, user.pk)
    return application


def provider_grant(*, user: User, role: str, reason: str) -> ProviderApplication:
    """Make ``user`` a provider at once: an operator's command or the demo data (no staff
    review). Idempotent: an approved user only gets the role."""
    role = _role(role)
    with transaction.atomic():
        profile = _profile_locked(user)
        current = provider_application_current(user=user)
        if current is None or current.status != ApplicationStatus.APPROVED:
            if current is not None and current.status == ApplicationStatus.PENDING:
                current.delete()  # superseded by the grant
            current = ProviderApplication.objects.create(
                user=user,
                role=role,
                status=ApplicationStatus.APPROVED,
                decided_at=timezone.now(),
                reason=reason,
            )
        profile.role = role
        profile.save(update_fields=["role"])
    return current


def provider_application_decide(
    *, application_id: int, staff_user: User, approve: bool, reason: str
) -> ProviderApplication:
    """Staff approve a pending application (the role asked for is given) or reject a pending
    or approved one (an approved provider goes back to buyer). Only the user's newest
    application can be decided."""
    if not (staff_user.is_active and staff_user.is_staff):
        raise Forbidden(gettext_lazy("Only staff decide provider applications."))
    reason = (reason or "").strip()
    if len(reason) > MESSAGE_MAX:
        raise ValidationFailed(gettext_lazy("The reason is too long (at most 2000 characters)."))
    with transaction.atomic():
        application = ProviderApplication.objects.filter(id=application_id).first()
        if application is None:
            raise NotFound(gettext_lazy("No such provider application."))
        profile = _profile_locked(application.user)
        application = ProviderApplication.objects.select_for_update().get(id=application_id)
        if provider_application_current(user=application.user) != application:
            raise Conflict(gettext_lazy("A newer application of this user exists."))
        allowed = (
            (ApplicationStatus.PENDING,)
            if approve
            else (ApplicationStatus.PENDING, ApplicationStatus.APPROVED)
        )
        if application.status not in allowed:
            raise Conflict(
                gettext_lazy("This application was already decided."),
                details={"status": application.status},
            )
        application.status = ApplicationStatus.APPROVED if approve else ApplicationStatus.REJECTED
        application.decided_at = timezone.now()
        application.decided_by = staff_user
        application.reason = reason
        application.save(update_fields=["status", "decided_at", "decided_by", "reason"])
        profile.role = application.role if approve else Role.BUYER
        profile.save(update_fields=["role"])
    logger.info(
        "provider application %s %s by staff %s",
        application.id,
        application.status,
        staff_user.pk,
    )
    return application
