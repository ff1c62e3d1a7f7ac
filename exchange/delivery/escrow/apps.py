from django.apps import AppConfig


class EscrowConfig(AppConfig):
    name = "exchange.delivery.escrow"
    label = "delivery_escrow"
    default_auto_field = "django.db.models.BigAutoField"
