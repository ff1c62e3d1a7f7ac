from django.apps import AppConfig


class EndpointsConfig(AppConfig):
    name = "exchange.delivery.endpoints"
    label = "delivery_endpoints"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from exchange.delivery.endpoints import checks  # noqa: F401  (registers the checks)
