"""``POST /stripe/webhook``: verify, store, acknowledge. Processing happens in a task.

Verification is the stripe library's ``Webhook.construct_event`` (HMAC-SHA256 over
``"{t}.{body}"`` with ``STRIPE_WEBHOOK_SECRET``, and its tolerance for old timestamps). The
library accepts any timestamp in the future, so a header dated further ahead than the same
tolerance is refused here too. Anything refused gets 400 and writes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import stripe
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from accounts.funding.services import HANDLED_EVENT_TYPES, stripe_event_record
from exchange.api_errors import error_body
from exchange.logs import refusal_expected

logger = logging.getLogger(__name__)


class WebhookRejected(Exception):
    pass


def _header_timestamp(header: str) -> int:
    for item in header.split(","):
        name, _, value = item.partition("=")
        if name.strip() == "t":
            return int(value)
    raise WebhookRejected("no timestamp in the signature header")


def event_verify(*, payload: bytes, signature: str | None) -> dict[str, Any]:
    """The verified event as plain JSON data, or ``WebhookRejected``."""
    if len(payload) > settings.STRIPE_WEBHOOK_MAX_BODY_BYTES:
        raise WebhookRejected("body too large")
    tolerance = settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS
    try:
        stripe.Webhook.construct_event(
            payload, signature, settings.STRIPE_WEBHOOK_SECRET, tolerance=tolerance
        )
    except stripe.SignatureVerificationError as error:
        raise WebhookRejected(f"signature: {error.user_message or error}") from error
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise WebhookRejected("malformed event") from error
    if _header_timestamp(signature or "") > time.time() + tolerance:
        raise WebhookRejected("signature timestamp is in the future")
    try:
        event = json.loads(payload)
    except ValueError as error:
        raise WebhookRejected("malformed JSON") from error
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and event["id"].startswith("evt_")
        and isinstance(event.get("type"), str)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    ):
        raise WebhookRejected("not a Stripe event")
    return event


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    if not settings.STRIPE_WEBHOOK_SECRET:
        refusal_expected(request)
        return JsonResponse(
            error_body("funding_disabled", "Stripe webhooks are not configured."), status=503
        )
    declared = request.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > settings.STRIPE_WEBHOOK_MAX_BODY_BYTES:
        return JsonResponse(error_body("invalid_webhook", "body too large"), status=400)
    try:
        event = event_verify(
            payload=request.body, signature=request.headers.get("Stripe-Signature")
        )
    except WebhookRejected as error:
        logger.warning("Stripe webhook refused: %s", error)
        return JsonResponse(error_body("invalid_webhook", str(error)), status=400)
    if event["type"] not in HANDLED_EVENT_TYPES:
        return JsonResponse({"received": True, "ignored": True})
    _row, created = stripe_event_record(event=event)
    return JsonResponse({"received": True, "duplicate": not created})
