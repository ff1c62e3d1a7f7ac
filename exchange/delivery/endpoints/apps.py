from django.apps import AppConfig


class EndpointsConfig(AppConfig):
    name = "exchange.delivery.endpoints"
    label = "delivery_endpoints"
    default_auto_field = "django.db.models.BigAutoField"
