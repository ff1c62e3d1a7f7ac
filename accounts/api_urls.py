from django.urls import path

from accounts import api

urlpatterns = [
    path("api-keys", api.ApiKeyListApi.as_view(), name="api-key-list"),
    path("api-keys/<int:key_id>", api.ApiKeyDetailApi.as_view(), name="api-key-detail"),
    path("audit-log", api.AuditLogApi.as_view(), name="audit-log"),
]
