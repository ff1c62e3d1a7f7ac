from django.urls import path

from accounts import login_views, views

app_name = "accounts"

urlpatterns = [
    path("signup/", login_views.signup, name="signup"),
    path("signup/check-your-email/", login_views.signup_done, name="signup_done"),
    path("signup/confirm/<uidb64>/<token>/", login_views.signup_confirm, name="signup_confirm"),
    path("login/", login_views.EmailLoginView.as_view(), name="login"),
    path("login/code/", login_views.login_verify, name="login_verify"),
    path("logout/", login_views.SiteLogoutView.as_view(), name="logout"),
    path("two-factor/", login_views.two_factor, name="two_factor"),
    path("two-factor/disable/", login_views.two_factor_disable, name="two_factor_disable"),
    path("password-reset/", login_views.SitePasswordResetView.as_view(), name="password_reset"),
    path(
        "password-reset/sent/",
        login_views.SitePasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        login_views.SitePasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/done/",
        login_views.SitePasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("profile/", views.profile, name="profile"),
    path("profile/provider/", views.provider_apply_view, name="provider_apply"),
    path("api-keys/", views.api_keys, name="api_keys"),
    path("api-keys/<int:key_id>/revoke/", views.api_key_revoke_view, name="api_key_revoke"),
]
