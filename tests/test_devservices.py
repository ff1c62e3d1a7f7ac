"""`make services`: the embedded PostgreSQL and Valkey, and the .env that points at them."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import redis

from exchange import devservices


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway checkout: its own data folders and .env; no URL set in the environment."""
    monkeypatch.setattr(devservices, "PGDATA", tmp_path / ".devservices" / "postgres")
    monkeypatch.setattr(devservices, "VALKEY_DIR", tmp_path / ".devservices" / "valkey")
    monkeypatch.setattr(devservices, "ENV_FILE", tmp_path / ".env")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    yield tmp_path
    devservices.down()


def test_up_starts_both_servers_once_and_down_stops_them(checkout: Path) -> None:
    (checkout / ".env").write_text("SECRET_KEY=kept\nSTRIPE_SECRET_KEY=sk_test_mine\n")
    devservices.up()
    values = devservices.read_env_file()
    assert values["SECRET_KEY"] == "kept"
    assert values["STRIPE_SECRET_KEY"] == "sk_test_mine"
    assert values["DEBUG"] == "true"
    assert values["DATABASE_URL"].startswith("postgres://postgres@127.0.0.1:")
    assert values["DATABASE_URL"].endswith("/exchange")
    with psycopg.connect(values["DATABASE_URL"], connect_timeout=5) as connection:
        assert int(connection.execute("SHOW server_version_num").fetchone()[0]) >= 180000
        assert connection.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
    assert redis.Redis.from_url(values["REDIS_URL"]).ping()

    devservices.up()  # already running: the same servers, the same .env
    assert devservices.read_env_file() == values

    devservices.down()
    assert devservices.postgres_port() is None
    assert devservices.valkey_port(values["REDIS_URL"]) is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(values["DATABASE_URL"], connect_timeout=2)


def test_a_url_set_in_the_environment_is_left_alone(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://ci@db.example:5432/exchange")
    monkeypatch.setenv("REDIS_URL", "redis://cache.example:6379/0")
    devservices.up()
    values = devservices.read_env_file()
    assert "DATABASE_URL" not in values
    assert "REDIS_URL" not in values
    assert len(values["SECRET_KEY"]) >= 50
    assert not values["SECRET_KEY"].startswith("$")
    assert not (checkout / ".devservices" / "postgres").exists()
