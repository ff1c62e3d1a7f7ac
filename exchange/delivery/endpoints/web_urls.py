from django.urls import path

from exchange.delivery.endpoints import web

app_name = "endpoints"

urlpatterns = [
    path("provider/endpoints/", web.endpoint_create_view, name="create"),
    path("provider/endpoints/<int:endpoint_id>/delete/", web.endpoint_delete_view, name="delete"),
]
