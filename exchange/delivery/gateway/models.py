"""Generations: one row per gateway request that reached a provider (or tried to).

No prompt or completion text is stored: only who, which provider and markets, how many tokens,
what they cost, the timings and the service level.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class GenerationStatus(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    # every provider tried failed before its first token: nothing charged
    FAILED = "failed", "Failed"
    # the provider broke the stream after its first token: charged, then credited (SLA)
    BROKEN = "broken", "Broken by the provider"
    # the buyer went away mid-stream: charged for what was delivered
    CANCELLED = "cancelled", "Cancelled by the buyer"
    # the stream reached GATEWAY_MAX_REQUEST_SECONDS: charged for what was delivered
    TIME_LIMITED = "time_limited", "Stopped at the time limit"
    # the gateway process died; the reaper released (or found settled) the reservation
    INTERRUPTED = "interrupted", "Interrupted"


class Generation(models.Model):
    public_id = models.CharField(max_length=40, unique=True, help_text="gen-…, the response id.")
    buyer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="generations"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    provider = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="served_generations",
    )
    endpoint_id = models.BigIntegerField(null=True, blank=True)
    model_id = models.CharField(max_length=100)
    input_market = models.ForeignKey(
        "markets.Market", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    output_market = models.ForeignKey(
        "markets.Market", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    reservation = models.OneToOneField(
        "delivery_escrow.Reservation",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="generation",
    )
    stream = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    reserved_input_tokens = models.BigIntegerField(default=0)
    reserved_output_tokens = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    # provider / estimated / provider_disputed (metering.StreamMeter.usage)
    usage_source = models.CharField(max_length=20, blank=True)
    currency = models.CharField(max_length=3)
    input_cost_units = models.BigIntegerField(default=0)
    output_cost_units = models.BigIntegerField(default=0)
    credit_units = models.BigIntegerField(default=0)
    first_token_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="From forwarding to the serving provider."
    )
    total_ms = models.PositiveIntegerField(null=True, blank=True, help_text="The whole request.")
    output_tokens_per_second = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True
    )
    status = models.CharField(
        max_length=12, choices=GenerationStatus.choices, default=GenerationStatus.IN_PROGRESS
    )
    finish_reason = models.CharField(max_length=32, blank=True)
    sla_met = models.BooleanField(null=True, blank=True)
    sla_reason = models.CharField(max_length=32, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    prompt_tokens__gte=0,
                    completion_tokens__gte=0,
                    input_cost_units__gte=0,
                    output_cost_units__gte=0,
                    credit_units__gte=0,
                )
                & Q(credit_units__lte=F("input_cost_units") + F("output_cost_units")),
                name="generation_amounts_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["buyer", "id"], name="generation_buyer_idx"),
            models.Index(fields=["provider", "id"], name="generation_provider_idx"),
            # the key's budgets: its tokens since the start of the day / month
            models.Index(fields=["api_key", "created_at"], name="generation_key_time_idx"),
            models.Index(
                fields=["created_at"],
                condition=Q(status="in_progress"),
                name="generation_in_progress_idx",
            ),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def cost_units(self) -> int:
        return self.input_cost_units + self.output_cost_units
