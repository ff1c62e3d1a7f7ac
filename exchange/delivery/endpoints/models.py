"""Models of delivery endpoints."""

from django.db import models  # noqa: F401
