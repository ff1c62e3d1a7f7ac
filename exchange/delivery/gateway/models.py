"""Models of delivery gateway."""

from django.db import models  # noqa: F401
