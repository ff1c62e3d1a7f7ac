"""Models of delivery escrow."""

from django.db import models  # noqa: F401
