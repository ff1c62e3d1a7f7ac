from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "exchange.delivery.gateway"
    label = "delivery_gateway"
    default_auto_field = "django.db.models.BigAutoField"
