"""Users (email login), their provider/buyer profile, and hashed API keys."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: object) -> User:
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(unique=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.email


class Role(models.TextChoices):
    BUYER = "buyer", _("Buyer")
    PROVIDER = "provider", _("Provider")
    BOTH = "both", _("Provider and buyer")


REGION_CHOICES = [
    ("cn-north", _("China North")),
    ("cn-east", _("China East")),
    ("cn-south", _("China South")),
    ("ap-southeast", _("Asia Pacific Southeast")),
    ("eu-central", _("Europe Central")),
    ("us-east", _("US East")),
    ("us-west", _("US West")),
]
REGION_CODES = frozenset(code for code, _ in REGION_CHOICES)


class Profile(models.Model):
    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="profile")
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.BUYER)
    display_name = models.CharField(
        max_length=80, blank=True, help_text="Shown to buyers on a provider's listings."
    )
    regions = models.JSONField(
        default=list, blank=True, help_text="Region codes a provider serves, e.g. ['cn-east']."
    )
    color_up_red = models.BooleanField(default=False, help_text="Red for up, green for down.")

    def __str__(self) -> str:
        return f"{self.user.email} ({self.role})"

    @property
    def is_provider(self) -> bool:
        return self.role in (Role.PROVIDER, Role.BOTH)

    @property
    def is_buyer(self) -> bool:
        return self.role in (Role.BUYER, Role.BOTH)


class ApplicationStatus(models.TextChoices):
    PENDING = "pending", _("Pending review")
    APPROVED = "approved", _("Approved")
    REJECTED = "rejected", _("Rejected")


PROVIDER_ROLES = (Role.PROVIDER.value, Role.BOTH.value)


class ProviderApplication(models.Model):
    """A user's application to become a provider (``accounts.onboarding``).

    Staff decide in the admin; an operator's ``create_user --role provider`` and the demo data
    are granted at once (``decided_by`` empty, the reason says which). The newest application
    of a user is its provider status: only an approved one lets the account list capacity.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="provider_applications")
    role = models.CharField(
        max_length=8,
        choices=[(Role.PROVIDER.value, Role.PROVIDER.label), (Role.BOTH.value, Role.BOTH.label)],
        help_text="The role asked for, given on approval.",
    )
    message = models.TextField(
        blank=True, max_length=2000, help_text="What the applicant says about its capacity."
    )
    status = models.CharField(
        max_length=8, choices=ApplicationStatus.choices, default=ApplicationStatus.PENDING
    )
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        User, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reason = models.TextField(blank=True, max_length=2000, help_text="Why, shown to the user.")

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user"],
                condition=Q(status="pending"),
                name="provider_application_one_pending",
            ),
            models.CheckConstraint(
                condition=Q(status="pending", decided_at__isnull=True)
                | (~Q(status="pending") & Q(decided_at__isnull=False)),
                name="provider_application_decided_when_not_pending",
            ),
            models.CheckConstraint(
                condition=Q(role__in=PROVIDER_ROLES), name="provider_application_role_valid"
            ),
        ]
        indexes = [models.Index(fields=["user", "-id"], name="provider_application_newest")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.role} {self.status}"


class Scope(models.TextChoices):
    READ = "read", "Read"
    TRADE = "trade", "Trade"
    WITHDRAW = "withdraw", "Withdraw"
    CONSUME = "consume", "Consume (the /v1 gateway)"
    KEYS = "keys", "Manage API keys"


SCOPE_CODES = (
    Scope.READ.value,
    Scope.TRADE.value,
    Scope.WITHDRAW.value,
    Scope.CONSUME.value,
    Scope.KEYS.value,
)
# Revoking a key that holds one of these needs it too: a lesser key must not take a user's
# trading or withdrawal bots offline.
GUARDED_SCOPES = (Scope.TRADE.value, Scope.WITHDRAW.value)
MAX_ACTIVE_API_KEYS = 50


class ApiKey(models.Model):
    """An API key. Only a SHA-256 hash of the key is stored; the key is shown once.

    Keys are 256-bit random secrets, so a fast hash is enough: there is nothing to brute-force.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=80)
    prefix = models.CharField(max_length=16, unique=True)
    hashed_key = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # The key that created this one (empty: a browser session or an operator). Revoking a key
    # revokes the keys it made, so a leaked key's children do not outlive it.
    created_by_key = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children"
    )
    # Limits an agent's owner sets on a ``consume`` key (the gateway enforces them; empty: none).
    # Budgets count prompt + completion tokens per UTC day / calendar month, in-flight requests
    # at their reserved worst case.
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveBigIntegerField(null=True, blank=True)
    allowed_models = models.JSONField(
        default=list, blank=True, help_text="Model ids this key may use; empty: all."
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(expires_at__gt=models.F("created_at")),
                name="api_key_expires_after_creation",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self, *, now: object = None) -> bool:
        moment = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > moment

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class AuditAction(models.TextChoices):
    KEY_CREATED = "key_created", _("API key created")
    KEY_REVOKED = "key_revoked", _("API key revoked")
    WITHDRAWAL_REQUESTED = "withdrawal_requested", _("Withdrawal requested")


class AuditEvent(models.Model):
    """A security-relevant act on an account, for its owner to read (``accounts.audit``)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="audit_events")
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    created_at = models.DateTimeField(default=timezone.now)
    # The key that acted; empty: a browser session (or an operator's command).
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["user", "-id"], name="audit_user_newest")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.action} {self.created_at:%Y-%m-%d %H:%M:%S}"


from accounts.funding.models import *  # noqa: E402, F403  (funding models live in accounts.funding)
