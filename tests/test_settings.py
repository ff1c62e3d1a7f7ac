"""Production settings pass ``check --deploy``; missing secrets are refused."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "exchange.settings",
    "DEBUG": "false",
    "SECRET_KEY": "x" * 20 + "a-long-random-production-secret-9f8e7d6c5b4a3",
    "ALLOWED_HOSTS": "exchange.example.com",
    # settings never connect at import; nothing listens here
    "DATABASE_URL": "postgres://postgres@127.0.0.1:1/deploy_check",
    # production has no .env (a development checkout's would supply DEBUG and a secret)
    "ENV_FILE": "/nonexistent/.env",
    "PATH": os.environ.get("PATH", ""),
    "DELIVERY_ENCRYPTION_KEYS": "Z2VuZXJhdGVkLWZvci10aGUtZGVwbG95LWNoZWNrLTA=",
}


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_with_production_values() -> None:
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_secret_key_is_required_when_debug_is_off() -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    result = run_manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_database_must_be_postgresql() -> None:
    missing = {k: v for k, v in PRODUCTION_ENV.items() if k != "DATABASE_URL"}
    result = run_manage("check", env=missing)
    assert result.returncode != 0
    assert "DATABASE_URL is not set: `make services`" in result.stderr
    result = run_manage("check", env={**PRODUCTION_ENV, "DATABASE_URL": "sqlite:////tmp/x.db"})
    assert result.returncode != 0
    assert "DATABASE_URL must be a PostgreSQL URL" in result.stderr


def test_env_file_fills_in_what_the_environment_does_not_set(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "DEBUG=true\nSECRET_KEY=from-the-file\nDATABASE_URL=postgres://postgres@127.0.0.1:1/x\n"
    )
    env = {
        "ENV_FILE": str(env_file),
        "SECRET_KEY": "from-the-environment",
        "PATH": os.environ.get("PATH", ""),
    }
    show = "import django; django.setup(); from django.conf import settings as s; "
    show += "print(s.DEBUG, s.SECRET_KEY, s.DATABASES['default']['PORT'])"
    result = subprocess.run(
        [sys.executable, "-c", show],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "exchange.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "from-the-environment", "1"]


@pytest.mark.django_db
def test_redis_backs_cache_and_channel_layer_when_configured(redis_url: str) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer
    from django.conf import settings
    from django.core.cache import cache

    assert settings.CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis.")
    cache.set("ci-probe", "42", 10)
    assert cache.get("ci-probe") == "42"
    layer = get_channel_layer()

    async def round_trip() -> dict:
        # A consumer listens before messages reach it (the pub/sub layer keeps nothing).
        channel = await layer.new_channel()
        await layer.group_add("ci-probe", channel)
        receiving = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.2)
        await layer.group_send("ci-probe", {"type": "probe", "n": 1})
        return await asyncio.wait_for(receiving, timeout=5)

    assert async_to_sync(round_trip)() == {"type": "probe", "n": 1}
