from django.urls import path

from exchange.delivery.gateway import api

urlpatterns = [
    path("generations", api.GenerationListApi.as_view(), name="generations"),
    path("generations/export.csv", api.GenerationCsvApi.as_view(), name="generations-csv"),
    path("generations/<str:public_id>", api.GenerationDetailApi.as_view(), name="generation"),
]
