from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from accounts import schema  # noqa: F401  (registers the OpenAPI extension)
        from accounts.services import session_ended

        user_logged_out.connect(session_ended, dispatch_uid="accounts.session_ended")
