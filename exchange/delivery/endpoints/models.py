"""Provider endpoints: a provider's OpenAI-compatible upstream per market, and its health.

The upstream API key is stored only as MultiFernet ciphertext (``crypto.py``); no model method,
``__str__``, admin page or API response shows it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from exchange.markets.models import Market


class HealthStatus(models.TextChoices):
    # Answered its last check (or the request that registered it).
    HEALTHY = "healthy", _("Healthy")
    # Its last check failed; still routable for asks until the dead-man window passes.
    FAILING = "failing", _("Failing")
    # Failed every check for DELIVERY_DEADMAN_SECONDS: asks cancelled, new asks refused.
    DOWN = "down", _("Down")


class Endpoint(models.Model):
    """One provider's upstream for one market (at most one per provider and market)."""

    provider = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="endpoints"
    )
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="endpoints")
    base_url = models.URLField(max_length=300, help_text="OpenAI-compatible base URL (…/v1).")
    # Fernet token (URL-safe base64 text) of the upstream API key; never shown anywhere.
    api_key_ciphertext = models.TextField(editable=False)
    model_id = models.CharField(max_length=200, help_text="The upstream's model id.")
    concurrency_limit = models.PositiveIntegerField(default=8)
    status = models.CharField(
        max_length=8, choices=HealthStatus.choices, default=HealthStatus.HEALTHY
    )
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    # Start of the current run of failed checks (None while the endpoint answers).
    failing_since = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    # Why the last check failed, in our words (never the upstream's body, which could echo
    # the key back).
    last_error = models.CharField(max_length=200, blank=True)
    # When the dead-man switch cancelled this provider's asks (None unless DOWN).
    down_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "market"], name="endpoint_one_per_provider_market"
            ),
            models.CheckConstraint(
                condition=Q(concurrency_limit__gte=1), name="endpoint_concurrency_positive"
            ),
            models.CheckConstraint(
                condition=~Q(status="down") | Q(down_since__isnull=False),
                name="endpoint_down_has_time",
            ),
        ]

    def __str__(self) -> str:
        return f"endpoint {self.pk} of provider {self.provider_id} in market {self.market_id}"


class SampleSource(models.TextChoices):
    PROBE = "probe", "Health probe"
    REQUEST = "request", "Served request"


class HealthSample(models.Model):
    """One observation of an endpoint: a probe or a served request.

    Provider and market are stored with the sample, and the endpoint link survives its deletion
    as NULL, so deleting and re-registering an endpoint does not wipe its public record.
    Rows older than the longest statistics window are pruned by the probe task.
    """

    endpoint = models.ForeignKey(
        Endpoint, on_delete=models.SET_NULL, null=True, related_name="samples"
    )
    provider = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    market = models.ForeignKey(Market, on_delete=models.CASCADE, related_name="+", db_index=False)
    at = models.DateTimeField()
    source = models.CharField(max_length=8, choices=SampleSource.choices)
    ok = models.BooleanField()
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    output_tokens_per_second = models.DecimalField(
        max_digits=12, decimal_places=3, null=True, blank=True
    )

    class Meta:
        indexes = [
            models.Index(fields=["endpoint", "at"], name="sample_endpoint_at"),
            # The public statistics read one market's window, grouped by provider.
            models.Index(fields=["market", "at"], name="sample_market_at"),
        ]

    def __str__(self) -> str:
        return f"sample {self.pk} ({'ok' if self.ok else 'error'}) at {self.at:%Y-%m-%d %H:%M:%S}"


class EventKind(models.TextChoices):
    DEADMAN_TRIPPED = "deadman_tripped", "Asks cancelled: endpoint down"
    RECOVERED = "recovered", "Endpoint healthy again"
    REMOVED = "removed", "Asks cancelled: endpoint removed"


class EndpointEvent(models.Model):
    """What happened to a provider's endpoint that the provider must be told (dashboard, API)."""

    provider = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="endpoint_events"
    )
    market = models.ForeignKey(Market, on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(
        Endpoint, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    kind = models.CharField(max_length=16, choices=EventKind.choices)
    message = models.CharField(max_length=500)
    cancelled_order_ids = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.kind} for provider {self.provider_id} in market {self.market_id}"


class EndpointOutage(models.Model):
    """An outage of a provider's endpoint in a market: from the dead-man switch (DOWN) to the
    check that found it answering again. Removing an endpoint opens one (``ended_at`` NULL: from
    the removal, or from when it went down) that a newly registered endpoint closes: without an
    endpoint nothing is delivered. The outage of an endpoint still DOWN is its ``down_since``.
    Take-or-pay credits the buyers of the provider's lots for the share of a lot's life outages
    covered (``escrow.services``); kept, never pruned (one row per outage)."""

    provider = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="endpoint_outages"
    )
    market = models.ForeignKey(Market, on_delete=models.CASCADE, related_name="+")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [
            models.Index(fields=["provider", "market", "ended_at"], name="outage_provider_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True) | Q(ended_at__gte=models.F("started_at")),
                name="outage_ends_after_start",
            ),
        ]

    def __str__(self) -> str:
        return f"outage of provider {self.provider_id} in market {self.market_id}"
